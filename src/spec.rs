//! A dataflow spec (`dataflows/*.toml`): how one shop's event log maps its
//! columns to the canonical event, so a new log needs a file, not code.
//!
//! A spec names the format, its delimiter, whether the first line is a
//! header, the column names, which column holds each canonical field, how
//! times are written, and what each raw kind value means. The format is
//! documented key by key at the top of `dataflows/retailrocket.toml`; the
//! three real formats of the reference task are built in.
//!
//! Everything is checked when the spec is read, and each mistake is one line
//! naming the file, the key, what is wrong and how to fix it. A checked spec
//! is then bound to one file's header ([`Spec::bind`]) to give the
//! [`Binding`] that cleans its rows, or used to recognise a file from its
//! first record ([`Spec::matches`]).

use std::collections::BTreeMap;
use std::path::Path;

use csv::ByteRecord;
use serde::Deserialize;

use crate::clean::{Binding, Positions};
use crate::event::Kind;
use crate::time::{TimeFormat, parse_zone};

/// The UTF-8 byte order mark some exports put before the first header field.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// The builtin specs, in the order [`Spec::builtin`] returns them.
const BUILTIN: [(&str, &str); 3] = [
    (
        "retailrocket",
        include_str!("../dataflows/retailrocket.toml"),
    ),
    ("rees46", include_str!("../dataflows/rees46.toml")),
    ("taobao", include_str!("../dataflows/taobao.toml")),
];

/// Why a spec could not be read, checked or bound to a file.
///
/// Every message is one line that starts with where the spec came from (its
/// path, or `builtin:NAME`) and ends with how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec file could not be read.
    #[error("{origin}: cannot read the spec file: {source}; check the path")]
    Read {
        /// The path given.
        origin: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The text is not TOML, or a key is unknown, repeated or of the wrong
    /// type.
    #[error("{origin}: line {line}: {message}")]
    Toml {
        /// Where the spec came from.
        origin: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What the TOML reader said, with the offending line and a fix.
        message: String,
    },
    /// A key has a value the spec format does not allow, or is missing.
    #[error("{origin}: {key} {problem}; {fix}")]
    Invalid {
        /// Where the spec came from.
        origin: String,
        /// The key, as written in the file (`delimiter`, `[fields] ts`).
        key: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// [`Spec::resolve`] found neither a builtin spec nor a readable file.
    #[error(
        "no builtin spec is named {name:?} and it cannot be read as a file ({source}); \
         use one of {builtins} or the path of a spec file"
    )]
    NotFound {
        /// The name or path given.
        name: String,
        /// The builtin names, comma-separated.
        builtins: String,
        /// Why reading it as a file failed.
        source: std::io::Error,
    },
    /// The file's header lacks a column the spec reads.
    #[error(
        "{origin}: [fields] {field} reads column {column:?}, which the file's header lacks \
         (header: {header}); fix the column name in the spec, or use the spec of this file"
    )]
    MissingColumn {
        /// Where the spec came from.
        origin: String,
        /// The canonical field (`ts`, `user`, ...).
        field: &'static str,
        /// The column name the spec gives.
        column: String,
        /// The file's header, each name quoted, comma-separated.
        header: String,
    },
    /// A column index of the spec is past the end of the file's header.
    #[error(
        "{origin}: [fields] {field} = {index} is past the file's last column (the header has \
         {count} columns); use an index below {count} or a column name"
    )]
    ColumnOutOfRange {
        /// Where the spec came from.
        origin: String,
        /// The canonical field (`ts`, `user`, ...).
        field: &'static str,
        /// The 0-based index the spec gives.
        index: usize,
        /// The number of columns in the header.
        count: usize,
    },
}

/// Where a canonical field is: a column name or a 0-based index.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ColumnRef {
    /// A column name, matched trimmed and ignoring ASCII case.
    Name(String),
    /// A 0-based column position.
    Index(usize),
}

/// The column of each canonical field, as the spec writes it.
#[derive(Clone, Debug)]
struct Fields {
    ts: ColumnRef,
    user: ColumnRef,
    item: ColumnRef,
    kind: ColumnRef,
    category: Option<ColumnRef>,
    price: Option<ColumnRef>,
}

impl Fields {
    /// Each field with its spec key, in a fixed order.
    fn named(&self) -> [(&'static str, Option<&ColumnRef>); 6] {
        [
            ("ts", Some(&self.ts)),
            ("user", Some(&self.user)),
            ("item", Some(&self.item)),
            ("kind", Some(&self.kind)),
            ("category", self.category.as_ref()),
            ("price", self.price.as_ref()),
        ]
    }
}

/// A checked dataflow spec: how to read one shop's event log.
///
/// # Examples
///
/// ```
/// use deltarec::spec::Spec;
///
/// let spec = Spec::resolve("taobao").unwrap();
/// let first = csv::ByteRecord::from(vec!["1", "2268318", "2520377", "pv", "1511544070"]);
/// assert!(spec.matches(&first));
///
/// let binding = spec.bind(None).unwrap();
/// let parsed = binding.parse(&first).unwrap();
/// assert_eq!(parsed.event.ts, 1_511_544_070_000);
/// assert_eq!(parsed.category, Some(2_520_377));
/// ```
#[derive(Clone, Debug)]
pub struct Spec {
    /// The path it was read from, or `builtin:NAME`; starts every message.
    origin: String,
    name: String,
    description: String,
    delimiter: u8,
    header: bool,
    /// The expected header (header specs) or the names of the positions.
    columns: Vec<String>,
    fields: Fields,
    time: TimeFormat,
    /// Raw kind values and their canonical kinds.
    kinds: Vec<(String, Kind)>,
}

/// A spec file as written, before any check. Every key is optional here so
/// that a missing one gets a message of ours, naming it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    description: Option<String>,
    delimiter: Option<String>,
    header: Option<bool>,
    columns: Option<Vec<String>>,
    fields: Option<RawFields>,
    time: Option<RawTime>,
    kinds: Option<BTreeMap<String, String>>,
}

/// The `[fields]` table as written: a name or an index, checked later.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFields {
    ts: Option<toml::Value>,
    user: Option<toml::Value>,
    item: Option<toml::Value>,
    kind: Option<toml::Value>,
    category: Option<toml::Value>,
    price: Option<toml::Value>,
}

/// The `[time]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    format: Option<String>,
    zone: Option<String>,
}

/// Builds the one-line errors of one spec file.
struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            origin: self.origin.to_owned(),
            key: key.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn missing(&self, key: &str, fix: impl Into<String>) -> SpecError {
        self.invalid(key, "is missing", fix)
    }

    /// Turns a TOML reader error into one line with its line number, the
    /// offending line, and a fix where one is known.
    fn toml(&self, text: &str, error: &toml::de::Error) -> SpecError {
        let start = error.span().map_or(0, |span| span.start).min(text.len());
        let line = text.as_bytes()[..start]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
            + 1;
        let source = text.lines().nth(line - 1).unwrap_or("").trim();
        let what = error.message().trim().replace('\n', "; ");
        let fix = if what.contains("unknown field") {
            "; remove the key or fix its spelling"
        } else if what.contains("duplicate key") {
            "; list each key once (in [kinds], each raw value maps to one kind)"
        } else if what.contains("invalid type") {
            "; see dataflows/retailrocket.toml for the form of each key"
        } else {
            ""
        };
        let shown: String = source.chars().take(60).collect();
        SpecError::Toml {
            origin: self.origin.to_owned(),
            line,
            message: format!("`{shown}`: {what}{fix}"),
        }
    }
}

/// Trimmed, ASCII-case-insensitive equality of column names.
fn same_column(left: &[u8], right: &[u8]) -> bool {
    left.trim_ascii().eq_ignore_ascii_case(right.trim_ascii())
}

/// A header field with a leading UTF-8 BOM removed (first field only).
fn header_field(record: &ByteRecord, index: usize) -> &[u8] {
    let field = &record[index];
    if index == 0 {
        field.strip_prefix(BOM).unwrap_or(field)
    } else {
        field
    }
}

/// Names quoted and comma-separated, for messages (quoting keeps them on one
/// line whatever they contain).
fn quoted_list<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> String {
    let quoted: Vec<String> = names
        .into_iter()
        .map(|name| format!("{:?}", String::from_utf8_lossy(name)))
        .collect();
    quoted.join(", ")
}

impl Spec {
    /// Reads and checks a spec from TOML text; `origin` (a path, or
    /// `builtin:NAME`) starts every error message.
    ///
    /// # Errors
    ///
    /// [`SpecError::Toml`] for text that is not TOML or has an unknown,
    /// repeated or mistyped key; [`SpecError::Invalid`] for a missing key or
    /// a value the format does not allow (a delimiter that is not one byte,
    /// a time format that cannot name a moment, an unknown kind, a field
    /// naming no column or an index past the columns).
    pub fn parse(text: &str, origin: &str) -> Result<Spec, SpecError> {
        let check = Checker { origin };
        let raw: RawSpec = toml::from_str(text).map_err(|error| check.toml(text, &error))?;

        let name = check_name(&check, raw.name)?;
        let description = raw.description.unwrap_or_default();
        let delimiter = check_delimiter(&check, raw.delimiter)?;
        let header = raw.header.ok_or_else(|| {
            check.missing(
                "header",
                "add header = true if the first line names the columns, else false",
            )
        })?;
        let columns = check_columns(&check, raw.columns)?;
        let raw_fields = raw.fields.ok_or_else(|| {
            check.missing(
                "[fields]",
                "add a [fields] table with ts, user, item and kind",
            )
        })?;
        let fields = check_fields(&check, raw_fields, &columns)?;
        let time = check_time(&check, raw.time)?;
        let kinds = check_kinds(&check, raw.kinds)?;

        Ok(Spec {
            origin: origin.to_owned(),
            name,
            description,
            delimiter,
            header,
            columns,
            fields,
            time,
            kinds,
        })
    }

    /// Reads and checks a spec file.
    ///
    /// # Errors
    ///
    /// [`SpecError::Read`] if the file cannot be read, else as
    /// [`Spec::parse`], with the path as origin.
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Spec::parse(&text, &origin),
            Err(source) => Err(SpecError::Read { origin, source }),
        }
    }

    /// The builtin specs (`dataflows/*.toml` of this crate): retailrocket,
    /// rees46, taobao, in that order.
    ///
    /// # Panics
    ///
    /// If a builtin file is invalid, which the tests rule out.
    pub fn builtin() -> Vec<Spec> {
        let parse = |(name, text): (&str, &str)| {
            Spec::parse(text, &format!("builtin:{name}"))
                .unwrap_or_else(|error| panic!("builtin specs are valid: {error}"))
        };
        BUILTIN.into_iter().map(parse).collect()
    }

    /// The builtin spec of that name, or else the spec file at that path.
    ///
    /// # Errors
    ///
    /// [`SpecError::NotFound`] if it is neither a builtin name nor a
    /// readable file; otherwise as [`Spec::parse`].
    pub fn resolve(name_or_path: &str) -> Result<Spec, SpecError> {
        if let Some(spec) = Spec::builtin()
            .into_iter()
            .find(|spec| spec.name == name_or_path)
        {
            return Ok(spec);
        }
        match Spec::load(Path::new(name_or_path)) {
            Err(SpecError::Read { source, .. }) => Err(SpecError::NotFound {
                name: name_or_path.to_owned(),
                builtins: BUILTIN.map(|(name, _)| name).join(", "),
                source,
            }),
            other => other,
        }
    }

    /// The spec's short name (`name = "..."`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The spec's free-text description; empty when it has none.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where the spec came from: its path, or `builtin:NAME`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The field separator byte.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// Whether the first line of a file is a header naming the columns.
    pub fn has_header(&self) -> bool {
        self.header
    }

    /// Resolves every field to a column position for one file.
    ///
    /// With a header spec and `Some(header)` (the file's first record),
    /// names are looked up in that header (trimmed, ignoring ASCII case and
    /// a UTF-8 BOM on the first field) and records must have as many fields
    /// as the header. Otherwise (`None`, or a headerless spec, whose first
    /// record is data) the spec's own `columns` are used.
    ///
    /// # Errors
    ///
    /// [`SpecError::MissingColumn`] if the header lacks a column the spec
    /// reads, naming it and listing the header;
    /// [`SpecError::ColumnOutOfRange`] if an index is past the header's end.
    pub fn bind(&self, header: Option<&ByteRecord>) -> Result<Binding, SpecError> {
        let names: Vec<&[u8]> = match header {
            Some(record) if self.header => (0..record.len())
                .map(|index| header_field(record, index))
                .collect(),
            _ => self.columns.iter().map(|name| name.as_bytes()).collect(),
        };
        let position = |field: &'static str, column: &ColumnRef| match column {
            ColumnRef::Index(index) if *index < names.len() => Ok(*index),
            ColumnRef::Index(index) => Err(SpecError::ColumnOutOfRange {
                origin: self.origin.clone(),
                field,
                index: *index,
                count: names.len(),
            }),
            ColumnRef::Name(name) => {
                let found = names
                    .iter()
                    .position(|candidate| same_column(candidate, name.as_bytes()));
                found.ok_or_else(|| SpecError::MissingColumn {
                    origin: self.origin.clone(),
                    field,
                    column: name.clone(),
                    header: quoted_list(names.iter().copied()),
                })
            }
        };
        let optional = |field, column: &Option<ColumnRef>| {
            column
                .as_ref()
                .map(|column| position(field, column))
                .transpose()
        };

        let fields = &self.fields;
        let positions = Positions {
            ts: position("ts", &fields.ts)?,
            user: position("user", &fields.user)?,
            item: position("item", &fields.item)?,
            kind: position("kind", &fields.kind)?,
            category: optional("category", &fields.category)?,
            price: optional("price", &fields.price)?,
        };
        let kinds = self
            .kinds
            .iter()
            .map(|(raw, kind)| (raw.as_bytes().into(), *kind))
            .collect();
        Ok(Binding::new(
            names.len(),
            positions,
            self.time.clone(),
            kinds,
        ))
    }

    /// Whether a file whose first record is `first` is in this spec's format.
    ///
    /// A header spec matches when `first` equals its `columns` (trimmed,
    /// ignoring ASCII case and a UTF-8 BOM on the first field). A headerless
    /// spec matches when `first` has as many fields as its `columns` and
    /// parses as a valid event.
    pub fn matches(&self, first: &ByteRecord) -> bool {
        if first.len() != self.columns.len() {
            return false;
        }
        if self.header {
            let mut expected = self.columns.iter().enumerate();
            expected.all(|(index, name)| same_column(header_field(first, index), name.as_bytes()))
        } else {
            self.bind(None)
                .is_ok_and(|binding| binding.parse(first).is_ok())
        }
    }
}

/// `name`: required, letters, digits, `_` and `-`.
fn check_name(check: &Checker, name: Option<String>) -> Result<String, SpecError> {
    let name = name.ok_or_else(|| check.missing("name", "add name = \"myshop\""))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || !name.chars().all(allowed) {
        return Err(check.invalid(
            "name",
            format!("is {name:?}, which is not a short name"),
            "use letters, digits, '_' or '-', e.g. name = \"myshop\"",
        ));
    }
    Ok(name)
}

/// `delimiter`: one ASCII byte other than a quote or a line end; default `,`.
fn check_delimiter(check: &Checker, delimiter: Option<String>) -> Result<u8, SpecError> {
    let Some(delimiter) = delimiter else {
        return Ok(b',');
    };
    let fix = "use one character such as \",\", \";\", \"\\t\" or \"|\"";
    match delimiter.as_bytes() {
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        [_] => Err(check.invalid(
            "delimiter",
            format!("is {delimiter:?}, which cannot separate fields (it quotes or ends records)"),
            fix,
        )),
        _ => Err(check.invalid(
            "delimiter",
            format!("is {delimiter:?}, which is not one byte"),
            fix,
        )),
    }
}

/// `columns`: required, non-empty, names non-empty and distinct (trimmed,
/// ignoring ASCII case).
fn check_columns(check: &Checker, columns: Option<Vec<String>>) -> Result<Vec<String>, SpecError> {
    let fix = "list the column names in file order, e.g. columns = [\"user_id\", \"item_id\"]";
    let columns = columns.ok_or_else(|| check.missing("columns", fix))?;
    if columns.is_empty() {
        return Err(check.invalid("columns", "is empty", fix));
    }
    for (index, name) in columns.iter().enumerate() {
        if name.trim().is_empty() {
            let problem = format!("has an empty name at index {index}");
            return Err(check.invalid("columns", problem, "give every column a name"));
        }
        let earlier = columns[..index]
            .iter()
            .find(|other| same_column(other.as_bytes(), name.as_bytes()));
        if let Some(earlier) = earlier {
            let problem = format!("names {earlier:?} and {name:?}, which are the same column name");
            return Err(check.invalid("columns", problem, "give each column a distinct name"));
        }
    }
    Ok(columns)
}

/// `[fields]`: ts, user, item and kind required; each a column name from
/// `columns` or an index into it; no two fields on one column.
fn check_fields(check: &Checker, raw: RawFields, columns: &[String]) -> Result<Fields, SpecError> {
    let column =
        |field: &str, value: Option<toml::Value>| -> Result<Option<ColumnRef>, SpecError> {
            let key = format!("[fields] {field}");
            let Some(value) = value else { return Ok(None) };
            let reference = match value {
                toml::Value::Integer(index) => match usize::try_from(index) {
                    Ok(index) if index < columns.len() => ColumnRef::Index(index),
                    _ => {
                        let problem = format!(
                            "= {index} is not a column index (columns has {})",
                            columns.len()
                        );
                        let fix = format!("use 0 to {} or a column name", columns.len() - 1);
                        return Err(check.invalid(&key, problem, fix));
                    }
                },
                toml::Value::String(name) => {
                    if !columns
                        .iter()
                        .any(|known| same_column(known.as_bytes(), name.as_bytes()))
                    {
                        let listed = quoted_list(columns.iter().map(|known| known.as_bytes()));
                        let problem = format!("= {name:?} names no column in columns ({listed})");
                        let fix = "use one of those names or a 0-based index";
                        return Err(check.invalid(&key, problem, fix));
                    }
                    ColumnRef::Name(name)
                }
                other => {
                    let problem = format!("is a {}, not a column", other.type_str());
                    let fix = "use a column name (a string) or a 0-based index (an integer)";
                    return Err(check.invalid(&key, problem, fix));
                }
            };
            Ok(Some(reference))
        };
    let required = |field: &str, value| {
        column(field, value)?.ok_or_else(|| {
            let fix = format!("add {field} = \"<column name>\" or a 0-based index to [fields]");
            check.missing(&format!("[fields] {field}"), fix)
        })
    };

    let fields = Fields {
        ts: required("ts", raw.ts)?,
        user: required("user", raw.user)?,
        item: required("item", raw.item)?,
        kind: required("kind", raw.kind)?,
        category: column("category", raw.category)?,
        price: column("price", raw.price)?,
    };

    // Two fields on one column is a slip (user and item swapped in).
    let index_of = |reference: &ColumnRef| match reference {
        ColumnRef::Index(index) => *index,
        ColumnRef::Name(name) => columns
            .iter()
            .position(|known| same_column(known.as_bytes(), name.as_bytes()))
            .expect("names were checked against columns above"),
    };
    let named = fields.named();
    let bound: Vec<(&str, usize)> = named
        .iter()
        .filter_map(|(field, reference)| Some((*field, index_of((*reference)?))))
        .collect();
    for (position, (field, index)) in bound.iter().enumerate() {
        if let Some((other, _)) = bound[..position]
            .iter()
            .find(|(_, earlier)| earlier == index)
        {
            let problem = format!(
                "and [fields] {other} both read column {:?}",
                columns[*index]
            );
            return Err(check.invalid(
                &format!("[fields] {field}"),
                problem,
                "give each field its own column",
            ));
        }
    }
    Ok(fields)
}

/// `[time]`: a format (unix_s, unix_ms or a strftime pattern) and a zone
/// (UTC or ±HH:MM, default UTC; only for patterns).
fn check_time(check: &Checker, raw: Option<RawTime>) -> Result<TimeFormat, SpecError> {
    let format_fix = "add format = \"unix_s\", \"unix_ms\" or a strftime pattern";
    let raw =
        raw.ok_or_else(|| check.missing("[time]", format!("add a [time] table and {format_fix}")))?;
    let format = raw
        .format
        .ok_or_else(|| check.missing("[time] format", format_fix))?;
    let zone_text = raw.zone.unwrap_or_else(|| "UTC".to_owned());
    let zone = parse_zone(&zone_text).ok_or_else(|| {
        check.invalid(
            "[time] zone",
            format!("is {zone_text:?}, which is not a zone"),
            "use \"UTC\" or a fixed offset such as \"+08:00\" or \"-05:00\"",
        )
    })?;
    let time = TimeFormat::compile(&format, zone)
        .map_err(|error| check.invalid("[time] format", error.problem, error.fix))?;
    if zone != 0 && !time.is_pattern() {
        let problem = format!("is {zone_text:?}, but {format:?} times are always UTC");
        return Err(check.invalid("[time] zone", problem, "remove zone, or set it to \"UTC\""));
    }
    Ok(time)
}

/// `[kinds]`: non-empty; raw values without surrounding whitespace (fields
/// are trimmed, so they could never match); canonical kinds that exist.
fn check_kinds(
    check: &Checker,
    raw: Option<BTreeMap<String, String>>,
) -> Result<Vec<(String, Kind)>, SpecError> {
    let fix = "map each raw value to a kind, e.g. pv = \"view\"";
    let raw = raw.ok_or_else(|| check.missing("[kinds]", fix))?;
    if raw.is_empty() {
        return Err(check.invalid("[kinds]", "is empty", fix));
    }
    let mut kinds = Vec::with_capacity(raw.len());
    for (value, canonical) in raw {
        if value.is_empty() || value.trim_ascii() != value {
            let problem = format!("maps {value:?}, which is empty or has surrounding spaces");
            let fix = "write the raw value without spaces; fields are trimmed before matching";
            return Err(check.invalid("[kinds]", problem, fix));
        }
        let Some(kind) = Kind::from_name(&canonical) else {
            let names: Vec<&str> = Kind::ALL.iter().map(|kind| kind.name()).collect();
            let problem = format!("maps {value:?} to {canonical:?}, which is not a kind");
            return Err(check.invalid(
                "[kinds]",
                problem,
                format!("use one of {}", names.join(", ")),
            ));
        };
        kinds.push((value, kind));
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Reason;
    use std::path::PathBuf;

    fn builtin(name: &str) -> Spec {
        Spec::resolve(name).unwrap()
    }

    fn record(fields: &[&str]) -> ByteRecord {
        ByteRecord::from(fields.to_vec())
    }

    /// A small valid spec; tests edit one line of it to break one key.
    const GOOD: &str = r#"
name = "shop"
delimiter = ";"
header = false
columns = ["user", "item", "kind", "time"]

[fields]
ts = "time"
user = 0
item = "item"
kind = "KIND"

[time]
format = "%d/%m/%Y"
zone = "+08:00"

[kinds]
"1" = "view"
"2" = "purchase"
"#;

    /// The error for `GOOD` with `from` replaced by `to`.
    fn error_with(from: &str, to: &str) -> String {
        assert!(GOOD.contains(from), "{from}");
        let text = GOOD.replace(from, to);
        let error = Spec::parse(&text, "dataflows/x.toml")
            .unwrap_err()
            .to_string();
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(error.starts_with("dataflows/x.toml: "), "{error}");
        error
    }

    #[test]
    fn builtin_specs_are_the_three_reference_formats_in_order() {
        let names: Vec<String> = Spec::builtin()
            .iter()
            .map(|spec| spec.name().to_owned())
            .collect();
        assert_eq!(names, ["retailrocket", "rees46", "taobao"]);
        for spec in Spec::builtin() {
            assert_eq!(spec.delimiter(), b',');
            assert_eq!(spec.origin(), format!("builtin:{}", spec.name()));
            assert!(!spec.description().is_empty());
        }
        assert!(!builtin("taobao").has_header());
        assert!(builtin("rees46").has_header());
    }

    #[test]
    fn the_dataflow_files_on_disk_load_like_the_builtins() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows");
        for spec in Spec::builtin() {
            let path = root.join(format!("{}.toml", spec.name()));
            let loaded = Spec::load(&path).unwrap();
            assert_eq!(loaded.name(), spec.name());
            assert_eq!(
                Spec::resolve(path.to_str().unwrap()).unwrap().name(),
                spec.name()
            );
        }
    }

    #[test]
    fn a_small_spec_with_indices_codes_and_a_zone_reads_rows() {
        let spec = Spec::parse(GOOD, "test").unwrap();
        assert_eq!(spec.delimiter(), b';');
        let binding = spec.bind(None).unwrap();
        assert_eq!(binding.field_count(), 4);
        let parsed = binding
            .parse(&record(&["7", "8", "2", "25/11/2017"]))
            .unwrap();
        // Midnight in Beijing is 16:00 the day before in UTC.
        let utc = chrono::DateTime::parse_from_rfc3339("2017-11-24T16:00:00Z").unwrap();
        assert_eq!(parsed.event.ts, utc.timestamp_millis());
        assert_eq!((parsed.event.user, parsed.event.item), (7, 8));
        assert_eq!(parsed.event.kind, Kind::Purchase);
        assert_eq!(
            binding.parse(&record(&["7", "8", "3", "25/11/2017"])),
            Err(Reason::UnknownKind)
        );
    }

    #[test]
    fn rees46_rows_read_time_category_and_price() {
        let spec = builtin("rees46");
        let header = "event_time,event_type,product_id,category_id,category_code,brand,price,\
                      user_id,user_session";
        let binding = spec
            .bind(Some(&record(&header.split(',').collect::<Vec<_>>())))
            .unwrap();
        let row = "2019-10-01 00:00:04 UTC,view,44600062,2103807459595387724,,shiseido,35.79,\
                   541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c";
        let parsed = binding
            .parse(&record(&row.split(',').collect::<Vec<_>>()))
            .unwrap();
        let utc = chrono::DateTime::parse_from_rfc3339("2019-10-01T00:00:04Z").unwrap();
        assert_eq!(parsed.event.ts, utc.timestamp_millis());
        assert_eq!(parsed.event.user, 541_312_140);
        assert_eq!(parsed.event.item, 44_600_062);
        assert_eq!(
            parsed.category,
            Some(2_103_807_459_595_387_724),
            "19 digits, exact"
        );
        assert_eq!(parsed.price, Some(35.79));
    }

    #[test]
    fn retailrocket_rows_read_millisecond_times() {
        let spec = builtin("retailrocket");
        let header = record(&["timestamp", "visitorid", "event", "itemid", "transactionid"]);
        let binding = spec.bind(Some(&header)).unwrap();
        let parsed = binding.parse(&record(&[
            "1433221332117",
            "257597",
            "transaction",
            "355908",
            "14418.0",
        ]));
        let event = parsed.unwrap().event;
        assert_eq!(
            (event.ts, event.user, event.item),
            (1_433_221_332_117, 257_597, 355_908)
        );
        assert_eq!(event.kind, Kind::Purchase);
        let float_ids = binding.parse(&record(&[
            "1433221332117",
            "257597.0",
            "addtocart",
            "355908.0",
            "",
        ]));
        assert_eq!(float_ids.unwrap().event.kind, Kind::Cart);
    }

    #[test]
    fn taobao_rows_read_second_times_and_all_four_behaviours() {
        let binding = builtin("taobao").bind(None).unwrap();
        assert_eq!(binding.field_count(), 5);
        for (raw, kind) in [
            ("pv", Kind::View),
            ("cart", Kind::Cart),
            ("buy", Kind::Purchase),
            ("fav", Kind::Favorite),
        ] {
            let parsed = binding
                .parse(&record(&["1", "2268318", "2520377", raw, "1511544070"]))
                .unwrap();
            assert_eq!(parsed.event.kind, kind);
            assert_eq!(parsed.event.ts, 1_511_544_070_000);
            assert_eq!(parsed.category, Some(2_520_377));
        }
        // The truncated last row of the mydeep file.
        let truncated = binding.parse(&record(&["100370", "1968385", "1875258", "pv"]));
        assert_eq!(truncated, Err(Reason::FieldCount));
    }

    #[test]
    fn bind_follows_the_files_own_header_order_case_and_bom() {
        let spec = builtin("retailrocket");
        let header = record(&[
            "\u{feff}ItemId",
            " EVENT ",
            "visitorid",
            "timestamp",
            "transactionid",
            "extra",
        ]);
        let binding = spec.bind(Some(&header)).unwrap();
        assert_eq!(binding.field_count(), 6);
        let parsed = binding.parse(&record(&[
            "355908",
            "view",
            "257597",
            "1433221332117",
            "",
            "x",
        ]));
        let event = parsed.unwrap().event;
        assert_eq!((event.user, event.item), (257_597, 355_908));
    }

    #[test]
    fn bind_names_a_column_the_header_lacks_and_lists_the_header() {
        let spec = builtin("retailrocket");
        let header = record(&["timestamp", "visitor", "event", "itemid"]);
        let error = spec.bind(Some(&header)).unwrap_err().to_string();
        assert!(
            error.contains("[fields] user") && error.contains("\"visitorid\""),
            "{error}"
        );
        assert!(
            error.contains("\"timestamp\", \"visitor\", \"event\", \"itemid\""),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn bind_refuses_an_index_past_the_header() {
        let text = GOOD
            .replace("header = false", "header = true")
            .replace("ts = \"time\"", "ts = 0")
            .replace("user = 0", "user = 3");
        let spec = Spec::parse(&text, "x.toml").unwrap();
        let error = spec
            .bind(Some(&record(&["user", "item", "kind"])))
            .unwrap_err();
        assert!(matches!(
            error,
            SpecError::ColumnOutOfRange {
                field: "user",
                index: 3,
                count: 3,
                ..
            }
        ));
    }

    #[test]
    fn header_specs_match_their_header_with_bom_case_and_spaces_ignored() {
        let spec = builtin("retailrocket");
        assert!(spec.matches(&record(&[
            "timestamp",
            "visitorid",
            "event",
            "itemid",
            "transactionid"
        ])));
        assert!(spec.matches(&record(&[
            "\u{feff}Timestamp",
            " visitorid",
            "event",
            "itemid",
            "transactionid"
        ])));
        assert!(!spec.matches(&record(&["timestamp", "visitorid", "event", "itemid"])));
        assert!(!spec.matches(&record(&["1433221332117", "257597", "view", "355908", ""])));
    }

    #[test]
    fn headerless_specs_match_a_valid_first_row_only() {
        let spec = builtin("taobao");
        assert!(spec.matches(&record(&["1", "2268318", "2520377", "pv", "1511544070"])));
        assert!(!spec.matches(&record(&["1", "2268318", "2520377", "click", "1511544070"])));
        assert!(!spec.matches(&record(&[
            "user_id",
            "item_id",
            "category_id",
            "behavior_type",
            "timestamp"
        ])));
        assert!(!spec.matches(&record(&["1", "2268318", "2520377", "pv"])));
    }

    /// The first record of a real sample file, read as the pipeline reads it
    /// (the csv crate, no header handling, flexible field counts).
    fn first_record(path: &Path) -> ByteRecord {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_path(path)
            .unwrap();
        let mut record = ByteRecord::new();
        assert!(
            reader.read_byte_record(&mut record).unwrap(),
            "{} is empty",
            path.display()
        );
        record
    }

    /// The first bytes of the file, to read its first line without the csv
    /// crate (which would strip the BOM for us).
    fn first_line_raw(path: &Path) -> ByteRecord {
        let bytes = std::fs::read(path).unwrap();
        let line = bytes.split(|&byte| byte == b'\n').next().unwrap();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        ByteRecord::from(line.split(|&byte| byte == b',').collect::<Vec<_>>())
    }

    #[test]
    fn each_builtin_spec_detects_its_real_samples_and_no_other() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/real"));
        if !root.is_dir() {
            eprintln!("skipping: {} is absent", root.display());
            return;
        }
        let owners = [
            ("retailrocket", "retailrocket"),
            ("rees46-multicategory", "rees46"),
            ("taobao-userbehavior", "taobao"),
        ];
        let mut checked = 0;
        for (folder, owner) in owners {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(folder))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            paths.sort();
            for path in paths
                .iter()
                .filter(|path| path.extension().is_some_and(|ext| ext == "csv"))
            {
                for first in [first_record(path), first_line_raw(path)] {
                    let matching: Vec<String> = Spec::builtin()
                        .into_iter()
                        .filter(|spec| spec.matches(&first))
                        .map(|spec| spec.name().to_owned())
                        .collect();
                    assert_eq!(matching, [owner], "{}", path.display());
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 6, "every sample file was checked");
    }

    #[test]
    fn the_bom_sample_binds_and_reads_its_rows() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/data/real/rees46-multicategory/2019-Oct_bom-example_phamhoa2416.csv"
        ));
        if !path.is_file() {
            eprintln!("skipping: {} is absent", path.display());
            return;
        }
        let binding = builtin("rees46").bind(Some(&first_line_raw(path))).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_path(path)
            .unwrap();
        let mut rows = 0;
        for record in reader.byte_records() {
            binding.parse(&record.unwrap()).unwrap();
            rows += 1;
        }
        assert_eq!(rows, 29);
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_key() {
        let error = error_with("delimiter = \";\"", "delimiter = \";\"\nseparator = \";\"");
        assert!(
            error.contains("separator") && error.contains("line 4"),
            "{error}"
        );
        let error = error_with("zone = \"+08:00\"", "zone = \"+08:00\"\ntz = 1");
        assert!(error.contains("`tz`"), "{error}");
    }

    #[test]
    fn missing_required_keys_are_named() {
        let cases = [
            ("name = \"shop\"", "name is missing"),
            ("header = false", "header is missing"),
            (
                "columns = [\"user\", \"item\", \"kind\", \"time\"]",
                "columns is missing",
            ),
            ("ts = \"time\"", "[fields] ts is missing"),
            ("kind = \"KIND\"", "[fields] kind is missing"),
            ("format = \"%d/%m/%Y\"", "[time] format is missing"),
        ];
        for (line, expected) in cases {
            let error = error_with(line, "");
            assert!(error.contains(expected), "{error}");
        }
        let no_kinds = error_with("[kinds]\n\"1\" = \"view\"\n\"2\" = \"purchase\"\n", "");
        assert!(no_kinds.contains("[kinds] is missing"), "{no_kinds}");
    }

    #[test]
    fn a_bad_delimiter_is_refused() {
        assert!(
            error_with("delimiter = \";\"", "delimiter = \";;\"")
                .contains("delimiter is \";;\", which is not one byte")
        );
        assert!(error_with("delimiter = \";\"", "delimiter = \"\"").contains("delimiter"));
        assert!(error_with("delimiter = \";\"", "delimiter = '\"'").contains("delimiter"));
        assert!(error_with("delimiter = \";\"", "delimiter = \"é\"").contains("delimiter"));
        let tab = Spec::parse(
            &GOOD.replace("delimiter = \";\"", "delimiter = \"\\t\""),
            "x",
        )
        .unwrap();
        assert_eq!(tab.delimiter(), b'\t');
    }

    #[test]
    fn a_bad_time_format_or_zone_is_refused() {
        let error = error_with("format = \"%d/%m/%Y\"", "format = \"%d/%m/%Q\"");
        assert!(
            error.contains("[time] format is \"%d/%m/%Q\", which is not a valid strftime"),
            "{error}"
        );
        let error = error_with("format = \"%d/%m/%Y\"", "format = \"%H:%M\"");
        assert!(
            error.contains("[time] format") && error.contains("cannot be read back"),
            "{error}"
        );
        let error = error_with("format = \"%d/%m/%Y\"", "format = \"seconds\"");
        assert!(error.contains("[time] format is \"seconds\""), "{error}");
        let error = error_with("zone = \"+08:00\"", "zone = \"Asia/Shanghai\"");
        assert!(
            error.contains("[time] zone is \"Asia/Shanghai\""),
            "{error}"
        );
        let error = error_with("format = \"%d/%m/%Y\"", "format = \"unix_s\"");
        assert!(
            error.contains("[time] zone") && error.contains("always UTC"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused_with_the_list_of_kinds() {
        let error = error_with("\"1\" = \"view\"", "\"pv\" = \"look\"");
        let expected = "dataflows/x.toml: [kinds] maps \"pv\" to \"look\", which is not a kind; \
                        use one of view, cart, remove_from_cart, purchase, favorite";
        assert_eq!(error, expected);
    }

    #[test]
    fn a_repeated_raw_kind_value_is_refused() {
        let error = error_with("\"2\" = \"purchase\"", "\"2\" = \"purchase\"\n2 = \"cart\"");
        assert!(
            error.contains("line 20") && error.contains("duplicate key"),
            "{error}"
        );
        let error = error_with("\"1\" = \"view\"", "\" 1\" = \"view\"");
        assert!(error.contains("[kinds] maps \" 1\""), "{error}");
    }

    #[test]
    fn a_field_outside_the_columns_is_refused() {
        let error = error_with("user = 0", "user = 4");
        assert!(
            error.contains("[fields] user = 4 is not a column index"),
            "{error}"
        );
        assert!(error.contains("use 0 to 3"), "{error}");
        let error = error_with("user = 0", "user = -1");
        assert!(error.contains("[fields] user = -1"), "{error}");
        let error = error_with("item = \"item\"", "item = \"product\"");
        assert!(
            error.contains("[fields] item = \"product\" names no column"),
            "{error}"
        );
        let error = error_with("item = \"item\"", "item = 1.5");
        assert!(error.contains("[fields] item is a float"), "{error}");
        let error = error_with("item = \"item\"", "item = \"user\"");
        assert!(
            error.contains("[fields] item and [fields] user both read column \"user\""),
            "{error}"
        );
    }

    #[test]
    fn bad_columns_and_names_are_refused() {
        let error = error_with(
            "[\"user\", \"item\", \"kind\", \"time\"]",
            "[\"user\", \"item\", \"Kind\", \"KIND\", \"time\"]",
        );
        assert!(
            error.contains("columns names \"Kind\" and \"KIND\""),
            "{error}"
        );
        let error = error_with("name = \"shop\"", "name = \"my shop\"");
        assert!(error.contains("name is \"my shop\""), "{error}");
        let error = error_with("header = false", "header = \"no\"");
        assert!(
            error.contains("line 4") && error.contains("header"),
            "{error}"
        );
    }

    #[test]
    fn toml_syntax_errors_are_one_line_with_a_line_number() {
        let error = error_with("[time]", "[time");
        assert!(error.contains("line 13"), "{error}");
    }

    #[test]
    fn resolve_names_the_builtins_when_nothing_is_found() {
        let error = Spec::resolve("amazon").unwrap_err().to_string();
        assert!(
            error.contains("\"amazon\"") && error.contains("retailrocket, rees46, taobao"),
            "{error}"
        );
        assert!(!error.contains('\n'));
        let error = Spec::load(Path::new("/nonexistent/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/nonexistent/x.toml: cannot read"),
            "{error}"
        );
    }

    proptest::proptest! {
        #[test]
        fn builtin_bindings_never_panic_on_arbitrary_records(
            fields in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..30),
                0..10,
            ),
            spec in 0usize..3,
        ) {
            let record = ByteRecord::from(fields);
            let spec = &Spec::builtin()[spec];
            let _ = spec.bind(None).unwrap().parse(&record);
            let _ = spec.matches(&record);
            let _ = spec.bind(Some(&record));
        }
    }
}
