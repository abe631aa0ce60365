//! The trainer on degenerate logs: one class only, constant features, epochs
//! with rows but no examples, a heavy item with enormous counts, a single
//! example, a single epoch.
//!
//! Each run must complete with 1, 2 and 3 workers, write a finite
//! `model.json` that is bit-identical to the reference trainer's
//! (`tests/common/reference_trainer.rs`), and report the reference's
//! progressive-validation figures, with AUC 0.5 wherever only one class (or
//! only tied scores) is present. The logs are built by hand
//! (`tests/common/taobao_log.rs`) so that each property holds exactly.

mod common;

use common::oracle::{DAY_MS, Format, OracleConfig, run_oracle};
use common::reference_trainer::{RefOptions, RefResult, train_on_oracle};
use common::taobao_log::{TaobaoLog, day_epoch};
use common::trainer_outputs::{
    ProductEval, ProductModel, assert_eval_matches, assert_finite_model, assert_same_bits,
    option_flags, read_eval, run_ok,
};
use deltarec::model::{OptimizerConfig, OptimizerKind};
use deltarec::scaler::ScalerKind;

/// AdaGrad with the product's defaults, but batches of 16.
fn default_options() -> RefOptions {
    RefOptions {
        optimizer: OptimizerConfig {
            kind: OptimizerKind::Adagrad,
            lr: 0.1,
            l2: 1e-6,
            l1: 0.0,
            batch_size: 16,
        },
        scaler: ScalerKind::ZScore,
    }
}

/// What one worker count's run wrote.
struct Run {
    workers: usize,
    model: ProductModel,
    eval: ProductEval,
}

/// Runs `log` with 1, 2 and 3 workers and checks each run against the
/// reference; returns the reference and the runs for case-specific checks.
fn check(log: &TaobaoLog, bot_threshold: u64, options: &RefOptions) -> (RefResult, Vec<Run>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = log.write(dir.path(), "log.csv");
    let oracle = run_oracle(
        std::slice::from_ref(&path),
        &OracleConfig {
            format: Format::Taobao,
            bucket_ms: DAY_MS,
            bot_threshold,
        },
    );
    let reference = train_on_oracle(&oracle.examples, options)
        .unwrap_or_else(|error| panic!("the reference stopped: {error:?}"));
    // An empty mini-batch is a separate matter (see trainer_matches_reference.rs).
    assert_eq!(
        reference.empty_batches, 0,
        "the log must not leave a mini-batch empty"
    );
    let expected = ProductModel::of_reference(&reference);

    let runs = [1, 2, 3]
        .into_iter()
        .map(|workers| {
            let out = tempfile::tempdir().expect("a temporary directory");
            let mut args: Vec<String> = [
                "--spec",
                "taobao",
                "--bucket",
                "1d",
                "--emit-examples",
                "--bot-threshold",
            ]
            .map(String::from)
            .to_vec();
            args.push(bot_threshold.to_string());
            args.extend(["--events".to_string(), path.display().to_string()]);
            args.extend(option_flags(options));
            args.extend(["-w".to_string(), workers.to_string()]);
            run_ok(out.path(), &args);

            let what = format!("-w {workers}");
            let model = assert_finite_model(out.path());
            assert_same_bits(&format!("{what} against the reference"), &model, &expected);
            let eval = read_eval(out.path());
            assert_eval_matches(&what, &eval, &reference);
            Run {
                workers,
                model,
                eval,
            }
        })
        .collect();
    (reference, runs)
}

/// Asserts AUC 0.5 in every epoch and, if `overall`, over the run.
fn assert_auc_one_half(runs: &[Run], overall: bool) {
    for run in runs {
        for (epoch, eval) in &run.eval.per_epoch {
            assert_eq!(eval.auc, 0.5, "-w {}: epoch {epoch}: {eval:?}", run.workers);
        }
        if overall {
            let eval = &run.eval.overall;
            assert_eq!(eval.auc, 0.5, "-w {}: summary: {eval:?}", run.workers);
        }
    }
}

/// Ordinary traffic: each of `users` users views three items a day among
/// `items`, and buys the first of them when `buys(user, day)` says so.
fn traffic(
    log: &mut TaobaoLog,
    days: std::ops::Range<i64>,
    users: u64,
    buys: fn(u64, i64) -> bool,
) {
    for day in days {
        for user in 1..=users {
            for k in 0..3u64 {
                let item = 100 + (user * 7 + day as u64 * 3 + k * 11) % 40;
                if k == 0 && buys(user, day) {
                    log.bought(day, user, item);
                } else {
                    log.event(day, user, item, "pv");
                }
            }
        }
    }
}

#[test]
fn log_without_purchases_reports_auc_one_half_and_a_finite_model() {
    let mut log = TaobaoLog::new();
    traffic(&mut log, 0..4, 30, |_, _| false);
    let (reference, runs) = check(&log, 1000, &default_options());
    assert_eq!(reference.overall.positives, 0);
    assert!(reference.overall.examples > 300);
    assert_auc_one_half(&runs, true);
}

#[test]
fn log_where_every_example_is_a_purchase_reports_auc_one_half() {
    let mut log = TaobaoLog::new();
    for day in 0..4 {
        for user in 1..=30u64 {
            log.bought(day, user, 100 + (user * 7 + day as u64 * 3) % 40);
        }
    }
    let (reference, runs) = check(&log, 1000, &default_options());
    assert_eq!(reference.overall.positives, reference.overall.examples);
    assert_auc_one_half(&runs, true);
}

#[test]
fn constant_features_leave_every_weight_at_zero() {
    // Every pair is new: all aggregates are 0, so every feature scales to 0
    // and only the bias can learn; scores tie within each epoch.
    let mut log = TaobaoLog::new();
    for day in 0..5i64 {
        for k in 0..60u64 {
            let (user, item) = (1000 * (day as u64 + 1) + k, 5000 * (day as u64 + 1) + k);
            if k.is_multiple_of(3) {
                log.bought(day, user, item);
            } else {
                log.event(day, user, item, "pv");
            }
        }
    }
    let (reference, runs) = check(&log, 1000, &default_options());
    assert!(reference.overall.positives > 0);
    for run in &runs {
        assert_eq!(run.model.weights, [0.0; 10], "-w {}", run.workers);
        assert!(run.model.bias < 0.0, "-w {}: a third buy", run.workers);
    }
    assert_auc_one_half(&runs, false);
}

#[test]
fn epochs_with_rows_but_no_examples_are_reported_and_change_nothing() {
    let mut log = TaobaoLog::new();
    let buys = |user: u64, day: i64| (user + day as u64).is_multiple_of(4);
    traffic(&mut log, 0..1, 30, buys);
    // Day 1: only rejected rows (an unknown kind, a bad user id).
    let day1 = common::taobao_log::DAY0_S + common::taobao_log::DAY_S;
    log.raw(&format!("7,101,1,click,{day1}"));
    log.raw(&format!("x7,101,1,pv,{}", day1 + 1));
    // Day 2: only a bot (threshold 5, six distinct events).
    for item in 0..6 {
        log.event(2, 9_999, 200 + item, "pv");
    }
    traffic(&mut log, 3..5, 30, buys);

    let (reference, runs) = check(&log, 5, &default_options());
    assert!(!reference.per_epoch.contains_key(&day_epoch(1)));
    assert!(!reference.per_epoch.contains_key(&day_epoch(2)));
    for run in &runs {
        for day in [1, 2] {
            let eval = run.eval.per_epoch.get(&day_epoch(day)).unwrap_or_else(|| {
                panic!("-w {}: day {day} has rows but no epoch object", run.workers)
            });
            assert_eq!((eval.examples, eval.auc), (0, 0.5), "-w {}", run.workers);
        }
        assert_eq!(run.model.last_epoch, Some(day_epoch(4)));
    }
}

#[test]
fn heavy_item_with_enormous_counts_keeps_the_model_finite() {
    // Day 0: user 1 views item 77 eighty thousand times (bot rule off);
    // then every user views item 77, and user 1 buys it.
    let mut log = TaobaoLog::new();
    for _ in 0..80_000 {
        log.event(0, 1, 77, "pv");
    }
    let buys = |user: u64, day: i64| (user * 3 + day as u64).is_multiple_of(5);
    traffic(&mut log, 0..4, 30, buys);
    for day in 1..4 {
        log.bought(day, 1, 77);
        for user in 2..=30 {
            log.event(day, user, 77, "pv");
        }
    }
    for options in [
        default_options(),
        RefOptions {
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Sgd,
                lr: 0.5,
                ..default_options().optimizer
            },
            scaler: ScalerKind::MinMax,
        },
        RefOptions {
            optimizer: OptimizerConfig {
                kind: OptimizerKind::Adam,
                lr: 0.05,
                ..default_options().optimizer
            },
            scaler: ScalerKind::ZScore,
        },
    ] {
        let (reference, _) = check(&log, 0, &options);
        assert!(reference.histogram.feature(8).contains_key(&80_000));
    }
}

#[test]
fn single_example_log_trains_one_step() {
    let mut log = TaobaoLog::new();
    log.event(0, 1, 1, "pv");
    let (reference, runs) = check(&log, 1000, &default_options());
    assert_eq!((reference.overall.examples, reference.steps), (1, 1));
    assert_auc_one_half(&runs, true);
    for run in &runs {
        // Cold start: only the bias moves, by AdaGrad's first step lr g/(|g| + eps).
        assert_eq!(run.model.weights, [0.0; 10]);
        assert!(
            (run.model.bias + 0.1).abs() < 1e-6,
            "bias {}",
            run.model.bias
        );
    }
}

#[test]
fn single_epoch_log_is_all_cold_start() {
    let mut log = TaobaoLog::new();
    traffic(&mut log, 0..1, 60, |user, _| user.is_multiple_of(3));
    let (reference, runs) = check(&log, 1000, &default_options());
    assert_eq!(reference.per_epoch.len(), 1);
    assert!(reference.overall.positives > 0 && reference.steps > 5);
    for run in &runs {
        assert_eq!(run.model.weights, [0.0; 10], "-w {}", run.workers);
    }
    assert_auc_one_half(&runs, true);
}
