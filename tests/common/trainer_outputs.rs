//! Running `deltarec run` for the trainer's tests, reading back its model and
//! progressive-validation figures, and comparing them with the reference
//! trainer (`reference_trainer.rs`).
//!
//! Weights must match bit for bit, so `model.json` is not read through
//! `serde_json`'s number parsing (which may be one ulp off unless its
//! `float_roundtrip` feature is on); a small scanner keeps each number's text
//! and `str::parse::<f64>`, which is correctly rounded, reads it. The product
//! writes the shortest text that round-trips, so the bits survive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use deltarec::evaluate::EvalSummary;
use deltarec::model::OptimizerConfig;
use deltarec::scaler::{FEATURE_NAMES, NUM_FEATURES};

use super::reference_trainer::{RefOptions, RefResult};

/// Tolerance for log loss, AUC, accuracy and recall in `metrics.jsonl`.
pub const METRIC_TOLERANCE: f64 = 1e-12;

/// The shared real samples beside the repository, or `None` (with a message)
/// when they are absent.
pub fn real_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/real");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: {} is absent", dir.display());
        None
    }
}

/// The command-line flags that give the trainer `options`.
pub fn option_flags(options: &RefOptions) -> Vec<String> {
    let OptimizerConfig {
        kind,
        lr,
        l2,
        l1,
        batch_size,
    } = options.optimizer;
    // `{}` of an f64 is the shortest text that parses back to the same bits.
    [
        ("--optimizer", kind.name().to_string()),
        ("--lr", lr.to_string()),
        ("--l2", l2.to_string()),
        ("--l1", l1.to_string()),
        ("--batch-size", batch_size.to_string()),
        ("--scaler", options.scaler.name().to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

/// How long a run may take before it is taken to hang: far above the few
/// seconds the largest test log needs on a loaded machine.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// Its exit status; `None` when it did not finish in time and was killed.
    pub status: Option<ExitStatus>,
    /// What it printed on stderr.
    pub stderr: String,
}

impl RunOutcome {
    /// Whether it finished with exit status 0.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

/// Runs `deltarec run --quiet --out OUT ARGS...`, killing it if it has not
/// finished after `timeout` (a run that hangs must fail its test, not stall
/// the suite).
pub fn run_deltarec_within(out: &Path, args: &[String], timeout: Duration) -> RunOutcome {
    let log = tempfile::NamedTempFile::new().expect("a temporary file for stderr");
    let stderr = log.reopen().expect("the stderr file reopens");
    let mut child = Command::new(env!("CARGO_BIN_EXE_deltarec"))
        .arg("run")
        .arg("--quiet")
        .arg("--out")
        .arg(out)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("the deltarec binary starts");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for deltarec") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill().expect("killing a hung deltarec");
            child.wait().expect("reaping a killed deltarec");
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    RunOutcome { status, stderr }
}

/// [`run_deltarec_within`] [`RUN_TIMEOUT`].
pub fn run_deltarec(out: &Path, args: &[String]) -> RunOutcome {
    run_deltarec_within(out, args, RUN_TIMEOUT)
}

/// As [`run_deltarec`]; panics with stderr unless the run succeeded.
pub fn run_ok(out: &Path, args: &[String]) {
    let outcome = run_deltarec(out, args);
    assert!(
        outcome.succeeded(),
        "deltarec {args:?} failed ({}): {}",
        describe_status(&outcome),
        outcome.stderr
    );
}

/// The exit status in words, or that the run hung.
pub fn describe_status(outcome: &RunOutcome) -> String {
    match outcome.status {
        Some(status) => status.to_string(),
        None => "no exit before its timeout: killed as hung".to_string(),
    }
}

/// The parts of `model.json` the trainer decides.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductModel {
    /// Weights in [`FEATURE_NAMES`] order.
    pub weights: [f64; NUM_FEATURES],
    /// The bias.
    pub bias: f64,
    /// The last epoch trained.
    pub last_epoch: Option<u64>,
}

impl ProductModel {
    /// Weights then bias, each with its name.
    pub fn named_values(&self) -> Vec<(&'static str, f64)> {
        FEATURE_NAMES
            .iter()
            .copied()
            .zip(self.weights)
            .chain([("bias", self.bias)])
            .collect()
    }

    /// The model the reference trained, in the same shape.
    pub fn of_reference(reference: &RefResult) -> ProductModel {
        let weights = std::array::from_fn(|j| reference.params.weights[j]);
        ProductModel {
            weights,
            bias: reference.params.bias,
            last_epoch: reference.last_epoch,
        }
    }
}

/// A JSON value whose numbers keep their text.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(name, _)| name == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A minimal JSON scanner for the product's own output: enough for
/// `model.json` (no escapes beyond `\"` and `\\` are decoded).
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) {
        self.skip_space();
        assert_eq!(
            self.text.get(self.at),
            Some(&byte),
            "model.json: expected {:?} at byte {}",
            byte as char,
            self.at
        );
        self.at += 1;
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut value = Vec::new();
        while self.text[self.at] != b'"' {
            if self.text[self.at] == b'\\' {
                self.at += 1;
            }
            value.push(self.text[self.at]);
            self.at += 1;
        }
        self.at += 1;
        String::from_utf8(value).expect("model.json is UTF-8")
    }

    fn value(&mut self) -> Json {
        self.skip_space();
        match self.text[self.at] {
            b'{' => {
                self.at += 1;
                let mut fields = Vec::new();
                self.skip_space();
                if self.text[self.at] == b'}' {
                    self.at += 1;
                    return Json::Object(fields);
                }
                loop {
                    let key = self.string();
                    self.expect(b':');
                    fields.push((key, self.value()));
                    self.skip_space();
                    self.at += 1;
                    if self.text[self.at - 1] == b'}' {
                        return Json::Object(fields);
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_space();
                if self.text[self.at] == b']' {
                    self.at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    self.skip_space();
                    self.at += 1;
                    if self.text[self.at - 1] == b']' {
                        return Json::Array(items);
                    }
                }
            }
            b'"' => Json::String(self.string()),
            _ => {
                let start = self.at;
                while self.at < self.text.len()
                    && !matches!(self.text[self.at], b',' | b'}' | b']')
                    && !self.text[self.at].is_ascii_whitespace()
                {
                    self.at += 1;
                }
                let word = std::str::from_utf8(&self.text[start..self.at]).expect("ASCII");
                match word {
                    "null" => Json::Null,
                    "true" => Json::Bool(true),
                    "false" => Json::Bool(false),
                    _ => Json::Number(word.to_string()),
                }
            }
        }
    }
}

/// Reads a number's text exactly; panics naming `what` when it is not one
/// (a non-finite weight is written as `null`).
fn exact_number(value: Option<&Json>, what: &str) -> f64 {
    match value {
        Some(Json::Number(text)) => text
            .parse()
            .unwrap_or_else(|_| panic!("model.json: {what} = {text:?} is not a number")),
        other => panic!("model.json: {what} is not a finite number: {other:?}"),
    }
}

/// Reads the weights, bias and last epoch of `OUT/model.json`, exactly.
pub fn read_model(out: &Path) -> ProductModel {
    let path = out.join("model.json");
    let text =
        std::fs::read(&path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let json = Scanner { text: &text, at: 0 }.value();
    let weights = json.get("weights");
    ProductModel {
        weights: std::array::from_fn(|j| {
            let name = FEATURE_NAMES[j];
            exact_number(
                weights.and_then(|w| w.get(name)),
                &format!("weights.{name}"),
            )
        }),
        bias: exact_number(json.get("bias"), "bias"),
        last_epoch: match json.get("last_epoch") {
            Some(Json::Number(text)) => Some(text.parse().expect("an integer epoch")),
            _ => None,
        },
    }
}

/// The progressive-validation figures of `metrics.jsonl`: per epoch (every
/// epoch object, including those without examples) and the summary's.
#[derive(Clone, Debug)]
pub struct ProductEval {
    /// By epoch.
    pub per_epoch: BTreeMap<u64, EvalSummary>,
    /// Over the whole run.
    pub overall: EvalSummary,
}

fn eval_of(object: &serde_json::Value, line: &str) -> EvalSummary {
    let integer = |key: &str| {
        object[key]
            .as_u64()
            .unwrap_or_else(|| panic!("metrics.jsonl: no integer {key:?} in {line}"))
    };
    let number = |key: &str| {
        object[key]
            .as_f64()
            .unwrap_or_else(|| panic!("metrics.jsonl: no number {key:?} in {line}"))
    };
    EvalSummary {
        examples: integer("examples"),
        positives: integer("positives"),
        log_loss: number("log_loss"),
        auc: number("auc"),
        accuracy: number("accuracy"),
        recall: number("recall"),
    }
}

/// Reads the figures of `OUT/metrics.jsonl`.
pub fn read_eval(out: &Path) -> ProductEval {
    let path = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let mut per_epoch = BTreeMap::new();
    let mut overall = None;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("metrics.jsonl: {error} in {line}"));
        if object["summary"].as_bool() == Some(true) {
            overall = Some(eval_of(&object, line));
        } else {
            let epoch = object["epoch"]
                .as_u64()
                .unwrap_or_else(|| panic!("metrics.jsonl: no epoch in {line}"));
            per_epoch.insert(epoch, eval_of(&object, line));
        }
    }
    ProductEval {
        per_epoch,
        overall: overall.expect("metrics.jsonl has a summary"),
    }
}

/// Panics, naming each differing value with both bit patterns, unless the
/// two models are bit-identical.
pub fn assert_same_bits(what: &str, found: &ProductModel, expected: &ProductModel) {
    let differing: Vec<String> = found
        .named_values()
        .into_iter()
        .zip(expected.named_values())
        .filter(|((_, got), (_, want))| got.to_bits() != want.to_bits())
        .map(|((name, got), (_, want))| {
            let ulps = (got.to_bits() as i64).wrapping_sub(want.to_bits() as i64);
            format!("{name}: {got:e} vs {want:e} ({ulps} ulps)")
        })
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: model not bit-identical:\n  {}",
        differing.join("\n  ")
    );
    assert_eq!(
        found.last_epoch, expected.last_epoch,
        "{what}: last epoch trained"
    );
}

/// Panics unless two evaluation summaries agree: counts exactly, figures
/// within [`METRIC_TOLERANCE`].
pub fn assert_same_eval(what: &str, found: &EvalSummary, expected: &EvalSummary) {
    let counts_match = found.examples == expected.examples && found.positives == expected.positives;
    let close = |a: f64, b: f64| (a - b).abs() <= METRIC_TOLERANCE;
    let figures_match = close(found.log_loss, expected.log_loss)
        && close(found.auc, expected.auc)
        && close(found.accuracy, expected.accuracy)
        && close(found.recall, expected.recall);
    assert!(
        counts_match && figures_match,
        "{what}: figures differ\n  found:    {found:?}\n  expected: {expected:?}"
    );
}

/// Compares every epoch object and the summary of a run with the reference.
///
/// An epoch the run reports without examples (rows but no example) must show
/// the figures of no examples: counts 0, log loss 0, AUC 0.5.
pub fn assert_eval_matches(what: &str, found: &ProductEval, reference: &RefResult) {
    let empty = EvalSummary {
        auc: 0.5,
        ..EvalSummary::default()
    };
    for (epoch, expected) in &reference.per_epoch {
        let got = found
            .per_epoch
            .get(epoch)
            .unwrap_or_else(|| panic!("{what}: metrics.jsonl has no epoch {epoch}"));
        assert_same_eval(&format!("{what}: epoch {epoch}"), got, expected);
    }
    for (epoch, got) in &found.per_epoch {
        if !reference.per_epoch.contains_key(epoch) {
            assert_same_eval(&format!("{what}: epoch {epoch} (no examples)"), got, &empty);
        }
    }
    assert_same_eval(
        &format!("{what}: summary"),
        &found.overall,
        &reference.overall,
    );
}

/// Panics unless every weight and the bias of `OUT/model.json` are finite
/// (a non-finite value would be written as `null`).
pub fn assert_finite_model(out: &Path) -> ProductModel {
    let model = read_model(out);
    for (name, value) in model.named_values() {
        assert!(value.is_finite(), "model.json: {name} = {value}");
    }
    model
}
