//! A seeded generator of random event logs in the three real formats, and
//! helpers to split a log into several files.
//!
//! The logs are small (hundreds to a few thousand rows) but exercise every rule
//! of the reference task: users and items with skewed popularity, carts and
//! purchases mostly after views of the same pair, pairs that come back in later
//! epochs, exact duplicate rows and duplicates that differ only in columns that
//! do not decide duplicates, a bot that crosses the threshold in one epoch and
//! stays exactly at it in another, users and items that first appear late
//! (cold start), rows out of time order, and, on request, malformed rows of
//! every rejection reason and the formatting quirks of the real files.
//!
//! The same seed and options always give the same text: the generator uses its
//! own SplitMix64 stream and ordered collections only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::oracle::{DAY_MS, Format, HOUR_MS, Kind, days_from_civil, epoch_of, row_ts};

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast, seedable stream
/// whose output never changes with a dependency's version.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..bound`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below needs a positive bound");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A copy of a uniformly chosen element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, slice: &[T]) -> T {
        slice[self.below(slice.len() as u64) as usize]
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, slice: &mut [T]) {
        for index in (1..slice.len()).rev() {
            slice.swap(index, self.below(index as u64 + 1) as usize);
        }
    }
}

/// SplitMix64's output function, also used to derive stable per-key values.
fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A skewed rank in `0..first_epochs.len()` (low ranks popular) whose first
/// epoch is not after `epoch`; rank 0 is always allowed.
fn skewed(rng: &mut Rng, first_epochs: &[u32], epoch: u32) -> usize {
    for _ in 0..50 {
        let rank = (first_epochs.len() as f64 * rng.unit().powf(1.5)) as usize;
        if first_epochs[rank] <= epoch {
            return rank;
        }
    }
    0
}

/// In which order rows are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Non-decreasing time, ties in random order.
    Time,
    /// Grouped by user, time-ordered within a user (like the Taobao and
    /// RetailRocket samples).
    UserSorted,
    /// Random, but no row comes after a row more than this many epochs later
    /// than its own: a reader with at least this lateness rejects nothing late.
    Bounded(u32),
    /// Completely random.
    Shuffled,
}

/// A user who crosses the bot threshold in exactly one epoch.
#[derive(Clone, Copy, Debug)]
pub struct BotOpts {
    /// The bot's id; must not be one of the generated ordinary users (ordinary
    /// ids are below 10^9).
    pub user: u64,
    /// The threshold the run will use: the bot has `threshold + 1` distinct
    /// events in `epoch` and exactly `threshold` (plus duplicate rows) in a
    /// neighbouring epoch, so it is a bot in `epoch` only.
    pub threshold: u64,
    /// The epoch (counted from 0 at `GenOpts::start_ms`) where it is a bot.
    pub epoch: u32,
}

/// What to generate. [`GenOpts::days`] and [`GenOpts::hours`] give defaults.
#[derive(Clone, Debug)]
pub struct GenOpts {
    /// Start of the first epoch, ms since 1970 (default 2019-10-01T00:00Z).
    pub start_ms: i64,
    /// Epoch width in ms (one day or one hour with the constructors).
    pub bucket_ms: i64,
    /// Number of epochs the log spans.
    pub epochs: u32,
    /// Ordinary users (default 60).
    pub users: usize,
    /// Items (default 150).
    pub items: usize,
    /// Interaction chains (views, then maybe cart, purchase...) per epoch
    /// (default 60).
    pub chains_per_epoch: usize,
    /// Verbatim copies of random rows (default 12).
    pub exact_duplicates: usize,
    /// Rows repeating an event's (ts, user, item, kind) with other columns
    /// changed (default 12).
    pub near_duplicates: usize,
    /// The bot, if any (default none). Panics at generation when an ordinary
    /// user exceeds its threshold; raise the threshold then.
    pub bot: Option<BotOpts>,
    /// Whether a fifth of the users and items only appear from a later epoch
    /// (default true).
    pub cold_start: bool,
    /// Row order (default `Shuffled`).
    pub order: Order,
    /// Whether to add malformed rows of every rejection reason (default false).
    pub malformed: bool,
    /// Whether to add harmless quirks: ids written `123.0`, padded and quoted
    /// fields, quoted delimiters, extreme ids, empty lines (default true).
    pub quirks: bool,
    /// Start with a UTF-8 BOM (default false).
    pub bom: bool,
    /// End lines with CRLF (default false).
    pub crlf: bool,
    /// End the last line with a newline (default true).
    pub final_newline: bool,
}

impl GenOpts {
    /// Defaults over `days` one-day epochs.
    pub fn days(days: u32) -> GenOpts {
        GenOpts {
            start_ms: days_from_civil(2019, 10, 1) * DAY_MS,
            bucket_ms: DAY_MS,
            epochs: days,
            users: 60,
            items: 150,
            chains_per_epoch: 60,
            exact_duplicates: 12,
            near_duplicates: 12,
            bot: None,
            cold_start: true,
            order: Order::Shuffled,
            malformed: false,
            quirks: true,
            bom: false,
            crlf: false,
            final_newline: true,
        }
    }

    /// Defaults over `hours` one-hour epochs.
    pub fn hours(hours: u32) -> GenOpts {
        GenOpts {
            bucket_ms: HOUR_MS,
            ..GenOpts::days(hours)
        }
    }
}

/// One generated line with the keys that decide its position.
struct Row {
    ts: i64,
    user: u64,
    text: String,
}

/// Per-item columns of the formats that have them.
struct ItemInfo {
    category: u64,
    category_code: &'static str,
    brand: &'static str,
    cents: u64,
}

const CATEGORY_CODES: [&str; 5] = [
    "",
    "electronics.smartphone",
    "appliances.kitchen.mixer",
    "apparel.shoes",
    "computers",
];
const BRANDS: [&str; 6] = [
    "",
    "samsung",
    "apple",
    "o\"neill",
    "smith, jones & co",
    "xiaomi",
];

struct Generator<'a> {
    rng: Rng,
    seed: u64,
    format: Format,
    opts: &'a GenOpts,
    users: Vec<u64>,
    items: Vec<u64>,
    user_first_epoch: Vec<u32>,
    item_first_epoch: Vec<u32>,
    item_info: BTreeMap<u64, ItemInfo>,
    /// Ordinary valid events, in generation order, for duplicates and faults.
    events: Vec<(i64, u64, u64, Kind)>,
    rows: Vec<Row>,
}

/// Generates a log in `format`: header (if any), then rows, as one string.
///
/// # Panics
///
/// When the options are inconsistent (no epochs, no users or items, a bot
/// epoch outside the log) or an ordinary user exceeds the bot's threshold.
pub fn generate(seed: u64, format: Format, opts: &GenOpts) -> String {
    assert!(
        opts.epochs > 0 && opts.users > 0 && opts.items > 0,
        "empty GenOpts: {opts:?}"
    );
    assert!(
        opts.bucket_ms >= 1000 && opts.bucket_ms % 1000 == 0,
        "bucket must be whole seconds"
    );
    let mut generator = Generator::new(seed, format, opts);
    for epoch in 0..opts.epochs {
        for _ in 0..opts.chains_per_epoch {
            generator.chain(epoch);
        }
    }
    generator.check_ordinary_users_are_not_bots();
    if let Some(bot) = opts.bot {
        generator.bot(bot);
    }
    generator.duplicates();
    if opts.malformed {
        generator.malformed();
    }
    generator.render()
}

impl<'a> Generator<'a> {
    fn new(seed: u64, format: Format, opts: &'a GenOpts) -> Generator<'a> {
        let mut rng = Rng::new(seed);
        let ids = |count: usize, bound: u64, rng: &mut Rng| {
            let mut seen = BTreeSet::new();
            let mut ids = Vec::new();
            while ids.len() < count {
                let id = 1 + rng.below(bound - 1);
                if seen.insert(id) {
                    ids.push(id);
                }
            }
            ids
        };
        let mut users = ids(opts.users, 1_000_000_000, &mut rng);
        let mut items = ids(opts.items, 10_000_000, &mut rng);
        if opts.quirks {
            // Extreme but valid ids, on rarely chosen ranks.
            *users.last_mut().expect("at least one user") = u64::MAX;
            *items.last_mut().expect("at least one item") = 0;
        }
        let first_epochs = |count: usize, rng: &mut Rng| -> Vec<u32> {
            (0..count)
                .map(|rank| {
                    let late = opts.cold_start && opts.epochs > 1 && rank > 0 && rng.chance(0.2);
                    if late {
                        1 + rng.below(u64::from(opts.epochs) - 1) as u32
                    } else {
                        0
                    }
                })
                .collect()
        };
        let user_first_epoch = first_epochs(users.len(), &mut rng);
        let item_first_epoch = first_epochs(items.len(), &mut rng);
        let item_info = items
            .iter()
            .map(|&item| {
                let info = ItemInfo {
                    category: 2_053_013_552_326_770_905 + rng.below(100_000_000_000_000_000),
                    category_code: rng.pick(&CATEGORY_CODES),
                    brand: rng.pick(&BRANDS),
                    cents: rng.below(100_000),
                };
                (item, info)
            })
            .collect();
        Generator {
            rng,
            seed,
            format,
            opts,
            users,
            items,
            user_first_epoch,
            item_first_epoch,
            item_info,
            events: Vec::new(),
            rows: Vec::new(),
        }
    }

    /// Time resolution of the format's time column, in ms.
    fn resolution(&self) -> i64 {
        if self.format == Format::RetailRocket {
            1
        } else {
            1000
        }
    }

    /// A random time in `epoch`, at the format's resolution.
    fn time_in(&mut self, epoch: u32) -> i64 {
        let start = self.opts.start_ms + i64::from(epoch) * self.opts.bucket_ms;
        let offset = self.rng.below(self.opts.bucket_ms as u64) as i64;
        start + offset - offset % self.resolution()
    }

    /// One user's interest in one item: views, then maybe a cart and a purchase.
    fn chain(&mut self, epoch: u32) {
        let user = self.users[skewed(&mut self.rng, &self.user_first_epoch, epoch)];
        let item = self.items[skewed(&mut self.rng, &self.item_first_epoch, epoch)];

        // A third of the chains revisit a pair from an earlier epoch.
        let (user, item) = match self.events.len() {
            0 => (user, item),
            n if self.rng.chance(0.3) => {
                let (_, user, item, _) = self.events[self.rng.below(n as u64) as usize];
                (user, item)
            }
            _ => (user, item),
        };

        let mut kinds = Vec::new();
        let views = if self.rng.chance(0.08) {
            0
        } else {
            1 + self.rng.below(3)
        };
        kinds.extend((0..views).map(|_| Kind::View));
        if self.rng.chance(0.35) {
            kinds.push(Kind::Cart);
            if self.format == Format::Rees46 && self.rng.chance(0.15) {
                kinds.push(Kind::RemoveFromCart);
            } else if self.rng.chance(0.45) {
                kinds.push(Kind::Purchase);
            }
        } else if self.rng.chance(0.05) {
            kinds.push(Kind::Purchase);
        }
        if self.format == Format::Taobao && self.rng.chance(0.1) {
            kinds.push(Kind::Favorite);
        }

        // Later steps follow within half an hour, possibly in the next epoch,
        // but never past the end of the log.
        let end = self.opts.start_ms + i64::from(self.opts.epochs) * self.opts.bucket_ms;
        let mut ts = self.time_in(epoch);
        for kind in kinds {
            self.push_event(ts, user, item, kind);
            let step = 1 + self.rng.below(1800) as i64;
            let jitter = if self.resolution() == 1 {
                self.rng.below(1000) as i64
            } else {
                0
            };
            ts = (ts + step * 1000 + jitter).min(end - self.resolution());
        }
    }

    fn push_event(&mut self, ts: i64, user: u64, item: u64, kind: Kind) {
        let fields = self.fields(ts, user, item, kind, false);
        let text = self.join(&fields);
        self.rows.push(Row { ts, user, text });
        self.events.push((ts, user, item, kind));
    }

    /// The row's fields; `variant` changes every column that does not decide
    /// duplicates (price, session, category, transaction id, id spelling).
    fn fields(&mut self, ts: i64, user: u64, item: u64, kind: Kind, variant: bool) -> Vec<String> {
        let quirks = self.opts.quirks;
        let id = |value: u64, rng: &mut Rng| -> String {
            match (variant || quirks) && rng.chance(if variant { 0.5 } else { 0.04 }) {
                true if rng.chance(0.5) => format!("{value}.0"),
                true => format!("{value}.00"),
                false => value.to_string(),
            }
        };
        let kind_name = self
            .format
            .kind_name(kind)
            .expect("kinds come from the format")
            .into();
        let info = &self.item_info[&item];
        match self.format {
            Format::RetailRocket => {
                let transaction = match (kind, variant) {
                    (Kind::Purchase, _) => format!("{}.0", 1 + self.rng.below(20_000)),
                    (_, true) => "0".into(),
                    (_, false) => String::new(),
                };
                let user = id(user, &mut self.rng);
                let item = id(item, &mut self.rng);
                vec![ts.to_string(), user, kind_name, item, transaction]
            }
            Format::Rees46 => {
                let cents = if variant {
                    info.cents + 1 + self.rng.below(500)
                } else {
                    info.cents
                };
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                let epoch = epoch_of(ts, self.opts.bucket_ms) as u64;
                let session =
                    uuid(mix(self.seed ^ user ^ epoch.rotate_left(32)) ^ u64::from(variant));
                let category = if variant {
                    info.category + 1
                } else {
                    info.category
                };
                let (code, brand) = (info.category_code.to_string(), info.brand.to_string());
                let product = id(item, &mut self.rng);
                let user = id(user, &mut self.rng);
                let time = format_rees46_time(ts);
                vec![
                    time,
                    kind_name,
                    product,
                    category.to_string(),
                    code,
                    brand,
                    price,
                    user,
                    session,
                ]
            }
            Format::Taobao => {
                let category = (info.category % 5_000_000) + u64::from(variant);
                let seconds = if quirks && self.rng.chance(0.03) {
                    format!("{}.0", ts / 1000)
                } else {
                    (ts / 1000).to_string()
                };
                let user = id(user, &mut self.rng);
                let item = id(item, &mut self.rng);
                vec![user, item, category.to_string(), kind_name, seconds]
            }
        }
    }

    /// Joins fields with commas, quoting where needed and, with quirks, at
    /// random; with quirks some fields are padded with spaces.
    fn join(&mut self, fields: &[String]) -> String {
        let quirks = self.opts.quirks;
        let rendered: Vec<String> = fields
            .iter()
            .map(|field| {
                // NB: a quote opens a quoted field only as its first character,
                // so quoted fields are never padded.
                let needs_quotes = field.contains(',') || field.contains('"');
                if needs_quotes || (quirks && self.rng.chance(0.02)) {
                    format!("\"{}\"", field.replace('"', "\"\""))
                } else if quirks && self.rng.chance(0.02) {
                    format!("  {field} ")
                } else {
                    field.clone()
                }
            })
            .collect();
        rendered.join(",")
    }

    /// Fails when an ordinary user would count as a bot under the configured
    /// threshold, which would make the log's bot epochs unpredictable.
    fn check_ordinary_users_are_not_bots(&self) {
        let Some(bot) = self.opts.bot else { return };
        let distinct: BTreeSet<_> = self.events.iter().copied().collect();
        let mut per_user_epoch: BTreeMap<(u64, i64), u64> = BTreeMap::new();
        for &(ts, user, _, _) in &distinct {
            *per_user_epoch
                .entry((user, epoch_of(ts, self.opts.bucket_ms)))
                .or_default() += 1;
        }
        for ((user, epoch), count) in per_user_epoch {
            assert!(
                count <= bot.threshold,
                "ordinary user {user} has {count} events in epoch {epoch}, over the bot \
                 threshold {}; raise the threshold or lower the activity",
                bot.threshold
            );
        }
    }

    /// The bot: `threshold + 1` distinct events in its epoch, exactly
    /// `threshold` in a neighbouring one, each with some duplicate rows.
    fn bot(&mut self, bot: BotOpts) {
        assert!(
            bot.epoch < self.opts.epochs,
            "bot epoch {} is outside the log",
            bot.epoch
        );
        assert!(
            !self.users.contains(&bot.user),
            "the bot's id is an ordinary user's"
        );
        let neighbour = match bot.epoch + 1 {
            next if next < self.opts.epochs => Some(next),
            _ => bot.epoch.checked_sub(1),
        };
        let plan = [
            (Some(bot.epoch), bot.threshold + 1),
            (neighbour, bot.threshold),
        ];
        for (epoch, count) in plan {
            let Some(epoch) = epoch else { continue };
            let mut keys = BTreeSet::new();
            while (keys.len() as u64) < count {
                let ts = self.time_in(epoch);
                let item = self.rng.pick(&self.items);
                let kind = match self.rng.below(20) {
                    0 => Kind::Purchase,
                    1..=3 => Kind::Cart,
                    _ => Kind::View,
                };
                keys.insert((ts, item, kind));
            }
            let keys: Vec<_> = keys.into_iter().collect();
            for &(ts, item, kind) in &keys {
                let fields = self.fields(ts, bot.user, item, kind, false);
                let text = self.join(&fields);
                self.rows.push(Row {
                    ts,
                    user: bot.user,
                    text,
                });
            }

            // Duplicate rows raise the row count but not the distinct count.
            for _ in 0..4 {
                let (ts, item, kind) = self.rng.pick(&keys);
                let variant = self.rng.chance(0.5);
                let fields = self.fields(ts, bot.user, item, kind, variant);
                let text = self.join(&fields);
                self.rows.push(Row {
                    ts,
                    user: bot.user,
                    text,
                });
            }
        }
    }

    /// Exact copies of random rows, and rows repeating an event with other
    /// columns changed.
    fn duplicates(&mut self) {
        for _ in 0..self.opts.exact_duplicates {
            let index = self.rng.below(self.rows.len() as u64) as usize;
            let row = &self.rows[index];
            let copy = Row {
                ts: row.ts,
                user: row.user,
                text: row.text.clone(),
            };
            self.rows.push(copy);
        }
        for _ in 0..self.opts.near_duplicates {
            let (ts, user, item, kind) = self.rng.pick(&self.events);
            let fields = self.fields(ts, user, item, kind, true);
            let text = self.join(&fields);
            self.rows.push(Row { ts, user, text });
        }
    }

    /// Rows breaking each rule in turn, some breaking several (the first rule
    /// broken names the rejection).
    fn malformed(&mut self) {
        // The price column for REES46, a column no rule reads for the others.
        let (ts_col, user_col, item_col, kind_col, other_col) = match self.format {
            Format::RetailRocket => (0, 1, 3, 2, 4),
            Format::Rees46 => (0, 7, 2, 1, 6),
            Format::Taobao => (4, 0, 1, 3, 2),
        };
        let bad_ids = [
            "-1",
            "+1",
            "2.5e5",
            "12.",
            "1.5",
            "abc",
            "18446744073709551616",
            "0x1f",
        ];
        let (bad_times, out_of_range): (&[&str], &[&str]) = match self.format {
            Format::RetailRocket => (
                &[
                    "abc",
                    "1.5e12",
                    "-1569888000000",
                    "+1569888000000",
                    "1569888000000.5",
                ],
                &["946684799999", "4102444800000", "0"],
            ),
            Format::Taobao => (
                &[
                    "1.5e9",
                    "-1569888000",
                    "15698x8000",
                    "1569888000.5",
                    "2019-10-01",
                ],
                &["946684799", "4102444800", "12345"],
            ),
            Format::Rees46 => (
                &[
                    "2019-10-01T00:00:04Z",
                    "2019-02-29 00:00:00 UTC",
                    "2019-10-01 24:00:00 UTC",
                    "2019-10-01 00:00:04",
                    "1569888004",
                ],
                &[
                    "1999-12-31 23:59:59 UTC",
                    "2100-01-01 00:00:00 UTC",
                    "1970-01-01 00:00:00 UTC",
                ],
            ),
        };
        let unknown_kinds: &[&str] = match self.format {
            Format::RetailRocket => &["click", "View", "purchase", "cart"],
            Format::Rees46 => &["click", "VIEW", "pv", "addtocart"],
            Format::Taobao => &["click", "PV", "view", "purchase"],
        };
        let mut faults: Vec<Vec<(usize, String)>> = Vec::new();
        let mut one = |column: usize, values: &[&str]| {
            for value in values {
                faults.push(vec![(column, value.to_string())]);
            }
        };
        one(ts_col, &["", "   "]);
        one(ts_col, bad_times);
        one(ts_col, out_of_range);
        one(user_col, &[""]);
        one(user_col, &bad_ids);
        one(item_col, &[""]);
        one(item_col, &bad_ids);
        one(kind_col, &["", " "]);
        one(kind_col, unknown_kinds);
        if self.format == Format::Rees46 {
            one(6, &["-4.0", "NaN", "inf", "abc", "1,5", "-inf"]);
        }

        // Several faults at once: only the first rule broken counts.
        let several = [
            vec![(ts_col, bad_times[0].into()), (user_col, "".into())],
            vec![(ts_col, out_of_range[0].into()), (item_col, "x".into())],
            vec![
                (user_col, "".into()),
                (item_col, "".into()),
                (kind_col, "".into()),
            ],
            vec![(user_col, "-5".into()), (kind_col, "click".into())],
            vec![(item_col, "1e3".into()), (kind_col, "".into())],
            vec![(kind_col, "click".into()), (other_col, "-1.0".into())],
        ];
        faults.extend(several);

        for changes in faults {
            let (ts, user, item, kind) = self.rng.pick(&self.events);
            let mut fields = self.fields(ts, user, item, kind, false);
            for (column, value) in changes {
                fields[column] = value;
            }
            let text = self.join(&fields);
            self.rows.push(Row { ts, user, text });
        }

        // Wrong field counts: one short, one long, a truncated last column
        // and a line with no delimiter at all.
        for shape in 0..4 {
            let (ts, user, item, kind) = self.rng.pick(&self.events);
            let mut fields = self.fields(ts, user, item, kind, false);
            match shape {
                0 => drop(fields.pop()),
                1 => fields.push("extra".into()),
                2 => fields.truncate(fields.len() - 2),
                _ => fields = vec!["garbage".into()],
            }
            let text = self.join(&fields);
            self.rows.push(Row { ts, user, text });
        }
    }

    /// Orders the rows and writes the whole text.
    fn render(mut self) -> String {
        let bucket_ms = self.opts.bucket_ms;
        let mut keyed: Vec<((u64, i64, u64), Row)> = Vec::new();
        for row in std::mem::take(&mut self.rows) {
            let tiebreak = self.rng.next_u64();
            let key = match self.opts.order {
                Order::Time => (0, row.ts, tiebreak),
                Order::UserSorted => (row.user, row.ts, tiebreak),
                Order::Bounded(lateness) => {
                    let shift = self.rng.below(u64::from(lateness) + 1) as i64;
                    (0, epoch_of(row.ts, bucket_ms) + shift, tiebreak)
                }
                Order::Shuffled => (0, 0, tiebreak),
            };
            keyed.push((key, row));
        }
        keyed.sort_by_key(|(key, _)| *key);
        let mut lines: Vec<String> = keyed.into_iter().map(|(_, row)| row.text).collect();

        if self.opts.quirks {
            for _ in 0..2 {
                let at = self.rng.below(lines.len() as u64 + 1) as usize;
                lines.insert(at, String::new());
            }
        }
        if let Some(header) = self.format.header() {
            lines.insert(0, header.to_string());
        }
        let newline = if self.opts.crlf { "\r\n" } else { "\n" };
        let mut text = String::from(if self.opts.bom { "\u{feff}" } else { "" });
        text.push_str(&lines.join(newline));
        if self.opts.final_newline {
            text.push_str(newline);
        }
        text
    }
}

/// A UUID-shaped session id derived from 64 bits.
fn uuid(bits: u64) -> String {
    let more = mix(bits);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        bits >> 32,
        (bits >> 16) & 0xffff,
        bits & 0xfff,
        ((more >> 48) & 0x3fff) | 0x8000,
        more & 0xffff_ffff_ffff
    )
}

/// Formats ms since 1970 as REES46 does: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_rees46_time(ts: i64) -> String {
    let (days, millis) = (ts.div_euclid(DAY_MS), ts.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let seconds = millis / 1000;
    let (hour, minute, second) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether a log starts with a BOM, its header line (with a terminator; empty
/// for formats without one) and its remaining lines (each with its terminator).
fn header_and_body(text: &str, format: Format) -> (bool, String, Vec<&str>) {
    let bom = text.starts_with('\u{feff}');
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if format.header().is_none() || lines.is_empty() {
        return (bom, String::new(), lines);
    }
    let mut header = lines.remove(0).to_string();
    if !header.ends_with('\n') {
        header.push('\n');
    }
    (bom, header, lines)
}

/// Puts the header before every part and the BOM, if any, before the first.
fn with_headers(bom: bool, header: &str, parts: Vec<String>) -> Vec<String> {
    let bom_of = |index: usize| if bom && index == 0 { "\u{feff}" } else { "" };
    parts
        .into_iter()
        .enumerate()
        .map(|(index, body)| format!("{}{header}{body}", bom_of(index)))
        .collect()
}

/// Splits a log into parts, each starting at a body line index of `cuts`
/// (lines after the header, empty lines included; ascending). Every part of a
/// header format gets the header; only the first keeps a BOM.
pub fn split_rows(text: &str, format: Format, cuts: &[usize]) -> Vec<String> {
    let (bom, header, body) = header_and_body(text, format);
    let part_of = |index: usize| cuts.iter().filter(|&&cut| cut <= index).count();
    let mut parts = vec![String::new(); cuts.len() + 1];
    for (index, line) in body.into_iter().enumerate() {
        parts[part_of(index)].push_str(line);
    }
    with_headers(bom, &header, parts)
}

/// Splits a log by epoch: part `k` holds the rows whose epoch is at least
/// `starts[k - 1]` and below `starts[k]` (`starts` ascending). Rows without a
/// usable time, and empty lines, go with the line before them.
pub fn split_epochs(text: &str, format: Format, bucket_ms: i64, starts: &[i64]) -> Vec<String> {
    let (bom, header, body) = header_and_body(text, format);
    let mut parts = vec![String::new(); starts.len() + 1];
    let mut part = 0;
    for line in body {
        let bare = line.trim_end_matches('\n').trim_end_matches('\r');
        if let Some(ts) = row_ts(format, bare) {
            let epoch = epoch_of(ts, bucket_ms);
            part = starts.iter().filter(|&&start| start <= epoch).count();
        }
        parts[part].push_str(line);
    }
    with_headers(bom, &header, parts)
}

/// Writes a log to `dir/name` and returns the path.
pub fn write_log(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text)
        .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    path
}

/// Writes parts to `dir/{stem}-1.csv`, `dir/{stem}-2.csv`... in order.
pub fn write_parts(dir: &Path, stem: &str, parts: &[String]) -> Vec<PathBuf> {
    parts
        .iter()
        .enumerate()
        .map(|(index, part)| write_log(dir, &format!("{stem}-{}.csv", index + 1), part))
        .collect()
}
