//! Hand-built logs in the Taobao `UserBehavior.csv` format
//! (`user,item,category,behavior,unix seconds`, no header), for tests that
//! need exact control over each example's aggregates and label.

use std::path::{Path, PathBuf};

/// 2019-10-01T00:00:00Z in Unix seconds: the start of day 0.
pub const DAY0_S: i64 = 1_569_888_000;

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;

/// The epoch of day `day` with one-day buckets.
pub fn day_epoch(day: i64) -> u64 {
    ((DAY0_S + day * DAY_S) / DAY_S) as u64
}

/// A log under construction. Every event gets its own second within its day,
/// so that no two events are duplicates of each other.
#[derive(Clone, Debug, Default)]
pub struct TaobaoLog {
    rows: Vec<String>,
    seconds_used: std::collections::BTreeMap<i64, i64>,
}

impl TaobaoLog {
    /// An empty log.
    pub fn new() -> TaobaoLog {
        TaobaoLog::default()
    }

    /// Adds one event of `kind` (`pv`, `cart`, `buy`, `fav`) on day `day`.
    ///
    /// # Panics
    ///
    /// When a day holds more than 86,400 events.
    pub fn event(&mut self, day: i64, user: u64, item: u64, kind: &str) -> &mut TaobaoLog {
        let second = self.seconds_used.entry(day).or_insert(0);
        assert!(*second < DAY_S, "day {day} is full");
        let ts = DAY0_S + day * DAY_S + *second;
        *second += 1;
        self.rows.push(format!("{user},{item},1,{kind},{ts}"));
        self
    }

    /// A view, then a purchase, of `item` by `user` on day `day`.
    pub fn bought(&mut self, day: i64, user: u64, item: u64) -> &mut TaobaoLog {
        self.event(day, user, item, "pv")
            .event(day, user, item, "buy")
    }

    /// Adds a raw line as it is (for rows that must be rejected).
    pub fn raw(&mut self, line: &str) -> &mut TaobaoLog {
        self.rows.push(line.to_string());
        self
    }

    /// Number of rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Writes the log to `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let mut text = self.rows.join("\n");
        text.push('\n');
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path
    }
}
