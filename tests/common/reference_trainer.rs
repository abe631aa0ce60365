//! A plain, single-threaded reference of the trainer (reference task,
//! section 7, and the round protocol in `src/trainer.rs`), written as one
//! loop over all examples of a run.
//!
//! It uses the library's math (scaler statistics, scaling, prediction,
//! fixed-point gradient sums, optimizers, evaluation), which is unit-tested
//! on its own; what it checks is everything around that math: which
//! statistics scale an epoch, which model scores it, how examples are cut
//! into mini-batches, in which order the batches are applied, and with which
//! parameters each batch's gradient is taken. The sharded trainer must give
//! the same bits for any number of workers.
//!
//! For each epoch, in ascending order:
//!
//! 1. scale its examples with the statistics of every earlier epoch's
//!    examples (nothing earlier: every value scales to 0);
//! 2. score them with the model as of the end of the previous epoch
//!    (progressive validation);
//! 3. with `n` examples, `nb = ceil(n / batch_size)` mini-batches; an example
//!    belongs to batch `batch_hash(epoch, user, item) % nb`;
//! 4. for `k` in `0..nb`: sum the gradients of batch `k` at the current
//!    parameters, take the mean and apply one optimizer step. A batch that
//!    no example hashed to takes no step;
//! 5. add the epoch's examples to the statistics.

use std::collections::BTreeMap;

use deltarec::evaluate::{EvalSummary, evaluate};
use deltarec::model::{GradSum, Optimizer, OptimizerConfig, Params, batch_hash, predict};
use deltarec::scaler::{Histogram, NUM_FEATURES, ScalerKind, scale_example};

use super::oracle;

/// One training example as the trainer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefExample {
    /// The epoch the pair was active in.
    pub epoch: u64,
    /// The user.
    pub user: u64,
    /// The item.
    pub item: u64,
    /// Whether the pair purchased in `epoch`.
    pub label: bool,
    /// The ten raw aggregates as of the end of `epoch - 1`.
    pub raw: [u64; NUM_FEATURES],
}

impl From<&oracle::Example> for RefExample {
    fn from(example: &oracle::Example) -> RefExample {
        RefExample {
            epoch: u64::try_from(example.epoch).expect("epochs of valid times are non-negative"),
            user: example.user,
            item: example.item,
            label: example.label,
            raw: example.raw,
        }
    }
}

/// The options the trainer is run with.
#[derive(Clone, Copy, Debug)]
pub struct RefOptions {
    /// Optimizer kind, learning rate, penalties and mini-batch size.
    pub optimizer: OptimizerConfig,
    /// How features are scaled.
    pub scaler: ScalerKind,
}

/// What the reference computes.
#[derive(Clone, Debug)]
pub struct RefResult {
    /// The model after the last epoch.
    pub params: Params,
    /// The statistics' histogram over every example.
    pub histogram: Histogram,
    /// Progressive-validation figures of each epoch that has examples.
    pub per_epoch: BTreeMap<u64, EvalSummary>,
    /// The figures over every example of the run.
    pub overall: EvalSummary,
    /// Optimizer steps taken (batches with at least one example).
    pub steps: u64,
    /// Batches that no example hashed to, so that took no step.
    pub empty_batches: u64,
    /// The last epoch trained, if any.
    pub last_epoch: Option<u64>,
}

/// Why the reference stopped: the epoch and what was not finite.
#[derive(Clone, Debug, PartialEq)]
pub struct RefError {
    /// The epoch being trained.
    pub epoch: u64,
    /// The library's error message.
    pub message: String,
}

/// Trains on `examples` (in any order) as the sharded trainer must.
///
/// # Errors
///
/// The first non-finite gradient or parameter, with its epoch.
///
/// # Panics
///
/// When the optimizer options are out of range.
pub fn train_reference(
    examples: &[RefExample],
    options: &RefOptions,
) -> Result<RefResult, RefError> {
    let mut by_epoch: BTreeMap<u64, Vec<RefExample>> = BTreeMap::new();
    for example in examples {
        by_epoch.entry(example.epoch).or_default().push(*example);
    }

    let mut params = Params::zeros(NUM_FEATURES);
    let mut optimizer =
        Optimizer::new(options.optimizer, NUM_FEATURES).expect("valid optimizer options");
    let mut histogram = Histogram::default();
    let mut per_epoch = BTreeMap::new();
    let mut all_scores = Vec::new();
    let (mut steps, mut empty_batches) = (0, 0);
    let mut last_epoch = None;

    for (&epoch, examples) in &by_epoch {
        let fail = |message: String| RefError { epoch, message };

        // Scale with the earlier epochs' statistics, score with the previous model.
        let stats = histogram.stats();
        let scaled: Vec<([f64; NUM_FEATURES], bool)> = examples
            .iter()
            .map(|example| {
                let x = scale_example(&stats, &example.raw, options.scaler);
                (x, example.label)
            })
            .collect();
        let mut scores: Vec<(f64, bool)> = scaled
            .iter()
            .map(|(x, label)| (predict(&params, x), *label))
            .collect();

        // Mini-batches by hash, applied in batch order.
        let batches = (examples.len() as u64).div_ceil(options.optimizer.batch_size as u64);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); batches as usize];
        for (index, example) in examples.iter().enumerate() {
            let batch = batch_hash(example.epoch, example.user, example.item) % batches;
            members[batch as usize].push(index);
        }
        for batch in &members {
            let mut sum = GradSum::new(NUM_FEATURES);
            for &index in batch {
                let (x, label) = &scaled[index];
                sum.add(&params, x, *label)
                    .map_err(|error| fail(error.to_string()))?;
            }
            let Some(mean) = sum.mean() else {
                empty_batches += 1;
                continue;
            };
            optimizer
                .apply(&mut params, &mean)
                .map_err(|error| fail(error.to_string()))?;
            steps += 1;
        }

        // The epoch's examples join the statistics of the next.
        for example in examples {
            histogram.add(&example.raw);
        }
        per_epoch.insert(epoch, evaluate(&mut scores));
        all_scores.extend(scores);
        last_epoch = Some(epoch);
    }

    Ok(RefResult {
        params,
        histogram,
        per_epoch,
        overall: evaluate(&mut all_scores),
        steps,
        empty_batches,
        last_epoch,
    })
}

/// [`train_reference`] on the oracle's examples.
///
/// # Errors
///
/// As [`train_reference`].
pub fn train_on_oracle(
    examples: &[oracle::Example],
    options: &RefOptions,
) -> Result<RefResult, RefError> {
    let examples: Vec<RefExample> = examples.iter().map(RefExample::from).collect();
    train_reference(&examples, options)
}
