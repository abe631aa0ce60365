//! Exact scaler statistics per feature, computed from integer sufficient
//! statistics, and the scaling of an example with them.
//!
//! Every feature of the reference task (section 5) is `x = ln(1 + a)` for an
//! integer aggregate `a`, so the multiset of a feature's values over a set of
//! examples is exactly described by a histogram from `a` to how many examples
//! have it. A [`Histogram`] holds one such map per feature; it only ever adds
//! integers, so it is the same whatever order examples arrive or histograms
//! are merged in, and it can be kept incrementally by the dataflow.
//!
//! [`Histogram::stats`] turns it into count, mean, population standard
//! deviation, min and max per feature (reference task, section 6). It walks the
//! values in ascending order, so the floating-point result is a function of the
//! histogram alone, and it uses the two-pass variance
//! `sum n_a (x_a - mean)^2 / N`, never `E[x^2] - E[x]^2`, so there is no
//! catastrophic cancellation however long the log is.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Number of features of the reference task (section 4).
pub const NUM_FEATURES: usize = 10;

/// Names of the features, in the order of the reference task's table
/// (section 4): the order of every feature array in this crate.
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "u_views",
    "u_carts",
    "u_purchases",
    "u_items",
    "i_views",
    "i_carts",
    "i_purchases",
    "i_users",
    "p_views",
    "p_carts",
];

/// The feature value of an integer aggregate: `x = ln(1 + a)`.
///
/// Reference task, section 5. `ln_1p` is exact for small `a` and finite for
/// every `u64` (at most `ln(2^64) ~ 44.4`).
pub fn feature_value(a: u64) -> f64 {
    (a as f64).ln_1p()
}

/// Per feature, how many examples have each integer aggregate value `a`.
///
/// Invariant: every feature's map holds counts summing to [`Histogram::count`]
/// and no zero counts, since each example contributes one value per feature.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Number of examples added.
    count: u64,
    /// For each feature, in [`FEATURE_NAMES`] order: aggregate value `a` to
    /// number of examples with it.
    features: [BTreeMap<u64, u64>; NUM_FEATURES],
}

impl Histogram {
    /// Adds one example, given by its ten raw integer aggregates.
    ///
    /// # Panics
    ///
    /// If the example count would overflow `u64` (more than 1.8e19 examples).
    pub fn add(&mut self, raw: &[u64; NUM_FEATURES]) {
        self.count = checked_count(self.count, 1);
        for (map, &a) in self.features.iter_mut().zip(raw) {
            let n = map.entry(a).or_insert(0);
            *n = checked_count(*n, 1);
        }
    }

    /// Adds every example of `other` to this histogram.
    ///
    /// Integer addition only, so merging in any order and grouping gives the
    /// same histogram.
    ///
    /// # Panics
    ///
    /// If a count would overflow `u64`.
    pub fn merge(&mut self, other: &Histogram) {
        self.count = checked_count(self.count, other.count);
        for (map, other_map) in self.features.iter_mut().zip(&other.features) {
            for (&a, &n) in other_map {
                let mine = map.entry(a).or_insert(0);
                *mine = checked_count(*mine, n);
            }
        }
    }

    /// Number of examples added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no example has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The map from aggregate value to example count for feature `index`
    /// ([`FEATURE_NAMES`] order).
    ///
    /// # Panics
    ///
    /// If `index >= NUM_FEATURES`.
    pub fn feature(&self, index: usize) -> &BTreeMap<u64, u64> {
        &self.features[index]
    }

    /// Count, mean, population standard deviation, min and max of each
    /// feature's values `x = ln(1 + a)`.
    ///
    /// Deterministic: a function of the histogram alone. See
    /// [`FeatureStats`] for the formulas and the empty case.
    pub fn stats(&self) -> [FeatureStats; NUM_FEATURES] {
        std::array::from_fn(|index| FeatureStats::from_counts(&self.features[index]))
    }
}

/// Adds two counts.
///
/// # Panics
///
/// On `u64` overflow: that many examples cannot come from one log.
fn checked_count(left: u64, right: u64) -> u64 {
    left.checked_add(right)
        .expect("histogram counts fit in u64")
}

/// Summary statistics of one feature's values over a set of examples.
///
/// With `N = sum n_a` examples, value `x_a = ln(1 + a)` held by `n_a` of them:
///
/// - `mean = sum n_a x_a / N`, clamped into `[min, max]` (so a feature with a
///   single distinct value has exactly that mean);
/// - `std = sqrt(sum n_a (x_a - mean)^2 / N)`, the population standard
///   deviation by the two-pass formula (Chan, Golub and LeVeque, "Algorithms
///   for computing the sample variance", 1983: the textbook one-pass
///   `E[x^2] - E[x]^2` loses all precision when the variance is small next to
///   the mean); every term is non-negative, so the variance is too;
/// - `min`, `max`: least and greatest `x_a` with `n_a > 0`.
///
/// Sums run over `a` in ascending order. With `N = 0` every field is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Number of examples `N`.
    pub count: u64,
    /// Mean of `x` over the examples.
    pub mean: f64,
    /// Population standard deviation of `x`, >= 0.
    pub std: f64,
    /// Least `x`.
    pub min: f64,
    /// Greatest `x`.
    pub max: f64,
}

impl FeatureStats {
    /// Computes the statistics from one feature's value counts.
    ///
    /// Zero counts are skipped; see the type's docs for the formulas.
    pub fn from_counts(counts: &BTreeMap<u64, u64>) -> FeatureStats {
        let values = || {
            counts
                .iter()
                .filter(|&(_, &n)| n > 0)
                .map(|(&a, &n)| (feature_value(a), n))
        };

        // Min and max come from the ends of the ascending walk; x is monotone in a.
        let count: u64 = values().map(|(_, n)| n).sum();
        let (Some((min, _)), Some((max, _))) = (values().next(), values().next_back()) else {
            return FeatureStats::default();
        };
        let total = count as f64;

        // First pass: the mean. Rounding can push it a few ulps past the range.
        let mean = (values().map(|(x, n)| n as f64 * x).sum::<f64>() / total).clamp(min, max);

        // Second pass: squared deviations from that mean.
        let variance = values()
            .map(|(x, n)| n as f64 * (x - mean) * (x - mean))
            .sum::<f64>()
            / total;

        FeatureStats {
            count,
            mean,
            std: variance.max(0.0).sqrt(),
            min,
            max,
        }
    }

    /// Scales a feature value with these statistics.
    ///
    /// Z-score: `(x - mean) / std`; min-max: `(x - min) / (max - min)`
    /// (reference task, section 6). The result is 0 when there are no
    /// examples or the divisor is 0, so a constant feature carries no signal
    /// instead of an infinity. Min-max is not clipped: a value beyond the
    /// range seen so far scales to below 0 or above 1.
    pub fn scale(&self, x: f64, kind: ScalerKind) -> f64 {
        let (offset, spread) = match kind {
            ScalerKind::ZScore => (self.mean, self.std),
            ScalerKind::MinMax => (self.min, self.max - self.min),
        };
        if self.count == 0 || spread <= 0.0 {
            return 0.0;
        }
        (x - offset) / spread
    }
}

/// Scales one example's raw aggregates: `stats[j].scale(ln(1 + raw[j]), kind)`
/// for each feature `j`.
pub fn scale_example(
    stats: &[FeatureStats; NUM_FEATURES],
    raw: &[u64; NUM_FEATURES],
    kind: ScalerKind,
) -> [f64; NUM_FEATURES] {
    std::array::from_fn(|j| stats[j].scale(feature_value(raw[j]), kind))
}

/// How feature values are scaled before the model sees them.
///
/// Default [`ScalerKind::ZScore`]. Parsed from, and written as, `"zscore"` or
/// `"minmax"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalerKind {
    /// `(x - mean) / std`.
    #[default]
    ZScore,
    /// `(x - min) / (max - min)`.
    MinMax,
}

impl ScalerKind {
    /// Every kind, in declaration order.
    pub const ALL: [ScalerKind; 2] = [ScalerKind::ZScore, ScalerKind::MinMax];

    /// The name used in options and configuration files.
    pub fn name(self) -> &'static str {
        match self {
            ScalerKind::ZScore => "zscore",
            ScalerKind::MinMax => "minmax",
        }
    }
}

impl fmt::Display for ScalerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scaler name that is not one of [`ScalerKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown scaler {0:?}: expected \"zscore\" or \"minmax\"")]
pub struct UnknownScaler(pub String);

impl FromStr for ScalerKind {
    type Err = UnknownScaler;

    fn from_str(name: &str) -> Result<ScalerKind, UnknownScaler> {
        ScalerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownScaler(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative tolerance against the naive oracle and hand-derived values:
    /// both sides sum at most a few thousand terms, so each is within ~1e-13
    /// of the exact value.
    const TOLERANCE: f64 = 1e-12;

    fn assert_close(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() <= TOLERANCE * expected.abs(),
            "{what}: got {actual}, expected {expected}"
        );
    }

    /// A tiny deterministic generator (splitmix64) so the tests need no crate.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Naive two-pass statistics over the expanded list of values.
    fn naive(values: &[f64]) -> (f64, f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, variance.sqrt(), min, max)
    }

    fn random_examples(seed: u64, count: usize) -> Vec<[u64; NUM_FEATURES]> {
        let mut state = seed;
        (0..count)
            .map(|_| {
                std::array::from_fn(|j| {
                    // Feature j ranges over 0..=(4 << j): small ranges give many ties.
                    splitmix(&mut state) % ((4u64 << j) + 1)
                })
            })
            .collect()
    }

    #[test]
    fn feature_value_is_log_one_plus() {
        assert_eq!(feature_value(0), 0.0);
        assert_close(feature_value(1), std::f64::consts::LN_2, "ln 2");
        assert_close(
            feature_value(u64::MAX),
            64.0 * std::f64::consts::LN_2,
            "ln 2^64",
        );
    }

    #[test]
    fn stats_match_naive_two_pass_over_expanded_values() {
        for seed in 0..5 {
            let examples = random_examples(seed, 3000);
            let mut histogram = Histogram::default();
            examples.iter().for_each(|raw| histogram.add(raw));
            assert_eq!(histogram.count(), 3000);

            let stats = histogram.stats();
            for j in 0..NUM_FEATURES {
                let values: Vec<f64> = examples.iter().map(|raw| feature_value(raw[j])).collect();
                let (mean, std, min, max) = naive(&values);
                let name = FEATURE_NAMES[j];
                assert_eq!(stats[j].count, 3000);
                assert_close(stats[j].mean, mean, &format!("{name} mean"));
                assert_close(stats[j].std, std, &format!("{name} std"));
                assert_eq!(stats[j].min, min, "{name} min");
                assert_eq!(stats[j].max, max, "{name} max");
            }
        }
    }

    #[test]
    fn merge_in_any_order_gives_the_same_histogram() {
        let examples = random_examples(42, 500);
        let mut whole = Histogram::default();
        examples.iter().for_each(|raw| whole.add(raw));

        let mut parts = [
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        ];
        for (index, raw) in examples.iter().enumerate() {
            parts[index % 3].add(raw);
        }
        let mut forward = Histogram::default();
        parts.iter().for_each(|part| forward.merge(part));
        let mut backward = Histogram::default();
        parts.iter().rev().for_each(|part| backward.merge(part));

        assert_eq!(forward, whole);
        assert_eq!(backward, whole);
        assert_eq!(forward.stats(), whole.stats());
    }

    #[test]
    fn hand_derived_stats_for_a_small_histogram() {
        // Feature 0 takes a = 0, 0, 1, 3: x = 0, 0, ln 2, ln 4 = 2 ln 2.
        let mut histogram = Histogram::default();
        for a in [0, 0, 1, 3] {
            histogram.add(&[a; NUM_FEATURES]);
        }
        let stats = histogram.stats()[0];
        let ln2 = std::f64::consts::LN_2;
        // mean = 3 ln2 / 4; deviations -3/4, -3/4, 1/4, 5/4 (times ln2);
        // variance = (9 + 9 + 1 + 25) / 16 / 4 ln2^2 = 11/16 ln2^2.
        assert_close(stats.mean, 0.75 * ln2, "mean");
        assert_close(stats.std, (11.0f64 / 16.0).sqrt() * ln2, "std");
        assert_eq!((stats.min, stats.max), (0.0, 2.0 * ln2));
        assert_close(stats.scale(0.0, ScalerKind::MinMax), 0.0, "minmax low");
        assert_close(stats.scale(ln2, ScalerKind::MinMax), 0.5, "minmax mid");
        assert_close(
            stats.scale(2.0 * ln2, ScalerKind::MinMax),
            1.0,
            "minmax high",
        );
        assert_close(
            stats.scale(2.0 * ln2, ScalerKind::ZScore),
            1.25 / (11.0f64 / 16.0).sqrt(),
            "zscore",
        );
    }

    #[test]
    fn zero_variance_feature_scales_to_zero() {
        let mut histogram = Histogram::default();
        for _ in 0..7 {
            histogram.add(&[5; NUM_FEATURES]);
        }
        let stats = histogram.stats()[3];
        assert_eq!(stats.mean, feature_value(5));
        assert_eq!(stats.std, 0.0);
        for kind in ScalerKind::ALL {
            assert_eq!(stats.scale(feature_value(5), kind), 0.0, "{kind}");
            assert_eq!(stats.scale(feature_value(9), kind), 0.0, "{kind}");
        }
    }

    #[test]
    fn empty_histogram_gives_zero_stats_and_zero_scale() {
        let histogram = Histogram::default();
        assert!(histogram.is_empty());
        for stats in histogram.stats() {
            assert_eq!(stats, FeatureStats::default());
            assert_eq!(stats.scale(3.0, ScalerKind::ZScore), 0.0);
            assert_eq!(stats.scale(3.0, ScalerKind::MinMax), 0.0);
        }
        let scaled = scale_example(&histogram.stats(), &[7; NUM_FEATURES], ScalerKind::ZScore);
        assert_eq!(scaled, [0.0; NUM_FEATURES]);
    }

    #[test]
    fn huge_count_of_one_value_keeps_stats_finite() {
        // 10^15 examples at a = 1000 and one each at 0 and u64::MAX.
        let mut histogram = Histogram::default();
        let bulk_count = 1_000_000_000_000_000;
        let bulk = Histogram {
            count: bulk_count,
            features: std::array::from_fn(|_| BTreeMap::from([(1000, bulk_count)])),
        };
        histogram.merge(&bulk);
        histogram.add(&[0; NUM_FEATURES]);
        histogram.add(&[u64::MAX; NUM_FEATURES]);

        let stats = histogram.stats()[0];
        let x = feature_value(1000);
        assert!(stats.mean.is_finite() && stats.std.is_finite());
        assert!(stats.std >= 0.0);
        assert!(stats.mean >= stats.min && stats.mean <= stats.max);
        // Deviations of the two outliers dominate: var ~ (x^2 + (44.36 - x)^2) / N.
        let outliers = x * x + (feature_value(u64::MAX) - x).powi(2);
        let expected_std = (outliers / 1e15).sqrt();
        assert!(
            (stats.std - expected_std).abs() <= 1e-6 * expected_std,
            "std {} vs {expected_std}",
            stats.std
        );
        assert_close(stats.mean, x, "mean");
    }

    #[test]
    fn scale_example_uses_each_feature_own_stats() {
        let mut histogram = Histogram::default();
        histogram.add(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        histogram.add(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let stats = histogram.stats();
        let scaled = scale_example(
            &stats,
            &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            ScalerKind::ZScore,
        );
        // Two distinct values per feature: the larger is one std above the mean.
        for value in scaled {
            assert_close(value, 1.0, "z of the larger of two values");
        }
        let scaled = scale_example(&stats, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], ScalerKind::MinMax);
        assert_eq!(scaled, [0.0; NUM_FEATURES]);
    }

    #[test]
    fn scaler_kind_parses_and_names_allowed_values_on_error() {
        assert_eq!("zscore".parse(), Ok(ScalerKind::ZScore));
        assert_eq!("minmax".parse(), Ok(ScalerKind::MinMax));
        assert_eq!(ScalerKind::default(), ScalerKind::ZScore);
        let error = "z".parse::<ScalerKind>().unwrap_err().to_string();
        assert_eq!(
            error,
            r#"unknown scaler "z": expected "zscore" or "minmax""#
        );
    }

    #[test]
    fn histogram_round_trips_through_json() {
        let mut histogram = Histogram::default();
        random_examples(7, 20)
            .iter()
            .for_each(|raw| histogram.add(raw));
        let text = serde_json::to_string(&histogram).expect("histogram serialises");
        let back: Histogram = serde_json::from_str(&text).expect("histogram deserialises");
        assert_eq!(back, histogram);
    }
}
