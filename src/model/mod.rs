//! The purchase-propensity model: logistic regression on the scaled features,
//! trained by mini-batch gradient steps.
//!
//! This module is pure math, with no dataflow code: [`logistic`] holds the
//! parameters, prediction, loss and the order-independent gradient sum that
//! workers exchange; [`optimizer`] turns a mean gradient into an update;
//! [`batch`] decides which mini-batch an example belongs to. Reference task,
//! section 7.

pub mod batch;
pub mod logistic;
pub mod optimizer;

pub use batch::batch_hash;
pub use logistic::{GradSum, GradientError, NonFinite, Params, log_loss, predict, sigmoid};
pub use optimizer::{InvalidKnob, Optimizer, OptimizerConfig, OptimizerKind};
