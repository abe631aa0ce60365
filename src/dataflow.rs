//! One worker's part of a run: it builds the dataflow (the same on every
//! worker of every process), feeds it its share of every input file, and runs
//! it to completion.
//!
//! Results that must be written once (quarantine, aggregates, metrics, the
//! model) are routed to worker 0, which returns them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::AsCollection;
use differential_dataflow::input::{Input, InputSession};
use serde::{Deserialize, Serialize};
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::worker::Worker;

use crate::clean::Binding;
use crate::event::{Event, Reason};
use crate::features::{
    self, Aggregate, Cleaned, Coll, Example, FeatureOptions, Restored, Time, epoch_of, epoch_time,
};
use crate::ingest::{InputFile, ShareReader};
use crate::state::State;
use crate::trainer::{
    self, EpochMetrics, ModelState, Tally, TallyKind, TrainIn, TrainerOptions, TrainerReport,
};

/// A rejected data row, as `quarantine.csv` reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rejected {
    /// Index of the file among the run's inputs.
    pub file: u32,
    /// 1-based line where the record starts.
    pub line: u64,
    /// Why it was rejected.
    pub reason: Reason,
    /// The row as it stands in the file (lossily decoded as UTF-8).
    pub raw: String,
}

/// Everything a worker needs to take part in a run; shared by all workers of
/// a process.
pub struct Plan {
    /// The input files, in order.
    pub files: Vec<InputFile>,
    /// The spec bound to each file's header.
    pub bindings: Vec<Binding>,
    /// The field delimiter.
    pub delimiter: u8,
    /// Cleaning and aggregation options.
    pub features: FeatureOptions,
    /// How many epochs a row may lag behind the newest seen; `None` waits
    /// for the end of input before closing any epoch.
    pub lateness: Option<u64>,
    /// Model options.
    pub trainer: TrainerOptions,
    /// Whether to gather the final aggregates for `features/`.
    pub collect_aggregates: bool,
    /// Whether worker 0 prints progress.
    pub progress: bool,
    /// The state a resumed run starts from.
    pub resume: Option<Arc<State>>,
    /// When `resume` is an unfinished run's checkpoint: what that run had
    /// done before it.
    pub restart: Option<Restart>,
    /// Where worker 0 sends checkpoints, when the run takes them.
    pub checkpoints: Option<Box<CheckpointSink>>,
    /// What a resumed run enters of its state, with counts: the aggregates
    /// its logs can touch (see [`crate::restore::restored`]).
    pub restored: Vec<(Restored, isize)>,
    /// The run saves a state in which the epochs within this lateness of
    /// the newest stay open ([`Results::ending`]).
    pub keep_open: Option<u64>,
}

/// What a state saved at the end of a run with a bounded lateness holds of
/// the dataflow: the epochs within the lateness of the newest row stay open.
pub struct Ending {
    /// The last closed epoch: `newest - lateness - 1`, or before.
    pub last_closed: Option<u64>,
    /// The newest epoch of an accepted row.
    pub newest: Option<u64>,
    /// The model after the last closed epoch.
    pub model: ModelState,
    /// The pairs the dataflow holds, as of the end of the last closed epoch.
    pub pairs: Vec<(u64, u64, [u64; 5])>,
    /// The accepted rows of the open epochs.
    pub events: Vec<Event>,
    /// `(epoch, rows, rejected)` of each open epoch with rows.
    pub tallies: Vec<(u64, u64, u64)>,
}

/// An unfinished run restarted from its checkpoint (whose aggregates and
/// model are the plan's `resume`, as of the checkpoint's last epoch).
pub struct Restart {
    /// The first epoch the run left open when it first started: its inputs'
    /// rows before it are late, as they were then. Rows of the epochs from
    /// here up to the checkpoint's are skipped: the checkpoint holds them.
    pub first_open: u64,
    /// The run's metrics up to the checkpoint.
    pub epochs: Vec<EpochMetrics>,
    /// Its scored examples up to the checkpoint.
    pub scores: Vec<(f64, bool)>,
    /// Its examples up to the checkpoint, when collected.
    pub examples: Vec<Example>,
}

/// What a checkpoint holds of the dataflow: everything up to the end of `epoch`.
pub struct CheckpointData<'a> {
    /// The last epoch the checkpoint covers.
    pub epoch: u64,
    /// The model after it.
    pub model: &'a ModelState,
    /// The clean-event counts of every pair the dataflow holds, as of its end.
    pub pairs: Vec<(u64, u64, [u64; 5])>,
    /// The metrics of the run's epochs up to it.
    pub epochs: &'a [EpochMetrics],
    /// The run's scored examples up to it.
    pub scores: &'a [(f64, bool)],
    /// The run's examples up to it, when collected.
    pub examples: &'a [Example],
}

/// Saves a checkpoint; returns a line saying what was saved, or why not.
pub type CheckpointSink = dyn Fn(CheckpointData<'_>) -> Result<String, String> + Send + Sync;

/// What worker 0 returns: everything the run writes.
pub struct Results {
    /// The trainer's report: model, metrics, scores, examples.
    pub report: TrainerReport,
    /// Every rejected row, sorted by file and line.
    pub quarantine: Vec<Rejected>,
    /// The final aggregates, when collected, sorted.
    pub aggregates: Vec<Aggregate>,
    /// With [`Plan::keep_open`]: what the state keeps open.
    pub ending: Option<Ending>,
}

/// Runs one worker; worker 0 returns the results.
///
/// # Errors
/// When an input file cannot be read.
pub fn run_worker(worker: &mut Worker, plan: Arc<Plan>) -> Result<Option<Results>, String> {
    let index = worker.index();
    let peers = worker.peers();
    let mut fresh = TrainerReport::new(&plan.trainer).map_err(|error| error.to_string())?;
    if let Some(state) = &plan.resume {
        fresh.model = state.model.clone();
    }
    if let (Some(restart), 0) = (&plan.restart, index) {
        fresh.epochs = restart.epochs.clone();
        fresh.scores = restart.scores.clone();
        fresh.examples = restart.examples.clone();
    }
    let report = Rc::new(RefCell::new(fresh));
    let quarantine = Rc::new(RefCell::new(Vec::new()));
    let gathered = Rc::new(RefCell::new(Gathered::new()));
    let tails = Rc::new(RefCell::new(Vec::new()));
    // Where the rows are, and how far the work on them has got.
    let read_probe = ProbeHandle::new();
    let work_probe = ProbeHandle::new();

    let (mut events_in, mut tallies_in, mut rejects_in, mut restored_in, mut tails_in) = worker
        .dataflow::<Time, _, _>(|scope| {
            let (events_in, events) = scope.new_collection::<Event, isize>();
            let (tallies_in, tallies) = scope.new_collection::<Tally, isize>();
            let (rejects_in, rejects) = scope.new_collection::<Rejected, isize>();
            let (restored_in, restored) = scope.new_collection::<Restored, isize>();
            let (tails_in, tail_events) = scope.new_collection::<Event, isize>();

            let events = events.inner.probe_with(&read_probe).as_collection();
            let streams = features::build(events, restored, plan.features);

            // Every worker's trainer sees every tally; examples stay on their shard.
            let tallies = tallies.concat(tally_cleaned(streams.cleaned));
            let tallies = tallies.inner.broadcast().as_collection();
            let train_in = streams
                .examples
                .map(TrainIn::Example)
                .concat(tallies.map(TrainIn::Tally));
            trainer::train(train_in, plan.trainer, report.clone(), &work_probe);

            // Quarantined rows and the final aggregates are written by worker 0.
            let sink = quarantine.clone();
            rejects.inner.sink(
                Exchange::new(|_: &(Rejected, Time, isize)| 0),
                "quarantine: gather",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        for (rejected, _, diff) in data.drain(..) {
                            if diff > 0 {
                                sink.borrow_mut().push(rejected);
                            }
                        }
                    })
                },
            );
            if plan.collect_aggregates {
                // NB: a saved state needs the pair aggregates, so the run collects
                // them whenever it saves one.
                let sink = gathered.clone();
                let by_time = plan.checkpoints.is_some() || plan.keep_open.is_some();
                let aggregates = streams.aggregates.inner.probe_with(&work_probe);
                aggregates.sink(
                    Exchange::new(|_: &(Aggregate, Time, isize)| 0),
                    "features: gather",
                    move |(input, frontier)| {
                        let mut sink = sink.borrow_mut();
                        input.for_each(|_, data| {
                            for (aggregate, time, diff) in data.drain(..) {
                                if by_time {
                                    sink.pending
                                        .entry(time)
                                        .or_default()
                                        .push((aggregate, diff));
                                } else {
                                    sink.add(aggregate, diff);
                                }
                            }
                        });
                        sink.frontier = frontier.frontier().iter().copied().min();
                    },
                );
            }
            // The rows of the epochs a saved state keeps open, to worker 0.
            let sink = tails.clone();
            tail_events.inner.sink(
                Exchange::new(|_: &(Event, Time, isize)| 0),
                "open epochs: gather",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        let mut sink = sink.borrow_mut();
                        sink.extend(data.drain(..).map(|(event, _, _)| event));
                    })
                },
            );
            (events_in, tallies_in, rejects_in, restored_in, tails_in)
        });

    // A resumed run enters the saved aggregates its logs can touch at the
    // first open epoch, each once across all workers, and rows of the closed
    // epochs are late (or, restarting from a checkpoint, skipped).
    let mut floor = 0;
    if let Some(state) = &plan.resume {
        let open = epoch_time(state.last_epoch.map_or(0, |epoch| epoch + 1));
        for (restored, count) in plan.restored.iter().skip(index).step_by(peers) {
            restored_in.update_at(*restored, open, *count);
        }
        // The open epochs' rows and counts, as if read again.
        let bucket = plan.features.bucket_ms;
        for event in state.open_events.iter().skip(index).step_by(peers) {
            events_in.update_at(*event, epoch_time(epoch_of(event.ts, bucket)), 1);
        }
        if index == 0 {
            for &(epoch, rows, rejected) in &state.open_tallies {
                for (kind, count) in [(TallyKind::Rows, rows), (TallyKind::Rejected, rejected)] {
                    if count > 0 {
                        tallies_in.update_at(
                            Tally { epoch, kind },
                            epoch_time(epoch),
                            count as isize,
                        );
                    }
                }
            }
        }
        events_in.advance_to(open);
        tallies_in.advance_to(open);
        rejects_in.advance_to(open);
        restored_in.advance_to(open);
        floor = open;
    }
    drop(restored_in);
    let skip_through = match (&plan.restart, &plan.resume) {
        (Some(restart), Some(state)) => {
            floor = epoch_time(restart.first_open);
            state.last_epoch
        }
        _ => None,
    };

    // Feed this worker's share of every file.
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut feed = Feed {
        events: events_in,
        tallies: tallies_in,
        rejects: rejects_in,
        block_tallies: BTreeMap::new(),
        bucket: plan.features.bucket_ms,
        lateness: plan.lateness,
        floor,
        skip_through,
        newest_epoch: plan.resume.as_ref().and_then(|state| state.newest_epoch),
        tail: plan.keep_open.map(|_| BTreeMap::new()),
        rows: 0,
    };
    let checkpoints = plan.checkpoints.as_deref().filter(|_| index == 0);
    let first_open = plan
        .resume
        .as_ref()
        .and_then(|state| state.last_epoch)
        .map_or(0, |epoch| epoch + 1);
    let checkpoint = || {
        if index != 0 {
            return;
        }
        if let Some(sink) = checkpoints {
            take_checkpoint(
                &report,
                &gathered,
                sink,
                plan.progress,
                plan.keep_open.is_some(),
            );
        }
        if let Some(lateness) = plan.keep_open {
            compact(
                &report.borrow(),
                &mut gathered.borrow_mut(),
                first_open,
                lateness,
            );
        }
    };
    for (file, binding) in plan.files.iter().zip(&plan.bindings) {
        let share = file
            .share(index, peers)
            .map_err(|error| error.to_string())?;
        let mut reader =
            ShareReader::new(file, share, plan.delimiter).map_err(|error| error.to_string())?;
        loop {
            let more = reader
                .next_block(|row| feed.row(file.index, binding, &row))
                .map_err(|error| format!("reading {}: {error}", file.path.display()))?;
            feed.flush();
            worker.step();
            checkpoint();
            if plan.lateness.is_some() {
                // Catch up with the epochs every reader has closed before
                // reading on: that work is due anyway, and done now it
                // releases their rows and lets checkpoints be taken.
                while read_probe
                    .with_frontier(|frontier| frontier.first().copied())
                    .is_some_and(|read| work_probe.less_than(&read))
                {
                    worker.step_or_park(Some(Duration::from_millis(1)));
                    checkpoint();
                }
            }

            if plan.progress && index == 0 && last_progress.elapsed().as_secs_f64() >= 2.0 {
                last_progress = Instant::now();
                let seconds = started.elapsed().as_secs_f64();
                eprintln!(
                    "{seconds:6.1}s  worker 0 read {} rows ({:.0} rows/s)",
                    feed.rows,
                    feed.rows as f64 / seconds
                );
            }
            if !more {
                break;
            }
        }
    }

    // Close the inputs and let every epoch finish; the rows of the epochs a
    // saved state may keep open go to worker 0 first.
    for event in feed
        .tail
        .take()
        .into_iter()
        .flat_map(BTreeMap::into_values)
        .flatten()
    {
        tails_in.insert(event);
    }
    drop(tails_in);
    drop(feed);
    while worker.step_or_park(None) {
        checkpoint();
    }

    if index != 0 {
        return Ok(None);
    }
    let report = std::mem::replace(
        &mut *report.borrow_mut(),
        TrainerReport::new(&plan.trainer).map_err(|error| error.to_string())?,
    );
    let mut quarantine = std::mem::take(&mut *quarantine.borrow_mut());
    quarantine.sort();
    let mut gathered = gathered.borrow_mut();
    let ending = plan.keep_open.map(|lateness| {
        let tails = std::mem::take(&mut *tails.borrow_mut());
        ending(&plan, &report, &gathered, tails, lateness)
    });
    gathered.settle_through(Time::MAX);
    let mut aggregates: Vec<Aggregate> = gathered
        .settled
        .iter()
        .filter(|(_, diff)| **diff > 0)
        .map(|(aggregate, _)| *aggregate)
        .collect();
    aggregates.sort();
    Ok(Some(Results {
        report,
        quarantine,
        aggregates,
        ending,
    }))
}

/// Worker 0, at the end: what a state that keeps the epochs within
/// `lateness` of the newest row open needs.
fn ending(
    plan: &Plan,
    report: &TrainerReport,
    gathered: &Gathered,
    tails: Vec<Event>,
    lateness: u64,
) -> Ending {
    let resumed = plan.resume.as_deref();
    let closed_before = resumed.and_then(|state| state.last_epoch);
    let accepted = report
        .epochs
        .iter()
        .filter(|epoch| epoch.rows > epoch.rejected)
        .map(|epoch| epoch.epoch);
    let newest = accepted
        .max()
        .max(resumed.and_then(|state| state.newest_epoch));
    // A row of the newest epoch made the epochs before `newest - lateness` late.
    let last_closed = newest
        .and_then(|newest| newest.checked_sub(lateness + 1))
        .max(closed_before);
    let first_open = last_closed.map_or(0, |epoch| epoch + 1);

    // The model after the last closed epoch: the newest snapshot at or before
    // it, or the one the run started with when it trained none of them.
    let model = report
        .recent
        .iter()
        .rev()
        .find(|snapshot| Some(snapshot.epoch) <= last_closed)
        .map(|snapshot| snapshot.model.clone())
        .or_else(|| resumed.map(|state| state.model.clone()))
        .unwrap_or_else(|| {
            TrainerReport::new(&plan.trainer)
                .expect("the options were checked when the run started")
                .model
        });
    let pairs = gathered.pairs_through(epoch_time(first_open));

    let bucket = plan.features.bucket_ms;
    let open = |event: &Event| epoch_of(event.ts, bucket) >= first_open;
    let saved = resumed
        .map(|state| state.open_events.as_slice())
        .unwrap_or_default();
    let mut events: Vec<Event> = tails
        .into_iter()
        .chain(saved.iter().copied())
        .filter(|event| open(event))
        .collect();
    events.sort_unstable();
    let tallies = report
        .epochs
        .iter()
        .filter(|epoch| epoch.epoch >= first_open && epoch.rows > 0)
        .map(|epoch| (epoch.epoch, epoch.rows, epoch.rejected))
        .collect();
    Ending {
        last_closed,
        newest,
        model,
        pairs,
        events,
        tallies,
    }
}

/// Worker 0, with epochs kept open at the end: settles the aggregates that
/// neither a checkpoint nor the final state can need at an earlier time.
///
/// The final state needs them as of its last closed epoch: no earlier than
/// the end of the oldest kept snapshot once that one lies `lateness + 1`
/// epochs behind an accepted row, and never earlier than the state the run
/// started from.
fn compact(report: &TrainerReport, gathered: &mut Gathered, first_open: u64, lateness: u64) {
    let needed = report
        .recent
        .front()
        .filter(|front| {
            report
                .newest_accepted
                .is_some_and(|newest| front.epoch.saturating_add(lateness + 1) <= newest)
        })
        .map_or(epoch_time(first_open), |front| {
            epoch_time(front.epoch + 1).max(epoch_time(first_open))
        });
    let checkpoint = report
        .snapshots
        .first()
        .map(|snapshot| epoch_time(snapshot.epoch + 1));
    gathered.settle_through(checkpoint.map_or(needed, |checkpoint| checkpoint.min(needed)));
}

/// The aggregates gathered at worker 0.
struct Gathered {
    /// Each aggregate's multiplicity, without zeros.
    settled: HashMap<Aggregate, isize>,
    /// Updates not settled yet, by time: kept while the run takes
    /// checkpoints, which need the aggregates as of a past epoch.
    pending: BTreeMap<Time, Vec<(Aggregate, isize)>>,
    /// The least time at which an aggregate may still change; `None` once
    /// none can.
    frontier: Option<Time>,
}

impl Gathered {
    fn new() -> Gathered {
        Gathered {
            settled: HashMap::new(),
            pending: BTreeMap::new(),
            frontier: Some(0),
        }
    }

    fn add(&mut self, aggregate: Aggregate, diff: isize) {
        let entry = self.settled.entry(aggregate).or_insert(0);
        *entry += diff;
        if *entry == 0 {
            self.settled.remove(&aggregate);
        }
    }

    /// Settles the pending updates at times up to `time`.
    fn settle_through(&mut self, time: Time) {
        let later = match time.checked_add(1) {
            Some(next) => self.pending.split_off(&next),
            None => BTreeMap::new(),
        };
        for (_, updates) in std::mem::replace(&mut self.pending, later) {
            for (aggregate, diff) in updates {
                self.add(aggregate, diff);
            }
        }
    }

    /// The pairs as of `time` (the settled ones and the pending updates up
    /// to it), sorted; the later updates stay pending.
    fn pairs_through(&self, time: Time) -> Vec<(u64, u64, [u64; 5])> {
        let mut changes: HashMap<Aggregate, isize> = HashMap::new();
        for updates in self.pending.range(..=time).map(|(_, updates)| updates) {
            for (aggregate, diff) in updates {
                if aggregate.pair().is_some() {
                    *changes.entry(*aggregate).or_insert(0) += diff;
                }
            }
        }
        let mut pairs: Vec<_> = self
            .settled
            .iter()
            .filter(|(aggregate, diff)| **diff + changes.remove(*aggregate).unwrap_or(0) > 0)
            .filter_map(|(aggregate, _)| aggregate.pair())
            .collect();
        pairs.extend(
            changes
                .into_iter()
                .filter(|(_, diff)| *diff > 0)
                .filter_map(|(aggregate, _)| aggregate.pair()),
        );
        pairs.sort_unstable();
        pairs
    }

    /// Whether no aggregate can change any more at `time` or before.
    fn final_through(&self, time: Time) -> bool {
        self.frontier.is_none_or(|least| least > time)
    }
}

/// Worker 0: saves a checkpoint at the newest epoch the trainer has taken a
/// snapshot of whose aggregates are final.
fn take_checkpoint(
    report: &RefCell<TrainerReport>,
    gathered: &RefCell<Gathered>,
    sink: &CheckpointSink,
    progress: bool,
    keep_open: bool,
) {
    let mut report = report.borrow_mut();
    let mut gathered = gathered.borrow_mut();
    // The aggregates at time `epoch_time(e + 1)` are those as of the end of `e`.
    let Some(newest) = report
        .snapshots
        .iter()
        .rposition(|snapshot| gathered.final_through(epoch_time(snapshot.epoch + 1)))
    else {
        return;
    };
    let snapshot = report
        .snapshots
        .drain(..=newest)
        .next_back()
        .expect("the position is in range");
    // NB: when the final state keeps epochs open, it may need the aggregates
    // as of an older epoch than this one: only without it are they settled.
    let through = epoch_time(snapshot.epoch + 1);
    let pairs = gathered.pairs_through(through);
    if !keep_open {
        gathered.settle_through(through);
    }
    let data = CheckpointData {
        epoch: snapshot.epoch,
        model: &snapshot.model,
        pairs,
        epochs: &report.epochs[..snapshot.epochs],
        scores: &report.scores[..snapshot.scores],
        examples: &report.examples[..snapshot.examples],
    };
    match sink(data) {
        Ok(line) if progress => eprintln!("{line}"),
        Ok(_) => {}
        Err(error) => eprintln!("warning: {error}"),
    }
}

/// A worker's inputs, and what it knows of the rows it has read.
struct Feed {
    events: InputSession<Time, Event, isize>,
    tallies: InputSession<Time, Tally, isize>,
    rejects: InputSession<Time, Rejected, isize>,
    /// Row counts per epoch, sent at the end of each block.
    block_tallies: BTreeMap<Tally, isize>,
    bucket: i64,
    lateness: Option<u64>,
    /// Rows of epochs before this time are late.
    floor: Time,
    /// Restarting from a checkpoint: the rows of epochs up to this one are
    /// in it already.
    skip_through: Option<u64>,
    /// The newest epoch of an accepted row so far.
    newest_epoch: Option<u64>,
    /// When a saved state may keep epochs open: this worker's accepted rows
    /// of the epochs within the lateness of its newest row, by epoch.
    tail: Option<BTreeMap<u64, Vec<Event>>>,
    /// Rows read so far, for progress.
    rows: u64,
}

impl Feed {
    /// Cleans one row and sends it on: an event, or a rejection.
    fn row(&mut self, file: u32, binding: &Binding, row: &crate::ingest::Row<'_>) {
        self.rows += 1;
        let floor = self.floor;
        let at = *self.rejects.time();
        let skip_through = self.skip_through;
        let skipped = move |epoch: u64| skip_through.is_some_and(|last| epoch <= last);
        let reject = |reason: Reason| Rejected {
            file,
            line: row.line,
            reason,
            raw: String::from_utf8_lossy(row.raw).into_owned(),
        };
        match binding.parse(row.record) {
            Ok(parsed) => {
                let event = parsed.event;
                let epoch = epoch_of(event.ts, self.bucket);
                if epoch_time(epoch) < floor {
                    self.rejects.update_at(reject(Reason::Late), at, 1);
                    return;
                }
                if !skipped(epoch) {
                    self.count(epoch, &[TallyKind::Rows]);
                    self.events.update_at(event, epoch_time(epoch), 1);
                    if let Some(tail) = &mut self.tail {
                        tail.entry(epoch).or_default().push(event);
                    }
                }
                if self.newest_epoch < Some(epoch) {
                    self.newest_epoch = Some(epoch);
                    // A bounded lateness closes the epochs behind the newest at once.
                    if let Some(lateness) = self.lateness {
                        let floor = epoch.saturating_sub(lateness);
                        if let Some(tail) = &mut self.tail {
                            *tail = tail.split_off(&floor);
                        }
                        self.advance(epoch_time(floor));
                    }
                }
            }
            Err(reason) => {
                // A rejected row with a valid time still counts in its open epoch.
                if let Some(ts) = binding.timestamp(row.record) {
                    let epoch = epoch_of(ts, self.bucket);
                    if epoch_time(epoch) >= floor && !skipped(epoch) {
                        self.count(epoch, &[TallyKind::Rows, TallyKind::Rejected]);
                    }
                }
                self.rejects.update_at(reject(reason), at, 1);
            }
        }
    }

    fn count(&mut self, epoch: u64, kinds: &[TallyKind]) {
        for &kind in kinds {
            *self.block_tallies.entry(Tally { epoch, kind }).or_default() += 1;
        }
    }

    /// Makes rows before `floor` late, and moves every input's time there,
    /// if later.
    fn advance(&mut self, floor: Time) {
        self.floor = self.floor.max(floor);
        if floor > *self.events.time() {
            self.send_tallies();
            self.events.advance_to(floor);
            self.tallies.advance_to(floor);
            self.rejects.advance_to(floor);
        }
    }

    fn send_tallies(&mut self) {
        for (tally, count) in std::mem::take(&mut self.block_tallies) {
            self.tallies
                .update_at(tally, epoch_time(tally.epoch), count);
        }
    }

    /// Sends what is buffered, so the workers can make progress.
    fn flush(&mut self) {
        self.send_tallies();
        self.events.flush();
        self.tallies.flush();
        self.rejects.flush();
    }
}

/// Counts clean events and bot exclusions per epoch, a batch at a time, as
/// tallies for the trainer's metrics.
fn tally_cleaned<'scope>(cleaned: Coll<'scope, Cleaned>) -> Coll<'scope, Tally> {
    cleaned
        .inner
        .unary(Pipeline, "metrics: tally clean", |_, _| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let mut counts: BTreeMap<(Tally, Time), isize> = BTreeMap::new();
                    for (cleaned, time, diff) in data.drain(..) {
                        let epoch = features::time_epoch(time);
                        let (kind, count) = match cleaned {
                            Cleaned::Event(..) => (TallyKind::Clean, diff),
                            Cleaned::Bot { excluded, .. } => {
                                (TallyKind::BotExcluded, diff * excluded as isize)
                            }
                        };
                        *counts.entry((Tally { epoch, kind }, time)).or_default() += count;
                    }
                    let mut session = output.session(&capability);
                    for ((tally, time), count) in counts {
                        session.give((tally, time, count));
                    }
                });
            }
        })
        .as_collection()
}
