//! One mini-batch training step, the model's hot path: for every example of
//! the batch, add its log-loss gradient to a fixed-point [`GradSum`]; take the
//! mean; apply the optimizer.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench trainer_step
//! ```
//!
//! (append `-- --quick` for a fast, rougher run). Throughput is reported in
//! examples per second on one core: the trainer runs one such step per
//! worker, so this bounds what a worker can train on.
//!
//! Data shape: batches of 64, 256 (the default batch size) and 1024 examples
//! of the reference task's ten features, drawn from a seeded generator with
//! heavy-tailed integer aggregates (most zero, a few large, as in real logs)
//! and scaled by z-score with statistics from a histogram of 10 000 earlier
//! examples, so the values match what the trainer sees. Each optimizer is
//! measured, since AdaGrad and Adam add a square root and a division per
//! coordinate. Parameters and optimizer state carry over between iterations,
//! as in training.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use deltarec::model::{GradSum, Optimizer, OptimizerConfig, OptimizerKind, Params};
use deltarec::scaler::{Histogram, NUM_FEATURES, ScalerKind, scale_example};
use std::hint::black_box;

/// Batch sizes measured: small, the default, large.
const BATCH_SIZES: [usize; 3] = [64, 256, 1024];

/// splitmix64 as a seeded generator, so every run sees the same data.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Heavy-tailed raw aggregates: `2^k - 1` plus noise for a geometric `k`.
fn raw_example(state: &mut u64) -> [u64; NUM_FEATURES] {
    std::array::from_fn(|_| {
        let bits = next(state);
        let magnitude = bits.trailing_zeros().min(20);
        ((1u64 << magnitude) - 1) + (bits >> 44) % (magnitude as u64 + 1)
    })
}

/// `count` scaled examples with labels (about 1 in 8 positive).
fn scaled_batch(count: usize) -> Vec<([f64; NUM_FEATURES], bool)> {
    let mut state = 0xDE17A;
    let mut history = Histogram::default();
    for _ in 0..10_000 {
        history.add(&raw_example(&mut state));
    }
    let stats = history.stats();
    (0..count)
        .map(|_| {
            let raw = raw_example(&mut state);
            let label = next(&mut state).is_multiple_of(8);
            (scale_example(&stats, &raw, ScalerKind::ZScore), label)
        })
        .collect()
}

/// Sums the batch's gradients, takes the mean and applies the optimizer.
fn step(params: &mut Params, optimizer: &mut Optimizer, batch: &[([f64; NUM_FEATURES], bool)]) {
    let mut sum = GradSum::new(NUM_FEATURES);
    for (x, label) in batch {
        sum.add(params, x, *label)
            .expect("scaled features give finite gradients");
    }
    let mean = sum.mean().expect("a batch is never empty");
    optimizer
        .apply(params, &mean)
        .expect("a finite mean gradient gives finite parameters");
}

fn trainer_step(criterion: &mut Criterion) {
    for kind in OptimizerKind::ALL {
        let mut group = criterion.benchmark_group(format!("trainer_step/{kind}"));
        for batch_size in BATCH_SIZES {
            let batch = scaled_batch(batch_size);
            let config = OptimizerConfig {
                kind,
                batch_size,
                ..OptimizerConfig::default()
            };
            let mut optimizer = Optimizer::new(config, NUM_FEATURES).expect("default knobs");
            let mut params = Params::zeros(NUM_FEATURES);

            group.throughput(Throughput::Elements(batch_size as u64));
            group.bench_function(BenchmarkId::from_parameter(batch_size), |bencher| {
                bencher.iter(|| step(&mut params, &mut optimizer, black_box(&batch)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, trainer_step);
criterion_main!(benches);
