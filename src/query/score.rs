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
//!
//! Two passes share these formulas. The **exact** pass computes `dots` in f64 (f32 × f64 with
//! f64 accumulation); [`Query::scores`](crate::query::Query::scores) uses it. The **ranking**
//! pass of `run`/`run_batch` computes `dots` in f32 (OpenBLAS sgemm, streaming kernels) or, for
//! int8 indexes, as exact integer sums against i16-quantised columns (`ranking.rs`), keeps a
//! few more candidates than asked for together with a rigorous bound on each score's error, rescores
//! the candidates exactly, and proves that no other item can enter the top k (else it falls
//! back to the exact pass). Reported hits therefore carry exact scores and ranks.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::index::{pair_class, Index};
use crate::int_kernels::{f32_at_least, SkipBelow, TokenTerms};
use crate::kernels::{dot_exact, PAIR_GROUP};
use crate::query::options::{Granularity, Hessian, Normalization, QueryOptions};
use crate::query::ranking::{RankingColumns, Scratch, FEW, ONE};
use crate::query::topk::{SharedCuts, TopK};

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

/// The test side of one query: its columns' coefficients and the dense gradient blocks, as
/// flat row-major vectors (the per-item loop runs millions of times per query).
pub(crate) struct TestSide {
    /// This query's columns in the batch's column matrix.
    pub cols: Range<usize>,
    /// num_cols × C coefficients `c_l`.
    coefs: Vec<f64>,
    bias: Option<Vec<f64>>,
    /// `G_A` (C × C).
    transitions: Vec<f64>,
    start: Option<Vec<f64>>,
    end: Option<Vec<f64>>,
    /// `‖f̄‖` for nearest-neighbour cosine.
    mean_norm: f64,
    /// (C+1)² × C, token granularity: row `(p, n)` (p the previous label or C at a sequence
    /// start, n the next label or C at its end) holds
    /// `[p<C] G_A[p,:] + [n<C] G_A[:,n] + G_b + [p=C] G_s + [n=C] G_e`, so that a token's
    /// dense terms are `r_k · table[(p_k, n_k)]`.
    pair_table: Vec<f64>,
}

impl TestSide {
    fn new(
        cols: Range<usize>,
        coefs: Array2<f64>,
        g: Option<crate::crf::SegmentGradient>,
        mean_norm: f64,
        c: usize,
    ) -> TestSide {
        let flat = |v: Option<Array1<f64>>| v.map(|v| v.to_vec());
        let (bias, transitions, start, end) = match g {
            Some(g) => (flat(g.bias), g.transitions, flat(g.start), flat(g.end)),
            None => (None, Array2::zeros((c, c)), None, None),
        };
        TestSide {
            cols,
            coefs: coefs.iter().copied().collect(),
            bias,
            transitions: transitions.iter().copied().collect(),
            start,
            end,
            mean_norm,
            pair_table: Vec::new(),
        }
    }

    /// Fills [`TestSide::pair_table`] from the dense blocks.
    fn build_pair_table(&mut self, c: usize) {
        let at = |v: &Option<Vec<f64>>, j: usize| v.as_ref().map_or(0.0, |v| v[j]);
        self.pair_table = (0..(c + 1) * (c + 1) * c)
            .map(|row| {
                let (pn, j) = (row / c, row % c);
                let (p, n) = (pn / (c + 1), pn % (c + 1));
                let before = match p < c {
                    true => self.transitions[p * c + j],
                    false => at(&self.start, j),
                };
                let after = match n < c {
                    true => self.transitions[j * c + n],
                    false => at(&self.end, j),
                };
                before + after + at(&self.bias, j)
            })
            .collect();
    }

    /// Row `(p_k, n_k)` of [`TestSide::pair_table`].
    #[inline]
    fn pair_row(&self, pn: usize, c: usize) -> &[f64] {
        &self.pair_table[pn * c..(pn + 1) * c]
    }
}

impl TestSide {
    /// A preconditioned test gradient in factored form: its columns (already appended to the
    /// batch's column rows by the caller, starting at row `at`) and the dense blocks.
    fn from_factored(f: crate::query::FactoredGradient, crf: &Crf, at: usize) -> TestSide {
        let c = crf.num_labels();
        let l = crf.layout();
        let h = &f.rest;
        let block = |o: Option<usize>| o.map(|o| h[o..o + c].to_vec());
        let transitions =
            Array2::from_shape_vec((c, c), h[l.transitions..l.transitions + c * c].to_vec())
                .unwrap_or_else(|_| Array2::zeros((c, c)));
        let mut side = TestSide::new(at..at + f.coefs.nrows(), f.coefs, None, 0.0, c);
        side.bias = block(l.bias);
        side.start = block(l.start);
        side.end = block(l.end);
        side.transitions = transitions.iter().copied().collect();
        side
    }

    /// A preconditioned test gradient `h` given densely (Crf::params order) in factored
    /// form: its W block's C rows as columns with unit coefficients.
    fn factored_from_dense(h: Vec<f64>, crf: &Crf) -> crate::query::FactoredGradient {
        let (c, d) = (crf.num_labels(), crf.feature_dim());
        let w = crf.layout().weights;
        let columns = Array2::from_shape_vec((c, d), h[w..w + c * d].to_vec())
            .unwrap_or_else(|_| Array2::zeros((c, d)));
        crate::query::FactoredGradient {
            columns,
            coefs: Array2::eye(c),
            rest: h,
        }
    }
}

/// All queries of a batch, prepared once.
pub(crate) struct Prepared {
    pub sides: Vec<TestSide>,
    /// L × d test columns, exact (f64).
    pub columns: Array2<f64>,
    /// The same rounded to f32, for the sgemm ranking pass.
    pub columns32: Array2<f32>,
}

/// Names the failing segment of a batch in the error message.
fn in_segment(e: Error, i: usize, of: usize) -> Error {
    if of == 1 {
        return e;
    }
    let at = |m: String| format!("segment {i} of the batch: {m}");
    match e {
        Error::InvalidArgument(m) => Error::InvalidArgument(at(m)),
        Error::DimensionMismatch(m) => Error::DimensionMismatch(at(m)),
        Error::LabelOutOfRange(m) => Error::LabelOutOfRange(at(m)),
        Error::BadSegment(m) => Error::BadSegment(at(m)),
        Error::NonFinite(m) => Error::NonFinite(at(m)),
        Error::ImpossibleLabels(m) => Error::ImpossibleLabels(at(m)),
        other => other,
    }
}

/// Builds every query's test side and the stacked column matrix.
pub(crate) fn prepare(
    crf: &Crf,
    options: &QueryOptions,
    segments: &[TestSegment],
) -> Result<Prepared> {
    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let mut sides = Vec::with_capacity(segments.len());
    let mut rows: Vec<f64> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let at = rows.len() / d;
        let side = match (options.granularity, &options.hessian) {
            (Granularity::Token | Granularity::Instance, Hessian::Inverse(inverse)) => {
                let g = crf
                    .segment_gradient(seg.features, seg.labels, seg.first, seg.last)
                    .map_err(|e| in_segment(e, i, segments.len()))?;
                let f = match inverse.apply_factored(&g, seg.features) {
                    Some(factored) => factored?,
                    None => TestSide::factored_from_dense(
                        inverse.apply(&g.to_dense(crf, seg.features)?)?,
                        crf,
                    ),
                };
                rows.extend(f.columns.iter());
                TestSide::from_factored(f, crf, at)
            }
            (Granularity::Token | Granularity::Instance, Hessian::Identity { .. }) => {
                let g = crf
                    .segment_gradient(seg.features, seg.labels, seg.first, seg.last)
                    .map_err(|e| in_segment(e, i, segments.len()))?;
                let x = seg
                    .features
                    .slice(s![seg.first..=seg.last, ..])
                    .mapv(f64::from);
                let coefs = if x.nrows() <= c {
                    rows.extend(x.iter());
                    g.error_vectors.clone()
                } else {
                    rows.extend(g.error_vectors.t().dot(&x).iter()); // Σ_t r_t ⊗ f_t, C × d
                    Array2::eye(c)
                };
                TestSide::new(at..at + coefs.nrows(), coefs, Some(g), 0.0, c)
            }
            (Granularity::NearestDot | Granularity::NearestCosine, _) => {
                crf.check_sequence(seg.features, Some(seg.labels))
                    .and_then(|()| Crf::check_segment(seg.labels.len(), seg.first, seg.last))
                    .map_err(|e| in_segment(e, i, segments.len()))?;
                let mean = seg
                    .features
                    .slice(s![seg.first..=seg.last, ..])
                    .mapv(f64::from)
                    .mean_axis(Axis(0))
                    .unwrap_or_else(|| Array1::zeros(d));
                rows.extend(mean.iter());
                TestSide::new(
                    at..at + 1,
                    Array2::zeros((1, c)),
                    None,
                    mean.dot(&mean).sqrt(),
                    c,
                )
            }
        };
        sides.push(side);
    }
    let num_cols = rows.len() / d;
    let columns = Array2::from_shape_vec((num_cols, d), rows)
        .map_err(|e| Error::InvalidArgument(format!("test columns: {e}")))?;
    for side in &mut sides {
        side.build_pair_table(c); // 900 values for C = 9: built whatever the granularity
    }
    Ok(Prepared {
        columns32: columns.mapv(|v| v as f32),
        columns,
        sides,
    })
}

/// Everything the per-item formulas read from the index and the options, as plain slices.
pub(crate) struct Ctx<'a> {
    pub index: &'a Index,
    pub c: usize,
    pub d: usize,
    granularity: Granularity,
    normalize: bool,
    /// `−1 / damping`.
    scale: f64,
    pub errors: &'a [f64],
    pub prev: &'a [u32],
    pub next: &'a [u32],
    pub grad_norms: &'a [f64],
    feature_norms: &'a [f64],
    seq_of: &'a [u32],
}

impl<'a> Ctx<'a> {
    pub fn new(index: &'a Index, options: &QueryOptions) -> Ctx<'a> {
        // Identity: −g·g_k / damping; other modes precondition the test side: −h·g_k.
        let damping = match options.hessian {
            Hessian::Identity { damping } => damping,
            Hessian::Inverse(_) => 1.0,
        };
        let t = &index.tokens;
        let instance = options.granularity == Granularity::Instance;
        let d = index.crf().feature_dim();
        Ctx {
            index,
            c: index.crf().num_labels(),
            d,
            granularity: options.granularity,
            normalize: options.normalization == Normalization::GradientNorm,
            scale: -1.0 / damping,
            // Instance influence uses the whole-sequence error vectors.
            errors: if instance {
                t.instance_errors.as_slice()
            } else {
                t.errors.as_slice()
            },
            prev: t.prev_labels.as_slice(),
            next: t.next_labels.as_slice(),
            grad_norms: if instance {
                index.seqs.grad_norms.as_slice()
            } else {
                t.grad_norms.as_slice()
            },
            feature_norms: t.feature_norms.as_slice(),
            seq_of: t.sequences.as_slice(),
        }
    }

    fn nearest(&self) -> bool {
        matches!(
            self.granularity,
            Granularity::NearestDot | Granularity::NearestCosine
        )
    }

    pub fn instance(&self) -> bool {
        self.granularity == Granularity::Instance
    }

    fn r(&self, k: usize) -> &[f64] {
        &self.errors[k * self.c..(k + 1) * self.c]
    }

    /// Asks the CPU for what [`exact_item`] reads of token `item` (its row, `r_k`, labels
    /// and norms); nothing for a sequence (instance granularity), whose tokens are contiguous.
    fn prefetch_item(&self, item: usize) {
        use crate::int_kernels::prefetch;
        if self.instance() {
            return;
        }
        self.index.features.prefetch_row(item, self.d);
        if self.nearest() {
            return prefetch(&self.feature_norms[item..item + 1]);
        }
        prefetch(self.r(item));
        prefetch(&self.prev[item..item + 1]);
        prefetch(&self.next[item..item + 1]);
        if self.normalize {
            prefetch(&self.grad_norms[item..item + 1]);
        }
    }

    /// Score of a token (token or nearest granularity) from its dots with the query's columns.
    #[inline]
    pub(crate) fn token_score<D: Copy + Into<f64>>(
        &self,
        side: &TestSide,
        k: usize,
        dots: &[D],
    ) -> f64 {
        let pn = pair_class(self.prev[k], self.next[k], self.c);
        self.token_score_in(side, k, pn, dots)
    }

    /// [`Ctx::token_score`] given the token's [`pair_class`] `pn`.
    #[inline]
    fn token_score_in<D: Copy + Into<f64>>(
        &self,
        side: &TestSide,
        k: usize,
        pn: usize,
        dots: &[D],
    ) -> f64 {
        if self.nearest() {
            let mut sim: f64 = dots[0].into();
            if self.granularity == Granularity::NearestCosine {
                let norm = self.feature_norms[k] * side.mean_norm;
                sim = if norm > 0.0 { sim / norm } else { 0.0 };
            }
            return -sim;
        }
        // r_k · (Σ_l dots_l c_l + table[(p_k, n_k)]): two or three length-C dot products.
        let (c, r) = (self.c, self.r(k));
        let raw = dots
            .iter()
            .zip(side.coefs.chunks_exact(c))
            .fold(dot64(r, side.pair_row(pn, c)), |raw, (&x, coef)| {
                raw + x.into() * dot64(r, coef)
            });
        self.finish(raw, self.grad_norm(k))
    }

    /// A token's share of its sequence's instance score: `R_k · (Σ_l dots_l c_l + G_b)`.
    #[inline]
    fn instance_part<D: Copy + Into<f64>>(
        &self,
        side: &TestSide,
        k: usize,
        dots: &[D],
        w: &mut [f64],
    ) -> f64 {
        side.emission_part(dots, w, self.c);
        dot64(w, self.r(k))
    }

    /// The sequence-level terms of instance influence: `G_A·∇_A + G_s·∇_s + G_e·∇_e`.
    pub fn sequence_part(&self, side: &TestSide, s: usize) -> f64 {
        let (c, q) = (self.c, &self.index.seqs);
        let mut raw = dot64(
            &side.transitions,
            &q.transition_grads.as_slice()[s * c * c..(s + 1) * c * c],
        );
        if let Some(v) = &side.start {
            raw += dot64(v, &q.start_grads.as_slice()[s * c..(s + 1) * c]);
        }
        if let Some(v) = &side.end {
            raw += dot64(v, &q.end_grads.as_slice()[s * c..(s + 1) * c]);
        }
        raw
    }

    fn sequence_score(&self, side: &TestSide, s: usize, token_parts: f64) -> f64 {
        self.finish(
            token_parts + self.sequence_part(side, s),
            self.grad_norms[s],
        )
    }

    /// Token `k`'s gradient norm for [`Ctx::finish`], read only when normalising (one column
    /// fewer streamed per token otherwise).
    #[inline]
    pub fn grad_norm(&self, k: usize) -> f64 {
        if self.normalize {
            self.grad_norms[k]
        } else {
            0.0
        }
    }

    /// `−raw / damping`, divided by the item's gradient norm when normalising (0 for a zero
    /// gradient: such an item has no influence).
    #[inline]
    pub fn finish(&self, raw: f64, grad_norm: f64) -> f64 {
        let score = self.scale * raw;
        match self.normalize {
            false => score,
            true if grad_norm > 0.0 => score / grad_norm,
            true => 0.0,
        }
    }

    /// [`Ctx::finish`] in place on the raw scores of tokens `start..start + raws.len()`, in
    /// loops that vectorise (the per-token calls took ~4 % of a single query).
    fn finish_block(&self, start: usize, raws: &mut [f64]) {
        // One loop per normalisation setting, so that `finish`'s branch on it leaves the loop.
        match self.normalize {
            false => raws.iter_mut().for_each(|r| *r = self.finish(*r, 0.0)),
            true => {
                let norms = &self.grad_norms[start..start + raws.len()];
                for (r, &norm) in raws.iter_mut().zip(norms) {
                    *r = self.finish(*r, norm);
                }
            }
        }
    }

    /// The item's share of the ranking pass's error bound: `|Δdots_l| ≤ errs_l ‖f_k‖`
    /// ([`RankingColumns::errs`]), so `|Δ raw| ≤ ‖f_k‖ ‖r_k‖ Σ_l errs_l ‖c_l‖`: this returns
    /// `‖f_k‖ ‖r_k‖` (over the
    /// gradient norm when normalising), or `‖f_k‖` (over the stored norm for cosine) for
    /// nearest neighbours. `‖f_k‖` is bounded for the decoded (f16/int8) row.
    pub(crate) fn token_factor(&self, k: usize) -> f64 {
        let f = self
            .index
            .features
            .decoded_norm_bound(k, self.feature_norms[k], self.d);
        match self.granularity {
            Granularity::NearestDot => f,
            Granularity::NearestCosine if self.feature_norms[k] > 0.0 => f / self.feature_norms[k],
            Granularity::NearestCosine => 0.0,
            Granularity::Token | Granularity::Instance => {
                let r = self.r(k);
                let factor = f * dot64(r, r).sqrt();
                match (self.instance(), self.normalize) {
                    (false, true) if self.grad_norms[k] > 0.0 => factor / self.grad_norms[k],
                    (false, true) => 0.0,
                    _ => factor,
                }
            }
        }
    }

    /// The query's share of the bound: `|scale| Σ_l errs_l ‖c_l‖` over its columns, `errs_0`
    /// for nearest dot products, `errs_0 / ‖f̄‖` for cosine (see [`RankingColumns::errs`]).
    pub(crate) fn query_factor(&self, side: &TestSide, errs: &[f64]) -> f64 {
        let errs = &errs[side.cols.clone()];
        match self.granularity {
            Granularity::NearestDot => errs[0],
            Granularity::NearestCosine if side.mean_norm > 0.0 => errs[0] / side.mean_norm,
            Granularity::NearestCosine => 0.0,
            Granularity::Token | Granularity::Instance => {
                let coef_norms = side.coefs.chunks_exact(self.c).map(|c| dot64(c, c).sqrt());
                let sum: f64 = errs.iter().zip(coef_norms).map(|(a, b)| a * b).sum();
                self.scale.abs() * sum
            }
        }
    }
}

impl TestSide {
    /// A pair's raw `g_test·g_k` from a block's rows (see [`PairTerms`]):
    /// `Σ_{l∈q} dots[k,l] E[k,l] + V[k,q]`.
    #[inline]
    pub fn pair_raw<D: Copy + Into<f64>>(
        &self,
        dots_k: ArrayView1<D>,
        e_k: ArrayView1<f64>,
        v_kq: f64,
    ) -> f64 {
        self.cols
            .clone()
            .fold(v_kq, |raw, l| raw + dots_k[l].into() * e_k[l])
    }

    /// `w = Σ_l dots_l c_l + G_b`.
    #[inline]
    fn emission_part<D: Copy + Into<f64>>(&self, dots: &[D], w: &mut [f64], c: usize) {
        w.iter_mut().for_each(|v| *v = 0.0);
        for (&x, coef) in dots.iter().zip(self.coefs.chunks_exact(c)) {
            let x: f64 = x.into();
            for (wj, cj) in w.iter_mut().zip(coef) {
                *wj += x * cj;
            }
        }
        if let Some(gb) = &self.bias {
            add(w, gb);
        }
    }
}

#[inline]
fn add(w: &mut [f64], v: &[f64]) {
    w.iter_mut().zip(v).for_each(|(a, b)| *a += b);
}

/// `Σ a_j b_j` over label vectors (length C), in four partial sums: a C-long chain of
/// dependent adds was most of a token's scoring time.
#[inline]
fn dot64(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = (ac.remainder().iter().zip(bc.remainder()))
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..4 {
            s[i] += x[i] * y[i];
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// Rows per block: a block of decoded rows and its dots stay in cache.
const BLOCK: usize = 256;
/// Tokens per parallel chunk (whole sequences, so per-sequence sums stay in one chunk).
const CHUNK_TOKENS: usize = 4096;

/// The index split into chunks of whole sequences: fixed by the index, not the thread count,
/// so results do not depend on scheduling.
fn chunks(index: &Index) -> Vec<(Range<usize>, Range<usize>)> {
    let offsets = index.seqs.offsets.as_slice();
    let mut out = Vec::new();
    let mut first_seq = 0;
    for s in 0..index.num_sequences() {
        let end = offsets[s + 1] as usize;
        if end - offsets[first_seq] as usize >= CHUNK_TOKENS || s + 1 == index.num_sequences() {
            out.push((offsets[first_seq] as usize..end, first_seq..s + 1));
            first_seq = s + 1;
        }
    }
    out
}

/// An index's `n` tokens in chunks of [`CHUNK_TOKENS`] on its multiples (the last shorter), with
/// no sequences (`0..0`): for a single query of token granularity, which reads no
/// per-sequence state. Whole sequences would put a chunk's ends inside the tiles' groups of
/// 64 rows, whose rows then go through slower kernels (an f16 8-token query spent ~4 % of
/// its samples widening them for the VNNI GEMM).
fn token_chunks(n: usize) -> Vec<(Range<usize>, Range<usize>)> {
    const { assert!(CHUNK_TOKENS.is_multiple_of(RANK_BLOCK)) };
    (0..n)
        .step_by(CHUNK_TOKENS)
        .map(|start| (start..(start + CHUNK_TOKENS).min(n), 0..0))
        .collect()
}

/// Exact dots (f64) of rows `[start, end)` with every column, into `out` (rb × L).
fn exact_block_dots(
    index: &Index,
    prep: &Prepared,
    rows: Range<usize>,
    decoded: &mut Vec<f32>,
    out: &mut Array2<f64>,
) {
    let d = index.crf().feature_dim();
    let x = index.features.rows(rows.start, rows.end, d, decoded);
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (l, col) in prep.columns.outer_iter().enumerate() {
            out[[i, l]] = dot_exact(row, col.as_slice().unwrap_or(&[]));
        }
    }
}

/// Candidates per group of the exact rescoring (see [`top_k`]).
const RESCORE_GROUP: usize = 16;

/// Rows per block of the ranking pass over a few columns.
const RANK_BLOCK: usize = 1024;

/// A chunk's `tokens` in blocks of at most [`RANK_BLOCK`], their bounds on multiples of it
/// (counted from the index's first token): a multiple of the tiles' groups, so that a tiled
/// ranking copy's groups fill whole blocks but at a chunk's ends.
fn blocks(tokens: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    const { assert!(RANK_BLOCK.is_multiple_of(crate::amx::GROUP)) };
    let mut start = tokens.start;
    std::iter::from_fn(move || {
        let end = ((start / RANK_BLOCK + 1) * RANK_BLOCK).min(tokens.end);
        (start < tokens.end).then(|| std::mem::replace(&mut start, end)..end)
    })
}

/// Ranking dots of rows `[start, end)` with the few (≤ [`FEW`], or [`ONE`] for a single
/// query) columns, into `out` (rb × L, row-major): streaming kernels row by row, decoding
/// f16/int8 in registers (or exact integer sums against i16 columns for int8, see
/// [`RankingColumns`]); they beat a GEMM call per block and start no OpenBLAS threads inside
/// ours.
fn few_block_dots(
    index: &Index,
    prep: &Prepared,
    ranking: &RankingColumns,
    rows: Range<usize>,
    scratch: &mut Scratch,
    out: &mut [f32],
) {
    let d = index.crf().feature_dim();
    if let Some(ints) = &ranking.ints {
        return ints.block_dots(&index.features, rows, d, out, scratch);
    }
    let cols: Vec<&[f32]> = prep
        .columns32
        .outer_iter()
        .map(|c| c.to_slice().unwrap_or(&[]))
        .collect();
    index.features.dot_rows(rows, d, &cols, out);
}

/// A single query's raw token scores (`kernels::token_raws`) of rows `start..start +
/// raws.len()`, which `terms` cover, through [`few_block_dots`]' kernels; `dots` (rows × M)
/// is scratch. The integer paths' dots are scaled as the scoring reads
/// them (`kernels::token_raws_scaled`: no pass writing them scaled first, 2 % of an int8
/// 8-token query on one core), where that kernel runs.
fn few_block_raws(
    index: &Index,
    prep: &Prepared,
    ranking: &RankingColumns,
    (start, terms): (usize, &TokenTerms),
    (scratch, dots): (&mut Scratch, &mut [f32]),
    raws: &mut [f64],
) {
    let rows = start..start + raws.len();
    if let Some(ints) = &ranking.ints {
        let d = index.crf().feature_dim();
        if let Some((v, s_k)) = ints.block_ints(&index.features, rows, d, scratch) {
            if !crate::kernels::token_raws_scaled(terms, (v, s_k, ints.scales()), raws) {
                ints.scale(v, s_k, dots);
                crate::kernels::token_raws(terms, dots, raws);
            }
        }
        return;
    }
    few_block_dots(index, prep, ranking, rows, scratch, dots);
    crate::kernels::token_raws(terms, dots, raws);
}

/// Exact scores of every item (tokens, or sequences for instance granularity) against query
/// `q`, in index order; parallel over chunks.
pub(crate) fn exact_scores(
    index: &Index,
    options: &QueryOptions,
    prep: &Prepared,
    q: usize,
) -> Vec<f64> {
    let ctx = Ctx::new(index, options);
    let side = &prep.sides[q];
    let pieces: Vec<Vec<f64>> = chunks(index)
        .into_par_iter()
        .map(|(tokens, seqs)| {
            let mut decoded = Vec::new();
            let mut dots = Array2::<f64>::zeros((BLOCK, prep.columns.nrows()));
            let mut w = vec![0.0; ctx.c];
            let mut out = Vec::with_capacity(if ctx.instance() {
                seqs.len()
            } else {
                tokens.len()
            });
            let mut seq_sum = 0.0;
            let seq_of = index.tokens.sequences.as_slice();
            for start in tokens.clone().step_by(BLOCK) {
                let end = (start + BLOCK).min(tokens.end);
                exact_block_dots(index, prep, start..end, &mut decoded, &mut dots);
                for k in start..end {
                    let row = dots.row(k - start);
                    let dk = &row.as_slice().unwrap_or(&[])[side.cols.clone()];
                    if !ctx.instance() {
                        out.push(ctx.token_score(side, k, dk));
                        continue;
                    }
                    seq_sum += ctx.instance_part(side, k, dk, &mut w);
                    let s = seq_of[k] as usize;
                    if k + 1 == index.sequence_tokens(s).end {
                        out.push(ctx.sequence_score(side, s, seq_sum));
                        seq_sum = 0.0;
                    }
                }
            }
            out
        })
        .collect();
    pieces.concat()
}

/// Exact score of one item (a token, or a sequence for instance granularity).
fn exact_item(
    ctx: &Ctx,
    prep: &Prepared,
    side: &TestSide,
    item: usize,
    decoded: &mut Vec<f32>,
    w: &mut [f64],
) -> f64 {
    let (index, d, mut dots) = (ctx.index, ctx.d, Vec::new());
    if !ctx.instance() {
        let row = index.features.rows(item, item + 1, d, decoded);
        return ctx.token_score(side, item, exact_dots(prep, side, row, &mut dots));
    }
    let mut sum = 0.0;
    for k in index.sequence_tokens(item) {
        let row = index.features.rows(k, k + 1, d, decoded);
        sum += ctx.instance_part(side, k, exact_dots(prep, side, row, &mut dots), w);
    }
    ctx.sequence_score(side, item, sum)
}

/// Exact dots (f64) of a training row as stored (decoded) with the side's columns, into `buf`.
pub(crate) fn exact_dots<'b>(
    prep: &Prepared,
    side: &TestSide,
    row: &[f32],
    buf: &'b mut Vec<f64>,
) -> &'b [f64] {
    buf.clear();
    buf.extend(
        (side.cols.clone()).map(|l| dot_exact(row, prep.columns.row(l).as_slice().unwrap_or(&[]))),
    );
    buf
}

/// Ranking pass for a few columns: streaming dot kernels and the per-pair formulas, parallel
/// over chunks of whole sequences. One TopK per query per rayon task.
fn scan_few<K, O>(
    ctx: &Ctx,
    prep: &Prepared,
    ranking: &RankingColumns,
    k_ext: usize,
    keep: &K,
    offer: &O,
) -> Vec<Vec<TopK>>
where
    K: Fn(usize) -> bool + Sync,
    O: Fn(&mut TopK, usize, f64) + Sync,
{
    let shared: Vec<SharedCuts> = prep.sides.iter().map(|_| SharedCuts::new()).collect();
    // One query of token granularity (the common single query, a token's or an entity's):
    // a block's raw scores at once.
    let one = one_segment(ctx, prep);
    let norm = |v: &[f64]| dot64(v, v).sqrt();
    let scan = FewScan {
        ctx,
        prep,
        ranking,
        shared: &shared,
        one,
        skip: one
            .filter(|side| side.cols.len() <= SKIP_COLUMNS)
            .map(|side| {
                let table = side.pair_table.chunks_exact(ctx.c.max(1));
                let coefs: Vec<&[f64]> = side.coefs.chunks_exact(ctx.c.max(1)).collect();
                let gram = coefs.iter().flat_map(|a| coefs.iter().map(|b| dot64(a, b)));
                SkipTerms {
                    norms: ctx.index.error_norms(ctx.normalize),
                    coef_norms: coefs.iter().map(|c| norm(c)).collect(),
                    coef_gram: gram.collect(),
                    class_norms: table.map(|row| f32_at_least(norm(row))).collect(),
                }
            }),
        keep,
        offer,
    };
    // Keepers and buffers per rayon task rather than per chunk: fewer heaps to fill (their
    // cuts tighten sooner) and no fresh buffers per chunk.
    let fresh = || FewState {
        tops: (0..prep.sides.len()).map(|_| TopK::new(k_ext)).collect(),
        dots: vec![0.0f32; RANK_BLOCK * prep.columns32.nrows()],
        raws: vec![0.0; RANK_BLOCK],
        scratch: Scratch::default(),
    };
    let parts = match one {
        Some(_) => token_chunks(ctx.index.num_tokens()),
        None => chunks(ctx.index),
    };
    parts
        .into_par_iter()
        .fold(fresh, |mut state, (tokens, seqs)| {
            scan.chunk(&mut state, tokens, seqs);
            state
        })
        .map(|state| state.tops)
        .collect()
}

/// What [`scan_few`] shares between chunks.
struct FewScan<'a, K, O> {
    ctx: &'a Ctx<'a>,
    prep: &'a Prepared,
    ranking: &'a RankingColumns<'a>,
    /// Per query, the cuts of every task's keepers.
    shared: &'a [SharedCuts],
    /// The test side when the batch is one query of token granularity.
    one: Option<&'a TestSide>,
    /// For it (up to [`SKIP_COLUMNS`] columns), what bounds a token's score
    /// ([`FewScan::skip_below`]).
    skip: Option<SkipTerms<'a>>,
    keep: &'a K,
    offer: &'a O,
}

/// The test side when the batch is one query of token granularity with up to [`ONE`]
/// columns: its scan streams the rows through the few-column kernels and scores a block at
/// once ([`scan_few`]).
fn one_segment<'p>(ctx: &Ctx, prep: &'p Prepared) -> Option<&'p TestSide> {
    match prep.sides.as_slice() {
        [side] if (1..=ONE).contains(&side.cols.len()) && !ctx.nearest() && !ctx.instance() => {
            Some(side)
        }
        _ => None,
    }
}

/// The most test columns for which a single query's block scoring tests each token's bound
/// ([`SkipBelow`]) before scoring it. The test's quadratic form grows as M²: one core, a block
/// of 1024 tokens hot in L2 (`benches/row_kernels.rs`, session 11), testing alone took
/// 2.5 / 3.4 / 8.4 / 14.6 ns a token at 3 / 4 / 5 / 8 columns against 7.8 / 8.5 / 8.9 / 11.6
/// to score every token, so from 5 columns on (where a quarter to a third of the tokens pass
/// it on the bench) scoring every token is faster, hot and with the `r` rows in memory.
/// Session 16 made scoring every token cheaper (3.8–4.3 ns a token at 3–4 columns): at 4
/// columns the test with 17 / 30 % of the tokens passing took 4.1–4.2 / 4.8–5.0 ns against
/// 4.3 for all, and a 4-token query scoring every token measured 5–6 % faster (f16 through
/// the copy 14.9–15.5 → 13.8–14.4 ms, int8 7.5–7.8 → 7.0–7.4, three alternating rounds); at 3
/// columns the test still wins (3.1–3.2 ns at 17 % against 3.8–4.2).
const SKIP_COLUMNS: usize = 3;

/// The terms of [`SkipBelow`] that stay the same for a whole query.
struct SkipTerms<'a> {
    /// Every token's `‖r_k‖` bound (over its gradient norm when normalising).
    norms: &'a [f32],
    /// The norms of the side's coefficient vectors and their Gram matrix.
    coef_norms: Vec<f64>,
    coef_gram: Vec<f64>,
    /// Per pair class, at least the norm of the side's table row.
    class_norms: Vec<f32>,
}

/// A rayon task's keepers and buffers in [`scan_few`].
struct FewState {
    tops: Vec<TopK>,
    dots: Vec<f32>,
    raws: Vec<f64>,
    scratch: Scratch,
}

impl<K, O> FewScan<'_, K, O>
where
    K: Fn(usize) -> bool + Sync,
    O: Fn(&mut TopK, usize, f64) + Sync,
{
    /// What lets the kernels leave out tokens `rows` whose raw score is too small to pass
    /// the keeper's `cuts` (score `= scale·raw`, over the gradient norm when normalising —
    /// which the norms carry — so between the cuts when `|scale|·|raw|` is below both):
    /// nothing until the keeper has a cut on either side of 0. The relative
    /// margin covers the rounding of the bound's terms (a few units in the last place).
    /// `table_norms`: the chunk's class norms ([`FewScan::table_norms`]) and where `rows`
    /// start in them.
    fn skip_below<'s>(
        &'s self,
        (low, high): (f64, f64),
        rows: Range<usize>,
        (table_norms, first): (&'s [f32], usize),
    ) -> Option<SkipBelow<'s>> {
        let terms = self.skip.as_ref()?;
        let below = (-low).min(high) / self.ctx.scale.abs() * (1.0 - 1e-9);
        (below > 0.0 && below.is_finite()).then(|| SkipBelow {
            table_norms: &table_norms[first..first + rows.len()],
            norms: &terms.norms[rows],
            coef_norms: &terms.coef_norms,
            coef_gram: &terms.coef_gram,
            below,
        })
    }

    /// Per token of a chunk (its pair `classes`), the norm of its table row when the skip
    /// applies (else nothing): looked up here in one pass rather than gathered 8 tokens at a
    /// time in the skip test (slow on Zen 4, BENCHMARKS.md session 10).
    fn table_norms(&self, classes: &[u32]) -> Vec<f32> {
        let Some(terms) = &self.skip else {
            return Vec::new();
        };
        classes
            .iter()
            .map(|&p| terms.class_norms[p as usize])
            .collect()
    }

    /// Scores the chunk's tokens (sequences `seqs`) block by block into `state.tops`.
    fn chunk(&self, state: &mut FewState, tokens: Range<usize>, seqs: Range<usize>) {
        let (ctx, prep, keep, offer) = (self.ctx, self.prep, self.keep, self.offer);
        let FewState {
            tops,
            dots,
            raws,
            scratch,
        } = state;
        let (nq, num_cols) = (prep.sides.len(), prep.columns32.nrows());
        let mut w = vec![0.0; ctx.c];
        // Instance granularity: per query, the approximate token shares of each sequence.
        let mut seq_parts = vec![vec![0.0; if ctx.instance() { seqs.len() } else { 0 }]; nq];
        // The chunk's pair classes (only token granularity reads them).
        let token = !ctx.nearest() && !ctx.instance();
        let classes = match token {
            true => &ctx.index.pair_classes()[tokens.clone()],
            false => &[],
        };
        let table_norms = self.table_norms(classes);
        for Range { start, end } in blocks(tokens.clone()) {
            SharedCuts::exchange_all(self.shared, tops);
            if let Some(side) = self.one {
                let (c, first, m) = (ctx.c, start - tokens.start, side.cols.len());
                let raws = &mut raws[..end - start];
                let terms = TokenTerms {
                    r: &ctx.errors[start * c..end * c],
                    classes: &classes[first..first + (end - start)],
                    coefs: &side.coefs,
                    columns: m,
                    table: &side.pair_table,
                    skip: self.skip_below(tops[0].cuts(), start..end, (&table_norms, first)),
                };
                // int8 rows against one column: dots and scores in one pass per row (for more
                // columns the same measured no faster than the two passes), but on CPUs
                // where the streaming kernels pair one column's rows (faster there).
                let fused = m == 1
                    && !crate::int_kernels::pairs_for_few_columns()
                    && (self.ranking.ints.as_ref()).is_some_and(|ints| {
                        ints.block_scores(&ctx.index.features, (start, &terms), raws)
                    });
                if !fused {
                    let dots = &mut dots[..(end - start) * m];
                    let block = (start, &terms);
                    few_block_raws(ctx.index, prep, self.ranking, block, (scratch, dots), raws);
                }
                ctx.finish_block(start, raws);
                // Groups of 8 scores tested at once (branch-free): most lie between the cuts.
                let mut cuts = tops[0].cuts();
                let inside = |s: f64, (low, high): (f64, f64)| s > low && s < high;
                for (g, group) in raws.chunks(8).enumerate() {
                    if group.iter().fold(true, |all, &s| all & inside(s, cuts)) {
                        continue;
                    }
                    for (k, &score) in (start + 8 * g..).zip(group) {
                        if !inside(score, cuts) && keep(k) {
                            offer(&mut tops[0], k, score);
                            cuts = tops[0].cuts();
                        }
                    }
                }
                continue;
            }
            few_block_dots(ctx.index, prep, self.ranking, start..end, scratch, dots);
            for k in start..end {
                let at = (k - start) * num_cols;
                let row = &dots[at..at + num_cols];
                for (q, side) in prep.sides.iter().enumerate() {
                    let dk = &row[side.cols.clone()];
                    if ctx.instance() {
                        seq_parts[q][ctx.seq_of[k] as usize - seqs.start] +=
                            ctx.instance_part(side, k, dk, &mut w);
                        continue;
                    }
                    let pn = if token {
                        classes[k - tokens.start] as usize
                    } else {
                        0
                    }; // unread
                    let score = ctx.token_score_in(side, k, pn, dk);
                    // Filters are asked only about the few scores a keeper would take.
                    if tops[q].admits(score) && keep(k) {
                        offer(&mut tops[q], k, score);
                    }
                }
            }
        }
        for (q, side) in prep.sides.iter().enumerate().filter(|_| ctx.instance()) {
            for (i, &part) in seq_parts[q].iter().enumerate() {
                let s = seqs.start + i;
                if keep(s) {
                    offer(&mut tops[q], s, ctx.sequence_score(side, s, part));
                }
            }
        }
    }
}

/// The pair loop of [`scan_gemm`] when every query has one column `q` (single-token test
/// segments), without the block matrices `E` and `V`: for a whole row at once (vectorised),
/// `raw[k,q] = Σ_j r_k[j]·(dots[k,q]·c_q[j] + table[(p_k, n_k), j, q])` (= `dots·E + V`), and
/// only scores past a keeper's cuts are offered. `block.1` are rows of the block that starts
/// at token `block.0`. The kept rows go in order of pair class, [`PAIR_GROUP`] of one class
/// at a time ([`PairTerms::group_scores`]); the order changes no result (ties break by ids,
/// and a score is checked against its keeper's cuts of the moment before it is offered).
fn one_column_pairs<K, O>(
    ctx: &Ctx,
    terms: &PairTerms,
    block: (usize, Range<usize>),
    dots: ArrayView2<f32>,
    (tops, shared): (&mut [TopK], &[SharedCuts]),
    keep: &K,
    offer: &O,
) where
    K: Fn(usize) -> bool + Sync,
    O: Fn(&mut TopK, usize, f64) + Sync,
{
    let (start, rows) = block;
    let nq = tops.len();
    SharedCuts::exchange_all(shared, tops);
    let (mut low, mut high): (Vec<f64>, Vec<f64>) = tops.iter().map(TopK::cuts).unzip();
    let mut scores = vec![0.0; PAIR_GROUP * nq];
    let kept = rows.filter(|&i| keep(start + i));
    for group in class_groups(&ctx.index.pair_classes()[start..], kept) {
        let Some(outside) =
            terms.group_scores(ctx, (start, &group), dots, (&low, &high), &mut scores)
        else {
            return; // cannot happen: standard-layout arrays, a class within the table
        };
        for (g, &i) in group.rows().iter().enumerate() {
            if outside & (1 << g) == 0 {
                continue; // the common case once every keeper is full
            }
            let k = start + i;
            for (q, &score) in scores[g * nq..(g + 1) * nq].iter().enumerate() {
                if score <= low[q] || score >= high[q] {
                    offer(&mut tops[q], k, score);
                    (low[q], high[q]) = tops[q].cuts();
                }
            }
        }
    }
}

/// Up to [`PAIR_GROUP`] rows of one pair class, for [`PairTerms::group_scores`].
pub(crate) struct ClassGroup {
    class: u32,
    rows: [usize; PAIR_GROUP],
    len: usize,
}

impl ClassGroup {
    pub fn rows(&self) -> &[usize] {
        &self.rows[..self.len]
    }
}

/// `rows` (offsets into `classes`, each token's pair class) in groups of one class, at most
/// [`PAIR_GROUP`] each: sorted by class, then by row.
pub(crate) fn class_groups(classes: &[u32], rows: impl Iterator<Item = usize>) -> Vec<ClassGroup> {
    let mut order: Vec<(u32, usize)> = rows.map(|i| (classes[i], i)).collect();
    order.sort_unstable();
    (order.chunk_by(|a, b| a.0 == b.0))
        .flat_map(|run| run.chunks(PAIR_GROUP))
        .map(|group| {
            let mut rows = [0; PAIR_GROUP];
            for (row, &(_, i)) in rows.iter_mut().zip(group) {
                *row = i;
            }
            ClassGroup {
                class: group[0].0,
                rows,
                len: group.len(),
            }
        })
        .collect()
}

/// Ranking dots of rows `[start, end)` with every column, into `dots` (rb × L): an OpenBLAS
/// sgemm on the rows decoded to f32 (threaded by OpenBLAS), or for int8 rows against i16
/// columns the integer GEMM on each thread's share of the rows (see [`RankingColumns`]).
pub(crate) fn gemm_block_dots(
    ctx: &Ctx,
    prep: &Prepared,
    ranking: &RankingColumns,
    rows: Range<usize>,
    scratch: &mut [Scratch],
    dots: &mut ArrayViewMut2<f32>,
) {
    let (index, d, l) = (ctx.index, ctx.d, prep.columns32.nrows());
    let Some(out) = dots.as_slice_mut() else {
        return; // cannot happen: a row range of a standard-layout array
    };
    if let Some(ints) = &ranking.ints {
        let per_part = rows.len().div_ceil(scratch.len()).max(1);
        out.par_chunks_mut(per_part * l)
            .zip(scratch.par_iter_mut())
            .enumerate()
            .for_each(|(p, (out, scratch))| {
                let first = rows.start + p * per_part;
                let part = first..(first + per_part).min(rows.end);
                ints.block_dots(&index.features, part, d, out, scratch);
            });
        return;
    }
    let rb = rows.len();
    let decoded = &mut scratch[0].decoded;
    let x = index.features.rows(rows.start, rows.end, d, decoded);
    let (Ok(x), Ok(mut y)) = (
        ArrayView2::from_shape((rb, d), x),
        ArrayViewMut2::from_shape((rb, l), out),
    ) else {
        return; // cannot happen: `rows` returns rb × d values, `dots` is rb × L
    };
    general_mat_mul(1.0, &x, &prep.columns32.t(), 0.0, &mut y); // rb × L, sgemm
}

/// Rows per block of the GEMM ranking pass.
const GEMM_BLOCK: usize = 2048;

/// Ranking pass for many columns (batches): everything per pair is a GEMM too (DESIGN.md §3's
/// O(C) per pair, regrouped). With `E = R·Coefᵀ` (`E[k,l] = c_l·r_k`) and the token's dense
/// terms as one vector `a_k = [vec(ȳ_p ⊗ r_k + r_k ⊗ ȳ_n), r_k, [first] r_k, [last] r_k]`
/// against `G_q = [vec(G_A), G_b, G_s, G_e]`:
/// `g_test·g_k = Σ_{l∈q} dots[k,l] E[k,l] + a_k·G_q`, so a pair costs a few flops after three
/// GEMMs (OpenBLAS threads them; this loop is sequential). Instance granularity keeps only
/// `a_k = R_k`, `G_q = G_b` per token.
fn scan_gemm<K, O>(
    ctx: &Ctx,
    prep: &Prepared,
    ranking: &RankingColumns,
    k_ext: usize,
    keep: &K,
    offer: &O,
) -> TopKs
where
    K: Fn(usize) -> bool + Sync,
    O: Fn(&mut TopK, usize, f64) + Sync,
{
    let index = ctx.index;
    let n = index.num_tokens();
    let nq = prep.sides.len();
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(k_ext)).collect();
    let mut seq_parts = vec![
        vec![
            0.0;
            if ctx.instance() {
                index.num_sequences()
            } else {
                0
            }
        ];
        nq
    ];
    let terms = PairTerms::new(ctx, prep);
    // Single-token segments (one column per query, in query order) take a vectorised pair loop.
    let one_column = terms.one_column(prep);
    let threads = rayon::current_num_threads().max(1);
    let mut scratch: Vec<Scratch> = (0..threads).map(|_| Scratch::default()).collect();
    let mut buf = terms.buffers(GEMM_BLOCK);
    let mut dots = Array2::<f32>::zeros((GEMM_BLOCK, prep.columns32.nrows()));
    // Per query, the cuts of every part's keepers (see [`SharedCuts`]).
    let shared: Vec<SharedCuts> = (0..nq).map(|_| SharedCuts::new()).collect();
    let mut part_tops: Vec<Vec<TopK>> = (0..threads)
        .map(|_| (0..nq).map(|_| TopK::new(k_ext)).collect())
        .collect();
    for start in (0..n).step_by(GEMM_BLOCK) {
        let end = (start + GEMM_BLOCK).min(n);
        let rb = end - start;
        let mut dots = dots.slice_mut(s![..rb, ..]);
        gemm_block_dots(ctx, prep, ranking, start..end, &mut scratch, &mut dots);
        let dots = dots.view();
        if ctx.nearest() {
            for (i, row) in dots
                .outer_iter()
                .enumerate()
                .filter(|(i, _)| keep(start + i))
            {
                let row = row.as_slice().unwrap_or(&[]);
                for (q, side) in prep.sides.iter().enumerate() {
                    offer(
                        &mut tops[q],
                        start + i,
                        ctx.token_score(side, start + i, &row[side.cols.clone()]),
                    );
                }
            }
            continue;
        }
        // Each part of the rows has its own keepers, merged at the end (ties break by ids, so
        // the split does not change the result).
        let per_part = rb.div_ceil(part_tops.len());
        if one_column {
            part_tops.par_iter_mut().enumerate().for_each(|(p, tops)| {
                let rows = (p * per_part).min(rb)..((p + 1) * per_part).min(rb);
                let tops = (tops.as_mut_slice(), shared.as_slice());
                one_column_pairs(ctx, &terms, (start, rows), dots, tops, keep, offer);
            });
            continue;
        }
        terms.block(ctx, start..end, &mut buf);
        let (e, v) = (buf.e(), buf.v());
        if !ctx.instance() {
            // Pairs, row by row (the block's matrices are row-major).
            part_tops.par_iter_mut().enumerate().for_each(|(p, tops)| {
                let rows = (p * per_part).min(rb)..((p + 1) * per_part).min(rb);
                SharedCuts::exchange_all(&shared, tops);
                for i in rows.filter(|&i| keep(start + i)) {
                    let k = start + i;
                    let (dots_k, e_k, v_k) = (dots.row(i), e.row(i), v.row(i));
                    let grad_norm = ctx.grad_norm(k);
                    for (q, side) in prep.sides.iter().enumerate() {
                        let raw = side.pair_raw(dots_k, e_k, v_k[q]);
                        offer(&mut tops[q], k, ctx.finish(raw, grad_norm));
                    }
                }
            });
            continue;
        }
        // Instance granularity: split by query across threads (each query's sums are its own).
        seq_parts.par_iter_mut().enumerate().for_each(|(q, parts)| {
            let side = &prep.sides[q];
            for i in 0..rb {
                let k = start + i;
                parts[ctx.seq_of[k] as usize] += side.pair_raw(dots.row(i), e.row(i), v[[i, q]]);
            }
        });
    }
    for part in part_tops {
        for (m, t) in tops.iter_mut().zip(part) {
            m.merge(t);
        }
    }
    for (q, side) in prep.sides.iter().enumerate().filter(|_| ctx.instance()) {
        for (s, &part) in seq_parts[q].iter().enumerate() {
            if keep(s) {
                offer(&mut tops[q], s, ctx.sequence_score(side, s, part));
            }
        }
    }
    tops
}

/// The matrices that turn a block's dots into per-pair scores (DESIGN.md §3 regrouped, see
/// [`scan_gemm`]): `raw[k,q] = Σ_{l∈q} dots[k,l] E[k,l] + V[k,q]` with `E = R·Coefᵀ` and
/// `V = A·Gᵀ`, where row `a_k` of `A` holds the token's dense-block terms and row `G_q` the
/// query's dense blocks.
pub(crate) struct PairTerms {
    /// L × C: every column's coefficient vector `c_l`.
    coefs: Array2<f64>,
    /// Its transpose (C × L), for the one-column pair loop.
    coefs_t: Array2<f64>,
    /// Instance granularity: Q × C, each query's `G_b` (then `V = R·denseᵀ`, a dgemm).
    /// Token granularity: ((C+1)²·C) × Q, every query's [`TestSide::pair_table`] as a
    /// column, so that `V[k,q] = Σ_j r_k[j] table[(p_k, n_k, j), q]`: C multiply-adds a pair,
    /// where the dense product `a_k·G_q` over `[vec(G_A), G_b, G_s, G_e]` took C² + 3C.
    dense: Array2<f64>,
    instance: bool,
    num_queries: usize,
}

impl PairTerms {
    pub fn new(ctx: &Ctx, prep: &Prepared) -> PairTerms {
        let c = ctx.c;
        let (num_cols, nq) = (prep.columns.nrows(), prep.sides.len());
        let coefs = Array2::from_shape_vec(
            (num_cols, c),
            prep.sides
                .iter()
                .flat_map(|s| s.coefs.iter().copied())
                .collect(),
        )
        .unwrap_or_else(|_| Array2::zeros((num_cols, c)));
        let at = |v: &Option<Vec<f64>>, j: usize| v.as_ref().map_or(0.0, |v| v[j]);
        let dense = match ctx.instance() {
            true => Array2::from_shape_fn((nq, c), |(q, j)| at(&prep.sides[q].bias, j)),
            false => Array2::from_shape_fn(((c + 1) * (c + 1) * c, nq), |(row, q)| {
                prep.sides[q].pair_table[row]
            }),
        };
        PairTerms {
            coefs_t: coefs.t().as_standard_layout().into_owned(),
            coefs,
            dense,
            instance: ctx.instance(),
            num_queries: nq,
        }
    }

    /// Whether the queries are token granularity with one column each, in query order: then
    /// [`PairTerms::group_scores`] feeds [`crate::kernels::one_column_scores_group`].
    pub fn one_column(&self, prep: &Prepared) -> bool {
        !self.instance && (prep.sides.iter().enumerate()).all(|(q, side)| side.cols == (q..q + 1))
    }

    /// For [`PairTerms::one_column`] queries: the finished scores of a [`ClassGroup`]'s tokens
    /// (rows of the block starting at token `start`, whose ranking dots are `dots`, one per
    /// query) into `out` (Q per token), and per token (bit g) whether any lies outside its
    /// query's `(low, high)` ([`crate::kernels::one_column_scores_group`], with `coefs_t` and
    /// the rows of the class in the queries' tables). `None` only for arrays not in standard
    /// layout or a class past the table, which cannot happen.
    pub fn group_scores(
        &self,
        ctx: &Ctx,
        (start, group): (usize, &ClassGroup),
        dots: ArrayView2<f32>,
        cuts: (&[f64], &[f64]),
        out: &mut [f64],
    ) -> Option<u8> {
        let (c, nq, rows) = (ctx.c, self.num_queries, group.rows());
        let pn = group.class as usize;
        let table = self.dense.as_slice()?.get(pn * c * nq..(pn + 1) * c * nq)?;
        let l = dots.ncols(); // = nq for these queries
        let dots = dots.as_slice()?;
        let mut dot_rows = [&[][..]; PAIR_GROUP];
        let mut r = [&[][..]; PAIR_GROUP];
        let mut factors = [0.0; PAIR_GROUP];
        for (g, &i) in rows.iter().enumerate() {
            dot_rows[g] = dots.get(i * l..i * l + nq)?;
            r[g] = ctx.r(start + i);
            // finish(raw, ‖g_k‖) = raw · finish(1, ‖g_k‖) up to an ulp, within the proof's
            // slack.
            factors[g] = ctx.finish(1.0, ctx.grad_norm(start + i));
        }
        let n = rows.len();
        Some(crate::kernels::one_column_scores_group(
            &r[..n],
            &dot_rows[..n],
            (self.coefs_t.as_slice()?, table),
            &factors[..n],
            cuts,
            out,
        ))
    }

    /// Scratch for [`PairTerms::block`] on blocks of up to `rows` tokens, allocated once per
    /// scan: fresh multi-MB arrays per block would cost a page fault per 4 KiB each time.
    pub fn buffers(&self, rows: usize) -> BlockBuffers {
        BlockBuffers {
            e: Array2::zeros((rows, self.coefs.nrows())),
            v: Array2::zeros((rows, self.num_queries)),
        }
    }

    /// Fills `buf` with `E` (rb × L, a dgemm) and `V` (rb × Q) for the tokens `rows`; read
    /// them with [`BlockBuffers::e`] and [`BlockBuffers::v`].
    pub fn block(&self, ctx: &Ctx, rows: Range<usize>, buf: &mut BlockBuffers) {
        let (c, start, rb) = (ctx.c, rows.start, rows.len());
        let Ok(r) = ArrayView2::from_shape((rb, c), &ctx.errors[start * c..rows.end * c]) else {
            return; // cannot happen: the slice has exactly rb × C values
        };
        let mut e = buf.e.slice_mut(s![..rb, ..]);
        general_mat_mul(1.0, &r, &self.coefs.t(), 0.0, &mut e); // dgemm, K = C
        if self.instance {
            let mut v = buf.v.slice_mut(s![..rb, ..]);
            general_mat_mul(1.0, &r, &self.dense.t(), 0.0, &mut v); // dgemm, K = C
            return;
        }
        let (nq, table) = (self.num_queries, self.dense.as_slice().unwrap_or(&[]));
        let Some(v) = buf.v.as_slice_mut() else {
            return; // cannot happen: the buffer is a standard-layout array
        };
        v[..rb * nq]
            .par_chunks_mut(nq.max(1))
            .enumerate()
            .for_each(|(i, v_k)| {
                let k = start + i;
                let pn = pair_class(ctx.prev[k], ctx.next[k], c);
                let rows = &table[pn * c * nq..(pn + 1) * c * nq];
                crate::kernels::combine_rows(&ctx.errors[k * c..(k + 1) * c], rows, v_k);
            });
    }
}

/// Scratch of [`PairTerms::block`]: the last block's `E` and `V` are their first rb rows.
pub(crate) struct BlockBuffers {
    e: Array2<f64>,
    v: Array2<f64>,
}

impl BlockBuffers {
    pub fn e(&self) -> &Array2<f64> {
        &self.e
    }

    pub fn v(&self) -> &Array2<f64> {
        &self.v
    }
}

type TopKs = Vec<TopK>;

/// The largest item factor of the error bound ([`Ctx::token_factor`]) over all items (so
/// also over those a filter lets through); for instance granularity summed per sequence (then
/// over its gradient norm when normalising). Computed once per index and options
/// ([`crate::index::Derived`]).
fn max_item_factor(ctx: &Ctx) -> f64 {
    let slot = match ctx.granularity {
        Granularity::Token => 0,
        Granularity::Instance => 1,
        Granularity::NearestDot => 2,
        Granularity::NearestCosine => 3,
    } * 2
        + usize::from(ctx.normalize);
    *ctx.index.derived.max_item_factor[slot].get_or_init(|| compute_max_item_factor(ctx))
}

fn compute_max_item_factor(ctx: &Ctx) -> f64 {
    let index = ctx.index;
    chunks(index)
        .into_par_iter()
        .map(|(tokens, seqs)| match ctx.instance() {
            false => tokens.map(|k| ctx.token_factor(k)).fold(0.0, f64::max),
            true => seqs
                .map(|s| {
                    let sum: f64 = index.sequence_tokens(s).map(|k| ctx.token_factor(k)).sum();
                    match ctx.normalize {
                        false => sum,
                        true if ctx.grad_norms[s] > 0.0 => sum / ctx.grad_norms[s],
                        true => 0.0,
                    }
                })
                .fold(0.0, f64::max),
        })
        .reduce(|| 0.0, f64::max)
}

/// The top `k` supporting and opposing items of every prepared query, with exact scores, and
/// how many queries needed the exact fallback.
pub(crate) fn top_k<K, O>(
    index: &Index,
    options: &QueryOptions,
    prep: &Prepared,
    k: usize,
    keep: &K,
    offer: &O,
) -> (Vec<TopK>, usize)
where
    K: Fn(usize) -> bool + Sync,
    O: Fn(&mut TopK, usize, f64) + Sync,
{
    let ctx = Ctx::new(index, options);
    let nq = prep.sides.len();
    // Candidates beyond k absorb f32 rounding; the proof below says whether they sufficed.
    // (`k` is already capped at the number of items by the caller.)
    let k_ext = k.saturating_add(k.max(32));
    // A single query of token granularity streams up to ONE columns, anything else FEW.
    let few = if one_segment(&ctx, prep).is_some() {
        ONE
    } else {
        FEW
    };
    let ranking = RankingColumns::new(index, &prep.columns, options.ranking_copy, few);
    // The ranking keepers break ties by index row alone, not by the caller's (doc id,
    // position): which of equal ranking scores a keeper holds at its cut does not matter (the
    // proof below asks every item left out to score past the kept ones), and gathering each
    // offered item's ids took cache misses on columns the scan reads nowhere else (~4 % of an
    // int8 query). The exact rescoring below applies the caller's order.
    let by_row = |top: &mut TopK, item: usize, score: f64| top.offer(score, 0, 0, item as u64, 0);
    let results: Vec<Vec<TopK>> = match prep.columns32.nrows() <= few {
        true => scan_few(&ctx, prep, &ranking, k_ext, keep, &by_row),
        false => vec![scan_gemm(&ctx, prep, &ranking, k_ext, keep, &by_row)],
    };
    let item_factor = max_item_factor(&ctx);
    let mut merged: Vec<TopK> = (0..nq).map(|_| TopK::new(k_ext)).collect();
    let index = ctx.index;
    for tops in results {
        for (m, t) in merged.iter_mut().zip(tops) {
            m.merge(t);
        }
    }
    // Queries, and each query's candidates, rescored in parallel (a single query's ~2k exact
    // rows are a few % of its scan; a batch of 300 has 300 times as many).
    let results: Vec<(TopK, bool)> = merged
        .into_par_iter()
        .enumerate()
        .map(|(q, approx)| {
            let side = &prep.sides[q];
            let max_bound = ctx.query_factor(side, &ranking.errs) * item_factor;
            let full = approx.is_full();
            let (worst_low, worst_high) = (approx.worst_supporting(), approx.worst_opposing());
            let items = approx.items();
            // In groups whose rows and columns are asked for first: the candidates lie all
            // over the index, and their misses one after the other took most of the rescoring.
            let scores: Vec<f64> = items
                .par_chunks(RESCORE_GROUP)
                .map_init(
                    || (Vec::new(), vec![0.0; ctx.c]),
                    |(decoded, w), group| {
                        group.iter().for_each(|&item| ctx.prefetch_item(item));
                        (group.iter())
                            .map(|&item| exact_item(&ctx, prep, side, item, decoded, w))
                            .collect::<Vec<f64>>()
                    },
                )
                .flatten_iter()
                .collect();
            let mut exact = TopK::new(k);
            for (&item, score) in items.iter().zip(scores) {
                offer(&mut exact, item, score);
            }
            // Proof: any other item scored at least worst_low (at most worst_high) in f32, so
            // exactly at least worst_low − max_bound; if that is past the k-th exact score
            // (with a relative slack for the f64 part), it cannot enter the top k.
            let slack = |x: f64| 1e-9 * x.abs() + f64::MIN_POSITIVE;
            let proven = !full
                || match (
                    exact.kth_supporting(),
                    exact.kth_opposing(),
                    worst_low,
                    worst_high,
                ) {
                    (Some(ks), Some(ko), Some(wl), Some(wh)) => {
                        wl - max_bound - slack(wl) > ks && wh + max_bound + slack(wh) < ko
                    }
                    _ => false,
                };
            if proven {
                return (exact, false);
            }
            let mut fallback = TopK::new(k);
            for (item, score) in exact_scores(index, options, prep, q)
                .into_iter()
                .enumerate()
            {
                if keep(item) {
                    offer(&mut fallback, item, score);
                }
            }
            (fallback, true)
        })
        .collect();
    let fallbacks = results.iter().filter(|r| r.1).count();
    let tops = results.into_iter().map(|r| r.0).collect();
    (tops, fallbacks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chunks_cover_the_tokens_once_on_multiples_of_the_chunk() {
        for n in [
            0,
            1,
            63,
            CHUNK_TOKENS,
            CHUNK_TOKENS + 1,
            3 * CHUNK_TOKENS - 5,
        ] {
            let parts = token_chunks(n);
            assert_eq!(parts.len(), n.div_ceil(CHUNK_TOKENS), "{n} tokens");
            let mut next = 0;
            for (tokens, seqs) in parts {
                assert_eq!(tokens.start, next, "{n} tokens: in order, no gap");
                assert!(tokens.start.is_multiple_of(CHUNK_TOKENS) && !tokens.is_empty());
                assert!(seqs.is_empty());
                next = tokens.end;
            }
            assert_eq!(next, n, "{n} tokens: all of them");
        }
    }

    #[test]
    fn blocks_cover_a_chunk_on_multiples_of_the_block() {
        for tokens in [
            0..0,
            0..1,
            5..5,
            0..1024,
            3..1024,
            1000..5000,
            2048..4097,
            7..70_000,
        ] {
            let all: Vec<Range<usize>> = blocks(tokens.clone()).collect();
            let mut at = tokens.start;
            for b in &all {
                assert_eq!(b.start, at, "{tokens:?}: contiguous");
                assert!(
                    b.start < b.end && b.len() <= RANK_BLOCK,
                    "{tokens:?}: {b:?}"
                );
                // Bounds inside the chunk lie on multiples of the block.
                for bound in [b.start, b.end] {
                    let inside = bound != tokens.start && bound != tokens.end;
                    assert!(!inside || bound % RANK_BLOCK == 0, "{tokens:?}: {b:?}");
                }
                at = b.end;
            }
            assert_eq!(at, tokens.end, "{tokens:?}: all of it");
        }
    }
}
