//! The canonical event every input format is mapped to, and the reasons a row
//! can be rejected on its way there.
//!
//! Everything downstream of cleaning sees only [`Event`]; the optional columns
//! (`category`, `price`) are validated by cleaning and then dropped, since no
//! aggregate of the reference task reads them.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01 UTC.
pub type Millis = i64;

/// Earliest accepted event time: 2000-01-01T00:00:00Z, in milliseconds.
pub const MIN_TS: Millis = 946_684_800_000;

/// First rejected event time: 2100-01-01T00:00:00Z, in milliseconds.
pub const MAX_TS: Millis = 4_102_444_800_000;

/// What a shopper did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 5] = [
        Kind::View,
        Kind::Cart,
        Kind::RemoveFromCart,
        Kind::Purchase,
        Kind::Favorite,
    ];

    /// The canonical name, as spec files and outputs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Cart => "cart",
            Kind::RemoveFromCart => "remove_from_cart",
            Kind::Purchase => "purchase",
            Kind::Favorite => "favorite",
        }
    }

    /// Parses a canonical name (the inverse of [`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One cleaned behaviour event: the record that flows through the dataflow.
///
/// Two events with equal fields are duplicates (reference task, section 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch, in `[MIN_TS, MAX_TS)`.
    pub ts: Millis,
    /// The shopper.
    pub user: u64,
    /// The item acted on.
    pub item: u64,
    /// What happened.
    pub kind: Kind,
}

/// A data row that passed every cleaning rule, with its optional columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The canonical event.
    pub event: Event,
    /// The item's category, where the format has one and the row fills it.
    pub category: Option<u64>,
    /// The price, where present: finite and non-negative.
    pub price: Option<f64>,
}

/// Why a data row was rejected. Each rejected row lands in the quarantine with
/// exactly one reason: the first rule it breaks, in declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// The row has more or fewer fields than the spec's columns.
    FieldCount,
    /// The time column is empty.
    MissingTs,
    /// The time column does not parse in the spec's time format.
    BadTs,
    /// The time is before 2000-01-01 or at or after 2100-01-01 UTC.
    TsOutOfRange,
    /// The user column is empty.
    MissingUser,
    /// The user column is not a non-negative integer that fits u64.
    BadUser,
    /// The item column is empty.
    MissingItem,
    /// The item column is not a non-negative integer that fits u64.
    BadItem,
    /// The kind column is empty.
    MissingKind,
    /// The kind column holds a value the spec does not map.
    UnknownKind,
    /// The price is present but not a finite, non-negative number.
    BadPrice,
    /// The row's epoch is older than the reader's lateness bound.
    Late,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 12] = [
        Reason::FieldCount,
        Reason::MissingTs,
        Reason::BadTs,
        Reason::TsOutOfRange,
        Reason::MissingUser,
        Reason::BadUser,
        Reason::MissingItem,
        Reason::BadItem,
        Reason::MissingKind,
        Reason::UnknownKind,
        Reason::BadPrice,
        Reason::Late,
    ];

    /// The short name written to `quarantine.csv` and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::FieldCount => "field_count",
            Reason::MissingTs => "missing_ts",
            Reason::BadTs => "bad_ts",
            Reason::TsOutOfRange => "ts_out_of_range",
            Reason::MissingUser => "missing_user",
            Reason::BadUser => "bad_user",
            Reason::MissingItem => "missing_item",
            Reason::BadItem => "bad_item",
            Reason::MissingKind => "missing_kind",
            Reason::UnknownKind => "unknown_kind",
            Reason::BadPrice => "bad_price",
            Reason::Late => "late",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("pv"), None);
    }

    #[test]
    fn time_bounds_are_the_documented_dates() {
        let start = chrono::DateTime::parse_from_rfc3339("2000-01-01T00:00:00Z").unwrap();
        let end = chrono::DateTime::parse_from_rfc3339("2100-01-01T00:00:00Z").unwrap();
        assert_eq!(start.timestamp_millis(), MIN_TS);
        assert_eq!(end.timestamp_millis(), MAX_TS);
    }
}
