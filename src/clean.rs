//! Cleaning: one CSV record of a log, read through a spec's [`Binding`],
//! becomes a [`Parsed`] event or the one [`Reason`] it is rejected for.
//!
//! A bad row is data, not an error: every rule of the reference task
//! (section 2) maps to a reason, the first rule broken (in the declaration
//! order of [`Reason`]) wins, and no input, however malformed, panics. The
//! common path allocates nothing per row.

use csv::ByteRecord;

use crate::event::{Event, Kind, MAX_TS, MIN_TS, Millis, Parsed, Reason};
use crate::time::{TimeFormat, TimeParser};

/// Column positions of the canonical fields in one file's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Positions {
    pub(crate) ts: usize,
    pub(crate) user: usize,
    pub(crate) item: usize,
    pub(crate) kind: usize,
    pub(crate) category: Option<usize>,
    pub(crate) price: Option<usize>,
}

/// A spec bound to one file: where each field is, how many fields a record
/// must have, and how to read times and kinds. Made by
/// [`Spec::bind`](crate::spec::Spec::bind).
///
/// A binding is `Send + Sync`; each worker may also clone its own (clones
/// are cheap, and each gets its own time cache).
#[derive(Clone, Debug)]
pub struct Binding {
    /// The number of fields every record must have.
    field_count: usize,
    /// Where each field is; every position is below `field_count`.
    positions: Positions,
    /// Reads the time column.
    time: TimeParser,
    /// Raw kind values (trimmed, exact) and what they mean.
    kinds: Vec<(Box<[u8]>, Kind)>,
}

impl Binding {
    /// Binds positions, a time format and a kind table for records of
    /// `field_count` fields.
    ///
    /// # Panics
    ///
    /// If a position is not below `field_count`: the spec checks every
    /// position before binding, so this is a bug there.
    pub(crate) fn new(
        field_count: usize,
        positions: Positions,
        time: TimeFormat,
        kinds: Vec<(Box<[u8]>, Kind)>,
    ) -> Binding {
        let Positions {
            ts,
            user,
            item,
            kind,
            category,
            price,
        } = positions;
        let all = [
            Some(ts),
            Some(user),
            Some(item),
            Some(kind),
            category,
            price,
        ];
        assert!(
            all.into_iter()
                .flatten()
                .all(|position| position < field_count),
            "every bound position is below the field count {field_count}: {positions:?}"
        );
        Binding {
            field_count,
            positions,
            time: TimeParser::new(time),
            kinds,
        }
    }

    /// The number of fields a record must have to be read.
    pub fn field_count(&self) -> usize {
        self.field_count
    }

    /// Reads one data record into an event, or says why it is rejected.
    ///
    /// Fields are trimmed of ASCII whitespace first. The rules are checked
    /// in the declaration order of [`Reason`] and the first one broken is
    /// returned: field count, then time (missing, unparseable, outside
    /// `[MIN_TS, MAX_TS)`), user, item, kind (missing, not in the spec), and
    /// last a present price that is not a finite non-negative number. An
    /// unparseable category is not a rejection; it reads as `None`.
    pub fn parse(&self, record: &ByteRecord) -> Result<Parsed, Reason> {
        if record.len() != self.field_count {
            return Err(Reason::FieldCount);
        }
        // NB: from here on every position indexes a field, since each is
        // below `field_count` (checked in `new`) and the count matches.
        let at = &self.positions;
        let ts = self.read_ts(&record[at.ts])?;
        let user = read_id(&record[at.user], Reason::MissingUser, Reason::BadUser)?;
        let item = read_id(&record[at.item], Reason::MissingItem, Reason::BadItem)?;
        let kind = self.read_kind(&record[at.kind])?;
        let price = match at.price {
            Some(position) => read_price(&record[position])?,
            None => None,
        };
        let category = at.category.and_then(|position| parse_id(&record[position]));
        Ok(Parsed {
            event: Event {
                ts,
                user,
                item,
                kind,
            },
            category,
            price,
        })
    }

    /// The event time of a row that has the right field count and a valid
    /// time, whatever its other fields hold: a rejected row with a time still
    /// counts in its epoch's metrics.
    pub fn timestamp(&self, record: &ByteRecord) -> Option<Millis> {
        if record.len() != self.field_count {
            return None;
        }
        self.read_ts(&record[self.positions.ts]).ok()
    }

    /// The time rules: present, parseable, in range.
    fn read_ts(&self, raw: &[u8]) -> Result<Millis, Reason> {
        let field = raw.trim_ascii();
        if field.is_empty() {
            return Err(Reason::MissingTs);
        }
        let ts = self.time.parse(field).ok_or(Reason::BadTs)?;
        if (MIN_TS..MAX_TS).contains(&ts) {
            Ok(ts)
        } else {
            Err(Reason::TsOutOfRange)
        }
    }

    /// The kind rules: present, and one the spec maps (exactly, after
    /// trimming).
    fn read_kind(&self, raw: &[u8]) -> Result<Kind, Reason> {
        let field = raw.trim_ascii();
        if field.is_empty() {
            return Err(Reason::MissingKind);
        }
        let mapped = self.kinds.iter().find(|(value, _)| **value == *field);
        mapped.map(|&(_, kind)| kind).ok_or(Reason::UnknownKind)
    }
}

/// The id rules: present (`missing` otherwise) and an id (`bad` otherwise).
fn read_id(raw: &[u8], missing: Reason, bad: Reason) -> Result<u64, Reason> {
    let field = raw.trim_ascii();
    if field.is_empty() {
        return Err(missing);
    }
    parse_id(field).ok_or(bad)
}

/// The price rule: absent (empty) is fine; present must be a finite,
/// non-negative number.
fn read_price(raw: &[u8]) -> Result<Option<f64>, Reason> {
    let field = raw.trim_ascii();
    if field.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(field).map_err(|_| Reason::BadPrice)?;
    let price: f64 = text.parse().map_err(|_| Reason::BadPrice)?;
    if !price.is_finite() || price < 0.0 {
        return Err(Reason::BadPrice);
    }
    // Adding +0.0 turns a "-0.00" into +0.0, so equal prices compare equal
    // bit for bit downstream.
    Ok(Some(price + 0.0))
}

/// Parses an id: ASCII digits that fit a u64, optionally followed by `.` and
/// one or more zeros (pandas writes `14418` as `14418.0`).
///
/// Surrounding ASCII whitespace is ignored. Everything else is refused:
/// an empty field, a sign, a non-zero or empty fraction (`12.5`, `12.`),
/// an exponent (`2.5e5`), `0x1F`, `1_000`, and values above `u64::MAX`. The
/// digits are never read through `f64`, so 19-digit ids stay exact.
///
/// ```
/// use deltarec::clean::parse_id;
/// assert_eq!(parse_id(b"257597.0"), Some(257_597));
/// assert_eq!(parse_id(b"2103807459595387724"), Some(2_103_807_459_595_387_724));
/// assert_eq!(parse_id(b"257597.5"), None);
/// ```
pub fn parse_id(field: &[u8]) -> Option<u64> {
    let field = field.trim_ascii();
    let mut value: u64 = 0;
    for (index, &byte) in field.iter().enumerate() {
        if byte.is_ascii_digit() {
            value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
        } else if byte == b'.' && index > 0 {
            let fraction = &field[index + 1..];
            let zeros = !fraction.is_empty() && fraction.iter().all(|&digit| digit == b'0');
            return zeros.then_some(value);
        } else {
            return None;
        }
    }
    (!field.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_zone;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A Taobao-like binding: user, item, category, kind, ts (seconds), plus
    /// a price column so every rule can be exercised.
    fn binding() -> Binding {
        let positions = Positions {
            ts: 4,
            user: 0,
            item: 1,
            kind: 3,
            category: Some(2),
            price: Some(5),
        };
        let kinds = vec![
            (b"pv".as_slice().into(), Kind::View),
            (b"buy".as_slice().into(), Kind::Purchase),
        ];
        Binding::new(
            6,
            positions,
            TimeFormat::compile("unix_s", 0).unwrap(),
            kinds,
        )
    }

    fn record(fields: &[&str]) -> ByteRecord {
        ByteRecord::from(fields.to_vec())
    }

    fn parse(fields: &[&str]) -> Result<Parsed, Reason> {
        binding().parse(&record(fields))
    }

    const GOOD: [&str; 6] = ["1", "2268318", "2520377", "pv", "1511544070", "35.79"];

    /// `GOOD` with one field replaced.
    fn with(position: usize, value: &str) -> Result<Parsed, Reason> {
        let mut fields = GOOD;
        fields[position] = value;
        parse(&fields)
    }

    #[test]
    fn a_good_row_parses_into_every_field() {
        let parsed = parse(&GOOD).unwrap();
        let event = Event {
            ts: 1_511_544_070_000,
            user: 1,
            item: 2_268_318,
            kind: Kind::View,
        };
        assert_eq!(parsed.event, event);
        assert_eq!(parsed.category, Some(2_520_377));
        assert_eq!(parsed.price, Some(35.79));
    }

    #[test]
    fn fields_are_trimmed_of_ascii_whitespace() {
        let parsed = parse(&[
            " 1",
            "2268318\t",
            " 2520377 ",
            " pv ",
            " 1511544070",
            " 1.5 ",
        ]);
        assert_eq!(parsed.unwrap().event.kind, Kind::View);
    }

    #[test]
    fn a_wrong_field_count_is_field_count() {
        assert_eq!(parse(&GOOD[..5]), Err(Reason::FieldCount));
        assert_eq!(
            parse(&["1", "2", "3", "pv", "1511544070", "1", "x"]),
            Err(Reason::FieldCount)
        );
        assert_eq!(parse(&[]), Err(Reason::FieldCount));
    }

    #[test]
    fn an_empty_time_is_missing_ts() {
        assert_eq!(with(4, ""), Err(Reason::MissingTs));
        assert_eq!(with(4, "  "), Err(Reason::MissingTs));
    }

    #[test]
    fn an_unparseable_time_is_bad_ts() {
        for bad in [
            "x",
            "1511544070.5",
            "-1511544070",
            "1.5e9",
            "\u{e9}",
            "9223372036854775807",
        ] {
            assert_eq!(with(4, bad), Err(Reason::BadTs), "{bad}");
        }
    }

    #[test]
    fn a_time_outside_2000_to_2100_is_ts_out_of_range() {
        assert_eq!(with(4, "946684799"), Err(Reason::TsOutOfRange));
        assert!(
            with(4, "946684800").is_ok(),
            "2000-01-01 itself is in range"
        );
        assert_eq!(with(4, "4102444800"), Err(Reason::TsOutOfRange));
        assert!(with(4, "4102444799").is_ok());
        assert_eq!(with(4, "0"), Err(Reason::TsOutOfRange));
    }

    #[test]
    fn an_empty_user_is_missing_user_and_a_bad_one_bad_user() {
        assert_eq!(with(0, ""), Err(Reason::MissingUser));
        assert_eq!(with(0, "u164"), Err(Reason::BadUser));
        assert_eq!(with(0, "-1"), Err(Reason::BadUser));
    }

    #[test]
    fn an_empty_item_is_missing_item_and_a_bad_one_bad_item() {
        assert_eq!(with(1, ""), Err(Reason::MissingItem));
        assert_eq!(with(1, "2268318.5"), Err(Reason::BadItem));
        assert_eq!(
            with(1, "18446744073709551616"),
            Err(Reason::BadItem),
            "u64::MAX + 1"
        );
    }

    #[test]
    fn an_empty_kind_is_missing_kind_and_an_unmapped_one_unknown_kind() {
        assert_eq!(with(3, ""), Err(Reason::MissingKind));
        assert_eq!(with(3, "click"), Err(Reason::UnknownKind));
        assert_eq!(with(3, "PV"), Err(Reason::UnknownKind), "matching is exact");
        assert_eq!(with(3, "\u{fffd}"), Err(Reason::UnknownKind));
    }

    #[test]
    fn a_negative_or_non_finite_price_is_bad_price() {
        for bad in ["-4.0", "inf", "NaN", "abc", "1e400", "0x10"] {
            assert_eq!(with(5, bad), Err(Reason::BadPrice), "{bad}");
        }
    }

    #[test]
    fn an_empty_price_is_absent_and_zero_is_a_price() {
        assert_eq!(with(5, "").unwrap().price, None);
        assert_eq!(with(5, "0.00").unwrap().price, Some(0.0));
        let negative_zero = with(5, "-0.00").unwrap().price.unwrap();
        assert!(negative_zero.is_sign_positive(), "-0.00 is read as +0.0");
        assert_eq!(with(5, "33.2").unwrap().price, Some(33.2));
    }

    #[test]
    fn a_bad_category_reads_as_none_and_never_rejects() {
        assert_eq!(with(2, "").unwrap().category, None);
        assert_eq!(with(2, "electronics").unwrap().category, None);
        assert_eq!(with(2, "2520377.0").unwrap().category, Some(2_520_377));
    }

    #[test]
    fn the_first_broken_rule_wins() {
        // Everything is wrong: the field count is reported.
        assert_eq!(parse(&["", "", "", "", ""]), Err(Reason::FieldCount));
        // Then in Reason order.
        let all_bad = ["", "", "", "", "", "-1"];
        assert_eq!(parse(&all_bad), Err(Reason::MissingTs));
        assert_eq!(parse(&["", "", "", "", "x", "-1"]), Err(Reason::BadTs));
        assert_eq!(
            parse(&["", "", "", "", "0", "-1"]),
            Err(Reason::TsOutOfRange)
        );
        let ts = "1511544070";
        assert_eq!(parse(&["", "", "", "", ts, "-1"]), Err(Reason::MissingUser));
        assert_eq!(parse(&["x", "", "", "", ts, "-1"]), Err(Reason::BadUser));
        assert_eq!(
            parse(&["1", "", "", "", ts, "-1"]),
            Err(Reason::MissingItem)
        );
        assert_eq!(parse(&["1", "x", "", "", ts, "-1"]), Err(Reason::BadItem));
        assert_eq!(
            parse(&["1", "2", "", "", ts, "-1"]),
            Err(Reason::MissingKind)
        );
        assert_eq!(
            parse(&["1", "2", "", "x", ts, "-1"]),
            Err(Reason::UnknownKind)
        );
        assert_eq!(
            parse(&["1", "2", "", "pv", ts, "-1"]),
            Err(Reason::BadPrice)
        );
    }

    #[test]
    fn every_rejection_reason_but_late_is_reachable() {
        let mut seen: Vec<Reason> = [
            parse(&GOOD[..1]),
            with(4, ""),
            with(4, "x"),
            with(4, "1"),
            with(0, ""),
            with(0, "x"),
            with(1, ""),
            with(1, "x"),
            with(3, ""),
            with(3, "x"),
            with(5, "x"),
        ]
        .into_iter()
        .map(|result| result.unwrap_err())
        .collect();
        seen.dedup();
        // `Late` belongs to the reader, which holds rows back by epoch.
        assert_eq!(seen, Reason::ALL[..11]);
    }

    #[test]
    fn non_utf8_bytes_are_rejected_with_the_field_reason() {
        let mut fields: Vec<&[u8]> = GOOD.iter().map(|field| field.as_bytes()).collect();
        fields[5] = b"\xff1.0";
        assert_eq!(
            binding().parse(&ByteRecord::from(fields.clone())),
            Err(Reason::BadPrice)
        );
        fields[3] = b"p\xffv";
        assert_eq!(
            binding().parse(&ByteRecord::from(fields.clone())),
            Err(Reason::UnknownKind)
        );
        fields[0] = b"\xc3\xa9";
        assert_eq!(
            binding().parse(&ByteRecord::from(fields)),
            Err(Reason::BadUser)
        );
    }

    #[test]
    fn pattern_times_with_a_zone_reject_out_of_range_after_the_shift() {
        let positions = Positions {
            ts: 0,
            user: 1,
            item: 2,
            kind: 3,
            category: None,
            price: None,
        };
        let zone = parse_zone("+08:00").unwrap();
        let time = TimeFormat::compile("%Y-%m-%d %H:%M:%S", zone).unwrap();
        let kinds = vec![(b"view".as_slice().into(), Kind::View)];
        let binding = Binding::new(4, positions, time, kinds);
        let read = |ts: &str| binding.parse(&record(&[ts, "1", "2", "view"]));
        // 2000-01-01 07:59:59 in Beijing is still 1999 in UTC.
        assert_eq!(read("2000-01-01 07:59:59"), Err(Reason::TsOutOfRange));
        assert_eq!(read("2000-01-01 08:00:00").unwrap().event.ts, MIN_TS);
        assert_eq!(read("2000-13-01 08:00:00"), Err(Reason::BadTs));
    }

    #[test]
    fn parse_id_takes_digits_with_an_optional_zero_fraction() {
        assert_eq!(parse_id(b"257597"), Some(257_597));
        assert_eq!(parse_id(b"257597.0"), Some(257_597));
        assert_eq!(parse_id(b"257597.000"), Some(257_597));
        assert_eq!(parse_id(b"14418.0"), Some(14_418));
        assert_eq!(parse_id(b"007"), Some(7));
        assert_eq!(parse_id(b" 42 "), Some(42));
        assert_eq!(parse_id(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(
            parse_id(b"2053013552326770905"),
            Some(2_053_013_552_326_770_905)
        );
    }

    #[test]
    fn parse_id_refuses_anything_else() {
        let refused: [&[u8]; 16] = [
            b"",
            b" ",
            b"257597.5",
            b"257597.01",
            b"2.5e5",
            b"-1",
            b"+1",
            b"0x1F",
            b"1_000",
            b"12.",
            b".0",
            b"1.0.0",
            b"1 2",
            b"18446744073709551616",
            b"\xff",
            b"\xef\xbb\xbf1",
        ];
        for field in refused {
            assert_eq!(
                parse_id(field),
                None,
                "{:?}",
                String::from_utf8_lossy(field)
            );
        }
    }

    #[test]
    fn a_binding_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Binding>();
    }

    proptest! {
        #[test]
        fn parse_id_agrees_with_str_parse_on_digit_strings(digits in "[0-9]{1,24}") {
            prop_assert_eq!(parse_id(digits.as_bytes()), digits.parse::<u64>().ok());
            let with_zeros = format!("{digits}.00");
            prop_assert_eq!(parse_id(with_zeros.as_bytes()), digits.parse::<u64>().ok());
        }

        #[test]
        fn parse_id_agrees_with_str_parse_on_any_u64(id: u64) {
            prop_assert_eq!(parse_id(id.to_string().as_bytes()), Some(id));
        }

        #[test]
        fn parse_id_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..40)) {
            let _ = parse_id(&bytes);
        }

        #[test]
        fn binding_parse_never_panics_on_arbitrary_records(
            fields in vec(vec(any::<u8>(), 0..24), 0..9)
        ) {
            let _ = binding().parse(&ByteRecord::from(fields));
        }

        #[test]
        fn binding_parse_never_panics_on_near_valid_records(
            ts in "[0-9 .]{0,12}|1511544070",
            user in "[0-9.e+-]{0,6}",
            kind in "pv|buy|p|",
            price in "[0-9.eEinfINFaN-]{0,6}",
        ) {
            let fields = [user.as_str(), "1", "2", kind.as_str(), ts.as_str(), price.as_str()];
            let _ = parse(&fields);
        }
    }
}
