//! Exact Hessian–vector products of the training objective (DESIGN.md §3, `exact` mode).
//!
//! For a log-linear CRF, `∇ log Z = E_{p(y|x)}[φ]` and `∇² log Z = Cov_{p(y|x)}[φ]`, with φ the
//! sufficient statistics of DESIGN.md §2 (`onehot(y_t) ⊗ f_t` for `W`, `onehot(y_t)` for `b`,
//! pairs for `A`, `y_0` for `s`, `y_{n−1}` for `e`). The partial-label NLL of one sequence is
//! `log Z − log Z_obs` (paper Eq. 2), so
//!
//! ```text
//! ∇² NLL = Cov_{p(y|x)}[φ] − Cov_{p(y|y_obs,x)}[φ]
//! ```
//!
//! (with every label observed the second term is a point mass and vanishes).
//!
//! `H v` is never formed from `Cov[φ]`: it is the directional derivative of the expected
//! statistics, `H v = d/dε E_{θ+εv}[φ]`, i.e. of the marginals. We get it by **forward-mode
//! differentiation of forward–backward** (dual numbers): every log-space message carries its
//! tangent along `v`, and the tangent of `lse(x)` is `Σ_i softmax(x)_i x'_i`. One product costs
//! one forward–backward (the softmax weights of the tangent are the exponentials the primal
//! log-sum-exp computes anyway) plus two n×d×C GEMMs for the emission block; no finite
//! differences, so the products are as accurate as the marginals themselves.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::crf::{clamp_to_observed, no_labelling, no_observed_labelling, Crf};
use crate::error::{Error, Result};
use crate::hessian::cg::{conjugate_gradient, CgResult};
use crate::train::TrainSeq;

/// Sequences per parallel task. Fixed (not derived from the thread count) so that the sums are
/// bit-for-bit the same on any machine, as in the training objective.
const CHUNK: usize = 32;

/// `H_seq v`: the Hessian of one sequence's partial-label NLL `log Z − log Z_obs` times `v`,
/// both in the order of [`Crf::params`].
///
/// `observed = None` means every label is observed (the ordinary NLL `−log p(y|x)`, whose
/// Hessian is `Cov_{p(y|x)}[φ]`); labels at unobserved positions are ignored. Entries of `v` at
/// `-inf` parameters are ignored (they are constraints, not parameters) and the result is
/// exactly 0 there.
///
/// Errors: shapes and observed labels as in [`Crf::check_sequence`];
/// `observed.len() != n` or `v.len() != num_params` → `DimensionMismatch`; a NaN/inf entry of
/// `v` at a finite parameter → `NonFinite`; observed labels (or a length) that the `-inf`
/// constraints make impossible → `ImpossibleLabels` (the NLL is then `+inf`).
pub fn sequence_hvp(
    crf: &Crf,
    features: ArrayView2<f32>,
    labels: &[u32],
    observed: Option<&[bool]>,
    v: &[f64],
) -> Result<Vec<f64>> {
    let direction = Direction::new(crf, v)?;
    let mut out = vec![0.0; crf.num_params()];
    add_sequence_hvp(crf, features, labels, observed, &direction, &mut out)?;
    direction.zero_constraints(&mut out);
    Ok(out)
}

/// `H v` for the training objective `mean NLL + (λ/2)‖θ‖²`, damped:
///
/// ```text
/// (1/|D|) Σ_seq H_seq v + (l2 + damping) v        on finite parameters, 0 on -inf ones
/// ```
///
/// Sequences are evaluated in parallel (rayon) in fixed chunks summed in order, so the result
/// does not depend on the number of threads.
///
/// Errors: empty `data`, or `l2`/`damping` negative or not finite → `InvalidArgument`; `v` as
/// in [`sequence_hvp`]; any sequence's error from [`sequence_hvp`], naming the sequence.
pub fn objective_hvp(
    crf: &Crf,
    data: &[TrainSeq],
    l2: f64,
    damping: f64,
    v: &[f64],
) -> Result<Vec<f64>> {
    check_objective(data, l2, damping)?;
    let direction = Direction::new(crf, v)?;
    let p = crf.num_params();
    let partials: Vec<Vec<f64>> = data
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(chunk, seqs)| {
            let mut sum = vec![0.0; p];
            for (i, seq) in seqs.iter().enumerate() {
                add_sequence_hvp(
                    crf,
                    seq.features.view(),
                    &seq.labels,
                    Some(&seq.observed),
                    &direction,
                    &mut sum,
                )
                .map_err(|e| in_sequence(chunk * CHUNK + i, e))?;
            }
            Ok(sum)
        })
        .collect::<Result<_>>()?;

    let mut out = vec![0.0; p];
    for partial in &partials {
        out.iter_mut().zip(partial).for_each(|(o, x)| *o += x);
    }
    let scale = 1.0 / data.len() as f64;
    let shift = l2 + damping;
    for (o, x) in out.iter_mut().zip(&direction.masked) {
        *o = scale * *o + shift * x;
    }
    direction.zero_constraints(&mut out);
    Ok(out)
}

/// Solves `(H + (l2 + damping) I) x = g` by conjugate gradient on exact Hessian–vector
/// products ([`objective_hvp`]), restricted to the finite parameters: `g` is ignored and `x` is
/// exactly 0 at `-inf` entries. Stops at `‖g − A x‖ ≤ relative_tolerance·‖g‖` (the reported
/// residual is recomputed from a true product) or after `max_iterations` CG steps.
///
/// With every label observed `H` is a mean of covariances, positive semi-definite, and any
/// `l2 + damping > 0` makes the system positive definite. With unobserved labels the NLL is not
/// convex (Tsuboi et al. 2008) and `H` can be indefinite: the shift must then exceed its most
/// negative eigenvalue, and CG stops with an error when it meets a direction of non-positive
/// curvature rather than return a meaningless solve.
pub fn exact_inverse_hvp(
    crf: &Crf,
    data: &[TrainSeq],
    l2: f64,
    damping: f64,
    g: &[f64],
    relative_tolerance: f64,
    max_iterations: usize,
) -> Result<CgResult> {
    check_objective(data, l2, damping)?;
    let rhs = Direction::new(crf, g)?.masked;
    // Every product is masked, so CG never leaves the finite subspace: x stays 0 at -inf.
    conjugate_gradient(
        |v| objective_hvp(crf, data, l2, damping, v),
        &rhs,
        relative_tolerance,
        max_iterations,
    )
}

fn check_objective(data: &[TrainSeq], l2: f64, damping: f64) -> Result<()> {
    if data.is_empty() {
        return Err(Error::InvalidArgument(
            "the training data has no sequences".into(),
        ));
    }
    for (name, value) in [("l2", l2), ("damping", damping)] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "{name} = {value}, expected a finite value >= 0"
            )));
        }
    }
    Ok(())
}

/// The direction `v` split into the model's blocks, with entries at `-inf` parameters set to 0
/// (so a forbidden transition contributes no tangent, and no `0·inf`/NaN can arise).
struct Direction {
    /// `v` in parameter order, 0 at `-inf` parameters.
    masked: Vec<f64>,
    /// `true` where the parameter is finite.
    finite: Vec<bool>,
    /// `v_W`, C × d.
    weights: Array2<f64>,
    /// `v_b` (zeros when the model has no bias).
    bias: Array1<f64>,
    /// `v_A`, C × C `[from][to]`.
    transitions: Array2<f64>,
    /// `v_s`, `v_e` (zeros when absent).
    start: Vec<f64>,
    end: Vec<f64>,
}

impl Direction {
    fn new(crf: &Crf, v: &[f64]) -> Result<Direction> {
        let (c, d) = (crf.num_labels(), crf.feature_dim());
        let layout = crf.layout();
        if v.len() != layout.len {
            return Err(Error::DimensionMismatch(format!(
                "the vector has {} entries, the CRF has {} parameters",
                v.len(),
                layout.len
            )));
        }
        let finite: Vec<bool> = crf.params().iter().map(|t| t.is_finite()).collect();
        let mut masked = vec![0.0; v.len()];
        for (k, (&x, &ok)) in v.iter().zip(&finite).enumerate() {
            if ok {
                if !x.is_finite() {
                    return Err(Error::NonFinite(format!("vector[{k}] = {x}")));
                }
                masked[k] = x;
            }
        }
        let block = |at: Option<usize>| match at {
            Some(o) => masked[o..o + c].to_vec(),
            None => vec![0.0; c],
        };
        let weights = Array2::from_shape_vec((c, d), masked[..c * d].to_vec())
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let transitions = Array2::from_shape_vec(
            (c, c),
            masked[layout.transitions..layout.transitions + c * c].to_vec(),
        )
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(Direction {
            bias: Array1::from(block(layout.bias)),
            start: block(layout.start),
            end: block(layout.end),
            weights,
            transitions,
            finite,
            masked,
        })
    }

    /// Writes an exact 0 at every `-inf` parameter (the marginals there are 0 already; this
    /// also turns a `-0.0` into `0.0`).
    fn zero_constraints(&self, out: &mut [f64]) {
        for (o, &ok) in out.iter_mut().zip(&self.finite) {
            if !ok {
                *o = 0.0;
            }
        }
    }
}

/// Adds `H_seq v = d/dε (E_{p(y|x)}[φ] − E_{p(y|y_obs,x)}[φ])` into `out`.
fn add_sequence_hvp(
    crf: &Crf,
    features: ArrayView2<f32>,
    labels: &[u32],
    observed: Option<&[bool]>,
    v: &Direction,
    out: &mut [f64],
) -> Result<()> {
    let n = labels.len();
    crf.check_partially_labelled(features, labels, observed)?;
    let is_observed = |t: usize| observed.is_none_or(|o| o[t]);

    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let x = features.mapv(f64::from); // n × d
    let u = crf.emissions_unchecked(features); // n × C

    // Emission tangents u'_t[j] = v_W[j]·f_t + v_b[j] (n × C).
    let du = x.dot(&v.weights.t()) + &v.bias;
    let init: Vec<f64> = (0..c).map(|j| crf.start_score(j)).collect();
    let fin: Vec<f64> = (0..c).map(|j| crf.end_score(j)).collect();
    let chain = Potentials {
        dunary: du.view(),
        trans: crf.transitions().view(),
        dtrans: v.transitions.view(),
        init: &init,
        dinit: &v.start,
        fin: &fin,
        dfin: &v.end,
    };

    let free = (chain.marginal_tangents(u.view())).ok_or_else(|| no_labelling(n))?;
    // D_t = p'_t(·|x) − p'_t(·|y_obs,x): the unary part of H v, per token.
    let (dp, dpair) = if (0..n).all(is_observed) {
        // Every label observed: p(·|y_obs,x) is a point mass whatever θ, its tangents are 0
        // (computing them would only add rounding noise and double the cost).
        if crf.path_score(&u, labels) == f64::NEG_INFINITY {
            return Err(no_observed_labelling());
        }
        (free.unary, free.pairwise)
    } else {
        // Clamping (as for the NLL): at an observed position only the observed label keeps
        // its score. The clamped marginals are differentiated through the same chain.
        let u_obs = clamp_to_observed(&u, labels, is_observed);
        let clamped = chain
            .marginal_tangents(u_obs.view())
            .ok_or_else(no_observed_labelling)?;
        (free.unary - clamped.unary, free.pairwise - clamped.pairwise)
    };
    let layout = crf.layout();
    // (H v)_W = Σ_t D_t ⊗ f_t = Dᵀ F (C × d), one GEMM.
    let hv_w = dp.t().dot(&x);
    out[layout.weights..layout.weights + c * d]
        .iter_mut()
        .zip(hv_w.iter())
        .for_each(|(o, h)| *o += h);
    // (H v)_b = Σ_t D_t.
    if let Some(at) = layout.bias {
        for (j, h) in dp.sum_axis(Axis(0)).iter().enumerate() {
            out[at + j] += h;
        }
    }
    // (H v)_A = Σ_{t≥1} d/dε [p(y_{t−1}=i, y_t=j | x) − p(y_{t−1}=i, y_t=j | y_obs, x)].
    for (o, h) in out[layout.transitions..layout.transitions + c * c]
        .iter_mut()
        .zip(dpair.iter())
    {
        *o += h;
    }
    // (H v)_s = D_0, (H v)_e = D_{n−1}.
    for (at, row) in [(layout.start, 0), (layout.end, n - 1)] {
        if let Some(at) = at {
            for (j, h) in dp.slice(s![row, ..]).iter().enumerate() {
                out[at + j] += h;
            }
        }
    }
    Ok(())
}

/// The potentials of one chain and their tangents along `v`:
/// `score(y) = init[y_0] + Σ_t unary[t][y_t] + Σ_{t≥1} trans[y_{t−1}][y_t] + fin[y_{n−1}]`,
/// the unary scores given per call (free or clamped; the tangents are the same).
/// A `-inf` potential is a forbidden state; its tangent is never read.
struct Potentials<'a> {
    dunary: ArrayView2<'a, f64>, // n × C
    trans: ArrayView2<'a, f64>,  // C × C
    dtrans: ArrayView2<'a, f64>, // C × C
    init: &'a [f64],
    dinit: &'a [f64],
    fin: &'a [f64],
    dfin: &'a [f64],
}

/// Directional derivatives of the marginals of one chain.
struct MarginalTangents {
    /// n × C: `p'_t(j)`.
    unary: Array2<f64>,
    /// C × C `[from][to]`: `Σ_{t≥1} p'_{t−1,t}(i, j)` (only the sum enters `H v`).
    pairwise: Array2<f64>,
}

/// A log-space value with its tangent. Convention: a `-inf` value (impossible state) has
/// tangent 0, so tangents stay finite and impossible states drop out of every softmax.
#[derive(Clone, Copy)]
struct Dual {
    value: f64,
    tangent: f64,
}

impl Dual {
    const IMPOSSIBLE: Dual = Dual {
        value: f64::NEG_INFINITY,
        tangent: 0.0,
    };

    fn new(value: f64, tangent: f64) -> Dual {
        match value == f64::NEG_INFINITY {
            true => Dual::IMPOSSIBLE,
            false => Dual { value, tangent },
        }
    }
}

/// `lse(x) = log Σ exp(x_i)` with tangent `Σ_i softmax(x)_i x'_i`; `-inf` terms have weight 0
/// (their tangents are skipped, never multiplied), and all-`-inf` gives `-inf` with tangent 0.
fn log_sum_exp_dual(terms: &[Dual]) -> Dual {
    let max = terms
        .iter()
        .map(|x| x.value)
        .fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Dual::IMPOSSIBLE;
    }
    let (mut sum, mut weighted) = (0.0, 0.0);
    for x in terms.iter().filter(|x| x.value != f64::NEG_INFINITY) {
        let w = (x.value - max).exp();
        sum += w;
        weighted += w * x.tangent;
    }
    Dual::new(max + sum.ln(), weighted / sum)
}

impl Potentials<'_> {
    /// Forward–backward in dual numbers, then the marginal tangents
    /// `p'_t(j) = p_t(j)·(α'_t(j) + β'_t(j) − log Z')` and
    /// `p'_{t−1,t}(i,j) = p_{t−1,t}(i,j)·(α'_{t−1}(i) + A'[i][j] + u'_t(j) + β'_t(j) − log Z')`.
    /// `None` when `log Z = -inf` (no allowed labelling).
    fn marginal_tangents(&self, unary: ArrayView2<f64>) -> Option<MarginalTangents> {
        let (n, c) = unary.dim();
        let unary = |t: usize, j: usize| Dual::new(unary[[t, j]], self.dunary[[t, j]]);
        let trans = |i: usize, j: usize| Dual::new(self.trans[[i, j]], self.dtrans[[i, j]]);
        // Sum of log-space duals; -inf absorbs (tangent 0).
        let add = |xs: &[Dual]| {
            let value: f64 = xs.iter().map(|x| x.value).sum();
            Dual::new(value, xs.iter().map(|x| x.tangent).sum())
        };

        // α_t(j) = u_t(j) + lse_i(α_{t−1}(i) + A[i][j]),  α_0(j) = s(j) + u_0(j).
        let mut alpha = vec![Dual::IMPOSSIBLE; n * c];
        let mut terms = vec![Dual::IMPOSSIBLE; c];
        for j in 0..c {
            alpha[j] = add(&[Dual::new(self.init[j], self.dinit[j]), unary(0, j)]);
        }
        for t in 1..n {
            for j in 0..c {
                for i in 0..c {
                    terms[i] = add(&[alpha[(t - 1) * c + i], trans(i, j)]);
                }
                alpha[t * c + j] = add(&[unary(t, j), log_sum_exp_dual(&terms)]);
            }
        }
        // β_t(i) = lse_j(A[i][j] + u_{t+1}(j) + β_{t+1}(j)),  β_{n−1}(i) = e(i).
        let mut beta = vec![Dual::IMPOSSIBLE; n * c];
        for i in 0..c {
            beta[(n - 1) * c + i] = Dual::new(self.fin[i], self.dfin[i]);
        }
        for t in (0..n - 1).rev() {
            for i in 0..c {
                for j in 0..c {
                    terms[j] = add(&[trans(i, j), unary(t + 1, j), beta[(t + 1) * c + j]]);
                }
                beta[t * c + i] = log_sum_exp_dual(&terms);
            }
        }
        for j in 0..c {
            terms[j] = add(&[alpha[(n - 1) * c + j], Dual::new(self.fin[j], self.dfin[j])]);
        }
        let log_z = log_sum_exp_dual(&terms);
        if log_z.value == f64::NEG_INFINITY {
            return None;
        }

        // A marginal exp(l − log Z) with tangent exp(l − log Z)·(l' − log Z'); 0 when l = -inf.
        let marginal_tangent = |l: Dual| match l.value == f64::NEG_INFINITY {
            true => 0.0,
            false => (l.value - log_z.value).exp() * (l.tangent - log_z.tangent),
        };
        let mut dunary = Array2::<f64>::zeros((n, c));
        for t in 0..n {
            for j in 0..c {
                dunary[[t, j]] = marginal_tangent(add(&[alpha[t * c + j], beta[t * c + j]]));
            }
        }
        let mut dpairwise = Array2::<f64>::zeros((c, c));
        for t in 1..n {
            for i in 0..c {
                for j in 0..c {
                    dpairwise[[i, j]] += marginal_tangent(add(&[
                        alpha[(t - 1) * c + i],
                        trans(i, j),
                        unary(t, j),
                        beta[t * c + j],
                    ]));
                }
            }
        }
        Some(MarginalTangents {
            unary: dunary,
            pairwise: dpairwise,
        })
    }
}

/// Prefixes an error with the index of the sequence it came from.
pub(super) fn in_sequence(k: usize, e: Error) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dual(value: f64, tangent: f64) -> Dual {
        Dual::new(value, tangent)
    }

    #[test]
    fn log_sum_exp_dual_is_the_softmax_weighted_tangent() {
        let x = [dual(0.3, 1.0), dual(-1.2, -2.0), dual(2.0, 0.5)];
        let got = log_sum_exp_dual(&x);
        let z: f64 = x.iter().map(|x| x.value.exp()).sum();
        let want: f64 = x.iter().map(|x| x.value.exp() / z * x.tangent).sum();
        assert!((got.value - z.ln()).abs() < 1e-15);
        assert!((got.tangent - want).abs() < 1e-15);
    }

    #[test]
    fn log_sum_exp_dual_ignores_impossible_terms() {
        // A -inf term's tangent is never read, even if it were NaN.
        let x = [
            dual(0.5, 2.0),
            Dual {
                value: f64::NEG_INFINITY,
                tangent: f64::NAN,
            },
        ];
        let got = log_sum_exp_dual(&x);
        assert_eq!((got.value, got.tangent), (0.5, 2.0));
        let none = log_sum_exp_dual(&[Dual::IMPOSSIBLE, Dual::IMPOSSIBLE]);
        assert_eq!((none.value, none.tangent), (f64::NEG_INFINITY, 0.0));
    }

    #[test]
    fn impossible_duals_have_zero_tangent() {
        let d = dual(f64::NEG_INFINITY, 3.0);
        assert_eq!(d.tangent, 0.0);
    }
}
