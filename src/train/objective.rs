//! The training objective: the partial-label NLL of one sequence (paper Eq. 2, Tsuboi et al.
//! 2008) and the regularised mean over a data set, each with its dense gradient.

use ndarray::{s, Array2};
use rayon::prelude::*;

use crate::crf::{clamp_to_observed, no_labelling, no_observed_labelling, Crf};
use crate::error::{Error, Result};
use crate::train::TrainSeq;

/// Sequences per parallel task. Fixed (not derived from the thread count) so the sums, and so
/// the optimiser's path, are bit-for-bit the same on any machine.
const CHUNK: usize = 32;

/// `−log p(y_obs | x) = log Z − log Z_obs` and its gradient over all parameters, in the order
/// of [`Crf::params`].
///
/// `Z_obs` sums `exp S(y)` over the labellings that agree with `seq.labels` where
/// `seq.observed` is true (paper Eq. 2): the same chain with the unary scores of every other
/// label at observed positions set to `-inf`. With every token observed this is the ordinary
/// NLL `−log p(y|x)`; with none it is 0.
///
/// The gradient is `E_{p(y|x)}[φ] − E_{p(y|y_obs,x)}[φ]` (expected statistics of the free
/// chain minus those of the clamped one), with φ as in DESIGN.md §2: `onehot(y_t) ⊗ f_t` for
/// `W`, `onehot(y_t)` for `b`, pairs for `A`, `y_0` for `s`, `y_{n−1}` for `e`. Entries at
/// `-inf` parameters are 0 (they are constraints, not trained).
///
/// Errors: shapes and observed labels as in [`Crf::check_sequence`] (labels at unobserved
/// positions are ignored, so any value is accepted there); `observed.len() != n` →
/// `DimensionMismatch`; observed labels that the `-inf` constraints make impossible →
/// `ImpossibleLabels`.
pub fn sequence_nll(crf: &Crf, seq: &TrainSeq) -> Result<(f64, Vec<f64>)> {
    let mut grad = vec![0.0; crf.num_params()];
    let nll = add_sequence_nll(crf, seq, &mut grad)?;
    Ok((nll, grad))
}

/// The mean partial-label NLL over `data` plus `(l2/2)·Σθ²` over the finite parameters, and
/// its gradient (`l2·θ` on finite entries, 0 on `-inf` ones), in the order of [`Crf::params`].
///
/// Sequences are evaluated in parallel (rayon) and summed in a fixed order, so the result does
/// not depend on the number of threads. Errors: empty `data` or `l2` negative or not finite →
/// `InvalidArgument`; any sequence's error from [`sequence_nll`], naming the sequence.
pub fn objective(crf: &Crf, data: &[TrainSeq], l2: f64) -> Result<(f64, Vec<f64>)> {
    if data.is_empty() {
        return Err(Error::InvalidArgument(
            "the training data has no sequences".into(),
        ));
    }
    if !(l2.is_finite() && l2 >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "l2 = {l2}, expected a finite value >= 0"
        )));
    }
    let p = crf.num_params();
    let partials: Vec<(f64, Vec<f64>)> = data
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(chunk, seqs)| {
            let mut grad = vec![0.0; p];
            let mut nll = 0.0;
            for (i, seq) in seqs.iter().enumerate() {
                nll += add_sequence_nll(crf, seq, &mut grad)
                    .map_err(|e| in_sequence(chunk * CHUNK + i, e))?;
            }
            Ok((nll, grad))
        })
        .collect::<Result<_>>()?;

    // (1/|D|) Σ_k NLL_k, summed chunk by chunk in order.
    let scale = 1.0 / data.len() as f64;
    let mut value = 0.0;
    let mut grad = vec![0.0; p];
    for (nll, g) in &partials {
        value += nll;
        grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
    }
    value *= scale;
    grad.iter_mut().for_each(|g| *g *= scale);

    // + (λ/2)‖θ‖² over the trained (finite) parameters; the -inf constraints are not parameters.
    for (g, theta) in grad.iter_mut().zip(crf.params()) {
        if theta.is_finite() {
            value += 0.5 * l2 * theta * theta;
            *g += l2 * theta;
        } else {
            *g = 0.0;
        }
    }
    Ok((value, grad))
}

/// Adds `∇ NLL` of one sequence into `grad` and returns the NLL (see [`sequence_nll`]).
fn add_sequence_nll(crf: &Crf, seq: &TrainSeq, grad: &mut [f64]) -> Result<f64> {
    let TrainSeq {
        features,
        labels,
        observed,
    } = seq;
    crf.check_partially_labelled(features.view(), labels, Some(observed))?;

    let (n, c, d) = (features.nrows(), crf.num_labels(), crf.feature_dim());
    let u = crf.emissions_unchecked(features.view());
    let free = crf.chain_unchecked(&u);
    if free.log_z == f64::NEG_INFINITY {
        return Err(no_labelling(n));
    }
    let u_obs = clamp_to_observed(&u, labels, |t| observed[t]);
    let clamped = crf.chain_unchecked(&u_obs);
    if clamped.log_z == f64::NEG_INFINITY {
        return Err(no_observed_labelling());
    }
    // −log p(y_obs|x) = log Z − log Z_obs ≥ 0. Not clamped at 0: the optimiser wants the
    // smooth function, and the rounding is at the last ulp.
    let nll = free.log_z - clamped.log_z;

    // Unary statistics: r_t = p(y_t | x) − p(y_t | y_obs, x) (the error vectors of DESIGN.md
    // §2, with the one-hot of an observed label being its clamped marginal).
    let r = free.unary_marginals() - clamped.unary_marginals();
    let a = crf.transitions();
    let pair_free = free.pairwise_marginals(u.view(), a.view());
    let pair_clamped = clamped.pairwise_marginals(u_obs.view(), a.view());

    let layout = crf.layout();
    // ∇_W = Σ_t r_t ⊗ f_t = Rᵀ F (C × d), one GEMM.
    let grad_w = r.t().dot(&features.mapv(f64::from));
    grad[layout.weights..layout.weights + c * d]
        .iter_mut()
        .zip(grad_w.iter())
        .for_each(|(g, x)| *g += x);
    // ∇_b = Σ_t r_t.
    if let Some(at) = layout.bias {
        for t in 0..n {
            for j in 0..c {
                grad[at + j] += r[[t, j]];
            }
        }
    }
    // ∇_A = Σ_{t≥1} p(y_{t−1}=i, y_t=j | x) − p(y_{t−1}=i, y_t=j | y_obs, x).
    let grad_a: Array2<f64> = (&pair_free - &pair_clamped).sum_axis(ndarray::Axis(0));
    for i in 0..c {
        for j in 0..c {
            grad[layout.transitions + i * c + j] += grad_a[[i, j]];
        }
    }
    // ∇_s = r_0, ∇_e = r_{n−1}.
    for (at, row) in [(layout.start, 0), (layout.end, n - 1)] {
        if let Some(at) = at {
            for (j, v) in r.slice(s![row, ..]).iter().enumerate() {
                grad[at + j] += v;
            }
        }
    }
    // -inf entries: both marginals are exactly 0 there already; keep it explicit.
    for (g, theta) in grad.iter_mut().zip(crf.params()) {
        if theta == f64::NEG_INFINITY {
            *g = 0.0;
        }
    }
    Ok(nll)
}

/// Prefixes an error with the index of the sequence it came from.
fn in_sequence(k: usize, e: Error) -> Error {
    let at = |m: String| format!("training sequence {k}: {m}");
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(at(m)),
        Error::DimensionMismatch(m) => Error::DimensionMismatch(at(m)),
        Error::LabelOutOfRange(m) => Error::LabelOutOfRange(at(m)),
        Error::NonFinite(m) => Error::NonFinite(at(m)),
        Error::ImpossibleLabels(m) => Error::ImpossibleLabels(at(m)),
        other => other,
    }
}
