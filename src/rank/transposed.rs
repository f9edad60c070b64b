//! The transposed query of paper §6.1: every training token against every token (or sequence)
//! of a small clean set, as blocked GEMMs over the index with a per-row reduction — never one
//! query per training token.
//!
//! Per block of training rows: `dots = F_block · Colsᵀ` (f64 dgemm of the decoded rows against
//! the clean set's test columns), then the per-pair terms of DESIGN.md §3 as two more dgemms
//! ([`PairTerms`]), so a (training token, clean token) pair costs a few flops. Everything is
//! f64: the scores equal [`crate::query::Query::scores`] up to summation order.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::query::score::{self, Ctx, PairTerms, Prepared};
use crate::query::{Granularity, QueryOptions, TestSegment};
use crate::rank::CleanSequence;

/// Training rows per block: the block's dots (rows × test columns, f64) stay a few MB.
const ROWS: usize = 512;

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

/// Calls `each(rows, dots)` for consecutive blocks of index rows, `dots` being rows × L exact
/// dot products with the prepared columns (buffers allocated once: fresh multi-MB arrays per
/// block would cost a page fault per 4 KiB each time).
fn for_each_block(
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
    let terms = PairTerms::new(&ctx, &prep);
    let mut buf = terms.buffers(ROWS);
    let mut out = vec![0.0; index.num_tokens()];
    for_each_block(index, &prep, |rows, dots| {
        terms.block(&ctx, rows.clone(), &mut buf);
        let (e, v) = (buf.e(), buf.v());
        let start = rows.start;
        out[rows]
            .par_iter_mut()
            .enumerate()
            .for_each_init(Vec::new, |scores, (i, out)| {
                let (dots_k, e_k, grad_norm) = (dots.row(i), e.row(i), ctx.grad_norm(start + i));
                scores.clear();
                scores.extend(
                    prep.sides.iter().enumerate().map(|(q, side)| {
                        ctx.finish(side.pair_raw(dots_k, e_k, v[[i, q]]), grad_norm)
                    }),
                );
                *out = top_mean(scores, top);
            });
    });
    Ok(out)
}

/// Paper §6.1, segment nearest neighbour: the mean of a training token's `top` largest dot
/// products `f_k·f_t` with the clean tokens `t` whose label differs from its own (NaN when
/// every clean token has its label).
pub(crate) fn segment_nearest(
    index: &Index,
    clean: &[CleanSequence],
    top: usize,
) -> Result<Vec<f64>> {
    need_clean(clean, "segment nearest-neighbour ranking")?;
    let options = QueryOptions {
        granularity: Granularity::NearestDot,
        ..QueryOptions::default()
    };
    let segments = clean_tokens(clean);
    let prep = score::prepare(index.crf(), &options, &segments)?;
    let clean_labels: Vec<u32> = segments.iter().map(|s| s.labels[s.first]).collect();
    let labels = index.tokens.labels.as_slice();
    let mut out = vec![0.0; index.num_tokens()];
    for_each_block(index, &prep, |rows, dots| {
        let start = rows.start;
        out[rows]
            .par_iter_mut()
            .enumerate()
            .for_each_init(Vec::new, |sims, (i, out)| {
                let label = labels[start + i];
                sims.clear();
                sims.extend(
                    (0..clean_labels.len())
                        .filter(|&t| clean_labels[t] != label)
                        .map(|t| dots[[i, t]]),
                );
                *out = top_mean(sims, top);
            });
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
    for_each_block(index, &prep, |rows, dots| {
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
    use super::top_mean;

    #[test]
    fn top_mean_takes_the_largest_values() {
        assert_eq!(top_mean(&mut [1.0, 5.0, 3.0, 4.0], 2), 4.5);
        assert_eq!(top_mean(&mut [1.0, -2.0], 10), -0.5);
        assert!(top_mean(&mut [], 3).is_nan());
    }
}
