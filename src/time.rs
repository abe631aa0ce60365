//! Event-time formats of a dataflow spec: Unix seconds, Unix milliseconds, or
//! a strftime pattern read in a fixed zone, each turned into milliseconds
//! since 1970-01-01 UTC.
//!
//! Times are the hottest field of a row after the ids, so a pattern made only
//! of `%Y %m %d %H %M %S` and literals (every real format we know) is read by
//! a strict fixed-width parser; anything it does not accept goes to chrono,
//! which decides. A [`TimeParser`] also remembers the last pattern time it
//! read, since consecutive rows of real logs often share a timestamp.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use chrono::format::{Item, Numeric, Pad, Parsed, StrftimeItems};
use chrono::{DateTime, FixedOffset};

use crate::clean::parse_id;
use crate::event::Millis;

/// How a spec's time column is written.
#[derive(Clone, Debug)]
pub(crate) enum TimeFormat {
    /// Whole seconds since the Unix epoch (`"unix_s"`).
    UnixSeconds,
    /// Whole milliseconds since the Unix epoch (`"unix_ms"`).
    UnixMillis,
    /// A strftime pattern, with the zone used when it has no `%z`.
    Pattern(Arc<Pattern>),
}

/// A compiled strftime pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// chrono's items, used when the fast plan does not apply or fails.
    items: Vec<Item<'static>>,
    /// A strict fixed-width plan, when the pattern allows one.
    fast: Option<Vec<FastItem>>,
    /// Seconds east of UTC of the spec's zone.
    zone_offset: i32,
}

/// One step of the fast plan: a literal, or a zero-padded number of fixed
/// width (4 digits for the year, 2 for the rest).
#[derive(Debug)]
enum FastItem {
    Literal(Box<[u8]>),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

/// Why a `[time]` setting was refused: what is wrong, and how to fix it.
#[derive(Debug)]
pub(crate) struct FormatProblem {
    /// What is wrong, e.g. `"%Q" is not a valid strftime pattern`.
    pub(crate) problem: String,
    /// How to fix it.
    pub(crate) fix: String,
}

impl FormatProblem {
    fn new(problem: impl Into<String>, fix: impl Into<String>) -> FormatProblem {
        FormatProblem {
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Parses a `[time] zone` value: `"UTC"`, `"Z"` or `±HH:MM`, into seconds
/// east of UTC.
pub(crate) fn parse_zone(zone: &str) -> Option<i32> {
    if zone == "UTC" || zone == "Z" {
        return Some(0);
    }
    let bytes = zone.as_bytes();
    let digit = |i: usize| {
        bytes[i]
            .is_ascii_digit()
            .then(|| i32::from(bytes[i] - b'0'))
    };
    if bytes.len() != 6 || bytes[3] != b':' {
        return None;
    }
    let sign = match bytes[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours = digit(1)? * 10 + digit(2)?;
    let minutes = digit(4)? * 10 + digit(5)?;
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
}

impl TimeFormat {
    /// Compiles a `[time] format` value, with the zone offset (seconds east
    /// of UTC) that applies to patterns without `%z`.
    ///
    /// A pattern is accepted only if a sample time written with it reads
    /// back, which refuses patterns without a full date (`"%H:%M"`) or with
    /// a 12-hour clock and no AM/PM.
    pub(crate) fn compile(format: &str, zone_offset: i32) -> Result<TimeFormat, FormatProblem> {
        match format {
            "unix_s" => return Ok(TimeFormat::UnixSeconds),
            "unix_ms" => return Ok(TimeFormat::UnixMillis),
            _ => {}
        }
        let example = "use \"unix_s\", \"unix_ms\" or a strftime pattern such as \
                       \"%Y-%m-%d %H:%M:%S\"";
        if !format.contains('%') {
            return Err(FormatProblem::new(
                format!("is {format:?}, which is neither unix_s, unix_ms nor a strftime pattern"),
                example,
            ));
        }
        let items = StrftimeItems::new(format).parse_to_owned().map_err(|_| {
            FormatProblem::new(
                format!("is {format:?}, which is not a valid strftime pattern"),
                example,
            )
        })?;
        let pattern = Pattern {
            fast: fast_plan(&items),
            items,
            zone_offset,
        };
        pattern.check_round_trip(format)?;
        Ok(TimeFormat::Pattern(Arc::new(pattern)))
    }

    /// Whether times are read with a pattern (and so worth caching).
    pub(crate) fn is_pattern(&self) -> bool {
        matches!(self, TimeFormat::Pattern(_))
    }

    /// Reads a trimmed, non-empty time field into milliseconds since the
    /// Unix epoch; `None` when it does not parse (or overflows).
    pub(crate) fn parse(&self, field: &[u8]) -> Option<Millis> {
        match self {
            TimeFormat::UnixSeconds => {
                let seconds = i64::try_from(parse_id(field)?).ok()?;
                seconds.checked_mul(1000)
            }
            TimeFormat::UnixMillis => i64::try_from(parse_id(field)?).ok(),
            TimeFormat::Pattern(pattern) => pattern.parse(field),
        }
    }
}

/// The plan for the strict fast parser, if every item of the pattern is a
/// literal or a zero-padded `%Y %m %d %H %M %S`, and the date is complete.
fn fast_plan(items: &[Item<'static>]) -> Option<Vec<FastItem>> {
    let mut plan = Vec::with_capacity(items.len());
    for item in items {
        let step = match item {
            Item::Literal(text) | Item::Space(text) => FastItem::Literal(text.as_bytes().into()),
            Item::OwnedLiteral(text) | Item::OwnedSpace(text) => {
                FastItem::Literal(text.as_bytes().into())
            }
            Item::Numeric(numeric, Pad::Zero) => match numeric {
                Numeric::Year => FastItem::Year,
                Numeric::Month => FastItem::Month,
                Numeric::Day => FastItem::Day,
                Numeric::Hour => FastItem::Hour,
                Numeric::Minute => FastItem::Minute,
                Numeric::Second => FastItem::Second,
                _ => return None,
            },
            _ => return None,
        };
        plan.push(step);
    }

    // Each number at most once, and a full date, or chrono must decide.
    let count = |wanted: fn(&FastItem) -> bool| plan.iter().filter(|step| wanted(step)).count();
    let date = [
        count(|step| matches!(step, FastItem::Year)),
        count(|step| matches!(step, FastItem::Month)),
        count(|step| matches!(step, FastItem::Day)),
    ];
    let time = [
        count(|step| matches!(step, FastItem::Hour)),
        count(|step| matches!(step, FastItem::Minute)),
        count(|step| matches!(step, FastItem::Second)),
    ];
    // A minute without an hour, or a second without a minute, is left to
    // chrono, which refuses it.
    let time_ok = time.iter().all(|&n| n <= 1) && time[0] >= time[1] && time[1] >= time[2];
    (date == [1, 1, 1] && time_ok).then_some(plan)
}

impl Pattern {
    /// Reads a time field; the fast plan first, chrono when it declines.
    fn parse(&self, field: &[u8]) -> Option<Millis> {
        if let Some(plan) = &self.fast
            && let Some(millis) = self.parse_fast(plan, field)
        {
            return Some(millis);
        }
        self.parse_chrono(field)
    }

    /// The strict parser: exact literals, exact digit counts, values in
    /// range. It accepts a subset of what chrono accepts for the same pattern
    /// and gives the same result there; leap seconds are left to chrono.
    fn parse_fast(&self, plan: &[FastItem], field: &[u8]) -> Option<Millis> {
        let mut rest = field;
        let (mut year, mut month, mut day) = (0i64, 0u32, 0u32);
        let (mut hour, mut minute, mut second) = (0u32, 0u32, 0u32);
        for step in plan {
            match step {
                FastItem::Literal(text) => rest = rest.strip_prefix(&**text)?,
                FastItem::Year => year = i64::from(take_digits(&mut rest, 4)?),
                FastItem::Month => month = take_digits(&mut rest, 2)?,
                FastItem::Day => day = take_digits(&mut rest, 2)?,
                FastItem::Hour => hour = take_digits(&mut rest, 2)?,
                FastItem::Minute => minute = take_digits(&mut rest, 2)?,
                FastItem::Second => second = take_digits(&mut rest, 2)?,
            }
        }
        let in_range = rest.is_empty()
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        if !in_range {
            return None;
        }
        let seconds = days_from_civil(year, month, day) * 86_400
            + i64::from(hour * 3600 + minute * 60 + second)
            - i64::from(self.zone_offset);
        Some(seconds * 1000)
    }

    /// chrono's reading of the field, with missing hours, minutes and
    /// seconds taken as 0 and the spec's zone used when there is no `%z`.
    fn parse_chrono(&self, field: &[u8]) -> Option<Millis> {
        let text = std::str::from_utf8(field).ok()?;
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, text, self.items.iter()).ok()?;

        // NB: a `%s` timestamp fixes the time of day by itself; filling in
        // zeros would contradict it.
        if parsed.timestamp().is_none() {
            if parsed.hour_div_12().is_none() && parsed.hour_mod_12().is_none() {
                parsed.set_hour(0).ok()?;
            }
            if parsed.minute().is_none() {
                parsed.set_minute(0).ok()?;
            }
        }
        let offset = parsed.offset().unwrap_or(self.zone_offset);
        let local = parsed.to_naive_datetime_with_offset(offset).ok()?;
        let millis = local.and_utc().timestamp_millis();
        millis.checked_sub(i64::from(offset) * 1000)
    }

    /// Writes a sample time with the pattern and reads it back, so that a
    /// pattern that cannot name a moment is refused when the spec loads.
    fn check_round_trip(&self, format: &str) -> Result<(), FormatProblem> {
        let zone = FixedOffset::east_opt(self.zone_offset).expect("parse_zone keeps offsets < 24h");
        let sample = DateTime::from_timestamp(1_569_937_507, 0)
            .expect("2019-10-01T13:45:07Z is a valid time")
            .with_timezone(&zone);
        let mut written = String::new();
        let wrote = write!(written, "{}", sample.format_with_items(self.items.iter()));
        if wrote.is_err() || self.parse(written.as_bytes()).is_none() {
            return Err(FormatProblem::new(
                format!(
                    "is {format:?}, which cannot be read back into a date and time \
                     (it wrote {written:?} for 2019-10-01 13:45:07 UTC)"
                ),
                "include at least a year, a month and a day (e.g. \"%Y-%m-%d\"); \
                 with %I also use %p",
            ));
        }
        Ok(())
    }
}

/// Takes exactly `width` ASCII digits off the front of `rest`.
fn take_digits(rest: &mut &[u8], width: usize) -> Option<u32> {
    let digits = rest.get(..width)?;
    let mut value = 0u32;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(byte - b'0');
    }
    *rest = &rest[width..];
    Some(value)
}

/// Whether `year` is a leap year of the proleptic Gregorian calendar.
fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days in a month (1-12) of a year.
fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
///
/// Howard Hinnant's `days_from_civil`
/// (<https://howardhinnant.github.io/date_algorithms.html#days_from_civil>):
/// years start in March so the leap day is last, and 400-year eras repeat.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The longest pattern time the cache keeps; longer ones are always parsed.
const CACHED_BYTES: usize = 48;

/// The last pattern time read: its raw bytes and its value.
#[derive(Debug)]
struct LastTime {
    len: usize,
    bytes: [u8; CACHED_BYTES],
    millis: Millis,
}

/// A [`TimeFormat`] with a one-entry cache of the last pattern time read.
///
/// The cache is behind a mutex so that the parser stays `Sync`; it is only
/// tried (`try_lock`), so workers that share one parser never wait on each
/// other, they merely miss the cache. Cloning gives an empty cache.
#[derive(Debug)]
pub(crate) struct TimeParser {
    format: TimeFormat,
    last: Mutex<LastTime>,
}

impl Clone for TimeParser {
    fn clone(&self) -> TimeParser {
        TimeParser::new(self.format.clone())
    }
}

impl TimeParser {
    /// A parser for `format` with an empty cache.
    pub(crate) fn new(format: TimeFormat) -> TimeParser {
        let last = LastTime {
            len: usize::MAX,
            bytes: [0; CACHED_BYTES],
            millis: 0,
        };
        TimeParser {
            format,
            last: Mutex::new(last),
        }
    }

    /// Reads a trimmed, non-empty time field, as [`TimeFormat::parse`].
    pub(crate) fn parse(&self, field: &[u8]) -> Option<Millis> {
        if !self.format.is_pattern() || field.len() > CACHED_BYTES {
            return self.format.parse(field);
        }
        let Ok(mut last) = self.last.try_lock() else {
            return self.format.parse(field);
        };
        if last.len == field.len() && last.bytes[..field.len()] == *field {
            return Some(last.millis);
        }
        let millis = self.format.parse(field)?;
        last.bytes[..field.len()].copy_from_slice(field);
        last.len = field.len();
        last.millis = millis;
        Some(millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn pattern(format: &str, zone: &str) -> TimeFormat {
        TimeFormat::compile(format, parse_zone(zone).unwrap()).unwrap()
    }

    fn millis(rfc3339: &str) -> Millis {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn days_from_civil_matches_chrono_over_three_centuries() {
        let mut date = chrono::NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        while date.year_ce().1 < 2200 {
            let days = days_from_civil(i64::from(date.year()), date.month(), date.day());
            assert_eq!(days, (date - epoch).num_days(), "{date}");
            date = date.succ_opt().unwrap();
        }
    }

    #[test]
    fn rees46_times_read_as_utc_seconds() {
        let format = pattern("%Y-%m-%d %H:%M:%S UTC", "UTC");
        let read = format.parse(b"2019-10-01 00:00:04 UTC");
        assert_eq!(read, Some(millis("2019-10-01T00:00:04Z")));
    }

    #[test]
    fn hour_and_day_precision_patterns_default_to_zero() {
        let hour = pattern("%Y-%m-%d %H", "UTC");
        assert_eq!(
            hour.parse(b"2019-10-01 13"),
            Some(millis("2019-10-01T13:00:00Z"))
        );
        let day = pattern("%Y-%m-%d", "UTC");
        assert_eq!(
            day.parse(b"2019-10-01"),
            Some(millis("2019-10-01T00:00:00Z"))
        );
        let european = pattern("%d/%m/%Y", "UTC");
        assert_eq!(
            european.parse(b"25/11/2017"),
            Some(millis("2017-11-25T00:00:00Z"))
        );
    }

    #[test]
    fn a_zone_offset_is_subtracted_to_reach_utc() {
        let beijing = pattern("%Y-%m-%d %H:%M:%S", "+08:00");
        let read = beijing.parse(b"2017-11-25 08:00:00");
        assert_eq!(read, Some(millis("2017-11-25T00:00:00Z")));
        let west = pattern("%Y-%m-%d %H:%M", "-05:30");
        assert_eq!(
            west.parse(b"2017-11-25 00:00"),
            Some(millis("2017-11-25T05:30:00Z"))
        );
    }

    #[test]
    fn a_percent_z_in_the_field_wins_over_the_zone() {
        let format = pattern("%Y-%m-%d %H:%M:%S %z", "+08:00");
        let read = format.parse(b"2019-10-01 02:00:00 +0200");
        assert_eq!(read, Some(millis("2019-10-01T00:00:00Z")));
    }

    #[test]
    fn patterns_outside_the_fast_plan_still_parse_through_chrono() {
        let named_month = pattern("%d %b %Y %H:%M", "UTC");
        assert!(matches!(&named_month, TimeFormat::Pattern(p) if p.fast.is_none()));
        let read = named_month.parse(b"01 Oct 2019 13:45");
        assert_eq!(read, Some(millis("2019-10-01T13:45:00Z")));
        let timestamp = pattern("%s", "+08:00");
        assert_eq!(timestamp.parse(b"1511544070"), Some(1_511_544_070_000));
    }

    #[test]
    fn chrono_decides_what_the_fast_plan_declines() {
        let format = pattern("%Y-%m-%d %H:%M:%S", "UTC");
        // One-digit month: lenient chrono accepts it.
        let read = format.parse(b"2019-1-01 00:00:00");
        assert_eq!(read, Some(millis("2019-01-01T00:00:00Z")));
        // A leap second reads as the next second's start.
        let leap = format.parse(b"2016-12-31 23:59:60");
        assert_eq!(leap, Some(millis("2017-01-01T00:00:00Z")));
        // Impossible dates and trailing text are refused by both.
        assert_eq!(format.parse(b"2019-02-29 00:00:00"), None);
        assert_eq!(format.parse(b"2019-10-01 00:00:00x"), None);
        assert_eq!(format.parse(b"2019-10-01 24:00:00"), None);
        assert_eq!(format.parse(b"\xff\xfe"), None);
    }

    #[test]
    fn fast_plan_agrees_with_chrono_on_every_day_of_a_leap_year() {
        let TimeFormat::Pattern(pattern) = pattern("%Y-%m-%d %H:%M:%S UTC", "+03:00") else {
            unreachable!()
        };
        let plan = pattern.fast.as_ref().expect("this pattern has a fast plan");
        let mut date = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
        while date.format("%Y").to_string() == "2020" {
            let text = format!("{date} 17:03:59 UTC");
            let fast = pattern.parse_fast(plan, text.as_bytes());
            assert_eq!(fast, pattern.parse_chrono(text.as_bytes()), "{text}");
            assert!(fast.is_some());
            date = date.succ_opt().unwrap();
        }
    }

    #[test]
    fn unix_formats_take_integers_with_a_zero_fraction_only() {
        let seconds = TimeFormat::compile("unix_s", 0).unwrap();
        assert_eq!(seconds.parse(b"1511544070"), Some(1_511_544_070_000));
        assert_eq!(seconds.parse(b"1511544070.0"), Some(1_511_544_070_000));
        assert_eq!(seconds.parse(b"1511544070.5"), None);
        assert_eq!(seconds.parse(b"-1"), None);
        assert_eq!(
            seconds.parse(b"9223372036854776"),
            None,
            "seconds overflow in ms"
        );
        let ms = TimeFormat::compile("unix_ms", 0).unwrap();
        assert_eq!(ms.parse(b"1437927001434"), Some(1_437_927_001_434));
        assert_eq!(ms.parse(b"9223372036854775808"), None, "past i64::MAX");
    }

    #[test]
    fn formats_that_cannot_name_a_moment_are_refused() {
        for bad in ["%H:%M", "%I:%M %Y-%m-%d", "%Q", "iso", "%Y-%m-%d %"] {
            assert!(TimeFormat::compile(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_are_utc_or_a_fixed_offset() {
        assert_eq!(parse_zone("UTC"), Some(0));
        assert_eq!(parse_zone("+08:00"), Some(8 * 3600));
        assert_eq!(parse_zone("-03:30"), Some(-(3 * 3600 + 1800)));
        for bad in ["utc", "+8:00", "+0800", "+24:00", "Asia/Shanghai", ""] {
            assert_eq!(parse_zone(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_cache_returns_the_same_time_as_a_fresh_parse() {
        let parser = TimeParser::new(pattern("%Y-%m-%d %H:%M:%S UTC", "UTC"));
        let first = parser.parse(b"2019-10-01 00:00:04 UTC");
        assert_eq!(parser.parse(b"2019-10-01 00:00:04 UTC"), first);
        assert_eq!(
            parser.parse(b"2019-10-01 00:00:05 UTC"),
            first.map(|ms| ms + 1000)
        );
        assert_eq!(parser.parse(b"2019-10-01 00:00:0x UTC"), None);
        assert_eq!(
            parser.parse(b"2019-10-01 00:00:05 UTC"),
            first.map(|ms| ms + 1000)
        );
        assert_eq!(parser.clone().parse(b"2019-10-01 00:00:04 UTC"), first);
    }
}
