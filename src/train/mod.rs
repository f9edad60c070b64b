//! Training a CRF head on fixed features: full-batch L-BFGS on `mean NLL + (λ/2)‖θ‖²` with
//! partial labels (paper Eq. 2, Tsuboi et al. 2008).
//!
//! [`sequence_nll`] and [`objective`] (objective.rs) are the loss and its exact gradient;
//! [`train`] minimises the objective over the finite parameters with a hand-written L-BFGS
//! (lbfgs.rs, which says why not argmin).

mod lbfgs;
mod objective;

pub use objective::{objective, sequence_nll};

use ndarray::Array2;

use crate::crf::Crf;
use crate::error::{Error, Result};

/// One training sequence. `observed[t] == false` marks token t unlabelled: its label is
/// marginalised out (`labels[t]` is then ignored). Removing segment `[a, b]` of a sequence (paper
/// Eq. 5) is the same sequence with `observed[a..=b]` false.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSeq {
    /// n × d.
    pub features: Array2<f32>,
    pub labels: Vec<u32>,
    pub observed: Vec<bool>,
}

impl TrainSeq {
    /// A fully labelled sequence.
    pub fn labelled(features: Array2<f32>, labels: Vec<u32>) -> TrainSeq {
        let observed = vec![true; labels.len()];
        TrainSeq {
            features,
            labels,
            observed,
        }
    }
}

/// Settings of [`train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// `λ` of `mean NLL + (λ/2)‖θ‖²`. The default, 1e-4, is weak next to the mean NLL of a
    /// corpus of thousands of sentences. With every label observed it keeps the objective
    /// strongly convex (Hessian ⪰ λI): the minimiser exists even on separable data, is unique,
    /// and the Hessian that influence inverts (DESIGN.md §3) is positive definite. With
    /// unlabelled tokens the NLL is not convex (Tsuboi et al. 2008) and these guarantees hold
    /// only near a minimiser. Influence against a model trained with `λ` must add `λI` to its
    /// Hessian.
    pub l2: f64,
    /// Stop when `max |∇_θ objective| ≤ tolerance` over the trained parameters.
    pub tolerance: f64,
    /// Stop, not converged, after this many L-BFGS steps.
    pub max_iterations: usize,
    /// Number of curvature pairs `(s, y)` L-BFGS keeps.
    pub memory: usize,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            l2: 1e-4,
            tolerance: 1e-6,
            max_iterations: 1000,
            memory: 10,
        }
    }
}

/// What [`train`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainResult {
    /// The trained CRF: same blocks present and same `-inf` entries as the initial one.
    pub crf: Crf,
    /// `mean NLL + (λ/2)‖θ‖²` at `crf`.
    pub objective: f64,
    /// `max |∇_θ objective|` at `crf` (the `-inf` entries are not parameters and count as 0).
    pub max_abs_gradient: f64,
    /// L-BFGS steps taken.
    pub iterations: usize,
    /// `max_abs_gradient ≤ tolerance`. False when the iteration cap was reached or no step
    /// lowered the objective any more (it is then flat to f64 precision along `−∇`).
    pub converged: bool,
}

/// Fits a CRF to `data` by full-batch L-BFGS on [`objective`]
/// (`mean partial-label NLL + (λ/2)‖θ‖²`), warm-started from `init`'s parameters.
///
/// Only the finite parameters are trained: `-inf` transitions/start/end are constraints and
/// stay `-inf`. Absent blocks (`b`, `s`, `e`) stay absent. Removing segment `[a, b]` of
/// sequence `k` (paper Eq. 5) is the same call with `data[k].observed[a..=b]` set to false.
///
/// `progress(iteration, objective, max_abs_gradient)` runs after each step (iterations count
/// from 1); returning false stops training with `Error::Cancelled`. Reaching
/// `max_iterations` is not an error: the result has `converged = false`.
///
/// Errors: options out of range (`l2` negative or not finite, `tolerance` not > 0, `memory`
/// 0) or empty `data` → `InvalidArgument`; a sequence's error from [`sequence_nll`].
pub fn train(
    init: &Crf,
    data: &[TrainSeq],
    options: &TrainOptions,
    progress: Option<&mut dyn FnMut(usize, f64, f64) -> bool>,
) -> Result<TrainResult> {
    let TrainOptions {
        l2,
        tolerance,
        max_iterations,
        memory,
    } = *options;
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "l2 = {l2}, expected a finite value >= 0"
        )));
    }
    if !(tolerance.is_finite() && tolerance > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "tolerance = {tolerance}, expected a finite value > 0"
        )));
    }
    if memory == 0 {
        return Err(Error::InvalidArgument(
            "memory = 0, L-BFGS needs at least one curvature pair".into(),
        ));
    }
    if data.is_empty() {
        return Err(Error::InvalidArgument(
            "the training data has no sequences".into(),
        ));
    }

    // The optimiser sees the finite parameters only; the -inf ones are held where they are.
    let mut theta = init.params();
    let trained: Vec<usize> = (0..theta.len()).filter(|&i| theta[i].is_finite()).collect();
    let x0: Vec<f64> = trained.iter().map(|&i| theta[i]).collect();
    let mut eval = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
        for (&i, &v) in trained.iter().zip(x) {
            theta[i] = v;
        }
        let (value, grad) = objective(&init.with_params(&theta)?, data, l2)?;
        Ok((value, trained.iter().map(|&i| grad[i]).collect()))
    };
    let settings = lbfgs::Settings {
        tolerance,
        max_iterations,
        memory,
    };
    let out = lbfgs::minimize(x0, &mut eval, &settings, progress)?;

    let mut params = init.params();
    for (&i, &v) in trained.iter().zip(&out.x) {
        params[i] = v;
    }
    Ok(TrainResult {
        crf: init.with_params(&params)?,
        objective: out.value,
        max_abs_gradient: out.max_abs_gradient,
        iterations: out.iterations,
        converged: out.converged,
    })
}
