//! The sharded trainer: progressive validation, then synchronised mini-batch
//! SGD, one epoch at a time, on every worker of every process.
//!
//! Each worker holds a replica of the model and trains on its shard of an
//! epoch's examples (the examples the feature dataflow produced on it). The
//! workers talk through a timely feedback loop: a message sent at time `t`
//! arrives at `t + 1`, and a worker acts on round `t` once its input frontier
//! has passed `t`, that is once every worker's round-`t` messages are in. For
//! an epoch starting at time `b`:
//!
//! * round `b`: each worker announces its example count, positives and the
//!   histogram of its examples' aggregates;
//! * round `b + 1`: all know the epoch's example count `n`, so the number of
//!   mini-batches `ceil(n / batch_size)` and each example's batch (a hash of
//!   epoch, user and item, see [`batch_hash`]). Each worker scales its
//!   examples with the statistics of all earlier epochs, scores them with the
//!   model as of the end of the previous epoch (sent to worker 0 for the
//!   metrics), and sends its fixed-point gradient sum of batch 0;
//! * round `b + 2 + k`: each worker adds the sums of batch `k` (integers, so
//!   the order they arrive in does not matter), applies the same update, and
//!   sends its sum of batch `k + 1`.
//!
//! Every replica therefore applies the same updates in the same order, and
//! the model does not depend on the number of workers or processes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use differential_dataflow::consolidation::consolidate;
use serde::{Deserialize, Serialize};
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, ConnectLoop, Feedback, Probe};

use crate::evaluate::{EvalSummary, evaluate};
use crate::features::{Coll, EPOCH_STEP, Example, NUM_FEATURES, Time, time_epoch};
use crate::model::{GradSum, Optimizer, OptimizerConfig, Params, batch_hash, predict};
use crate::scaler::{FeatureStats, Histogram, ScalerKind, scale_example};

/// Per-epoch counts that flow into the trainer beside the examples, so that
/// an epoch's metrics are complete when the trainer reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tally {
    /// The epoch counted.
    pub epoch: u64,
    /// What is counted; the update's multiplicity is the count.
    pub kind: TallyKind,
}

/// What a [`Tally`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TallyKind {
    /// Data rows whose time fell in the epoch (accepted or not, but not late).
    Rows,
    /// Of those, rows rejected by cleaning.
    Rejected,
    /// Clean events.
    Clean,
    /// De-duplicated events of bots.
    BotExcluded,
}

/// What the trainer reads: the examples of its shard, and all tallies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TrainIn {
    /// One example of this worker's shard.
    Example(Example),
    /// A count for the epoch's metrics (every worker sees every tally).
    Tally(Tally),
}

/// Options of the trainer.
#[derive(Clone, Copy, Debug)]
pub struct TrainerOptions {
    /// Optimizer, learning rate, penalties and mini-batch size.
    pub optimizer: OptimizerConfig,
    /// How features are scaled before the model sees them.
    pub scaler: ScalerKind,
    /// Whether worker 0 keeps every example, for `examples.csv`.
    pub collect_examples: bool,
    /// Worker 0 takes a [`Snapshot`] after every this many trained epochs.
    pub snapshot_every: Option<u64>,
    /// Worker 0 keeps the snapshots a state saved at the end may need when
    /// the epochs within this lateness of the newest stay open (see
    /// [`TrainerReport::recent`]).
    pub keep_recent: Option<u64>,
}

/// The metrics of one epoch, as `metrics.jsonl` reports them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch.
    pub epoch: u64,
    /// Data rows whose time fell in the epoch.
    pub rows: u64,
    /// Of those, rejected.
    pub rejected: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Events excluded as bot traffic.
    pub bot_excluded: u64,
    /// Clean events.
    pub clean: u64,
    /// Progressive-validation figures of the epoch's examples.
    #[serde(flatten)]
    pub eval: EvalSummary,
    /// Seconds from the end of the previous epoch to the end of this one.
    pub wall_seconds: f64,
}

/// The model and what it needs to go on: identical on every worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelState {
    /// Weights and bias.
    pub params: Params,
    /// Optimizer state (accumulators, step count).
    pub optimizer: Optimizer,
    /// Aggregate histogram of every example trained on: the scaler's state.
    pub histogram: Histogram,
    /// The newest epoch trained, if any.
    pub last_epoch: Option<u64>,
}

/// What the trainer leaves for the run to report, per worker.
pub struct TrainerReport {
    /// The model, identical on every worker.
    pub model: ModelState,
    /// Worker 0 only: one entry per epoch, in order.
    pub epochs: Vec<EpochMetrics>,
    /// Worker 0 only: every example's score and label, for the overall figures.
    pub scores: Vec<(f64, bool)>,
    /// Worker 0 only, when collecting: every example.
    pub examples: Vec<Example>,
    /// Set when training had to stop (a non-finite gradient or weight).
    pub error: Option<String>,
    /// Worker 0 only: snapshots not yet taken away, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Worker 0 only, with `keep_recent`: the snapshots after the latest
    /// epochs, oldest first, from the newest one at least `keep_recent + 1`
    /// epochs behind the last trained epoch.
    pub recent: VecDeque<Snapshot>,
    /// Worker 0 only: the newest epoch trained by this run that had an
    /// accepted row (an epoch of rejected rows alone closes nothing).
    pub newest_accepted: Option<u64>,
    /// Epochs trained by this run.
    pub trained: u64,
}

/// The trainer as it stood right after an epoch: what a checkpoint needs of it.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The epoch just trained.
    pub epoch: u64,
    /// The model after it.
    pub model: ModelState,
    /// How many of the report's epochs, scores and examples belong to it and
    /// the epochs before (the report only appends).
    pub epochs: usize,
    /// See `epochs`.
    pub scores: usize,
    /// See `epochs`.
    pub examples: usize,
}

impl TrainerReport {
    /// A report for a fresh model.
    ///
    /// # Errors
    /// When the optimizer options are out of range.
    pub fn new(options: &TrainerOptions) -> Result<TrainerReport, crate::model::InvalidKnob> {
        Ok(TrainerReport {
            model: ModelState {
                params: Params::zeros(NUM_FEATURES),
                optimizer: Optimizer::new(options.optimizer, NUM_FEATURES)?,
                histogram: Histogram::default(),
                last_epoch: None,
            },
            epochs: Vec::new(),
            scores: Vec::new(),
            examples: Vec::new(),
            error: None,
            snapshots: Vec::new(),
            recent: VecDeque::new(),
            newest_accepted: None,
            trained: 0,
        })
    }
}

/// Messages between the trainers of all workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Message {
    /// Round 0: a worker's share of the epoch.
    Hello {
        examples: u64,
        positives: u64,
        histogram: Box<Histogram>,
    },
    /// Round 1, to worker 0: scores (and, when collecting, the examples).
    Scores {
        scores: Vec<(f64, bool)>,
        examples: Vec<Example>,
    },
    /// A worker's gradient sum of one mini-batch.
    Gradient { batch: u64, sum: GradSum },
    /// A worker could not compute its part of a round (a non-finite
    /// gradient): every worker stops at the next round, before applying it.
    Failed { error: String },
}

/// Why a round stopped training.
enum Stop {
    /// This worker failed; the others must be told.
    Here(String),
    /// Another worker failed and said so.
    Elsewhere(String),
}

/// A message and the worker it is for.
type Envelope = (u64, Message);

/// An epoch whose data is complete or still arriving.
struct Pending {
    capability: Capability<Time>,
    examples: Vec<(Example, isize)>,
    tallies: Vec<(Tally, isize)>,
}

/// The epoch being trained.
struct Active {
    epoch: u64,
    base: Time,
    /// The round whose messages are awaited: they arrive at `base + round`.
    round: u64,
    /// Held at `base + round`: when this worker sends in the awaited round.
    capability: Capability<Time>,
    examples: Vec<Example>,
    tallies: Vec<(Tally, isize)>,
    /// This worker's examples, scaled, with their batch, sorted by batch.
    scaled: Vec<(u64, [f64; NUM_FEATURES], bool)>,
    batches: u64,
    histogram: Histogram,
    examples_total: u64,
    positives_total: u64,
    scores: Vec<(f64, bool)>,
}

/// Attaches the trainer to `input`; returns nothing but fills `report`.
/// `probe` follows the epochs still being trained.
pub fn train<'scope>(
    input: Coll<'scope, TrainIn>,
    options: TrainerOptions,
    report: Rc<RefCell<TrainerReport>>,
    probe: &ProbeHandle<Time>,
) {
    let scope = input.inner.scope();
    let index = scope.index() as u64;
    let peers = scope.peers() as u64;
    let (handle, feedback) = scope.feedback::<Vec<Envelope>>(1);

    let messages = input.inner.binary_frontier(
        feedback,
        Pipeline,
        Exchange::new(|envelope: &Envelope| envelope.0),
        "train: sgd",
        move |initial, _info| {
            drop(initial);
            let mut pending: BTreeMap<Time, Pending> = BTreeMap::new();
            let mut inbox: HashMap<Time, Vec<Message>> = HashMap::new();
            let mut active: Option<Active> = None;
            let mut clock = Instant::now();

            move |(updates, frontier), (letters, loop_frontier), output| {
                // Stash the examples and tallies of each epoch until it is complete.
                updates.for_each(|capability, data| {
                    for (record, time, diff) in data.drain(..) {
                        let entry = pending.entry(time).or_insert_with(|| Pending {
                            capability: capability.delayed(&time, 0),
                            examples: Vec::new(),
                            tallies: Vec::new(),
                        });
                        match record {
                            TrainIn::Example(example) => entry.examples.push((example, diff)),
                            TrainIn::Tally(tally) => entry.tallies.push((tally, diff)),
                        }
                    }
                });
                letters.for_each(|capability, data| {
                    let time = *capability.least().expect("a total order stamps one time");
                    let letters = inbox.entry(time).or_default();
                    letters.extend(data.drain(..).map(|(_, message)| message));
                });

                let mut report = report.borrow_mut();
                loop {
                    // Start the next complete epoch once the previous one is done everywhere.
                    if active.is_none() {
                        let Some(&base) = pending.keys().next() else {
                            break;
                        };
                        if frontier.frontier().less_equal(&base)
                            || loop_frontier.frontier().less_equal(&base)
                        {
                            break;
                        }
                        let epoch = pending.remove(&base).expect("the key was just read");
                        let mut started = start_epoch(base, epoch);
                        let hello = started.hello();
                        let mut session = output.session(&started.capability);
                        for target in 0..peers {
                            session.give((target, hello.clone()));
                        }
                        drop(session);
                        started.capability.downgrade(&(base + 1));
                        active = Some(started);
                        continue;
                    }

                    // Act on the awaited round once every worker's letters are in.
                    let current = active.as_mut().expect("checked above");
                    let time = current.base + current.round;
                    if loop_frontier.frontier().less_equal(&time) {
                        break;
                    }
                    let letters = inbox.remove(&time).unwrap_or_default();
                    let outgoing = match round(current, letters, peers, &options, &mut report) {
                        Ok(outgoing) => outgoing,
                        Err(Stop::Here(error)) => {
                            report.error.get_or_insert(error.clone());
                            let others = (0..peers).filter(|&target| target != index);
                            others
                                .map(|target| {
                                    (
                                        target,
                                        Message::Failed {
                                            error: error.clone(),
                                        },
                                    )
                                })
                                .collect()
                        }
                        Err(Stop::Elsewhere(error)) => {
                            report.error.get_or_insert(error);
                            Vec::new()
                        }
                    };
                    let finished = report.error.is_some()
                        || (current.round >= 2 && current.round > current.batches);
                    if !outgoing.is_empty() {
                        let mut session = output.session(&current.capability);
                        for envelope in outgoing {
                            session.give(envelope);
                        }
                    }
                    if finished {
                        let done = active.take().expect("checked above");
                        finish_epoch(done, index, &mut report, &mut clock);
                        if index == 0 && report.error.is_none() {
                            take_snapshots(&mut report, &options);
                        }
                    } else {
                        current.round += 1;
                        let next = current.base + current.round;
                        current.capability.downgrade(&next);
                    }
                }
            }
        },
    );
    messages.probe_with(probe).connect_loop(handle);
}

impl Active {
    fn hello(&self) -> Message {
        let positives = self.examples.iter().filter(|example| example.label).count() as u64;
        let mut histogram = Histogram::default();
        for example in &self.examples {
            histogram.add(&example.raw);
        }
        Message::Hello {
            examples: self.examples.len() as u64,
            positives,
            histogram: Box::new(histogram),
        }
    }
}

/// Takes an epoch's stashed data: consolidated examples and tallies.
fn start_epoch(base: Time, pending: Pending) -> Active {
    let Pending {
        capability,
        mut examples,
        mut tallies,
    } = pending;
    consolidate(&mut examples);
    consolidate(&mut tallies);
    let examples = examples
        .into_iter()
        .map(|(example, diff)| {
            assert_eq!(
                diff, 1,
                "the feature dataflow yields each example exactly once"
            );
            example
        })
        .collect();
    Active {
        epoch: time_epoch(base),
        base,
        round: 1,
        capability,
        examples,
        tallies,
        scaled: Vec::new(),
        batches: 0,
        histogram: Histogram::default(),
        examples_total: 0,
        positives_total: 0,
        scores: Vec::new(),
    }
}

/// Acts on one round's letters; returns the letters to send.
fn round(
    active: &mut Active,
    letters: Vec<Message>,
    peers: u64,
    options: &TrainerOptions,
    report: &mut TrainerReport,
) -> Result<Vec<Envelope>, Stop> {
    let mut gradient: Option<GradSum> = None;
    let mut failed: Option<String> = None;
    for letter in letters {
        match letter {
            Message::Hello {
                examples,
                positives,
                histogram,
            } => {
                active.examples_total += examples;
                active.positives_total += positives;
                active.histogram.merge(&histogram);
            }
            Message::Scores { scores, examples } => {
                active.scores.extend(scores);
                report.examples.extend(examples);
            }
            Message::Gradient { batch, sum } => {
                assert_eq!(
                    batch + 2,
                    active.round,
                    "gradient sums arrive in batch order"
                );
                match gradient.as_mut() {
                    Some(total) => total.merge(&sum),
                    None => gradient = Some(sum),
                }
            }
            Message::Failed { error } => {
                failed.get_or_insert(error);
            }
        }
    }
    if let Some(error) = failed {
        return Err(Stop::Elsewhere(error));
    }

    let mut outgoing = Vec::new();
    if active.round == 1 {
        // All counts are in: score with the previous epoch's model, then form batches.
        let batch_size = options.optimizer.batch_size as u64;
        active.batches = active.examples_total.div_ceil(batch_size);
        // Rounds 1..=batches + 1 must stay below the next epoch's time.
        if active.batches >= EPOCH_STEP {
            let (epoch, examples) = (active.epoch, active.examples_total);
            let least = examples.div_ceil(EPOCH_STEP - 1);
            return Err(Stop::Here(format!(
                "epoch {epoch}: {examples} examples make {} mini-batches of {batch_size}, more \
                 than the {} an epoch allows; use --batch-size {least} or more, or a shorter \
                 --bucket",
                active.batches,
                EPOCH_STEP - 1
            )));
        }
        let stats = report.model.histogram.stats();
        let examples = std::mem::take(&mut active.examples);
        let scores = scale_and_score(
            active,
            &examples,
            &stats,
            options.scaler,
            &report.model.params,
        );
        let examples = if options.collect_examples {
            examples
        } else {
            Vec::new()
        };
        outgoing.push((0, Message::Scores { scores, examples }));
    } else if let Some(mean) = gradient.as_ref().and_then(GradSum::mean) {
        // NB: batches come from a hash, so one can be empty everywhere; it
        // takes no step.
        report
            .model
            .optimizer
            .apply(&mut report.model.params, &mean)
            .map_err(|error| {
                Stop::Here(format!(
                    "epoch {}: {error}; a smaller --lr (or --l2) may help",
                    active.epoch
                ))
            })?;
    }

    // Send this worker's sum of the next batch, computed with the updated model.
    let batch = active.round - 1;
    if batch < active.batches {
        let sum = batch_gradient(active, batch, &report.model.params).map_err(Stop::Here)?;
        outgoing.extend((0..peers).map(|target| {
            (
                target,
                Message::Gradient {
                    batch,
                    sum: sum.clone(),
                },
            )
        }));
    }
    Ok(outgoing)
}

/// Scales this worker's examples with the earlier epochs' statistics, assigns
/// each its mini-batch, and scores them with the current model.
fn scale_and_score(
    active: &mut Active,
    examples: &[Example],
    stats: &[FeatureStats; NUM_FEATURES],
    scaler: ScalerKind,
    params: &Params,
) -> Vec<(f64, bool)> {
    let batches = active.batches.max(1);
    let mut scores = Vec::with_capacity(examples.len());
    active.scaled = examples
        .iter()
        .map(|example| {
            let x = scale_example(stats, &example.raw, scaler);
            scores.push((predict(params, &x), example.label));
            let batch = batch_hash(example.epoch, example.user, example.item) % batches;
            (batch, x, example.label)
        })
        .collect();
    active.scaled.sort_by_key(|(batch, _, _)| *batch);
    scores
}

/// This worker's gradient sum over its examples in `batch`.
fn batch_gradient(active: &Active, batch: u64, params: &Params) -> Result<GradSum, String> {
    let start = active.scaled.partition_point(|(b, _, _)| *b < batch);
    let end = active.scaled.partition_point(|(b, _, _)| *b <= batch);
    let mut sum = GradSum::new(NUM_FEATURES);
    for (_, x, label) in &active.scaled[start..end] {
        sum.add(params, x, *label)
            .map_err(|error| format!("epoch {}: {error}", active.epoch))?;
    }
    Ok(sum)
}

/// Worker 0, after an epoch: the snapshots the run's checkpoints and its
/// final state may need.
fn take_snapshots(report: &mut TrainerReport, options: &TrainerOptions) {
    let every = options.snapshot_every.unwrap_or(u64::MAX);
    let due = report.trained.is_multiple_of(every);
    if !due && options.keep_recent.is_none() {
        return;
    }
    let Some(last) = report.epochs.last() else {
        return;
    };
    let epoch = last.epoch;
    if last.rows > last.rejected {
        report.newest_accepted = report.newest_accepted.max(Some(epoch));
    }
    let snapshot = Snapshot {
        epoch,
        model: report.model.clone(),
        epochs: report.epochs.len(),
        scores: report.scores.len(),
        examples: report.examples.len(),
    };
    if let Some(lateness) = options.keep_recent {
        report.recent.push_back(snapshot.clone());
        // The state at the end needs the newest snapshot at least
        // `lateness + 1` epochs behind the newest accepted row, which is no
        // older than `newest_accepted`: a snapshot followed by one that far
        // behind it is never needed.
        if let Some(newest) = report.newest_accepted {
            while report
                .recent
                .get(1)
                .is_some_and(|next| next.epoch.saturating_add(lateness + 1) <= newest)
            {
                report.recent.pop_front();
            }
        }
    }
    if due {
        report.snapshots.push(snapshot);
    }
}

/// Folds a trained epoch into the model's history and, on worker 0, the metrics.
fn finish_epoch(done: Active, index: u64, report: &mut TrainerReport, clock: &mut Instant) {
    report.model.histogram.merge(&done.histogram);
    // NB: the newest epoch trained, not the latest: a resumed run may train
    // an open epoch older than one its state saw rejected rows in.
    report.model.last_epoch = report.model.last_epoch.max(Some(done.epoch));
    report.trained += 1;
    if index != 0 {
        return;
    }
    let mut counts = BTreeMap::new();
    for (tally, diff) in &done.tallies {
        *counts.entry(tally.kind).or_insert(0i64) += *diff as i64;
    }
    let count = |kind| counts.get(&kind).copied().unwrap_or(0).max(0) as u64;
    let (rows, rejected) = (count(TallyKind::Rows), count(TallyKind::Rejected));
    let (clean, bot_excluded) = (count(TallyKind::Clean), count(TallyKind::BotExcluded));
    let mut scores = done.scores;
    let eval = evaluate(&mut scores);
    report.scores.extend(scores);
    report.epochs.push(EpochMetrics {
        epoch: done.epoch,
        rows,
        rejected,
        duplicates: rows.saturating_sub(rejected + clean + bot_excluded),
        bot_excluded,
        clean,
        eval,
        wall_seconds: clock.elapsed().as_secs_f64(),
    });
    *clock = Instant::now();
}
