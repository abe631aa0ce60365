//! Stop and resume: a run over day 1 that saves its state, then runs over the
//! following days that resume from it, must give the same aggregates, scaler
//! statistics, later examples, metrics and model (bit for bit) as one run
//! over all days; and a damaged state, a changed option or a replayed file is
//! refused with one clear line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::r#gen::{GenOpts, Order, generate, split_epochs, write_log, write_parts};
use common::oracle::{DAY_MS, Format, HOUR_MS};

fn deltarec(args: &[&str], files: &[PathBuf]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deltarec"));
    command.arg("run").arg("--quiet").args(args);
    for file in files {
        command.arg("--events").arg(file);
    }
    command.output().expect("the deltarec binary runs")
}

fn succeed(args: &[&str], files: &[PathBuf]) {
    let output = deltarec(args, files);
    assert!(
        output.status.success(),
        "deltarec failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The lines of `examples.csv` whose epoch is in `epochs`.
fn examples_of(out: &Path, epochs: &[String]) -> Vec<String> {
    read(&out.join("examples.csv"))
        .lines()
        .skip(1)
        .filter(|line| {
            epochs
                .iter()
                .any(|epoch| line.starts_with(&format!("{epoch},")))
        })
        .map(str::to_string)
        .collect()
}

/// Per-epoch metrics without wall times, as JSON text, keyed by epoch.
fn epoch_metrics(out: &Path) -> Vec<(String, String)> {
    read(&out.join("metrics.jsonl"))
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|value| value.get("summary").is_none())
        .map(|mut value| {
            let object = value.as_object_mut().unwrap();
            object.remove("wall_seconds");
            object.remove("events_per_second");
            (object["epoch"].to_string(), value.to_string())
        })
        .collect()
}

/// Runs all `parts` at once and chained through a state, and compares.
fn check_chain(parts: &[PathBuf], spec: &str, bucket_ms: i64, workers: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket_ms.to_string();
    let common = [
        "--spec",
        spec,
        "--bucket",
        &bucket,
        "-w",
        workers,
        "--emit-examples",
        "--emit-features",
    ];

    let full = dir.path().join("full");
    let mut args = common.to_vec();
    args.extend(["--out", full.to_str().unwrap()]);
    succeed(&args, parts);

    let state = dir.path().join("state");
    let mut last = PathBuf::new();
    let mut later_epochs = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        last = dir.path().join(format!("part{index}"));
        let mut args = common.to_vec();
        args.extend([
            "--out",
            last.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ]);
        succeed(&args, std::slice::from_ref(part));
        if index > 0 {
            later_epochs.extend(epoch_metrics(&last));
        }
    }

    for file in [
        "features/users.csv",
        "features/items.csv",
        "features/pairs.csv",
        "scaler.json",
        "model.json",
    ] {
        assert_eq!(
            read(&full.join(file)),
            read(&last.join(file)),
            "{file} differs after resuming"
        );
    }
    let full_metrics = epoch_metrics(&full);
    for (epoch, metrics) in &later_epochs {
        let expected = full_metrics
            .iter()
            .find(|(e, _)| e == epoch)
            .map(|(_, m)| m);
        assert_eq!(Some(metrics), expected, "metrics of epoch {epoch}");
    }
    let epochs: Vec<String> = epoch_metrics(&last)
        .into_iter()
        .map(|(epoch, _)| epoch)
        .collect();
    assert!(!epochs.is_empty());
    assert_eq!(
        examples_of(&last, &epochs),
        examples_of(&full, &epochs),
        "examples of the last part"
    );
}

#[test]
fn a_seeded_log_split_in_three_resumes_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, format, spec) in [
        (21, Format::RetailRocket, "retailrocket"),
        (22, Format::Taobao, "taobao"),
    ] {
        let mut opts = GenOpts::days(9);
        opts.order = Order::Shuffled;
        opts.malformed = true;
        let text = generate(seed, format, &opts);
        let start = opts.start_ms / DAY_MS;
        let parts = split_epochs(&text, format, DAY_MS, &[start + 3, start + 6]);
        let files = write_parts(dir.path(), spec, &parts);
        for workers in ["1", "2"] {
            check_chain(&files, spec, DAY_MS, workers);
        }
    }
}

#[test]
fn real_samples_split_by_epoch_resume_to_the_same_results() {
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real");
    if !real.is_dir() {
        eprintln!("skipping: {} is absent", real.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "taobao-userbehavior/UserBehavior_head84k_usersorted_mydeep.csv",
            Format::Taobao,
            "taobao",
            DAY_MS,
            1_511_913_600_000,
        ),
        (
            "taobao-userbehavior/UserBehavior_timesorted110k_atguigu.csv",
            Format::Taobao,
            "taobao",
            HOUR_MS,
            1_511_661_600_000,
        ),
        (
            "rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv",
            Format::Rees46,
            "rees46",
            HOUR_MS,
            1_569_891_600_000,
        ),
        (
            "retailrocket/events_sample_1500visitors_sessionformer.csv",
            Format::RetailRocket,
            "retailrocket",
            DAY_MS,
            1_436_000_000_000 / DAY_MS * DAY_MS,
        ),
    ];
    for (name, format, spec, bucket, cut) in cases {
        let text = read(&real.join(name));
        let parts = split_epochs(&text, format, bucket, &[cut / bucket]);
        let files = write_parts(dir.path(), spec, &parts);
        for workers in ["1", "2"] {
            check_chain(&files, spec, bucket, workers);
        }
    }
}

/// A state directory with one saved run, and the next day's file.
fn saved_state(dir: &Path) -> (PathBuf, PathBuf) {
    let opts = GenOpts::days(4);
    let text = generate(31, Format::Taobao, &opts);
    let parts = split_epochs(&text, Format::Taobao, DAY_MS, &[opts.start_ms / DAY_MS + 2]);
    let files = write_parts(dir, "day", &parts);
    let state = dir.join("state");
    let out = dir.join("out");
    succeed(
        &[
            "--spec",
            "taobao",
            "--state",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &files[..1],
    );
    (state, files[1].clone())
}

fn failure(args: &[&str], files: &[PathBuf]) -> String {
    let output = deltarec(args, files);
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn a_damaged_state_is_refused_and_the_previous_one_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let (state, day2) = saved_state(dir.path());
    let out = dir.path().join("out2");
    let args = [
        "--spec",
        "taobao",
        "--state",
        state.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    // A second save keeps the first as the previous state.
    let extra = write_log(dir.path(), "extra.csv", "7,8,9,pv,1600000000\n");
    succeed(&args, &[extra]);
    std::fs::remove_dir_all(&out).unwrap();
    let current = state.join("state.bin");
    let good = std::fs::read(&current).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let mut version = good.clone();
    version[15] = 77;
    for (bytes, expected) in [
        (good[..good.len() / 2].to_vec(), "truncated"),
        (flipped, "checksum"),
        (version, "version 77"),
    ] {
        std::fs::write(&current, &bytes).unwrap();
        let error = failure(&args, std::slice::from_ref(&day2));
        assert!(
            error.contains(expected) && error.contains("state.prev.bin"),
            "{error}"
        );
        assert!(
            !out.join("metrics.jsonl").exists(),
            "no output from a refused run"
        );
    }
    std::fs::rename(state.join("state.prev.bin"), &current).unwrap();
    succeed(&args, &[day2]);
}

#[test]
fn changed_options_and_replayed_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (state, day2) = saved_state(dir.path());
    let out = dir.path().join("out2");
    let state = state.to_str().unwrap();
    let out = out.to_str().unwrap();

    let error = failure(
        &[
            "--spec", "taobao", "--state", state, "--out", out, "--bucket", "1h",
        ],
        std::slice::from_ref(&day2),
    );
    assert!(error.contains("--bucket"), "{error}");
    let error = failure(
        &[
            "--spec",
            "taobao",
            "--state",
            state,
            "--out",
            out,
            "--optimizer",
            "adam",
        ],
        std::slice::from_ref(&day2),
    );
    assert!(error.contains("--optimizer"), "{error}");

    let day1 = dir.path().join("day-1.csv");
    let error = failure(
        &["--spec", "taobao", "--state", state, "--out", out],
        std::slice::from_ref(&day1),
    );
    assert!(
        error.contains("already consumed") && error.contains("--force"),
        "{error}"
    );

    // With --force the replayed rows fall in closed epochs: late, not merged.
    succeed(
        &[
            "--spec", "taobao", "--state", state, "--out", out, "--force",
        ],
        &[day1],
    );
    let quarantine = read(&Path::new(out).join("quarantine.csv"));
    assert!(
        quarantine
            .lines()
            .skip(1)
            .all(|line| line.contains(",late,")),
        "{quarantine}"
    );
    assert!(quarantine.lines().count() > 1);
}

#[test]
fn a_rejected_row_never_closes_an_epoch_for_the_next_log() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOpts::days(4);
    let text = generate(41, Format::Taobao, &opts);
    let parts = split_epochs(&text, Format::Taobao, DAY_MS, &[opts.start_ms / DAY_MS + 2]);
    // Day 1 ends with a malformed row dated in the year 2090.
    let day1 = format!("{}7,8,9,click,3800000000\n", parts[0]);
    let files = write_parts(dir.path(), "day", &[day1, parts[1].clone()]);
    let state = dir.path().join("state");
    let run = |file: &PathBuf, out: &str| {
        let out = dir.path().join(out);
        let args = [
            "--spec",
            "taobao",
            "--state",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        succeed(&args, std::slice::from_ref(file));
        read(&out.join("quarantine.csv"))
    };
    run(&files[0], "out1");
    let quarantine = run(&files[1], "out2");
    assert!(!quarantine.contains(",late,"), "{quarantine}");
}
