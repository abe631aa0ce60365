//! Readers for the files a run writes to its output directory, and the
//! comparison of those files with an [`OracleResult`].
//!
//! The product's outputs (reference task, section 9) are read back as plain
//! data: `examples.csv` as text (it must match byte for byte, line by line),
//! `features/*.csv`, `quarantine.csv` and `metrics.jsonl` as integers,
//! `scaler.json` as floats compared with a tolerance of 1e-12. Every failure
//! names the file and shows the first differing row.
//!
//! [`write_expected`] writes an oracle result in the same layout; the oracle's
//! self-tests use it to check the readers and the comparison themselves.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use super::oracle::{
    Counters, EpochCounters, FEATURE_NAMES, OracleResult, Stats, render_examples_csv,
};

/// Header of `features/users.csv`.
pub const USERS_HEADER: &str = "user,u_views,u_carts,u_purchases,u_items";
/// Header of `features/items.csv`.
pub const ITEMS_HEADER: &str = "item,i_views,i_carts,i_purchases,i_users";
/// Header of `features/pairs.csv`.
pub const PAIRS_HEADER: &str = "user,item,p_views,p_carts";
/// Header of `quarantine.csv`.
pub const QUARANTINE_HEADER: &str = "file,line,reason,raw";

/// Relative (and, near zero, absolute) tolerance for scaler statistics.
pub const SCALER_TOLERANCE: f64 = 1e-12;

/// The per-epoch objects and the summary object of `metrics.jsonl`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// The per-epoch objects, by epoch, reduced to the oracle's counters.
    pub per_epoch: BTreeMap<i64, EpochCounters>,
    /// The summary object.
    pub summary: Counters,
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// The lines of a CSV output after its header, which must be `header`.
fn data_lines(path: &Path, header: &str) -> Vec<String> {
    let text = read_text(path);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(header),
        "{}: wrong header",
        path.display()
    );
    lines.map(str::to_string).collect()
}

fn parse_integers<const N: usize>(path: &Path, line: &str) -> [u64; N] {
    let values: Vec<u64> = line
        .split(',')
        .map(|field| {
            field.trim().parse().unwrap_or_else(|_| {
                panic!(
                    "{}: {field:?} is not an integer in row {line:?}",
                    path.display()
                )
            })
        })
        .collect();
    values
        .try_into()
        .unwrap_or_else(|_| panic!("{}: row {line:?} does not have {N} fields", path.display()))
}

/// Reads a keyed integer table, checking that keys strictly increase.
fn read_table<K: Ord + Copy + Debug, const N: usize, const V: usize>(
    path: &Path,
    header: &str,
    split: impl Fn([u64; N]) -> (K, [u64; V]),
) -> BTreeMap<K, [u64; V]> {
    let mut table = BTreeMap::new();
    let mut previous: Option<K> = None;
    for line in data_lines(path, header) {
        let (key, values) = split(parse_integers::<N>(path, &line));
        assert!(
            previous.is_none_or(|previous| previous < key),
            "{}: row {line:?} is out of order or repeated (after key {previous:?})",
            path.display()
        );
        previous = Some(key);
        table.insert(key, values);
    }
    table
}

/// Reads `features/users.csv`.
pub fn read_users(out_dir: &Path) -> BTreeMap<u64, [u64; 4]> {
    read_table::<u64, 5, 4>(&out_dir.join("features/users.csv"), USERS_HEADER, |row| {
        (row[0], [row[1], row[2], row[3], row[4]])
    })
}

/// Reads `features/items.csv`.
pub fn read_items(out_dir: &Path) -> BTreeMap<u64, [u64; 4]> {
    read_table::<u64, 5, 4>(&out_dir.join("features/items.csv"), ITEMS_HEADER, |row| {
        (row[0], [row[1], row[2], row[3], row[4]])
    })
}

/// Reads `features/pairs.csv`.
pub fn read_pairs(out_dir: &Path) -> BTreeMap<(u64, u64), [u64; 2]> {
    read_table::<(u64, u64), 4, 2>(&out_dir.join("features/pairs.csv"), PAIRS_HEADER, |row| {
        ((row[0], row[1]), [row[2], row[3]])
    })
}

/// Reads `quarantine.csv` as (file, line, reason, raw) records, in file order.
pub fn read_quarantine(out_dir: &Path) -> Vec<(String, u64, String, String)> {
    let path = out_dir.join("quarantine.csv");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(&path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    let header = reader
        .headers()
        .expect("quarantine.csv has a header")
        .clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>().join(","),
        QUARANTINE_HEADER
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let field = |index: usize| record.get(index).unwrap_or_default().to_string();
            let line = field(1)
                .parse()
                .unwrap_or_else(|_| panic!("{}: bad line number in {record:?}", path.display()));
            (field(0), line, field(2), field(3))
        })
        .collect()
}

fn count(object: &serde_json::Value, key: &str, line: &str) -> u64 {
    object
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("metrics.jsonl: no non-negative integer {key:?} in {line}"))
}

/// Reads `metrics.jsonl`: one object per epoch, then one with `"summary": true`.
///
/// Missing per-reason counts read as absent (zero); reasons counted zero are
/// dropped so that the map compares equal to the oracle's.
pub fn read_metrics(out_dir: &Path) -> Metrics {
    let path = out_dir.join("metrics.jsonl");
    let mut metrics = Metrics::default();
    let mut summary_seen = false;
    for line in read_text(&path)
        .lines()
        .filter(|line| !line.trim().is_empty())
    {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("metrics.jsonl: {error} in {line}"));
        if object.get("summary").and_then(serde_json::Value::as_bool) == Some(true) {
            assert!(
                !summary_seen,
                "metrics.jsonl: a second summary object: {line}"
            );
            summary_seen = true;
            metrics.summary = read_summary(&object, line);
            continue;
        }
        assert!(
            !summary_seen,
            "metrics.jsonl: an epoch object after the summary: {line}"
        );
        let epoch = object
            .get("epoch")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_else(|| panic!("metrics.jsonl: no integer epoch in {line}"));
        let counters = EpochCounters {
            rows: count(&object, "rows", line),
            rejected: count(&object, "rejected", line),
            duplicates: count(&object, "duplicates", line),
            bot_excluded: count(&object, "bot_excluded", line),
            clean: count(&object, "clean", line),
            examples: count(&object, "examples", line),
            positives: count(&object, "positives", line),
        };
        let previous = metrics.per_epoch.insert(epoch, counters);
        assert!(
            previous.is_none(),
            "metrics.jsonl: epoch {epoch} reported twice"
        );
    }
    assert!(summary_seen, "metrics.jsonl: no summary object");
    metrics
}

fn read_summary(object: &serde_json::Value, line: &str) -> Counters {
    let reasons = object
        .get("rejected_by_reason")
        .and_then(serde_json::Value::as_object)
        .unwrap_or_else(|| panic!("metrics.jsonl: no rejected_by_reason object in {line}"));
    let rejected_by_reason = reasons
        .iter()
        .map(|(reason, value)| {
            let value = value
                .as_u64()
                .unwrap_or_else(|| panic!("bad count for {reason} in {line}"));
            (reason.clone(), value)
        })
        .filter(|&(_, value)| value > 0)
        .collect();
    Counters {
        rows: count(object, "rows", line),
        accepted: count(object, "accepted", line),
        rejected: count(object, "rejected", line),
        rejected_by_reason,
        duplicates: count(object, "duplicates", line),
        bot_excluded: count(object, "bot_excluded", line),
        clean: count(object, "clean", line),
        epochs: count(object, "epochs", line),
        examples: count(object, "examples", line),
        positives: count(object, "positives", line),
    }
}

/// Reads `scaler.json`: the example count and the statistics per feature, in
/// [`FEATURE_NAMES`] order.
pub fn read_scaler(out_dir: &Path) -> (u64, [Stats; 10]) {
    let path = out_dir.join("scaler.json");
    let json: serde_json::Value = serde_json::from_str(&read_text(&path))
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let total = json.get("count").and_then(serde_json::Value::as_u64);
    let total = total.unwrap_or_else(|| panic!("scaler.json: no integer count"));
    let stats = FEATURE_NAMES.map(|name| {
        let feature = &json["features"][name];
        let number = |key: &str| {
            feature[key]
                .as_f64()
                .unwrap_or_else(|| panic!("scaler.json: no {name}.{key}"))
        };
        Stats {
            count: feature["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("scaler.json: no integer {name}.count")),
            mean: number("mean"),
            std: number("std"),
            min: number("min"),
            max: number("max"),
        }
    });
    (total, stats)
}

/// Panics with the first line where `found` differs from `expected`.
pub fn assert_same_lines(what: &str, found: &str, expected: &str) {
    let (found_lines, expected_lines): (Vec<_>, Vec<_>) =
        (found.lines().collect(), expected.lines().collect());
    let length = found_lines.len().max(expected_lines.len());
    for index in 0..length {
        let (found_line, expected_line) = (found_lines.get(index), expected_lines.get(index));
        assert!(
            found_line == expected_line,
            "{what}: first difference at line {} of {} found / {} expected\n  found:    {}\n  \
             expected: {}",
            index + 1,
            found_lines.len(),
            expected_lines.len(),
            found_line.unwrap_or(&"<end of file>"),
            expected_line.unwrap_or(&"<end of file>"),
        );
    }
}

/// Panics with the first key whose value differs between two maps.
pub fn assert_same_map<K: Ord + Debug, V: PartialEq + Debug>(
    what: &str,
    found: &BTreeMap<K, V>,
    expected: &BTreeMap<K, V>,
) {
    let mut keys: Vec<&K> = found.keys().chain(expected.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let (found_value, expected_value) = (found.get(key), expected.get(key));
        assert!(
            found_value == expected_value,
            "{what}: first difference at key {key:?} ({} found / {} expected)\n  found:    \
             {found_value:?}\n  expected: {expected_value:?}",
            found.len(),
            expected.len(),
        );
    }
}

/// Whether two statistics agree within [`SCALER_TOLERANCE`], relative to the
/// larger magnitude, or absolute when both are near zero.
pub fn close(found: f64, expected: f64) -> bool {
    let difference = (found - expected).abs();
    difference <= SCALER_TOLERANCE
        || difference <= SCALER_TOLERANCE * found.abs().max(expected.abs())
}

/// Compares the scaler read from a run with the expected statistics.
pub fn assert_scaler_matches(found: &(u64, [Stats; 10]), expected: &OracleResult) {
    let examples = expected.examples.len() as u64;
    assert_eq!(found.0, examples, "scaler.json: count");
    for (index, name) in FEATURE_NAMES.iter().enumerate() {
        let (got, want) = (found.1[index], expected.scaler[index]);
        assert_eq!(got.count, want.count, "scaler.json: {name}.count");
        if want.count == 0 {
            continue;
        }
        let pairs = [
            ("mean", got.mean, want.mean),
            ("std", got.std, want.std),
            ("min", got.min, want.min),
            ("max", got.max, want.max),
        ];
        for (key, got, want) in pairs {
            assert!(
                close(got, want),
                "scaler.json: {name}.{key} = {got:e}, expected {want:e}"
            );
        }
    }
}

/// Compares the per-epoch objects and the summary of `metrics.jsonl` with the
/// expected counters.
///
/// An epoch the product reports but the oracle has no row in must be all
/// zeros (a product may report empty epochs inside the run's span); the
/// summary's `epochs` must then count the reported epoch objects.
pub fn assert_metrics_match(found: &Metrics, expected: &OracleResult) {
    let mut epochs: Vec<i64> = found
        .per_epoch
        .keys()
        .chain(expected.per_epoch.keys())
        .copied()
        .collect();
    epochs.sort();
    epochs.dedup();
    for epoch in epochs {
        let got = found.per_epoch.get(&epoch).copied().unwrap_or_default();
        let want = expected.per_epoch.get(&epoch).copied().unwrap_or_default();
        assert!(
            got == want,
            "metrics.jsonl: first differing epoch {epoch}\n  found:    {got:?}\n  \
             expected: {want:?}"
        );
    }
    let mut want = expected.counters.clone();
    want.epochs = found.per_epoch.len() as u64;
    assert!(
        found.summary == want,
        "metrics.jsonl summary differs\n  found:    {:?}\n  expected: {want:?}",
        found.summary
    );
}

/// Reads every output of a run from `out_dir` and asserts it equals `expected`:
/// `examples.csv` line for line, the three feature tables, the quarantine's
/// (file, line, reason), every counter, and the scaler within 1e-12.
///
/// # Panics
///
/// On the first mismatch, showing the first differing row, or when a file is
/// missing or malformed.
pub fn assert_matches(out_dir: &Path, expected: &OracleResult) {
    // Examples first: the most informative difference when several exist.
    let examples = read_text(&out_dir.join("examples.csv"));
    assert_same_lines(
        "examples.csv",
        &examples,
        &render_examples_csv(&expected.examples),
    );
    assert!(
        examples.is_empty() || examples.ends_with('\n'),
        "examples.csv: no final newline"
    );

    assert_same_map("features/users.csv", &read_users(out_dir), &expected.users);
    assert_same_map("features/items.csv", &read_items(out_dir), &expected.items);
    assert_same_map("features/pairs.csv", &read_pairs(out_dir), &expected.pairs);

    // The quarantine keeps reading order: file order, then line.
    let quarantine: Vec<(String, u64, String)> = read_quarantine(out_dir)
        .into_iter()
        .map(|(file, line, reason, _raw)| (file, line, reason))
        .collect();
    let as_map = |rows: &[(String, u64, String)]| -> BTreeMap<usize, (String, u64, String)> {
        rows.iter().cloned().enumerate().collect()
    };
    assert_same_map(
        "quarantine.csv (row index)",
        &as_map(&quarantine),
        &as_map(&expected.quarantine),
    );

    assert_metrics_match(&read_metrics(out_dir), expected);
    assert_scaler_matches(&read_scaler(out_dir), expected);
}

/// Writes `expected` to `out_dir` in the product's layout (raw quarantine
/// rows are left empty): the reference the self-tests compare against.
pub fn write_expected(out_dir: &Path, expected: &OracleResult) {
    let write = |name: &str, text: String| {
        let path = out_dir.join(name);
        std::fs::create_dir_all(path.parent().expect("an output file has a parent"))
            .expect("creating the output directory");
        std::fs::write(&path, text).unwrap_or_else(|error| panic!("writing {name}: {error}"));
    };
    write("examples.csv", render_examples_csv(&expected.examples));

    let table = |header: &str, rows: Vec<String>| {
        let mut text = format!("{header}\n");
        rows.iter()
            .for_each(|row| text.push_str(&format!("{row}\n")));
        text
    };
    let join = |values: &[u64]| {
        values
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let users = expected
        .users
        .iter()
        .map(|(user, v)| format!("{user},{}", join(v)))
        .collect();
    let items = expected
        .items
        .iter()
        .map(|(item, v)| format!("{item},{}", join(v)))
        .collect();
    let pairs = expected
        .pairs
        .iter()
        .map(|((u, i), v)| format!("{u},{i},{}", join(v)))
        .collect();
    write("features/users.csv", table(USERS_HEADER, users));
    write("features/items.csv", table(ITEMS_HEADER, items));
    write("features/pairs.csv", table(PAIRS_HEADER, pairs));

    let mut quarantine = csv::Writer::from_writer(Vec::new());
    quarantine
        .write_record(QUARANTINE_HEADER.split(','))
        .expect("writing to memory");
    for (file, line, reason) in &expected.quarantine {
        quarantine
            .write_record([file, &line.to_string(), reason, ""])
            .expect("writing to memory");
    }
    let quarantine = quarantine.into_inner().expect("flushing to memory");
    write(
        "quarantine.csv",
        String::from_utf8(quarantine).expect("csv of UTF-8 is UTF-8"),
    );

    let mut metrics = String::new();
    for (epoch, c) in &expected.per_epoch {
        let object = serde_json::json!({
            "epoch": epoch, "rows": c.rows, "rejected": c.rejected, "duplicates": c.duplicates,
            "bot_excluded": c.bot_excluded, "clean": c.clean, "examples": c.examples,
            "positives": c.positives,
        });
        metrics.push_str(&format!("{object}\n"));
    }
    let c = &expected.counters;
    let summary = serde_json::json!({
        "summary": true, "rows": c.rows, "accepted": c.accepted, "rejected": c.rejected,
        "rejected_by_reason": c.rejected_by_reason, "duplicates": c.duplicates,
        "bot_excluded": c.bot_excluded, "clean": c.clean, "epochs": c.epochs,
        "examples": c.examples, "positives": c.positives,
    });
    metrics.push_str(&format!("{summary}\n"));
    write("metrics.jsonl", metrics);

    let features: serde_json::Map<String, serde_json::Value> = FEATURE_NAMES
        .iter()
        .zip(&expected.scaler)
        .map(|(name, s)| {
            let stats = serde_json::json!({
                "count": s.count, "mean": s.mean, "std": s.std, "min": s.min, "max": s.max,
            });
            (name.to_string(), stats)
        })
        .collect();
    let scaler = serde_json::json!({ "count": expected.examples.len(), "features": features });
    write(
        "scaler.json",
        serde_json::to_string_pretty(&scaler).expect("json of numbers"),
    );
}
