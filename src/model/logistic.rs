//! Logistic regression as pure math: parameters, prediction, log loss and a
//! gradient sum whose total does not depend on how it was split or merged.
//!
//! The model is `p = sigmoid(w . x + b)` and each example's loss is the log
//! loss `-(y ln p + (1 - y) ln(1 - p))`. Its gradient is `(p - y) x_j` for
//! weight `j` and `p - y` for the bias (Bishop, "Pattern Recognition and
//! Machine Learning", 2006, section 4.3.2, eq. 4.91).
//!
//! Training is sharded: every worker sums the gradients of its share of a
//! mini-batch and the sums are combined. Floating-point addition is not
//! associative, so [`GradSum`] rounds each example's gradient to fixed point
//! first and adds integers: the combined sum is then bit-identical however
//! the mini-batch was split across workers and in whatever order the parts
//! were merged, which keeps every replica of the model identical.

use ndarray::Array1;
use serde::{Deserialize, Serialize};

/// A value that had to be finite was not.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[error("{what}[{index}] is not finite: {value}")]
pub struct NonFinite {
    /// What the value is, such as `"gradient"` or `"parameter"`.
    pub what: &'static str,
    /// Its coordinate: weights first, then the bias at index `dim`.
    pub index: usize,
    /// The offending value (NaN or an infinity).
    pub value: f64,
}

/// Weights and bias of a logistic-regression model.
///
/// Serialised as `{"weights": [..], "bias": ..}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ParamsRepr", into = "ParamsRepr")]
pub struct Params {
    /// One weight per feature.
    pub weights: Array1<f64>,
    /// The intercept.
    pub bias: f64,
}

/// The serialised form of [`Params`], since ndarray's serde support is not
/// enabled.
#[derive(Serialize, Deserialize)]
struct ParamsRepr {
    weights: Vec<f64>,
    bias: f64,
}

impl From<ParamsRepr> for Params {
    fn from(repr: ParamsRepr) -> Params {
        Params {
            weights: Array1::from(repr.weights),
            bias: repr.bias,
        }
    }
}

impl From<Params> for ParamsRepr {
    fn from(params: Params) -> ParamsRepr {
        ParamsRepr {
            weights: params.weights.to_vec(),
            bias: params.bias,
        }
    }
}

impl Params {
    /// A model with `dim` zero weights and a zero bias: it predicts 0.5.
    pub fn zeros(dim: usize) -> Params {
        Params {
            weights: Array1::zeros(dim),
            bias: 0.0,
        }
    }

    /// Number of weights (features).
    pub fn dim(&self) -> usize {
        self.weights.len()
    }

    /// Whether every weight and the bias are finite.
    pub fn is_finite(&self) -> bool {
        self.first_non_finite().is_none()
    }

    /// The first weight (or then the bias, at index `dim`) that is not finite.
    pub fn first_non_finite(&self) -> Option<NonFinite> {
        let bias = std::iter::once(&self.bias);
        let value_at = self.weights.iter().chain(bias).position(|v| !v.is_finite());
        value_at.map(|index| NonFinite {
            what: "parameter",
            index,
            value: if index < self.dim() {
                self.weights[index]
            } else {
                self.bias
            },
        })
    }
}

/// The logistic function `1 / (1 + e^-z)`, without overflow for any input.
///
/// For `z >= 0` it is computed as `1 / (1 + e^-z)` and for `z < 0` as
/// `e^z / (1 + e^z)`, so `exp` only ever sees a non-positive argument and lies
/// in `(0, 1]`. `+inf` gives 1, `-inf` gives 0; NaN gives NaN.
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// The model's purchase probability for one example: `sigmoid(w . x + b)`.
///
/// The dot product is summed in feature order, so it is deterministic.
///
/// # Panics
///
/// If `x.len()` differs from the number of weights.
pub fn predict(params: &Params, x: &[f64]) -> f64 {
    sigmoid(logit(params, x))
}

/// `w . x + b`, summed in feature order.
fn logit(params: &Params, x: &[f64]) -> f64 {
    assert_eq!(
        x.len(),
        params.dim(),
        "an example has exactly one value per model weight"
    );
    params
        .weights
        .iter()
        .zip(x)
        .map(|(w, v)| w * v)
        .sum::<f64>()
        + params.bias
}

/// Smallest probability [`log_loss`] uses; `1 - LOSS_EPSILON` is the largest.
///
/// The same clamp as scikit-learn's historical `log_loss(eps=1e-15)`: it
/// bounds one example's loss by `-ln(1e-15) ~ 34.5`.
pub const LOSS_EPSILON: f64 = 1e-15;

/// Log loss of predicting `p` for an example with `label`:
/// `-ln p` if the label is true, `-ln(1 - p)` otherwise.
///
/// `p` is first clamped to `[LOSS_EPSILON, 1 - LOSS_EPSILON]`, so the result
/// is finite and in `[0, 34.6]` for every `p` except NaN, which gives NaN.
/// The clamp only affects the reported loss, never the gradient.
pub fn log_loss(p: f64, label: bool) -> f64 {
    let p = p.clamp(LOSS_EPSILON, 1.0 - LOSS_EPSILON);
    if label { -p.ln() } else { -(-p).ln_1p() }
}

/// Fixed-point scale of [`GradSum`]: a gradient value `v` is stored as the
/// integer `round(v * 2^40)`.
///
/// Rounding moves each value by at most `2^-41 ~ 4.5e-13`, so a mean of such
/// values is within `2^-41` of the mean of the unrounded values, plus
/// the relative rounding of the final conversion to `f64` and the division
/// (`2^-52` together).
pub const FIXED_POINT_SCALE: f64 = (1u64 << 40) as f64;

/// Largest magnitude a single gradient value may have: `2^40`.
///
/// A value this large becomes an integer of at most `2^80`, so an `i128` sum
/// holds at least `2^47` (1.4e14) examples of it before it could overflow.
/// Scaled features of the reference task stay many orders of magnitude below.
pub const MAX_GRADIENT: f64 = FIXED_POINT_SCALE;

/// A per-example gradient could not be added to a [`GradSum`].
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum GradientError {
    /// The gradient (so a feature or a parameter) was NaN or infinite.
    #[error(transparent)]
    NonFinite(#[from] NonFinite),
    /// The gradient was too large for the fixed-point sum.
    #[error("gradient[{index}] = {value:e} exceeds the fixed-point range of +/-2^40")]
    OutOfRange {
        /// Its coordinate: weights first, then the bias at index `dim`.
        index: usize,
        /// The offending value.
        value: f64,
    },
}

/// A sum of per-example log-loss gradients, in fixed point so that it is
/// exact under any split and merge order.
///
/// Holds `dim + 1` integer sums (the weights' coordinates, then the bias) in
/// units of `2^-40` (see [`FIXED_POINT_SCALE`]) and the number of examples.
/// It is what workers exchange to combine a mini-batch's gradient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradSum {
    /// `sum over examples of round(g_j * 2^40)`, weights then bias.
    sums: Vec<i128>,
    /// Number of examples added.
    count: u64,
}

impl GradSum {
    /// An empty sum for a model with `dim` weights.
    pub fn new(dim: usize) -> GradSum {
        GradSum {
            sums: vec![0; dim + 1],
            count: 0,
        }
    }

    /// Number of weights of the model this sum is for.
    pub fn dim(&self) -> usize {
        self.sums.len() - 1
    }

    /// Number of examples added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no example has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw fixed-point sums, weights then bias, in units of `2^-40`.
    pub fn sums(&self) -> &[i128] {
        &self.sums
    }

    /// Adds the log-loss gradient of one example at `params`: `(p - y) x_j`
    /// for each weight and `p - y` for the bias, each rounded to fixed point.
    ///
    /// # Errors
    ///
    /// If a feature, a parameter or a gradient value is not finite, or a
    /// gradient value is larger in magnitude than [`MAX_GRADIENT`]; the sum
    /// is then left unchanged.
    ///
    /// # Panics
    ///
    /// If `params` or `x` do not have this sum's dimension, or an `i128` sum
    /// overflows (impossible before `2^47` examples, see [`MAX_GRADIENT`]).
    pub fn add(&mut self, params: &Params, x: &[f64], label: bool) -> Result<(), GradientError> {
        assert_eq!(
            params.dim(),
            self.dim(),
            "gradient sum and model have one dimension"
        );
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            let (what, value) = ("feature", x[index]);
            return Err(NonFinite { what, index, value }.into());
        }
        if let Some(bad) = params.first_non_finite() {
            return Err(bad.into());
        }
        let residual = predict(params, x) - if label { 1.0 } else { 0.0 };

        // Check every coordinate before touching the sums, so that an error
        // leaves them as they were; then round and add.
        let gradient = || x.iter().map(move |v| residual * v).chain([residual]);
        for (index, value) in gradient().enumerate() {
            check_gradient(index, value)?;
        }
        for (sum, value) in self.sums.iter_mut().zip(gradient()) {
            *sum = sum
                .checked_add(to_fixed(value))
                .expect("fixed-point gradient sum fits in i128");
        }
        self.count += 1;
        Ok(())
    }

    /// Adds every example of `other` to this sum: integer addition, so the
    /// result does not depend on the order or grouping of merges.
    ///
    /// # Panics
    ///
    /// If the dimensions differ or an `i128` sum overflows.
    pub fn merge(&mut self, other: &GradSum) {
        assert_eq!(
            self.dim(),
            other.dim(),
            "merged gradient sums have one dimension"
        );
        for (sum, term) in self.sums.iter_mut().zip(&other.sums) {
            *sum = sum
                .checked_add(*term)
                .expect("fixed-point gradient sum fits in i128");
        }
        self.count += other.count;
    }

    /// The mean gradient, weights then bias: `sums / 2^40 / count`; `None`
    /// when no example was added.
    ///
    /// Within `2^-41` (absolute) plus `2^-52` (relative) of the mean of the
    /// unrounded per-example gradients; see [`FIXED_POINT_SCALE`].
    pub fn mean(&self) -> Option<Array1<f64>> {
        if self.count == 0 {
            return None;
        }
        let count = self.count as f64;
        Some(
            self.sums
                .iter()
                .map(|&sum| sum as f64 / FIXED_POINT_SCALE / count)
                .collect(),
        )
    }
}

/// Checks that a gradient value can be stored in fixed point.
fn check_gradient(index: usize, value: f64) -> Result<(), GradientError> {
    if !value.is_finite() {
        let what = "gradient";
        return Err(NonFinite { what, index, value }.into());
    }
    if value.abs() > MAX_GRADIENT {
        return Err(GradientError::OutOfRange { index, value });
    }
    Ok(())
}

/// Rounds a checked gradient value to fixed point: `round(value * 2^40)`,
/// halves away from zero (as `f64::round`).
///
/// Scaling by a power of two is exact. The rounding is done through `i64`
/// when the scaled value fits, since converting `f64` to `i128` and
/// `f64::round` are library calls that dominated the cost of
/// [`GradSum::add`]; the result is the same integer.
fn to_fixed(value: f64) -> i128 {
    let scaled = value * FIXED_POINT_SCALE;
    if scaled.abs() < I64_SAFE {
        // Truncate toward zero, then push a fraction of at least one half away
        // from zero. `scaled - truncated` is exact: it is `scaled`'s fractional part.
        let truncated = scaled as i64;
        let fraction = scaled - truncated as f64;
        let away = i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5);
        i128::from(truncated + away)
    } else {
        // At most 2^80 in magnitude after the range check: exact in i128.
        scaled.round() as i128
    }
}

/// Magnitude below which a scaled gradient is rounded through `i64`: `2^62`,
/// leaving room for the rounding step.
const I64_SAFE: f64 = (1u64 << 62) as f64;

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64, a tiny deterministic generator for test data.
    fn splitmix(state: &mut u64) -> u64 {
        let value = crate::model::batch::splitmix64(*state);
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        value
    }

    /// Uniform in [-1, 1).
    fn uniform(state: &mut u64) -> f64 {
        (splitmix(state) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    fn random_params(state: &mut u64, dim: usize) -> Params {
        Params {
            weights: (0..dim).map(|_| uniform(state)).collect(),
            bias: uniform(state),
        }
    }

    fn random_examples(state: &mut u64, dim: usize, count: usize) -> Vec<(Vec<f64>, bool)> {
        (0..count)
            .map(|_| {
                let x = (0..dim).map(|_| 3.0 * uniform(state)).collect();
                (x, splitmix(state).is_multiple_of(3))
            })
            .collect()
    }

    /// The log loss of one example, computed from the logit `z` as
    /// `softplus(z) - y z` so that no digits are lost forming `1 - p`.
    fn loss_at(params: &Params, x: &[f64], label: bool) -> f64 {
        let z = logit(params, x);
        let softplus = z.max(0.0) + (-z.abs()).exp().ln_1p();
        softplus - if label { z } else { 0.0 }
    }

    #[test]
    fn gradient_matches_central_finite_differences() {
        // Central differences have error O(h^2) ~ 1e-10 here plus rounding
        // ~ eps / h ~ 1e-10; 1e-7 absolute leaves a wide margin.
        let h = 1e-5;
        let mut state = 1;
        for _ in 0..20 {
            let params = random_params(&mut state, 10);
            let (x, label) = random_examples(&mut state, 10, 1).remove(0);
            let mut sum = GradSum::new(10);
            sum.add(&params, &x, label).expect("finite gradient");
            let gradient = sum.mean().expect("one example");

            for index in 0..=10 {
                let shifted = |delta: f64| {
                    let mut moved = params.clone();
                    if index < 10 {
                        moved.weights[index] += delta;
                    } else {
                        moved.bias += delta;
                    }
                    loss_at(&moved, &x, label)
                };
                let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
                let difference = (gradient[index] - numeric).abs();
                assert!(
                    difference < 1e-7,
                    "coordinate {index}: {} vs {numeric}",
                    gradient[index]
                );
            }
        }
    }

    #[test]
    fn sigmoid_and_log_loss_stay_finite_at_extremes() {
        for z in [1e308, -1e308, f64::MAX, f64::MIN, 745.0, -745.0, 0.0] {
            let p = sigmoid(z);
            assert!((0.0..=1.0).contains(&p), "sigmoid({z}) = {p}");
            for label in [false, true] {
                let loss = log_loss(p, label);
                assert!(
                    loss.is_finite() && loss >= 0.0,
                    "log_loss({p}, {label}) = {loss}"
                );
            }
        }
        assert_eq!(sigmoid(f64::INFINITY), 1.0);
        assert_eq!(sigmoid(f64::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(f64::NAN).is_nan());
        for p in [f64::INFINITY, f64::NEG_INFINITY, 1e308, -1e308, 0.0, 1.0] {
            assert!(log_loss(p, true).is_finite() && log_loss(p, false).is_finite());
        }
        // -ln(1e-15) is the cap.
        let cap = -LOSS_EPSILON.ln();
        assert!((log_loss(0.0, true) - cap).abs() < 1e-12);
        assert!(
            (log_loss(1.0, false) - cap).abs() < 1e-3,
            "{}",
            log_loss(1.0, false)
        );
    }

    #[test]
    fn sigmoid_and_log_loss_match_hand_values() {
        // sigmoid(ln 3) = 3/4; log loss of 3/4 is -ln(3/4) or -ln(1/4).
        let tolerance = 1e-15;
        assert!((sigmoid(3f64.ln()) - 0.75).abs() < tolerance);
        assert!((sigmoid(-(3f64.ln())) - 0.25).abs() < tolerance);
        assert!((log_loss(0.75, true) + 0.75f64.ln()).abs() < tolerance);
        assert!((log_loss(0.75, false) + 0.25f64.ln()).abs() < tolerance);
        let params = Params {
            weights: Array1::from(vec![1.0, -2.0]),
            bias: 0.5,
        };
        // logit = 1*2 - 2*0.25 + 0.5 = 2.
        let expected = 1.0 / (1.0 + (-2f64).exp());
        assert!((predict(&params, &[2.0, 0.25]) - expected).abs() < tolerance);
    }

    #[test]
    fn grad_sum_merge_order_does_not_change_the_integers() {
        let mut state = 7;
        let params = random_params(&mut state, 10);
        let examples = random_examples(&mut state, 10, 400);

        let mut whole = GradSum::new(10);
        for (x, label) in &examples {
            whole.add(&params, x, *label).expect("finite gradient");
        }

        for split_seed in 0..5 {
            // Shuffle (Fisher-Yates), cut into uneven parts, merge in reverse.
            let mut shuffled = examples.clone();
            let mut split_state = 100 + split_seed;
            for i in (1..shuffled.len()).rev() {
                let j = (splitmix(&mut split_state) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let mut parts = Vec::new();
            let mut rest = &shuffled[..];
            while !rest.is_empty() {
                let take = 1 + (splitmix(&mut split_state) % 60) as usize;
                let (head, tail) = rest.split_at(take.min(rest.len()));
                let mut part = GradSum::new(10);
                for (x, label) in head {
                    part.add(&params, x, *label).expect("finite gradient");
                }
                parts.push(part);
                rest = tail;
            }
            let mut merged = GradSum::new(10);
            parts.iter().rev().for_each(|part| merged.merge(part));
            assert_eq!(merged, whole, "split seed {split_seed}");
        }
    }

    #[test]
    fn grad_sum_mean_is_close_to_the_f64_mean() {
        let mut state = 11;
        let params = random_params(&mut state, 10);
        let examples = random_examples(&mut state, 10, 1000);
        let mut sum = GradSum::new(10);
        let mut reference = [0.0f64; 11];
        for (x, label) in &examples {
            sum.add(&params, x, *label).expect("finite gradient");
            let residual = predict(&params, x) - f64::from(u8::from(*label));
            for (j, value) in x.iter().enumerate() {
                reference[j] += residual * value;
            }
            reference[10] += residual;
        }
        let mean = sum.mean().expect("examples were added");
        for (j, total) in reference.iter().enumerate() {
            // Fixed-point rounding 2^-41 ~ 4.5e-13; the f64 reference adds ~1e-13.
            let expected = total / 1000.0;
            assert!(
                (mean[j] - expected).abs() < 1e-12,
                "{j}: {} vs {expected}",
                mean[j]
            );
        }
    }

    #[test]
    fn fixed_point_rounding_matches_f64_round() {
        let mut state = 5;
        let mut values = vec![
            0.0,
            -0.0,
            MAX_GRADIENT,
            -MAX_GRADIENT,
            4194304.0,
            -4194304.0,
        ];
        for k in [0.5, 1.5, 2.5, 1e6 + 0.5, 2f64.powi(52) + 1.0, 2f64.powi(61)] {
            // Exact ties and large integers, at both signs, scaled back down.
            values.extend([k / FIXED_POINT_SCALE, -k / FIXED_POINT_SCALE]);
        }
        // Either side of the i64 fast path's boundary.
        let boundary = I64_SAFE / FIXED_POINT_SCALE;
        values.extend([
            boundary,
            -boundary,
            boundary * (1.0 - 1e-15),
            boundary * 1.5,
        ]);
        for _ in 0..100_000 {
            let magnitude = 2f64.powi((splitmix(&mut state) % 80) as i32 - 40);
            values.push(uniform(&mut state) * magnitude);
        }
        for value in values {
            let expected = (value * FIXED_POINT_SCALE).round() as i128;
            assert_eq!(to_fixed(value), expected, "{value:e}");
        }
    }

    #[test]
    fn empty_grad_sum_has_no_mean() {
        let sum = GradSum::new(3);
        assert!(sum.is_empty());
        assert_eq!(sum.mean(), None);
        assert_eq!(sum.sums(), &[0, 0, 0, 0]);
    }

    #[test]
    fn non_finite_or_huge_gradient_is_refused_and_leaves_the_sum_unchanged() {
        let params = Params::zeros(2);
        let mut sum = GradSum::new(2);
        sum.add(&params, &[1.0, 2.0], true)
            .expect("finite gradient");
        let before = sum.clone();

        let what_and_index = |error: GradientError| match error {
            GradientError::NonFinite(bad) => (bad.what, bad.index),
            GradientError::OutOfRange { index, .. } => ("out of range", index),
        };
        let error = sum.add(&params, &[1.0, f64::NAN], true).unwrap_err();
        assert_eq!(what_and_index(error), ("feature", 1));
        let error = sum.add(&params, &[f64::INFINITY, 0.0], false).unwrap_err();
        assert_eq!(what_and_index(error), ("feature", 0));
        let error = sum.add(&params, &[0.0, 1e13], false).unwrap_err();
        assert_eq!(what_and_index(error), ("out of range", 1));
        let mut nan_params = Params::zeros(2);
        nan_params.bias = f64::NAN;
        let error = sum.add(&nan_params, &[1.0, 1.0], false).unwrap_err();
        assert_eq!(what_and_index(error), ("parameter", 2));
        // Finite inputs whose logit is inf - inf: the gradient itself is NaN.
        let opposed = Params {
            weights: Array1::from(vec![2.0, -2.0]),
            bias: 0.0,
        };
        let error = sum
            .add(&opposed, &[f64::MAX, f64::MAX], true)
            .map_err(what_and_index);
        assert_eq!(error, Err(("gradient", 0)));

        assert_eq!(sum, before);
    }

    #[test]
    fn grad_sum_and_params_round_trip_through_json() {
        let mut state = 3;
        let params = random_params(&mut state, 4);
        let mut sum = GradSum::new(4);
        for (x, label) in random_examples(&mut state, 4, 10) {
            sum.add(&params, &x, label).expect("finite gradient");
        }
        let text = serde_json::to_string(&sum).expect("sum serialises");
        assert_eq!(
            serde_json::from_str::<GradSum>(&text).expect("sum deserialises"),
            sum
        );
        let text = serde_json::to_string(&params).expect("params serialise");
        assert_eq!(
            serde_json::from_str::<Params>(&text).expect("params deserialise"),
            params
        );
    }

    #[test]
    fn grad_sum_round_trips_through_timely_wire_format() {
        // Timely serialises data exchanged between processes with bincode 1.
        let mut state = 13;
        let params = random_params(&mut state, 10);
        let mut sum = GradSum::new(10);
        for (x, label) in random_examples(&mut state, 10, 50) {
            sum.add(&params, &x, label).expect("finite gradient");
        }
        let bytes = bincode::serialize(&sum).expect("sum serialises");
        assert_eq!(
            bincode::deserialize::<GradSum>(&bytes).expect("deserialises"),
            sum
        );
    }

    #[test]
    fn params_report_their_first_non_finite_value() {
        let mut params = Params::zeros(3);
        assert!(params.is_finite());
        params.bias = f64::INFINITY;
        assert_eq!(params.first_non_finite().map(|bad| bad.index), Some(3));
        params.weights[1] = f64::NAN;
        assert_eq!(params.first_non_finite().map(|bad| bad.index), Some(1));
        assert!(!params.is_finite());
    }
}
