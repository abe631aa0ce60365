//! `deltarec generate`: writes a synthetic event log in one of the three
//! built-in formats, shaped like the real logs, so that throughput can be
//! measured at any size.
//!
//! The shape is calibrated to the real samples in `shared/data/real` and to
//! the published figures of the full RetailRocket log (2,756,101 events over
//! 139 days, 1,407,580 visitors, 235,061 items; 96.7 % views, 2.5 % carts,
//! 0.8 % purchases), with users and items scaled by the number of events:
//!
//! - **Sessions.** Shoppers act in short sessions whose length `L` has a
//!   power-law tail (`P(L >= k) = k^-2.2`, mean about 1.5). A bounded number
//!   of sessions is open at once, one is picked at random per row, so
//!   sessions interleave and the log comes out sorted by time without a
//!   sort.
//! - **Users.** A session belongs to a new visitor, or (so that the number of
//!   distinct visitors matches the published ratio) to a returning one drawn
//!   by a Zipf-like law over the earlier visitors: a heavy-tailed activity.
//! - **Items.** A fresh item comes from a Zipf-Mandelbrot-like law over the
//!   catalogue (70 %) or uniformly from it (30 %, so that nearly every item of
//!   the catalogue appears, as in the real log).
//! - **Kinds.** A session opens with a view; later rows are carts and
//!   purchases with probabilities that give the published shares. Nine carts
//!   in ten take an item the session has viewed, and purchases prefer an
//!   item the session has carted, so both mostly follow a view of the same
//!   pair in the same session and epoch.
//! - **Bots.** On a few days (about one per 250,000 events when the log is
//!   dense enough) one of a few heavy users emits about 1,400 distinct views,
//!   above the default bot threshold of 1,000 per day.
//! - **Duplicates.** 0.1 % of the rows repeat the previous row exactly.
//! - **Disorder.** On request, a fraction of the rows is held back and
//!   written up to `max_lateness` epochs (UTC days) later than its time.
//!
//! The three formats carry the same events: RetailRocket as written by its
//! `events.csv`, REES46 with a time string, category, price and session
//! UUID, Taobao without a header and with times in seconds. All three use
//! only views, carts and purchases, and time starts on the first UTC day of
//! the real log. The output depends only on the options: the generator has
//! its own SplitMix64 stream and allocates nothing per row.
//!
//! NB: a purchase depends on its session, not on earlier epochs, so the
//! lagged features of the reference task carry almost no signal about the
//! label: a model trained on these logs scores an AUC near 0.5. The logs
//! are for measuring throughput and memory, not model quality.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Args;

/// Milliseconds in one UTC day, the generator's epoch.
const DAY_MS: i64 = 86_400_000;

/// Events in the full RetailRocket log.
pub const PUBLISHED_EVENTS: u64 = 2_756_101;
/// Distinct visitors in the full RetailRocket log.
pub const PUBLISHED_VISITORS: u64 = 1_407_580;
/// Distinct items in the full RetailRocket log.
pub const PUBLISHED_ITEMS: u64 = 235_061;
/// Days spanned by the full RetailRocket log (the default `--days`).
pub const PUBLISHED_DAYS: u32 = 139;
/// Share of carts among the events of the full RetailRocket log.
pub const CART_SHARE: f64 = 0.025;
/// Share of purchases among the events of the full RetailRocket log.
pub const PURCHASE_SHARE: f64 = 0.008;
/// Share of rows that repeat the previous row exactly.
pub const DUPLICATE_SHARE: f64 = 0.001;

/// Expected distinct events of a bot on one of its days: well above the
/// default bot threshold (1000), by more than ten standard deviations.
const BOT_DAY_EVENTS: u64 = 1_400;
/// Events per bot-day on average: one bot-day per this many events.
const EVENTS_PER_BOT_DAY: u64 = 250_000;
/// Tail exponent of the session length: `P(L >= k) = k^-alpha`.
const SESSION_ALPHA: f64 = 2.2;
/// Longest session, in rows.
const SESSION_MAX: u32 = 100;
/// Typical time between two rows of one session; sets how many sessions are
/// open at once.
const SESSION_GAP_MS: i64 = 180_000;
/// Most sessions open at once.
const MAX_OPEN_SESSIONS: usize = 4_096;
/// Items a session remembers (for carts and purchases of viewed items).
const SESSION_MEMORY: usize = 8;
/// Share of carts and purchases that take an item the session has seen.
const FOLLOW_SHARE: f64 = 0.9;
/// Share of later views that look again at an item the session has seen.
const REVIEW_SHARE: f64 = 0.2;
/// Share of fresh items drawn uniformly from the catalogue.
const UNIFORM_ITEM_SHARE: f64 = 0.3;
/// Offset of the item law: flattens the head so that the top item gets
/// 0.1-0.25 % of the views from 100 k to 10 M events (0.13 % in the real log).
const ITEM_OFFSET: f64 = 60.0;
/// Offset of the returning-visitor law.
const USER_OFFSET: f64 = 4.0;
/// Rows buffered before a write to the output.
const CHUNK_BYTES: usize = 1 << 20;

/// One of the three real input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// RetailRocket `events.csv`: `timestamp,visitorid,event,itemid,transactionid`.
    RetailRocket,
    /// REES46: `event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session`.
    Rees46,
    /// Taobao `UserBehavior.csv`, no header: `user_id,item_id,category_id,behavior_type,timestamp`.
    Taobao,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::RetailRocket, Format::Rees46, Format::Taobao];

    /// The name of the format's built-in spec.
    pub fn name(self) -> &'static str {
        match self {
            Format::RetailRocket => "retailrocket",
            Format::Rees46 => "rees46",
            Format::Taobao => "taobao",
        }
    }

    /// The first UTC midnight of the real log, in milliseconds.
    fn start_ms(self) -> i64 {
        match self {
            Format::RetailRocket => 1_430_611_200_000, // 2015-05-03
            Format::Rees46 => 1_569_888_000_000,       // 2019-10-01
            Format::Taobao => 1_511_568_000_000,       // 2017-11-25
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|format| format.name() == text)
            .ok_or_else(|| format!("{text:?}: expected retailrocket, rees46 or taobao"))
    }
}

/// The raw flags of `deltarec generate`.
#[derive(Debug, Args)]
pub struct GenerateFlags {
    /// Output format: retailrocket, rees46 or taobao.
    #[arg(long, value_name = "NAME", default_value = "retailrocket")]
    pub format: String,

    /// Number of rows to write (>= 1), duplicates and bots included.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub events: u64,

    /// Days (UTC epochs) the log spans (>= 1).
    #[arg(long, value_name = "D", default_value_t = PUBLISHED_DAYS)]
    pub days: u32,

    /// Seed: the same options and seed always give the same file.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,

    /// File to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Fraction of rows written later than their time, in [0, 1].
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub disorder: f64,

    /// How many epochs (UTC days) a displaced row may trail the newest row
    /// written before it.
    #[arg(long, value_name = "E", default_value_t = 1)]
    pub max_lateness: u32,
}

impl GenerateFlags {
    /// Checks the flags; the error is one line naming the flag and the fix.
    ///
    /// # Errors
    /// On an unknown format or a value out of range.
    pub fn validate(self) -> Result<(GenerateOptions, PathBuf), String> {
        let format = self
            .format
            .parse()
            .map_err(|err| format!("--format {err}"))?;
        if self.events == 0 {
            return Err("--events 0: a log needs at least one row".into());
        }
        if self.days == 0 {
            return Err("--days 0: a log spans at least one day".into());
        }
        if !(0.0..=1.0).contains(&self.disorder) {
            return Err(format!(
                "--disorder {}: expected a fraction between 0 and 1",
                self.disorder
            ));
        }
        let options = GenerateOptions {
            format,
            events: self.events,
            days: self.days,
            seed: self.seed,
            disorder: self.disorder,
            max_lateness: self.max_lateness,
        };
        Ok((options, self.out))
    }
}

/// What to generate; see [`GenerateFlags`] for each field's meaning.
#[derive(Clone, Copy, Debug)]
pub struct GenerateOptions {
    /// Output format.
    pub format: Format,
    /// Rows to write (>= 1).
    pub events: u64,
    /// Days spanned (>= 1).
    pub days: u32,
    /// Seed.
    pub seed: u64,
    /// Fraction of displaced rows, in [0, 1].
    pub disorder: f64,
    /// Most epochs a displaced row trails.
    pub max_lateness: u32,
}

/// What a generated log holds, for the summary line and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenerateStats {
    /// Data rows written (the header not counted).
    pub rows: u64,
    /// Rows per kind: views, carts, purchases.
    pub kinds: [u64; 3],
    /// Distinct visitors (bots included).
    pub users: u64,
    /// Distinct items.
    pub items: u64,
    /// Rows that repeat the previous row.
    pub duplicates: u64,
    /// Rows written later than their time.
    pub displaced: u64,
    /// Days on which a bot is active.
    pub bot_days: u64,
    /// Rows written by bots.
    pub bot_rows: u64,
}

impl fmt::Display for GenerateStats {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = |count: u64| 100.0 * count as f64 / self.rows.max(1) as f64;
        write!(
            formatter,
            "{} rows: {} users, {} items; views {:.2} %, carts {:.2} %, purchases {:.2} %; \
             {} duplicates, {} bot-days ({} rows), {} displaced",
            self.rows,
            self.users,
            self.items,
            share(self.kinds[0]),
            share(self.kinds[1]),
            share(self.kinds[2]),
            self.duplicates,
            self.bot_days,
            self.bot_rows,
            self.displaced
        )
    }
}

/// Writes the log to `path` through a temporary file renamed at the end, so
/// a failed run never leaves a partial log under that name.
///
/// # Errors
/// When the file cannot be created, written or renamed.
pub fn write_file(options: &GenerateOptions, path: &Path) -> io::Result<GenerateStats> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let mut file = File::create(&temporary)?;
    let stats = generate(options, &mut file)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    Ok(stats)
}

/// Writes the log described by `options` to `out`, header first where the
/// format has one. `out` receives large chunks, so it needs no buffering.
///
/// # Errors
/// When `out` fails.
pub fn generate(options: &GenerateOptions, mut out: impl Write) -> io::Result<GenerateStats> {
    let mut generator = Generator::new(options);
    let mut writer = RowWriter::new(
        options.format,
        options.seed,
        generator.user_ids,
        2 * generator.catalogue + 1,
    );
    writer.header();
    for slot in 0..options.events {
        generator.slot(slot, &mut writer);
        if writer.chunk.len() >= CHUNK_BYTES {
            out.write_all(&writer.chunk)?;
            writer.chunk.clear();
        }
    }
    generator.release_all(&mut writer);
    out.write_all(&writer.chunk)?;
    out.flush()?;
    Ok(generator.stats())
}

/// What a shopper did, as the generator writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    View,
    Cart,
    Purchase,
}

/// One generated row, before formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    /// Event time, ms.
    ts: i64,
    /// User index (creation order; bots after every regular user).
    user: u64,
    /// Item index in the catalogue.
    item: u64,
    action: Action,
    /// Session serial, for REES46's `user_session`.
    session: u64,
    /// Transaction serial of a purchase (RetailRocket's `transactionid`).
    transaction: u64,
}

/// An open session: whose, how many rows are left, what it has seen.
#[derive(Clone, Copy, Debug, Default)]
struct Session {
    user: u64,
    serial: u64,
    left: u32,
    /// Items seen, as a ring of the last [`SESSION_MEMORY`].
    seen: [u64; SESSION_MEMORY],
    /// Which of `seen` were carted.
    carted: [bool; SESSION_MEMORY],
    /// How many of `seen` are filled.
    filled: usize,
    /// Next ring position.
    next: usize,
}

impl Session {
    fn remember(&mut self, item: u64, carted: bool) -> usize {
        let at = self.next;
        self.seen[at] = item;
        self.carted[at] = carted;
        self.next = (at + 1) % SESSION_MEMORY;
        self.filled = (self.filled + 1).min(SESSION_MEMORY);
        at
    }
}

/// The generator's state between rows.
struct Generator {
    rng: Rng,
    /// Start of the log, ms, and the time each row slot advances.
    start_ms: i64,
    span_ms: i64,
    slots: u64,
    sessions: Vec<Session>,
    session_serial: u64,
    /// Regular users created so far.
    created: u64,
    /// Share of sessions that belong to a returning user.
    returning: f64,
    /// Carts and purchases among the non-first rows of a session.
    cart_chance: f64,
    purchase_chance: f64,
    items: PowerLaw,
    catalogue: u64,
    transaction: u64,
    /// For each day, the bot active on it, if any; and the chance that a row
    /// of that day is the bot's.
    bot_on_day: Vec<Option<u64>>,
    bot_chance: f64,
    /// First user index of the bots.
    first_bot: u64,
    /// Size of the id space regular users are scattered over.
    user_ids: u64,
    disorder: f64,
    max_lateness: i64,
    /// Displaced rows, by release time then slot.
    held: BinaryHeap<Reverse<(i64, u64, Row)>>,
    previous: Option<Row>,
    seen_users: BitSet,
    seen_items: BitSet,
    stats: GenerateStats,
}

impl Generator {
    fn new(options: &GenerateOptions) -> Generator {
        let events = options.events;
        let days = u64::from(options.days);
        let mut rng = Rng(options.seed ^ 0x6465_6c74_6172_6563);

        // Users and items scale with the events, as in the published log.
        let users = scaled(events, PUBLISHED_VISITORS);
        let catalogue = scaled(events, PUBLISHED_ITEMS);

        // Bots need a day dense enough for their ~1400 rows to be a minority.
        let rows_per_day = events / days;
        let bot_days = if rows_per_day >= 3 * BOT_DAY_EVENTS {
            (events / EVENTS_PER_BOT_DAY).clamp(1, days)
        } else {
            0
        };
        let bot_users = (bot_days / 4).max(1);
        let mut day_order: Vec<u64> = (0..days).collect();
        for index in 0..bot_days as usize {
            let pick = index + rng.below((days as usize - index) as u64) as usize;
            day_order.swap(index, pick);
        }
        let mut bot_on_day = vec![None; days as usize];
        for (index, day) in day_order.iter().take(bot_days as usize).enumerate() {
            bot_on_day[*day as usize] = Some(index as u64 % bot_users);
        }
        let bot_share = (bot_days * BOT_DAY_EVENTS) as f64 / events as f64;

        // Kind chances for the rows after a session's first view, and the share
        // of returning visitors that gives the published visitors per event.
        let mean_length: f64 = (1..=SESSION_MAX)
            .map(|k| f64::from(k).powf(-SESSION_ALPHA))
            .sum();
        let regular = (1.0 - bot_share).max(1e-9);
        let later = regular * (1.0 - 1.0 / mean_length);
        let new_share = PUBLISHED_VISITORS as f64 / PUBLISHED_EVENTS as f64 * mean_length
            / (regular - DUPLICATE_SHARE).max(1e-9);

        // Enough open sessions that one session's rows are minutes apart.
        let span_ms = i64::from(options.days) * DAY_MS;
        let step_ms = (span_ms as f64 / events as f64).max(1.0);
        let open = ((SESSION_GAP_MS as f64 / step_ms) as usize).clamp(1, MAX_OPEN_SESSIONS);
        // Bot users sit after every possible regular user index.
        let first_bot = users * 2 + 16;

        Generator {
            rng,
            start_ms: options.format.start_ms(),
            span_ms,
            slots: events,
            sessions: vec![Session::default(); open],
            session_serial: 0,
            created: 0,
            returning: (1.0 - new_share).clamp(0.0, 1.0),
            cart_chance: (CART_SHARE / later).min(0.5),
            purchase_chance: (PURCHASE_SHARE / later).min(0.5),
            items: PowerLaw::new(catalogue, ITEM_OFFSET),
            catalogue,
            transaction: 0,
            bot_on_day,
            bot_chance: BOT_DAY_EVENTS as f64 / rows_per_day.max(1) as f64,
            first_bot,
            user_ids: users + users / 8 + 16,
            disorder: options.disorder,
            max_lateness: i64::from(options.max_lateness),
            held: BinaryHeap::new(),
            previous: None,
            seen_users: BitSet::new(first_bot + bot_users),
            seen_items: BitSet::new(catalogue),
            stats: GenerateStats {
                bot_days,
                ..GenerateStats::default()
            },
        }
    }

    /// Makes the row of one slot and writes it, or holds it back.
    fn slot(&mut self, slot: u64, writer: &mut RowWriter) {
        // Slot times increase with the slot, with jitter inside the slot.
        let base = (u128::from(slot) * self.span_ms as u128 / u128::from(self.slots)) as i64;
        let next = (u128::from(slot + 1) * self.span_ms as u128 / u128::from(self.slots)) as i64;
        let ts = self.start_ms + base + self.rng.below((next - base).max(1) as u64) as i64;

        // Rows held back until now go first.
        while let Some(Reverse((release, _, _))) = self.held.peek() {
            if *release > ts {
                break;
            }
            let Reverse((_, _, row)) = self.held.pop().expect("peeked");
            writer.row(&row);
        }

        let row = match self.previous {
            Some(previous) if self.rng.chance(DUPLICATE_SHARE) => {
                self.stats.duplicates += 1;
                previous
            }
            _ => self.fresh_row(ts),
        };
        self.count(&row);
        self.previous = Some(row);

        if self.disorder > 0.0 && self.rng.chance(self.disorder) {
            // Released before the end of the epoch `max_lateness` after its own.
            let epoch = row.ts.div_euclid(DAY_MS);
            let bound = (epoch + self.max_lateness + 1) * DAY_MS - 1;
            let release = row.ts + self.rng.below((bound - row.ts + 1) as u64) as i64;
            self.held.push(Reverse((release, slot, row)));
            self.stats.displaced += 1;
        } else {
            writer.row(&row);
        }
    }

    /// Writes every row still held back, in release order.
    fn release_all(&mut self, writer: &mut RowWriter) {
        while let Some(Reverse((_, _, row))) = self.held.pop() {
            writer.row(&row);
        }
    }

    /// A new row at `ts`: the bot's on a bot day, else one of an open session.
    fn fresh_row(&mut self, ts: i64) -> Row {
        let day = ((ts - self.start_ms) / DAY_MS) as usize;
        if let Some(&Some(bot)) = self.bot_on_day.get(day)
            && self.rng.chance(self.bot_chance)
        {
            self.stats.bot_rows += 1;
            let item = self.fresh_item();
            return Row {
                ts,
                user: self.first_bot + bot,
                item,
                action: Action::View,
                session: u64::MAX - bot,
                transaction: 0,
            };
        }

        let index = self.rng.below(self.sessions.len() as u64) as usize;
        if self.sessions[index].left == 0 {
            self.sessions[index] = self.open_session();
        }
        let mut session = self.sessions[index];
        let (item, action) = self.session_event(&mut session);
        session.left -= 1;
        self.sessions[index] = session;
        let transaction = if action == Action::Purchase {
            self.transaction += 1;
            self.transaction
        } else {
            0
        };
        Row {
            ts,
            user: session.user,
            item,
            action,
            session: session.serial,
            transaction,
        }
    }

    /// A session of a new or returning visitor, with its length drawn.
    fn open_session(&mut self) -> Session {
        let user = if self.created > 0 && self.rng.chance(self.returning) {
            PowerLaw::new(self.created, USER_OFFSET).sample(&mut self.rng)
        } else {
            self.created += 1;
            self.created - 1
        };
        let length = self.rng.unit_open().powf(-1.0 / SESSION_ALPHA);
        self.session_serial += 1;
        Session {
            user,
            serial: self.session_serial,
            left: (length as u32).clamp(1, SESSION_MAX),
            ..Session::default()
        }
    }

    /// The next item and action of `session`.
    fn session_event(&mut self, session: &mut Session) -> (u64, Action) {
        if session.filled == 0 {
            let item = self.fresh_item();
            session.remember(item, false);
            return (item, Action::View);
        }
        let draw = self.rng.unit();
        let action = if draw < self.purchase_chance {
            Action::Purchase
        } else if draw < self.purchase_chance + self.cart_chance {
            Action::Cart
        } else {
            Action::View
        };
        let follow = match action {
            Action::View => REVIEW_SHARE,
            Action::Cart | Action::Purchase => FOLLOW_SHARE,
        };
        if !self.rng.chance(follow) {
            let item = self.fresh_item();
            session.remember(item, action == Action::Cart);
            return (item, action);
        }
        // A purchase takes a carted item when there is one.
        let carted = (0..session.filled).find(|&at| session.carted[at]);
        let at = match (action, carted) {
            (Action::Purchase, Some(at)) => at,
            _ => self.rng.below(session.filled as u64) as usize,
        };
        if action == Action::Cart {
            session.carted[at] = true;
        }
        (session.seen[at], action)
    }

    /// An item from the catalogue: Zipf-like head, uniform tail.
    fn fresh_item(&mut self) -> u64 {
        if self.rng.chance(UNIFORM_ITEM_SHARE) {
            self.rng.below(self.catalogue)
        } else {
            self.items.sample(&mut self.rng)
        }
    }

    fn count(&mut self, row: &Row) {
        self.stats.rows += 1;
        self.stats.kinds[row.action as usize] += 1;
        self.stats.users += u64::from(self.seen_users.insert(row.user));
        self.stats.items += u64::from(self.seen_items.insert(row.item));
    }

    fn stats(&self) -> GenerateStats {
        self.stats.clone()
    }
}

/// `ceil(events * published / PUBLISHED_EVENTS)`, at least 1.
fn scaled(events: u64, published: u64) -> u64 {
    let product = u128::from(events) * u128::from(published);
    (product.div_ceil(u128::from(PUBLISHED_EVENTS)) as u64).max(1)
}

/// Formats rows into a chunk of bytes.
struct RowWriter {
    format: Format,
    seed: u64,
    /// Ids are scattered over `0..users` and `0..items` (bots sit above).
    users: Scatter,
    items: Scatter,
    chunk: Vec<u8>,
    /// The REES46 date prefix `YYYY-MM-DD ` of `cached_day`.
    cached_day: i64,
    date: [u8; 11],
}

/// Category codes for REES46 rows (a third of the rows have none).
const CATEGORY_CODES: [&str; 6] = [
    "electronics.smartphone",
    "appliances.kitchen.refrigerators",
    "computers.notebook",
    "apparel.shoes",
    "furniture.living_room.sofa",
    "electronics.audio.headphone",
];

/// Brands for REES46 rows (about one row in seven has none).
const BRANDS: [&str; 6] = [
    "samsung", "apple", "xiaomi", "huawei", "lucente", "shiseido",
];

impl RowWriter {
    fn new(format: Format, seed: u64, users: u64, items: u64) -> RowWriter {
        RowWriter {
            format,
            seed,
            users: Scatter::new(users),
            items: Scatter::new(items),
            chunk: Vec::with_capacity(CHUNK_BYTES + 4096),
            cached_day: i64::MIN,
            date: [0; 11],
        }
    }

    fn header(&mut self) {
        let header: &[u8] = match self.format {
            Format::RetailRocket => b"timestamp,visitorid,event,itemid,transactionid\n",
            Format::Rees46 => {
                b"event_time,event_type,product_id,category_id,category_code,brand,price,\
                  user_id,user_session\n"
            }
            Format::Taobao => b"",
        };
        self.chunk.extend_from_slice(header);
    }

    fn row(&mut self, row: &Row) {
        match self.format {
            Format::RetailRocket => self.retailrocket(row),
            Format::Rees46 => self.rees46(row),
            Format::Taobao => self.taobao(row),
        }
    }

    /// `1433221332117,257597,view,355908,`.
    fn retailrocket(&mut self, row: &Row) {
        let buf = &mut self.chunk;
        push_u64(buf, row.ts as u64);
        buf.push(b',');
        push_u64(buf, self.users.apply(row.user));
        buf.extend_from_slice(match row.action {
            Action::View => b",view,",
            Action::Cart => b",addtocart,",
            Action::Purchase => b",transaction,",
        });
        push_u64(buf, self.items.apply(row.item));
        buf.push(b',');
        if row.action == Action::Purchase {
            push_u64(buf, row.transaction);
        }
        buf.push(b'\n');
    }

    /// `2019-10-01 00:00:04 UTC,view,5100816,2053013...,code,brand,29.51,5...,uuid`.
    fn rees46(&mut self, row: &Row) {
        let seconds = row.ts.div_euclid(1000);
        let day = seconds.div_euclid(86_400);
        if day != self.cached_day {
            self.cached_day = day;
            self.date = date_prefix(day);
        }
        let in_day = seconds.rem_euclid(86_400) as u64;
        let item_hash = mix(row.item ^ 0x5eed_17e5);
        let category = row.item / 64;
        let buf = &mut self.chunk;
        buf.extend_from_slice(&self.date);
        push_two(buf, in_day / 3600);
        buf.push(b':');
        push_two(buf, in_day / 60 % 60);
        buf.push(b':');
        push_two(buf, in_day % 60);
        buf.extend_from_slice(match row.action {
            Action::View => b" UTC,view,",
            Action::Cart => b" UTC,cart,",
            Action::Purchase => b" UTC,purchase,",
        });
        push_u64(buf, 1_000_000 + self.items.apply(row.item));
        buf.push(b',');
        push_u64(
            buf,
            2_053_013_552_000_000_000 + mix(category + 0x4ee5) % 1_000_000_000_000,
        );
        buf.push(b',');
        if !category.is_multiple_of(3) {
            buf.extend_from_slice(CATEGORY_CODES[(category % 6) as usize].as_bytes());
        }
        buf.push(b',');
        if !item_hash.is_multiple_of(7) {
            buf.extend_from_slice(BRANDS[(item_hash % 6) as usize].as_bytes());
        }
        buf.push(b',');
        let cents = 100 + (item_hash >> 8) % 99_900;
        push_u64(buf, cents / 100);
        buf.push(b'.');
        push_two(buf, cents % 100);
        buf.push(b',');
        push_u64(buf, 512_000_000 + self.users.apply(row.user));
        buf.push(b',');
        let high = mix(mix(self.seed ^ 0x5e55_1017) ^ row.session);
        push_uuid(buf, high, mix(high ^ 0xa5a5_a5a5_a5a5_a5a5));
        buf.push(b'\n');
    }

    /// `543462,1715,1464116,pv,1511658000`.
    fn taobao(&mut self, row: &Row) {
        let buf = &mut self.chunk;
        push_u64(buf, 1 + self.users.apply(row.user));
        buf.push(b',');
        push_u64(buf, 1 + self.items.apply(row.item));
        buf.push(b',');
        push_u64(buf, 1 + mix(row.item / 400 + 0x7a0b) % 5_000_000);
        buf.extend_from_slice(match row.action {
            Action::View => b",pv,",
            Action::Cart => b",cart,",
            Action::Purchase => b",buy,",
        });
        push_u64(buf, row.ts.div_euclid(1000) as u64);
        buf.push(b'\n');
    }
}

/// Appends the decimal digits of `value`.
fn push_u64(buf: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends `value % 100` as two digits.
fn push_two(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&[b'0' + (value / 10 % 10) as u8, b'0' + (value % 10) as u8]);
}

/// Appends a UUID-shaped string (8-4-4-4-12 hex digits, version 4) made of
/// two random words.
fn push_uuid(buf: &mut Vec<u8>, high: u64, low: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let high = (high & !0xf000) | 0x4000;
    let mut text = [0u8; 36];
    let mut at = 0;
    for (index, nibble) in (0..32).enumerate() {
        if matches!(index, 8 | 12 | 16 | 20) {
            text[at] = b'-';
            at += 1;
        }
        let word = if nibble < 16 { high } else { low };
        let shift = 60 - 4 * (nibble % 16);
        text[at] = HEX[((word >> shift) & 0xf) as usize];
        at += 1;
    }
    buf.extend_from_slice(&text);
}

/// `YYYY-MM-DD ` of a day counted from 1970-01-01.
fn date_prefix(day: i64) -> [u8; 11] {
    let (year, month, day) = civil_from_days(day);
    let mut text = *b"0000-00-00 ";
    let year = year.clamp(0, 9999) as u64;
    for (at, value) in [(0, year / 100), (2, year % 100), (5, month), (8, day)] {
        text[at] = b'0' + (value / 10 % 10) as u8;
        text[at + 1] = b'0' + (value % 10) as u8;
    }
    text
}

/// Year, month and day of a day counted from 1970-01-01 (proleptic
/// Gregorian), by Howard Hinnant's `civil_from_days`
/// (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u64;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u64;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014): a stable
/// hash of a word.
fn mix(value: u64) -> u64 {
    let mut z = value;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: a small, fast, seedable stream whose output never changes
/// with a dependency's version.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `0..bound` (Lemire's multiply-shift); `bound > 0`.
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `(0, 1]`.
    fn unit_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }
}

/// A Zipf-Mandelbrot-like law over `0..count`: rank `r` has weight about
/// `1 / (r + offset)`, drawn by inverting the continuous law's CDF
/// (`x = offset * ((count + offset) / offset)^u - offset`), O(1) per draw.
#[derive(Clone, Copy, Debug)]
struct PowerLaw {
    count: u64,
    offset: f64,
    log_ratio: f64,
}

impl PowerLaw {
    fn new(count: u64, offset: f64) -> PowerLaw {
        PowerLaw {
            count,
            offset,
            log_ratio: ((count as f64 + offset) / offset).ln(),
        }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let x = self.offset * (self.log_ratio * rng.unit()).exp() - self.offset;
        (x as u64).min(self.count - 1)
    }
}

/// A bijection of `0..modulus` (`(x + 1) * multiplier mod modulus`, with the
/// multiplier coprime to the modulus) that scatters dense indices over the
/// id space like real ids; values at or above the modulus are kept.
#[derive(Clone, Copy, Debug)]
struct Scatter {
    modulus: u64,
    multiplier: u64,
}

impl Scatter {
    fn new(modulus: u64) -> Scatter {
        let modulus = modulus.max(1);
        let mut multiplier = 0x9e37_79b9_7f4a_7c15 % modulus;
        while gcd(multiplier, modulus) != 1 {
            multiplier += 1;
        }
        Scatter {
            modulus,
            multiplier,
        }
    }

    fn apply(&self, value: u64) -> u64 {
        if value >= self.modulus {
            return value;
        }
        let shifted = (u128::from(value) + 1) % u128::from(self.modulus);
        (shifted * u128::from(self.multiplier) % u128::from(self.modulus)) as u64
    }
}

fn gcd(mut left: u64, mut right: u64) -> u64 {
    while right != 0 {
        (left, right) = (right, left % right);
    }
    left
}

/// A fixed-size set of small integers, for counting distinct ids.
struct BitSet(Vec<u64>);

impl BitSet {
    fn new(size: u64) -> BitSet {
        BitSet(vec![0; size.div_ceil(64) as usize + 1])
    }

    /// Adds `value`; true if it was new. Values past the size are ignored.
    fn insert(&mut self, value: u64) -> bool {
        let Some(word) = self.0.get_mut((value / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (value % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap, HashSet};

    use csv::{ByteRecord, ReaderBuilder};

    use super::*;
    use crate::event::{Event, Kind};
    use crate::spec::Spec;

    fn options(format: Format, events: u64, days: u32) -> GenerateOptions {
        GenerateOptions {
            format,
            events,
            days,
            seed: 7,
            disorder: 0.0,
            max_lateness: 1,
        }
    }

    fn text(options: &GenerateOptions) -> (Vec<u8>, GenerateStats) {
        let mut out = Vec::new();
        let stats = generate(options, &mut out).unwrap();
        (out, stats)
    }

    /// Every data row read with the format's built-in spec; panics on a
    /// rejected row, naming it.
    fn parsed(format: Format, text: &[u8]) -> Vec<Event> {
        let spec = Spec::builtin()
            .into_iter()
            .find(|spec| spec.name() == format.name())
            .expect("every format has a built-in spec");
        let mut reader = ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text);
        let mut records = reader.byte_records().map(|record| record.unwrap());
        let header: Option<ByteRecord> = spec.has_header().then(|| records.next().unwrap());
        let binding = spec.bind(header.as_ref()).unwrap();
        records
            .map(|record| match binding.parse(&record) {
                Ok(parsed) => parsed.event,
                Err(reason) => panic!("{format}: {reason:?}: {record:?}"),
            })
            .collect()
    }

    fn day(event: &Event) -> i64 {
        event.ts.div_euclid(DAY_MS)
    }

    #[test]
    fn same_seed_gives_the_same_bytes() {
        for format in Format::ALL {
            let mut options = options(format, 20_000, 5);
            options.disorder = 0.1;
            let (first, _) = text(&options);
            assert_eq!(first, text(&options).0, "{format}");
            options.seed += 1;
            assert_ne!(first, text(&options).0, "{format}");
        }
    }

    #[test]
    fn writes_exactly_the_requested_rows() {
        for format in Format::ALL {
            for events in [1, 7, 1_000, 30_001] {
                for disorder in [0.0, 0.3] {
                    let mut options = options(format, events, 3);
                    options.disorder = disorder;
                    let (out, stats) = text(&options);
                    let header = u64::from(format != Format::Taobao);
                    let lines = out.iter().filter(|byte| **byte == b'\n').count() as u64;
                    assert_eq!(lines, events + header, "{format} {events} {disorder}");
                    assert_eq!(stats.rows, events);
                    assert_eq!(parsed(format, &out).len() as u64, events);
                }
            }
        }
    }

    #[test]
    fn every_row_parses_with_the_builtin_spec() {
        for format in Format::ALL {
            let mut options = options(format, 100_000, 20);
            options.disorder = 0.05;
            let (out, _) = text(&options);
            let events = parsed(format, &out);
            let (first, last) = (format.start_ms(), format.start_ms() + 20 * DAY_MS);
            assert!(
                events.iter().all(|e| (first..last).contains(&e.ts)),
                "{format}"
            );
        }
    }

    #[test]
    fn kind_shares_match_the_published_figures() {
        let (out, stats) = text(&options(Format::RetailRocket, 400_000, 30));
        let events = parsed(Format::RetailRocket, &out);
        let share = |kind| {
            events.iter().filter(|event| event.kind == kind).count() as f64 / events.len() as f64
        };
        let (views, carts, purchases) =
            (share(Kind::View), share(Kind::Cart), share(Kind::Purchase));
        assert!((views - 0.967).abs() < 0.003, "views {views}");
        assert!((carts - CART_SHARE).abs() < 0.002, "carts {carts}");
        assert!(
            (purchases - PURCHASE_SHARE).abs() < 0.001,
            "purchases {purchases}"
        );
        assert_eq!(stats.kinds.iter().sum::<u64>(), stats.rows);
    }

    #[test]
    fn users_and_items_scale_like_the_published_log() {
        let events = 1_000_000;
        let (_, stats) = text(&options(Format::RetailRocket, events, PUBLISHED_DAYS));
        let users = scaled(events, PUBLISHED_VISITORS) as f64;
        let items = scaled(events, PUBLISHED_ITEMS) as f64;
        let user_ratio = stats.users as f64 / users;
        let item_ratio = stats.items as f64 / items;
        assert!(
            (0.9..1.1).contains(&user_ratio),
            "users {} of {users}",
            stats.users
        );
        assert!(
            (0.8..1.05).contains(&item_ratio),
            "items {} of {items}",
            stats.items
        );
    }

    #[test]
    fn a_few_users_are_bots_on_a_few_days_and_a_thousandth_are_duplicates() {
        let (out, stats) = text(&options(Format::Taobao, 600_000, 20));
        let events = parsed(Format::Taobao, &out);
        let distinct: HashSet<Event> = events.iter().copied().collect();
        let mut per_user_day: HashMap<(u64, i64), u64> = HashMap::new();
        for event in &distinct {
            *per_user_day.entry((event.user, day(event))).or_default() += 1;
        }
        let bots: BTreeSet<(u64, i64)> = per_user_day
            .into_iter()
            .filter(|(_, count)| *count > 1000)
            .map(|(key, _)| key)
            .collect();
        assert_eq!(bots.len() as u64, stats.bot_days, "{bots:?}");
        assert!((1..=5).contains(&bots.len()), "{bots:?}");

        let exact = (events.len() - distinct.len()) as f64 / events.len() as f64;
        assert!((0.0005..0.002).contains(&exact), "duplicates {exact}");
    }

    #[test]
    fn carts_and_purchases_mostly_follow_a_view_in_the_epoch() {
        let (out, _) = text(&options(Format::RetailRocket, 300_000, 10));
        let mut viewed: HashSet<(u64, u64, i64)> = HashSet::new();
        let (mut following, mut total) = (0, 0);
        for event in parsed(Format::RetailRocket, &out) {
            let pair = (event.user, event.item, day(&event));
            if event.kind == Kind::View {
                viewed.insert(pair);
            } else {
                total += 1;
                following += usize::from(viewed.contains(&pair));
            }
        }
        assert!(
            following as f64 > 0.8 * total as f64,
            "{following} of {total}"
        );
    }

    #[test]
    fn displaced_rows_trail_by_at_most_max_lateness() {
        for max_lateness in [0, 2] {
            let mut options = options(Format::Rees46, 50_000, 10);
            options.disorder = 0.2;
            options.max_lateness = max_lateness;
            let (out, stats) = text(&options);
            assert!(stats.displaced > 5_000);
            let (mut newest, mut regressions) = (i64::MIN, 0);
            for event in parsed(Format::Rees46, &out) {
                let newest_day = newest.div_euclid(DAY_MS);
                assert!(day(&event) >= newest_day.saturating_sub(max_lateness.into()));
                regressions += usize::from(event.ts < newest);
                newest = newest.max(event.ts);
            }
            assert!(regressions > 1_000);
        }
        let (out, _) = text(&options(Format::Rees46, 50_000, 10));
        let times: Vec<i64> = parsed(Format::Rees46, &out).iter().map(|e| e.ts).collect();
        assert!(times.is_sorted(), "time-sorted without --disorder");
    }

    #[test]
    fn dates_follow_the_civil_calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(&date_prefix(18_170), b"2019-10-01 ");
        assert_eq!(&date_prefix(-1), b"1969-12-31 ");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let flags = |format: &str, events, days, disorder| GenerateFlags {
            format: format.into(),
            events,
            days,
            seed: 1,
            out: "log.csv".into(),
            disorder,
            max_lateness: 1,
        };
        for (flags, name) in [
            (flags("amazon", 10, 1, 0.0), "--format"),
            (flags("taobao", 0, 1, 0.0), "--events"),
            (flags("taobao", 10, 0, 0.0), "--days"),
            (flags("taobao", 10, 1, 1.5), "--disorder"),
        ] {
            assert!(flags.validate().unwrap_err().starts_with(name));
        }
    }
}
