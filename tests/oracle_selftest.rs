//! Tests of the test oracle itself, so that its verdicts on the product can be
//! trusted.
//!
//! Three families: tiny hand-computed logs that pin down every cleaning rule,
//! duplicates, bots, the one-epoch feature lag, labels and the scaler; seeded
//! generated logs checked against a brute-force recomputation and against
//! their own splits; and the real sample logs of `shared/data/real`, whose
//! documented facts (PROVENANCE.md) the oracle must reproduce.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::r#gen::{
    BotOpts, GenOpts, Order, Rng, civil_from_days, format_rees46_time, generate, split_epochs,
    split_rows, write_log, write_parts,
};
use common::oracle::{
    DAY_MS, EXAMPLES_HEADER, Example, Format, HOUR_MS, Kind, MAX_TS_MS, MIN_TS_MS, OracleConfig,
    OracleEvent, OracleResult, REASONS, Stats, days_from_civil, epoch_of, feature_value, parse_id,
    parse_rees46_time, parse_row, physical_lines, render_examples_csv, run_oracle, split_fields,
};
use common::outputs::{assert_matches, write_expected};

/// 2015-06-01T00:00:00Z in ms, the start of epoch 16587 with one-day buckets.
const JUNE_1: i64 = 1_433_116_800_000;

/// Runs the oracle over one log text written to a temporary file.
fn run_text(format: Format, text: &str, bucket_ms: i64, bot_threshold: u64) -> OracleResult {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = write_log(dir.path(), "log.csv", text);
    run_oracle(
        &[path],
        &OracleConfig {
            format,
            bucket_ms,
            bot_threshold,
        },
    )
}

fn reason(format: Format, row: &str) -> Result<OracleEvent, &'static str> {
    parse_row(format, row).map_err(|rejection| rejection.reason)
}

fn retailrocket(rows: &[&str]) -> String {
    let mut text = String::from("timestamp,visitorid,event,itemid,transactionid\n");
    rows.iter()
        .for_each(|row| text.push_str(&format!("{row}\n")));
    text
}

fn rees46_row(time: &str, kind: &str, item: &str, price: &str, user: &str) -> String {
    format!(
        "{time},{kind},{item},2053013552326770905,electronics.smartphone,apple,{price},{user},s"
    )
}

// ---------------------------------------------------------------- parsing

#[test]
fn ids_accept_digits_with_an_optional_all_zero_fraction_only() {
    assert_eq!(parse_id("257597"), Some(257_597));
    assert_eq!(parse_id("257597.0"), Some(257_597));
    assert_eq!(parse_id("257597.000"), Some(257_597));
    assert_eq!(parse_id("007"), Some(7));
    assert_eq!(parse_id("0"), Some(0));
    assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_id("14418.0"), Some(14_418));
    let refused = [
        "",
        "2.5e5",
        "-1",
        "+1",
        "12.",
        "1.5",
        "1.01",
        ".0",
        ".",
        "1.0.0",
        "18446744073709551616",
        "0x10",
        "1 2",
        "١٢",
        "1e3",
        "inf",
        "NaN",
    ];
    for text in refused {
        assert_eq!(parse_id(text), None, "{text:?} must be refused");
    }
}

#[test]
fn civil_dates_match_the_event_module_bounds_and_known_timestamps() {
    assert_eq!(days_from_civil(2000, 1, 1) * DAY_MS, MIN_TS_MS);
    assert_eq!(days_from_civil(2100, 1, 1) * DAY_MS, MAX_TS_MS);
    assert_eq!(MIN_TS_MS, deltarec::event::MIN_TS);
    assert_eq!(MAX_TS_MS, deltarec::event::MAX_TS);
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2015, 6, 1) * DAY_MS, JUNE_1);
    // Taobao's first row: 1511544070 is 2017-11-24 17:21:10 UTC.
    assert_eq!(
        parse_rees46_time("2017-11-24 17:21:10 UTC"),
        Some(1_511_544_070_000)
    );
    assert_eq!(
        parse_rees46_time("2019-10-01 00:00:04 UTC"),
        Some(1_569_888_004_000)
    );
    for days in [-1, 0, 59, 365, 10_956, 11_016, 18_000, 47_482, 100_000] {
        let (year, month, day) = civil_from_days(days);
        assert_eq!(
            days_from_civil(year, month, day),
            days,
            "{year}-{month}-{day}"
        );
    }
}

#[test]
fn rees46_times_parse_only_in_the_exact_utc_layout() {
    assert_eq!(
        parse_rees46_time("2020-02-29 23:59:59 UTC"),
        Some(1_583_020_799_000)
    );
    let refused = [
        "2019-02-29 00:00:00 UTC",
        "2019-13-01 00:00:00 UTC",
        "2019-04-31 00:00:00 UTC",
        "2019-10-00 00:00:00 UTC",
        "2019-10-01 24:00:00 UTC",
        "2019-10-01 00:60:00 UTC",
        "2019-10-01 00:00:60 UTC",
        "2019-10-01 00:00:00",
        "2019-10-01T00:00:00 UTC",
        "2019-10-01T00:00:00Z",
        "2019-10-01 00:00:00.5 UTC",
        "2019-10-01 00:00:00 GMT",
        "2019-1-01 00:00:00 UTC",
        "1569888004",
        "",
    ];
    for text in refused {
        assert_eq!(parse_rees46_time(text), None, "{text:?} must be refused");
    }
}

#[test]
fn rees46_time_formatting_round_trips() {
    let mut rng = Rng::new(7);
    for _ in 0..1000 {
        let seconds = MIN_TS_MS / 1000 + rng.below(((MAX_TS_MS - MIN_TS_MS) / 1000) as u64) as i64;
        let text = format_rees46_time(seconds * 1000);
        assert_eq!(parse_rees46_time(&text), Some(seconds * 1000), "{text}");
    }
}

#[test]
fn fields_split_on_commas_with_rfc4180_quotes_and_are_trimmed() {
    assert_eq!(split_fields("a,b,,c", ','), ["a", "b", "", "c"]);
    assert_eq!(split_fields(" a ,\tb\t, c", ','), ["a", "b", "c"]);
    assert_eq!(
        split_fields(r#""a,b","say ""hi""","""""#, ','),
        ["a,b", r#"say "hi""#, "\""]
    );
    assert_eq!(split_fields(r#""",x"#, ','), ["", "x"]);
    assert_eq!(split_fields("", ','), [""]);
    assert_eq!(split_fields(",", ','), ["", ""]);
    // A quote that does not open the field is an ordinary character.
    assert_eq!(split_fields(r#"a"b,c"#, ','), [r#"a"b"#, "c"]);
}

#[test]
fn physical_lines_drop_bom_and_cr_and_keep_numbering() {
    let lines = physical_lines("\u{feff}h\r\na\r\n\r\nb");
    assert_eq!(lines, [(1, "h"), (2, "a"), (3, ""), (4, "b")]);
    assert_eq!(physical_lines("a\n"), [(1, "a")]);
    assert_eq!(physical_lines("a\n\n"), [(1, "a"), (2, "")]);
    assert_eq!(physical_lines(""), []);
}

// ------------------------------------------------------------- rejection

/// A row's expected outcome: (ts, user, item, kind) or the rejection reason.
type Expected = Result<(i64, u64, u64, Kind), &'static str>;

#[test]
fn retailrocket_rows_are_rejected_for_the_first_rule_they_break() {
    let cases: &[(&str, Expected)] = &[
        ("1433116800000,1,view,10,", Ok((JUNE_1, 1, 10, Kind::View))),
        (
            "1433116800000,1,addtocart,10,",
            Ok((JUNE_1, 1, 10, Kind::Cart)),
        ),
        (
            "1433116800000,1,transaction,10,14418.0",
            Ok((JUNE_1, 1, 10, Kind::Purchase)),
        ),
        (
            "1433116800000.0,257597.0,view,10.00,",
            Ok((JUNE_1, 257_597, 10, Kind::View)),
        ),
        (
            " 1433116800000 , 1 , view ,10 , ",
            Ok((JUNE_1, 1, 10, Kind::View)),
        ),
        (
            r#""1433116800000","1","view","10","""#,
            Ok((JUNE_1, 1, 10, Kind::View)),
        ),
        (
            r#"1433116800000,1,view,10,"a ""b"", c""#,
            Ok((JUNE_1, 1, 10, Kind::View)),
        ),
        (
            "946684800000,18446744073709551615,view,0,",
            Ok((MIN_TS_MS, u64::MAX, 0, Kind::View)),
        ),
        (
            "4102444799999,1,view,10,",
            Ok((MAX_TS_MS - 1, 1, 10, Kind::View)),
        ),
        ("1433116800000,1,view,10", Err("field_count")),
        ("1433116800000,1,view,10,,", Err("field_count")),
        ("garbage", Err("field_count")),
        ("", Err("field_count")),
        (",1,view,10,", Err("missing_ts")),
        ("  ,x,click,,", Err("missing_ts")),
        ("abc,1,view,10,", Err("bad_ts")),
        ("1.5e12,1,view,10,", Err("bad_ts")),
        ("-1433116800000,1,view,10,", Err("bad_ts")),
        ("+1433116800000,1,view,10,", Err("bad_ts")),
        ("1433116800000.5,,view,10,", Err("bad_ts")),
        ("946684799999,1,view,10,", Err("ts_out_of_range")),
        ("4102444800000,1,view,10,", Err("ts_out_of_range")),
        ("0,,,,", Err("ts_out_of_range")),
        ("9223372036854775808,1,view,10,", Err("ts_out_of_range")),
        ("1433116800000,,view,10,", Err("missing_user")),
        ("1433116800000,,click,x,", Err("missing_user")),
        ("1433116800000,-1,view,10,", Err("bad_user")),
        ("1433116800000,+1,view,10,", Err("bad_user")),
        ("1433116800000,2.5e5,view,10,", Err("bad_user")),
        ("1433116800000,12.,view,10,", Err("bad_user")),
        ("1433116800000,1.5,view,10,", Err("bad_user")),
        (
            "1433116800000,18446744073709551616,view,10,",
            Err("bad_user"),
        ),
        (r#"1433116800000,"1,2",view,10,"#, Err("bad_user")),
        ("1433116800000,1,view,,", Err("missing_item")),
        ("1433116800000,1,,,", Err("missing_item")),
        ("1433116800000,1,view,x,", Err("bad_item")),
        ("1433116800000,1,click,1e3,", Err("bad_item")),
        ("1433116800000,1,,10,", Err("missing_kind")),
        ("1433116800000,1,click,10,", Err("unknown_kind")),
        ("1433116800000,1,View,10,", Err("unknown_kind")),
        ("1433116800000,1,purchase,10,", Err("unknown_kind")),
        ("1433116800000,1,cart,10,", Err("unknown_kind")),
    ];
    for (row, expected) in cases {
        let expected = expected.map(|(ts, user, item, kind)| OracleEvent {
            ts,
            user,
            item,
            kind,
        });
        assert_eq!(reason(Format::RetailRocket, row), expected, "row {row:?}");
    }
}

#[test]
fn rees46_rows_check_time_layout_kinds_and_price() {
    let t = "2019-10-01 00:00:04 UTC";
    let ts = 1_569_888_004_000;
    let ok = |item, user, kind| {
        Ok(OracleEvent {
            ts,
            user,
            item,
            kind,
        })
    };
    assert_eq!(
        reason(Format::Rees46, &rees46_row(t, "view", "5", "35.79", "7")),
        ok(5, 7, Kind::View)
    );
    assert_eq!(
        reason(Format::Rees46, &rees46_row(t, "cart", "5", "", "7")),
        ok(5, 7, Kind::Cart)
    );
    let remove = rees46_row(t, "remove_from_cart", "5", "0.00", "7");
    assert_eq!(
        reason(Format::Rees46, &remove),
        ok(5, 7, Kind::RemoveFromCart)
    );
    let purchase = rees46_row(t, "purchase", "5", "33.2", "7");
    assert_eq!(reason(Format::Rees46, &purchase), ok(5, 7, Kind::Purchase));
    // Category is never a reason, whatever it holds.
    let odd_category = format!("{t},view,5,not-a-number,,,1.00,7,s");
    assert_eq!(reason(Format::Rees46, &odd_category), ok(5, 7, Kind::View));
    let cases = [
        (rees46_row(t, "view", "5", "-4.0", "7"), "bad_price"),
        (rees46_row(t, "view", "5", "NaN", "7"), "bad_price"),
        (rees46_row(t, "view", "5", "inf", "7"), "bad_price"),
        (rees46_row(t, "view", "5", "abc", "7"), "bad_price"),
        (rees46_row(t, "view", "5", r#""1,5""#, "7"), "bad_price"),
        (rees46_row(t, "pv", "5", "-4.0", "7"), "unknown_kind"),
        (rees46_row(t, "view", "5", "-4.0", "x"), "bad_user"),
        (
            rees46_row("2019-02-29 00:00:00 UTC", "view", "5", "1", "7"),
            "bad_ts",
        ),
        (
            rees46_row("2019-10-01 00:00:04", "view", "5", "1", "7"),
            "bad_ts",
        ),
        (
            rees46_row("1999-12-31 23:59:59 UTC", "view", "5", "1", "7"),
            "ts_out_of_range",
        ),
        (
            rees46_row("2100-01-01 00:00:00 UTC", "view", "5", "1", "7"),
            "ts_out_of_range",
        ),
        // The truncated last row of the 17k sample: 8 fields.
        (
            "2019-10-01 02:50:00 UTC,view,1005115,2053013555631882655,,apple,25.71,52040330".into(),
            "field_count",
        ),
    ];
    for (row, expected) in cases {
        assert_eq!(reason(Format::Rees46, &row), Err(expected), "row {row:?}");
    }
    let edge = rees46_row("2099-12-31 23:59:59 UTC", "view", "5", "1", "7");
    assert!(reason(Format::Rees46, &edge).is_ok());
}

#[test]
fn taobao_rows_take_seconds_and_map_pv_buy_fav() {
    let ok = |kind| {
        Ok(OracleEvent {
            ts: 1_511_544_070_000,
            user: 1,
            item: 2_268_318,
            kind,
        })
    };
    assert_eq!(
        reason(Format::Taobao, "1,2268318,2520377,pv,1511544070"),
        ok(Kind::View)
    );
    assert_eq!(
        reason(Format::Taobao, "1,2268318,2520377,cart,1511544070"),
        ok(Kind::Cart)
    );
    assert_eq!(
        reason(Format::Taobao, "1,2268318,2520377,buy,1511544070.0"),
        ok(Kind::Purchase)
    );
    assert_eq!(
        reason(Format::Taobao, "1,2268318,x,fav,1511544070"),
        ok(Kind::Favorite)
    );
    let cases = [
        ("100370,1968385,1875258,pv", "field_count"),
        ("1,2,3,pv,", "missing_ts"),
        ("1,2,3,pv,1511544070.5", "bad_ts"),
        ("1,2,3,pv,1.5e9", "bad_ts"),
        ("1,2,3,pv,946684799", "ts_out_of_range"),
        ("1,2,3,pv,4102444800", "ts_out_of_range"),
        ("1,2,3,pv,9223372036854775807", "ts_out_of_range"),
        ("1,2,3,view,946684800", "unknown_kind"),
        ("1,2,3,remove_from_cart,946684800", "unknown_kind"),
        (",,3,,946684800", "missing_user"),
        ("1,,3,,946684800", "missing_item"),
        ("1,2,3,,946684800", "missing_kind"),
    ];
    for (row, expected) in cases {
        assert_eq!(reason(Format::Taobao, row), Err(expected), "row {row:?}");
    }
}

#[test]
fn quarantine_keeps_file_order_and_physical_line_numbers() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let header = Format::Rees46.header().expect("rees46 has a header");
    let good = rees46_row("2019-10-01 00:00:04 UTC", "view", "5", "1.00", "7");
    let bad = rees46_row("2019-10-01 00:00:04 UTC", "view", "5", "-1", "7");
    // BOM, CRLF, an empty line and no final newline in the first file.
    let first = format!("\u{feff}{header}\r\n{good}\r\n\r\n{bad}\r\nshort,row");
    let second = format!("{header}\n{bad}\n\n\n{good}\n");
    let paths = vec![
        write_log(dir.path(), "b.csv", &first),
        write_log(dir.path(), "a.csv", &second),
    ];
    let result = run_oracle(&paths, &OracleConfig::new(Format::Rees46, HOUR_MS));
    let name = |index: usize| paths[index].display().to_string();
    let expected = vec![
        (name(0), 4, "bad_price".to_string()),
        (name(0), 5, "field_count".to_string()),
        (name(1), 2, "bad_price".to_string()),
    ];
    assert_eq!(result.quarantine, expected);
    assert_eq!(result.counters.rows, 5);
    assert_eq!((result.counters.accepted, result.counters.rejected), (2, 3));
    assert_eq!(result.counters.duplicates, 1);
    assert_eq!(result.counters.clean, 1);
}

#[test]
fn rows_rejected_after_their_time_parsed_count_in_their_epoch() {
    let text = retailrocket(&[
        "1433116800000,1,view,10,",
        "1433116800001,x,view,10,",
        "1433203200000,1,click,10,",
        "abc,1,view,10,",
        "0,1,view,10,",
        "1433203200000,1,view",
    ]);
    let result = run_text(Format::RetailRocket, &text, DAY_MS, 1000);
    let day = JUNE_1 / DAY_MS;
    let epochs: Vec<_> = result
        .per_epoch
        .iter()
        .map(|(e, c)| (*e, c.rows, c.rejected))
        .collect();
    assert_eq!(epochs, [(day, 2, 1), (day + 1, 1, 1)]);
    assert_eq!((result.counters.rows, result.counters.rejected), (6, 5));
    let by_reason: Vec<_> = result
        .counters
        .rejected_by_reason
        .iter()
        .map(|(r, n)| (r.as_str(), *n))
        .collect();
    assert_eq!(
        by_reason,
        [
            ("bad_ts", 1),
            ("bad_user", 1),
            ("field_count", 1),
            ("ts_out_of_range", 1),
            ("unknown_kind", 1)
        ]
    );
    assert_eq!(result.counters.epochs, 2);
}

// --------------------------------------------------- duplicates and bots

#[test]
fn duplicates_count_once_whatever_their_other_columns() {
    let t = "2019-10-01 00:00:04 UTC";
    let header = Format::Rees46.header().expect("rees46 has a header");
    let rows = [
        rees46_row(t, "view", "5", "1.00", "7"),
        rees46_row(t, "view", "5", "1.00", "7"),
        rees46_row(t, "view", "5", "2.00", "7"),
        rees46_row(t, "view", "5.0", "", "7.00"),
        format!("{t},view,5,1,other,brand,9.99,7,another-session"),
        rees46_row(t, "cart", "5", "1.00", "7"),
        rees46_row("2019-10-01 00:00:05 UTC", "view", "5", "1.00", "7"),
    ];
    let text = format!("{header}\n{}\n", rows.join("\n"));
    let result = run_text(Format::Rees46, &text, HOUR_MS, 1000);
    assert_eq!(result.counters.accepted, 7);
    assert_eq!(result.counters.duplicates, 4);
    assert_eq!(result.counters.clean, 3);
    assert_eq!(result.pairs[&(7, 5)], [2, 1]);
    let epoch = 1_569_888_004_000 / HOUR_MS;
    assert_eq!(result.per_epoch[&epoch].duplicates, 4);
}

/// Taobao rows for user `user` in hour `hour` after 2017-11-26T00:00Z:
/// `(second, item, behaviour)`.
fn taobao_rows(user: u64, hour: i64, events: &[(i64, u64, &str)]) -> Vec<String> {
    let base = days_from_civil(2017, 11, 26) * 86_400 + hour * 3600;
    events
        .iter()
        .map(|(second, item, kind)| format!("{user},{item},99,{kind},{}", base + second))
        .collect()
}

#[test]
fn a_bot_loses_only_the_epochs_where_it_exceeds_the_threshold() {
    let mut rows = Vec::new();
    // Hour 0: user 7 has three distinct events (plus a duplicate): a bot at 2.
    rows.extend(taobao_rows(
        7,
        0,
        &[(1, 1, "pv"), (2, 1, "cart"), (3, 2, "pv"), (3, 2, "pv")],
    ));
    rows.extend(taobao_rows(8, 0, &[(5, 1, "pv")]));
    // Hour 1: exactly two distinct events, four rows: not a bot.
    rows.extend(taobao_rows(
        7,
        1,
        &[(1, 1, "pv"), (1, 1, "pv"), (2, 1, "buy"), (2, 1, "buy")],
    ));
    let text = rows.join("\n");

    let result = run_text(Format::Taobao, &text, HOUR_MS, 2);
    let hour0 = days_from_civil(2017, 11, 26) * 24;
    assert_eq!(result.counters.duplicates, 3);
    assert_eq!(result.counters.bot_excluded, 3);
    assert_eq!(result.counters.clean, 3);
    assert_eq!(result.per_epoch[&hour0].bot_excluded, 3);
    assert_eq!(result.per_epoch[&(hour0 + 1)].bot_excluded, 0);
    // The bot's hour-0 events feed nothing: in hour 1 user 7 starts cold,
    // while item 1 has user 8's view.
    let example = result
        .examples
        .iter()
        .find(|e| e.user == 7)
        .expect("user 7 has an example");
    assert_eq!(example.epoch, hour0 + 1);
    assert_eq!(example.raw, [0, 0, 0, 0, 1, 0, 0, 1, 0, 0]);
    assert!(example.label);
    assert_eq!(result.users[&7], [1, 0, 1, 1]);
    assert_eq!(result.items[&1], [2, 0, 1, 2]);
    assert!(!result.items.contains_key(&2));

    // A threshold of 0 turns the rule off.
    let result = run_text(Format::Taobao, &text, HOUR_MS, 0);
    assert_eq!(result.counters.bot_excluded, 0);
    assert_eq!(result.counters.clean, 6);
    // And a threshold of 3 keeps hour 0 too (more than, not at least).
    let result = run_text(Format::Taobao, &text, HOUR_MS, 3);
    assert_eq!(result.counters.bot_excluded, 0);
}

// ------------------------------------------- aggregates, examples, scaler

/// Two days: user 1 views and carts item 10, user 2 views it; next day user 1
/// views and buys it, user 2 views item 11 and user 3 (new) views item 10.
fn two_day_log() -> String {
    retailrocket(&[
        "1433203201000,1,transaction,10,5.0",
        "1433116800000,1,view,10,",
        "1433203203000,3,view,10,",
        "1433116801000,1,addtocart,10,",
        "1433116802000,2,view,10,",
        "1433203200000,1,view,10,",
        "1433203202000,2,view,11,",
    ])
}

#[test]
fn examples_see_only_earlier_epochs_and_label_same_epoch_purchases() {
    let result = run_text(Format::RetailRocket, &two_day_log(), DAY_MS, 1000);
    let (day0, day1) = (JUNE_1 / DAY_MS, JUNE_1 / DAY_MS + 1);
    let example = |epoch, user, item, label, raw| Example {
        epoch,
        user,
        item,
        label,
        raw,
    };
    let expected = vec![
        example(day0, 1, 10, false, [0; 10]),
        example(day0, 2, 10, false, [0; 10]),
        example(day1, 1, 10, true, [1, 1, 0, 1, 2, 1, 0, 2, 1, 1]),
        example(day1, 2, 11, false, [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        example(day1, 3, 10, false, [0, 0, 0, 0, 2, 1, 0, 2, 0, 0]),
    ];
    assert_eq!(result.examples, expected);
    assert_eq!(
        (result.counters.examples, result.counters.positives),
        (5, 1)
    );
    let per_day: Vec<_> = result
        .per_epoch
        .values()
        .map(|c| (c.clean, c.examples, c.positives))
        .collect();
    assert_eq!(per_day, [(3, 2, 0), (4, 3, 1)]);
}

#[test]
fn aggregates_at_the_end_count_kinds_and_distinct_partners() {
    let result = run_text(Format::RetailRocket, &two_day_log(), DAY_MS, 1000);
    let users: Vec<_> = result.users.into_iter().collect();
    assert_eq!(
        users,
        [(1, [2, 1, 1, 1]), (2, [2, 0, 0, 2]), (3, [1, 0, 0, 1])]
    );
    let items: Vec<_> = result.items.into_iter().collect();
    assert_eq!(items, [(10, [4, 1, 1, 3]), (11, [1, 0, 0, 1])]);
    let pairs: Vec<_> = result.pairs.into_iter().collect();
    assert_eq!(
        pairs,
        [
            ((1, 10), [2, 1]),
            ((2, 10), [1, 0]),
            ((2, 11), [1, 0]),
            ((3, 10), [1, 0])
        ]
    );
}

#[test]
fn remove_from_cart_and_favorite_count_only_towards_distinct_partners() {
    let mut rows = taobao_rows(1, 0, &[(1, 5, "fav")]);
    rows.extend(taobao_rows(1, 1, &[(1, 5, "pv")]));
    let result = run_text(Format::Taobao, &rows.join("\n"), HOUR_MS, 1000);
    assert_eq!(result.examples[1].raw, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]);
    assert_eq!(result.pairs[&(1, 5)], [1, 0]);
}

#[test]
fn example_rows_render_as_the_product_writes_them() {
    let result = run_text(Format::RetailRocket, &two_day_log(), DAY_MS, 1000);
    let text = render_examples_csv(&result.examples);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], EXAMPLES_HEADER);
    assert_eq!(lines[1], "16587,1,10,0,0,0,0,0,0,0,0,0,0,0");
    // NB: ln_1p(2) is 1.0986122886681096, one digit off ln(3) = 1.0986122886681098.
    let (ln2, ln3) = ("0.6931471805599453", "1.0986122886681096");
    assert_eq!(
        lines[3],
        format!("16588,1,10,1,{ln2},{ln2},0,{ln2},{ln3},{ln2},0,{ln3},{ln2},{ln2}")
    );
    assert!(text.ends_with('\n'));
    assert_eq!(feature_value(0), 0.0);
    assert_eq!(feature_value(1), std::f64::consts::LN_2);
}

#[test]
fn scaler_matches_hand_computed_population_statistics() {
    let result = run_text(Format::RetailRocket, &two_day_log(), DAY_MS, 1000);
    let (ln2, ln3) = (1f64.ln_1p(), 2f64.ln_1p());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs().max(1.0);
    // u_views over the five examples: 0, 0, 1, 1, 0.
    let u_views = result.scaler[0];
    assert_eq!(u_views.count, 5);
    assert!(close(u_views.mean, 2.0 * ln2 / 5.0), "{u_views:?}");
    assert!(close(u_views.std, ln2 * 6f64.sqrt() / 5.0), "{u_views:?}");
    assert_eq!((u_views.min, u_views.max), (0.0, ln2));
    // i_views: 0, 0, 2, 0, 2.
    let i_views = result.scaler[4];
    assert!(close(i_views.mean, 2.0 * ln3 / 5.0), "{i_views:?}");
    assert!(close(i_views.std, ln3 * 6f64.sqrt() / 5.0), "{i_views:?}");
    assert_eq!(i_views.max, ln3);
    // i_purchases is 0 everywhere.
    assert_eq!(
        result.scaler[6],
        Stats {
            count: 5,
            ..Stats::default()
        }
    );
}

#[test]
fn two_pass_statistics_are_exact_on_simple_inputs() {
    let stats = Stats::two_pass(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        (stats.count, stats.mean, stats.min, stats.max),
        (4, 2.5, 1.0, 4.0)
    );
    assert_eq!(stats.std, 1.25f64.sqrt());
    assert_eq!(Stats::two_pass(&[]), Stats::default());
    let constant = Stats::two_pass(&[0.1; 1000]);
    assert!(
        constant.std < 1e-15 && (constant.mean - 0.1).abs() < 1e-16,
        "{constant:?}"
    );
}

// --------------------------------------------------------- generated logs

/// Per-example features recomputed from scratch: every clean event of an
/// earlier epoch, filtered and counted directly.
fn brute_force_features(result: &OracleResult, bucket_ms: i64, example: &Example) -> [u64; 10] {
    let history: Vec<&OracleEvent> = result
        .clean_events
        .iter()
        .filter(|event| epoch_of(event.ts, bucket_ms) < example.epoch)
        .collect();
    let count =
        |keep: &dyn Fn(&OracleEvent) -> bool| history.iter().filter(|e| keep(e)).count() as u64;
    let (user, item) = (example.user, example.item);
    let user_items: BTreeSet<u64> = history
        .iter()
        .filter(|e| e.user == user)
        .map(|e| e.item)
        .collect();
    let item_users: BTreeSet<u64> = history
        .iter()
        .filter(|e| e.item == item)
        .map(|e| e.user)
        .collect();
    [
        count(&|e| e.user == user && e.kind == Kind::View),
        count(&|e| e.user == user && e.kind == Kind::Cart),
        count(&|e| e.user == user && e.kind == Kind::Purchase),
        user_items.len() as u64,
        count(&|e| e.item == item && e.kind == Kind::View),
        count(&|e| e.item == item && e.kind == Kind::Cart),
        count(&|e| e.item == item && e.kind == Kind::Purchase),
        item_users.len() as u64,
        count(&|e| e.user == user && e.item == item && e.kind == Kind::View),
        count(&|e| e.user == user && e.item == item && e.kind == Kind::Cart),
    ]
}

fn rich_opts(format: Format) -> GenOpts {
    let mut opts = if format == Format::Rees46 {
        GenOpts::hours(5)
    } else {
        GenOpts::days(5)
    };
    opts.malformed = true;
    opts.bot = Some(BotOpts {
        user: 999_999_999_999,
        threshold: 60,
        epoch: 2,
    });
    opts
}

/// Whole-run invariants every result must satisfy.
fn assert_consistent(result: &OracleResult) {
    let c = &result.counters;
    assert_eq!(c.accepted + c.rejected, c.rows);
    assert_eq!(c.duplicates + c.bot_excluded + c.clean, c.accepted);
    assert_eq!(c.rejected_by_reason.values().sum::<u64>(), c.rejected);
    assert_eq!(result.quarantine.len() as u64, c.rejected);
    let sum = |field: fn(&common::oracle::EpochCounters) -> u64| -> u64 {
        result.per_epoch.values().map(field).sum()
    };
    assert_eq!(sum(|e| e.duplicates), c.duplicates);
    assert_eq!(sum(|e| e.bot_excluded), c.bot_excluded);
    assert_eq!(sum(|e| e.clean), c.clean);
    assert_eq!(sum(|e| e.examples), c.examples);
    assert_eq!(sum(|e| e.positives), c.positives);
    assert_eq!(sum(|e| e.rows) - sum(|e| e.rejected), c.accepted);
    assert_eq!(c.clean, result.clean_events.len() as u64);
    assert!(
        result
            .examples
            .windows(2)
            .all(|pair| (pair[0].epoch, pair[0].user, pair[0].item)
                < (pair[1].epoch, pair[1].user, pair[1].item))
    );
}

#[test]
fn generated_logs_exercise_every_rule_in_every_format() {
    for format in Format::ALL {
        let opts = rich_opts(format);
        let text = generate(11, format, &opts);
        let result = run_text(format, &text, opts.bucket_ms, 60);
        assert_consistent(&result);
        let c = &result.counters;
        let name = format.name();
        assert!((500..5000).contains(&c.rows), "{name}: {} rows", c.rows);

        // Every reason the format can produce shows up.
        for reason in REASONS {
            let expected = reason != "bad_price" || format == Format::Rees46;
            let found = c.rejected_by_reason.contains_key(reason);
            assert_eq!(found, expected, "{name}: reason {reason}");
        }

        // Exact and near duplicates, and the bot in its epoch only.
        assert!(c.duplicates >= 24, "{name}: {} duplicates", c.duplicates);
        let bot_epoch = epoch_of(opts.start_ms, opts.bucket_ms) + 2;
        let bot_epochs: Vec<i64> = result
            .per_epoch
            .iter()
            .filter(|(_, e)| e.bot_excluded > 0)
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(bot_epochs, [bot_epoch], "{name}");
        assert_eq!(c.bot_excluded, 61, "{name}");
        let bot_next = result
            .clean_events
            .iter()
            .filter(|e| e.user == 999_999_999_999)
            .count();
        assert_eq!(
            bot_next, 60,
            "{name}: the bot's events one epoch later stay"
        );

        // Cold start: some users and items first appear after the first epoch.
        let first_epoch = |key: fn(&OracleEvent) -> u64| {
            let mut first: BTreeMap<u64, i64> = BTreeMap::new();
            for event in &result.clean_events {
                let epoch = epoch_of(event.ts, opts.bucket_ms);
                first
                    .entry(key(event))
                    .and_modify(|e| *e = (*e).min(epoch))
                    .or_insert(epoch);
            }
            first
                .values()
                .filter(|&&epoch| epoch > epoch_of(opts.start_ms, opts.bucket_ms))
                .count()
        };
        assert!(first_epoch(|e| e.user) >= 5, "{name}: late users");
        assert!(first_epoch(|e| e.item) >= 5, "{name}: late items");

        // Labels of both kinds, and purchases with history.
        assert!(
            c.positives > 5 && c.positives < c.examples / 2,
            "{name}: {c:?}"
        );
        assert!(
            result.examples.iter().any(|e| e.label && e.raw[8] > 0),
            "{name}: repeat buyers"
        );
    }
}

#[test]
fn oracle_features_equal_a_brute_force_recomputation() {
    for format in Format::ALL {
        let opts = rich_opts(format);
        let text = generate(23, format, &opts);
        let result = run_text(format, &text, opts.bucket_ms, 60);
        for example in &result.examples {
            let expected = brute_force_features(&result, opts.bucket_ms, example);
            assert_eq!(example.raw, expected, "{}: {example:?}", format.name());
        }
        let history: BTreeSet<_> = result
            .clean_events
            .iter()
            .map(|e| (e.user, e.item))
            .collect();
        assert_eq!(
            result.pairs.keys().copied().collect::<BTreeSet<_>>(),
            history
        );
    }
}

#[test]
fn generation_is_deterministic_per_seed() {
    let opts = rich_opts(Format::Rees46);
    assert_eq!(
        generate(5, Format::Rees46, &opts),
        generate(5, Format::Rees46, &opts)
    );
    assert_ne!(
        generate(5, Format::Rees46, &opts),
        generate(6, Format::Rees46, &opts)
    );
}

#[test]
fn generated_rows_follow_the_requested_order() {
    let format = Format::RetailRocket;
    let epochs_in_order = |order: Order| -> Vec<i64> {
        let opts = GenOpts {
            order,
            quirks: false,
            ..GenOpts::days(6)
        };
        let text = generate(3, format, &opts);
        text.lines()
            .skip(1)
            .map(|line| epoch_of(parse_row(format, line).expect("no faults asked").ts, DAY_MS))
            .collect()
    };
    let sorted = epochs_in_order(Order::Time);
    assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]));
    let bounded = epochs_in_order(Order::Bounded(1));
    let mut latest = i64::MIN;
    for epoch in &bounded {
        latest = latest.max(*epoch);
        assert!(latest - epoch <= 1, "a row more than one epoch late");
    }
    assert!(
        bounded.windows(2).any(|pair| pair[0] > pair[1]),
        "no disorder at all"
    );
    let shuffled = epochs_in_order(Order::Shuffled);
    assert!(
        shuffled.windows(2).any(|pair| pair[0] > pair[1] + 2),
        "hardly shuffled"
    );
}

#[test]
fn real_file_quirks_in_generated_logs_are_tolerated() {
    let mut opts = GenOpts::hours(3);
    (opts.bom, opts.crlf, opts.final_newline) = (true, true, false);
    for format in Format::ALL {
        let text = generate(17, format, &opts);
        assert!(text.starts_with('\u{feff}') && text.contains("\r\n") && !text.ends_with('\n'));
        let result = run_text(format, &text, HOUR_MS, 1000);
        assert_eq!(
            result.counters.rejected,
            0,
            "{}: {:?}",
            format.name(),
            result.quarantine
        );
        assert!(result.counters.rows > 300);
    }
}

/// Compares everything but the quarantine's file names and line numbers.
fn assert_same_outcome(found: &OracleResult, expected: &OracleResult) {
    assert_eq!(found.examples, expected.examples);
    assert_eq!(found.users, expected.users);
    assert_eq!(found.items, expected.items);
    assert_eq!(found.pairs, expected.pairs);
    assert_eq!(found.counters, expected.counters);
    assert_eq!(found.per_epoch, expected.per_epoch);
    assert_eq!(found.scaler, expected.scaler);
    let reasons = |result: &OracleResult| -> Vec<String> {
        let mut reasons: Vec<String> = result.quarantine.iter().map(|q| q.2.clone()).collect();
        reasons.sort();
        reasons
    };
    assert_eq!(reasons(found), reasons(expected));
}

#[test]
fn splitting_a_log_into_files_changes_nothing_but_quarantine_positions() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for format in Format::ALL {
        let mut opts = rich_opts(format);
        opts.bom = true;
        let text = generate(29, format, &opts);
        let config = OracleConfig {
            format,
            bucket_ms: opts.bucket_ms,
            bot_threshold: 60,
        };
        let whole = run_oracle(&[write_log(dir.path(), "whole.csv", &text)], &config);

        let first = epoch_of(opts.start_ms, opts.bucket_ms);
        let by_epoch = split_epochs(&text, format, opts.bucket_ms, &[first + 1, first + 3]);
        assert_eq!(by_epoch.len(), 3);
        let paths: Vec<PathBuf> = write_parts(dir.path(), "epochs", &by_epoch);
        assert_same_outcome(&run_oracle(&paths, &config), &whole);

        let by_rows = split_rows(&text, format, &[100, 700]);
        let paths = write_parts(dir.path(), "rows", &by_rows);
        let split = run_oracle(&paths, &config);
        assert_same_outcome(&split, &whole);
        assert_eq!(
            split
                .quarantine
                .iter()
                .filter(|q| q.0.ends_with("rows-1.csv"))
                .count(),
            whole
                .quarantine
                .iter()
                .filter(|q| q.1 <= 100 + u64::from(format.header().is_some()))
                .count()
        );
    }
}

// -------------------------------------------------- comparing with outputs

fn written_expected(dir: &Path) -> OracleResult {
    let opts = rich_opts(Format::Taobao);
    let result = run_text(
        Format::Taobao,
        &generate(31, Format::Taobao, &opts),
        DAY_MS,
        60,
    );
    write_expected(dir, &result);
    result
}

#[test]
fn outputs_written_like_the_product_match_the_oracle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let result = written_expected(dir.path());
    assert_matches(dir.path(), &result);
}

#[test]
#[should_panic(expected = "examples.csv: first difference at line 3")]
fn a_changed_example_row_is_reported_with_its_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut result = written_expected(dir.path());
    result.examples[1].label = !result.examples[1].label;
    assert_matches(dir.path(), &result);
}

#[test]
#[should_panic(expected = "features/pairs.csv: first difference at key")]
fn a_changed_pair_aggregate_is_reported_with_its_key() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut result = written_expected(dir.path());
    let last = *result.pairs.keys().last().expect("pairs exist");
    result.pairs.get_mut(&last).expect("the key exists")[0] += 1;
    assert_matches(dir.path(), &result);
}

#[test]
#[should_panic(expected = "metrics.jsonl: first differing epoch")]
fn a_changed_epoch_counter_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut result = written_expected(dir.path());
    result
        .per_epoch
        .values_mut()
        .last()
        .expect("epochs exist")
        .duplicates += 1;
    assert_matches(dir.path(), &result);
}

#[test]
#[should_panic(expected = "scaler.json: p_carts.std")]
fn a_scaler_off_by_more_than_the_tolerance_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut result = written_expected(dir.path());
    result.scaler[9].std *= 1.0 + 1e-11;
    assert_matches(dir.path(), &result);
}

#[test]
#[should_panic(expected = "quarantine.csv (row index): first difference at key 0")]
fn a_changed_quarantine_line_is_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut result = written_expected(dir.path());
    result.quarantine[0].1 += 1;
    assert_matches(dir.path(), &result);
}

// ------------------------------------------------------------- real files

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/real");

/// Runs the oracle over a real sample, or prints why it is skipped.
fn real(relative: &str, format: Format, bucket_ms: i64) -> Option<OracleResult> {
    let path = Path::new(REAL).join(relative);
    if !path.exists() {
        println!("skipping: {} is absent", path.display());
        return None;
    }
    let result = run_oracle(&[path], &OracleConfig::new(format, bucket_ms));
    assert_consistent(&result);
    let c = &result.counters;
    println!(
        "{relative}: rows {}, rejected {} {:?}, duplicates {}, bot-excluded {}, clean {}, \
         epochs {}, examples {}, positives {}, users {}, items {}",
        c.rows,
        c.rejected,
        c.rejected_by_reason,
        c.duplicates,
        c.bot_excluded,
        c.clean,
        c.epochs,
        c.examples,
        c.positives,
        result.users.len(),
        result.items.len()
    );
    Some(result)
}

fn kind_counts(result: &OracleResult) -> [u64; 5] {
    let mut counts = [0; 5];
    for event in &result.clean_events {
        counts[event.kind as usize] += 1;
    }
    counts
}

#[test]
fn real_retailrocket_sample_has_one_exact_duplicate_and_no_rejects() {
    let file = "retailrocket/events_sample_1500visitors_sessionformer.csv";
    let Some(result) = real(file, Format::RetailRocket, DAY_MS) else {
        return;
    };
    let c = &result.counters;
    assert_eq!(
        (c.rows, c.rejected, c.duplicates, c.bot_excluded),
        (2771, 0, 1, 0)
    );
    assert_eq!(c.clean, 2770);
    assert_eq!(result.users.len(), 1500);
    assert_eq!(result.items.len(), 2127);
    // view 2,695, addtocart 62, transaction 14; the duplicate is an addtocart.
    assert_eq!(kind_counts(&result), [2695, 61, 0, 14, 0]);
}

#[test]
fn real_rees46_17k_head_rejects_only_its_truncated_last_line() {
    let file = "rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv";
    let Some(result) = real(file, Format::Rees46, HOUR_MS) else {
        return;
    };
    let c = &result.counters;
    assert_eq!((c.rows, c.rejected), (17_435, 1));
    assert_eq!(result.quarantine[0].1, 17_436);
    assert_eq!(result.quarantine[0].2, "field_count");
    // 5 exact duplicate rows, and one more differing only in user_session
    // (02:31:22, user 554907878, item 1004777).
    assert_eq!(c.duplicates, 6);
    assert_eq!(c.epochs, 3, "00:00 to 02:50 UTC");
    // view 17,056, cart 165, purchase 214, less the truncated view and the
    // duplicates (five views and a cart).
    assert_eq!(kind_counts(&result), [17_050, 164, 0, 214, 0]);
    assert_eq!(result.items.len(), 6493);
}

#[test]
fn real_rees46_5k_head_is_the_clean_prefix_of_the_17k_head() {
    let file = "rees46-multicategory/2019-Oct_head5k_pantiukhin.csv";
    let Some(small) = real(file, Format::Rees46, HOUR_MS) else {
        return;
    };
    assert_eq!((small.counters.rows, small.counters.rejected), (5019, 0));
    assert!(
        small.counters.duplicates >= 3,
        "at least the 3 exact duplicate rows"
    );
    let file = "rees46-multicategory/2019-Oct_head17k_ibrhmspl.csv";
    let Some(large) = real(file, Format::Rees46, HOUR_MS) else {
        return;
    };
    assert!(
        small
            .clean_events
            .iter()
            .all(|event| large.clean_events.binary_search(event).is_ok())
    );
}

#[test]
fn real_rees46_bom_example_parses_every_row() {
    let file = "rees46-multicategory/2019-Oct_bom-example_phamhoa2416.csv";
    let Some(result) = real(file, Format::Rees46, HOUR_MS) else {
        return;
    };
    assert_eq!((result.counters.rows, result.counters.rejected), (29, 0));
}

#[test]
fn real_taobao_user_sorted_head_rejects_its_truncated_last_line() {
    let file = "taobao-userbehavior/UserBehavior_head84k_usersorted_mydeep.csv";
    let Some(result) = real(file, Format::Taobao, DAY_MS) else {
        return;
    };
    let c = &result.counters;
    assert_eq!((c.rows, c.rejected), (84_476, 1));
    assert_eq!(result.quarantine[0].1, 84_476);
    assert_eq!(result.quarantine[0].2, "field_count");
    assert_eq!((c.duplicates, c.bot_excluded), (0, 0));
    assert_eq!((result.users.len(), result.items.len()), (815, 55_368));
    // pv 75,873 (one of them the truncated line), cart 4,497, fav 2,356, buy 1,750.
    assert_eq!(kind_counts(&result), [75_872, 4497, 0, 1750, 2356]);
    // The 35 times outside the official window (2017-11-25 to 12-03, UTC+8)
    // are real data and in range: accepted.
    let window = 1_511_539_200_000..1_512_316_800_000;
    let outside = result
        .clean_events
        .iter()
        .filter(|e| !window.contains(&e.ts))
        .count();
    assert_eq!(outside, 35);
}

#[test]
fn real_taobao_time_sorted_sample_parses_every_row() {
    let file = "taobao-userbehavior/UserBehavior_timesorted110k_atguigu.csv";
    let Some(result) = real(file, Format::Taobao, HOUR_MS) else {
        return;
    };
    let c = &result.counters;
    assert_eq!((c.rows, c.rejected), (110_300, 0));
    assert_eq!(c.epochs, 3, "01:00 to 03:10 UTC");
    assert_eq!((c.duplicates, c.bot_excluded), (0, 0));
    assert_eq!((result.users.len(), result.items.len()), (66_454, 84_793));
    // pv 98,361, cart 6,063, fav 3,383, buy 2,493.
    assert_eq!(kind_counts(&result), [98_361, 6063, 0, 2493, 3383]);
}
