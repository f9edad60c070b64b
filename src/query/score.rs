//! Factored influence scoring (DESIGN.md §3): one GEMM of the index features against the test
//! columns per block of rows, then O(C) per (training token, test segment) pair.
//!
//! For a test gradient `G = (Σ_t r_t ⊗ f_t, G_b, G_A, G_s, G_e)` and training token `k`:
//!
//! ```text
//! g_test·g_k = Σ_t (r_t·r_k)(f_t·f_k) + G_b·r_k + [p_k] G_A[p_k,:]·r_k + [n_k] G_A[:,n_k]·r_k
//!            + [k first] G_s·r_k + [k last] G_e·r_k  =  r_k · (Σ_l dots[k,l] c_l + v_k)
//! ```
//!
//! where the test "columns" `l` are the segment's feature rows `f_t` with coefficients
//! `c_l = r_t` (m ≤ C tokens), or for long segments the C rows of `Σ_t r_t ⊗ f_t` with
//! `c_l = e_l` — whichever needs fewer columns.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};

use crate::crf::Crf;
use crate::error::Result;
use crate::index::{Index, NO_LABEL};
use crate::query::options::{Granularity, Hessian, Normalization, QueryOptions};

/// One test segment of a query.
#[derive(Debug, Clone, Copy)]
pub struct TestSegment<'a> {
    /// The whole test sequence, n × d.
    pub features: ArrayView2<'a, f32>,
    /// Its labels (gold or predicted: the caller chooses), n.
    pub labels: &'a [u32],
    pub first: usize,
    /// Inclusive.
    pub last: usize,
}

/// The test side of one query, prepared once: its columns' coefficients and the dense blocks.
pub(crate) struct TestSide {
    /// Where this query's columns start in the batch's column matrix, and how many.
    pub cols: std::ops::Range<usize>,
    /// num_cols × C coefficients `c_l`.
    pub coefs: Array2<f64>,
    pub bias: Option<Array1<f64>>,
    pub transitions: Array2<f64>,
    pub start: Option<Array1<f64>>,
    pub end: Option<Array1<f64>>,
    /// `‖f̄‖` for nearest-neighbour cosine.
    pub mean_norm: f64,
}

/// Builds every query's test side and the stacked column matrix (L × d, f64).
pub(crate) fn prepare(
    crf: &Crf,
    options: &QueryOptions,
    segments: &[TestSegment],
) -> Result<(Vec<TestSide>, Array2<f64>)> {
    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let mut sides = Vec::with_capacity(segments.len());
    let mut rows: Vec<f64> = Vec::new();
    for seg in segments {
        let at = rows.len() / d;
        let side = match options.granularity {
            Granularity::Token | Granularity::Instance => {
                let g = crf.segment_gradient(seg.features, seg.labels, seg.first, seg.last)?;
                let x = seg
                    .features
                    .slice(s![seg.first..=seg.last, ..])
                    .mapv(f64::from);
                let m = x.nrows();
                let coefs = if m <= c {
                    rows.extend(x.iter());
                    g.error_vectors.clone()
                } else {
                    rows.extend(g.error_vectors.t().dot(&x).iter()); // Σ_t r_t ⊗ f_t, C × d
                    Array2::eye(c)
                };
                TestSide {
                    cols: at..at + coefs.nrows(),
                    coefs,
                    bias: g.bias,
                    transitions: g.transitions,
                    start: g.start,
                    end: g.end,
                    mean_norm: 0.0,
                }
            }
            Granularity::NearestDot | Granularity::NearestCosine => {
                crf.check_sequence(seg.features, Some(seg.labels))?;
                Crf::check_segment(seg.labels.len(), seg.first, seg.last)?;
                let mean = seg
                    .features
                    .slice(s![seg.first..=seg.last, ..])
                    .mapv(f64::from)
                    .mean_axis(Axis(0))
                    .unwrap_or_else(|| Array1::zeros(d));
                rows.extend(mean.iter());
                TestSide {
                    cols: at..at + 1,
                    coefs: Array2::zeros((1, c)),
                    bias: None,
                    transitions: Array2::zeros((c, c)),
                    start: None,
                    end: None,
                    mean_norm: mean.dot(&mean).sqrt(),
                }
            }
        };
        sides.push(side);
    }
    let num_cols = rows.len() / d;
    let columns = Array2::from_shape_vec((num_cols, d), rows)
        .map_err(|e| crate::Error::InvalidArgument(format!("test columns: {e}")))?;
    Ok((sides, columns))
}

/// Rows per block: the block's f64 copy (256 × d × 8 bytes) stays in L2 for d ≤ 768.
const BLOCK: usize = 256;

/// `Σ_i a_i b_i` in f64 over f32 × f64, with independent partial sums so it vectorises.
#[inline]
fn dot(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * y[i];
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(&x, &y)| f64::from(x) * y).sum();
    acc.iter().sum::<f64>() + tail
}

/// Reusable buffers of one scan.
#[derive(Default)]
pub(crate) struct Scratch {
    decoded: Vec<f32>,
    widened: Vec<f64>,
}

/// Scores every training item against every prepared query; calls `emit(query, item, score)`
/// once per pair, items being tokens (token/nearest granularity) or sequences (instance).
/// `emit` sees items in index order.
pub(crate) fn scan(
    index: &Index,
    options: &QueryOptions,
    sides: &[TestSide],
    columns: &Array2<f64>,
    scratch: &mut Scratch,
    mut emit: impl FnMut(usize, usize, f64),
) {
    let crf = index.crf();
    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let n = index.num_tokens();
    let num_cols = columns.nrows();
    let Hessian::Identity { damping } = options.hessian;
    let scale = -1.0 / damping;
    let t = &index.tokens;
    let (errors, inst_errors) = (t.errors.as_slice(), t.instance_errors.as_slice());
    let (prev, next) = (t.prev_labels.as_slice(), t.next_labels.as_slice());
    let (grad_norms, feature_norms) = (t.grad_norms.as_slice(), t.feature_norms.as_slice());
    let token_seq = t.sequences.as_slice();
    let instance = options.granularity == Granularity::Instance;
    let nearest = matches!(
        options.granularity,
        Granularity::NearestDot | Granularity::NearestCosine
    );
    let mut per_seq = if instance {
        Array2::<f64>::zeros((sides.len(), index.num_sequences()))
    } else {
        Array2::zeros((0, 0))
    };
    let mut dots = Array2::<f64>::zeros((BLOCK, num_cols));
    let mut w = vec![0.0f64; c];

    for start in (0..n).step_by(BLOCK) {
        let end = (start + BLOCK).min(n);
        let rb = end - start;
        let rows = index.features.rows(start, end, d, &mut scratch.decoded);
        let mut block_dots = dots.slice_mut(s![..rb, ..]);
        if num_cols <= 4 {
            for (i, row) in rows.chunks_exact(d).enumerate() {
                for (l, col) in columns.outer_iter().enumerate() {
                    block_dots[[i, l]] = dot(row, col.as_slice().unwrap_or(&col.to_vec()));
                }
            }
        } else {
            scratch.widened.clear();
            scratch.widened.extend(rows.iter().map(|&v| f64::from(v)));
            let widened = ArrayView2::from_shape((rb, d), &scratch.widened[..])
                .expect("rb × d by construction");
            ndarray::linalg::general_mat_mul(1.0, &widened, &columns.t(), 0.0, &mut block_dots);
        }
        for (q, side) in sides.iter().enumerate() {
            for i in 0..rb {
                let k = start + i;
                let dk = block_dots.row(i);
                if nearest {
                    let mut sim = dk[side.cols.start];
                    if options.granularity == Granularity::NearestCosine {
                        let norm = feature_norms[k] * side.mean_norm;
                        sim = if norm > 0.0 { sim / norm } else { 0.0 };
                    }
                    emit(q, k, -sim);
                    continue;
                }
                // w = Σ_l dots[k,l] c_l (+ G_b): the emission part, shared by both granularities.
                w.iter_mut().for_each(|v| *v = 0.0);
                for (l, coef) in side.cols.clone().zip(side.coefs.outer_iter()) {
                    let x = dk[l];
                    for j in 0..c {
                        w[j] += x * coef[j];
                    }
                }
                if let Some(gb) = &side.bias {
                    for j in 0..c {
                        w[j] += gb[j];
                    }
                }
                if instance {
                    let r = &inst_errors[k * c..(k + 1) * c];
                    per_seq[[q, token_seq[k] as usize]] += (0..c).map(|j| w[j] * r[j]).sum::<f64>();
                    continue;
                }
                // v_k: the transition/start/end terms of this training token.
                if prev[k] != NO_LABEL {
                    let row = side.transitions.row(prev[k] as usize);
                    for j in 0..c {
                        w[j] += row[j];
                    }
                } else if let Some(gs) = &side.start {
                    for j in 0..c {
                        w[j] += gs[j];
                    }
                }
                if next[k] != NO_LABEL {
                    let col = side.transitions.column(next[k] as usize);
                    for j in 0..c {
                        w[j] += col[j];
                    }
                } else if let Some(ge) = &side.end {
                    for j in 0..c {
                        w[j] += ge[j];
                    }
                }
                let r = &errors[k * c..(k + 1) * c];
                let mut score = scale * (0..c).map(|j| w[j] * r[j]).sum::<f64>();
                if options.normalization == Normalization::GradientNorm {
                    score = if grad_norms[k] > 0.0 {
                        score / grad_norms[k]
                    } else {
                        0.0
                    };
                }
                emit(q, k, score);
            }
        }
    }

    if instance {
        let sq = &index.seqs;
        let (ga, gs, ge) = (
            sq.transition_grads.as_slice(),
            sq.start_grads.as_slice(),
            sq.end_grads.as_slice(),
        );
        let norms = sq.grad_norms.as_slice();
        for (q, side) in sides.iter().enumerate() {
            for s in 0..index.num_sequences() {
                let mut raw = per_seq[[q, s]];
                raw += side
                    .transitions
                    .iter()
                    .zip(&ga[s * c * c..(s + 1) * c * c])
                    .map(|(a, b)| a * b)
                    .sum::<f64>();
                if let Some(v) = &side.start {
                    raw += v
                        .iter()
                        .zip(&gs[s * c..(s + 1) * c])
                        .map(|(a, b)| a * b)
                        .sum::<f64>();
                }
                if let Some(v) = &side.end {
                    raw += v
                        .iter()
                        .zip(&ge[s * c..(s + 1) * c])
                        .map(|(a, b)| a * b)
                        .sum::<f64>();
                }
                let mut score = scale * raw;
                if options.normalization == Normalization::GradientNorm {
                    score = if norms[s] > 0.0 {
                        score / norms[s]
                    } else {
                        0.0
                    };
                }
                emit(q, s, score);
            }
        }
    }
}
