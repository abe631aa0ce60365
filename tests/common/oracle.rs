//! An independent, from-scratch batch computation of the reference task
//! (sections 1-6 and 9 of `REFERENCE-TASK.md`): the answer the dataflow must
//! reproduce exactly.
//!
//! Nothing here comes from the crate: the three input formats are hard-coded,
//! rows are split, parsed and cleaned by hand, and every later stage is a plain
//! read, sort, group and loop. The oracle is deliberately slow and obvious; its
//! own tests (`tests/oracle_selftest.rs`) check it against hand-computed logs.
//!
//! Rules it applies, in the order a row meets them:
//!
//! 1. A UTF-8 BOM at the start of a file is dropped; lines end at `\n`, one
//!    trailing `\r` is dropped; a missing final newline is fine. Line numbers
//!    are 1-based physical lines; the header, where the format has one, is
//!    line 1. Completely empty lines are not data rows.
//! 2. Fields are split on `,` with RFC 4180 quotes (a quote only opens a quoted
//!    field at the start of the field; `""` inside is one quote) and trimmed of
//!    ASCII whitespace.
//! 3. The first failing check names the rejection: `field_count`,
//!    `missing_ts`, `bad_ts`, `ts_out_of_range`, `missing_user`, `bad_user`,
//!    `missing_item`, `bad_item`, `missing_kind`, `unknown_kind`, `bad_price`.
//! 4. Accepted events with equal `(ts, user, item, kind)` count once.
//! 5. A user with more than `bot_threshold` de-duplicated events in one epoch
//!    loses all of that epoch's events (`0` turns the rule off).
//! 6. Aggregates, lagged examples and the scaler are computed over what is
//!    left, the clean events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// 2000-01-01T00:00:00Z in milliseconds: the earliest accepted event time.
pub const MIN_TS_MS: i64 = 946_684_800_000;

/// 2100-01-01T00:00:00Z in milliseconds: the first rejected event time.
pub const MAX_TS_MS: i64 = 4_102_444_800_000;

/// One UTC day in milliseconds, the default epoch width.
pub const DAY_MS: i64 = 86_400_000;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The default bot threshold of the reference task.
pub const DEFAULT_BOT_THRESHOLD: u64 = 1000;

/// The ten feature names, in the order of the reference task's table.
pub const FEATURE_NAMES: [&str; 10] = [
    "u_views",
    "u_carts",
    "u_purchases",
    "u_items",
    "i_views",
    "i_carts",
    "i_purchases",
    "i_users",
    "p_views",
    "p_carts",
];

/// The header line of `examples.csv`.
pub const EXAMPLES_HEADER: &str = "epoch,user,item,label,u_views,u_carts,u_purchases,u_items,\
                                   i_views,i_carts,i_purchases,i_users,p_views,p_carts";

/// Every rejection reason the oracle can give, in the order rules are tried.
pub const REASONS: [&str; 11] = [
    "field_count",
    "missing_ts",
    "bad_ts",
    "ts_out_of_range",
    "missing_user",
    "bad_user",
    "missing_item",
    "bad_item",
    "missing_kind",
    "unknown_kind",
    "bad_price",
];

/// One of the three real input formats, hard-coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// RetailRocket `events.csv`: `timestamp,visitorid,event,itemid,transactionid`, ms.
    RetailRocket,
    /// REES46: `event_time,event_type,product_id,category_id,category_code,brand,price,
    /// user_id,user_session`, times like `2019-10-01 00:00:04 UTC`.
    Rees46,
    /// Taobao `UserBehavior.csv`, no header:
    /// `user_id,item_id,category_id,behavior_type,timestamp`, seconds.
    Taobao,
}

/// What a shopper did, in canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Looked at an item.
    View,
    /// Put an item in the cart.
    Cart,
    /// Took an item out of the cart.
    RemoveFromCart,
    /// Bought an item.
    Purchase,
    /// Marked an item as a favourite.
    Favorite,
}

/// How a format writes its time column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimeUnit {
    Millis,
    Seconds,
    Rees46Text,
}

/// Where a format keeps each canonical field.
struct Layout {
    columns: usize,
    ts: usize,
    user: usize,
    item: usize,
    kind: usize,
    price: Option<usize>,
    unit: TimeUnit,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::RetailRocket, Format::Rees46, Format::Taobao];

    /// A short lowercase name: `retailrocket`, `rees46` or `taobao`.
    pub fn name(self) -> &'static str {
        match self {
            Format::RetailRocket => "retailrocket",
            Format::Rees46 => "rees46",
            Format::Taobao => "taobao",
        }
    }

    /// The header line, for formats that have one.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Format::RetailRocket => Some("timestamp,visitorid,event,itemid,transactionid"),
            Format::Rees46 => Some(
                "event_time,event_type,product_id,category_id,category_code,brand,price,\
                 user_id,user_session",
            ),
            Format::Taobao => None,
        }
    }

    /// The number of fields of a well-formed row.
    pub fn columns(self) -> usize {
        self.layout().columns
    }

    /// The format's spelling of a canonical kind, or `None` when it has none.
    pub fn kind_name(self, kind: Kind) -> Option<&'static str> {
        match (self, kind) {
            (Format::RetailRocket, Kind::View) => Some("view"),
            (Format::RetailRocket, Kind::Cart) => Some("addtocart"),
            (Format::RetailRocket, Kind::Purchase) => Some("transaction"),
            (Format::Rees46, Kind::View) => Some("view"),
            (Format::Rees46, Kind::Cart) => Some("cart"),
            (Format::Rees46, Kind::RemoveFromCart) => Some("remove_from_cart"),
            (Format::Rees46, Kind::Purchase) => Some("purchase"),
            (Format::Taobao, Kind::View) => Some("pv"),
            (Format::Taobao, Kind::Cart) => Some("cart"),
            (Format::Taobao, Kind::Purchase) => Some("buy"),
            (Format::Taobao, Kind::Favorite) => Some("fav"),
            _ => None,
        }
    }

    /// The canonical kinds this format can express.
    pub fn kinds(self) -> Vec<Kind> {
        [
            Kind::View,
            Kind::Cart,
            Kind::RemoveFromCart,
            Kind::Purchase,
            Kind::Favorite,
        ]
        .into_iter()
        .filter(|&kind| self.kind_name(kind).is_some())
        .collect()
    }

    /// Maps a (trimmed) kind field to a canonical kind; exact and case-sensitive.
    pub fn kind_of(self, text: &str) -> Option<Kind> {
        self.kinds()
            .into_iter()
            .find(|&kind| self.kind_name(kind) == Some(text))
    }

    fn layout(self) -> Layout {
        match self {
            Format::RetailRocket => Layout {
                columns: 5,
                ts: 0,
                user: 1,
                item: 3,
                kind: 2,
                price: None,
                unit: TimeUnit::Millis,
            },
            Format::Rees46 => Layout {
                columns: 9,
                ts: 0,
                user: 7,
                item: 2,
                kind: 1,
                price: Some(6),
                unit: TimeUnit::Rees46Text,
            },
            Format::Taobao => Layout {
                columns: 5,
                ts: 4,
                user: 0,
                item: 1,
                kind: 3,
                price: None,
                unit: TimeUnit::Seconds,
            },
        }
    }
}

/// One accepted event, reduced to the fields that decide duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OracleEvent {
    /// Milliseconds since 1970-01-01 UTC, in `[MIN_TS_MS, MAX_TS_MS)`.
    pub ts: i64,
    /// The shopper.
    pub user: u64,
    /// The item.
    pub item: u64,
    /// What happened.
    pub kind: Kind,
}

/// Why a row was rejected, and its time when the time itself was fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowRejection {
    /// One of [`REASONS`].
    pub reason: &'static str,
    /// The row's time when it parsed and was in range (the row then counts in
    /// that epoch's `rows` and `rejected`).
    pub ts: Option<i64>,
}

/// What the oracle is asked to compute.
#[derive(Clone, Copy, Debug)]
pub struct OracleConfig {
    /// The input format of every file.
    pub format: Format,
    /// Epoch width in milliseconds; must be positive.
    pub bucket_ms: i64,
    /// Bot threshold (reference task default 1000); `0` turns the rule off.
    pub bot_threshold: u64,
}

impl OracleConfig {
    /// A config with the default bot threshold.
    pub fn new(format: Format, bucket_ms: i64) -> OracleConfig {
        OracleConfig {
            format,
            bucket_ms,
            bot_threshold: DEFAULT_BOT_THRESHOLD,
        }
    }
}

/// Whole-run counters, as the summary line of `metrics.jsonl` reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data rows read (not the header, not empty lines).
    pub rows: u64,
    /// Rows that passed every cleaning rule.
    pub accepted: u64,
    /// Rows sent to the quarantine; `accepted + rejected == rows`.
    pub rejected: u64,
    /// Rejected rows per reason name; reasons with no row are absent.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Accepted rows dropped as duplicates of an earlier `(ts, user, item, kind)`.
    pub duplicates: u64,
    /// De-duplicated events excluded because their user was a bot in their epoch.
    pub bot_excluded: u64,
    /// Clean events; `accepted == duplicates + bot_excluded + clean`.
    pub clean: u64,
    /// Epochs with at least one row (the keys of `OracleResult::per_epoch`).
    pub epochs: u64,
    /// Training examples.
    pub examples: u64,
    /// Examples with label 1.
    pub positives: u64,
}

/// Per-epoch counters, as one line of `metrics.jsonl` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochCounters {
    /// Rows whose time parsed and was in range and falls in this epoch.
    pub rows: u64,
    /// Of those, rows rejected for a later rule.
    pub rejected: u64,
    /// Duplicates dropped in this epoch.
    pub duplicates: u64,
    /// De-duplicated events excluded as a bot's.
    pub bot_excluded: u64,
    /// Clean events.
    pub clean: u64,
    /// Training examples of this epoch.
    pub examples: u64,
    /// Of those, examples with label 1.
    pub positives: u64,
}

/// One training example: a (user, item) pair active in an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Example {
    /// The epoch whose events make the pair active and give the label.
    pub epoch: i64,
    /// The shopper.
    pub user: u64,
    /// The item.
    pub item: u64,
    /// Whether the pair has a clean purchase in `epoch`.
    pub label: bool,
    /// The ten raw aggregates `a`, as of the end of `epoch - 1`, in
    /// [`FEATURE_NAMES`] order.
    pub raw: [u64; 10],
}

impl Example {
    /// The features as the product computes them: `x = (a as f64).ln_1p()`.
    pub fn features(&self) -> [f64; 10] {
        self.raw.map(feature_value)
    }

    /// The row exactly as the product writes it to `examples.csv` (no newline):
    /// integers, then each feature in Rust's `{}` Display of the f64.
    pub fn render(&self) -> String {
        let mut row = format!(
            "{},{},{},{}",
            self.epoch,
            self.user,
            self.item,
            u8::from(self.label)
        );
        for value in self.features() {
            row.push_str(&format!(",{value}"));
        }
        row
    }
}

/// `ln(1 + a)` as the product computes it.
pub fn feature_value(aggregate: u64) -> f64 {
    (aggregate as f64).ln_1p()
}

/// The whole expected `examples.csv`: header, then one line per example, each
/// ending in `\n`.
pub fn render_examples_csv(examples: &[Example]) -> String {
    let mut text = format!("{EXAMPLES_HEADER}\n");
    for example in examples {
        text.push_str(&example.render());
        text.push('\n');
    }
    text
}

/// Scaler statistics of one feature over a set of examples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// Number of values.
    pub count: u64,
    /// Arithmetic mean (0 when `count == 0`).
    pub mean: f64,
    /// Population standard deviation (0 when `count == 0`).
    pub std: f64,
    /// Smallest value (0 when `count == 0`).
    pub min: f64,
    /// Largest value (0 when `count == 0`).
    pub max: f64,
}

impl Stats {
    /// Two passes over `values`: the mean, then the mean squared deviation,
    /// each summed with Neumaier compensation so that the oracle's own rounding
    /// error stays far below the comparison tolerance.
    pub fn two_pass(values: &[f64]) -> Stats {
        if values.is_empty() {
            return Stats::default();
        }
        let count = values.len() as f64;
        let mean = neumaier_sum(values.iter().copied()) / count;
        let variance = neumaier_sum(values.iter().map(|x| (x - mean) * (x - mean))) / count;
        Stats {
            count: values.len() as u64,
            mean,
            std: variance.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Compensated summation (Neumaier's variant of Kahan's algorithm).
fn neumaier_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for value in values {
        let total = sum + value;
        if sum.abs() >= value.abs() {
            compensation += (sum - total) + value;
        } else {
            compensation += (value - total) + sum;
        }
        sum = total;
    }
    sum + compensation
}

/// Everything the oracle computes for one run.
#[derive(Clone, Debug, Default)]
pub struct OracleResult {
    /// Rejected rows: (file as given, 1-based line, reason), in file order then
    /// line order.
    pub quarantine: Vec<(String, u64, String)>,
    /// Whole-run counters.
    pub counters: Counters,
    /// Per-epoch counters, for every epoch with at least one row.
    pub per_epoch: BTreeMap<i64, EpochCounters>,
    /// Every training example, sorted by epoch, user, item.
    pub examples: Vec<Example>,
    /// User aggregates at the end of the run: u_views, u_carts, u_purchases, u_items.
    pub users: BTreeMap<u64, [u64; 4]>,
    /// Item aggregates at the end of the run: i_views, i_carts, i_purchases, i_users.
    pub items: BTreeMap<u64, [u64; 4]>,
    /// Pair aggregates at the end of the run: p_views, p_carts.
    pub pairs: BTreeMap<(u64, u64), [u64; 2]>,
    /// Per-feature statistics of `x` over all examples, in [`FEATURE_NAMES`] order.
    pub scaler: [Stats; 10],
    /// The clean events, sorted, for brute-force cross-checks.
    pub clean_events: Vec<OracleEvent>,
}

/// Parses an id: ASCII digits that fit u64, optionally followed by `.` and one
/// or more `0`s (`257597.0` is 257597). Signs, exponents, other fractions, a
/// bare `.` and empty text are refused. Never goes through f64.
pub fn parse_id(text: &str) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    if whole.is_empty() || !whole.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    if fraction.is_some_and(|zeros| zeros.is_empty() || !zeros.bytes().all(|byte| byte == b'0')) {
        return None;
    }
    whole.bytes().try_fold(0u64, |value, digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// Days from 1970-01-01 to the proleptic Gregorian date `year-month-day`
/// (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses a REES46 time, exactly `YYYY-MM-DD HH:MM:SS UTC`, into milliseconds.
///
/// Dates must exist (no 2019-02-29, no month 13) and times are 00:00:00 to
/// 23:59:59 (no leap second); anything else, including other separators,
/// fractional seconds or a missing ` UTC`, is refused.
pub fn parse_rees46_time(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 23 || !text.is_ascii() || &text[19..] != " UTC" {
        return None;
    }
    let separators = [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = &bytes[from..to];
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * 1000)
}

/// Parses a time field by the format's rule; `Err(reason)` is `bad_ts` or
/// `ts_out_of_range`.
///
/// Epoch seconds and milliseconds follow the id rule; a number that parses but
/// does not fit i64 milliseconds is out of range, not bad.
fn parse_ts(unit: TimeUnit, text: &str) -> Result<i64, &'static str> {
    let millis = match unit {
        TimeUnit::Rees46Text => parse_rees46_time(text).ok_or("bad_ts")?,
        TimeUnit::Millis => {
            let value = parse_id(text).ok_or("bad_ts")?;
            i64::try_from(value).map_err(|_| "ts_out_of_range")?
        }
        TimeUnit::Seconds => {
            let value = parse_id(text).ok_or("bad_ts")?;
            let seconds = i64::try_from(value).map_err(|_| "ts_out_of_range")?;
            seconds.checked_mul(1000).ok_or("ts_out_of_range")?
        }
    };
    if (MIN_TS_MS..MAX_TS_MS).contains(&millis) {
        Ok(millis)
    } else {
        Err("ts_out_of_range")
    }
}

/// Splits a line into fields on `delimiter`, honouring RFC 4180 quotes, and
/// trims ASCII whitespace from each field.
///
/// A `"` opens a quoted field only as the field's first character; inside it,
/// `""` is a literal quote and a lone `"` closes the quotes (later characters
/// are kept as they are). A line never holds a newline.
pub fn split_fields(line: &str, delimiter: char) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let (mut at_field_start, mut in_quotes) = (true, false);
    while let Some(c) = chars.next() {
        if in_quotes {
            if c != '"' {
                field.push(c);
            } else if chars.peek() == Some(&'"') {
                chars.next();
                field.push('"');
            } else {
                in_quotes = false;
            }
        } else if c == delimiter {
            fields.push(trim_ascii(&field).to_string());
            field.clear();
            at_field_start = true;
            continue;
        } else if c == '"' && at_field_start {
            in_quotes = true;
        } else {
            field.push(c);
        }
        at_field_start = false;
    }
    fields.push(trim_ascii(&field).to_string());
    fields
}

fn trim_ascii(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_ascii_whitespace())
}

/// Cleans one data row (without its line terminator) of `format`.
pub fn parse_row(format: Format, line: &str) -> Result<OracleEvent, RowRejection> {
    let layout = format.layout();
    let fields = split_fields(line, ',');
    let reject = |reason: &'static str, ts: Option<i64>| RowRejection { reason, ts };
    if fields.len() != layout.columns {
        return Err(reject("field_count", None));
    }

    // The time decides the epoch, so a row that fails later still counts in it.
    let ts_text = &fields[layout.ts];
    if ts_text.is_empty() {
        return Err(reject("missing_ts", None));
    }
    let ts = parse_ts(layout.unit, ts_text).map_err(|reason| reject(reason, None))?;
    let fail = |reason: &'static str| reject(reason, Some(ts));

    let user = parse_required_id(&fields[layout.user], "missing_user", "bad_user").map_err(fail)?;
    let item = parse_required_id(&fields[layout.item], "missing_item", "bad_item").map_err(fail)?;
    let kind_text = &fields[layout.kind];
    if kind_text.is_empty() {
        return Err(fail("missing_kind"));
    }
    let kind = format.kind_of(kind_text).ok_or(fail("unknown_kind"))?;
    if let Some(column) = layout.price {
        let price = &fields[column];
        let valid = price.is_empty()
            || price
                .parse::<f64>()
                .is_ok_and(|value| value.is_finite() && value >= 0.0);
        if !valid {
            return Err(fail("bad_price"));
        }
    }
    Ok(OracleEvent {
        ts,
        user,
        item,
        kind,
    })
}

fn parse_required_id(
    text: &str,
    missing: &'static str,
    bad: &'static str,
) -> Result<u64, &'static str> {
    if text.is_empty() {
        return Err(missing);
    }
    parse_id(text).ok_or(bad)
}

/// The time of a row when it parses and is in range, whatever else is wrong
/// with the row (`None` for a wrong field count, as cleaning never reads it).
pub fn row_ts(format: Format, line: &str) -> Option<i64> {
    match parse_row(format, line) {
        Ok(event) => Some(event.ts),
        Err(rejection) => rejection.ts,
    }
}

/// The physical lines of a file's text: BOM dropped, one trailing `\r` per line
/// dropped, numbered from 1. A final `\n` does not start another line.
pub fn physical_lines(text: &str) -> Vec<(u64, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return Vec::new();
    }
    body.split('\n')
        .enumerate()
        .map(|(index, line)| (index as u64 + 1, line.strip_suffix('\r').unwrap_or(line)))
        .collect()
}

/// Epoch of a time: `floor(ts / bucket_ms)`.
pub fn epoch_of(ts: i64, bucket_ms: i64) -> i64 {
    ts.div_euclid(bucket_ms)
}

/// Runs the whole reference task over `files`, read in the given order.
///
/// # Panics
///
/// When a file cannot be read, when a header format's first line is not the
/// canonical header, or when `bucket_ms` is not positive.
pub fn run_oracle(files: &[PathBuf], cfg: &OracleConfig) -> OracleResult {
    assert!(
        cfg.bucket_ms > 0,
        "bucket_ms must be positive, got {}",
        cfg.bucket_ms
    );
    let mut result = OracleResult::default();

    // Clean every row; rejections keep their file and line, in reading order.
    let mut accepted = Vec::new();
    for file in files {
        let bytes = std::fs::read(file)
            .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
        let text = String::from_utf8_lossy(&bytes);
        let name = file.display().to_string();
        clean_file(&text, &name, cfg, &mut result, &mut accepted);
    }
    let counters = &mut result.counters;
    counters.accepted = accepted.len() as u64;
    counters.rejected = counters.rows - counters.accepted;
    for event in &accepted {
        epoch_entry(&mut result.per_epoch, event.ts, cfg).rows += 1;
    }

    // Duplicates: the same (ts, user, item, kind) counts once.
    let distinct: BTreeSet<OracleEvent> = accepted.iter().copied().collect();
    result.counters.duplicates = (accepted.len() - distinct.len()) as u64;
    for event in &accepted {
        epoch_entry(&mut result.per_epoch, event.ts, cfg).duplicates += 1;
    }
    for event in &distinct {
        epoch_entry(&mut result.per_epoch, event.ts, cfg).duplicates -= 1;
    }

    // Bots: more than the threshold of distinct events in one epoch.
    let mut per_user_epoch: BTreeMap<(u64, i64), u64> = BTreeMap::new();
    for event in &distinct {
        *per_user_epoch
            .entry((event.user, epoch_of(event.ts, cfg.bucket_ms)))
            .or_default() += 1;
    }
    let is_bot = |event: &OracleEvent| {
        cfg.bot_threshold > 0
            && per_user_epoch[&(event.user, epoch_of(event.ts, cfg.bucket_ms))] > cfg.bot_threshold
    };
    for event in &distinct {
        let entry = epoch_entry(&mut result.per_epoch, event.ts, cfg);
        if is_bot(event) {
            entry.bot_excluded += 1;
            result.counters.bot_excluded += 1;
        } else {
            entry.clean += 1;
            result.counters.clean += 1;
            result.clean_events.push(*event);
        }
    }

    // Aggregates and lagged examples, one epoch at a time in increasing order.
    compute_examples(&mut result, cfg.bucket_ms);

    // Scaler over every example of the run.
    for (feature, stats) in result.scaler.iter_mut().enumerate() {
        let values: Vec<f64> = result
            .examples
            .iter()
            .map(|e| e.features()[feature])
            .collect();
        *stats = Stats::two_pass(&values);
    }
    result.counters.epochs = result.per_epoch.len() as u64;
    result
}

fn epoch_entry<'a>(
    per_epoch: &'a mut BTreeMap<i64, EpochCounters>,
    ts: i64,
    cfg: &OracleConfig,
) -> &'a mut EpochCounters {
    per_epoch.entry(epoch_of(ts, cfg.bucket_ms)).or_default()
}

/// Cleans one file's rows into `accepted` and the quarantine.
fn clean_file(
    text: &str,
    name: &str,
    cfg: &OracleConfig,
    result: &mut OracleResult,
    accepted: &mut Vec<OracleEvent>,
) {
    let mut lines = physical_lines(text).into_iter().peekable();
    if let Some(header) = cfg.format.header()
        && let Some(&(_, first)) = lines.peek()
    {
        let found = split_fields(first, ',').join(",");
        assert_eq!(found, header, "{name}: line 1 is not the {header:?} header");
        lines.next();
    }
    for (line_number, line) in lines {
        if line.is_empty() {
            continue;
        }
        result.counters.rows += 1;
        match parse_row(cfg.format, line) {
            Ok(event) => accepted.push(event),
            Err(rejection) => {
                *result
                    .counters
                    .rejected_by_reason
                    .entry(rejection.reason.into())
                    .or_default() += 1;
                result
                    .quarantine
                    .push((name.to_string(), line_number, rejection.reason.into()));
                if let Some(ts) = rejection.ts {
                    let entry = epoch_entry(&mut result.per_epoch, ts, cfg);
                    entry.rows += 1;
                    entry.rejected += 1;
                }
            }
        }
    }
}

/// Running aggregates over the clean events of the epochs processed so far.
#[derive(Default)]
struct Aggregates {
    users: BTreeMap<u64, [u64; 4]>,
    items: BTreeMap<u64, [u64; 4]>,
    pairs: BTreeMap<(u64, u64), [u64; 2]>,
}

impl Aggregates {
    /// The ten raw features of a pair, from what has been added so far.
    fn features(&self, user: u64, item: u64) -> [u64; 10] {
        let u = self.users.get(&user).copied().unwrap_or_default();
        let i = self.items.get(&item).copied().unwrap_or_default();
        let p = self.pairs.get(&(user, item)).copied().unwrap_or_default();
        [u[0], u[1], u[2], u[3], i[0], i[1], i[2], i[3], p[0], p[1]]
    }

    fn add(&mut self, event: &OracleEvent) {
        let new_pair = !self.pairs.contains_key(&(event.user, event.item));
        let pair = self.pairs.entry((event.user, event.item)).or_default();
        let user = self.users.entry(event.user).or_default();
        let item = self.items.entry(event.item).or_default();
        let slot = match event.kind {
            Kind::View => Some(0),
            Kind::Cart => Some(1),
            Kind::Purchase => Some(2),
            Kind::RemoveFromCart | Kind::Favorite => None,
        };
        if let Some(slot) = slot {
            user[slot] += 1;
            item[slot] += 1;
            if slot < 2 {
                pair[slot] += 1;
            }
        }
        if new_pair {
            user[3] += 1;
            item[3] += 1;
        }
    }
}

/// Fills examples, per-epoch example counts and the final aggregates.
fn compute_examples(result: &mut OracleResult, bucket_ms: i64) {
    let mut by_epoch: BTreeMap<i64, Vec<OracleEvent>> = BTreeMap::new();
    for event in &result.clean_events {
        by_epoch
            .entry(epoch_of(event.ts, bucket_ms))
            .or_default()
            .push(*event);
    }
    let mut aggregates = Aggregates::default();
    for (&epoch, events) in &by_epoch {
        // Labels come from this epoch; features from every earlier one.
        let mut active: BTreeMap<(u64, u64), bool> = BTreeMap::new();
        for event in events {
            *active.entry((event.user, event.item)).or_default() |= event.kind == Kind::Purchase;
        }
        let entry = result
            .per_epoch
            .get_mut(&epoch)
            .expect("a clean event's epoch has rows");
        for (&(user, item), &label) in &active {
            let raw = aggregates.features(user, item);
            result.examples.push(Example {
                epoch,
                user,
                item,
                label,
                raw,
            });
            entry.examples += 1;
            entry.positives += u64::from(label);
        }

        // Only now does this epoch become history for the next one.
        for event in events {
            aggregates.add(event);
        }
    }
    result.counters.examples = result.examples.len() as u64;
    result.counters.positives = result.examples.iter().filter(|e| e.label).count() as u64;
    result.users = aggregates.users;
    result.items = aggregates.items;
    result.pairs = aggregates.pairs;
}
