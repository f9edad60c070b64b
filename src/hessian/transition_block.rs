//! The exact Hessian of the training objective's transition/start/end block in one pass over
//! the data: K-FAC's and EK-FAC's dense block.
//!
//! As in [`super::exact`], `∇² NLL = Cov_{p(y|x)}[φ] − Cov_{p(y|y_obs,x)}[φ]`; here φ is only
//! the block's statistics — pair counts `φ_A[i,j] = Σ_{t≥1} 1(y_{t−1}=i, y_t=j)`,
//! `φ_s[a] = 1(y_0=a)`, `φ_e[b] = 1(y_{n−1}=b)` — and the covariance is formed directly from
//! the chain's marginals instead of one Hessian–vector product per parameter (each of which
//! also paid for the n×d×C emission GEMMs). The posterior is a Markov chain with transition
//! matrices `T_t[k,l] = P(y_t=l | y_{t−1}=k) = p_t(k,l) / p_{t−1}(k)`, so with
//!
//! ```text
//! F_t[(i,j), l] = Σ_{1≤s≤t} P(pair_s = (i,j), y_t = l) = Σ_k F_{t−1}[(i,j), k] T_t[k,l] + p_t(i,j) δ(j,l)
//! R_t[a, l]     = P(y_0 = a, y_t = l)                   = Σ_k R_{t−1}[a, k] T_t[k,l],  R_0 = diag p_0
//! ```
//!
//! the second moments are `E[φ_A φ_Aᵀ] = Σ_t diag(p_t) + Σ_{s<t} (X_st + X_stᵀ)` with
//! `Σ_{s<t} X_st[(i,j),(k,l)] = Σ_{t≥2} F_{t−1}[(i,j), k] T_t[k,l]`, `E[φ_s φ_Aᵀ][a,(k,l)] =
//! Σ_{t≥1} R_{t−1}[a,k] T_t[k,l]`, `E[φ_A φ_eᵀ] = F_{n−1}`, `E[φ_s φ_eᵀ] = R_{n−1}` and diagonal
//! `E[φ_s φ_sᵀ]`, `E[φ_e φ_eᵀ]`: O(n C⁴) per sequence. `benches/train_hessian.rs` times it.

use nalgebra::DMatrix;
use ndarray::Array2;
use rayon::prelude::*;

use crate::crf::{clamp_to_observed, no_observed_labelling, Crf, Marginals};
use crate::error::{Error, Result};
use crate::hessian::exact::in_sequence;
use crate::train::TrainSeq;

/// Sequences per parallel task: fixed, so that the sum is the same on any machine.
const CHUNK: usize = 64;

/// `(1/|D|) Σ_seq (Cov_p[φ] − Cov_{p_obs}[φ])` restricted to the parameters `index` (each in
/// the transition, start or end block of `crf`'s layout), given every sequence's
/// whole-sequence posteriors `free` (`Crf::marginals`). The clamped posteriors are computed
/// here, for the sequences with unobserved labels only (with every label observed the clamped
/// posterior is a point mass, whose covariance is 0).
pub(crate) fn dense_block_hessian(
    crf: &Crf,
    data: &[TrainSeq],
    free: &[Marginals],
    index: &[usize],
) -> Result<DMatrix<f64>> {
    if data.is_empty() || data.len() != free.len() {
        return Err(Error::InvalidArgument(format!(
            "{} sequences and {} posteriors",
            data.len(),
            free.len()
        )));
    }
    let stats = Stats::new(crf);
    let rows: Vec<usize> = index
        .iter()
        .map(|&p| stats.of_param(p))
        .collect::<Result<_>>()?;
    let partials: Vec<Array2<f64>> = data
        .par_chunks(CHUNK)
        .zip(free.par_chunks(CHUNK))
        .enumerate()
        .map(|(chunk, (seqs, margs))| {
            let mut sum = Array2::<f64>::zeros((stats.len, stats.len));
            for (i, (seq, m)) in seqs.iter().zip(margs).enumerate() {
                let clamped =
                    clamped_marginals(crf, seq).map_err(|e| in_sequence(chunk * CHUNK + i, e))?;
                stats.add_covariance(m, 1.0, &mut sum);
                if let Some(clamped) = clamped {
                    stats.add_covariance(&clamped, -1.0, &mut sum);
                }
            }
            Ok(sum)
        })
        .collect::<Result<_>>()?;
    let mut total = Array2::<f64>::zeros((stats.len, stats.len));
    for partial in &partials {
        total += partial;
    }
    let scale = 1.0 / data.len() as f64;
    Ok(DMatrix::from_fn(rows.len(), rows.len(), |a, b| {
        scale * total[[rows[a], rows[b]]]
    }))
}

/// The posteriors `p(y | y_obs, x)` after the sequence's checks (those of the Hessian–vector
/// products): at an observed position only the observed label keeps its score, as the
/// training objective clamps. `None` when every label is observed (a point mass, whose
/// covariance is 0), once the constraints are known to allow the labels.
fn clamped_marginals(crf: &Crf, seq: &TrainSeq) -> Result<Option<Marginals>> {
    let (features, labels, observed) = (seq.features.view(), &seq.labels, &seq.observed);
    crf.check_partially_labelled(features, labels, Some(observed))?;
    if observed.iter().all(|&o| o) {
        // The emissions are finite: only the constraints can forbid the labelling.
        let zeros = Array2::zeros((labels.len(), crf.num_labels()));
        return match crf.path_score(&zeros, labels) {
            f64::NEG_INFINITY => Err(no_observed_labelling()),
            _ => Ok(None),
        };
    }
    let u = clamp_to_observed(&crf.emissions_unchecked(features), labels, |t| observed[t]);
    let chain = crf.chain_unchecked(&u);
    if chain.log_z == f64::NEG_INFINITY {
        return Err(no_observed_labelling());
    }
    Ok(Some(chain.marginals(u.view(), crf.transitions().view())))
}

/// Where each statistic sits: `A` (C², `[i·C + j]`), then `s` and `e` (C each) when the model
/// has them.
struct Stats {
    c: usize,
    transitions: usize,
    start: Option<(usize, usize)>,
    end: Option<(usize, usize)>,
    len: usize,
}

impl Stats {
    fn new(crf: &Crf) -> Stats {
        let (c, layout) = (crf.num_labels(), crf.layout());
        let mut len = c * c;
        let mut block = |param: Option<usize>| {
            param.map(|p| {
                len += c;
                (p, len - c)
            })
        };
        let (start, end) = (block(layout.start), block(layout.end));
        Stats {
            c,
            transitions: layout.transitions,
            start,
            end,
            len,
        }
    }

    /// The statistic of parameter `p`.
    fn of_param(&self, p: usize) -> Result<usize> {
        let within = |(param, stat): (usize, usize)| {
            (param..param + self.c)
                .contains(&p)
                .then(|| stat + p - param)
        };
        if (self.transitions..self.transitions + self.c * self.c).contains(&p) {
            return Ok(p - self.transitions);
        }
        self.start
            .and_then(within)
            .or_else(|| self.end.and_then(within))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "parameter {p} is not in the transition, start or end block"
                ))
            })
    }

    /// `sum += sign · Cov[φ]` under the chain whose posteriors are `m`.
    fn add_covariance(&self, m: &Marginals, sign: f64, sum: &mut Array2<f64>) {
        let c = self.c;
        let (n, p, pair) = (m.unary.nrows(), &m.unary, &m.pairwise);
        let mut second = Array2::<f64>::zeros((self.len, self.len));
        let mut mean = vec![0.0; self.len];
        // Pair counts: their means and the same-position terms (one pair per position).
        for t in 1..n {
            for ij in 0..c * c {
                let q = pair[[t - 1, ij / c, ij % c]];
                mean[ij] += q;
                second[[ij, ij]] += q;
            }
        }
        // F (C² × C) and R (C × C) carried along the chain; cross terms of pairs s < t.
        let mut f = Array2::<f64>::zeros((c * c, c));
        let mut r = Array2::from_shape_fn((c, c), |(a, b)| if a == b { p[[0, a]] } else { 0.0 });
        for t in 1..n {
            let step = posterior_step(m, t);
            // Pairs s < t against the pair at t, then F_t from them.
            let mut next_f = Array2::<f64>::zeros((c * c, c));
            for ij in 0..c * c {
                for k in 0..c {
                    let fk = f[[ij, k]];
                    if fk == 0.0 {
                        continue;
                    }
                    for l in 0..c {
                        let x = fk * step[[k, l]];
                        second[[ij, k * c + l]] += x;
                        second[[k * c + l, ij]] += x;
                        next_f[[ij, l]] += x;
                    }
                }
                next_f[[ij, ij % c]] += pair[[t - 1, ij / c, ij % c]];
            }
            // y_0 against the pair at t, then R_t.
            if let Some((_, s0)) = self.start {
                for a in 0..c {
                    for k in 0..c {
                        for l in 0..c {
                            let x = r[[a, k]] * step[[k, l]];
                            second[[s0 + a, k * c + l]] += x;
                            second[[k * c + l, s0 + a]] += x;
                        }
                    }
                }
            }
            r = r.dot(&step);
            f = next_f;
        }
        if let Some((_, s0)) = self.start {
            for a in 0..c {
                mean[s0 + a] = p[[0, a]];
                second[[s0 + a, s0 + a]] += p[[0, a]];
            }
        }
        if let Some((_, e0)) = self.end {
            for b in 0..c {
                mean[e0 + b] = p[[n - 1, b]];
                second[[e0 + b, e0 + b]] += p[[n - 1, b]];
                // The pairs and y_0 against y_{n−1}.
                for ij in 0..c * c {
                    second[[ij, e0 + b]] += f[[ij, b]];
                    second[[e0 + b, ij]] += f[[ij, b]];
                }
                if let Some((_, s0)) = self.start {
                    for a in 0..c {
                        second[[s0 + a, e0 + b]] += r[[a, b]];
                        second[[e0 + b, s0 + a]] += r[[a, b]];
                    }
                }
            }
        }
        for a in 0..self.len {
            for b in 0..self.len {
                sum[[a, b]] += sign * (second[[a, b]] - mean[a] * mean[b]);
            }
        }
    }
}

/// The posterior transition matrix `T_t[k,l] = P(y_t = l | y_{t−1} = k) = p_t(k,l) / p_{t−1}(k)`
/// (rows of impossible `k` are zero: they never carry probability).
pub(super) fn posterior_step(m: &Marginals, t: usize) -> Array2<f64> {
    let c = m.unary.ncols();
    Array2::from_shape_fn((c, c), |(k, l)| {
        let pk = m.unary[[t - 1, k]];
        if pk > 0.0 {
            m.pairwise[[t - 1, k, l]] / pk
        } else {
            0.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hessian::kfac::dense_index;
    use crate::hessian::objective_hvp;
    use ndarray::Array1;

    /// A 64-bit LCG, uniform in [0, 1).
    struct Rng(u64);

    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A CRF with `forbid` of its transitions at -inf (never a whole row), optional start/end.
    fn crf(rng: &mut Rng, (c, d): (usize, usize), (start, end): (bool, bool), forbid: f64) -> Crf {
        let mut next = |scale: f64| (rng.uniform() - 0.5) * scale;
        let weights = Array2::from_shape_fn((c, d), |_| next(2.0));
        let bias = Some(Array1::from_shape_fn(c, |_| next(1.0)));
        let mut transitions = Array2::from_shape_fn((c, c), |_| next(2.0));
        for i in 0..c {
            for j in (0..c).filter(|&j| j != i) {
                if next(1.0) + 0.5 < forbid {
                    transitions[[i, j]] = f64::NEG_INFINITY;
                }
            }
        }
        let start = start.then(|| Array1::from_shape_fn(c, |_| next(1.0)));
        let end = end.then(|| Array1::from_shape_fn(c, |_| next(1.0)));
        Crf::new(weights, bias, transitions, start, end).expect("a valid CRF")
    }

    /// Sequences of 1..8 tokens labelled by Viterbi (so feasible), each label observed with
    /// probability `observed`.
    fn data(rng: &mut Rng, crf: &Crf, count: usize, observed: f64) -> Vec<TrainSeq> {
        (0..count)
            .map(|_| {
                let n = 1 + (rng.uniform() * 8.0) as usize;
                let x = Array2::from_shape_fn((n, crf.feature_dim()), |_| {
                    (rng.uniform() * 2.0 - 1.0) as f32
                });
                let labels = crf.viterbi(x.view()).expect("a labelling").0;
                let observed = (0..n).map(|_| rng.uniform() < observed).collect();
                TrainSeq {
                    features: x,
                    labels,
                    observed,
                }
            })
            .collect()
    }

    /// The block equals its columns as exact Hessian–vector products (forward-mode
    /// forward–backward, checked against finite differences in tests/hessian.rs), with all,
    /// some and no labels observed, with and without start/end scores and -inf transitions.
    #[test]
    fn block_equals_hessian_vector_products() {
        let mut rng = Rng(41);
        for (dims, boundaries, forbid, observed) in [
            ((3, 4), (true, true), 0.0, 1.0),
            ((4, 3), (true, true), 0.3, 0.6),
            ((3, 2), (false, true), 0.2, 0.3),
            ((2, 3), (true, false), 0.0, 0.0),
            ((5, 2), (false, false), 0.4, 0.5),
        ] {
            let crf = crf(&mut rng, dims, boundaries, forbid);
            let train = data(&mut rng, &crf, 12, observed);
            let free: Vec<Marginals> = train
                .iter()
                .map(|s| crf.marginals(s.features.view()).unwrap())
                .collect();
            let c = crf.num_labels();
            let index = dense_index(&crf);
            let got = dense_block_hessian(&crf, &train, &free, &index).unwrap();
            for (col, &q) in index.iter().enumerate() {
                let mut e = vec![0.0; crf.num_params()];
                e[q] = 1.0;
                let hv = objective_hvp(&crf, &train, 0.0, 0.0, &e).unwrap();
                for (row, &r) in index.iter().enumerate() {
                    let (a, b) = (got[(row, col)], hv[r]);
                    assert!(
                        (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
                        "C = {c}, observed {observed}: H[{r}, {q}] = {a}, HVP {b}"
                    );
                }
            }
        }
    }

    /// As the Hessian–vector products: labels the constraints forbid, observed or not, are an
    /// error naming the sequence.
    #[test]
    fn forbidden_labels_are_refused() {
        let mut rng = Rng(47);
        let mut crf = crf(&mut rng, (2, 2), (true, true), 0.0);
        let mut params = crf.params().to_vec();
        params[crf.layout().transitions + 1] = f64::NEG_INFINITY; // 0 → 1
        crf = crf.with_params(&params).unwrap();
        for observed in [vec![true, true], vec![true, true, false, true]] {
            let n = observed.len();
            let mut labels = vec![0, 1, 1, 1];
            labels.truncate(n);
            let seq = TrainSeq {
                features: Array2::zeros((n, 2)),
                labels,
                observed,
            };
            let free = vec![crf.marginals(seq.features.view()).unwrap()];
            let index = [crf.layout().transitions];
            let e = dense_block_hessian(&crf, &[seq], &free, &index).unwrap_err();
            assert!(
                matches!(&e, Error::ImpossibleLabels(m) if m.starts_with("training sequence 0")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn parameters_outside_the_block_are_refused() {
        let mut rng = Rng(43);
        let crf = crf(&mut rng, (2, 2), (true, true), 0.0);
        let train = data(&mut rng, &crf, 2, 1.0);
        let free: Vec<Marginals> = train
            .iter()
            .map(|s| crf.marginals(s.features.view()).unwrap())
            .collect();
        let e = dense_block_hessian(&crf, &train, &free, &[0]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        let e = dense_block_hessian(&crf, &train, &free[..1], &[crf.layout().transitions]);
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
    }
}
