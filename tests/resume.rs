//! Stop and resume: a run over day 1 that saves its state, then runs over the
//! following days that resume from it, must give the same aggregates, scaler
//! statistics, later examples, metrics and model (bit for bit) as one run
//! over all days; and a damaged state, a changed option or a replayed file is
//! refused with one clear line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::r#gen::{GenOpts, Order, generate, split_epochs, split_rows, write_log, write_parts};
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
    check_chain_with(parts, spec, bucket_ms, workers, &[]);
}

/// As [`check_chain`], with more flags for every run.
fn check_chain_with(parts: &[PathBuf], spec: &str, bucket_ms: i64, workers: &str, extra: &[&str]) {
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
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect::<Vec<_>>();

    let full = dir.path().join("full");
    let mut args = common.to_vec();
    args.extend(["--out", full.to_str().unwrap()]);
    succeed(&args, parts);

    let state = dir.path().join("state");
    let mut last = PathBuf::new();
    // An epoch a part leaves open is trained again by the next part: the
    // last part to train an epoch has its final metrics.
    let mut later_epochs = std::collections::BTreeMap::new();
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

/// A resumed day that touches a handful of keys of a much larger state: only
/// those enter the dataflow, with the rest of their users' and items' saved
/// totals, and every other key keeps its saved aggregates. The chained runs
/// must equal one run over all days, and the independent oracle.
#[test]
fn a_day_touching_few_keys_of_a_large_state_resumes_to_the_same_results() {
    use common::r#gen::Rng;
    use common::oracle::{OracleConfig, run_oracle};
    use common::outputs::{assert_same_map, read_items, read_pairs, read_users};
    use common::taobao_log::{TaobaoLog, day_epoch};

    // Hand-made keys, apart from the background's ids.
    const ANN: u64 = 1_000_001; // has five saved pairs, one touched again
    const BOBS: [u64; 5] = [1_000_011, 1_000_012, 1_000_013, 1_000_014, 1_000_015];
    const PAT: u64 = 1_000_021; // her only saved pair holds one purchase
    const CAL: u64 = 1_000_031;
    const DAN: u64 = 1_000_041; // new on day 3
    const IVY: u64 = 2_000_001; // an item with five saved users, one touched again
    const QUILL: u64 = 2_000_021;
    const X: [u64; 6] = [
        2_000_101, 2_000_102, 2_000_103, 2_000_104, 2_000_105, 2_000_106,
    ];
    const NEW_ITEM: u64 = 2_000_109;

    // Days 0-2: a large background and the hand-made history.
    let mut history = TaobaoLog::new();
    let mut rng = Rng::new(51);
    for _ in 0..6000 {
        let kind = rng.pick(&["pv", "pv", "pv", "pv", "cart", "buy", "fav"]);
        history.event(
            rng.below(3) as i64,
            1 + rng.below(2000),
            1 + rng.below(900),
            kind,
        );
    }
    history
        .event(0, ANN, X[0], "pv")
        .event(0, ANN, X[0], "pv")
        .event(1, ANN, X[0], "cart")
        .event(0, ANN, X[1], "pv")
        .event(2, ANN, X[2], "pv")
        .event(1, ANN, X[3], "buy") // only a purchase, never touched again
        .event(2, ANN, X[5], "fav") // only a favourite: an item, no view
        .event(1, PAT, QUILL, "buy")
        .event(1, CAL, X[4], "pv")
        .event(2, BOBS[4], IVY, "buy"); // only a purchase, never touched again
    for (day, bob) in BOBS[..4].iter().enumerate() {
        history.event(day as i64 % 3, *bob, IVY, "pv");
    }
    history.event(2, BOBS[1], IVY, "cart");

    // Day 3 touches a few keys: a saved pair of ANN (her others stay out), a
    // new pair of ANN with a known item and one with a new item, a saved user
    // of IVY (the others stay out), PAT's purchase-only pair, a new user.
    let mut day3 = TaobaoLog::new();
    day3.event(3, ANN, X[0], "pv")
        .event(3, ANN, X[4], "pv")
        .event(3, ANN, NEW_ITEM, "cart")
        .event(3, BOBS[0], IVY, "cart")
        .bought(3, PAT, QUILL)
        .event(3, DAN, IVY, "pv")
        .event(3, 7, 3, "pv");
    // Day 4 resumes from a state the first resume overlaid.
    let mut day4 = TaobaoLog::new();
    day4.event(4, ANN, X[1], "pv")
        .bought(4, BOBS[2], IVY)
        .event(4, DAN, NEW_ITEM, "pv")
        .event(4, CAL, X[4], "pv")
        .event(4, 7, 3, "pv");

    let dir = tempfile::tempdir().unwrap();
    let files = vec![
        history.write(dir.path(), "days0-2.csv"),
        day3.write(dir.path(), "day3.csv"),
        day4.write(dir.path(), "day4.csv"),
    ];
    for workers in ["1", "2"] {
        check_chain(&files, "taobao", DAY_MS, workers);
    }

    // The examples of the resumed days need the untouched pairs' totals.
    let expected = run_oracle(&files, &OracleConfig::new(Format::Taobao, DAY_MS));
    let example = |day: i64, user: u64, item: u64| {
        let epoch = day_epoch(day) as i64;
        expected
            .examples
            .iter()
            .find(|e| (e.epoch, e.user, e.item) == (epoch, user, item))
            .unwrap_or_else(|| panic!("no example of ({user}, {item}) on day {day}"))
            .raw
    };
    assert_eq!(example(3, ANN, X[0])[..4], [4, 1, 1, 5], "ANN's five items");
    assert_eq!(example(3, ANN, X[0])[8..], [2, 1]);
    assert_eq!(
        example(3, BOBS[0], IVY)[4..8],
        [4, 1, 1, 5],
        "IVY's five users"
    );
    assert_eq!(example(3, PAT, QUILL)[..4], [0, 0, 1, 1]);
    assert_eq!(example(3, ANN, X[4])[4..], [1, 0, 0, 1, 0, 0]);
    assert_eq!(
        example(4, ANN, X[1])[..4],
        [6, 2, 1, 7],
        "ANN's two new items"
    );

    // One chain, compared with the oracle: features after the last day, and
    // each resumed day's examples.
    let state = dir.path().join("state");
    let mut out = PathBuf::new();
    for (index, file) in files.iter().enumerate() {
        out = dir.path().join(format!("oracle-part{index}"));
        let args = [
            "--spec",
            "taobao",
            "-w",
            "2",
            "--emit-examples",
            "--emit-features",
            "--state",
            state.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        succeed(&args, std::slice::from_ref(file));
        if index > 0 {
            let epoch = day_epoch(index as i64 + 2) as i64;
            let rendered: Vec<String> = expected
                .examples
                .iter()
                .filter(|example| example.epoch == epoch)
                .map(|example| example.render())
                .collect();
            assert_eq!(
                examples_of(&out, &[epoch.to_string()]),
                rendered,
                "examples of day {}",
                index + 2
            );
        }
    }
    assert_same_map("features/users.csv", &read_users(&out), &expected.users);
    assert_same_map("features/items.csv", &read_items(&out), &expected.items);
    assert_same_map("features/pairs.csv", &read_pairs(&out), &expected.pairs);
}

#[test]
fn rows_of_open_epochs_in_the_next_log_are_merged_within_the_lateness() {
    // Logs cut by row count, not at an epoch boundary: the next log holds
    // rows of the epochs the previous one left open. With a bounded
    // lateness they are not late, as in one run over both.
    let dir = tempfile::tempdir().unwrap();
    for (seed, format, spec, lateness) in [
        (51, Format::RetailRocket, "retailrocket", 1),
        (52, Format::Taobao, "taobao", 2),
    ] {
        let mut opts = GenOpts::days(12);
        opts.order = Order::Bounded(lateness);
        opts.malformed = true;
        let text = generate(seed, format, &opts);
        let rows = text.lines().count();
        let parts = split_rows(&text, format, &[rows / 3, rows / 3 * 2]);
        let files = write_parts(dir.path(), &format!("{spec}-rows"), &parts);
        let lateness = lateness.to_string();
        for workers in ["1", "2"] {
            check_chain_with(&files, spec, DAY_MS, workers, &["--lateness", &lateness]);
        }
        // Without the lateness, every epoch closes at the end of a log, and
        // the next log's rows of those epochs are late.
        let state = dir.path().join(format!("closed-{seed}"));
        for (index, file) in files.iter().enumerate() {
            let out = dir.path().join(format!("closed-{seed}-{index}"));
            succeed(
                &[
                    "--spec",
                    spec,
                    "--state",
                    state.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                std::slice::from_ref(file),
            );
            if index > 0 {
                assert!(read(&out.join("quarantine.csv")).contains(",late,"));
            }
        }
    }
}

#[test]
fn a_finished_run_rerun_does_nothing_and_an_edited_spec_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (state, day2) = saved_state(dir.path());
    let state = state.to_str().unwrap();
    let day1 = dir.path().join("day-1.csv");
    let out = dir.path().join("out");
    let args = [
        "--spec",
        "taobao",
        "--state",
        state,
        "--out",
        out.to_str().unwrap(),
    ];

    // The run that saved the state, again: nothing to do, its outputs stay.
    let before = read(&out.join("metrics.jsonl"));
    let output = deltarec(&args, std::slice::from_ref(&day1));
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already finished"));
    assert_eq!(read(&out.join("metrics.jsonl")), before);

    // A spec file with the same name but another text.
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows/taobao.toml");
    let edited = dir.path().join("taobao.toml");
    let text = read(&spec);
    std::fs::write(&edited, format!("{text}\n# edited\n")).unwrap();
    let out2 = dir.path().join("out2");
    let error = failure(
        &[
            "--spec",
            edited.to_str().unwrap(),
            "--state",
            state,
            "--out",
            out2.to_str().unwrap(),
        ],
        std::slice::from_ref(&day2),
    );
    assert!(
        error.contains("--spec") && error.contains("spec text CRC"),
        "{error}"
    );
}

#[test]
fn logs_that_close_no_epoch_or_end_in_a_rejected_future_row_chain_exactly() {
    // A first log too short to close an epoch, an empty one, and a log
    // ending in a malformed row dated decades ahead (it must close nothing).
    let dir = tempfile::tempdir().unwrap();
    let mut opts = GenOpts::days(10);
    opts.order = Order::Bounded(1);
    let text = generate(61, Format::RetailRocket, &opts);
    let rows = text.lines().count();
    let mut parts = split_rows(&text, Format::RetailRocket, &[5, 5, rows / 2]);
    parts[2].push_str("1999999999000,5,bogus,7,\n");
    let files = write_parts(dir.path(), "short", &parts);
    for (workers, lateness) in [("1", "0"), ("2", "1")] {
        check_chain_with(
            &files,
            "retailrocket",
            DAY_MS,
            workers,
            &["--lateness", lateness],
        );
    }
}
