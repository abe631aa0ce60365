//! Resuming at the cost of the new logs, not of the history: a resumed run
//! enters into the dataflow only the saved aggregates its new logs can touch,
//! and every other key keeps its saved aggregates, outside the dataflow.
//!
//! A row can change only the aggregates of its user, its item and its pair,
//! and the example it makes reads only those. So before the dataflow starts,
//! each process reads its input files once for the keys they hold
//! ([`Touched::scan`]), and one pass over the saved pairs picks what to enter
//! ([`restored`]): the touched pairs, and for each touched user and item the
//! part of its totals that comes from its other pairs, so that its reduce sees
//! what it would see had every saved pair been entered. After the run,
//! [`overlay`] lays the aggregates the dataflow computed over the saved ones.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;

use crate::clean::Binding;
use crate::event::Kind;
use crate::features::{Aggregate, Restored};
use crate::ingest::{InputFile, ShareReader};
use crate::model::batch::splitmix64;

/// A saved pair: `(user, item, counts)`, counts indexed by `Kind as usize`.
pub type SavedPair = (u64, u64, [u64; 5]);

/// The users, items and pairs of every row of the new logs that parses: a
/// superset of the keys whose aggregates the run can change.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    users: IdSet<u64>,
    items: IdSet<u64>,
    pairs: IdSet<(u64, u64)>,
}

impl Touched {
    /// Reads every file whole and keeps the keys of its rows that parse
    /// (rows that will turn out late, duplicates or a bot's only cost an
    /// unused key).
    ///
    /// # Errors
    /// When a file cannot be read; the error names it.
    pub fn scan(files: &[InputFile], bindings: &[Binding], delimiter: u8) -> io::Result<Touched> {
        let mut touched = Touched::default();
        for (file, binding) in files.iter().zip(bindings) {
            let mut reader = ShareReader::new(file, file.share(0, 1)?, delimiter)?;
            while reader.next_block(|row| {
                if let Ok(parsed) = binding.parse(row.record) {
                    touched.add(parsed.event.user, parsed.event.item);
                }
            })? {}
        }
        Ok(touched)
    }

    /// Adds the keys of one event of `user` on `item`.
    pub fn add(&mut self, user: u64, item: u64) {
        self.users.insert(user);
        self.items.insert(item);
        self.pairs.insert((user, item));
    }
}

/// What a resumed run enters into the dataflow, each with its count (the
/// diff): the saved counts of every touched pair, and for every touched user
/// and item its saved totals over its untouched pairs. Untouched keys get
/// nothing.
///
/// The list depends only on `saved` and `touched`, in a fixed order, so
/// every process of a cluster computes the same one and its workers can
/// split it by position, each entry entered once.
pub fn restored(saved: &[SavedPair], touched: &Touched) -> Vec<(Restored, isize)> {
    let mut entered = Vec::new();
    let mut users: BTreeMap<u64, Totals> = BTreeMap::new();
    let mut items: BTreeMap<u64, Totals> = BTreeMap::new();

    // One pass over the state; most pairs are neither touched nor of a
    // touched user or item.
    // NB: saved pairs come sorted by user, so a user is looked up once per run.
    let mut user_touched = (None, false);
    for (user, item, counts) in saved {
        if user_touched.0 != Some(*user) {
            user_touched = (Some(*user), touched.users.contains(user));
        }
        let user_touched = user_touched.1;
        let item_touched = touched.items.contains(item);
        if user_touched && item_touched && touched.pairs.contains(&(*user, *item)) {
            for (kind, count) in Kind::ALL.into_iter().zip(counts) {
                if *count > 0 {
                    entered.push((Restored::Pair(*user, *item, kind), *count as isize));
                }
            }
            continue;
        }
        if user_touched {
            users.entry(*user).or_default().add(counts);
        }
        if item_touched {
            items.entry(*item).or_default().add(counts);
        }
    }

    // The totals of the untouched pairs, in the terms of the user and item
    // reduces: events per kind, and one partner per pair with any event.
    for (user, totals) in users {
        totals.enter(
            |kind| Restored::UserEvents(user, kind),
            Restored::UserItems(user),
            &mut entered,
        );
    }
    for (item, totals) in items {
        totals.enter(
            |kind| Restored::ItemEvents(item, kind),
            Restored::ItemUsers(item),
            &mut entered,
        );
    }
    entered
}

/// The aggregates at the end of a resumed run: those of the saved pairs,
/// with every aggregate the dataflow computed (`fresh`) in place of the saved
/// one of its key. Sorted.
///
/// The saved user and item aggregates derive from the saved pairs: a user's
/// `[views, carts, purchases, items]` sums its pairs, counting as items the
/// pairs with any event, and an item's likewise. A pair's counts only grow,
/// so a saved pair never disappears; one whose counts are all zero holds no
/// event, and is left out, as the dataflow leaves it out.
pub fn overlay(saved: &[SavedPair], fresh: &[Aggregate]) -> Vec<Aggregate> {
    let mut saved = Cow::Borrowed(saved);
    if !saved.is_sorted_by_key(|(user, item, _)| (*user, *item)) {
        saved
            .to_mut()
            .sort_unstable_by_key(|(user, item, _)| (*user, *item));
    }
    let saved_pairs = saved
        .iter()
        .filter(|(_, _, counts)| counts.iter().any(|&count| count > 0));
    let mut fresh = fresh.to_vec();
    fresh.sort_unstable();
    let mut merged = Overlay {
        merged: Vec::with_capacity(saved.len() * 2 + fresh.len()),
        fresh: fresh.into_iter().peekable(),
    };

    // The saved aggregates, in the order `Aggregate` sorts: users, items,
    // pairs. The pairs are sorted by user, so each user's are together.
    let mut user: Option<(u64, Totals)> = None;
    let mut items: IdMap<u64, Totals> = IdMap::default();
    for (pair_user, item, counts) in saved_pairs.clone() {
        match &mut user {
            Some((current, totals)) if current == pair_user => totals.add(counts),
            _ => {
                if let Some((current, totals)) = user.replace((*pair_user, Totals::of(counts))) {
                    merged.push(Aggregate::User(current, totals.features()));
                }
            }
        }
        items.entry(*item).or_default().add(counts);
    }
    if let Some((current, totals)) = user {
        merged.push(Aggregate::User(current, totals.features()));
    }
    let mut items: Vec<(u64, Totals)> = items.into_iter().collect();
    items.sort_unstable_by_key(|(item, _)| *item);
    for (item, totals) in items {
        merged.push(Aggregate::Item(item, totals.features()));
    }
    for (user, item, counts) in saved_pairs {
        merged.push(Aggregate::Pair(*user, *item, *counts));
    }
    merged.finish()
}

/// The pairs of the saved state with every pair the dataflow computed
/// (`fresh`) in place of the saved one of its key, sorted: the pairs a
/// checkpoint holds. The pairs-only part of [`overlay`].
pub fn overlay_pairs(saved: &[SavedPair], mut fresh: Vec<SavedPair>) -> Vec<SavedPair> {
    let by_key = |(user, item, _): &SavedPair| (*user, *item);
    let mut saved = Cow::Borrowed(saved);
    if !saved.is_sorted_by_key(by_key) {
        saved.to_mut().sort_unstable_by_key(by_key);
    }
    fresh.sort_unstable_by_key(by_key);
    let mut merged = Vec::with_capacity(saved.len() + fresh.len());
    let mut fresh = fresh.into_iter().peekable();
    for pair in saved
        .iter()
        .filter(|(_, _, counts)| counts.iter().any(|&c| c > 0))
    {
        while let Some(next) = fresh.next_if(|next| by_key(next) < by_key(pair)) {
            merged.push(next);
        }
        if fresh.peek().is_none_or(|next| by_key(next) != by_key(pair)) {
            merged.push(*pair);
        }
    }
    merged.extend(fresh);
    merged
}

/// A sorted merge of saved aggregates (pushed in order) with fresh ones,
/// the fresh aggregate winning where both have a key.
struct Overlay {
    merged: Vec<Aggregate>,
    fresh: std::iter::Peekable<std::vec::IntoIter<Aggregate>>,
}

impl Overlay {
    fn push(&mut self, saved: Aggregate) {
        while let Some(next) = self.fresh.next_if(|next| key(next) < key(&saved)) {
            self.merged.push(next);
        }
        if self
            .fresh
            .peek()
            .is_none_or(|next| key(next) != key(&saved))
        {
            self.merged.push(saved);
        }
    }

    fn finish(mut self) -> Vec<Aggregate> {
        self.merged.extend(self.fresh);
        self.merged
    }
}

/// What identifies an aggregate: its kind and its key.
fn key(aggregate: &Aggregate) -> (u8, u64, u64) {
    match *aggregate {
        Aggregate::User(user, _) => (0, user, 0),
        Aggregate::Item(item, _) => (1, item, 0),
        Aggregate::Pair(user, item, _) => (2, user, item),
    }
}

/// A hash set of ids, for the lookups of the passes over the state.
type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// A hash map keyed by ids, for the passes over the state.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes ids with splitmix64 rounds. SipHash, the default, would be most of
/// the cost of a pass over the state, and its resistance to chosen keys buys
/// nothing here: a log that made ids collide would only slow its own run.
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = splitmix64(self.0 ^ value);
    }
}

/// A user's or an item's totals over some of its pairs: the events of each
/// kind, and the pairs with any event (its distinct partners).
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    events: [u64; 5],
    partners: u64,
}

impl Totals {
    fn of(counts: &[u64; 5]) -> Totals {
        let mut totals = Totals::default();
        totals.add(counts);
        totals
    }

    fn add(&mut self, counts: &[u64; 5]) {
        if counts.iter().any(|&count| count > 0) {
            for (total, count) in self.events.iter_mut().zip(counts) {
                *total += count;
            }
            self.partners += 1;
        }
    }

    /// `[views, carts, purchases, partners]`, as `features/` reports a user
    /// or an item.
    fn features(&self) -> [u64; 4] {
        [
            self.events[Kind::View as usize],
            self.events[Kind::Cart as usize],
            self.events[Kind::Purchase as usize],
            self.partners,
        ]
    }

    /// Appends the non-zero totals as restored records.
    fn enter(
        &self,
        events: impl Fn(Kind) -> Restored,
        partners: Restored,
        entered: &mut Vec<(Restored, isize)>,
    ) {
        for (kind, count) in Kind::ALL.into_iter().zip(self.events) {
            if count > 0 {
                entered.push((events(kind), count as isize));
            }
        }
        if self.partners > 0 {
            entered.push((partners, self.partners as isize));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small state: user 1 has three pairs, item 10 three users; pair
    /// (3, 12) holds only purchases, pair (4, 13) nothing at all.
    fn state() -> Vec<SavedPair> {
        vec![
            (1, 10, [2, 1, 0, 0, 0]),
            (1, 11, [1, 0, 0, 0, 1]),
            (1, 12, [0, 0, 0, 1, 0]),
            (2, 10, [5, 0, 1, 0, 0]),
            (3, 10, [1, 0, 0, 0, 0]),
            (3, 12, [0, 0, 0, 2, 0]),
            (4, 13, [0, 0, 0, 0, 0]),
        ]
    }

    fn sorted(mut entered: Vec<(Restored, isize)>) -> Vec<(Restored, isize)> {
        entered.sort();
        entered
    }

    #[test]
    fn only_touched_keys_are_entered_with_the_rest_of_their_totals() {
        let mut touched = Touched::default();
        touched.add(1, 10);
        touched.add(3, 14);
        let entered = sorted(restored(&state(), &touched));
        let expected = sorted(vec![
            // The touched pair, as lagged events.
            (Restored::Pair(1, 10, Kind::View), 2),
            (Restored::Pair(1, 10, Kind::Cart), 1),
            // User 1 beyond (1, 10): (1, 11) and (1, 12).
            (Restored::UserEvents(1, Kind::View), 1),
            (Restored::UserEvents(1, Kind::Purchase), 1),
            (Restored::UserEvents(1, Kind::Favorite), 1),
            (Restored::UserItems(1), 2),
            // User 3, touched through a new pair: all of its saved pairs.
            (Restored::UserEvents(3, Kind::View), 1),
            (Restored::UserEvents(3, Kind::Purchase), 2),
            (Restored::UserItems(3), 2),
            // Item 10 beyond (1, 10): (2, 10) and (3, 10).
            (Restored::ItemEvents(10, Kind::View), 6),
            (Restored::ItemEvents(10, Kind::RemoveFromCart), 1),
            (Restored::ItemUsers(10), 2),
            // Item 14 is new: nothing saved.
        ]);
        assert_eq!(entered, expected);
    }

    #[test]
    fn nothing_is_entered_for_untouched_keys() {
        let mut touched = Touched::default();
        touched.add(99, 98);
        assert!(restored(&state(), &touched).is_empty());
    }

    #[test]
    fn overlay_keeps_saved_keys_and_takes_fresh_ones() {
        let fresh = vec![
            Aggregate::User(1, [4, 1, 1, 4]),
            Aggregate::Item(14, [1, 0, 0, 1]),
            Aggregate::Pair(1, 10, [3, 1, 0, 0, 0]),
            Aggregate::Pair(1, 14, [1, 0, 0, 0, 0]),
        ];
        let mut shuffled = state();
        shuffled.reverse();
        let overlaid = overlay(&shuffled, &fresh);
        assert_eq!(
            overlaid,
            vec![
                Aggregate::User(1, [4, 1, 1, 4]),
                Aggregate::User(2, [5, 0, 0, 1]),
                Aggregate::User(3, [1, 0, 2, 2]),
                Aggregate::Item(10, [8, 1, 0, 3]),
                Aggregate::Item(11, [1, 0, 0, 1]),
                Aggregate::Item(12, [0, 0, 3, 2]),
                Aggregate::Item(14, [1, 0, 0, 1]),
                Aggregate::Pair(1, 10, [3, 1, 0, 0, 0]),
                Aggregate::Pair(1, 11, [1, 0, 0, 0, 1]),
                Aggregate::Pair(1, 12, [0, 0, 0, 1, 0]),
                Aggregate::Pair(1, 14, [1, 0, 0, 0, 0]),
                Aggregate::Pair(2, 10, [5, 0, 1, 0, 0]),
                Aggregate::Pair(3, 10, [1, 0, 0, 0, 0]),
                Aggregate::Pair(3, 12, [0, 0, 0, 2, 0]),
            ]
        );
        assert_eq!(overlay(&state(), &[]), overlay(&shuffled, &[]));
    }

    #[test]
    fn pair_overlay_agrees_with_the_full_overlay() {
        let fresh = vec![
            (1, 11, [3, 0, 0, 0, 1]),
            (0, 5, [1, 0, 0, 0, 0]),
            (9, 9, [0, 1, 0, 0, 0]),
        ];
        let pairs = overlay_pairs(&state(), fresh.clone());
        let aggregates: Vec<Aggregate> = fresh
            .iter()
            .map(|(user, item, counts)| Aggregate::Pair(*user, *item, *counts))
            .collect();
        let expected: Vec<SavedPair> = overlay(&state(), &aggregates)
            .into_iter()
            .filter_map(|aggregate| match aggregate {
                Aggregate::Pair(user, item, counts) => Some((user, item, counts)),
                _ => None,
            })
            .collect();
        assert_eq!(pairs, expected);
        assert_eq!(
            pairs.len(),
            8,
            "six saved with events, one replaced, two new"
        );
    }
}
