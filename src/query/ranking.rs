//! The test columns as the ranking pass multiplies them, with a bound on each column's
//! dot-product error: f32 for every index (OpenBLAS sgemm, the streaming kernels), or for
//! int8 indexes on CPUs with the integer kernels ([`crate::int_kernels`]) quantised to i16, so
//! that a row's dots are exact integer sums (VNNI `vpdpwssd` does twice the multiply-adds of an
//! f32 FMA per instruction, and nothing is decoded to f32 first).
//!
//! Either way `|ranking dot_kl − exact dot_kl| ≤ errs[l] · ‖f̂_k‖` (f̂_k the row as stored),
//! which the proof of `score::top_k` turns into a bound on each score.

use std::ops::Range;

use ndarray::{Array2, ArrayView1};

use crate::index::{FeatureRows, Index};
use crate::int_kernels::{self, PackedCols};

/// Columns quantised to i16 for an int8 index: `col_l ≈ scales[l] · values[l]`.
pub(crate) struct IntColumns {
    /// L × d.
    values: Vec<i16>,
    scales: Vec<f64>,
    /// Packed for the GEMM (batches of more than [`FEW`] columns only).
    packed: Option<PackedCols>,
}

/// Up to this many columns the ranking pass streams rows through dot kernels; beyond, GEMMs.
pub(crate) const FEW: usize = 4;

pub(crate) struct RankingColumns {
    pub ints: Option<IntColumns>,
    /// Per column: `|ranking dot − exact dot| ≤ errs[l] · ‖f̂_k‖`.
    pub errs: Vec<f64>,
}

impl RankingColumns {
    /// `columns` (L × d, f64) are the exact test columns; `columns32` their f32 rounding.
    pub fn new(index: &Index, columns: &Array2<f64>) -> RankingColumns {
        let (l, d) = columns.dim();
        let norm = |c: ArrayView1<f64>| c.dot(&c).sqrt();
        let limit = int_column_limit(d);
        let ints = matches!(index.features, FeatureRows::Int8 { .. })
            && int_kernels::intrinsics_available()
            && limit >= 2048;
        if !ints {
            let gamma = gamma32(d);
            return RankingColumns {
                ints: None,
                errs: columns.outer_iter().map(|c| gamma * norm(c)).collect(),
            };
        }
        let (mut values, mut scales, mut errs) = (Vec::new(), Vec::new(), Vec::new());
        for col in columns.outer_iter() {
            let (q, scale, err) = quantize(col, limit);
            values.extend(q);
            scales.push(scale);
            errs.push(err);
        }
        let packed = (l > FEW).then(|| PackedCols::new(&values, l, d));
        RankingColumns {
            ints: Some(IntColumns {
                values,
                scales,
                packed,
            }),
            errs,
        }
    }
}

/// `γ_n = n·u / (1 − n·u)` for f32 (u = 2⁻²⁴), with n = d + 4 to cover the products, the sums,
/// the rounding of the test columns to f32 and, for int8 rows, of the decoded values and the
/// final scaling (Higham, Accuracy and Stability of Numerical Algorithms, §3.1): the f32 pass
/// errs by at most `γ ‖f̂_k‖ ‖col_l‖`.
fn gamma32(d: usize) -> f64 {
    let nu = (d + 4) as f64 * 2f64.powi(-24);
    nu / (1.0 - nu)
}

/// The largest |value| of an i16 column against int8 rows (|q| ≤ 127) of length `d` such that
/// every exact sum, and every partial sum on the way, fits in an i32.
fn int_column_limit(d: usize) -> i64 {
    (i64::from(i32::MAX) / (127 * d.max(1) as i64)).min(i64::from(i16::MAX))
}

/// `col ≈ scale · u` with `|u| ≤ limit`, and the error factor: the ranking dot
/// `s_k·scale·Σ q_j u_j` (exact integers, then two f64 products and an f32 rounding) differs
/// from the exact pass's `Σ fl32(s_k q_j)·col_j` by at most `‖f̂_k‖ (‖δ‖ + 2⁻²¹ ‖col‖)`
/// (with `δ = col − scale·u`; the 2⁻²¹ covers the f32 roundings of the decoded values and of
/// the result, 2⁻²⁴ each, with room to spare).
fn quantize(col: ArrayView1<f64>, limit: i64) -> (Vec<i16>, f64, f64) {
    let max = col.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / limit as f64 } else { 1.0 };
    let lim = limit as f64;
    let u: Vec<i16> = col
        .iter()
        .map(|&x| (x / scale).round().clamp(-lim, lim) as i16)
        .collect();
    let delta: f64 = col
        .iter()
        .zip(&u)
        .map(|(&x, &v)| (x - scale * f64::from(v)).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = col.dot(&col).sqrt();
    (
        u,
        scale,
        delta * (1.0 + 2f64.powi(-20)) + 2f64.powi(-21) * norm,
    )
}

impl IntColumns {
    /// `out[i*L + l]` = the ranking dot of row `rows.start + i` with column `l`, for an int8
    /// index, through the integer kernels; `acc` is reusable scratch.
    pub fn block_dots(
        &self,
        features: &FeatureRows,
        rows: Range<usize>,
        d: usize,
        out: &mut [f32],
        acc: &mut Scratch,
    ) {
        let FeatureRows::Int8 { values, scales } = features else {
            return; // cannot happen: IntColumns exist for int8 indexes only
        };
        let (l, rb) = (self.scales.len(), rows.len());
        let row_values = &values.as_slice()[rows.start * d..rows.end * d];
        acc.ints.resize(rb * l, 0);
        match &self.packed {
            Some(packed) if (packed.num_cols(), packed.dim()) == (l, d) => {
                int_kernels::gemm_i8_i16(row_values, d, packed, &mut acc.ints, &mut acc.wide)
            }
            _ => {
                let cols: Vec<&[i16]> = self.values.chunks_exact(d).collect();
                int_kernels::dot_rows_i8_i16(row_values, d, &cols, &mut acc.ints);
            }
        }
        let row_scales = &scales.as_slice()[rows];
        for ((o, a), &s_k) in out
            .chunks_exact_mut(l)
            .zip(acc.ints.chunks_exact(l))
            .zip(row_scales)
        {
            for ((o, &a), &s_l) in o.iter_mut().zip(a).zip(&self.scales) {
                *o = (f64::from(a) * (f64::from(s_k) * s_l)) as f32;
            }
        }
    }
}

/// Reusable buffers of a ranking pass (one per thread): integer sums and widened rows for
/// [`IntColumns::block_dots`], decoded f32 rows for the sgemm.
#[derive(Default)]
pub(crate) struct Scratch {
    ints: Vec<i32>,
    wide: Vec<i16>,
    pub decoded: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantised_dots_stay_within_their_bound() {
        // Rows as an int8 index stores them, columns of very different magnitudes and signs.
        let d = 300;
        let limit = int_column_limit(d);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        for magnitude in [1e-3, 1.0, 1e4] {
            let col: Vec<f64> = (0..d)
                .map(|j| next() * magnitude * (1 + j % 5) as f64)
                .collect();
            let (u, scale, err) = quantize(ArrayView1::from(&col), limit);
            assert!(u.iter().all(|&v| i64::from(v).abs() <= limit));
            for _ in 0..50 {
                let q: Vec<i8> = (0..d).map(|_| (next() * 127.0).round() as i8).collect();
                let s_k = (next().abs() + 0.01) as f32;
                let decoded: Vec<f32> = q.iter().map(|&v| f32::from(v) * s_k).collect();
                let exact: f64 = decoded
                    .iter()
                    .zip(&col)
                    .map(|(&f, &c)| f64::from(f) * c)
                    .sum();
                let int: i64 = q
                    .iter()
                    .zip(&u)
                    .map(|(&a, &b)| i64::from(a) * i64::from(b))
                    .sum();
                let approx = (int as f64 * (f64::from(s_k) * scale)) as f32;
                let f_norm = decoded
                    .iter()
                    .map(|&f| f64::from(f).powi(2))
                    .sum::<f64>()
                    .sqrt();
                assert!(
                    (f64::from(approx) - exact).abs() <= err * f_norm,
                    "{approx} vs {exact}, bound {}",
                    err * f_norm
                );
                // Not vacuous: the bound is a small fraction of ‖f̂‖‖col‖.
                let c_norm = col.iter().map(|c| c * c).sum::<f64>().sqrt();
                assert!(err <= 1e-3 * c_norm);
            }
        }
    }

    proptest::proptest! {
        /// The bound holds for any dimension, row scale and column shape, spiky ones included
        /// (one huge entry makes the quantisation step coarse for all the others).
        #[test]
        fn quantised_dots_stay_within_their_bound_for_any_shape(
            d in 1usize..400,
            seed in 0u64..1000,
            s_k in 1e-6f32..1e3,
            spike in 0.0f64..1e6,
        ) {
            let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            };
            let mut col: Vec<f64> = (0..d).map(|_| next()).collect();
            col[0] += spike;
            let (u, scale, err) = quantize(ArrayView1::from(&col), int_column_limit(d));
            let q: Vec<i8> = (0..d).map(|_| (next() * 127.0).round() as i8).collect();
            let decoded: Vec<f32> = q.iter().map(|&v| f32::from(v) * s_k).collect();
            let exact: f64 = decoded.iter().zip(&col).map(|(&f, &c)| f64::from(f) * c).sum();
            let int: i64 = q.iter().zip(&u).map(|(&a, &b)| i64::from(a) * i64::from(b)).sum();
            let approx = (int as f64 * (f64::from(s_k) * scale)) as f32;
            let f_norm = decoded.iter().map(|&f| f64::from(f).powi(2)).sum::<f64>().sqrt();
            proptest::prop_assert!((f64::from(approx) - exact).abs() <= err * f_norm);
        }
    }

    #[test]
    fn column_limit_keeps_every_sum_in_i32() {
        for d in [1, 768, 1024, 4096, 100_000] {
            let limit = int_column_limit(d);
            assert!(127 * limit * d as i64 <= i64::from(i32::MAX));
            assert!(limit <= i64::from(i16::MAX));
        }
    }
}
