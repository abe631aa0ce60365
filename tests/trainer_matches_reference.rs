//! The sharded trainer against the single-threaded reference trainer
//! (`tests/common/reference_trainer.rs`) fed with the batch oracle's
//! examples.
//!
//! For each log and set of options, `deltarec run` runs with 1, 2 and 3
//! workers. The model (every weight and the bias) must be bit-identical
//! across worker counts and bit-identical to the reference's, and every
//! epoch's and the run's examples, positives, log loss, AUC, accuracy and
//! recall must equal the reference's (figures within 1e-12). Mini-batches of
//! 16 give hundreds of synchronised steps per log.
//!
//! Logs: seeded generated logs, for every optimizer and both scalers, and
//! the real samples (Taobao user-sorted by day, the REES46 17k file by hour,
//! RetailRocket by day), which are skipped with a message when absent.

mod common;

use std::path::{Path, PathBuf};

use common::r#gen::{GenOpts, Order, generate, write_log};
use common::oracle::{DAY_MS, Format, HOUR_MS, OracleConfig, run_oracle};
use common::reference_trainer::{RefOptions, train_on_oracle};
use common::trainer_outputs::{
    ProductModel, assert_eval_matches, assert_same_bits, option_flags, read_eval, read_model,
    real_dir, run_ok,
};
use deltarec::model::{OptimizerConfig, OptimizerKind};
use deltarec::scaler::ScalerKind;

/// Worker counts every case runs with.
const WORKERS: [usize; 3] = [1, 2, 3];

fn spec_name(format: Format) -> &'static str {
    match format {
        Format::RetailRocket => "retailrocket",
        Format::Rees46 => "rees46",
        Format::Taobao => "taobao",
    }
}

/// Knobs per optimizer: rates that learn without diverging, a penalty of
/// each kind somewhere.
fn options(kind: OptimizerKind, scaler: ScalerKind) -> RefOptions {
    let (lr, l2, l1) = match kind {
        OptimizerKind::Sgd => (0.05, 1e-4, 0.0),
        OptimizerKind::Adagrad => (0.1, 1e-6, 1e-4),
        OptimizerKind::Adam => (0.01, 0.0, 0.0),
    };
    RefOptions {
        optimizer: OptimizerConfig {
            kind,
            lr,
            l2,
            l1,
            batch_size: 16,
        },
        scaler,
    }
}

/// Runs the oracle once, then for each set of options the reference and the
/// product with every worker count, and compares them.
fn check(files: &[PathBuf], format: Format, bucket_ms: i64, cases: &[RefOptions]) {
    check_with(files, format, bucket_ms, cases, &[]);
}

/// As [`check`], passing `extra` flags to every run.
fn check_with(
    files: &[PathBuf],
    format: Format,
    bucket_ms: i64,
    cases: &[RefOptions],
    extra: &[&str],
) {
    let oracle = run_oracle(files, &OracleConfig::new(format, bucket_ms));
    assert!(
        !oracle.examples.is_empty(),
        "the log must have examples to train on"
    );
    let mut base_args = vec![
        "--spec".to_string(),
        spec_name(format).to_string(),
        "--bucket".to_string(),
        bucket_ms.to_string(),
        "--emit-examples".to_string(),
    ];
    base_args.extend(extra.iter().map(|flag| flag.to_string()));
    for file in files {
        base_args.extend(["--events".to_string(), file.display().to_string()]);
    }

    for options in cases {
        let reference = train_on_oracle(&oracle.examples, options)
            .unwrap_or_else(|error| panic!("the reference stopped: {error:?}"));
        assert!(
            reference.steps > 10,
            "too few steps to test synchronisation"
        );
        let expected = ProductModel::of_reference(&reference);
        let label = format!(
            "{} {} {}",
            files[0].file_name().unwrap_or_default().to_string_lossy(),
            options.optimizer.kind,
            options.scaler
        );
        eprintln!(
            "{label}: {} examples, {} epochs, {} steps",
            oracle.examples.len(),
            reference.per_epoch.len(),
            reference.steps
        );

        let mut first: Option<ProductModel> = None;
        for workers in WORKERS {
            let out = tempfile::tempdir().expect("a temporary directory");
            let mut args = base_args.clone();
            args.extend(option_flags(options));
            args.extend(["-w".to_string(), workers.to_string()]);
            run_ok(out.path(), &args);

            let what = format!("{label}, -w {workers}");
            let model = read_model(out.path());
            if let Some(first) = &first {
                assert_same_bits(&format!("{what} against -w 1"), &model, first);
            }
            assert_same_bits(&format!("{what} against the reference"), &model, &expected);
            assert_eval_matches(&what, &read_eval(out.path()), &reference);
            first.get_or_insert(model);
        }
    }
}

/// A seeded log with enough examples per epoch for many mini-batches.
fn seeded_log(dir: &Path, seed: u64, format: Format) -> PathBuf {
    let mut opts = GenOpts::days(8);
    opts.chains_per_epoch = 400;
    opts.users = 300;
    opts.items = 400;
    opts.order = Order::Shuffled;
    let text = generate(seed, format, &opts);
    write_log(dir, &format!("log-{seed}.csv"), &text)
}

#[test]
fn every_optimizer_and_scaler_trains_the_reference_model_on_any_worker_count() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = seeded_log(dir.path(), 21, Format::Taobao);
    let mut cases = Vec::new();
    for kind in OptimizerKind::ALL {
        for scaler in ScalerKind::ALL {
            cases.push(options(kind, scaler));
        }
    }
    check(&[path], Format::Taobao, DAY_MS, &cases);
}

#[test]
fn seeded_logs_of_other_formats_train_the_reference_model() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (seed, format) in [(22, Format::RetailRocket), (23, Format::Rees46)] {
        let path = seeded_log(dir.path(), seed, format);
        check(
            &[path],
            format,
            DAY_MS,
            &[options(OptimizerKind::Adagrad, ScalerKind::ZScore)],
        );
    }
}

#[test]
fn real_taobao_sample_trains_the_reference_model() {
    let Some(dir) = real_dir() else { return };
    let path = dir.join("taobao-userbehavior/UserBehavior_head84k_usersorted_mydeep.csv");
    check(
        &[path],
        Format::Taobao,
        DAY_MS,
        &[options(OptimizerKind::Adagrad, ScalerKind::ZScore)],
    );
}

#[test]
fn real_rees46_sample_trains_the_reference_model() {
    let Some(dir) = real_dir() else { return };
    let path = dir.join("rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv");
    check(
        &[path],
        Format::Rees46,
        HOUR_MS,
        &[
            options(OptimizerKind::Adam, ScalerKind::MinMax),
            options(OptimizerKind::Sgd, ScalerKind::ZScore),
        ],
    );
}

#[test]
fn real_retailrocket_sample_trains_the_reference_model() {
    let Some(dir) = real_dir() else { return };
    let path = dir.join("retailrocket/events_sample_1500visitors_sessionformer.csv");
    check(
        &[path],
        Format::RetailRocket,
        DAY_MS,
        &[
            options(OptimizerKind::Sgd, ScalerKind::ZScore),
            options(OptimizerKind::Adam, ScalerKind::MinMax),
        ],
    );
}

#[test]
fn bounded_lateness_trains_the_same_model() {
    // The file is in time order, so lateness 0 rejects nothing; epochs are
    // trained while later rows are still being read.
    let Some(dir) = real_dir() else { return };
    let path = dir.join("rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv");
    check_with(
        &[path],
        Format::Rees46,
        HOUR_MS,
        &[options(OptimizerKind::Adagrad, ScalerKind::ZScore)],
        &["--lateness", "0"],
    );
}

#[test]
fn mini_batches_that_no_example_hashes_to_take_no_step() {
    // With one example per mini-batch, about 1/e of the n batches of an
    // epoch get no example. Such a batch has no mean gradient and takes no
    // optimizer step (for Adam, a zero-gradient step would still move the
    // weights through its momentum).
    let dir = tempfile::tempdir().expect("a temporary directory");
    let text = generate(24, Format::Taobao, &GenOpts::days(4));
    let path = write_log(dir.path(), "log.csv", &text);
    let oracle = run_oracle(
        std::slice::from_ref(&path),
        &OracleConfig::new(Format::Taobao, DAY_MS),
    );
    let mut cases = Vec::new();
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let mut case = options(kind, ScalerKind::ZScore);
        case.optimizer.batch_size = 1;
        let reference = train_on_oracle(&oracle.examples, &case).expect("finite training");
        assert!(reference.empty_batches > 10, "{reference:?}");
        cases.push(case);
    }
    check(&[path], Format::Taobao, DAY_MS, &cases);
}
