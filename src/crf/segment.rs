//! The conditional loss of a segment, `CL(a,b) = −log p(y_a..y_b | y outside [a,b], x)`, its
//! segment-conditional marginals, and its gradient in factored form (DESIGN.md §2, paper
//! Appendix B, Eq. 18).

use ndarray::{s, Array1, Array2, Array3, ArrayView2};

use crate::crf::forward_backward::{log_sum_exp, Chain};
use crate::crf::Crf;
use crate::error::{Error, Result};

/// Posteriors of the labels inside `[first, last]` given the gold labels outside it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMarginals {
    pub first: usize,
    /// `CL(first, last)`.
    pub loss: f64,
    /// m × C with m = last − first + 1: `q_t[j] = p(y_t = j | y outside, x)`.
    pub unary: Array2<f64>,
    /// (m−1) × C × C: `q_{t-1,t}[i][j]` for consecutive positions inside the segment.
    pub pairwise: Array3<f64>,
}

/// `∇_θ CL(a,b)` in factored form (DESIGN.md §2):
/// `∇_W = Σ_t r_t ⊗ f_t`, and the small dense blocks for `b`, `A`, `s`, `e`.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentGradient {
    pub first: usize,
    /// `CL(first, last)` at which the gradient was taken.
    pub loss: f64,
    /// m × C error vectors `r_t = q_t − ȳ_t` (expected minus observed; the paper's `e_t = −r_t`).
    pub error_vectors: Array2<f64>,
    /// `∇_b = Σ_t r_t`, when the model has a bias.
    pub bias: Option<Array1<f64>>,
    /// `∇_A`, C × C (`[from][to]`).
    pub transitions: Array2<f64>,
    /// `∇_s = [a = 0] r_a`, when the model has start scores.
    pub start: Option<Array1<f64>>,
    /// `∇_e = [b = n−1] r_b`, when the model has end scores.
    pub end: Option<Array1<f64>>,
}

impl SegmentGradient {
    pub fn last(&self) -> usize {
        self.first + self.error_vectors.nrows() - 1
    }

    /// The gradient as one dense vector in the model's parameter order (`W` row-major, `b`,
    /// `A` row-major, `s`, `e`). `features` is the whole sequence the gradient was taken on.
    pub fn to_dense(&self, crf: &Crf, features: ArrayView2<f32>) -> Result<Vec<f64>> {
        crf.check_sequence(features, None)?;
        if self.last() >= features.nrows() {
            return Err(Error::DimensionMismatch(format!(
                "the gradient covers tokens {}..={} but the sequence has {} tokens",
                self.first,
                self.last(),
                features.nrows()
            )));
        }
        let (c, d) = (crf.num_labels(), crf.feature_dim());
        let mut out = vec![0.0; crf.num_params()];
        let rows = features.slice(s![self.first..=self.last(), ..]);
        // ∇_W = Σ_t r_t ⊗ f_t  =  Rᵀ F  (C × d), rank ≤ m.
        let grad_w = self.error_vectors.t().dot(&rows.mapv(f64::from));
        out[..c * d]
            .iter_mut()
            .zip(grad_w.iter())
            .for_each(|(o, x)| *o = *x);
        let layout = crf.layout();
        let mut put = |at: Option<usize>, v: Option<&Array1<f64>>| {
            if let (Some(at), Some(v)) = (at, v) {
                out[at..at + c]
                    .iter_mut()
                    .zip(v.iter())
                    .for_each(|(o, x)| *o = *x);
            }
        };
        put(layout.bias, self.bias.as_ref());
        put(layout.start, self.start.as_ref());
        put(layout.end, self.end.as_ref());
        out[layout.transitions..layout.transitions + c * c]
            .iter_mut()
            .zip(self.transitions.iter())
            .for_each(|(o, x)| *o = *x);
        Ok(out)
    }
}

impl Crf {
    pub(crate) fn check_segment(n: usize, first: usize, last: usize) -> Result<()> {
        if first > last {
            return Err(Error::BadSegment(format!(
                "first = {first} > last = {last}"
            )));
        }
        if last >= n {
            return Err(Error::BadSegment(format!(
                "last = {last} but the sequence has {n} tokens (0..{n})"
            )));
        }
        Ok(())
    }

    /// Boundary potentials of the segment chain: `a > 0 ? A[y_{a-1}][·] : s`, and
    /// `b < n−1 ? A[·][y_{b+1}] : e` (Appendix B's interaction terms `T_I`).
    fn segment_boundaries(
        &self,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let c = self.num_labels();
        let a = self.transitions();
        let n = labels.len();
        let init = (0..c)
            .map(|j| match first {
                0 => self.start_score(j),
                _ => a[[labels[first - 1] as usize, j]],
            })
            .collect();
        let fin = (0..c)
            .map(|j| match last + 1 == n {
                true => self.end_score(j),
                false => a[[j, labels[last + 1] as usize]],
            })
            .collect();
        (init, fin)
    }

    /// The segment chain and `CL`, or `None` when the gold labelling is impossible (then
    /// `CL = +inf` by convention: `p(y) = 0`, so the conditional of its segment is zero).
    fn segment_chain(
        &self,
        emissions: &Array2<f64>,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> Option<(Chain, f64)> {
        if self.path_score(emissions, labels) == f64::NEG_INFINITY {
            return None;
        }
        let (init, fin) = self.segment_boundaries(labels, first, last);
        let unary = emissions.slice(s![first..=last, ..]);
        let chain = Chain::run(unary, self.transitions().view(), &init, &fin);
        let y = |t: usize| labels[t] as usize;
        let mut gold = init[y(first)] + fin[y(last)];
        for t in first..=last {
            gold += emissions[[t, y(t)]];
            if t > first {
                gold += self.transitions()[[y(t - 1), y(t)]];
            }
        }
        // CL is a −log probability: clamp the last-ulp rounding of log Z_seg − S_seg at zero.
        let loss = (chain.log_z - gold).max(0.0);
        Some((chain, loss))
    }

    /// `CL(first, last)` for `0 ≤ first ≤ last < n`; `+inf` when the gold labels are impossible
    /// under the constraints. `CL(0, n−1)` is the whole-sequence NLL `−log p(y|x)`.
    pub fn segment_loss(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> Result<f64> {
        self.check_sequence(features, Some(labels))?;
        Self::check_segment(labels.len(), first, last)?;
        let u = self.emissions_unchecked(features);
        Ok(self
            .segment_chain(&u, labels, first, last)
            .map_or(f64::INFINITY, |(_, loss)| loss))
    }

    /// The segment-conditional marginals `q_t` and `q_{t-1,t}` inside `[first, last]`.
    /// Errors with `ImpossibleLabels` when the gold labels are impossible.
    pub fn segment_marginals(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> Result<SegmentMarginals> {
        self.check_sequence(features, Some(labels))?;
        Self::check_segment(labels.len(), first, last)?;
        let u = self.emissions_unchecked(features);
        let (chain, loss) = self
            .segment_chain(&u, labels, first, last)
            .ok_or_else(|| impossible_gold(self, labels))?;
        let unary = u.slice(s![first..=last, ..]);
        Ok(SegmentMarginals {
            first,
            loss,
            unary: chain.unary_marginals(),
            pairwise: chain.pairwise_marginals(unary, self.transitions().view()),
        })
    }

    /// `∇_θ CL(first, last)` in factored form (DESIGN.md §2).
    /// Errors with `ImpossibleLabels` when the gold labels are impossible (the loss is `+inf`).
    pub fn segment_gradient(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> Result<SegmentGradient> {
        let q = self.segment_marginals(features, labels, first, last)?;
        let c = self.num_labels();
        let n = labels.len();
        let y = |t: usize| labels[t] as usize;
        let mut r = q.unary.clone();
        for t in first..=last {
            r[[t - first, y(t)]] -= 1.0;
        }
        let mut grad_a = Array2::<f64>::zeros((c, c));
        // Inside the segment: expected minus observed transition counts.
        for t in first + 1..=last {
            grad_a += &q.pairwise.slice(s![t - first - 1, .., ..]);
            grad_a[[y(t - 1), y(t)]] -= 1.0;
        }
        // The clamped neighbours: ȳ_{a-1} ⊗ r_a and r_b ⊗ ȳ_{b+1}.
        if first > 0 {
            let mut row = grad_a.row_mut(y(first - 1));
            row += &r.row(0);
        }
        if last + 1 < n {
            let mut col = grad_a.column_mut(y(last + 1));
            col += &r.row(last - first);
        }
        // A model with start/end scores always has those blocks; they are zero unless the
        // segment touches that end of the sequence.
        let boundary = |present: bool, touches: bool, row: usize| {
            present.then(|| match touches {
                true => r.row(row).to_owned(),
                false => Array1::zeros(c),
            })
        };
        Ok(SegmentGradient {
            first,
            loss: q.loss,
            bias: self.bias().map(|_| r.sum_axis(ndarray::Axis(0))),
            transitions: grad_a,
            start: boundary(self.start().is_some(), first == 0, 0),
            end: boundary(self.end().is_some(), last + 1 == n, last - first),
            error_vectors: r,
        })
    }

    /// `∇_θ CL(first, last)` as a dense vector of `num_params` values.
    pub fn segment_gradient_dense(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
        first: usize,
        last: usize,
    ) -> Result<Vec<f64>> {
        self.segment_gradient(features, labels, first, last)?
            .to_dense(self, features)
    }

    /// Every single-token segment at once, the index's hot path: for each `t`, `CL(t,t)` and
    /// `r_t = softmax_j(u_t[j] + left_t[j] + right_t[j]) − ȳ_t`, where `left_t = A[y_{t-1}][·]`
    /// (or `s`) and `right_t = A[·][y_{t+1}]` (or `e`) (DESIGN.md §2, single-token case).
    /// Returns (losses, n × C error vectors). O(n·C) after the emission GEMM.
    pub fn token_errors(
        &self,
        features: ArrayView2<f32>,
        labels: &[u32],
    ) -> Result<(Vec<f64>, Array2<f64>)> {
        self.check_sequence(features, Some(labels))?;
        let u = self.emissions_unchecked(features);
        self.token_errors_from_emissions(&u, labels)
    }

    pub(crate) fn token_errors_from_emissions(
        &self,
        u: &Array2<f64>,
        labels: &[u32],
    ) -> Result<(Vec<f64>, Array2<f64>)> {
        if self.path_score(u, labels) == f64::NEG_INFINITY {
            return Err(impossible_gold(self, labels));
        }
        let (n, c) = u.dim();
        let a = self.transitions();
        let mut losses = Vec::with_capacity(n);
        let mut errors = Array2::<f64>::zeros((n, c));
        let mut logits = vec![0.0; c];
        for t in 0..n {
            for (j, l) in logits.iter_mut().enumerate() {
                let left = if t > 0 {
                    a[[labels[t - 1] as usize, j]]
                } else {
                    self.start_score(j)
                };
                let right = if t + 1 < n {
                    a[[j, labels[t + 1] as usize]]
                } else {
                    self.end_score(j)
                };
                *l = u[[t, j]] + left + right;
            }
            let log_z = log_sum_exp(&logits);
            let yt = labels[t] as usize;
            losses.push((log_z - logits[yt]).max(0.0));
            let mut row = errors.row_mut(t);
            for j in 0..c {
                row[j] = (logits[j] - log_z).exp();
            }
            row[yt] -= 1.0;
        }
        Ok((losses, errors))
    }
}

/// Names the first forbidden step of an impossible gold labelling.
fn impossible_gold(crf: &Crf, labels: &[u32]) -> Error {
    let n = labels.len();
    let a = crf.transitions();
    let y = |t: usize| labels[t] as usize;
    let what = if crf.start_score(y(0)) == f64::NEG_INFINITY {
        format!("label {} is forbidden at the start (position 0)", y(0))
    } else if let Some(t) = (1..n).find(|&t| a[[y(t - 1), y(t)]] == f64::NEG_INFINITY) {
        format!(
            "the transition {} -> {} at positions {}..{} is forbidden",
            y(t - 1),
            y(t),
            t - 1,
            t
        )
    } else if crf.end_score(y(n - 1)) == f64::NEG_INFINITY {
        format!(
            "label {} is forbidden at the end (position {})",
            y(n - 1),
            n - 1
        )
    } else {
        "the gold labelling has zero probability".to_string()
    };
    Error::ImpossibleLabels(format!("gold labels are impossible under the constraints: {what}; the loss is +inf and has no gradient"))
}
