//! Row parsing, the first per-row step of a run: [`Binding::parse`] turns one
//! CSV record into a canonical event (or the reason it is rejected), so it
//! bounds how fast a worker can ingest a log.
//!
//! Run with
//!
//! ```text
//! cargo bench --bench parse
//! ```
//!
//! Throughput is reported in rows per second on one core. Rows come from
//! `deltarec generate` (seeded, 100,000 rows per format, 139 days), already
//! split into records, so only the parse is timed, not the CSV splitting.
//! Each of the three formats is there because each stresses another part of
//! the parser: RetailRocket reads millisecond integers and maps three kind
//! names, REES46 parses a `YYYY-MM-DD HH:MM:SS UTC` time string (cached per
//! second), a price and a 19-digit category over nine fields, and Taobao
//! reads second timestamps without a header.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use csv::{ByteRecord, ReaderBuilder};
use deltarec::clean::Binding;
use deltarec::generate::{Format, GenerateOptions, generate};
use deltarec::spec::Spec;

/// Rows parsed per iteration: enough to leave the caches' warm-up behind.
const ROWS: u64 = 100_000;

/// A generated log of `format`, split into records, with its binding.
fn records(format: Format) -> (Binding, Vec<ByteRecord>) {
    let options = GenerateOptions {
        format,
        events: ROWS,
        days: 139,
        seed: 1,
        disorder: 0.0,
        max_lateness: 1,
    };
    let mut text = Vec::new();
    generate(&options, &mut text).expect("writing to memory cannot fail");
    let spec = Spec::builtin()
        .into_iter()
        .find(|spec| spec.name() == format.name())
        .expect("every generated format has a built-in spec");
    let mut records: Vec<ByteRecord> = ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_slice())
        .byte_records()
        .map(|record| record.expect("generated rows are valid CSV"))
        .collect();
    let header = spec.has_header().then(|| records.remove(0));
    let binding = spec.bind(header.as_ref()).expect("generated headers match");
    (binding, records)
}

fn parse(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("parse");
    group.throughput(Throughput::Elements(ROWS));
    for format in Format::ALL {
        let (binding, records) = records(format);
        group.bench_function(format.name(), |bencher| {
            bencher.iter(|| {
                let accepted = records
                    .iter()
                    .filter(|record| binding.parse(black_box(record)).is_ok())
                    .count();
                assert_eq!(accepted as u64, ROWS, "every generated row parses");
                accepted
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    targets = parse
}
criterion_main!(benches);
