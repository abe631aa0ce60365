//! Scaler statistics: the trainer adds every example to an integer
//! [`Histogram`] per epoch, merges the epoch's histograms from all workers,
//! and derives the exact mean, standard deviation, min and max from it to
//! scale the next epoch.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench scaler
//! ```
//!
//! Data: raw aggregates from a seeded heavy-tailed generator (most small, a
//! few large, as in real logs, so the maps hold a realistic few hundred
//! distinct values per feature). Sizes: `add` over 10,000 examples (about
//! one epoch of a 1 M-event log on one worker), reported in examples per
//! second; `merge` of a 10,000-example histogram into one of 1,000,000 (a
//! worker's epoch into the run's history); `stats` of the 1,000,000-example
//! history (done once per epoch, so its cost must stay far below an epoch's
//! adds).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use deltarec::scaler::{Histogram, NUM_FEATURES};

/// Examples added per `add` iteration.
const EPOCH_EXAMPLES: usize = 10_000;
/// Examples in the history that `merge` and `stats` work on.
const HISTORY_EXAMPLES: usize = 1_000_000;

/// splitmix64, so every run sees the same data.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Heavy-tailed raw aggregates: `2^k - 1` plus noise for a geometric `k`.
fn raw_examples(seed: u64, count: usize) -> Vec<[u64; NUM_FEATURES]> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            std::array::from_fn(|_| {
                let bits = next(&mut state);
                let magnitude = bits.trailing_zeros().min(20);
                ((1u64 << magnitude) - 1) + (bits >> 44) % (u64::from(magnitude) + 1)
            })
        })
        .collect()
}

fn histogram(examples: &[[u64; NUM_FEATURES]]) -> Histogram {
    let mut histogram = Histogram::default();
    for raw in examples {
        histogram.add(raw);
    }
    histogram
}

fn scaler(criterion: &mut Criterion) {
    let epoch = raw_examples(1, EPOCH_EXAMPLES);
    let history = histogram(&raw_examples(2, HISTORY_EXAMPLES));
    let mut group = criterion.benchmark_group("scaler");

    group.throughput(Throughput::Elements(EPOCH_EXAMPLES as u64));
    group.bench_function("add/10k", |bencher| {
        bencher.iter(|| histogram(black_box(&epoch)))
    });

    group.finish();

    // Once per epoch each: timed per call, not per example.
    let epoch_histogram = histogram(&epoch);
    let mut group = criterion.benchmark_group("scaler");
    group.bench_function("merge/10k-into-1M", |bencher| {
        bencher.iter_batched_ref(
            || history.clone(),
            |merged| merged.merge(black_box(&epoch_histogram)),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("stats/1M", |bencher| {
        bencher.iter(|| black_box(&history).stats())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    targets = scaler
}
criterion_main!(benches);
