//! Quality metrics of scored examples: the per-epoch and overall report of
//! the reference task (section 7).
//!
//! Epoch `e`'s examples are scored by the model as of the end of epoch
//! `e - 1` before it trains on them (progressive validation); [`evaluate`]
//! summarises such `(probability, label)` pairs. The result depends only on
//! the multiset of pairs, not on their order, so it is the same however the
//! examples were spread over workers.

use serde::{Deserialize, Serialize};

use crate::model::log_loss;

/// Threshold at which a probability predicts a purchase: `p >= 0.5`.
pub const DECISION_THRESHOLD: f64 = 0.5;

/// Summary of how well probabilities predicted labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Number of examples.
    pub examples: u64,
    /// Number of examples whose label is true (a purchase).
    pub positives: u64,
    /// Mean log loss, with probabilities clamped as by
    /// [`log_loss`]; 0 with no examples.
    pub log_loss: f64,
    /// Area under the ROC curve, exact (see [`evaluate`]); 0.5 when only one
    /// class, or none, is present.
    pub auc: f64,
    /// Share of examples predicted correctly at [`DECISION_THRESHOLD`]; 0
    /// with no examples.
    pub accuracy: f64,
    /// Share of positives predicted positive at [`DECISION_THRESHOLD`]; 0
    /// with no positives.
    pub recall: f64,
}

/// Summarises scored examples `(p, label)`; sorts the slice by `p` on the way.
///
/// The AUC is the Mann-Whitney statistic (Hanley and McNeil, "The meaning and
/// use of the area under a receiver operating characteristic (ROC) curve",
/// Radiology 1982): with examples ranked 1..n by ascending `p`, tied scores
/// sharing the average of their ranks, and `R+` the rank sum of the `n+`
/// positives among `n-` negatives,
///
/// ```text
/// AUC = (R+ - n+ (n+ + 1) / 2) / (n+ n-)
/// ```
///
/// which is the probability that a random positive scores above a random
/// negative, a tie counting 1/2. It is computed in integers (ranks doubled to
/// keep the halves exact) and divided once, so it is exact up to that final
/// rounding.
///
/// The slice is sorted by `(p, label)` with `f64::total_cmp`, so the log-loss
/// sum runs in an order fixed by the multiset of pairs. Scores are expected
/// in `[0, 1]`; a NaN score is ranked above every number, tied with nothing,
/// and makes the log loss NaN. O(n log n) time, no allocation.
pub fn evaluate(scored: &mut [(f64, bool)]) -> EvalSummary {
    scored.sort_unstable_by(|(p, label), (q, other)| p.total_cmp(q).then(label.cmp(other)));

    let examples = scored.len() as u64;
    let positives = scored.iter().filter(|(_, label)| *label).count() as u64;
    let negatives = examples - positives;

    // Threshold counts: true positives and true negatives at p >= 0.5.
    let predicted = |p: f64| p >= DECISION_THRESHOLD;
    let true_positives = scored
        .iter()
        .filter(|&&(p, label)| label && predicted(p))
        .count();
    let true_negatives = scored
        .iter()
        .filter(|&&(p, label)| !label && !predicted(p))
        .count();

    let loss_sum: f64 = scored.iter().map(|&(p, label)| log_loss(p, label)).sum();
    EvalSummary {
        examples,
        positives,
        log_loss: ratio_or_zero(loss_sum, examples),
        auc: auc_of_sorted(scored, positives, negatives),
        accuracy: ratio_or_zero((true_positives + true_negatives) as f64, examples),
        recall: ratio_or_zero(true_positives as f64, positives),
    }
}

/// `numerator / denominator`, or 0 when the denominator is 0.
fn ratio_or_zero(numerator: f64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator / denominator as f64
    }
}

/// The rank-sum AUC of examples sorted by ascending score.
fn auc_of_sorted(sorted: &[(f64, bool)], positives: u64, negatives: u64) -> f64 {
    if positives == 0 || negatives == 0 {
        return 0.5;
    }

    // Twice the positives' rank sum: a tie group at 0-based positions
    // start..end has average 1-based rank (start + 1 + end) / 2.
    let mut doubled_rank_sum: u128 = 0;
    let mut start = 0;
    while start < sorted.len() {
        let score = sorted[start].0;
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|(p, _)| *p == score)
                .count()
                .max(1);
        let group_positives = sorted[start..end]
            .iter()
            .filter(|(_, label)| *label)
            .count();
        doubled_rank_sum += group_positives as u128 * (start + 1 + end) as u128;
        start = end;
    }

    // 2 (R+ - n+ (n+ + 1) / 2) = 2 R+ - n+ (n+ + 1), never negative.
    let positives = u128::from(positives);
    let doubled_u = doubled_rank_sum - positives * (positives + 1);
    doubled_u as f64 / (2 * positives * u128::from(negatives)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitmix(state: &mut u64) -> u64 {
        let value = crate::model::batch::splitmix64(*state);
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        value
    }

    /// AUC by definition: over all positive-negative pairs, 1 when the
    /// positive scores higher, 1/2 on a tie.
    fn brute_force_auc(scored: &[(f64, bool)]) -> f64 {
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for &(p, _) in scored.iter().filter(|(_, label)| *label) {
            for &(q, _) in scored.iter().filter(|(_, label)| !*label) {
                pairs += 1.0;
                wins += if p > q {
                    1.0
                } else if p == q {
                    0.5
                } else {
                    0.0
                };
            }
        }
        if pairs == 0.0 { 0.5 } else { wins / pairs }
    }

    #[test]
    fn auc_matches_brute_force_pair_count_with_many_ties() {
        let mut state = 2024;
        for round in 0..200 {
            let len = (splitmix(&mut state) % 40) as usize;
            // Few distinct scores so that most groups are ties.
            let levels = 1 + splitmix(&mut state) % 6;
            let mut scored: Vec<(f64, bool)> = (0..len)
                .map(|_| {
                    let p = (splitmix(&mut state) % levels) as f64 / levels as f64;
                    (p, splitmix(&mut state).is_multiple_of(3))
                })
                .collect();
            let expected = brute_force_auc(&scored);
            let summary = evaluate(&mut scored);
            // Both are exact fractions, rounded once or a few times.
            assert!(
                (summary.auc - expected).abs() < 1e-12,
                "round {round}: {summary:?}"
            );
        }
    }

    #[test]
    fn hand_derived_summary() {
        // Positives at 0.9 and 0.4; negatives at 0.4, 0.2 and 0.6.
        let mut scored = vec![
            (0.9, true),
            (0.4, false),
            (0.4, true),
            (0.2, false),
            (0.6, false),
        ];
        let summary = evaluate(&mut scored);
        assert_eq!(summary.examples, 5);
        assert_eq!(summary.positives, 2);
        // Pairs: 0.9 beats all 3; 0.4 beats 0.2, ties 0.4, loses to 0.6: 4.5 / 6.
        assert!((summary.auc - 0.75).abs() < 1e-15);
        // Correct at 0.5: 0.9 (pos), 0.4 (neg), 0.2 (neg); wrong: 0.4 (pos), 0.6 (neg).
        assert!((summary.accuracy - 0.6).abs() < 1e-15);
        assert!((summary.recall - 0.5).abs() < 1e-15);
        let loss = -(0.9f64.ln() + 0.6f64.ln() + 0.4f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 5.0;
        assert!(
            (summary.log_loss - loss).abs() < 1e-14,
            "{} vs {loss}",
            summary.log_loss
        );
    }

    #[test]
    fn one_class_or_empty_gives_documented_defaults() {
        let empty = evaluate(&mut []);
        assert_eq!(
            empty,
            EvalSummary {
                auc: 0.5,
                ..EvalSummary::default()
            }
        );

        let mut negatives = vec![(0.1, false), (0.7, false)];
        let summary = evaluate(&mut negatives);
        assert_eq!(
            (summary.auc, summary.recall, summary.accuracy),
            (0.5, 0.0, 0.5)
        );

        let mut positives = vec![(0.5, true), (0.5, true)];
        let summary = evaluate(&mut positives);
        assert_eq!(
            (summary.auc, summary.recall, summary.accuracy),
            (0.5, 1.0, 1.0)
        );
    }

    #[test]
    fn summary_does_not_depend_on_input_order() {
        let mut state = 9;
        let scored: Vec<(f64, bool)> = (0..300)
            .map(|_| {
                (
                    (splitmix(&mut state) % 1000) as f64 / 999.0,
                    splitmix(&mut state).is_multiple_of(2),
                )
            })
            .collect();
        let mut forward = scored.clone();
        let mut backward: Vec<_> = scored.into_iter().rev().collect();
        assert_eq!(evaluate(&mut forward), evaluate(&mut backward));
    }

    #[test]
    fn extreme_probabilities_keep_log_loss_finite() {
        let mut scored = vec![(0.0, true), (1.0, false), (1.0, true), (0.0, false)];
        let summary = evaluate(&mut scored);
        assert!(summary.log_loss.is_finite());
        assert_eq!(summary.auc, 0.5);
    }
}
