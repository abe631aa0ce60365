//! Cleaning, feature aggregates and lagged training examples as one
//! differential dataflow.
//!
//! Times are event epochs: an event of epoch `e` enters at time
//! [`epoch_time`]`(e)`. Two shapes of collection appear below.
//!
//! * **Cumulative**: at time `epoch_time(e)` it holds everything up to `e`.
//!   The aggregates are cumulative, fed by the clean events delayed by one
//!   epoch, so at time `epoch_time(e)` they are the aggregates *as of the end
//!   of epoch `e - 1`*: exactly what an example of epoch `e` may see.
//! * **Windowed**: at time `epoch_time(e)` it holds what belongs to epoch `e`
//!   alone (its active pairs, its examples); everything is retracted one
//!   epoch later, so the arrangements holding it compact away.
//!
//! Deduplication and bot detection are per user and epoch; a timely operator
//! does them once an epoch is complete, so each clean event enters the
//! aggregates once and only the open epochs' rows are held.
//!
//! The example of a pair active in epoch `e` is assembled by three reduces,
//! keyed by pair, user and item in turn. Each reduce holds the key's lagged
//! kind counts (at most five values per key, with multiplicities) beside the
//! partial examples passing through it, so cold starts are just empty counts,
//! and no outer join is needed. The examples leave windowed; keeping only the
//! updates made at an example's own epoch time ([`at_own_epoch`]) gives each
//! example once.

use std::collections::BTreeMap;

use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::event::{Event, Kind};

/// A dataflow time: the epoch in the high bits, a trainer round in the low
/// [`ROUND_BITS`] bits (zero everywhere but in the trainer's loop).
pub type Time = u64;

/// Number of low time bits reserved for the trainer's synchronisation rounds
/// within an epoch; bounds the mini-batches per epoch to about a million.
pub const ROUND_BITS: u32 = 20;

/// The time distance between two consecutive epochs.
pub const EPOCH_STEP: Time = 1 << ROUND_BITS;

/// The dataflow time at which the events of `epoch` enter.
pub fn epoch_time(epoch: u64) -> Time {
    epoch << ROUND_BITS
}

/// The epoch of an event at `ts` (ms since 1970, never negative) with
/// epochs `bucket_ms` wide.
pub fn epoch_of(ts: i64, bucket_ms: i64) -> u64 {
    (ts / bucket_ms) as u64
}

/// The epoch a dataflow time belongs to.
pub fn time_epoch(time: Time) -> u64 {
    time >> ROUND_BITS
}

/// A collection of the feature dataflow.
pub type Coll<'scope, D> = VecCollection<'scope, Time, D, isize>;

/// Number of features of an example.
pub const NUM_FEATURES: usize = 10;

/// One training example: a pair active in `epoch`, its label, and the ten
/// integer aggregates as of the end of the previous epoch, in the order of the
/// reference task (`u_views, u_carts, u_purchases, u_items, i_views, i_carts,
/// i_purchases, i_users, p_views, p_carts`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Example {
    /// The epoch the pair was active in.
    pub epoch: u64,
    /// The user.
    pub user: u64,
    /// The item.
    pub item: u64,
    /// Whether the pair has a clean purchase in `epoch`.
    pub label: bool,
    /// The aggregates `a`; the features are `ln(1 + a)`.
    pub raw: [u64; NUM_FEATURES],
}

/// What the per-user, per-epoch cleaning reduce says about an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cleaned {
    /// A clean event: `(ts, item, kind)` of the key's user.
    Event(i64, u64, Kind),
    /// The key's user is a bot in `epoch`: `excluded` distinct events dropped.
    Bot {
        /// The epoch.
        epoch: u64,
        /// How many de-duplicated events were excluded.
        excluded: u64,
    },
}

/// The final aggregates of one user, item or pair, as `features/` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Aggregate {
    /// `user, [views, carts, purchases, items]`.
    User(u64, [u64; 4]),
    /// `item, [views, carts, purchases, users]`.
    Item(u64, [u64; 4]),
    /// `user, item`, and the pair's clean events of each kind, indexed by
    /// `Kind as usize` (the features use views and carts; a saved state
    /// keeps all five, since user and item aggregates derive from them).
    Pair(u64, u64, [u64; 5]),
}

/// The outputs of the feature dataflow, per worker.
pub struct FeatureStreams<'scope> {
    /// Every example, once, at its epoch's time (cumulative).
    pub examples: Coll<'scope, Example>,
    /// The lagged aggregates of every user, item and pair (cumulative).
    pub aggregates: Coll<'scope, Aggregate>,
    /// Clean events and bot exclusions, once each, at their epoch's time.
    pub cleaned: Coll<'scope, Cleaned>,
}

/// Options of the feature dataflow.
#[derive(Clone, Copy, Debug)]
pub struct FeatureOptions {
    /// Epoch width in milliseconds.
    pub bucket_ms: i64,
    /// A user with more de-duplicated events than this in one epoch is a bot
    /// for that epoch; 0 turns the rule off.
    pub bot_threshold: u64,
}

/// A lagged clean event as the aggregates see it: `(user, item, kind)`.
pub type PairEvent = (u64, u64, Kind);

/// A saved aggregate a resumed run enters; the diff is the count.
///
/// Only the keys the new logs can touch are entered: their pairs as lagged
/// events, and for a user or an item the part of its totals that comes from
/// pairs not entered, so that its reduce sees the same input as if every
/// saved pair had been entered. Keys the new logs cannot touch keep their
/// saved aggregates outside the dataflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Restored {
    /// Lagged events of this kind for the pair `(user, item)`.
    Pair(u64, u64, Kind),
    /// Lagged events of this kind of the user, over the pairs not entered.
    UserEvents(u64, Kind),
    /// Distinct items of the user among the pairs not entered.
    UserItems(u64),
    /// Lagged events of this kind on the item, over the pairs not entered.
    ItemEvents(u64, Kind),
    /// Distinct users of the item among the pairs not entered.
    ItemUsers(u64),
}

/// Builds cleaning, aggregates and examples over the accepted `events`
/// (each at its epoch's time, once per row, duplicates included).
///
/// `restored` holds the saved aggregates of a resumed run (see [`Restored`]),
/// entered at the first epoch after the saved state's last one.
pub fn build<'scope>(
    events: Coll<'scope, Event>,
    restored: Coll<'scope, Restored>,
    options: FeatureOptions,
) -> FeatureStreams<'scope> {
    let bucket = options.bucket_ms;
    let epoch_of = move |ts: i64| epoch_of(ts, bucket);

    // Per-epoch view of the rows: each row is retracted one epoch after it enters.
    // Deduplicate and exclude bots, per user and epoch: each clean event and
    // bot note once, at its epoch's time.
    let cleaned = clean(events, options);
    let clean_events = cleaned.clone().flat_map(|(user, cleaned)| match cleaned {
        Cleaned::Event(ts, item, kind) => Some(Event {
            ts,
            user,
            item,
            kind,
        }),
        Cleaned::Bot { .. } => None,
    });

    // Aggregates as of the previous epoch: clean events count from the next epoch on.
    let restored_pairs = restored.clone().flat_map(|restored| match restored {
        Restored::Pair(user, item, kind) => Some((user, item, kind)),
        _ => None,
    });
    let lagged = clean_events
        .map(|event| (event.user, event.item, event.kind))
        .delay(|time| time + EPOCH_STEP)
        .concat(restored_pairs);

    // Pairs active in the epoch, with their purchase flag (windowed).
    let active = cleaned
        .clone()
        .flat_map(move |(user, cleaned)| match cleaned {
            Cleaned::Event(ts, item, kind) => Some((
                (user, item),
                PairIn::Active(epoch_of(ts), kind == Kind::Purchase),
            )),
            Cleaned::Bot { .. } => None,
        });
    let active = active
        .clone()
        .concat(active.negate().delay(|time| time + EPOCH_STEP));

    // The saved totals of touched users and items beyond their entered pairs.
    let restored_users = restored.clone().flat_map(|restored| match restored {
        Restored::UserEvents(user, kind) => Some((user, UserIn::Kind(kind))),
        Restored::UserItems(user) => Some((user, UserIn::Item)),
        _ => None,
    });
    let restored_items = restored.flat_map(|restored| match restored {
        Restored::ItemEvents(item, kind) => Some((item, ItemIn::Kind(kind))),
        Restored::ItemUsers(item) => Some((item, ItemIn::User)),
        _ => None,
    });

    let pairs = pair_stage(lagged.clone(), active);
    let users = user_stage(lagged.clone(), pairs.clone(), restored_users);
    let items = item_stage(lagged, pairs.clone(), users.clone(), restored_items);

    let examples = at_own_epoch(
        items.clone().flat_map(|(_, out)| match out {
            ItemOut::Example(example) => Some(example),
            ItemOut::Feat(_) => None,
        }),
        "examples: own epoch",
        |example: &Example| example.epoch,
    );

    let aggregates = pairs
        .flat_map(|((user, item), out)| match out {
            PairOut::Feat(feat) => Some(Aggregate::Pair(user, item, feat)),
            PairOut::Example { .. } => None,
        })
        .concat(users.flat_map(|(user, out)| match out {
            UserOut::Feat(feat) => Some(Aggregate::User(user, feat)),
            UserOut::Example { .. } => None,
        }))
        .concat(items.flat_map(|(item, out)| match out {
            ItemOut::Feat(feat) => Some(Aggregate::Item(item, feat)),
            ItemOut::Example(_) => None,
        }));

    let cleaned = cleaned.map(|(_, cleaned)| cleaned);
    FeatureStreams {
        examples,
        aggregates,
        cleaned,
    }
}

/// Deduplicates each user's rows of an epoch and drops the users that are
/// bots in it, once the epoch is complete. Emits every clean event and bot
/// note once, at its epoch's time (cumulative), keyed by user.
///
/// NB: the rows are an insert-only stream (a reader never retracts a row), so
/// an epoch's rows are final once the frontier has passed its time, and the
/// epoch can be cleaned in one pass: sort, drop repeats, count per user. The
/// rows are then released, so this state is bounded by the open epochs.
fn clean<'scope>(
    events: Coll<'scope, Event>,
    options: FeatureOptions,
) -> Coll<'scope, (u64, Cleaned)> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::channels::pact::Exchange;
    use timely::dataflow::operators::Capability;

    let bucket = options.bucket_ms;
    let threshold = options.bot_threshold;
    let by_user = Exchange::new(|(event, _, _): &(Event, Time, isize)| spread(event.user));
    events
        .inner
        .unary_frontier(by_user, "clean: dedup and bots", move |_, _| {
            let mut open: BTreeMap<Time, (Capability<Time>, Vec<Event>)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    for (event, time, diff) in data.drain(..) {
                        debug_assert!(diff > 0, "rows are only ever inserted");
                        let (_, rows) = open
                            .entry(time)
                            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                        rows.extend(std::iter::repeat_n(event, diff.max(0) as usize));
                    }
                });
                while let Some(entry) = open.first_entry() {
                    if frontier.frontier().less_equal(entry.key()) {
                        break;
                    }
                    let (time, (capability, rows)) = entry.remove_entry();
                    let mut session = output.session(&capability);
                    for (user, cleaned) in clean_epoch(rows, bucket, threshold) {
                        session.give(((user, cleaned), time, 1));
                    }
                }
            }
        })
        .as_collection()
}

/// Cleans one epoch's rows: the distinct events of each user, or one bot
/// note for a user with more than `threshold` of them (0: no bot rule).
fn clean_epoch(mut rows: Vec<Event>, bucket: i64, threshold: u64) -> Vec<(u64, Cleaned)> {
    rows.sort_unstable_by_key(|event| (event.user, event.ts, event.item, event.kind));
    rows.dedup();
    let mut cleaned = Vec::with_capacity(rows.len());
    for user_rows in rows.chunk_by(|a, b| a.user == b.user) {
        let user = user_rows[0].user;
        let distinct = user_rows.len() as u64;
        if threshold > 0 && distinct > threshold {
            let epoch = epoch_of(user_rows[0].ts, bucket);
            cleaned.push((
                user,
                Cleaned::Bot {
                    epoch,
                    excluded: distinct,
                },
            ));
        } else {
            cleaned.extend(
                user_rows
                    .iter()
                    .map(|e| (user, Cleaned::Event(e.ts, e.item, e.kind))),
            );
        }
    }
    cleaned
}

/// Spreads ids over workers: consecutive ids land on different workers.
fn spread(id: u64) -> u64 {
    crate::model::batch::splitmix64(id)
}

/// Input values of the pair reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum PairIn {
    /// A lagged clean event of this kind (multiplicity = count).
    Kind(Kind),
    /// The pair is active in this epoch; `true` for a purchase.
    Active(u64, bool),
}

/// Output values of the pair reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum PairOut {
    /// The pair's lagged event counts per kind.
    Feat([u64; 5]),
    /// The pair part of an example of `epoch`.
    Example {
        epoch: u64,
        label: bool,
        pair: [u64; 2],
    },
}

/// Input values of the user reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum UserIn {
    Kind(Kind),
    /// One per distinct item the user has a lagged clean event with.
    Item,
    Partial {
        epoch: u64,
        item: u64,
        label: bool,
        pair: [u64; 2],
    },
}

/// Output values of the user reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum UserOut {
    /// `[views, carts, purchases, items]` of the user.
    Feat([u64; 4]),
    Example {
        epoch: u64,
        item: u64,
        label: bool,
        user: [u64; 4],
        pair: [u64; 2],
    },
}

/// Input values of the item reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum ItemIn {
    Kind(Kind),
    /// One per distinct user with a lagged clean event on the item.
    User,
    Partial {
        epoch: u64,
        user: u64,
        label: bool,
        user_feat: [u64; 4],
        pair: [u64; 2],
    },
}

impl Aggregate {
    /// A pair's `(user, item, counts)`; `None` for a user or an item.
    pub fn pair(&self) -> Option<(u64, u64, [u64; 5])> {
        match *self {
            Aggregate::Pair(user, item, counts) => Some((user, item, counts)),
            _ => None,
        }
    }
}

/// Output values of the item reduce.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum ItemOut {
    /// `[views, carts, purchases, users]` of the item.
    Feat([u64; 4]),
    Example(Example),
}

/// Lagged counts of the five kinds, indexed by `Kind as usize`.
fn kind_counts<'a, V: 'a>(
    input: impl Iterator<Item = (&'a V, isize)>,
    kind_of: impl Fn(&V) -> Option<Kind>,
) -> Option<[u64; 5]> {
    let mut counts = [0u64; 5];
    let mut any = false;
    for (value, count) in input {
        if let Some(kind) = kind_of(value) {
            counts[kind as usize] += count as u64;
            any = true;
        }
    }
    any.then_some(counts)
}

/// The four aggregates of a user or an item, `[views, carts, purchases,
/// distinct partners]`, from the reduce input of its key: `classify` says of a
/// value whether it is a lagged event of a kind (`Some(Some(kind))`), one
/// distinct partner (`Some(None)`), or neither. `None` for a key with no
/// lagged event.
fn entity_features<V>(
    input: &[(&V, isize)],
    classify: impl Fn(&V) -> Option<Option<Kind>>,
) -> Option<[u64; 4]> {
    let counts = kind_counts(input.iter().map(|(v, r)| (*v, *r)), |v| {
        classify(v).flatten()
    })?;
    let partners: isize = input
        .iter()
        .filter(|(v, _)| classify(v) == Some(None))
        .map(|(_, r)| *r)
        .sum();
    Some([
        counts[Kind::View as usize],
        counts[Kind::Cart as usize],
        counts[Kind::Purchase as usize],
        partners as u64,
    ])
}

fn pair_stage<'scope>(
    lagged: Coll<'scope, PairEvent>,
    active: Coll<'scope, ((u64, u64), PairIn)>,
) -> Coll<'scope, ((u64, u64), PairOut)> {
    let input = lagged
        .map(|(user, item, kind)| ((user, item), PairIn::Kind(kind)))
        .concat(active);
    reduce(input, "features: pairs", |_pair, input, output| {
        let counts = kind_counts(input.iter().map(|(v, r)| (*v, *r)), |v| match v {
            PairIn::Kind(kind) => Some(*kind),
            PairIn::Active(..) => None,
        });
        if let Some(counts) = counts {
            output.push((PairOut::Feat(counts), 1));
        }
        let counts = counts.unwrap_or_default();
        let feat = [counts[Kind::View as usize], counts[Kind::Cart as usize]];
        // Active values of one epoch only (the window); the label is any purchase.
        let mut activity: Option<(u64, bool)> = None;
        for (value, _) in input {
            if let PairIn::Active(epoch, purchase) = **value {
                let label = activity.is_some_and(|(_, label)| label) || purchase;
                activity = Some((epoch, label));
            }
        }
        if let Some((epoch, label)) = activity {
            output.push((
                PairOut::Example {
                    epoch,
                    label,
                    pair: feat,
                },
                1,
            ));
        }
    })
}

fn user_stage<'scope>(
    lagged: Coll<'scope, PairEvent>,
    pairs: Coll<'scope, ((u64, u64), PairOut)>,
    restored: Coll<'scope, (u64, UserIn)>,
) -> Coll<'scope, (u64, UserOut)> {
    let from_pairs = pairs.map(|((user, item), out)| match out {
        PairOut::Feat(_) => (user, UserIn::Item),
        PairOut::Example { epoch, label, pair } => (
            user,
            UserIn::Partial {
                epoch,
                item,
                label,
                pair,
            },
        ),
    });
    let input = lagged
        .map(|(user, _, kind)| (user, UserIn::Kind(kind)))
        .concat(from_pairs)
        .concat(restored);
    reduce(input, "features: users", |_user, input, output| {
        let feat = entity_features(input, |v| match v {
            UserIn::Kind(kind) => Some(Some(*kind)),
            UserIn::Item => Some(None),
            UserIn::Partial { .. } => None,
        });
        if let Some(feat) = feat {
            output.push((UserOut::Feat(feat), 1));
        }
        let feat = feat.unwrap_or_default();
        for (value, _) in input {
            if let UserIn::Partial {
                epoch,
                item,
                label,
                pair,
            } = **value
            {
                output.push((
                    UserOut::Example {
                        epoch,
                        item,
                        label,
                        user: feat,
                        pair,
                    },
                    1,
                ));
            }
        }
    })
}

fn item_stage<'scope>(
    lagged: Coll<'scope, PairEvent>,
    pairs: Coll<'scope, ((u64, u64), PairOut)>,
    users: Coll<'scope, (u64, UserOut)>,
    restored: Coll<'scope, (u64, ItemIn)>,
) -> Coll<'scope, (u64, ItemOut)> {
    let from_pairs = pairs.flat_map(|((_, item), out)| match out {
        PairOut::Feat(_) => Some((item, ItemIn::User)),
        PairOut::Example { .. } => None,
    });
    let from_users = users.flat_map(|(user, out)| match out {
        UserOut::Feat(_) => None,
        UserOut::Example {
            epoch,
            item,
            label,
            user: user_feat,
            pair,
        } => Some((
            item,
            ItemIn::Partial {
                epoch,
                user,
                label,
                user_feat,
                pair,
            },
        )),
    });
    let input = lagged
        .map(|(_, item, kind)| (item, ItemIn::Kind(kind)))
        .concat(from_pairs)
        .concat(from_users)
        .concat(restored);
    reduce(input, "features: items", |item, input, output| {
        let feat = entity_features(input, |v| match v {
            ItemIn::Kind(kind) => Some(Some(*kind)),
            ItemIn::User => Some(None),
            ItemIn::Partial { .. } => None,
        });
        if let Some(feat) = feat {
            output.push((ItemOut::Feat(feat), 1));
        }
        let feat = feat.unwrap_or_default();
        for (value, _) in input {
            if let ItemIn::Partial {
                epoch,
                user,
                label,
                user_feat,
                pair,
            } = **value
            {
                let raw = [
                    user_feat[0],
                    user_feat[1],
                    user_feat[2],
                    user_feat[3],
                    feat[0],
                    feat[1],
                    feat[2],
                    feat[3],
                    pair[0],
                    pair[1],
                ];
                let example = Example {
                    epoch,
                    user,
                    item: *item,
                    label,
                    raw,
                };
                output.push((ItemOut::Example(example), 1));
            }
        }
    })
}

/// A named reduce with totally ordered times, as a collection.
fn reduce<'scope, K, V, V2, L>(
    input: Coll<'scope, (K, V)>,
    name: &str,
    logic: L,
) -> Coll<'scope, (K, V2)>
where
    K: differential_dataflow::ExchangeData + differential_dataflow::Hashable,
    V: differential_dataflow::ExchangeData,
    V2: differential_dataflow::ExchangeData,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
{
    let arranged: Arranged<'scope, _> = input
        .arrange_by_key_named(&format!("arrange: {name}"))
        .reduce_abelian::<_, ValBuilder<K, V2, Time, isize>, ValSpine<K, V2, Time, isize>, _, _>(
        name,
        logic,
        |vec, key, upds| {
            vec.clear();
            vec.extend(upds.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
        },
    );
    arranged.as_collection(|key, val| (key.clone(), val.clone()))
}

/// Keeps only the updates made at the record's own epoch time, turning a
/// windowed collection into a cumulative one.
///
/// Correct because the windowed content at `epoch_time(e)` is exactly the
/// records of epoch `e`: the updates at that time sum to it, and every other
/// update of such a record belongs to its retraction.
pub fn at_own_epoch<'scope, D, F>(
    input: Coll<'scope, D>,
    name: &str,
    epoch_of: F,
) -> Coll<'scope, D>
where
    D: differential_dataflow::Data,
    F: Fn(&D) -> u64 + 'static,
{
    use differential_dataflow::AsCollection;
    input
        .inner
        .unary(Pipeline, name, move |_, _| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let mut session = output.session(&capability);
                    for (record, time, diff) in data.drain(..) {
                        if time == epoch_time(epoch_of(&record)) {
                            session.give((record, time, diff));
                        }
                    }
                });
            }
        })
        .as_collection()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use differential_dataflow::input::Input;
    use timely::dataflow::operators::probe::Handle;

    use super::*;

    const BUCKET: i64 = 1000;

    /// A tiny deterministic generator (xorshift), enough for test data.
    fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        move |bound| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        }
    }

    fn random_events(seed: u64, rows: usize) -> Vec<Event> {
        let mut next = rng(seed);
        let mut events: Vec<Event> = (0..rows)
            .map(|_| Event {
                ts: (next(6) * BUCKET as u64 + next(BUCKET as u64)) as i64,
                user: next(12),
                item: next(15),
                kind: Kind::ALL[[0, 0, 0, 1, 2, 3, 4][next(7) as usize]],
            })
            .collect();
        // Exact duplicates, and a heavy user in epoch 2.
        for i in 0..rows / 10 {
            events.push(events[i * 7 % rows]);
        }
        for i in 0..12 {
            events.push(Event {
                ts: 2 * BUCKET + i,
                user: 99,
                item: i as u64 % 3,
                kind: Kind::View,
            });
        }
        events
    }

    /// The reference task, sections 2-5, by plain loops.
    fn batch_examples(events: &[Event], threshold: u64) -> BTreeSet<Example> {
        let distinct: BTreeSet<Event> = events.iter().copied().collect();
        let mut per_user_epoch: BTreeMap<(u64, i64), u64> = BTreeMap::new();
        for event in &distinct {
            *per_user_epoch
                .entry((event.user, event.ts / BUCKET))
                .or_default() += 1;
        }
        let clean: Vec<Event> = distinct
            .into_iter()
            .filter(|e| threshold == 0 || per_user_epoch[&(e.user, e.ts / BUCKET)] <= threshold)
            .collect();
        let epochs: BTreeSet<i64> = clean.iter().map(|e| e.ts / BUCKET).collect();
        let mut examples = BTreeSet::new();
        for &epoch in &epochs {
            let before: Vec<&Event> = clean.iter().filter(|e| e.ts / BUCKET < epoch).collect();
            let now: Vec<&Event> = clean.iter().filter(|e| e.ts / BUCKET == epoch).collect();
            let pairs: BTreeSet<(u64, u64)> = now.iter().map(|e| (e.user, e.item)).collect();
            for (user, item) in pairs {
                let count =
                    |f: &dyn Fn(&Event) -> bool| before.iter().filter(|e| f(e)).count() as u64;
                let distinct = |f: &dyn Fn(&Event) -> Option<u64>| {
                    before
                        .iter()
                        .filter_map(|e| f(e))
                        .collect::<BTreeSet<_>>()
                        .len() as u64
                };
                let raw = [
                    count(&|e| e.user == user && e.kind == Kind::View),
                    count(&|e| e.user == user && e.kind == Kind::Cart),
                    count(&|e| e.user == user && e.kind == Kind::Purchase),
                    distinct(&|e| (e.user == user).then_some(e.item)),
                    count(&|e| e.item == item && e.kind == Kind::View),
                    count(&|e| e.item == item && e.kind == Kind::Cart),
                    count(&|e| e.item == item && e.kind == Kind::Purchase),
                    distinct(&|e| (e.item == item).then_some(e.user)),
                    count(&|e| e.user == user && e.item == item && e.kind == Kind::View),
                    count(&|e| e.user == user && e.item == item && e.kind == Kind::Cart),
                ];
                let label = now
                    .iter()
                    .any(|e| e.user == user && e.item == item && e.kind == Kind::Purchase);
                examples.insert(Example {
                    epoch: epoch as u64,
                    user,
                    item,
                    label,
                    raw,
                });
            }
        }
        examples
    }

    /// Runs the dataflow with `workers` threads, feeding `events` round-robin.
    fn dataflow_examples(events: Vec<Event>, threshold: u64, workers: usize) -> BTreeSet<Example> {
        let found = Arc::new(Mutex::new(BTreeMap::<Example, isize>::new()));
        let sink = found.clone();
        let events = Arc::new(events);
        timely::execute(timely::Config::process(workers), move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let sink = sink.clone();
            let probe = Handle::new();
            let mut input = worker.dataflow::<Time, _, _>(|scope| {
                let (input, events) = scope.new_collection::<Event, isize>();
                let (_restored_input, restored) = scope.new_collection::<Restored, isize>();
                let options = FeatureOptions {
                    bucket_ms: BUCKET,
                    bot_threshold: threshold,
                };
                build(events, restored, options)
                    .examples
                    .inspect(move |(example, _, diff)| {
                        *sink.lock().unwrap().entry(example.clone()).or_default() += diff;
                    })
                    .probe_with(&probe);
                input
            });
            for event in events.iter().skip(index).step_by(peers) {
                input.update_at(*event, epoch_time((event.ts / BUCKET) as u64), 1);
            }
            input.close();
            while worker.step() {}
        })
        .unwrap();
        let found = found.lock().unwrap();
        assert!(
            found.values().all(|diff| *diff == 0 || *diff == 1),
            "each example once"
        );
        found
            .iter()
            .filter(|(_, diff)| **diff == 1)
            .map(|(e, _)| e.clone())
            .collect()
    }

    #[test]
    fn examples_match_a_batch_recomputation_for_any_worker_count() {
        for seed in 1..4 {
            let events = random_events(seed, 400);
            let expected = batch_examples(&events, 10);
            assert!(expected.iter().any(|e| e.label) && expected.iter().any(|e| e.raw == [0; 10]));
            for workers in [1, 3] {
                let mut shuffled = events.clone();
                shuffled.reverse();
                assert_eq!(
                    dataflow_examples(shuffled, 10, workers),
                    expected,
                    "seed {seed}, {workers} workers"
                );
            }
        }
    }

    #[test]
    fn bot_rule_off_keeps_heavy_users() {
        let events = random_events(7, 200);
        let with_bot = batch_examples(&events, 0);
        assert!(with_bot.iter().any(|e| e.user == 99));
        assert_eq!(dataflow_examples(events, 0, 2), with_bot);
    }
}
