//! The files a run writes, and the summary it prints.
//!
//! Layout of the output directory (reference task, section 9):
//! `metrics.jsonl`, `quarantine.csv`, `scaler.json`, `model.json`, and on
//! request `examples.csv` and `features/{users,items,pairs}.csv`. Every file
//! is written atomically; `metrics.jsonl`, whose last line is the summary, is
//! written last, so its presence marks a complete run.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::cli::RunConfig;
use crate::dataflow::Results;
use crate::evaluate::{EvalSummary, evaluate};
use crate::event::Reason;
use crate::features::{Aggregate, Example};
use crate::output::{write_atomic, write_json};
use crate::scaler::{FEATURE_NAMES, FeatureStats, Histogram, feature_value};

/// Facts about a run that are not results: what was read, how.
#[derive(Clone, Debug)]
pub struct RunFacts {
    /// The spec used.
    pub spec: String,
    /// The input files, as named.
    pub files: Vec<String>,
    /// Epoch width.
    pub bucket_ms: i64,
    /// Workers in all processes.
    pub workers: usize,
    /// Wall time of the run so far.
    pub seconds: f64,
}

/// The run's totals, as the last line of `metrics.jsonl` and the printed
/// summary give them.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Always true: tells the summary from the per-epoch lines.
    pub summary: bool,
    /// The spec used.
    pub spec: String,
    /// Epoch width in milliseconds.
    pub bucket_ms: i64,
    /// Timely workers in all processes.
    pub workers: usize,
    /// Data rows read.
    pub rows: u64,
    /// Rows that passed cleaning.
    pub accepted: u64,
    /// Rows quarantined.
    pub rejected: u64,
    /// Rejected rows per reason.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
    /// Duplicate events dropped.
    pub duplicates: u64,
    /// Events of bots excluded.
    pub bot_excluded: u64,
    /// Clean events.
    pub clean: u64,
    /// Epochs with data.
    pub epochs: u64,
    /// Progressive-validation figures over every example of the run.
    #[serde(flatten)]
    pub eval: EvalSummary,
    /// Wall time of the run.
    pub wall_seconds: f64,
    /// Rows read per second of wall time.
    pub events_per_second: f64,
    /// Where the outputs are.
    pub out: String,
}

/// Makes sure `dir` is a directory this process can write in, before any
/// work is done; `flag` names it in the error.
///
/// # Errors
/// When `dir` is a file, cannot be created, or is not writable.
pub fn prepare_dir(dir: &Path, flag: &str) -> Result<(), String> {
    let fail = |what: &str| format!("{flag} {}: {what}", dir.display());
    if dir.exists() && !dir.is_dir() {
        return Err(fail("exists and is not a directory; name a directory"));
    }
    std::fs::create_dir_all(dir).map_err(|err| fail(&format!("cannot create it: {err}")))?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|err| fail(&format!("cannot write in it: {err}")))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Writes every output file of `results` into `out` except `metrics.jsonl`,
/// which marks a complete run: it is removed first, and written by
/// [`write_metrics`] once everything else is in place.
///
/// # Errors
/// When a file cannot be written.
pub fn write_results(
    out: &Path,
    config: &RunConfig,
    results: &Results,
    facts: &RunFacts,
) -> io::Result<Summary> {
    remove_if_present(&out.join("metrics.jsonl"))?;
    remove_temporaries(out);
    let report = &results.report;

    write_quarantine(
        &out.join("quarantine.csv"),
        &results.quarantine,
        &facts.files,
    )?;
    let stats = report.model.histogram.stats();
    write_json(
        &out.join("scaler.json"),
        &scaler_json(&report.model.histogram, &stats),
    )?;
    write_json(
        &out.join("model.json"),
        &model_json(results, &stats, config),
    )?;
    if config.emit_examples {
        let mut examples = report.examples.clone();
        examples.sort_by_key(|example| (example.epoch, example.user, example.item));
        write_examples(&out.join("examples.csv"), &examples)?;
    }
    if config.emit_features {
        write_features(&out.join("features"), &results.aggregates)?;
    }

    // Files a previous run asked for and this one did not must not pass for this run's.
    if !config.emit_examples {
        remove_if_present(&out.join("examples.csv"))?;
    }
    if !config.emit_features && out.join("features").is_dir() {
        std::fs::remove_dir_all(out.join("features")).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot remove {}/features: {err}", out.display()),
            )
        })?;
    }
    Ok(summarize(results, facts, out))
}

/// Writes `metrics.jsonl`: a line per epoch, then the summary. Written last.
///
/// # Errors
/// When the file cannot be written.
pub fn write_metrics(
    out: &Path,
    results: &Results,
    summary: &Summary,
    facts: &RunFacts,
) -> io::Result<()> {
    let report = &results.report;
    write_atomic(&out.join("metrics.jsonl"), |writer| {
        for epoch in &report.epochs {
            let mut line = serde_json::to_value(epoch)?;
            let events_per_second = epoch.rows as f64 / epoch.wall_seconds.max(1e-9);
            line["events_per_second"] = json!(events_per_second);
            line["epoch_start_ms"] = json!(epoch.epoch as i64 * facts.bucket_ms);
            serde_json::to_writer(&mut *writer, &line)?;
            writer.write_all(b"\n")?;
        }
        serde_json::to_writer(&mut *writer, summary)?;
        writer.write_all(b"\n")
    })
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            err.kind(),
            format!(
                "cannot replace {}: {err}; remove it and rerun",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Removes temporary files that a killed run left in `dir`.
fn remove_temporaries(dir: &Path) {
    for directory in [dir.to_path_buf(), dir.join("features")] {
        let Ok(entries) = std::fs::read_dir(&directory) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn summarize(results: &Results, facts: &RunFacts, out: &Path) -> Summary {
    let report = &results.report;
    let mut rejected_by_reason = BTreeMap::new();
    for rejected in &results.quarantine {
        *rejected_by_reason
            .entry(rejected.reason.name())
            .or_insert(0) += 1;
    }
    let sum = |field: fn(&crate::trainer::EpochMetrics) -> u64| -> u64 {
        report.epochs.iter().map(field).sum()
    };
    let accepted = sum(|epoch| epoch.rows - epoch.rejected);
    let rejected = results.quarantine.len() as u64;
    let mut scores = report.scores.clone();
    let rows = accepted + rejected;
    Summary {
        summary: true,
        spec: facts.spec.clone(),
        bucket_ms: facts.bucket_ms,
        workers: facts.workers,
        rows,
        accepted,
        rejected,
        rejected_by_reason,
        duplicates: sum(|epoch| epoch.duplicates),
        bot_excluded: sum(|epoch| epoch.bot_excluded),
        clean: sum(|epoch| epoch.clean),
        epochs: report.epochs.len() as u64,
        eval: evaluate(&mut scores),
        wall_seconds: facts.seconds,
        events_per_second: rows as f64 / facts.seconds.max(1e-9),
        out: out.display().to_string(),
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} (spec {}, {} worker{})",
            self.out,
            self.spec,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        )?;
        writeln!(
            f,
            "rows {}  accepted {}  rejected {}  duplicates {}  bot-excluded {}  clean {}",
            self.rows, self.accepted, self.rejected, self.duplicates, self.bot_excluded, self.clean
        )?;
        if !self.rejected_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .rejected_by_reason
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            writeln!(f, "rejected by reason: {}", reasons.join(", "))?;
        }
        writeln!(
            f,
            "epochs {}  examples {}  positives {}  log loss {:.4}  AUC {:.4}  accuracy {:.4}  recall {:.4}",
            self.epochs,
            self.eval.examples,
            self.eval.positives,
            self.eval.log_loss,
            self.eval.auc,
            self.eval.accuracy,
            self.eval.recall
        )?;
        write!(
            f,
            "{:.2}s wall, {:.0} events/s",
            self.wall_seconds, self.events_per_second
        )
    }
}

fn write_quarantine(
    path: &Path,
    rows: &[crate::dataflow::Rejected],
    files: &[String],
) -> io::Result<()> {
    write_atomic(path, |writer| {
        let mut csv = csv::Writer::from_writer(writer);
        csv.write_record(["file", "line", "reason", "raw"])?;
        for row in rows {
            let line = row.line.to_string();
            csv.write_record([
                files[row.file as usize].as_str(),
                &line,
                row.reason.name(),
                &row.raw,
            ])?;
        }
        csv.flush()
    })
}

fn scaler_json(histogram: &Histogram, stats: &[FeatureStats; 10]) -> serde_json::Value {
    let features: serde_json::Map<String, serde_json::Value> = FEATURE_NAMES
        .iter()
        .zip(stats)
        .map(|(name, stats)| (name.to_string(), json!(stats)))
        .collect();
    json!({ "count": histogram.count(), "features": features })
}

fn model_json(
    results: &Results,
    stats: &[FeatureStats; 10],
    config: &RunConfig,
) -> serde_json::Value {
    let model = &results.report.model;
    let weights: serde_json::Map<String, serde_json::Value> = FEATURE_NAMES
        .iter()
        .zip(model.params.weights.iter())
        .map(|(name, weight)| (name.to_string(), json!(weight)))
        .collect();
    json!({
        "feature_names": FEATURE_NAMES,
        "weights": weights,
        "bias": model.params.bias,
        "scaler": { "kind": config.scaler.name(), "count": model.histogram.count(),
                    "features": FEATURE_NAMES.iter().zip(stats).map(|(n, s)| (n.to_string(), json!(s))).collect::<serde_json::Map<_, _>>() },
        "options": {
            "optimizer": config.optimizer.kind.name(),
            "lr": config.optimizer.lr,
            "l2": config.optimizer.l2,
            "l1": config.optimizer.l1,
            "batch_size": config.optimizer.batch_size,
            "bucket_ms": config.bucket_ms,
            "bot_threshold": config.bot_threshold,
            "lateness": config.lateness,
        },
        "last_epoch": model.last_epoch,
    })
}

fn write_examples(path: &Path, examples: &[Example]) -> io::Result<()> {
    write_atomic(path, |writer| {
        write!(writer, "epoch,user,item,label")?;
        for name in FEATURE_NAMES {
            write!(writer, ",{name}")?;
        }
        writeln!(writer)?;
        for example in examples {
            write!(
                writer,
                "{},{},{},{}",
                example.epoch,
                example.user,
                example.item,
                u8::from(example.label)
            )?;
            for a in example.raw {
                write!(writer, ",{}", feature_value(a))?;
            }
            writeln!(writer)?;
        }
        Ok(())
    })
}

fn write_features(dir: &Path, aggregates: &[Aggregate]) -> io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|err| {
        io::Error::new(
            err.kind(),
            format!(
                "cannot create the directory {}: {err}; remove what is there",
                dir.display()
            ),
        )
    })?;
    let rows = |pick: fn(&Aggregate) -> Option<String>| {
        aggregates.iter().filter_map(pick).collect::<Vec<_>>()
    };
    let files = [
        (
            "users.csv",
            "user,u_views,u_carts,u_purchases,u_items",
            rows(|a| match a {
                Aggregate::User(user, [v, c, p, n]) => Some(format!("{user},{v},{c},{p},{n}")),
                _ => None,
            }),
        ),
        (
            "items.csv",
            "item,i_views,i_carts,i_purchases,i_users",
            rows(|a| match a {
                Aggregate::Item(item, [v, c, p, n]) => Some(format!("{item},{v},{c},{p},{n}")),
                _ => None,
            }),
        ),
        (
            "pairs.csv",
            "user,item,p_views,p_carts",
            rows(|a| match a {
                Aggregate::Pair(user, item, [v, c, ..]) => Some(format!("{user},{item},{v},{c}")),
                _ => None,
            }),
        ),
    ];
    for (name, header, lines) in files {
        write_atomic(&dir.join(name), |writer| {
            writeln!(writer, "{header}")?;
            for line in lines {
                writeln!(writer, "{line}")?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Rejection reasons, for help texts.
pub fn reason_names() -> Vec<&'static str> {
    Reason::ALL.iter().map(|reason| reason.name()).collect()
}
