//! deltarec: replays e-commerce behaviour logs through a timely/differential
//! dataflow, keeps exact feature aggregates, training examples and scaler
//! statistics up to date incrementally, and trains a purchase-propensity model
//! by SGD sharded across every timely worker.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clean;
pub mod cli;
pub mod cluster;
pub mod dataflow;
pub mod evaluate;
pub mod event;
pub mod features;
pub mod generate;
pub mod ingest;
pub mod model;
pub mod output;
pub mod report;
pub mod restore;
pub mod run;
pub mod scaler;
pub mod spec;
pub mod state;
mod time;
pub mod trainer;
