//! The transposed query of paper §6.1: every training token against every token (or sequence)
//! of a small clean set, as blocked GEMMs over the index with a per-row reduction — never one
//! query per training token.
//!
//! Per block of training rows: ranking dots `F_block · Colsᵀ` as the batched queries compute
//! them (f32 sgemm, or the integer GEMM on int8 rows and on an f32/f16 index's ranking copy,
//! [`RankingColumns`]), the per-pair terms of DESIGN.md §3 as f64 dgemms ([`PairTerms`]), then
//! per training row its `top` largest scores: the `top + EXTRA` best by the ranking dots are
//! rescored exactly (f64 dots), and the ranking error bound of the queries proves that no
//! other column can reach the top (else the row is scored exactly in full). The reported means
//! are therefore those of exact scores, equal to [`crate::query::Query::scores`] up to
//! summation order.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::kernels::PAIR_GROUP;
use crate::query::ranking::{RankingColumns, Scratch, FEW};
use crate::query::score::{self, exact_dots, gemm_block_dots, Ctx, PairTerms, Prepared};
use crate::query::{Granularity, QueryOptions, TestSegment};
use crate::rank::CleanSequence;

/// Training rows per block: the block's ranking dots (f32) and pair terms (f64) stay a few MB.
const ROWS: usize = 512;

/// Columns rescored exactly per training row beyond the `top` asked for: the bound then has to
/// separate the `(top + EXTRA)`-th ranking score from the `top`-th exact one, not neighbours.
const EXTRA: usize = 8;

/// Mean of the `top` largest values of `values` (all of them when fewer; NaN when empty).
/// Reorders `values`.
fn top_mean(values: &mut [f64], top: usize) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let top = top.min(values.len());
    values.select_nth_unstable_by(top - 1, |a, b| b.total_cmp(a));
    values[..top].iter().sum::<f64>() / top as f64
}

/// Scratch of [`proven_top_mean`], one per rayon task.
#[derive(Default)]
struct RowScratch {
    approx: Vec<f64>,
    columns: Vec<usize>,
    exact: Vec<f64>,
}

impl RowScratch {
    /// [`proven_top_mean`] of one training row: its ranking scores `approx` (one per column)
    /// over the `columns` considered.
    fn top_mean(
        &mut self,
        approx: impl Iterator<Item = f64>,
        columns: impl Iterator<Item = usize>,
        top_bound: (usize, f64),
        exact: impl FnMut(usize) -> f64,
    ) -> f64 {
        self.approx.clear();
        self.approx.extend(approx);
        self.columns.clear();
        self.columns.extend(columns);
        proven_top_mean(
            &self.approx,
            &mut self.columns,
            top_bound,
            &mut self.exact,
            exact,
        )
    }
}

/// The mean of the `top` largest exact scores of one training row over `columns`, given every
/// column's ranking score in `approx` (each within `bound` of its exact score) and `exact(q)`:
/// only the `top + EXTRA` best ranking scores are rescored when that proves the rest cannot
/// reach the top — their ranking scores are at most the least rescored one, `cut`, so their
/// exact ones at most `cut + bound`, below the `top`-th exact score — and every column
/// otherwise. Reorders `columns`; `exact` is called once per rescored column.
fn proven_top_mean(
    approx: &[f64],
    columns: &mut [usize],
    (top, bound): (usize, f64),
    exact_scores: &mut Vec<f64>,
    mut exact: impl FnMut(usize) -> f64,
) -> f64 {
    let m = top.saturating_add(EXTRA);
    if columns.len() > m {
        columns.select_nth_unstable_by(m - 1, |&a, &b| approx[b].total_cmp(&approx[a]));
        let cut = columns[..m]
            .iter()
            .fold(f64::INFINITY, |c, &q| c.min(approx[q]));
        exact_scores.clear();
        exact_scores.extend(columns[..m].iter().map(|&q| exact(q)));
        exact_scores.select_nth_unstable_by(top - 1, |a, b| b.total_cmp(a));
        let kth = exact_scores[top - 1];
        // A relative slack for the f64 roundings (the bound covers the ranking dots').
        let slack = 1e-9 * (cut.abs() + bound + kth.abs()) + f64::MIN_POSITIVE;
        if cut + bound + slack < kth {
            return exact_scores[..top].iter().sum::<f64>() / top as f64;
        }
    }
    exact_scores.clear();
    exact_scores.extend(columns.iter().map(|&q| exact(q)));
    top_mean(exact_scores, top)
}

/// Calls `each(rows, dots)` for consecutive blocks of index rows, `dots` being rows × L ranking
/// dots with the prepared columns (within `ranking.errs[l]·‖f̂_k‖` of the exact ones; buffers
/// allocated once: fresh multi-MB arrays per block would cost a page fault per 4 KiB each time).
fn for_each_block(
    ctx: &Ctx,
    prep: &Prepared,
    ranking: &RankingColumns,
    mut each: impl FnMut(Range<usize>, ArrayView2<f32>),
) {
    let n = ctx.index.num_tokens();
    let threads = rayon::current_num_threads().max(1);
    let mut scratch: Vec<Scratch> = (0..threads).map(|_| Scratch::default()).collect();
    let mut dots = Array2::<f32>::zeros((ROWS, prep.columns32.nrows()));
    for start in (0..n).step_by(ROWS) {
        let end = (start + ROWS).min(n);
        let mut out = dots.slice_mut(s![..end - start, ..]);
        gemm_block_dots(ctx, prep, ranking, start..end, &mut scratch, &mut out);
        each(start..end, out.view());
    }
}

/// Calls `each(rows, dots)` for consecutive blocks of index rows, `dots` being rows × L exact
/// (f64 dgemm) dot products with the prepared columns: for instance influence, which sums
/// every pair rather than picking a few.
fn for_each_exact_block(
    index: &Index,
    prep: &Prepared,
    mut each: impl FnMut(Range<usize>, ArrayView2<f64>),
) {
    let (n, d) = (index.num_tokens(), index.crf().feature_dim());
    let mut decoded = Vec::new();
    let mut wide = Array2::<f64>::zeros((ROWS, d));
    let mut dots = Array2::<f64>::zeros((ROWS, prep.columns.nrows()));
    for start in (0..n).step_by(ROWS) {
        let end = (start + ROWS).min(n);
        let rb = end - start;
        let x = index.features.rows(start, end, d, &mut decoded);
        let mut w = wide.slice_mut(s![..rb, ..]);
        w.iter_mut().zip(x).for_each(|(w, &x)| *w = f64::from(x));
        let mut out = dots.slice_mut(s![..rb, ..]);
        general_mat_mul(1.0, &w, &prep.columns.t(), 0.0, &mut out);
        each(start..end, out.view());
    }
}

/// Every token of every clean sequence as a single-token test segment (clean labels).
fn clean_tokens<'a>(clean: &[CleanSequence<'a>]) -> Vec<TestSegment<'a>> {
    clean
        .iter()
        .flat_map(|&s| {
            (0..s.labels.len()).map(move |t| TestSegment {
                features: s.features,
                labels: s.labels,
                first: t,
                last: t,
            })
        })
        .collect()
}

fn need_clean(clean: &[CleanSequence], what: &str) -> Result<()> {
    match clean.iter().map(|s| s.labels.len()).sum::<usize>() {
        0 => Err(Error::InvalidArgument(format!(
            "{what} needs a clean (expert-labelled) set with at least one token"
        ))),
        _ => Ok(()),
    }
}

/// Paper §6.1, segment influence: a training token's score is the mean of its `top` largest
/// (most opposing) influences `−g_tᵀ H⁻¹ g_k` over the clean tokens `t` (single-token
/// segments, clean labels). `options` gives the Hessian and normalisation.
pub(crate) fn segment_influence(
    index: &Index,
    options: &QueryOptions,
    clean: &[CleanSequence],
    top: usize,
) -> Result<Vec<f64>> {
    need_clean(clean, "segment influence ranking")?;
    let options = QueryOptions {
        granularity: Granularity::Token,
        ..options.clone()
    };
    options.check(index.crf().num_labels())?;
    let segments = clean_tokens(clean);
    let prep = score::prepare(index.crf(), &options, &segments)?;
    let ctx = Ctx::new(index, &options);
    let ranking = RankingColumns::new(index, &prep.columns, options.ranking_copy, FEW);
    let query_factor = (prep.sides.iter())
        .map(|side| ctx.query_factor(side, &ranking.errs))
        .fold(0.0, f64::max);
    let terms = PairTerms::new(&ctx, &prep);
    let (d, nq) = (ctx.d, prep.sides.len());
    // One column per clean token (the identity, K-FAC): each row's ranking scores in one
    // vectorised kernel from its error vector and pair class. Otherwise (C columns per clean
    // token) from the block's `E = R·Coefᵀ` and table terms `V`.
    let mut pair_terms = (!terms.one_column(&prep)).then(|| terms.buffers(ROWS));
    let never = (vec![f64::NEG_INFINITY; nq], vec![f64::INFINITY; nq]);
    let mut out = vec![0.0; index.num_tokens()];
    // The mean of row k's `top` exact scores, from its ranking scores `approx`.
    let row_mean = |scratch: &mut RowScratch,
                    k: usize,
                    approx: &[f64],
                    decoded: &mut Vec<f32>,
                    exact: &mut Vec<f64>| {
        let row = index.features.rows(k, k + 1, d, decoded);
        let bound = ctx.token_factor(k) * query_factor;
        scratch.top_mean(approx.iter().copied(), 0..nq, (top, bound), |q| {
            let side = &prep.sides[q];
            ctx.token_score(side, k, exact_dots(&prep, side, row, exact))
        })
    };
    let classes = index.pair_classes();
    for_each_block(&ctx, &prep, &ranking, |rows, dots| {
        let start = rows.start;
        let Some(buf) = pair_terms.as_mut() else {
            // Up to PAIR_GROUP rows of one pair class per kernel call (see
            // `PairTerms::group_scores`), the groups in parallel.
            let groups = score::class_groups(&classes[start..], 0..rows.len());
            let means: Vec<(usize, f64)> = groups
                .par_iter()
                .map_init(
                    || {
                        (
                            RowScratch::default(),
                            vec![0.0; PAIR_GROUP * nq],
                            Vec::new(),
                            Vec::new(),
                        )
                    },
                    |(scratch, approx, decoded, exact), group| {
                        let never = (&never.0[..], &never.1[..]);
                        if terms
                            .group_scores(&ctx, (start, group), dots, never, approx)
                            .is_none()
                        {
                            return Vec::new(); // cannot happen: standard-layout arrays
                        }
                        (group.rows().iter().enumerate())
                            .map(|(g, &i)| {
                                let approx = &approx[g * nq..(g + 1) * nq];
                                (
                                    start + i,
                                    row_mean(scratch, start + i, approx, decoded, exact),
                                )
                            })
                            .collect()
                    },
                )
                .flatten()
                .collect();
            for (k, mean) in means {
                out[k] = mean;
            }
            return;
        };
        terms.block(&ctx, rows.clone(), buf);
        let buf = &*buf;
        out[rows].par_iter_mut().enumerate().for_each_init(
            || (RowScratch::default(), vec![0.0; nq], Vec::new(), Vec::new()),
            |(scratch, approx, decoded, exact), (i, out)| {
                let (k, dots) = (start + i, dots.row(i));
                let grad_norm = ctx.grad_norm(k);
                let (e_k, v) = (buf.e().row(i), buf.v());
                for (q, (a, side)) in approx.iter_mut().zip(&prep.sides).enumerate() {
                    *a = ctx.finish(side.pair_raw(dots, e_k, v[[i, q]]), grad_norm);
                }
                *out = row_mean(scratch, k, approx, decoded, exact);
            },
        );
    });
    Ok(out)
}

/// Paper §6.1, segment nearest neighbour: the mean of a training token's `top` largest dot
/// products `f_k·f_t` with the clean tokens `t` whose label differs from its own (NaN when
/// every clean token has its label).
pub(crate) fn segment_nearest(
    index: &Index,
    options: &QueryOptions,
    clean: &[CleanSequence],
    top: usize,
) -> Result<Vec<f64>> {
    need_clean(clean, "segment nearest-neighbour ranking")?;
    // Only the ranking copy option applies: nearest neighbours take no Hessian.
    let options = QueryOptions {
        granularity: Granularity::NearestDot,
        ranking_copy: options.ranking_copy,
        ..QueryOptions::default()
    };
    let segments = clean_tokens(clean);
    let prep = score::prepare(index.crf(), &options, &segments)?;
    let ctx = Ctx::new(index, &options);
    let ranking = RankingColumns::new(index, &prep.columns, options.ranking_copy, FEW);
    // A nearest-dot side's one column has the error `errs[l]·‖f̂_k‖`.
    let bound_per_norm = ranking.errs.iter().copied().fold(0.0, f64::max);
    let clean_labels: Vec<u32> = segments.iter().map(|s| s.labels[s.first]).collect();
    let labels = index.tokens.labels.as_slice();
    let d = ctx.d;
    let mut out = vec![0.0; index.num_tokens()];
    for_each_block(&ctx, &prep, &ranking, |rows, dots| {
        let start = rows.start;
        out[rows].par_iter_mut().enumerate().for_each_init(
            || (RowScratch::default(), Vec::new(), Vec::new()),
            |(scratch, decoded, exact), (i, out)| {
                let k = start + i;
                let approx = dots.row(i).into_iter().map(|&x| f64::from(x));
                let other_labels =
                    (0..clean_labels.len()).filter(|&t| clean_labels[t] != labels[k]);
                let row = index.features.rows(k, k + 1, d, decoded);
                let bound = ctx.token_factor(k) * bound_per_norm;
                *out = scratch.top_mean(approx, other_labels, (top, bound), |t| {
                    exact_dots(&prep, &prep.sides[t], row, exact)[0] // the side's one column
                });
            },
        );
    });
    Ok(out)
}

/// Paper §6.1, instance influence: each training sequence's Koh & Liang influence
/// `−g_jᵀ H⁻¹ g_s` averaged over the clean sequences `j` (whole-sequence losses). Influence
/// is linear in the test gradient, so the per-pair terms are summed over `j` per token, and
/// the sequence-level terms added once per training sequence.
pub(crate) fn instance_influence(
    index: &Index,
    options: &QueryOptions,
    clean: &[CleanSequence],
) -> Result<Vec<f64>> {
    need_clean(clean, "instance influence ranking")?;
    let options = QueryOptions {
        granularity: Granularity::Instance,
        ..options.clone()
    };
    options.check(index.crf().num_labels())?;
    let segments: Vec<TestSegment> = clean
        .iter()
        .map(|s| TestSegment {
            features: s.features,
            labels: s.labels,
            first: 0,
            last: s.labels.len().saturating_sub(1),
        })
        .collect();
    let prep = score::prepare(index.crf(), &options, &segments)?;
    let ctx = Ctx::new(index, &options);
    let terms = PairTerms::new(&ctx, &prep);
    let mut buf = terms.buffers(ROWS);
    let mut token_sums = vec![0.0; index.num_tokens()];
    for_each_exact_block(index, &prep, |rows, dots| {
        terms.block(&ctx, rows.clone(), &mut buf);
        let (e, v) = (buf.e(), buf.v());
        for (i, sum) in token_sums[rows].iter_mut().enumerate() {
            *sum = v.row(i).sum() + dots.row(i).dot(&e.row(i));
        }
    });
    let nq = prep.sides.len() as f64;
    Ok((0..index.num_sequences())
        .into_par_iter()
        .map(|s| {
            let tokens: f64 = token_sums[index.sequence_tokens(s)].iter().sum();
            let dense: f64 = prep
                .sides
                .iter()
                .map(|side| ctx.sequence_part(side, s))
                .sum();
            ctx.finish(tokens + dense, ctx.grad_norms[s]) / nq
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{proven_top_mean, top_mean, EXTRA};

    #[test]
    fn top_mean_takes_the_largest_values() {
        assert_eq!(top_mean(&mut [1.0, 5.0, 3.0, 4.0], 2), 4.5);
        assert_eq!(top_mean(&mut [1.0, -2.0], 10), -0.5);
        assert!(top_mean(&mut [], 3).is_nan());
    }

    /// Uniform in [−1, 1) from a 64-bit LCG.
    fn uniform(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    #[test]
    fn proven_top_mean_is_the_exact_top_mean_and_mostly_rescores_few() {
        // Ranking scores off by up to `bound` either way (as the bound allows): the result is
        // always the mean of the top exact scores, found by rescoring top + EXTRA columns
        // whenever the gap below the top exceeds the bound, and every column otherwise.
        let mut state = 5u64;
        let (mut few, mut all) = (0, 0);
        for trial in 0..2000 {
            let n = 1 + trial % 60;
            let top = 1 + trial % 7;
            let bound = [0.0, 1e-3, 0.05, 0.3][trial % 4];
            let exact: Vec<f64> = (0..n).map(|_| uniform(&mut state)).collect();
            let approx: Vec<f64> = exact
                .iter()
                .map(|&x| x + bound * uniform(&mut state))
                .collect();
            let mut columns: Vec<usize> = (0..n).collect();
            let (mut calls, mut scratch) = (0, Vec::new());
            let got = proven_top_mean(&approx, &mut columns, (top, bound), &mut scratch, |q| {
                calls += 1;
                exact[q]
            });
            let want = top_mean(&mut exact.clone(), top);
            assert!(
                (got - want).abs() <= 1e-12,
                "trial {trial}: {got} vs {want}"
            );
            match calls {
                c if c == top + EXTRA && n > top + EXTRA => few += 1,
                c if c == n || c == n + top + EXTRA => all += 1,
                c => panic!("trial {trial}: {c} exact scores for {n} columns"),
            }
        }
        assert!(few > 700 && all > 300, "{few} proven, {all} in full");
    }

    #[test]
    fn proven_top_mean_only_over_the_given_columns() {
        let approx = [9.0, 1.0, 2.0, 3.0, 8.0];
        let mut columns = vec![1, 2, 3];
        let mut scratch = Vec::new();
        let got = proven_top_mean(&approx, &mut columns, (2, 0.0), &mut scratch, |q| approx[q]);
        assert_eq!(got, 2.5);
        assert!(proven_top_mean(&approx, &mut [], (2, 0.0), &mut scratch, |_| 0.0).is_nan());
    }
}
