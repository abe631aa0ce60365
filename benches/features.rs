//! The feature dataflow ([`deltarec::features::build`]): per-epoch
//! de-duplication and bot exclusion, the lagged pair, user and item
//! aggregates, and the examples assembled from them. It is where a run
//! spends most of its time, so its events per second bound a worker's.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench features
//! DELTAREC_BENCH_LARGE=1 cargo bench --bench features   # adds 1,000,000 events
//! ```
//!
//! One timely worker (`timely::execute_directly`) builds the dataflow, is fed
//! the events in blocks of 10,000 rows with a step after each (as a run's
//! reader does), and runs until the examples are complete; throughput is in
//! events per second. Events are parsed from `deltarec generate`
//! RetailRocket logs over the published 139 days, so the per-epoch shape
//! (sessions, heavy users, carts after views, duplicates, bots) is the real
//! log's. Sizes: 10,000 events shows the fixed cost of building and draining
//! a dataflow with 139 epochs; 100,000 is the per-event cost of a small
//! shop's log; 1,000,000 (opt-in, about ten seconds an iteration) is the
//! size `scripts/bench.sh` runs end to end, where arrangements no longer fit
//! in the caches.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use csv::ReaderBuilder;
use deltarec::event::Event;
use deltarec::features::{self, FeatureOptions, Restored, Time, epoch_time};
use deltarec::generate::{Format, GenerateOptions, generate};
use deltarec::spec::Spec;
use differential_dataflow::input::Input;
use timely::dataflow::operators::probe::Handle;

/// Milliseconds in a day, the default epoch.
const DAY_MS: i64 = 86_400_000;
/// Rows fed between two worker steps.
const BLOCK: usize = 10_000;

/// The events of a generated RetailRocket log of `rows` rows.
fn events(rows: u64) -> Arc<Vec<Event>> {
    let options = GenerateOptions {
        format: Format::RetailRocket,
        events: rows,
        days: 139,
        seed: 1,
        disorder: 0.0,
        max_lateness: 1,
    };
    let mut text = Vec::new();
    generate(&options, &mut text).expect("writing to memory cannot fail");
    let spec = Spec::resolve("retailrocket").expect("a built-in spec");
    let mut reader = ReaderBuilder::new().from_reader(text.as_slice());
    let header = reader.byte_headers().expect("a header").clone();
    let binding = spec.bind(Some(&header)).expect("generated headers match");
    let events = reader
        .byte_records()
        .map(|record| {
            let record = record.expect("generated rows are valid CSV");
            binding.parse(&record).expect("generated rows parse").event
        })
        .collect();
    Arc::new(events)
}

/// Runs the feature dataflow over `events` on one worker; returns the number
/// of example updates it produced.
fn run(events: Arc<Vec<Event>>) -> u64 {
    timely::execute_directly(move |worker| {
        let examples = Rc::new(Cell::new(0u64));
        let counter = examples.clone();
        let probe = Handle::new();
        let mut input = worker.dataflow::<Time, _, _>(|scope| {
            let (input, events) = scope.new_collection::<Event, isize>();
            let (_restored_input, restored) = scope.new_collection::<Restored, isize>();
            let options = FeatureOptions {
                bucket_ms: DAY_MS,
                bot_threshold: 1000,
            };
            features::build(events, restored, options)
                .examples
                .inspect(move |_| counter.set(counter.get() + 1))
                .probe_with(&probe);
            input
        });
        for block in events.chunks(BLOCK) {
            for event in block {
                input.update_at(*event, epoch_time((event.ts / DAY_MS) as u64), 1);
            }
            input.flush();
            worker.step();
        }
        input.close();
        while worker.step_or_park(None) {}
        examples.get()
    })
}

fn feature_dataflow(criterion: &mut Criterion) {
    let mut sizes = vec![10_000, 100_000];
    if std::env::var_os("DELTAREC_BENCH_LARGE").is_some() {
        sizes.push(1_000_000);
    }
    let mut group = criterion.benchmark_group("features");
    for rows in sizes {
        let events = events(rows);
        group.throughput(Throughput::Elements(rows));
        group.bench_function(BenchmarkId::from_parameter(rows), |bencher| {
            bencher.iter(|| black_box(run(events.clone())))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    targets = feature_dataflow
}
criterion_main!(benches);
