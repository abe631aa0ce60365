//! `deltarec run`: resolves the inputs and the spec, starts timely's workers
//! (threads, and processes in cluster mode), and has the process that holds
//! worker 0 write the outputs and the summary.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use timely::communication::allocator::AllocatorBuilder;

use crate::cli::RunConfig;
use crate::cluster::{self, Failure, Hello};
use crate::dataflow::{self, CheckpointData, CheckpointSink, Plan, Restart, Results};
use crate::features::{Aggregate, FeatureOptions, epoch_of};
use crate::ingest::{self, InputFile};
use crate::report::{self, RunFacts, Summary};
use crate::restore::{self, Touched};
use crate::spec::Spec;
use crate::state::{self, Checkpoint, Fingerprint, FixedOptions, SavedEpoch, State};
use crate::trainer::{EpochMetrics, TrainerOptions};

/// The embedded default input: the first 10,001 rows of a real Taobao
/// UserBehavior sample (see `fixtures/README.md`).
const DEFAULT_EVENTS: &[u8] = include_bytes!("../fixtures/taobao-userbehavior-sample.csv");

/// How the default input is named in outputs.
const DEFAULT_NAME: &str = "fixtures/taobao-userbehavior-sample.csv";

/// Why a run failed. Each message is one line that says what to mend.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An input path or file could not be used.
    #[error("{0}")]
    Input(String),
    /// The spec could not be loaded, detected or bound to a header.
    #[error("{0}")]
    Spec(String),
    /// timely could not start or a worker failed.
    #[error("{0}")]
    Workers(String),
    /// Cluster mode: a peer could not be reached, disagrees, or was lost.
    #[error("{0}")]
    Cluster(String),
    /// Training stopped on a non-finite value.
    #[error("training stopped: {0}")]
    Training(String),
    /// An output could not be written.
    #[error("{0}")]
    Output(#[from] std::io::Error),
    /// A flag's value cannot be used (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The saved state cannot be used with this run.
    #[error("{0}")]
    State(String),
}

/// Runs the job. Returns the summary when this process wrote the outputs (the one holding worker 0), `None` on the other processes.
///
/// # Errors
/// See [`RunError`]; nothing is written to the output directory then.
pub fn run(config: &RunConfig) -> Result<Option<Summary>, RunError> {
    let started = Instant::now();

    // Inputs: the named paths, or the embedded sample written to a file.
    let default_copy = config
        .events
        .is_empty()
        .then(write_default_events)
        .transpose()?;
    let (paths, names): (Vec<PathBuf>, Vec<String>) = match &default_copy {
        Some(path) => (vec![path.clone()], vec![DEFAULT_NAME.to_string()]),
        None => {
            let paths = ingest::expand_paths(&config.events)
                .map_err(|err| RunError::Usage(format!("--events: {err}")))?;
            let mut seen = std::collections::HashSet::new();
            for path in &paths {
                let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                if !seen.insert(canonical) {
                    return Err(RunError::Usage(format!(
                        "--events: {} is named twice; name each input once",
                        path.display()
                    )));
                }
            }
            if paths.is_empty() {
                return Err(RunError::Input(
                    "--events: the directories given hold no files; name a log file".into(),
                ));
            }
            let names = paths
                .iter()
                .map(|path| path.display().to_string())
                .collect();
            (paths, names)
        }
    };

    run_on(config, &paths, names, started)
}

fn run_on(
    config: &RunConfig,
    paths: &[PathBuf],
    names: Vec<String>,
    started: Instant,
) -> Result<Option<Summary>, RunError> {
    let spec = choose_spec(config.spec.as_deref(), paths, &names)?;
    let announce = config.progress && config.process == 0;
    if announce && config.spec.is_none() {
        eprintln!(
            "spec: {} (detected from the first line of {})",
            spec.name(),
            names[0]
        );
    }

    let mut files = Vec::with_capacity(paths.len());
    let mut bindings = Vec::with_capacity(paths.len());
    for (index, (path, name)) in paths.iter().zip(&names).enumerate() {
        let file = InputFile::open(index as u32, path, spec.delimiter(), spec.has_header())
            .map_err(|err| RunError::Input(format!("cannot read {name}: {err}")))?;
        let binding = spec
            .bind(file.header.as_ref())
            .map_err(|err| RunError::Spec(format!("{name}: {err}")))?;
        files.push(file);
        bindings.push(binding);
    }

    // A saved state: same fixed options, and no input it has consumed already.
    let spec_text = std::fs::read(spec.origin())
        .map(|text| crc32fast::hash(&text))
        .unwrap_or(0);
    let fixed = FixedOptions {
        spec: spec.name().to_string(),
        spec_text,
        bucket_ms: config.bucket_ms,
        bot_threshold: config.bot_threshold,
        scaler: config.scaler,
        optimizer: config.optimizer,
        lateness: config.lateness,
    };
    let fingerprints = paths
        .iter()
        .zip(&names)
        .map(|(path, name)| Fingerprint::of(path, name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| RunError::Input(format!("cannot read an input: {err}")))?;
    // One run at a time per state directory, from before it is read until
    // the new state is saved.
    let _lock = match (&config.state, config.process) {
        (Some(dir), 0) => {
            report::prepare_dir(dir, "--state").map_err(RunError::Usage)?;
            Some(state::Lock::take(dir).map_err(RunError::State)?)
        }
        _ => None,
    };
    // An unfinished run's checkpoint, if this is that run again; or the
    // state the last finished run saved.
    let key = run_key(config, &fixed, &fingerprints);
    let identity = fnv1a(&format!(
        "{key} {:?}",
        config.state.as_deref().and_then(state::state_checksum)
    ));
    let (resume, restart) = match &config.state {
        Some(dir) => resume_from(dir, identity, config.progress && config.process == 0)?,
        None => (None, None),
    };
    if let (Some(saved), None, false) = (&resume, &restart, config.force) {
        // The same run again, after it finished (killed between saving its
        // state and exiting, say): its outputs and state are there already.
        let consumed = |fingerprint: &Fingerprint| {
            saved
                .files
                .iter()
                .any(|seen| seen.same_content(fingerprint))
        };
        let done = saved.last_run == key && fingerprints.iter().all(consumed);
        if done && config.out.join("metrics.jsonl").exists() {
            if config.process == 0 {
                eprintln!(
                    "nothing to do: this run already finished; its outputs are in {} and its \
                     state in {} (pass --force to replay its inputs anyway: their rows then \
                     fall in closed epochs)",
                    config.out.display(),
                    config.state.as_deref().unwrap_or(Path::new("")).display()
                );
            }
            return Ok(None);
        }
    }
    if let Some(saved) = &resume {
        check_resume(
            saved,
            &fixed,
            &fingerprints,
            config.force,
            config.state.as_deref(),
        )?;
        if announce && restart.is_none() {
            let last = saved
                .last_epoch
                .map_or("none".to_string(), |epoch| epoch.to_string());
            eprintln!(
                "resuming: last closed epoch {last}, {} pairs, {} rows of open epochs",
                saved.pairs.len(),
                saved.open_events.len()
            );
        }
    }
    let resume = resume.map(Arc::new);
    // The epoch this run's lateness rule starts from, and the epoch its
    // state closed before it.
    let first_open = match (&restart, &resume) {
        (Some(restart), _) => restart.first_open,
        (None, Some(saved)) => saved.last_epoch.map_or(0, |epoch| epoch + 1),
        (None, None) => 0,
    };
    let closed_before = first_open.checked_sub(1);
    // Only the saved aggregates the new logs can touch enter the dataflow.
    let restored = match &resume {
        Some(saved) => {
            let mut touched = Touched::scan(&files, &bindings, spec.delimiter())
                .map_err(|err| RunError::Input(format!("cannot read an input: {err}")))?;
            for event in &saved.open_events {
                touched.add(event.user, event.item);
            }
            restore::restored(&saved.pairs, &touched)
        }
        None => Vec::new(),
    };
    // With a bounded lateness, the epochs within it of the newest row stay
    // open in the saved state, as they would in one run over this log and
    // the next.
    let keep_open = config.lateness.filter(|_| config.state.is_some());

    let checkpoints = match (&config.state, config.checkpoint_every, config.process) {
        (Some(dir), Some(_), 0) => Some(checkpoint_sink(
            dir.clone(),
            identity,
            describe(config, &names),
            first_open,
            fixed.clone(),
            resume.clone(),
        )),
        _ => None,
    };
    let plan = Arc::new(Plan {
        files,
        bindings,
        delimiter: spec.delimiter(),
        features: FeatureOptions {
            bucket_ms: config.bucket_ms,
            bot_threshold: config.bot_threshold,
        },
        lateness: config.lateness,
        trainer: TrainerOptions {
            optimizer: config.optimizer,
            scaler: config.scaler,
            collect_examples: config.emit_examples,
            snapshot_every: config.checkpoint_every.filter(|_| config.state.is_some()),
            keep_recent: keep_open,
        },
        collect_aggregates: config.emit_features || config.state.is_some(),
        progress: config.progress,
        resume: resume.clone(),
        restart,
        checkpoints,
        restored,
        keep_open,
    });

    let job = job_fingerprint(key, config, &plan);
    // Fail before the work, not after it, on an output that cannot be written.
    if config.process == 0 {
        report::prepare_dir(&config.out, "--out").map_err(RunError::Usage)?;
        if let Some(dir) = &config.state {
            report::prepare_dir(dir, "--state").map_err(RunError::Usage)?;
        }
    }

    let results = execute(config, plan, job)?;
    let Some(mut results) = results else {
        return Ok(None);
    };
    if let Some(error) = &results.report.error {
        return Err(RunError::Training(error.clone()));
    }
    // The dataflow computed the touched keys; the others keep their saved
    // aggregates (the state needs only the pairs, features/ all of them).
    let fresh_pairs: Vec<_> = results
        .aggregates
        .iter()
        .filter_map(Aggregate::pair)
        .collect();
    if let (Some(saved), true) = (&resume, config.emit_features) {
        results.aggregates = restore::overlay(&saved.pairs, &results.aggregates);
    }

    let facts = RunFacts {
        spec: spec.name().to_string(),
        files: names,
        bucket_ms: config.bucket_ms,
        workers: config.workers * config.processes,
        seconds: started.elapsed().as_secs_f64(),
    };
    let summary = report::write_results(&config.out, config, &results, &facts)?;
    report::write_metrics(&config.out, &results, &summary, &facts)?;

    // The state last: a run killed before this point is rerun from the old
    // state with the same arguments, and rewrites the same outputs.
    if let Some(dir) = &config.state {
        // Only accepted rows close their epoch: a rejected row, whatever its
        // time, must not turn a later log's rows into late ones.
        let accepted = results
            .report
            .epochs
            .iter()
            .filter(|epoch| epoch.rows > epoch.rejected);
        let newest = accepted.map(|epoch| epoch.epoch).max().max(closed_before);
        let mut files = resume
            .as_ref()
            .map(|saved| saved.files.clone())
            .unwrap_or_default();
        files.extend(fingerprints);
        let overlay = |fresh| match &resume {
            Some(saved) => restore::overlay_pairs(&saved.pairs, fresh),
            None => fresh,
        };
        let saved = match results.ending.take() {
            Some(ending) => State {
                options: fixed,
                last_epoch: ending.last_closed,
                files,
                model: ending.model,
                pairs: overlay(ending.pairs),
                newest_epoch: ending.newest,
                open_events: ending.events,
                open_tallies: ending.tallies,
                last_run: key,
            },
            None => State {
                options: fixed,
                last_epoch: newest,
                files,
                model: results.report.model.clone(),
                pairs: overlay(fresh_pairs),
                newest_epoch: newest,
                open_events: Vec::new(),
                open_tallies: Vec::new(),
                last_run: key,
            },
        };
        // The checkpoints go first: should this run be killed in between,
        // a rerun starts over from the old state and ends the same way.
        state::remove_checkpoints(dir)
            .and_then(|()| state::save(dir, &saved))
            .map_err(|err| {
            RunError::State(format!(
                "the outputs are written, but the state could not be saved: {err}; fix that and \
                 rerun with the same arguments"
            ))
        })?;
    }
    Ok(Some(summary))
}

/// What a run in `dir` starts from: the checkpoint of an unfinished run when
/// this is that run again (with what it had done), else the saved state.
fn resume_from(
    dir: &Path,
    identity: u64,
    announce: bool,
) -> Result<(Option<State>, Option<Restart>), RunError> {
    let state_error = |err: state::StateError| RunError::State(err.to_string());
    let Some(checkpoint) = state::load_checkpoint(dir).map_err(state_error)? else {
        return Ok((state::load(dir).map_err(state_error)?, None));
    };
    if checkpoint.run != identity {
        return Err(RunError::State(format!(
            "{} belongs to an unfinished run ({}) that this one is not; rerun that run with the \
             same arguments to finish it, or remove the file to drop its progress",
            state::checkpoint_path(dir).display(),
            checkpoint.described
        )));
    }
    let state = checkpoint.state;
    if announce {
        eprintln!(
            "resuming an unfinished run from its checkpoint: epochs up to {} are done ({} pairs)",
            state
                .last_epoch
                .map_or("none".into(), |epoch| epoch.to_string()),
            state.pairs.len()
        );
    }
    let restart = Restart {
        first_open: checkpoint.first_open,
        epochs: checkpoint.epochs.iter().map(EpochMetrics::from).collect(),
        scores: checkpoint.scores,
        examples: checkpoint.examples,
    };
    Ok((Some(state), Some(restart)))
}

/// Saves a checkpoint of this run into `dir`, as worker 0 asks.
fn checkpoint_sink(
    dir: PathBuf,
    identity: u64,
    described: String,
    first_open: u64,
    options: FixedOptions,
    resumed: Option<Arc<State>>,
) -> Box<CheckpointSink> {
    Box::new(move |data: CheckpointData<'_>| {
        // The dataflow holds the pairs this run touched; the others are as saved.
        let (pairs, consumed_before) = match &resumed {
            Some(saved) => (
                restore::overlay_pairs(&saved.pairs, data.pairs),
                saved.files.clone(),
            ),
            None => (data.pairs, Vec::new()),
        };
        let count = pairs.len();
        // The saved open epochs after this one are still to come.
        let bucket = options.bucket_ms;
        let later = |epoch: u64| epoch > data.epoch;
        let (newest_epoch, open_events, open_tallies, last_run) = match &resumed {
            Some(saved) => (
                saved.newest_epoch,
                saved
                    .open_events
                    .iter()
                    .filter(|event| later(epoch_of(event.ts, bucket)))
                    .copied()
                    .collect(),
                saved
                    .open_tallies
                    .iter()
                    .filter(|(epoch, _, _)| later(*epoch))
                    .copied()
                    .collect(),
                saved.last_run,
            ),
            None => (None, Vec::new(), Vec::new(), 0),
        };
        let checkpoint = Checkpoint {
            run: identity,
            described: described.clone(),
            first_open,
            state: State {
                options: options.clone(),
                last_epoch: Some(data.epoch),
                files: consumed_before,
                model: data.model.clone(),
                pairs,
                newest_epoch,
                open_events,
                open_tallies,
                last_run,
            },
            epochs: data.epochs.iter().map(SavedEpoch::from).collect(),
            scores: data.scores.to_vec(),
            examples: data.examples.to_vec(),
        };
        let bytes = state::save_checkpoint(&dir, &checkpoint).map_err(|err| {
            format!(
                "cannot save a checkpoint: {err}; the run goes on, but a crash would start it \
                 over"
            )
        })?;
        Ok(format!(
            "checkpoint: epochs up to {} saved in {} ({count} pairs, {:.1} MB)",
            data.epoch,
            state::checkpoint_path(&dir).display(),
            bytes as f64 / 1e6
        ))
    })
}

/// Identifies a run by what shapes its results: the same inputs with the
/// same options and worker count. (A checkpoint also needs the same state
/// to start from.)
fn run_key(config: &RunConfig, fixed: &FixedOptions, fingerprints: &[Fingerprint]) -> u64 {
    let files: Vec<(u64, u32)> = fingerprints
        .iter()
        .map(|fingerprint| (fingerprint.len, fingerprint.crc))
        .collect();
    fnv1a(&format!(
        "{fixed:?} {} {} {files:?}",
        config.emit_examples,
        config.workers * config.processes,
    ))
}

/// A run in words: its inputs and workers.
fn describe(config: &RunConfig, names: &[String]) -> String {
    format!(
        "--events {} with {} workers in all",
        names.join(" "),
        config.workers * config.processes
    )
}

/// Refuses a resume that would change a fixed option or replay a consumed file.
fn check_resume(
    saved: &State,
    fixed: &FixedOptions,
    fingerprints: &[Fingerprint],
    force: bool,
    dir: Option<&Path>,
) -> Result<(), RunError> {
    let dir = dir.map(|dir| dir.display().to_string()).unwrap_or_default();
    if let Some((flag, now, then)) = fixed.first_difference(&saved.options) {
        return Err(RunError::State(format!(
            "{flag} is {now} but the state in {dir} was saved with {then}; a resumed run must \
             keep it (or use another --state directory)"
        )));
    }
    if !force {
        for fingerprint in fingerprints {
            if let Some(seen) = saved
                .files
                .iter()
                .find(|seen| seen.same_content(fingerprint))
            {
                return Err(RunError::State(format!(
                    "{} was already consumed by the state in {dir} (as {}); pass --force to \
                     replay it anyway",
                    fingerprint.name, seen.name
                )));
            }
        }
    }
    Ok(())
}

/// The spec named by `--spec`, or the built-in one whose first line matches
/// every input file.
fn choose_spec(named: Option<&str>, paths: &[PathBuf], names: &[String]) -> Result<Spec, RunError> {
    if let Some(named) = named {
        return Spec::resolve(named).map_err(|err| RunError::Usage(format!("--spec: {err}")));
    }
    let builtins = Spec::builtin();
    let first_line = |spec: &Spec, path: &Path| -> Result<Option<csv::ByteRecord>, RunError> {
        let file = InputFile::open(0, path, spec.delimiter(), false)
            .map_err(|err| RunError::Input(format!("cannot read {}: {err}", path.display())))?;
        Ok(file.first_record)
    };
    let mut chosen = None;
    for spec in &builtins {
        if first_line(spec, &paths[0])?.is_some_and(|first| spec.matches(&first)) {
            chosen = Some(spec.clone());
            break;
        }
    }
    let list = builtins
        .iter()
        .map(|spec| spec.name())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(spec) = chosen else {
        if first_line(&builtins[0], &paths[0])?.is_none() {
            return Err(RunError::Spec(format!(
                "{} holds no line to recognise its format by (it is empty); pass --spec NAME \
                 or --spec FILE to run on it anyway",
                names[0]
            )));
        }
        return Err(RunError::Spec(format!(
            "no built-in spec matches the first line of {}; pass --spec NAME or --spec FILE \
             (built-in: {list}; the README documents the spec format)",
            names[0]
        )));
    };
    for (path, name) in paths.iter().zip(names).skip(1) {
        if !first_line(&spec, path)?.is_some_and(|first| spec.matches(&first)) {
            return Err(RunError::Spec(format!(
                "{name} does not look like {} (detected from {}); pass --spec to read all \
                 inputs with one spec",
                spec.name(),
                names[0]
            )));
        }
    }
    Ok(spec)
}

/// Starts the workers of this process, after connecting to its peers in
/// cluster mode, and waits for them or for the first failure.
///
/// Every process runs the same dataflow over its share of every file; only
/// the process holding worker 0 gets [`Results`]. A broken connection, a
/// worker that panics or cannot read its input, makes every process of the
/// job return an error within about [`cluster::POLL`] of noticing it.
fn execute(config: &RunConfig, plan: Arc<Plan>, job: u64) -> Result<Option<Results>, RunError> {
    cluster::arm();
    let (builders, others) = allocators(config, job)?;
    let guards = timely::execute::execute_from(
        builders,
        others,
        timely::WorkerConfig::default(),
        move |worker| {
            dataflow::run_worker(worker, plan.clone()).unwrap_or_else(|error| cluster::hold(error))
        },
    )
    .map_err(|err| RunError::Workers(format!("cannot start the workers: {err}")))?;

    let outcomes = cluster::wait_for_workers(guards).map_err(|failure| match failure {
        Failure::Peer { process, cause } => RunError::Cluster(format!(
            "lost the connection to process {process} at {} ({cause}); it stopped or became \
             unreachable, see its own error",
            config.addresses[process]
        )),
        Failure::Worker { local, message } => RunError::Workers(format!(
            "worker {} failed: {message}",
            config.process * config.workers + local
        )),
        Failure::WorkerError(error) => RunError::Input(error),
    })?;
    let mut results = None;
    for outcome in outcomes {
        match outcome {
            Ok(Some(found)) => results = Some(found),
            Ok(None) => {}
            Err(panic) => return Err(RunError::Workers(format!("a worker failed: {panic}"))),
        }
    }
    Ok(results)
}

/// timely's allocators for this process's workers: threads of one process,
/// or, in cluster mode, connected to every peer.
fn allocators(
    config: &RunConfig,
    job: u64,
) -> Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>), RunError> {
    if config.processes == 1 {
        let communication = if config.workers > 1 {
            timely::CommunicationConfig::Process(config.workers)
        } else {
            timely::CommunicationConfig::Thread
        };
        return communication
            .try_build()
            .map_err(|err| RunError::Workers(format!("cannot start the workers: {err}")));
    }
    let hello = Hello {
        process: config.process,
        processes: config.processes,
        workers: config.workers,
        job,
    };
    let streams = cluster::connect(&config.addresses, hello, config.connect_timeout)
        .map_err(|err| RunError::Cluster(err.to_string()))?;
    cluster::allocators(streams, config.process, config.workers)
        .map_err(|err| RunError::Cluster(format!("cannot start timely's network threads: {err}")))
}

/// A fingerprint of what every process of a job must share: the run (its
/// options and input contents, see [`run_key`]; paths may differ between
/// machines), what it writes, and the saved state or checkpoint it resumes
/// from (every process must start from the same one). FNV-1a, 64 bits.
fn job_fingerprint(key: u64, config: &RunConfig, plan: &Plan) -> u64 {
    let resumed = plan.resume.as_ref().map(|state| {
        let pairs = state.pairs.iter().fold(0u64, |hash, (user, item, counts)| {
            let mixed = user ^ item.rotate_left(21) ^ counts.iter().sum::<u64>().rotate_left(42);
            hash.wrapping_mul(31)
                .wrapping_add(crate::model::batch::splitmix64(mixed))
        });
        (
            state.last_epoch,
            state.pairs.len(),
            pairs,
            state.files.len(),
            state.open_events.len(),
        )
    });
    let restart = plan.restart.as_ref().map(|restart| restart.first_open);
    fnv1a(&format!(
        "{key} {} {resumed:?} {restart:?}",
        config.emit_features
    ))
}

/// FNV-1a, 64 bits.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes the embedded sample to a private temporary file and returns its path.
fn write_default_events() -> Result<PathBuf, RunError> {
    // NB: one file per content, kept: runs share it, and a killed run
    // leaves nothing behind.
    let path = std::env::temp_dir().join(format!(
        "deltarec-default-events-{:08x}.csv",
        crc32fast::hash(DEFAULT_EVENTS)
    ));
    if std::fs::read(&path).is_ok_and(|bytes| bytes == DEFAULT_EVENTS) {
        return Ok(path);
    }
    let temporary = path.with_extension(format!("csv.tmp-{}", std::process::id()));
    std::fs::write(&temporary, DEFAULT_EVENTS)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|err| {
            let _ = std::fs::remove_file(&temporary);
            RunError::Input(format!(
                "cannot write the embedded sample to {}: {err}",
                path.display()
            ))
        })?;
    Ok(path)
}
