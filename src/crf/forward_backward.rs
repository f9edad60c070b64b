//! Log-space forward–backward over a chain with boundary potentials (DESIGN.md §1–2).
//!
//! One routine serves both the whole sequence (boundaries = start/end scores) and a segment
//! `[a, b]` with its neighbours clamped (boundaries = the transitions from `y_{a-1}` and into
//! `y_{b+1}`, paper Appendix B). All sums are f64 log-sum-exps that treat `-inf` exactly, so
//! forbidden transitions get probability zero everywhere, not only in Viterbi.

use ndarray::{Array2, Array3, ArrayView2};

use crate::crf::Crf;
use crate::error::{Error, Result};

/// `log Σ exp(x)`, stable, and `-inf` (not NaN) when every term is `-inf`.
pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// Forward and backward messages of a chain of `m` positions:
/// `score(y) = init[y_0] + Σ_t unary[t][y_t] + Σ_{t≥1} trans[y_{t-1}][y_t] + fin[y_{m-1}]`.
pub(crate) struct Chain {
    /// `α[t][j]`: log-sum of scores of prefixes ending in `j` at `t` (init and unary included).
    pub alpha: Array2<f64>,
    /// `β[t][j]`: log-sum of scores of suffixes after `t`, given `j` at `t` (fin included).
    pub beta: Array2<f64>,
    pub log_z: f64,
}

impl Chain {
    pub fn run(unary: ArrayView2<f64>, trans: ArrayView2<f64>, init: &[f64], fin: &[f64]) -> Chain {
        let (m, c) = unary.dim();
        let mut alpha = Array2::<f64>::zeros((m, c));
        let mut beta = Array2::<f64>::zeros((m, c));
        let mut terms = vec![0.0; c];
        for j in 0..c {
            alpha[[0, j]] = init[j] + unary[[0, j]];
        }
        for t in 1..m {
            for j in 0..c {
                for i in 0..c {
                    terms[i] = alpha[[t - 1, i]] + trans[[i, j]];
                }
                alpha[[t, j]] = unary[[t, j]] + log_sum_exp(&terms);
            }
        }
        for j in 0..c {
            beta[[m - 1, j]] = fin[j];
        }
        for t in (0..m - 1).rev() {
            for i in 0..c {
                for j in 0..c {
                    terms[j] = trans[[i, j]] + unary[[t + 1, j]] + beta[[t + 1, j]];
                }
                beta[[t, i]] = log_sum_exp(&terms);
            }
        }
        for j in 0..c {
            terms[j] = alpha[[m - 1, j]] + fin[j];
        }
        let log_z = log_sum_exp(&terms);
        Chain { alpha, beta, log_z }
    }

    /// `p(y_t = j)` (m × C). Callers ensure `log_z` is finite.
    pub fn unary_marginals(&self) -> Array2<f64> {
        let mut p = &self.alpha + &self.beta;
        p.mapv_inplace(|v| (v - self.log_z).exp());
        p
    }

    /// The token and pairwise posteriors of the chain of `unary` and `trans`. Callers ensure
    /// `log_z` is finite.
    pub fn marginals(&self, unary: ArrayView2<f64>, trans: ArrayView2<f64>) -> Marginals {
        Marginals {
            log_z: self.log_z,
            unary: self.unary_marginals(),
            pairwise: self.pairwise_marginals(unary, trans),
        }
    }

    /// `p(y_{t-1} = i, y_t = j)` for t = 1..m, as (m−1) × C × C. Callers ensure `log_z` is finite.
    pub fn pairwise_marginals(
        &self,
        unary: ArrayView2<f64>,
        trans: ArrayView2<f64>,
    ) -> Array3<f64> {
        let (m, c) = unary.dim();
        let mut p = Array3::<f64>::zeros((m.saturating_sub(1), c, c));
        for t in 1..m {
            for i in 0..c {
                for j in 0..c {
                    let s =
                        self.alpha[[t - 1, i]] + trans[[i, j]] + unary[[t, j]] + self.beta[[t, j]];
                    p[[t - 1, i, j]] = (s - self.log_z).exp();
                }
            }
        }
        p
    }
}

/// Whole-sequence posteriors `p(y_t | x)` and `p(y_{t-1}, y_t | x)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Marginals {
    pub log_z: f64,
    /// n × C.
    pub unary: Array2<f64>,
    /// (n−1) × C × C, `[t-1][i][j] = p(y_{t-1}=i, y_t=j | x)`.
    pub pairwise: Array3<f64>,
}

impl Crf {
    fn boundary_vectors(&self) -> (Vec<f64>, Vec<f64>) {
        let c = self.num_labels();
        let init = (0..c).map(|j| self.start_score(j)).collect();
        let fin = (0..c).map(|j| self.end_score(j)).collect();
        (init, fin)
    }

    pub(crate) fn chain_unchecked(&self, emissions: &Array2<f64>) -> Chain {
        let (init, fin) = self.boundary_vectors();
        Chain::run(emissions.view(), self.transitions().view(), &init, &fin)
    }

    /// `log Z(x)`; `-inf` when the constraints allow no labelling of this length.
    pub fn log_partition(&self, features: ArrayView2<f32>) -> Result<f64> {
        let u = self.emissions(features)?;
        Ok(self.chain_unchecked(&u).log_z)
    }

    /// `log p(y|x) = S(y) − log Z(x)`: `-inf` when `y` uses a forbidden transition, start or end.
    /// Errors with `ImpossibleLabels` when the constraints allow no labelling at all.
    pub fn log_likelihood(&self, features: ArrayView2<f32>, labels: &[u32]) -> Result<f64> {
        self.check_sequence(features, Some(labels))?;
        let u = self.emissions_unchecked(features);
        let log_z = self.chain_unchecked(&u).log_z;
        if log_z == f64::NEG_INFINITY {
            return Err(no_labelling(labels.len()));
        }
        Ok(self.path_score(&u, labels) - log_z)
    }

    /// Token and pairwise posteriors by forward–backward.
    pub fn marginals(&self, features: ArrayView2<f32>) -> Result<Marginals> {
        let u = self.emissions(features)?;
        let chain = self.chain_unchecked(&u);
        if chain.log_z == f64::NEG_INFINITY {
            return Err(no_labelling(u.nrows()));
        }
        Ok(chain.marginals(u.view(), self.transitions().view()))
    }

    /// Checks a partially labelled sequence: shapes, features and the observed labels (those
    /// at unobserved positions are ignored; `observed = None`: every label observed).
    pub(crate) fn check_partially_labelled(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
        observed: Option<&[bool]>,
    ) -> Result<()> {
        let n = labels.len();
        if let Some(o) = observed {
            if o.len() != n {
                return Err(Error::DimensionMismatch(format!(
                    "{} observed flags for {n} labels",
                    o.len()
                )));
            }
        }
        // Check the observed labels only (0 stands in for the rest).
        let checked: Vec<u32> = (0..n)
            .map(|t| match observed.is_none_or(|o| o[t]) {
                true => labels[t],
                false => 0,
            })
            .collect();
        self.check_sequence(features, Some(&checked))
    }
}

/// The emissions clamped to the observed labels (the partial-label NLL's `Z_obs`, paper
/// Eq. 2): at an observed position only the observed label keeps its score.
pub(crate) fn clamp_to_observed(
    emissions: &Array2<f64>,
    labels: &[u32],
    is_observed: impl Fn(usize) -> bool,
) -> Array2<f64> {
    let mut clamped = emissions.clone();
    for (t, mut row) in clamped.outer_iter_mut().enumerate() {
        if is_observed(t) {
            for (j, u) in row.iter_mut().enumerate() {
                if j != labels[t] as usize {
                    *u = f64::NEG_INFINITY;
                }
            }
        }
    }
    clamped
}

pub(crate) fn no_labelling(n: usize) -> Error {
    Error::ImpossibleLabels(format!(
        "the CRF's -inf transitions/start/end allow no label sequence of length {n}"
    ))
}

/// The error when the `-inf` constraints allow no labelling that agrees with the observed
/// labels (the partial-label NLL is `+inf`).
pub(crate) fn no_observed_labelling() -> Error {
    Error::ImpossibleLabels(
        "no labelling that agrees with the observed labels is allowed by the CRF's -inf \
         transitions/start/end"
            .into(),
    )
}
