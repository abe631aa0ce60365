//! Shared helpers for the integration tests: an independent batch oracle, a
//! seeded log generator, hand-built Taobao logs, readers for the product's
//! outputs, and a single-threaded reference of the trainer.
//!
//! Each test binary that declares `mod common;` uses only part of these
//! helpers, so unused items are allowed per module rather than per item.

#[allow(dead_code)]
pub mod r#gen; // NB: `gen` is a reserved keyword in edition 2024, hence `r#gen`.
#[allow(dead_code)]
pub mod oracle;
#[allow(dead_code)]
pub mod outputs;
#[allow(dead_code)]
pub mod reference_trainer;
#[allow(dead_code)]
pub mod taobao_log;
#[allow(dead_code)]
pub mod trainer_outputs;
