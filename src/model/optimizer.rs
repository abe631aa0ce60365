//! Optimizers that turn a mini-batch's mean gradient into a parameter update:
//! plain SGD, AdaGrad and Adam, with L2 and L1 regularisation.
//!
//! The objective minimised over a mini-batch `B` is
//!
//! ```text
//! (1/|B|) sum_{i in B} log_loss_i(w, b) + (l2 / 2) |w|^2 + l1 |w|_1
//! ```
//!
//! The bias is never regularised. The smooth part's gradient is the mean
//! log-loss gradient ([`GradSum::mean`](super::GradSum::mean)) plus `l2 w`;
//! the optimizer steps on it, and the L1 term is then applied exactly as a
//! proximal (soft-threshold) step. Each step is a deterministic function of
//! the state, the parameters and the mean gradient, so replicas that apply the
//! same mean gradients stay bit-identical.

use std::fmt;
use std::str::FromStr;

use ndarray::Array1;
use serde::{Deserialize, Serialize};

use super::logistic::{NonFinite, Params};

/// AdaGrad's `eps`, added to the root of the accumulated squared gradient.
pub const ADAGRAD_EPSILON: f64 = 1e-8;

/// Adam's decay rate of the first-moment (mean) estimate, `beta1`.
pub const ADAM_BETA1: f64 = 0.9;

/// Adam's decay rate of the second-moment (uncentred variance) estimate,
/// `beta2`.
pub const ADAM_BETA2: f64 = 0.999;

/// Adam's `eps`, added to the root of the bias-corrected second moment.
pub const ADAM_EPSILON: f64 = 1e-8;

/// Which update rule turns a gradient into a step.
///
/// Default [`OptimizerKind::Sgd`]. Parsed from, and written as, `"sgd"`,
/// `"adagrad"` or `"adam"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Plain stochastic gradient descent: `w <- w - lr g`.
    #[default]
    Sgd,
    /// AdaGrad (Duchi, Hazan and Singer, "Adaptive Subgradient Methods for
    /// Online Learning and Stochastic Optimization", JMLR 2011), diagonal:
    /// `G <- G + g^2`, `w <- w - lr g / (sqrt(G) + eps)`, eps
    /// [`ADAGRAD_EPSILON`], `G` starting at 0.
    Adagrad,
    /// Adam (Kingma and Ba, "Adam: A Method for Stochastic Optimization",
    /// ICLR 2015, Algorithm 1): `m <- b1 m + (1 - b1) g`,
    /// `v <- b2 v + (1 - b2) g^2`, `w <- w - lr m^ / (sqrt(v^) + eps)` with
    /// the bias corrections `m^ = m / (1 - b1^t)`, `v^ = v / (1 - b2^t)`;
    /// `b1` [`ADAM_BETA1`], `b2` [`ADAM_BETA2`], eps [`ADAM_EPSILON`].
    Adam,
}

impl OptimizerKind {
    /// Every kind, in declaration order.
    pub const ALL: [OptimizerKind; 3] = [
        OptimizerKind::Sgd,
        OptimizerKind::Adagrad,
        OptimizerKind::Adam,
    ];

    /// The name used in options and configuration files.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adagrad => "adagrad",
            OptimizerKind::Adam => "adam",
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An optimizer name that is not one of [`OptimizerKind::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown optimizer {0:?}: expected \"sgd\", \"adagrad\" or \"adam\"")]
pub struct UnknownOptimizer(pub String);

impl FromStr for OptimizerKind {
    type Err = UnknownOptimizer;

    fn from_str(name: &str) -> Result<OptimizerKind, UnknownOptimizer> {
        OptimizerKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownOptimizer(name.to_owned()))
    }
}

/// The training knobs of the model.
///
/// Missing fields of a serialised config take their defaults; unknown fields
/// are an error. Checked by [`OptimizerConfig::validate`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// The update rule. Default [`OptimizerKind::Sgd`].
    pub kind: OptimizerKind,
    /// Learning rate `lr`, the step size per mini-batch (for AdaGrad and Adam,
    /// the scale of the per-coordinate step).
    ///
    /// Default 0.1; finite and > 0. Unit: parameter units per unit of
    /// gradient (for SGD) or per step (AdaGrad, Adam).
    pub lr: f64,
    /// L2 penalty `l2`: adds `(l2 / 2) |w|^2` to the objective, so `l2 w` to
    /// the weights' gradient (never the bias).
    ///
    /// Default 1e-6; finite and >= 0; 0 turns it off. Unit: per squared
    /// weight.
    pub l2: f64,
    /// L1 penalty `l1`: adds `l1 |w|_1` to the objective, applied as a
    /// soft-threshold step after each update (see [`Optimizer::apply`]).
    ///
    /// Default 0 (off); finite and >= 0. Unit: per absolute weight.
    pub l1: f64,
    /// Number of examples per mini-batch: one optimizer step each.
    ///
    /// Default 256; >= 1. Read by the trainer that forms the batches, not by
    /// [`Optimizer::apply`].
    pub batch_size: usize,
}

impl Default for OptimizerConfig {
    fn default() -> OptimizerConfig {
        OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            l2: 1e-6,
            l1: 0.0,
            batch_size: 256,
        }
    }
}

/// An optimizer knob outside its allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("optimizer option {knob} = {value}: must be {allowed}")]
pub struct InvalidKnob {
    /// The knob's name, as in the config (`lr`, `l2`, `l1`, `batch_size`).
    pub knob: &'static str,
    /// The rejected value, as written.
    pub value: String,
    /// The allowed range, in words.
    pub allowed: &'static str,
}

impl OptimizerConfig {
    /// Checks every knob against its documented range.
    ///
    /// # Errors
    ///
    /// The first knob out of range, with its value and the allowed range.
    pub fn validate(&self) -> Result<(), InvalidKnob> {
        let invalid = |knob, value: &dyn fmt::Display, allowed| {
            let value = value.to_string();
            Err(InvalidKnob {
                knob,
                value,
                allowed,
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return invalid("lr", &self.lr, "a finite number > 0");
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return invalid("l2", &self.l2, "a finite number >= 0");
        }
        if !(self.l1.is_finite() && self.l1 >= 0.0) {
            return invalid("l1", &self.l1, "a finite number >= 0");
        }
        if self.batch_size == 0 {
            return invalid("batch_size", &self.batch_size, "an integer >= 1");
        }
        Ok(())
    }
}

/// Per-coordinate state of the update rule, over `dim + 1` coordinates
/// (weights, then the bias).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    /// Plain SGD keeps nothing.
    Sgd,
    /// AdaGrad's sums of squared gradients `G`.
    Adagrad {
        /// `G`, >= 0.
        squares: Vec<f64>,
    },
    /// Adam's moment estimates and step count.
    Adam {
        /// First-moment estimate `m`.
        first: Vec<f64>,
        /// Second-moment estimate `v`, >= 0.
        second: Vec<f64>,
        /// Steps taken, `t`.
        steps: u64,
    },
}

impl State {
    fn new(kind: OptimizerKind, coordinates: usize) -> State {
        match kind {
            OptimizerKind::Sgd => State::Sgd,
            OptimizerKind::Adagrad => State::Adagrad {
                squares: vec![0.0; coordinates],
            },
            OptimizerKind::Adam => State::Adam {
                first: vec![0.0; coordinates],
                second: vec![0.0; coordinates],
                steps: 0,
            },
        }
    }

    fn kind(&self) -> OptimizerKind {
        match self {
            State::Sgd => OptimizerKind::Sgd,
            State::Adagrad { .. } => OptimizerKind::Adagrad,
            State::Adam { .. } => OptimizerKind::Adam,
        }
    }

    /// Every per-coordinate vector, with its name for error messages.
    fn vectors(&self) -> Vec<(&'static str, &[f64])> {
        match self {
            State::Sgd => Vec::new(),
            State::Adagrad { squares } => vec![("adagrad sum of squares", squares)],
            State::Adam { first, second, .. } => {
                vec![("adam first moment", first), ("adam second moment", second)]
            }
        }
    }

    /// Takes one step on `values` along `gradient` and writes each
    /// coordinate's effective learning rate (the factor the gradient, or
    /// Adam's corrected moment, was multiplied by) into `rates`.
    fn step(&mut self, lr: f64, gradient: &[f64], values: &mut [f64], rates: &mut [f64]) {
        match self {
            State::Sgd => {
                for ((value, rate), g) in values.iter_mut().zip(rates).zip(gradient) {
                    *rate = lr;
                    *value -= lr * g;
                }
            }
            State::Adagrad { squares } => {
                let coordinates = values.iter_mut().zip(rates).zip(gradient).zip(squares);
                for (((value, rate), g), square) in coordinates {
                    *square += g * g;
                    *rate = lr / (square.sqrt() + ADAGRAD_EPSILON);
                    *value -= step_along(*rate, *g);
                }
            }
            State::Adam {
                first,
                second,
                steps,
            } => {
                *steps += 1;
                // powi takes an i32; beyond that both powers have long been 0.
                let exponent = i32::try_from(*steps).unwrap_or(i32::MAX);
                let first_correction = 1.0 - ADAM_BETA1.powi(exponent);
                let second_correction = 1.0 - ADAM_BETA2.powi(exponent);
                let moments = first.iter_mut().zip(second.iter_mut());
                let coordinates = values.iter_mut().zip(rates).zip(gradient).zip(moments);
                for (((value, rate), g), (m, v)) in coordinates {
                    *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
                    *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
                    let v_hat = *v / second_correction;
                    *rate = lr / (v_hat.sqrt() + ADAM_EPSILON);
                    *value -= step_along(*rate, *m / first_correction);
                }
            }
        }
    }
}

/// The optimizer of a model with `dim` weights: its knobs and per-coordinate
/// state.
///
/// Savable: serialises to its config, dimension and state, and deserialising
/// checks them again (knob ranges, state kind and lengths, finiteness).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "OptimizerRepr")]
pub struct Optimizer {
    config: OptimizerConfig,
    dim: usize,
    state: State,
}

/// The unchecked serialised form of [`Optimizer`].
#[derive(Deserialize)]
struct OptimizerRepr {
    config: OptimizerConfig,
    dim: usize,
    state: State,
}

/// A saved optimizer that cannot be restored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum InvalidOptimizer {
    /// A knob is out of range.
    #[error(transparent)]
    Knob(#[from] InvalidKnob),
    /// The state belongs to another kind of optimizer.
    #[error("optimizer state is for {state}, but the config says {config}")]
    KindMismatch {
        /// The kind in the config.
        config: OptimizerKind,
        /// The kind the state belongs to.
        state: OptimizerKind,
    },
    /// A state vector has the wrong length.
    #[error("{what} has {found} coordinates, expected {expected} (dim + 1)")]
    Length {
        /// Which vector.
        what: &'static str,
        /// Its length.
        found: usize,
        /// `dim + 1`.
        expected: usize,
    },
    /// A state value is not finite.
    #[error(transparent)]
    NonFinite(#[from] NonFinite),
}

impl TryFrom<OptimizerRepr> for Optimizer {
    type Error = InvalidOptimizer;

    fn try_from(repr: OptimizerRepr) -> Result<Optimizer, InvalidOptimizer> {
        repr.config.validate()?;
        let OptimizerRepr { config, dim, state } = repr;
        if state.kind() != config.kind {
            let state = state.kind();
            return Err(InvalidOptimizer::KindMismatch {
                config: config.kind,
                state,
            });
        }
        for (what, vector) in state.vectors() {
            if vector.len() != dim + 1 {
                let (found, expected) = (vector.len(), dim + 1);
                return Err(InvalidOptimizer::Length {
                    what,
                    found,
                    expected,
                });
            }
            if let Some(bad) = first_non_finite(what, vector) {
                return Err(bad.into());
            }
        }
        Ok(Optimizer { config, dim, state })
    }
}

impl Optimizer {
    /// A fresh optimizer (zero state) for a model with `dim` weights.
    ///
    /// # Errors
    ///
    /// If a knob of `config` is out of range.
    pub fn new(config: OptimizerConfig, dim: usize) -> Result<Optimizer, InvalidKnob> {
        config.validate()?;
        let state = State::new(config.kind, dim + 1);
        Ok(Optimizer { config, dim, state })
    }

    /// The knobs this optimizer was built with.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Number of weights of the model this optimizer updates.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Updates `params` with one mini-batch's mean log-loss gradient: weights,
    /// then the bias, as from [`GradSum::mean`](super::GradSum::mean).
    ///
    /// Three steps:
    ///
    /// 1. `g = mean_grad + l2 w` on the weights; the bias's `g` is its
    ///    `mean_grad` as is.
    /// 2. The update rule of [`OptimizerKind`] steps along `g`, giving each
    ///    coordinate an effective learning rate `lr_eff`: `lr` for SGD,
    ///    `lr / (sqrt(G) + eps)` for AdaGrad, `lr / (sqrt(v^) + eps)` for Adam.
    /// 3. If `l1 > 0`, each weight (not the bias) is soft-thresholded:
    ///    `w <- sign(w) max(|w| - lr_eff l1, 0)`. This is the proximal step of
    ///    the L1 term (Parikh and Boyd, "Proximal Algorithms", 2014, section
    ///    6.5.2); for AdaGrad, the closed-form l1 composite mirror-descent
    ///    update of Duchi, Hazan and Singer (2011); for Adam, the same step in
    ///    Adam's diagonal metric (a common heuristic, without Adam's
    ///    convergence guarantees). A coordinate whose accumulated gradient is
    ///    still 0 has a very large `lr_eff` (`lr / eps`), so L1 sets it to 0.
    ///
    /// # Errors
    ///
    /// If `mean_grad`, the regularised gradient, a resulting parameter or the
    /// resulting optimizer state is not finite. `params` and the optimizer
    /// state are then left unchanged.
    ///
    /// # Panics
    ///
    /// If `params` does not have [`Optimizer::dim`] weights or `mean_grad`
    /// does not have `dim + 1` values.
    pub fn apply(&mut self, params: &mut Params, mean_grad: &Array1<f64>) -> Result<(), NonFinite> {
        let dim = self.dim;
        assert_eq!(params.dim(), dim, "optimizer and model have one dimension");
        assert_eq!(
            mean_grad.len(),
            dim + 1,
            "a mean gradient has dim + 1 values"
        );
        let OptimizerConfig { lr, l2, l1, .. } = self.config;

        // The data gradient must be finite before anything else is read.
        if let Some((index, &value)) = mean_grad.iter().enumerate().find(|(_, g)| !g.is_finite()) {
            return Err(NonFinite {
                what: "mean gradient",
                index,
                value,
            });
        }

        // Step 1: the smooth objective's gradient, with L2 on the weights only.
        let mut values: Vec<f64> = params
            .weights
            .iter()
            .copied()
            .chain([params.bias])
            .collect();
        let gradient: Vec<f64> = mean_grad
            .iter()
            .zip(&values)
            .enumerate()
            .map(|(index, (g, w))| if index < dim { g + l2 * w } else { *g })
            .collect();
        if let Some(bad) = first_non_finite("regularised gradient", &gradient) {
            return Err(bad);
        }

        // Step 2: the update rule, on copies so that a failure changes nothing.
        let mut state = self.state.clone();
        let mut rates = vec![0.0; dim + 1];
        state.step(lr, &gradient, &mut values, &mut rates);

        // Step 3: L1 as an exact soft-threshold on the weights.
        if l1 > 0.0 {
            for (weight, rate) in values[..dim].iter_mut().zip(&rates) {
                *weight = soft_threshold(*weight, rate * l1);
            }
        }

        // Only a fully finite result is kept.
        if let Some(bad) = first_non_finite("parameter", &values) {
            return Err(bad);
        }
        for (what, vector) in state.vectors() {
            if let Some(bad) = first_non_finite(what, vector) {
                return Err(bad);
            }
        }
        params.bias = values[dim];
        values.truncate(dim);
        params.weights = Array1::from(values);
        self.state = state;
        Ok(())
    }
}

/// `rate * direction`, except that a zero direction is a zero step.
///
/// A coordinate that has had no gradient yet has the effective rate
/// `lr / eps`, which overflows to infinity for `lr` above about 1.8e300 (a
/// finite, accepted learning rate); `inf * 0` would then make the parameter
/// NaN although the objective does not move it. For a finite rate the
/// result has the same bits as `rate * direction` (`direction` is then `+0.0`
/// or `-0.0`, as the product would be).
fn step_along(rate: f64, direction: f64) -> f64 {
    if direction == 0.0 {
        direction
    } else {
        rate * direction
    }
}

/// `sign(w) max(|w| - threshold, 0)`, the proximal operator of
/// `threshold |w|`; a weight within the threshold becomes exactly `+0.0`.
fn soft_threshold(weight: f64, threshold: f64) -> f64 {
    if weight.abs() <= threshold {
        0.0
    } else {
        weight - threshold.copysign(weight)
    }
}

/// The first value of `values` that is not finite, as an error naming `what`.
fn first_non_finite(what: &'static str, values: &[f64]) -> Option<NonFinite> {
    let index = values.iter().position(|v| !v.is_finite())?;
    Some(NonFinite {
        what,
        index,
        value: values[index],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived values are written to 1e-12 absolute: far above the few
    /// ulps of rounding in either computation.
    const TOLERANCE: f64 = 1e-12;

    fn assert_params(params: &Params, weights: &[f64], bias: f64) {
        for (j, (actual, expected)) in params.weights.iter().zip(weights).enumerate() {
            assert!(
                (actual - expected).abs() < TOLERANCE,
                "w{j}: {actual} vs {expected}"
            );
        }
        assert!(
            (params.bias - bias).abs() < TOLERANCE,
            "bias: {} vs {bias}",
            params.bias
        );
    }

    fn optimizer(kind: OptimizerKind, lr: f64, l2: f64, l1: f64) -> Optimizer {
        let config = OptimizerConfig {
            kind,
            lr,
            l2,
            l1,
            batch_size: 1,
        };
        Optimizer::new(config, 2).expect("valid config")
    }

    fn start() -> Params {
        Params {
            weights: Array1::from(vec![1.0, -2.0]),
            bias: 0.5,
        }
    }

    #[test]
    fn sgd_matches_hand_derived_steps() {
        let mut sgd = optimizer(OptimizerKind::Sgd, 0.1, 0.01, 0.0);
        let mut params = start();
        let gradient = Array1::from(vec![0.1, -0.2, 0.3]);

        // g = (0.1 + 0.01, -0.2 - 0.02, 0.3):
        // w = (1 - 0.011, -2 + 0.022), b = 0.5 - 0.03.
        sgd.apply(&mut params, &gradient).expect("finite step");
        assert_params(&params, &[0.989, -1.978], 0.47);

        // g = (0.1 + 0.00989, -0.2 - 0.01978, 0.3).
        sgd.apply(&mut params, &gradient).expect("finite step");
        assert_params(&params, &[0.989 - 0.010989, -1.978 + 0.021978], 0.44);
    }

    #[test]
    fn adagrad_matches_hand_derived_steps() {
        let mut adagrad = optimizer(OptimizerKind::Adagrad, 0.1, 0.0, 0.0);
        let mut params = start();
        let eps = ADAGRAD_EPSILON;

        // G = g^2, step = lr g / (|g| + eps).
        adagrad
            .apply(&mut params, &Array1::from(vec![0.5, -0.25, 2.0]))
            .expect("finite step");
        let w0 = 1.0 - 0.1 * 0.5 / (0.5 + eps);
        let w1 = -2.0 + 0.1 * 0.25 / (0.25 + eps);
        let b = 0.5 - 0.1 * 2.0 / (2.0 + eps);
        assert_params(&params, &[w0, w1], b);

        // G = 0.25 + 1 = 1.25, 0.0625 + 0.0625 = 0.125, 4 + 0 = 4.
        adagrad
            .apply(&mut params, &Array1::from(vec![1.0, 0.25, 0.0]))
            .expect("finite step");
        let w0 = w0 - 0.1 * 1.0 / (1.25f64.sqrt() + eps);
        let w1 = w1 - 0.1 * 0.25 / (0.125f64.sqrt() + eps);
        assert_params(&params, &[w0, w1], b);
    }

    #[test]
    fn adam_matches_hand_derived_steps() {
        let mut adam = optimizer(OptimizerKind::Adam, 0.01, 0.0, 0.0);
        let mut params = start();
        let eps = ADAM_EPSILON;

        // Step 1: m^ = g and v^ = g^2, so each step is lr g / (|g| + eps).
        adam.apply(&mut params, &Array1::from(vec![0.5, -0.25, 0.0]))
            .expect("finite step");
        let w0 = 1.0 - 0.01 * 0.5 / (0.5 + eps);
        let w1 = -2.0 + 0.01 * 0.25 / (0.25 + eps);
        assert_params(&params, &[w0, w1], 0.5);

        // Step 2 on w0 with g = -0.25:
        //   m = 0.9 * 0.05 + 0.1 * -0.25 = 0.02, m^ = 0.02 / (1 - 0.81);
        //   v = 0.999 * 0.00025 + 0.001 * 0.0625 = 0.00031225,
        //   v^ = 0.00031225 / (1 - 0.998001).
        // On w1 with g = -0.25: m = -0.0225 - 0.025 = -0.0475;
        //   v = 0.999 * 0.0000625 + 0.0000625 = 0.0001249375.
        adam.apply(&mut params, &Array1::from(vec![-0.25, -0.25, 0.0]))
            .expect("finite step");
        let step = |m: f64, v: f64| 0.01 * (m / 0.19) / ((v / 0.001999).sqrt() + eps);
        let w0 = w0 - step(0.02, 0.00031225);
        let w1 = w1 - step(-0.0475, 0.0001249375);
        assert_params(&params, &[w0, w1], 0.5);
    }

    #[test]
    fn l1_soft_threshold_zeroes_small_weights_and_spares_the_bias() {
        let mut sgd = optimizer(OptimizerKind::Sgd, 0.1, 0.0, 0.5);
        let mut params = Params {
            weights: Array1::from(vec![0.03, -0.04]),
            bias: 0.02,
        };
        // Threshold lr * l1 = 0.05: both weights fall inside it.
        sgd.apply(&mut params, &Array1::zeros(3))
            .expect("finite step");
        assert_params(&params, &[0.0, 0.0], 0.02);
        assert!(params.weights.iter().all(|w| w.is_sign_positive()));

        let mut params = Params {
            weights: Array1::from(vec![0.2, -0.3]),
            bias: 0.02,
        };
        // Gradient step first (w -= 0.1 * 0.1), then shrink by 0.05.
        sgd.apply(&mut params, &Array1::from(vec![0.1, 0.1, 0.0]))
            .expect("finite step");
        assert_params(&params, &[0.2 - 0.01 - 0.05, -0.3 - 0.01 + 0.05], 0.02);

        // AdaGrad: lr_eff = lr / (|g| + eps) on the first step; 0.1 / 0.5 = 0.2.
        let mut adagrad = optimizer(OptimizerKind::Adagrad, 0.1, 0.0, 0.5);
        let mut params = Params {
            weights: Array1::from(vec![0.3, 0.05]),
            bias: 0.0,
        };
        adagrad
            .apply(&mut params, &Array1::from(vec![0.5, 0.5, 0.5]))
            .expect("finite step");
        let rate = 0.1 / (0.5 + ADAGRAD_EPSILON);
        let w0 = 0.3 - rate * 0.5 - rate * 0.5;
        assert_params(&params, &[w0, 0.0], -rate * 0.5);
    }

    #[test]
    fn non_finite_gradient_is_refused_and_changes_nothing() {
        for kind in OptimizerKind::ALL {
            let mut optimizer = optimizer(kind, 0.1, 0.0, 0.0);
            let mut params = start();
            optimizer
                .apply(&mut params, &Array1::from(vec![0.1, 0.2, 0.3]))
                .expect("finite");
            let (saved_optimizer, saved_params) = (optimizer.clone(), params.clone());

            for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                let error = optimizer
                    .apply(&mut params, &Array1::from(vec![0.1, bad, 0.3]))
                    .unwrap_err();
                assert_eq!((error.what, error.index), ("mean gradient", 1), "{kind}");
            }
            // Finite but squaring to infinity: AdaGrad and Adam state would overflow.
            let huge = Array1::from(vec![1e200, 0.0, 0.0]);
            match kind {
                OptimizerKind::Sgd => {}
                _ => {
                    let error = optimizer.apply(&mut params, &huge).unwrap_err();
                    assert_eq!(error.index, 0, "{kind}: {error}");
                }
            }
            assert_eq!(optimizer, saved_optimizer, "{kind}");
            assert_eq!(params, saved_params, "{kind}");
        }
    }

    #[test]
    fn coordinate_without_gradient_stays_put_when_its_rate_overflows() {
        // lr / eps = 1e309 overflows for a coordinate whose gradient is 0:
        // the weights must not move (nor become NaN); the bias steps by
        // about lr, as AdaGrad's and Adam's first steps are lr g / (|g| + eps).
        for kind in [OptimizerKind::Adagrad, OptimizerKind::Adam] {
            let mut optimizer = optimizer(kind, 1e301, 0.0, 0.0);
            let mut params = start();
            optimizer
                .apply(&mut params, &Array1::from(vec![0.0, 0.0, 0.5]))
                .unwrap_or_else(|error| panic!("{kind}: {error}"));
            assert_eq!(params.weights.to_vec(), vec![1.0, -2.0], "{kind}");
            let expected = 0.5 - 1e301 * (0.5 / (0.5 + 1e-8));
            assert!(
                ((params.bias - expected) / expected).abs() < 1e-12,
                "{kind}: bias {:e} vs {expected:e}",
                params.bias
            );
        }
    }

    #[test]
    fn step_along_a_zero_direction_keeps_the_sign_of_the_product() {
        for rate in [0.0, 1e-8, 0.1, 1e300] {
            for direction in [0.0f64, -0.0, 1.5, -2.5] {
                let expected = rate * direction;
                assert_eq!(
                    step_along(rate, direction).to_bits(),
                    expected.to_bits(),
                    "{rate} * {direction}"
                );
            }
        }
        assert_eq!(step_along(f64::INFINITY, 0.0), 0.0);
        assert_eq!(
            step_along(f64::INFINITY, -0.0).to_bits(),
            (-0.0f64).to_bits()
        );
    }

    #[test]
    fn overflowing_parameter_is_refused() {
        let mut sgd = optimizer(OptimizerKind::Sgd, 1.0, 0.0, 0.0);
        let mut params = Params {
            weights: Array1::from(vec![-1.7e308, 0.0]),
            bias: 0.0,
        };
        let saved = params.clone();
        let error = sgd
            .apply(&mut params, &Array1::from(vec![1.7e308, 0.0, 0.0]))
            .unwrap_err();
        assert_eq!((error.what, error.index), ("parameter", 0));
        assert_eq!(params, saved);
    }

    #[test]
    fn config_validation_names_the_bad_knob_and_its_range() {
        assert_eq!(OptimizerConfig::default().validate(), Ok(()));
        let cases = [
            (
                OptimizerConfig {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
                "a finite number > 0",
            ),
            (
                OptimizerConfig {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr",
                "a finite number > 0",
            ),
            (
                OptimizerConfig {
                    l2: -1.0,
                    ..Default::default()
                },
                "l2",
                "a finite number >= 0",
            ),
            (
                OptimizerConfig {
                    l1: f64::INFINITY,
                    ..Default::default()
                },
                "l1",
                "a finite number >= 0",
            ),
            (
                OptimizerConfig {
                    batch_size: 0,
                    ..Default::default()
                },
                "batch_size",
                "an integer >= 1",
            ),
        ];
        for (config, knob, allowed) in cases {
            let error = config.validate().unwrap_err();
            assert_eq!((error.knob, error.allowed), (knob, allowed));
        }
        let error = OptimizerConfig {
            l2: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "optimizer option l2 = -1: must be a finite number >= 0"
        );
        assert!(
            Optimizer::new(
                OptimizerConfig {
                    lr: -1.0,
                    ..Default::default()
                },
                3
            )
            .is_err()
        );
    }

    #[test]
    fn optimizer_kind_parses_and_names_allowed_values_on_error() {
        for kind in OptimizerKind::ALL {
            assert_eq!(kind.name().parse(), Ok(kind));
        }
        let error = "rmsprop".parse::<OptimizerKind>().unwrap_err().to_string();
        assert_eq!(
            error,
            r#"unknown optimizer "rmsprop": expected "sgd", "adagrad" or "adam""#
        );
    }

    #[test]
    fn optimizer_round_trips_and_resumes_identically() {
        for kind in OptimizerKind::ALL {
            let mut optimizer = optimizer(kind, 0.05, 0.01, 0.001);
            let mut params = start();
            optimizer
                .apply(&mut params, &Array1::from(vec![0.1, -0.2, 0.3]))
                .expect("finite");

            let text = serde_json::to_string(&optimizer).expect("optimizer serialises");
            let mut restored: Optimizer = serde_json::from_str(&text).expect("deserialises");
            assert_eq!(restored, optimizer, "{kind}");

            let gradient = Array1::from(vec![-0.3, 0.1, 0.2]);
            let mut resumed = params.clone();
            optimizer.apply(&mut params, &gradient).expect("finite");
            restored.apply(&mut resumed, &gradient).expect("finite");
            assert_eq!(resumed, params, "{kind}");
        }
    }

    #[test]
    fn corrupt_saved_optimizer_is_rejected() {
        let saved = serde_json::to_value(optimizer(OptimizerKind::Adam, 0.1, 0.0, 0.0))
            .expect("optimizer serialises");

        let mut wrong_kind = saved.clone();
        wrong_kind["config"]["kind"] = "adagrad".into();
        let error = serde_json::from_value::<Optimizer>(wrong_kind)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("state is for adam, but the config says adagrad"),
            "{error}"
        );

        let mut short = saved.clone();
        short["state"]["adam"]["first"] = serde_json::json!([0.0]);
        let error = serde_json::from_value::<Optimizer>(short)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("adam first moment has 1 coordinates, expected 3"),
            "{error}"
        );

        let mut bad_lr = saved;
        bad_lr["config"]["lr"] = (-1.0).into();
        assert!(serde_json::from_value::<Optimizer>(bad_lr).is_err());
    }

    #[test]
    fn config_reads_partial_toml_with_defaults() {
        let config: OptimizerConfig = toml::from_str("kind = \"adam\"\nlr = 0.01").expect("parses");
        let expected = OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 0.01,
            ..OptimizerConfig::default()
        };
        assert_eq!(config, expected);
        assert!(toml::from_str::<OptimizerConfig>("learning_rate = 1").is_err());
    }
}
