//! The test columns as the ranking pass multiplies them, with a bound on each column's
//! dot-product error: f32 for every index (OpenBLAS sgemm, the streaming kernels), or
//! quantised to i16 so that a row's dots are exact integer sums ([`crate::int_kernels`]; VNNI
//! `vpdpwssd` does twice the multiply-adds of an f32 FMA per instruction) on CPUs with the
//! integer kernels: for int8 indexes (their rows as stored), and for batches on f32/f16
//! indexes through the index's i16 copy of its rows ([`crate::index::RankingCopy`]).
//!
//! Either way `|ranking dot_kl − exact dot_kl| ≤ errs[l] · ‖f̂_k‖` (f̂_k the row as stored),
//! which the proof of `score::top_k` turns into a bound on each score.

use std::ops::Range;

use ndarray::{Array2, ArrayView1};

use crate::amx::{self, AmxCols, GemmScratch};
use crate::index::{self, balanced_limit, CopyValues, FeatureRows, Index, RankingCopy};
use crate::int_kernels::{self, PackedCols, Rows, TokenTerms};
use crate::kernels::scaled_dot;

/// Columns quantised to i16: `col_l ≈ scales[l] · values[l]`, against int8 rows or the rows of
/// a [`RankingCopy`].
pub(crate) struct IntColumns<'a> {
    /// L × d.
    values: Vec<i16>,
    scales: Vec<f64>,
    /// Packed for the GEMM (batches of more than [`FEW`] columns, and any use of a copy).
    packed: Option<PackedCols>,
    /// Split and packed for the AMX tiles, where the CPU has them: the GEMM's columns, and a
    /// single query's 5–8 against int8 rows ([`TILES_FROM`]); else the VNNI kernels.
    tiles: Option<AmxCols>,
    /// The f32/f16 index's i16 rows, or `None` for an int8 index's own rows.
    copy: Option<&'a RankingCopy>,
}

/// Up to this many columns the ranking pass streams rows through dot kernels; beyond, GEMMs.
pub(crate) const FEW: usize = 4;

/// As [`FEW`] for a single query of token granularity (one segment, up to this many tokens:
/// the row kernels' `MAX_COLUMNS`), which also scores its blocks in the vectorised kernel;
/// through the batches' GEMM path a 5-token segment took 3–4 times a 4-token one.
pub(crate) const ONE: usize = 8;

/// From this many columns on, an int8 index's rows go through the AMX tiles where the CPU
/// has them ([`amx`]). Both cores, 200k rows of d = 768 (session 12, Xeon with AMX): the
/// streaming VNNI kernel's dots took 11–12 ms of thread time at 3–4 columns against 13–14
/// through the tiles (whose strided reads stream more slowly than the kernel's), and 15 /
/// 15–20 ms at 5 / 8 columns against 14–15 (the VNNI kernel's instructions outgrow the read).
const TILES_FROM: usize = 5;

pub(crate) struct RankingColumns<'a> {
    pub ints: Option<IntColumns<'a>>,
    /// Per column: `|ranking dot − exact dot| ≤ errs[l] · ‖f̂_k‖`.
    pub errs: Vec<f64>,
}

impl<'a> RankingColumns<'a> {
    /// `columns` (L × d, f64) are the exact test columns. Integer columns for an int8 index
    /// (with intrinsics and d ≤ 66k, where the limit is ≥ 2048), and for more than `few`
    /// ([`FEW`] or [`ONE`]) columns on an f32/f16 index with a ranking copy (when
    /// `use_copy`); f32 otherwise. Integer columns are packed for the GEMM beyond `few`.
    pub fn new(
        index: &'a Index,
        columns: &Array2<f64>,
        use_copy: bool,
        few: usize,
    ) -> RankingColumns<'a> {
        let (l, d) = columns.dim();
        let norm = |c: ArrayView1<f64>| c.dot(&c).sqrt();
        // (limit, copy, ρ) for the integer path; the copy checks for the integer kernels.
        let int = match &index.features {
            FeatureRows::Int8 { .. } => (int_kernels::intrinsics_available()
                && int_column_limit(d) >= 2048)
                .then_some((int_column_limit(d), None, 0.0)),
            // A single query's 4–8 columns against an f16 index: the tiled copy through
            // the tiles, as an int8 index's rows (a copy of i16 rows would go through the
            // GEMM, slower than the f16 kernels).
            FeatureRows::F16(_) if use_copy && few == ONE && copy_tiles(l, d) => index
                .ranking_copy()
                .filter(|copy| matches!(copy.values, CopyValues::Tiled(_)))
                .map(|copy| (balanced_limit(d), Some(copy), copy.rho)),
            _ if l > few && use_copy => index
                .ranking_copy()
                .map(|copy| (balanced_limit(d), Some(copy), copy.rho)),
            _ => None,
        };
        let Some((limit, copy, rho)) = int else {
            let gamma = gamma32(d);
            return RankingColumns {
                ints: None,
                errs: columns.outer_iter().map(|c| gamma * norm(c)).collect(),
            };
        };
        let (mut values, mut scales, mut errs) = (Vec::new(), Vec::new(), Vec::new());
        for col in columns.outer_iter() {
            let (q, scale, delta) = quantize(col, limit);
            values.extend(q);
            scales.push(scale);
            errs.push(int_error(delta, norm(col), rho));
        }
        let packed = (l > few || copy.is_some()).then(|| PackedCols::new(&values, l, d));
        // The tiles for a GEMM's columns, and for a single query's 5–8 against int8 rows.
        let int8 = matches!(index.features, FeatureRows::Int8 { .. });
        let streamed = int8 && (TILES_FROM..=amx::TILE_COLUMNS).contains(&l);
        let tiles = (packed.is_some() || streamed)
            .then(|| AmxCols::new(&values, l, d))
            .flatten();
        RankingColumns {
            ints: Some(IntColumns {
                values,
                scales,
                packed,
                tiles,
                copy,
            }),
            errs,
        }
    }
}

/// From this many columns on, a single query on an f16 index ranks through the copy's tiles
/// (where the CPU has them): both cores, 200k rows of d = 768 (session 16, three alternating
/// rounds), a 4-token entity took 14.6–16.3 ms through the f16 kernels and 14.4–14.6 through
/// the copy; 3 tokens 14.2–15.1 against 14.3–14.5, where the copy's memory buys nothing.
const COPY_FROM: usize = 4;

/// Whether a single query's `l` columns of `d` rank through the AMX tiles on an f16 index's
/// copy ([`COPY_FROM`] to [`amx::TILE_COLUMNS`] columns, where the copy is kept tiled):
/// asked before the copy is built, so that no copy is built that the query would not use.
fn copy_tiles(l: usize, d: usize) -> bool {
    (COPY_FROM..=amx::TILE_COLUMNS).contains(&l) && RankingCopy::kept_tiled(d)
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
/// every exact sum, and every partial sum on the way, fits in an i32 — and that the AMX tiles
/// can split into two int8 halves ([`amx::MAX_SPLIT`], below i16's 32 767 by 128: this binds
/// only for d < 518, where it costs the columns 0.4 % of their precision), so that every
/// integer kernel computes the same sums for any `d`.
fn int_column_limit(d: usize) -> i64 {
    (i64::from(i32::MAX) / (127 * d.max(1) as i64)).min(i64::from(amx::MAX_SPLIT))
}

/// `col ≈ scale · u` with `|u| ≤ limit`, and `‖δ‖ = ‖col − scale·u‖`.
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
    (u, scale, delta)
}

/// The error factor of an integer ranking dot. The pass computes `s_k·scale·Σ q_j u_j` (exact
/// integers, then two f64 products and an f32 rounding) where the exact pass sums
/// `f̂_j·col_j`; with `f̂_k = s_k q_k + δ_k` (`‖δ_k‖ ≤ ρ‖f̂_k‖`: ρ = 0 for an int8 index, whose
/// decoded values are `fl32(s_k q_j)`) and `col = scale·u + δ`:
/// `ranking − exact = (s_k q_k)·(scale·u − col) − δ_k·col + roundings`, at most
/// `‖f̂_k‖ ((1 + ρ)‖δ‖ + ρ‖col‖) + 2⁻²¹‖f̂_k‖‖col‖` — the 2⁻²¹ covers the roundings (of
/// the decoded values and of the result, 2⁻²⁴ each relative to at most ~1.1‖f̂_k‖‖col‖ since
/// ρ ≤ 1/256 and `‖δ‖ ≤ √d·scale/2 ≤ 0.09‖col‖` for the limits used), with room to spare.
fn int_error(delta: f64, col_norm: f64, rho: f64) -> f64 {
    ((1.0 + rho) * delta + rho * col_norm) * (1.0 + 2f64.powi(-20)) + 2f64.powi(-21) * col_norm
}

/// [`scaled_dot`] over rows of `L` dots (`out` and `ints` row-major, L per row): the few
/// columns of a single query in arrays of L, which the compiler unrolls (`perf`, one-core
/// int8 3-token query: the general loop ~0.8 ms of its 12 ms, this one ~0.5 ms).
fn scale_dots<const L: usize>(out: &mut [f32], ints: &[i32], row_scales: &[f32], scales: &[f64]) {
    let Ok(scales) = <[f64; L]>::try_from(scales) else {
        return; // cannot happen: the caller matched L on the scales' length
    };
    for ((o, a), &s_k) in out
        .chunks_exact_mut(L)
        .zip(ints.chunks_exact(L))
        .zip(row_scales)
    {
        for l in 0..L {
            o[l] = scaled_dot(a[l], s_k, scales[l]);
        }
    }
}

impl IntColumns<'_> {
    /// `out[i*L + l]` = the ranking dot of row `rows.start + i` with column `l` through the
    /// integer kernels, for an int8 index or a ranking copy; `acc` is reusable scratch.
    pub fn block_dots(
        &self,
        features: &FeatureRows,
        rows: Range<usize>,
        d: usize,
        out: &mut [f32],
        acc: &mut Scratch,
    ) {
        if let Some((ints, row_scales)) = self.block_ints(features, rows, d, acc) {
            self.scale(ints, row_scales, out);
        }
    }

    /// The columns' scales (`s_l` of [`scaled_dot`]).
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// The exact integer dots of [`IntColumns::block_dots`] (rows × L, row-major, in `acc`)
    /// before their scaling, and the rows' scales (`s_k`); `None` (nothing computed) in the
    /// cases that cannot happen.
    pub fn block_ints<'s, 'a>(
        &'s self,
        features: &'s FeatureRows,
        rows: Range<usize>,
        d: usize,
        acc: &'a mut Scratch,
    ) -> Option<(&'a [i32], &'s [f32])> {
        let (source, row_scales) = match (self.copy, features) {
            (Some(copy), _) => (
                match &copy.values {
                    CopyValues::I16(v) => Source::Rows(Rows::I16(&v[rows.start * d..rows.end * d])),
                    CopyValues::Tiled(t) => Source::Tiled(t, copy),
                },
                &copy.scales[rows.clone()],
            ),
            (None, FeatureRows::Int8 { values, scales }) => (
                Source::Rows(Rows::I8(&values.as_slice()[rows.start * d..rows.end * d])),
                &scales.as_slice()[rows.clone()],
            ),
            _ => return None, // cannot happen: IntColumns exist for int8 indexes or with a copy
        };
        let (l, rb) = (self.scales.len(), rows.len());
        acc.ints.resize(rb * l, 0);
        match (&self.packed, source) {
            (Some(packed), Source::Tiled(tiled, copy))
                if (packed.num_cols(), packed.dim()) == (l, d) =>
            {
                // The tiles: a single query's few columns on the block's whole groups (read
                // from memory in order, as they lie), a batch's GEMM on all its rows. The VNNI
                // GEMM on the rows widened to i16 takes what they leave: the rows before the
                // block's first whole group and after its last (at a chunk's ends), or all
                // of them without the tiles.
                let shape = index::tiled(d);
                let (head, body) = match &self.tiles {
                    Some(t) if l <= amx::TILE_COLUMNS => {
                        let a = rows.start.next_multiple_of(amx::GROUP).min(rows.end);
                        let b = (rows.end / amx::GROUP * amx::GROUP).max(a);
                        let groups = &tiled[shape.bytes(a)..shape.bytes(b)];
                        let ints = &mut acc.ints[(a - rows.start) * l..];
                        (a - rows.start, amx::dot_rows_tiled(groups, shape, t, ints))
                    }
                    Some(t) => {
                        let (ints, scratch) = (&mut acc.ints, &mut acc.tiles);
                        match amx::gemm_tiled((tiled, shape), rows.clone(), t, ints, scratch) {
                            true => (0, rb),
                            false => (0, 0),
                        }
                    }
                    None => (0, 0),
                };
                let (start, end) = (rows.start, rows.end);
                for part in [start..start + head, start + head + body..end] {
                    if !part.is_empty() {
                        copy.values.widen(part.clone(), d, &mut acc.widened);
                        let (rest, ints) = (Rows::I16(&acc.widened), &mut acc.ints);
                        let ints = &mut ints[(part.start - start) * l..];
                        int_kernels::gemm(rest, d, packed, ints, &mut acc.wide);
                    }
                }
            }
            (Some(packed), Source::Rows(row_values))
                if (packed.num_cols(), packed.dim()) == (l, d) =>
            {
                // A copy's values lie within ±balanced_limit(d).
                let rows = (row_values, balanced_limit(d));
                let tiled = (self.tiles.as_ref())
                    .is_some_and(|tiles| amx::gemm(rows, d, tiles, &mut acc.ints, &mut acc.tiles));
                if !tiled {
                    int_kernels::gemm(row_values, d, packed, &mut acc.ints, &mut acc.wide)
                }
            }
            (_, Source::Rows(Rows::I8(row_values))) => {
                // The tiles take whole groups of rows, the streaming kernel the rest.
                let tiled = (self.tiles.as_ref()).map_or(0, |tiles| {
                    amx::dot_rows(row_values, d, tiles, &mut acc.ints)
                });
                let cols: Vec<&[i16]> = self.values.chunks_exact(d).collect();
                let (ints, rest) = (&mut acc.ints[tiled * l..], &row_values[tiled * d..]);
                int_kernels::dot_rows_i8_i16(rest, d, &cols, ints);
            }
            _ => return None, // cannot happen: a copy's columns are always packed
        }
        Some((&acc.ints, row_scales))
    }

    /// `out` = [`scaled_dot`] of each of `ints` (rows × L) with its row's and column's scale.
    pub fn scale(&self, ints: &[i32], row_scales: &[f32], out: &mut [f32]) {
        let l = self.scales.len();
        match l {
            1 => scale_dots::<1>(out, ints, row_scales, &self.scales),
            2 => scale_dots::<2>(out, ints, row_scales, &self.scales),
            3 => scale_dots::<3>(out, ints, row_scales, &self.scales),
            4 => scale_dots::<4>(out, ints, row_scales, &self.scales),
            _ => {
                for ((o, a), &s_k) in out
                    .chunks_exact_mut(l)
                    .zip(ints.chunks_exact(l))
                    .zip(row_scales)
                {
                    for ((o, &a), &s_l) in o.iter_mut().zip(a).zip(&self.scales) {
                        *o = scaled_dot(a, s_k, s_l);
                    }
                }
            }
        }
    }

    /// For one column against an int8 index's rows `start..start + out.len()`: the tokens'
    /// raw scores straight from the integer dots ([`int_kernels::dot_score_rows`], the dots
    /// as [`IntColumns::block_dots`] computes them). `false` when that kernel does not apply
    /// (no AVX-512 VNNI, a ranking copy, more than one column).
    pub fn block_scores(
        &self,
        features: &FeatureRows,
        (start, terms): (usize, &TokenTerms),
        out: &mut [f64],
    ) -> bool {
        let (None, FeatureRows::Int8 { values, scales }, [scale]) =
            (self.copy, features, self.scales.as_slice())
        else {
            return false;
        };
        let d = self.values.len();
        let rows = start..start + out.len();
        int_kernels::dot_score_rows(
            &values.as_slice()[rows.start * d..rows.end * d],
            &scales.as_slice()[rows],
            d,
            (&self.values, *scale),
            terms,
            out,
        )
    }
}

/// Where [`IntColumns::block_dots`] reads a block's rows: int8 or i16 rows, or a ranking
/// copy kept tiled (all its rows, with the copy, which widens the rows the tiles leave).
enum Source<'a> {
    Rows(Rows<'a>),
    Tiled(&'a [i8], &'a RankingCopy),
}

/// Reusable buffers of a ranking pass (one per thread): integer sums and widened rows for
/// [`IntColumns::block_dots`], decoded f32 rows for the sgemm.
#[derive(Default)]
pub(crate) struct Scratch {
    ints: Vec<i32>,
    wide: Vec<i16>,
    /// A tiled copy's rows, as i16 values.
    widened: Vec<i16>,
    tiles: GemmScratch,
    pub decoded: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{Column, FeatureRows};

    /// `(ranking dot, exact dot, bound)` of a row `s_k·q` (decoded as `f̂`, within `ρ` of it)
    /// against `col` quantised with `limit`, as [`IntColumns::block_dots`] computes them.
    fn dots(decoded: &[f32], q: &[i64], s_k: f32, col: &[f64], limit: i64, rho: f64) -> [f64; 3] {
        let col = ArrayView1::from(col);
        let (u, scale, delta) = quantize(col, limit);
        assert!(u.iter().all(|&v| i64::from(v).abs() <= limit));
        let err = int_error(delta, col.dot(&col).sqrt(), rho);
        let exact: f64 = decoded
            .iter()
            .zip(col)
            .map(|(&f, &c)| f64::from(f) * c)
            .sum();
        let int: i64 = q.iter().zip(&u).map(|(&a, &b)| a * i64::from(b)).sum();
        let approx = (int as f64 * (f64::from(s_k) * scale)) as f32;
        let f_norm = decoded
            .iter()
            .map(|&f| f64::from(f).powi(2))
            .sum::<f64>()
            .sqrt();
        [f64::from(approx), exact, err * f_norm]
    }

    /// A row as an int8 index stores it: `(decoded, q)`.
    fn int8_row(q: Vec<i8>, s_k: f32) -> (Vec<f32>, Vec<i64>) {
        let decoded = q.iter().map(|&v| f32::from(v) * s_k).collect();
        (decoded, q.into_iter().map(i64::from).collect())
    }

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
            let c_norm = col.iter().map(|c| c * c).sum::<f64>().sqrt();
            for _ in 0..50 {
                let s_k = (next().abs() + 0.01) as f32;
                let q: Vec<i8> = (0..d).map(|_| (next() * 127.0).round() as i8).collect();
                let (decoded, q) = int8_row(q, s_k);
                let [approx, exact, bound] = dots(&decoded, &q, s_k, &col, limit, 0.0);
                assert!(
                    (approx - exact).abs() <= bound,
                    "{approx} vs {exact}, bound {bound}"
                );
                // Not vacuous: the bound is a small fraction of ‖f̂‖‖col‖.
                let f_norm = decoded.iter().map(|&f| f64::from(f).powi(2)).sum::<f64>();
                assert!(bound <= 1e-3 * c_norm * f_norm.sqrt());
            }
        }
    }

    /// Uniform values in [−1, 1) from `seed` (xorshift).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        }
    }

    /// A random f32 row with a spike, a ranking copy of it (`None` when ρ is too large) and
    /// a column with a spike, from `seed`.
    fn copy_case(d: usize, seed: u64, scale: f32, spikes: (f64, f64)) -> Option<[f64; 3]> {
        let mut next = uniform(seed);
        let mut row: Vec<f32> = (0..d).map(|_| next() as f32 * scale).collect();
        row[d / 2] += (spikes.0 as f32) * scale;
        let mut col: Vec<f64> = (0..d).map(|_| next()).collect();
        col[0] += spikes.1;
        let limit = balanced_limit(d);
        let features = FeatureRows::F32(Column::Owned(row.clone()));
        let copy = RankingCopy::build(&features, (1, d), limit, false)?;
        let mut q = Vec::new();
        copy.values.widen(0..1, d, &mut q);
        let q: Vec<i64> = q.into_iter().map(i64::from).collect();
        Some(dots(&row, &q, copy.scales[0], &col, limit, copy.rho))
    }

    #[test]
    fn copy_dots_stay_within_their_bound() {
        let mut tight = 0.0f64;
        for seed in 0..200 {
            let [approx, exact, bound] = copy_case(768, seed, 1.0, (0.0, 0.0)).expect("smooth");
            assert!(
                (approx - exact).abs() <= bound,
                "{approx} vs {exact}, bound {bound}"
            );
            tight = tight.max((approx - exact).abs() / bound);
            // Not vacuous: ~1/800 of ‖f̂‖‖col‖ (≈ 16 × 768 here), against 1/27 for a dot.
            assert!(bound < 16.0 * 768.0 / 400.0, "{bound}");
        }
        // And not hopelessly loose: the worst of 200 dots comes within 1/20 of it.
        assert!(tight > 0.05, "{tight}");
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
            let mut next = uniform(seed);
            let mut col: Vec<f64> = (0..d).map(|_| next()).collect();
            col[0] += spike;
            let q: Vec<i8> = (0..d).map(|_| (next() * 127.0).round() as i8).collect();
            let (decoded, q) = int8_row(q, s_k);
            let [approx, exact, bound] = dots(&decoded, &q, s_k, &col, int_column_limit(d), 0.0);
            proptest::prop_assert!((approx - exact).abs() <= bound);
        }

        /// The same for an f32 row through a ranking copy (its own error ρ in the bound).
        #[test]
        fn copy_dots_stay_within_their_bound_for_any_shape(
            d in 1usize..2000,
            seed in 0u64..1000,
            scale in 1e-6f32..1e6,
            row_spike in 0.0f64..1e4,
            col_spike in 0.0f64..1e6,
        ) {
            if let Some([approx, exact, bound]) = copy_case(d, seed, scale, (row_spike, col_spike)) {
                proptest::prop_assert!((approx - exact).abs() <= bound);
            }
        }
    }

    #[test]
    fn column_limit_keeps_every_sum_in_i32() {
        for d in [1, 768, 1024, 4096, 100_000] {
            let limit = int_column_limit(d);
            assert!(127 * limit * d as i64 <= i64::from(i32::MAX));
            assert!(limit <= i64::from(amx::MAX_SPLIT) && amx::MAX_SPLIT < i32::from(i16::MAX));
        }
    }

    /// Through the AMX tiles (whole groups of 64 rows, the rest streamed) a block's ranking
    /// dots are bit-identical to the streaming kernel's, for every column count the tiles
    /// take, rows past whole groups and columns at the quantisation limit. Nothing to compare
    /// on a CPU without AMX (the streaming kernel serves alone there).
    #[test]
    fn tiled_block_dots_equal_the_streaming_kernels() {
        let (d, rb) = (768, 200);
        let mut next = uniform(5);
        let values: Vec<i8> = (0..rb * d)
            .map(|_| (next() * 127.0).round() as i8)
            .collect();
        let scales: Vec<f32> = (0..rb).map(|_| 0.01 + next().abs() as f32).collect();
        let features = FeatureRows::Int8 {
            values: Column::Owned(values),
            scales: Column::Owned(scales),
        };
        let limit = int_column_limit(d);
        for l in TILES_FROM..=amx::TILE_COLUMNS {
            let (mut cols, mut col_scales) = (Vec::new(), Vec::new());
            for c in 0..l {
                let col: Vec<f64> = (0..d).map(|j| if j == c { 1.0 } else { next() }).collect();
                let (u, scale, _) = quantize(ArrayView1::from(&col), limit);
                cols.extend(u);
                col_scales.push(scale);
            }
            let Some(tiles) = AmxCols::new(&cols, l, d) else {
                eprintln!("no AMX here: the streaming kernel serves alone");
                return;
            };
            let with = |tiles: Option<AmxCols>| {
                let ints = IntColumns {
                    values: cols.clone(),
                    scales: col_scales.clone(),
                    packed: None,
                    tiles,
                    copy: None,
                };
                let mut out = vec![0.0f32; rb * l];
                ints.block_dots(&features, 0..rb, d, &mut out, &mut Scratch::default());
                out
            };
            let (tiled, streamed) = (with(Some(tiles)), with(None));
            assert!(tiled.iter().any(|&v| v != 0.0), "L = {l}: dots computed");
            assert_eq!(tiled, streamed, "L = {l}");
        }
    }

    /// An f16 index's copy kept tiled gives the dots of the copy kept as i16 rows (the VNNI
    /// GEMM), bit for bit, over blocks that start and end inside the tiles' groups (the rows
    /// before the first whole group and after the last widened), a single query's columns
    /// through the tiles and a batch's through the tile GEMM.
    #[test]
    fn a_tiled_copy_gives_the_dots_of_the_i16_copy() {
        let (d, n) = (768, 200);
        let mut next = uniform(9);
        let rows: Vec<half::f16> = (0..n * d).map(|_| half::f16::from_f64(next())).collect();
        let features = FeatureRows::F16(Column::Owned(rows));
        let limit = balanced_limit(d);
        let copy = |tiles| RankingCopy::build(&features, (n, d), limit, tiles).expect("smooth");
        let (plain, tiled) = (copy(false), copy(true));
        for l in [TILES_FROM, amx::TILE_COLUMNS, 12] {
            let (mut cols, mut col_scales) = (Vec::new(), Vec::new());
            for _ in 0..l {
                let col: Vec<f64> = (0..d).map(|_| next()).collect();
                let (u, scale, _) = quantize(ArrayView1::from(&col), limit);
                cols.extend(u);
                col_scales.push(scale);
            }
            if AmxCols::new(&cols, l, d).is_none() {
                eprintln!("no AMX here: the copy is not kept tiled");
                return;
            }
            let dots = |copy, tiles, rows: Range<usize>| {
                let ints = IntColumns {
                    values: cols.clone(),
                    scales: col_scales.clone(),
                    packed: Some(PackedCols::new(&cols, l, d)),
                    tiles,
                    copy: Some(copy),
                };
                let mut out = vec![0.0f32; rows.len() * l];
                ints.block_dots(&features, rows, d, &mut out, &mut Scratch::default());
                out
            };
            for rows in [0..n, 5..n, 64..128, 70..130, 3..60, 190..200] {
                let want = dots(&plain, None, rows.clone());
                let got = dots(&tiled, AmxCols::new(&cols, l, d), rows.clone());
                assert!(
                    want.iter().any(|&v| v != 0.0),
                    "L = {l} {rows:?}: dots computed"
                );
                assert_eq!(got, want, "L = {l}, rows {rows:?}");
                let widened = dots(&tiled, None, rows.clone());
                assert_eq!(widened, want, "L = {l}, rows {rows:?}, no tiles");
            }
        }
    }
}
