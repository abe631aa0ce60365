//! Checkpoints and crash safety: a run that saves checkpoints ends exactly as
//! one that does not; a run killed with SIGKILL at seeded moments and rerun
//! with the same arguments ends with the same outputs as a run never killed
//! (and, where the independent oracle applies, with the oracle's); a
//! checkpoint of another run, or a damaged one, is refused with one line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::r#gen::{GenOpts, Order, Rng, generate, split_epochs, write_log, write_parts};
use common::oracle::{Format, HOUR_MS, OracleConfig, run_oracle};
use common::outputs::assert_matches;

/// Every output a run writes, except `metrics.jsonl` (compared without its
/// timings).
const FILES: [&str; 7] = [
    "quarantine.csv",
    "examples.csv",
    "scaler.json",
    "model.json",
    "features/users.csv",
    "features/items.csv",
    "features/pairs.csv",
];

/// A seeded hourly log large enough that a run lasts a while and takes many
/// checkpoints.
fn log(dir: &Path, seed: u64, order: Order) -> PathBuf {
    let mut opts = GenOpts::hours(120);
    opts.users = 4_000;
    opts.items = 6_000;
    opts.chains_per_epoch = 900;
    opts.order = order;
    opts.malformed = true;
    write_log(
        dir,
        &format!("log-{seed}.csv"),
        &generate(seed, Format::Taobao, &opts),
    )
}

fn command(log: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deltarec"));
    command
        .args(["run", "--spec", "taobao", "--bucket", "1h"])
        .args(["--emit-examples", "--emit-features"])
        .arg("--events")
        .arg(log)
        .arg("--out")
        .arg(out)
        .args(extra);
    if !extra.contains(&"-w") {
        command.args(["-w", "2"]);
    }
    command
}

fn run(log: &Path, out: &Path, extra: &[&str]) -> Output {
    command(log, out, extra)
        .output()
        .expect("the deltarec binary runs")
}

fn succeed(log: &Path, out: &Path, extra: &[&str]) -> String {
    let output = run(log, out, extra);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "deltarec failed: {stderr}");
    stderr
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// `metrics.jsonl` without wall times, rates and the output path.
fn metrics(out: &Path) -> Vec<String> {
    read(&out.join("metrics.jsonl"))
        .lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object_mut().unwrap();
            for timing in ["wall_seconds", "events_per_second", "out"] {
                object.remove(timing);
            }
            value.to_string()
        })
        .collect()
}

fn assert_same_outputs(expected: &Path, actual: &Path, context: &str) {
    for file in FILES {
        assert!(
            read(&expected.join(file)) == read(&actual.join(file)),
            "{file} differs ({context})"
        );
    }
    assert_eq!(metrics(expected), metrics(actual), "metrics ({context})");
}

fn wait_for(path: &Path, child: &mut Child, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if path.exists() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

/// Starts the run, kills it (SIGKILL) `delay` after `trigger` appears (or
/// after `delay` when there is no trigger); returns whether the kill landed
/// before the run ended by itself.
fn kill_during(
    log: &Path,
    out: &Path,
    extra: &[&str],
    trigger: Option<&Path>,
    delay: Duration,
) -> bool {
    let mut child = command(log, out, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the deltarec binary starts");
    if let Some(trigger) = trigger {
        wait_for(trigger, &mut child, Duration::from_secs(120));
    }
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    killed
}

#[test]
fn checkpoints_leave_the_results_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, order, lateness) in [(5, Order::Bounded(1), "1"), (6, Order::Bounded(3), "2")] {
        let log = log(dir.path(), seed, order);
        let plain = dir.path().join(format!("plain-{seed}"));
        let plain_state = dir.path().join(format!("plain-state-{seed}"));
        succeed(
            &log,
            &plain,
            &[
                "--lateness",
                lateness,
                "--state",
                plain_state.to_str().unwrap(),
                "-q",
            ],
        );
        let state = dir.path().join(format!("state-{seed}"));
        let out = dir.path().join(format!("checkpointed-{seed}"));
        let stderr = succeed(
            &log,
            &out,
            &[
                "--lateness",
                lateness,
                "--state",
                state.to_str().unwrap(),
                "--checkpoint-every",
                "7",
            ],
        );
        let saved = stderr.matches("checkpoint: epochs up to").count();
        assert!(saved >= 10, "a checkpoint every 7 of ~120 epochs: {stderr}");
        assert_same_outputs(&plain, &out, "with checkpoints");
        assert!(
            std::fs::read(plain_state.join("state.bin")).unwrap()
                == std::fs::read(state.join("state.bin")).unwrap(),
            "the saved state differs with checkpoints"
        );
        assert!(state.join("state.bin").exists());
        assert!(!state.join("checkpoint.bin").exists(), "removed at the end");
        assert!(!state.join("checkpoint.prev.bin").exists());
    }
}

#[test]
fn a_killed_run_reruns_to_the_outputs_of_a_run_never_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(2026);
    let mut from_checkpoint = 0;
    // Rows within one epoch of order with a bounded lateness: epochs close,
    // and checkpoints are saved, while the input is read. Shuffled rows with
    // unlimited lateness: every epoch closes after the input ends; the
    // oracle applies there.
    for (seed, order, lateness) in [
        (7, Order::Bounded(1), Some("1")),
        (8, Order::Shuffled, None),
    ] {
        let log = log(dir.path(), seed, order);
        let flags: Vec<&str> = lateness
            .map(|lateness| vec!["--lateness", lateness])
            .unwrap_or_default();
        let reference = dir.path().join(format!("reference-{seed}"));
        let started = Instant::now();
        let mut quiet = flags.clone();
        quiet.push("-q");
        succeed(&log, &reference, &quiet);
        let whole = started.elapsed();
        if lateness.is_none() {
            let expected = run_oracle(
                std::slice::from_ref(&log),
                &OracleConfig::new(Format::Taobao, HOUR_MS),
            );
            assert_matches(&reference, &expected);
        }

        for attempt in 0..4 {
            let state = dir.path().join(format!("state-{seed}-{attempt}"));
            let out = dir.path().join(format!("out-{seed}-{attempt}"));
            let mut args = flags.clone();
            args.extend([
                "--state",
                state.to_str().unwrap(),
                "--checkpoint-every",
                "3",
            ]);
            let checkpoint = state.join("checkpoint.bin");
            // Kill once or twice: at a random moment of the run, or shortly
            // after a checkpoint appears; then rerun to the end.
            for kill in 0..=(attempt % 2) {
                let (trigger, delay) = if (attempt + kill) % 2 == 0 {
                    let millis = rng.below(whole.as_millis() as u64 + 1);
                    (None, Duration::from_millis(millis))
                } else {
                    (
                        Some(checkpoint.as_path()),
                        Duration::from_millis(rng.below(150)),
                    )
                };
                if !kill_during(&log, &out, &args, trigger, delay) {
                    break;
                }
            }
            if state.join("state.bin").exists() {
                // The run ended before a kill reached it.
                assert!(!checkpoint.exists());
            } else {
                let stderr = succeed(&log, &out, &args);
                if stderr.contains("resuming an unfinished run from its checkpoint") {
                    from_checkpoint += 1;
                } else {
                    assert!(!stderr.contains("resuming"), "{stderr}");
                }
            }
            assert_same_outputs(&reference, &out, &format!("seed {seed}, attempt {attempt}"));
            assert!(!checkpoint.exists());
        }
    }
    eprintln!("{from_checkpoint} of 8 reruns went on from a checkpoint");
    assert!(
        from_checkpoint >= 2,
        "at least some reruns went on from a checkpoint ({from_checkpoint})"
    );
}

#[test]
fn a_killed_run_that_resumed_from_a_state_reruns_to_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GenOpts::hours(120);
    opts.users = 4_000;
    opts.items = 6_000;
    opts.chains_per_epoch = 900;
    opts.order = Order::Bounded(1);
    let text = generate(10, Format::Taobao, &opts);
    let cut = opts.start_ms / HOUR_MS + 30;
    let parts = split_epochs(&text, Format::Taobao, HOUR_MS, &[cut]);
    let files = write_parts(dir.path(), "part", &parts);

    // The first part's state, saved once and copied for every attempt.
    let first = dir.path().join("first");
    succeed(
        &files[0],
        &dir.path().join("out-first"),
        &["--lateness", "1", "--state", first.to_str().unwrap(), "-q"],
    );
    let reference_state = dir.path().join("reference-state");
    copy_dir(&first, &reference_state);
    let reference = dir.path().join("reference");
    succeed(
        &files[1],
        &reference,
        &[
            "--lateness",
            "1",
            "--state",
            reference_state.to_str().unwrap(),
            "-q",
        ],
    );

    let mut rng = Rng::new(77);
    for attempt in 0..2 {
        let state = dir.path().join(format!("state-{attempt}"));
        copy_dir(&first, &state);
        let out = dir.path().join(format!("out-{attempt}"));
        let args = [
            "--lateness",
            "1",
            "--state",
            state.to_str().unwrap(),
            "--checkpoint-every",
            "4",
        ];
        let delay = Duration::from_millis(rng.below(100));
        let killed = kill_during(
            &files[1],
            &out,
            &args,
            Some(&state.join("checkpoint.bin")),
            delay,
        );
        if killed {
            let stderr = succeed(&files[1], &out, &args);
            assert!(stderr.contains("resuming an unfinished run"), "{stderr}");
        }
        assert_same_outputs(&reference, &out, &format!("attempt {attempt}"));
        assert!(
            std::fs::read(reference_state.join("state.bin")).unwrap()
                == std::fs::read(state.join("state.bin")).unwrap(),
            "the saved state differs (attempt {attempt})"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A state directory holding the checkpoints of a killed run, after at least
/// two checkpoints (so a previous one is kept).
fn killed_with_checkpoints(dir: &Path, log: &Path, args: &[&str], state: &Path) {
    let previous = state.join("checkpoint.prev.bin");
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(state);
        if kill_during(
            log,
            &dir.join("killed"),
            args,
            Some(&previous),
            Duration::ZERO,
        ) && previous.exists()
        {
            return;
        }
    }
    panic!("the run never left two checkpoints behind");
}

fn one_line_failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn another_runs_checkpoint_and_damaged_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = log(dir.path(), 9, Order::Bounded(1));
    let state = dir.path().join("state");
    let args = [
        "--lateness",
        "1",
        "--state",
        state.to_str().unwrap(),
        "--checkpoint-every",
        "2",
        "-q",
    ];
    let reference = dir.path().join("reference");
    succeed(&log, &reference, &args[..2]);
    killed_with_checkpoints(dir.path(), &log, &args, &state);
    let out = dir.path().join("out");

    // Another worker count, another input: not the run that saved it.
    let mut other = args.to_vec();
    other.extend(["-w", "1"]);
    let error = one_line_failure(&run(&log, &out, &other));
    assert!(
        error.contains("checkpoint.bin") && error.contains("unfinished run"),
        "{error}"
    );
    let other_log = write_log(dir.path(), "other.csv", "1,2,3,pv,1569888000\n");
    let error = one_line_failure(&run(&other_log, &out, &args));
    assert!(error.contains("checkpoint.bin"), "{error}");

    let current = state.join("checkpoint.bin");
    let good = std::fs::read(&current).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let mut version = good.clone();
    version["DELTAREC-CHECKPOINT\n".len()] = 42;
    for (bytes, expected) in [
        (good[..good.len() - 100].to_vec(), "truncated"),
        (flipped, "checksum"),
        (version, "version 42"),
        (b"DELTAREC".to_vec(), "not a deltarec checkpoint"),
    ] {
        std::fs::write(&current, &bytes).unwrap();
        let error = one_line_failure(&run(&log, &out, &args));
        assert!(
            error.contains(expected) && error.contains("checkpoint.prev.bin"),
            "{error}"
        );
        assert!(
            !out.join("metrics.jsonl").exists(),
            "no output from a refused run"
        );
    }
    // The previous checkpoint is intact, and the run goes on from it.
    std::fs::rename(state.join("checkpoint.prev.bin"), &current).unwrap();
    let stderr = succeed(&log, &out, &args[..6]);
    assert!(stderr.contains("resuming an unfinished run"), "{stderr}");
    assert_same_outputs(&reference, &out, "from the previous checkpoint");
}

#[test]
fn checkpoint_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = write_log(dir.path(), "tiny.csv", "1,2,3,pv,1569888000\n");
    let out = dir.path().join("out");
    for (flags, expected) in [
        (vec!["--checkpoint-every", "3"], "--state"),
        (
            vec!["--checkpoint-every", "0", "--state", "s"],
            "--checkpoint-every 0",
        ),
    ] {
        let output = run(&log, &out, &flags);
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}
