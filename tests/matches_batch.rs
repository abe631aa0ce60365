//! `deltarec run` against the independent batch oracle (`tests/common/oracle.rs`):
//! quarantine, counters, examples, final aggregates and scaler statistics must
//! equal a from-scratch computation, on every real sample and on seeded logs
//! with shuffled rows, duplicates, bots, malformed rows and cold starts, for
//! 1, 2 and 3 workers.

mod common;

use common::trainer_outputs::real_dir;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::r#gen::{BotOpts, GenOpts, Order, generate, split_rows, write_log, write_parts};
use common::oracle::{DAY_MS, Format, HOUR_MS, OracleConfig, run_oracle};
use common::outputs::assert_matches;

fn spec_name(format: Format) -> &'static str {
    match format {
        Format::RetailRocket => "retailrocket",
        Format::Rees46 => "rees46",
        Format::Taobao => "taobao",
    }
}

/// Runs the product; panics with its stderr when it fails.
fn run_product(files: &[PathBuf], out: &Path, bucket_ms: i64, threshold: u64, extra: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deltarec"));
    command.arg("run").arg("--out").arg(out).arg("--quiet");
    command.args(["--bucket", &bucket_ms.to_string()]);
    command.args(["--bot-threshold", &threshold.to_string()]);
    command.args(["--emit-examples", "--emit-features"]);
    for file in files {
        command.arg("--events").arg(file);
    }
    command.args(extra);
    let output = command.output().expect("the deltarec binary runs");
    assert!(
        output.status.success(),
        "deltarec failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compares the product with the oracle for each worker count.
fn check(files: &[PathBuf], format: Format, bucket_ms: i64, threshold: u64, workers: &[usize]) {
    let expected = run_oracle(
        files,
        &OracleConfig {
            format,
            bucket_ms,
            bot_threshold: threshold,
        },
    );
    for &w in workers {
        let out = tempfile::tempdir().expect("a temporary directory");
        let w_arg = w.to_string();
        run_product(
            files,
            out.path(),
            bucket_ms,
            threshold,
            &["-w", &w_arg, "--spec", spec_name(format)],
        );
        assert_matches(out.path(), &expected);
    }
}

#[test]
fn real_samples_match_the_batch_oracle_with_one_and_two_workers() {
    let Some(dir) = real_dir() else { return };
    let cases = [
        (
            "retailrocket/events_sample_1500visitors_sessionformer.csv",
            Format::RetailRocket,
            DAY_MS,
        ),
        (
            "rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv",
            Format::Rees46,
            HOUR_MS,
        ),
        (
            "rees46-multicategory/2019-Oct_head5k_pantiukhin.csv",
            Format::Rees46,
            HOUR_MS,
        ),
        (
            "rees46-multicategory/2019-Oct_bom-example_phamhoa2416.csv",
            Format::Rees46,
            HOUR_MS,
        ),
        (
            "taobao-userbehavior/UserBehavior_head84k_usersorted_mydeep.csv",
            Format::Taobao,
            DAY_MS,
        ),
        (
            "taobao-userbehavior/UserBehavior_timesorted110k_atguigu.csv",
            Format::Taobao,
            HOUR_MS,
        ),
    ];
    for (name, format, bucket) in cases {
        let path = dir.join(name);
        check(&[path], format, bucket, 1000, &[1, 2]);
    }
}

#[test]
fn seeded_shuffled_logs_match_the_batch_oracle_for_one_and_three_workers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (seed, format) in [
        (1, Format::RetailRocket),
        (2, Format::Rees46),
        (3, Format::Taobao),
    ] {
        let mut opts = GenOpts::days(6);
        opts.malformed = true;
        opts.bot = Some(BotOpts {
            user: 4_000_000_000,
            threshold: 40,
            epoch: 2,
        });
        opts.order = Order::Shuffled;
        let text = generate(seed, format, &opts);
        let path = write_log(dir.path(), &format!("log-{seed}.csv"), &text);
        check(&[path], format, DAY_MS, 40, &[1, 3]);
    }
}

#[test]
fn seeded_logs_split_across_files_match_one_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::hours(8);
    opts.order = Order::UserSorted;
    opts.bom = true;
    opts.crlf = true;
    opts.final_newline = false;
    let text = generate(11, Format::Rees46, &opts);
    let lines = text.lines().count();
    let parts = split_rows(&text, Format::Rees46, &[lines / 3, 2 * lines / 3]);
    let files = write_parts(dir.path(), "part", &parts);
    check(&files, Format::Rees46, HOUR_MS, 1000, &[2]);
}

#[test]
fn bot_rule_off_keeps_every_user() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::days(4);
    opts.bot = Some(BotOpts {
        user: 4_000_000_000,
        threshold: 40,
        epoch: 1,
    });
    let text = generate(5, Format::Taobao, &opts);
    let path = write_log(dir.path(), "bots.csv", &text);
    check(&[path], Format::Taobao, DAY_MS, 0, &[2]);
}

#[test]
fn bounded_disorder_within_the_lateness_matches_the_batch_oracle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut opts = GenOpts::days(8);
    opts.order = Order::Bounded(2);
    let text = generate(17, Format::RetailRocket, &opts);
    let path = write_log(dir.path(), "bounded.csv", &text);
    let expected = run_oracle(
        std::slice::from_ref(&path),
        &OracleConfig {
            format: Format::RetailRocket,
            bucket_ms: DAY_MS,
            bot_threshold: 1000,
        },
    );
    for workers in ["1", "3"] {
        let out = tempfile::tempdir().expect("a temporary directory");
        let args = ["--lateness", "2", "-w", workers, "--spec", "retailrocket"];
        run_product(std::slice::from_ref(&path), out.path(), DAY_MS, 1000, &args);
        assert_matches(out.path(), &expected);
    }
}

#[test]
fn rows_older_than_the_lateness_are_quarantined_as_late() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text =
        "1,10,1,pv,1511827200\n2,20,1,pv,1511654400\n3,30,1,buy,1511740800\n4,40,1,pv,1511827300\n";
    let path = write_log(dir.path(), "late.csv", text);
    let out = tempfile::tempdir().expect("a temporary directory");
    run_product(
        std::slice::from_ref(&path),
        out.path(),
        DAY_MS,
        1000,
        &["--lateness", "1", "--spec", "taobao"],
    );
    let quarantine = std::fs::read_to_string(out.path().join("quarantine.csv")).unwrap();
    let late: Vec<&str> = quarantine.lines().skip(1).collect();
    // Row 2 is two epochs behind row 1; row 3 is one behind, within the bound.
    assert_eq!(
        late,
        ["late.csv,2,late,\"2,20,1,pv,1511654400\""]
            .map(|line| line.replace("late.csv", &path.display().to_string()))
    );
}
