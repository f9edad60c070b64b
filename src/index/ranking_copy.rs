//! An i16 copy of an f32 or f16 index's feature rows, for the ranking pass of batches: the
//! integer GEMM ([`crate::int_kernels::gemm`], `vpdpwssd`) does twice the multiply-adds of an
//! f32 FMA per instruction, and batches are bound by multiply-adds, not by reading rows. On
//! CPUs with the AMX tiles it is kept as int8 planes in the order the tiles load them
//! ([`crate::amx::Tiled`], session 15), and an f16 index's single queries of 4–8 tokens rank
//! through it too: the tiles read its rows at the speed of memory, where the f16 kernel's 8
//! columns cost more FMAs a row than the read's time (BENCHMARKS.md, session 14) — at the
//! price of as much memory again as the f16 rows.
//!
//! Row `k` is `s_k·q_k` with `|q_kj| ≤ R`, and the copy keeps `ρ = max_k ‖f̂_k − s_k q_k‖ / ‖f̂_k‖`
//! (f̂_k the row as the index stores it), so that the ranking pass can bound its error
//! ([`crate::query::ranking`]); the reported scores are still computed from `f̂_k`. Built once
//! per index, on the first query that uses it, and kept in memory with the index (2·d bytes per
//! token, rows padded to a multiple of 64 when tiled); never saved.

use rayon::prelude::*;

use super::FeatureRows;
use crate::amx::Tiled;

/// Rows per parallel task of the build.
const ROWS_PER_TASK: usize = 1024;

/// Above this `ρ` the copy is not used (a spiky row makes its quantisation step coarse for all
/// its other values, and the ranking bound would let too many candidates through).
pub(crate) const MAX_RELATIVE_ERROR: f64 = 1.0 / 256.0;

/// The row and column limit `R = U` of the copy's GEMM for dimension `d`: the largest with
/// `R·U·d < 2^31` (every exact sum fits in i32), at most `i16::MAX`. Equal limits minimise the
/// sum of the two quantisation errors (each ∝ 1/limit).
pub(crate) fn balanced_limit(d: usize) -> i64 {
    (i64::from(i32::MAX) / d.max(1) as i64)
        .isqrt()
        .min(i64::from(i16::MAX))
}

/// The copy's rows (N × d, in one of [`CopyValues`]' layouts), their scales and the largest
/// relative error `ρ`.
pub(crate) struct RankingCopy {
    pub values: CopyValues,
    pub scales: Vec<f32>,
    pub rho: f64,
}

/// The copy's values, in the layout its kernels read.
pub(crate) enum CopyValues {
    /// N × d, row-major (the VNNI kernels').
    I16(Vec<i16>),
    /// Where the AMX tiles run them: two planes, the high bytes and the low ones
    /// (`u = 256·hi + lo`, [`crate::amx::split`]), kept [`Tiled`] (groups of 64 rows in the
    /// order the tiles load them, the last padded with zero rows): a batch no longer splits
    /// every row it reads, and a single query's tiles read the rows from memory in order.
    Tiled(Vec<i8>),
}

/// The layout of [`CopyValues::Tiled`] for rows of `d`.
pub(crate) fn tiled(d: usize) -> Tiled {
    Tiled { d, planes: 2 }
}

impl CopyValues {
    /// Rows `rows` as i16 values (d each) into `out` (replacing its contents).
    pub fn widen(&self, rows: std::ops::Range<usize>, d: usize, out: &mut Vec<i16>) {
        out.clear();
        match self {
            CopyValues::I16(v) => out.extend_from_slice(&v[rows.start * d..rows.end * d]),
            CopyValues::Tiled(t) => {
                let shape = tiled(d);
                for k in rows {
                    for j in (0..d).step_by(64) {
                        let (hi, lo) = (shape.at(k, 0, j), shape.at(k, 1, j));
                        out.extend(
                            (t[hi..hi + 64].iter().zip(&t[lo..lo + 64]))
                                .map(|(&h, &l)| (256 * i32::from(h) + i32::from(l)) as i16),
                        );
                    }
                }
            }
        }
    }

    /// The bytes they take.
    pub fn bytes(&self) -> usize {
        match self {
            CopyValues::I16(v) => 2 * v.len(),
            CopyValues::Tiled(t) => t.len(),
        }
    }
}

impl std::fmt::Debug for RankingCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankingCopy")
            .field("rows", &self.scales.len())
            .field("rho", &self.rho)
            .finish()
    }
}

impl RankingCopy {
    /// Whether the copy for dimension `d` is kept tiled, in int8 planes: where the AMX tiles
    /// take its rows (the tiles run here, whole steps of 64 values, the copy's limit within
    /// the split's range).
    pub fn kept_tiled(d: usize) -> bool {
        crate::amx::available()
            && d.is_multiple_of(64)
            && balanced_limit(d) <= i64::from(crate::amx::MAX_SPLIT)
    }

    /// The copy of an f32 or f16 index's `n` rows of `d` values with limit `R`, tiled when
    /// `tiles` (for the AMX tiles: `R` within [`crate::amx::MAX_SPLIT`], `d` a multiple of
    /// 64); `None`
    /// for an int8 index (its rows are integers already), when `ρ` exceeds
    /// [`MAX_RELATIVE_ERROR`], or when the memory for it cannot be had.
    pub fn build(
        features: &FeatureRows,
        (n, d): (usize, usize),
        limit: i64,
        tiles: bool,
    ) -> Option<RankingCopy> {
        if matches!(features, FeatureRows::Int8 { .. }) || d == 0 {
            return None;
        }
        if tiles && (limit > i64::from(crate::amx::MAX_SPLIT) || !d.is_multiple_of(64)) {
            return None; // cannot happen: the caller checks
        }
        // A copy that does not fit in memory is no copy: the batch ranks with the f32 sgemm.
        let mut scales = Vec::new();
        if scales.try_reserve_exact(n).is_err() {
            return None;
        }
        scales.resize(n, 0f32);
        let (values, rho) = if tiles {
            // A task's rows are whole groups (ROWS_PER_TASK is a multiple of 64), so that `at`
            // counts from the task's first byte.
            let shape = tiled(d);
            let mut v = zeroed::<i8>(shape.bytes(n))?;
            let put = |q: &[i16], task: &mut [i8], i: usize| {
                // 64 values of a row lie together in each plane (as `widen` reads them).
                for (j, q) in (0..d).step_by(64).zip(q.chunks_exact(64)) {
                    let (hi, lo) = (shape.at(i, 0, j), shape.at(i, 1, j));
                    for (k, &u) in q.iter().enumerate() {
                        (task[hi + k], task[lo + k]) = crate::amx::split(u);
                    }
                }
            };
            let rho = quantize_rows(features, d, limit, (&mut v, 2 * d), &mut scales, put);
            (CopyValues::Tiled(v), rho)
        } else {
            let mut v = zeroed::<i16>(n * d)?;
            let put =
                |q: &[i16], task: &mut [i16], i: usize| task[i * d..(i + 1) * d].copy_from_slice(q);
            let rho = quantize_rows(features, d, limit, (&mut v, d), &mut scales, put);
            (CopyValues::I16(v), rho)
        };
        // ρ is computed in f64 from exact products (an f32 times an i16 fits in 53 bits): a
        // relative margin of 2⁻⁴⁰ covers the sums' roundings.
        let rho = rho * (1.0 + 2f64.powi(-40));
        (rho <= MAX_RELATIVE_ERROR).then_some(RankingCopy {
            values,
            scales,
            rho,
        })
    }
}

/// `len` zeros, or `None` when the memory cannot be had.
fn zeroed<T: Clone + Default>(len: usize) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.resize(len, T::default());
    Some(v)
}

/// Quantises every row (in parallel, [`ROWS_PER_TASK`] at a time) into `values` (`width`
/// per row: a task's rows take `ROWS_PER_TASK·width` values, where `put` writes row `i` of
/// the task from its i16 values) and `scales`; returns the largest relative error.
fn quantize_rows<T: Send>(
    features: &FeatureRows,
    d: usize,
    limit: i64,
    (values, width): (&mut [T], usize),
    scales: &mut [f32],
    put: impl Fn(&[i16], &mut [T], usize) + Sync,
) -> f64 {
    const { assert!(ROWS_PER_TASK.is_multiple_of(crate::amx::GROUP)) };
    values
        .par_chunks_mut(ROWS_PER_TASK * width)
        .zip(scales.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .map(|(t, (values, scales))| {
            let start = t * ROWS_PER_TASK;
            let (mut decoded, mut q) = (Vec::new(), vec![0i16; d]);
            let rows = features.rows(start, start + scales.len(), d, &mut decoded);
            (rows.chunks_exact(d).zip(scales.iter_mut()).enumerate())
                .map(|(i, (row, s))| {
                    *s = quantize_row(row, limit, &mut q);
                    put(&q, values, i);
                    relative_error(row, &q, *s)
                })
                .fold(0.0, f64::max)
        })
        .reduce(|| 0.0, f64::max)
}

/// `q = round(row / s)` within `±limit`, with `s = max|row| / limit` (1 for a zero row, or
/// one so tiny that `s` underflows: then `ρ` is 1 and the copy is not used); returns `s`.
/// Rounds by adding and subtracting 1.5·2²³ (ties to even, for |v| < 2²²), which vectorises
/// where `f32::round` is a libm call (no SSE4.1 in the baseline x86-64 target); any `q` is
/// correct, since `ρ` is measured on the result.
fn quantize_row(row: &[f32], limit: i64, q: &mut [i16]) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let lim = limit as f32;
    let s = max / lim;
    let s = if s > 0.0 { s } else { 1.0 };
    for (q, &x) in q.iter_mut().zip(row) {
        *q = ((x / s).clamp(-lim, lim) + MAGIC - MAGIC) as i16;
    }
    s
}

/// `‖row − s·q‖ / ‖row‖` (0 for a zero row, whose `q` is all zeros).
fn relative_error(row: &[f32], q: &[i16], s: f32) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&x, &v) in row.iter().zip(q) {
        let x = f64::from(x);
        err += (x - f64::from(s) * f64::from(v)).powi(2);
        norm += x * x;
    }
    if norm > 0.0 {
        (err / norm).sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Column;

    #[test]
    fn limit_keeps_every_sum_in_i32() {
        for d in [1, 2, 768, 1000, 4096, 100_000] {
            let r = balanced_limit(d);
            assert!(r * r * d as i64 <= i64::from(i32::MAX), "d = {d}");
            assert!((r + 1) * (r + 1) * (d as i64) > i64::from(i32::MAX) || r == 32767);
        }
    }

    #[test]
    fn copy_reproduces_rows_within_rho() {
        let d = 128;
        let rows: Vec<f32> = (0..50 * d)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1 + i / d) as f32)
            .collect();
        let limit = balanced_limit(d);
        for features in [
            FeatureRows::F32(Column::Owned(rows.clone())),
            FeatureRows::F16(Column::Owned(
                rows.iter().map(|&x| half::f16::from_f32(x)).collect(),
            )),
        ] {
            let copy = RankingCopy::build(&features, (50, d), limit, false).expect("smooth rows");
            // The same values tiled (50 rows: one group, padded).
            let planes = RankingCopy::build(&features, (50, d), limit, true).expect("smooth");
            assert!(matches!(&planes.values, CopyValues::Tiled(t) if t.len() == 2 * 64 * d));
            assert_eq!(
                (planes.scales.clone(), planes.rho),
                (copy.scales.clone(), copy.rho)
            );
            let (mut q, mut from_planes) = (Vec::new(), Vec::new());
            copy.values.widen(0..50, d, &mut q);
            planes.values.widen(0..50, d, &mut from_planes);
            assert_eq!(q, from_planes);
            planes.values.widen(17..33, d, &mut from_planes);
            assert_eq!(q[17 * d..33 * d], from_planes, "rows 17..33");
            let mut decoded = Vec::new();
            let stored = features.rows(0, 50, d, &mut decoded);
            let mut largest = 0.0f64;
            for (k, row) in stored.chunks_exact(d).enumerate() {
                let q = &q[k * d..(k + 1) * d];
                assert!(q.iter().all(|&v| i64::from(v).abs() <= limit));
                let e = relative_error(row, q, copy.scales[k]);
                assert!(e <= copy.rho);
                largest = largest.max(e);
            }
            // ρ is the largest row error (not a loose bound), and small: ~1/(2√3·R) per value.
            assert!(copy.rho <= largest * (1.0 + 1e-9));
            assert!(copy.rho < 2.0 / limit as f64, "{}", copy.rho);
        }
    }

    #[test]
    fn no_copy_for_int8_rows_or_spiky_rows() {
        let d = 64;
        let int8 = FeatureRows::Int8 {
            values: Column::Owned(vec![1; d]),
            scales: Column::Owned(vec![1.0]),
        };
        assert!(RankingCopy::build(&int8, (1, d), balanced_limit(d), false).is_none());
        // A coarse limit (as a huge d would give) on a row of one large and many small
        // values: the small ones round to 0 and ρ ≈ 0.6.
        let mut row = vec![0.1f32; d];
        row[0] = 1.0;
        let features = FeatureRows::F32(Column::Owned(row));
        assert!(RankingCopy::build(&features, (1, d), 4, false).is_none());
        assert!(RankingCopy::build(&features, (1, d), balanced_limit(d), false).is_some());
    }
}
