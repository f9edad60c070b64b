//! The index and query against dense computations: every factored score equals
//! `−g_test·g_train / damping` built from full gradient vectors (`segment_gradient_dense`).

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use std::sync::Arc;

use common::*;
use ndarray::Array2;
use seginf::{
    BuildOptions, Crf, Granularity, Index, IndexBuilder, Normalization, Query, Storage, TestSegment,
};

/// A training or test sequence.
struct Seq {
    doc_id: u64,
    x: Array2<f32>,
    y: Vec<u32>,
}

/// Labels with finite score: Viterbi's path with some labels changed where that stays feasible.
fn feasible_labels(rng: &mut Rng, crf: &Crf, x: &Array2<f32>) -> Vec<u32> {
    let (mut y, _) = crf.viterbi(x.view()).expect("some labelling is allowed");
    for t in 0..y.len() {
        if rng.chance(0.4) {
            let old = y[t];
            y[t] = rng.below(crf.num_labels()) as u32;
            if crf.score(x.view(), &y).unwrap() == f64::NEG_INFINITY {
                y[t] = old;
            }
        }
    }
    y
}

fn corpus(rng: &mut Rng, crf: &Crf, sequences: usize, max_len: usize) -> Vec<Seq> {
    (0..sequences)
        .map(|i| {
            let n = 1 + rng.below(max_len);
            let x = random_features(rng, n, crf.feature_dim());
            let y = feasible_labels(rng, crf, &x);
            Seq {
                doc_id: 1000 + 7 * i as u64,
                x,
                y,
            }
        })
        .collect()
}

fn build(crf: &Arc<Crf>, train: &[Seq], storage: Storage) -> Index {
    let mut b = IndexBuilder::new(
        Arc::clone(crf),
        BuildOptions {
            storage,
            expected_tokens: 0,
        },
    );
    for s in train {
        b.add(s.doc_id, s.x.view(), &s.y).unwrap();
    }
    b.finish().unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `x / ‖g‖`, and 0 for a zero gradient (a token whose label the constraints force has
/// `r_k = 0`: no influence, normalised or not).
fn per_norm(x: f64, g: &[f64]) -> f64 {
    match norm(g) {
        0.0 => 0.0,
        n => x / n,
    }
}

/// |got − want| ≤ 1e-6·|want| (+1e-12 for exact zeros).
fn assert_scores(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs() + 1e-12,
            "{what}: item {i}: factored {g} vs dense {w}"
        );
    }
}

fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    for (bias, start, end) in [
        (false, false, false),
        (true, true, true),
        (true, false, true),
        (false, true, false),
    ] {
        for forbid in [0.0, 0.2] {
            v.push(Shape {
                c: 4,
                d: 6,
                bias,
                start,
                end,
                forbid,
            });
        }
    }
    v
}

#[test]
fn factored_scores_equal_dense_gradients() {
    let mut rng = Rng::new(11);
    for shape in shapes() {
        let crf = Arc::new(random_crf(&mut rng, shape));
        let train = corpus(&mut rng, &crf, 25, 7);
        let index = Arc::new(build(&crf, &train, Storage::F32));
        // Dense gradients of every training token and sequence.
        let mut token_grads = Vec::new();
        let mut seq_grads = Vec::new();
        for s in &train {
            for t in 0..s.y.len() {
                token_grads.push(crf.segment_gradient_dense(s.x.view(), &s.y, t, t).unwrap());
            }
            seq_grads.push(
                crf.segment_gradient_dense(s.x.view(), &s.y, 0, s.y.len() - 1)
                    .unwrap(),
            );
        }
        let test = corpus(&mut rng, &crf, 6, 9);
        let mut query = Query::new(Arc::clone(&index));
        for s in &test {
            let n = s.y.len();
            // Single tokens, a 2-token entity, and the whole sequence (m > C when n > 4: the
            // Σ r_t ⊗ f_t column path).
            let a = rng.below(n);
            for (first, last) in [(a, a), (a, (a + 1).min(n - 1)), (0, n - 1)] {
                let ctx = format!("{shape:?} test doc {} [{first},{last}] of {n}", s.doc_id);
                let seg = TestSegment {
                    features: s.x.view(),
                    labels: &s.y,
                    first,
                    last,
                };
                let g = crf
                    .segment_gradient_dense(s.x.view(), &s.y, first, last)
                    .unwrap();
                let damping = 0.5 + rng.uniform();

                query.options.hessian = seginf::Hessian::Identity { damping };
                // Every training token's and every training sequence's −g·g_k / damping,
                // divided by ‖g_k‖ when normalising.
                for (granularity, grads) in [
                    (Granularity::Token, &token_grads),
                    (Granularity::Instance, &seq_grads),
                ] {
                    for normalization in [Normalization::None, Normalization::GradientNorm] {
                        query.options.granularity = granularity;
                        query.options.normalization = normalization;
                        let want: Vec<f64> = grads
                            .iter()
                            .map(|gk| match normalization {
                                Normalization::None => -dot(&g, gk) / damping,
                                Normalization::GradientNorm => per_norm(-dot(&g, gk) / damping, gk),
                            })
                            .collect();
                        let what = format!("{granularity:?} {normalization:?}, {ctx}");
                        assert_scores(&what, &query.scores(&seg).unwrap(), &want);
                    }
                }
                query.options.normalization = Normalization::None;

                // Nearest neighbours: −f_k·f̄ and cosine.
                let m = (last - first + 1) as f64;
                let mean: Vec<f64> = (0..shape.d)
                    .map(|j| (first..=last).map(|t| f64::from(s.x[[t, j]])).sum::<f64>() / m)
                    .collect();
                let feats: Vec<Vec<f64>> = train
                    .iter()
                    .flat_map(|t| {
                        t.x.rows()
                            .into_iter()
                            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
                    })
                    .collect();
                query.options.granularity = Granularity::NearestDot;
                let want: Vec<f64> = feats.iter().map(|f| -dot(f, &mean)).collect();
                assert_scores(
                    &format!("nearest dot, {ctx}"),
                    &query.scores(&seg).unwrap(),
                    &want,
                );
                query.options.granularity = Granularity::NearestCosine;
                let want: Vec<f64> = feats
                    .iter()
                    .map(|f| -dot(f, &mean) / norm(f) / norm(&mean))
                    .collect();
                assert_scores(
                    &format!("nearest cosine, {ctx}"),
                    &query.scores(&seg).unwrap(),
                    &want,
                );
            }
        }
    }
}

/// Sorts (score, doc, position) as the top-k must: by score, then caller ids.
fn expected_top(index: &Index, scores: &[f64], k: usize, descending: bool) -> Vec<(f64, u64, u32)> {
    let mut all: Vec<(f64, u64, u32)> = scores
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_nan())
        .map(|(i, &s)| {
            let (doc, pos) = index.token_id(i);
            (s, doc, pos)
        })
        .collect();
    all.sort_by(|a, b| {
        let by_score = if descending {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        by_score.then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    all.truncate(k);
    all
}

#[test]
fn top_k_is_the_sorted_score_vector_with_filters() {
    let mut rng = Rng::new(12);
    let crf = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 5,
            d: 8,
            bias: true,
            start: true,
            end: true,
            forbid: 0.1,
        },
    ));
    let train = corpus(&mut rng, &crf, 300, 12);
    let test = corpus(&mut rng, &crf, 3, 8);
    // Every storage: f16 and int8 rows take other ranking kernels (int8: i16 columns).
    for storage in [Storage::F32, Storage::F16, Storage::Int8] {
        let index = Arc::new(build(&crf, &train, storage));
        top_k_matches_scores(&index, &test);
    }
}

/// d = 64: an int8 index's 6-token segments go through the AMX tiles where the CPU has them
/// (whole groups of 64 rows, the rest through the streaming kernel), and an f16 index's
/// through the tiles on its i16 copy, kept tiled (the rest through the VNNI GEMM), which must
/// rank and prove exactly as the other kernels do.
#[test]
fn top_k_is_the_sorted_score_vector_at_a_tile_width() {
    let mut rng = Rng::new(17);
    let crf = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 5,
            d: 64,
            bias: true,
            start: true,
            end: true,
            forbid: 0.1,
        },
    ));
    let train = corpus(&mut rng, &crf, 300, 12);
    // Test sequences long enough for the 6-token segments.
    let test: Vec<Seq> = (corpus(&mut rng, &crf, 12, 12).into_iter())
        .filter(|s| s.y.len() >= 6)
        .take(3)
        .collect();
    assert!(test.len() >= 2, "too few long test sequences");
    for storage in [Storage::Int8, Storage::F16] {
        let index = Arc::new(build(&crf, &train, storage));
        top_k_matches_scores(&index, &test);
    }
    // An f16 query told to keep off the copy ranks with the f16 kernels: the same hits, and
    // no copy built.
    let (with, without) = (
        Arc::new(build(&crf, &train, Storage::F16)),
        Arc::new(build(&crf, &train, Storage::F16)),
    );
    let (mut q_with, mut q_without) = (
        Query::new(Arc::clone(&with)),
        Query::new(Arc::clone(&without)),
    );
    q_without.options.ranking_copy = false;
    for s in &test {
        let seg = TestSegment {
            features: s.x.view(),
            labels: &s.y,
            first: 0,
            last: 5,
        };
        let (a, b) = (
            q_with.run(&seg, 10).unwrap(),
            q_without.run(&seg, 10).unwrap(),
        );
        let ids = |h: &[seginf::Hit]| {
            h.iter()
                .map(|h| (h.score, h.doc_id, h.position))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a.supporting), ids(&b.supporting));
        assert_eq!(ids(&a.opposing), ids(&b.opposing));
    }
    assert_eq!(without.ranking_copy_bytes(), 0);
    assert_eq!(with.ranking_copy_bytes() > 0, seginf::tiles_available());
    // The copy serves an f16 index's entities from 4 tokens on, not 3.
    for (tokens, copied) in [(3, false), (4, seginf::tiles_available())] {
        let index = Arc::new(build(&crf, &train, Storage::F16));
        let seg = TestSegment {
            features: test[0].x.view(),
            labels: &test[0].y,
            first: 0,
            last: tokens - 1,
        };
        Query::new(Arc::clone(&index)).run(&seg, 10).unwrap();
        assert_eq!(index.ranking_copy_bytes() > 0, copied, "{tokens} tokens");
    }
}

#[test]
fn top_k_is_the_sorted_score_vector_with_zero_gradients() {
    // Most transitions forbidden: many tokens' labels are forced by their neighbours, so
    // their error vectors and gradients are exactly zero (normalised scores 0, not 0/0).
    let mut rng = Rng::new(31);
    let crf = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 4,
            d: 6,
            bias: true,
            start: false,
            end: false,
            forbid: 0.6,
        },
    ));
    let train = corpus(&mut rng, &crf, 200, 10);
    let test = corpus(&mut rng, &crf, 2, 6);
    let index = Arc::new(build(&crf, &train, Storage::F32));
    let zero = index
        .token_grad_norms()
        .iter()
        .filter(|&&n| n == 0.0)
        .count();
    assert!(zero >= 20, "only {zero} zero-gradient tokens");
    top_k_matches_scores(&index, &test);
}

fn top_k_matches_scores(index: &Arc<Index>, test: &[Seq]) {
    let mut query = Query::new(Arc::clone(index));
    // One test token, and segments of up to 3, 4 and 6 (several test columns: the skip's
    // bound on ‖Σ_l x_l·c_l‖ through their Gram matrix; an f16 index's copy from 4 columns on
    // where the tiles run; the row kernels for 5–8 columns).
    let segments = test.iter().flat_map(|s| {
        [0, 2, 3, 5].map(|extra| TestSegment {
            features: s.x.view(),
            labels: &s.y,
            first: 0,
            last: extra.min(s.y.len() - 1),
        })
    });
    for seg in segments {
        let filters = [(None, vec![]), (Some(vec![1, 3]), vec![1000, 1007, 1014])];
        for (normalization, (labels, excluded)) in
            [Normalization::None, Normalization::GradientNorm]
                .into_iter()
                .flat_map(|n| filters.clone().map(|f| (n, f)))
        {
            query.options.normalization = normalization;
            query.options.labels = labels.clone();
            query.options.excluded_docs = excluded.iter().copied().collect();
            for k in [1, 7, 50, 10_000] {
                let hits = query.run(&seg, k).unwrap();
                // The ranking pass's bound proved its top k (no ties here): its kernels and
                // bounds are what is under test, not the exact fallback scan.
                let what = format!("k = {k}, {normalization:?}, {:?}", index.storage());
                assert_eq!(query.exact_fallbacks(), 0, "{what}");
                let scores = query.scores(&seg).unwrap();
                let got = |h: &[seginf::Hit]| {
                    h.iter()
                        .map(|h| (h.score, h.doc_id, h.position))
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    got(&hits.supporting),
                    expected_top(index, &scores, k, false),
                    "{what}"
                );
                assert_eq!(
                    got(&hits.opposing),
                    expected_top(index, &scores, k, true),
                    "{what}"
                );
                for h in hits.supporting.iter().chain(&hits.opposing) {
                    assert!(labels.as_ref().is_none_or(|l| l.contains(&h.label)));
                    assert!(!excluded.contains(&h.doc_id));
                }
            }
        }
    }
    // Single segments of up to 8 tokens stream the rows: no ranking copy was built — but
    // for an f16 index's segments of 5 tokens or more where the tiles take them (d a multiple
    // of 64), which rank through the copy, tiled.
    let d = index.crf().feature_dim();
    let tiled = index.storage() == Storage::F16
        && d.is_multiple_of(64)
        && seginf::tiles_available()
        && test.iter().any(|s| s.y.len() >= 6);
    let copy = if tiled { copy_bytes(index) } else { 0 };
    assert_eq!(index.ranking_copy_bytes(), copy);
}

/// The bytes of an f32/f16 index's ranking copy: 2 bytes a value and a 4-byte scale per
/// token; where the tiles take it (d a multiple of 64), kept tiled, in groups of 64 rows.
fn copy_bytes(index: &Index) -> usize {
    let (n, d) = (index.num_tokens(), index.crf().feature_dim());
    let rows = match d.is_multiple_of(64) && seginf::tiles_available() {
        true => n.next_multiple_of(64),
        false => n,
    };
    2 * d * rows + 4 * n
}

#[test]
fn a_batch_equals_its_queries_run_one_by_one() {
    // d = 10, and d = 64: there the GEMM goes through the AMX tiles where the CPU has them
    // (int8 rows, and the i16 copy's split into two planes).
    for d in [10, 64] {
        let mut rng = Rng::new(13);
        let crf = Arc::new(random_crf(
            &mut rng,
            Shape {
                c: 4,
                d,
                bias: true,
                start: false,
                end: true,
                forbid: 0.0,
            },
        ));
        let train = corpus(&mut rng, &crf, 200, 10);
        let test = corpus(&mut rng, &crf, 10, 10);
        for storage in [Storage::F32, Storage::F16, Storage::Int8] {
            let index = Arc::new(build(&crf, &train, storage));
            batch_matches_single_queries(&index, &test);
            // f32/f16 batches rank through the index's i16 copy where the CPU has the
            // kernels.
            let copy = index.ranking_copy_bytes();
            match storage {
                Storage::Int8 => assert_eq!(copy, 0),
                _ if seginf::integer_kernels_available() => {
                    assert_eq!(copy, copy_bytes(&index))
                }
                _ => {}
            }
        }
    }
}

fn batch_matches_single_queries(index: &Arc<Index>, test: &[Seq]) {
    let segments: Vec<TestSegment> = test
        .iter()
        .flat_map(|s| {
            let n = s.y.len();
            [(0, 0), (n / 2, n - 1)].map(|(first, last)| TestSegment {
                features: s.x.view(),
                labels: &s.y,
                first,
                last,
            })
        })
        .collect();
    for granularity in [
        Granularity::Token,
        Granularity::Instance,
        Granularity::NearestDot,
        Granularity::NearestCosine,
    ] {
        let mut query = Query::new(Arc::clone(index));
        query.options.granularity = granularity;
        let batch = query.run_batch(&segments, 15).unwrap();
        assert_eq!(query.exact_fallbacks(), 0, "{granularity:?}");
        for (seg, hits) in segments.iter().zip(&batch) {
            assert_eq!(&query.run(seg, 15).unwrap(), hits, "{granularity:?}");
        }
    }
    // Only single-token segments (the batched scan's one-column pair loop), with and without
    // normalisation, against the sorted exact score vectors.
    let single: Vec<TestSegment> = (segments.iter().step_by(2))
        .chain(segments.iter().step_by(2).take(3))
        .copied()
        .collect();
    let filters = [(None, vec![]), (Some(vec![1, 3]), vec![1000, 1007, 1021])];
    for (normalization, (labels, excluded)) in [Normalization::None, Normalization::GradientNorm]
        .into_iter()
        .flat_map(|n| filters.clone().map(|f| (n, f)))
    {
        let mut query = Query::new(Arc::clone(index));
        query.options.normalization = normalization;
        query.options.labels = labels.clone();
        query.options.excluded_docs = excluded.iter().copied().collect();
        let batch = query.run_batch(&single, 15).unwrap();
        assert_eq!(query.exact_fallbacks(), 0, "{:?}", index.storage());
        for (seg, hits) in single.iter().zip(&batch) {
            let scores = query.scores(seg).unwrap();
            let got = |h: &[seginf::Hit]| {
                h.iter()
                    .map(|h| (h.score, h.doc_id, h.position))
                    .collect::<Vec<_>>()
            };
            let what = format!("{normalization:?}, {labels:?}, {:?}", index.storage());
            for h in hits.supporting.iter().chain(&hits.opposing) {
                assert!(
                    labels.as_ref().is_none_or(|l| l.contains(&h.label)),
                    "{what}"
                );
                assert!(!excluded.contains(&h.doc_id), "{what}");
            }
            assert_eq!(
                got(&hits.supporting),
                expected_top(index, &scores, 15, false),
                "{what}"
            );
            assert_eq!(
                got(&hits.opposing),
                expected_top(index, &scores, 15, true),
                "{what}"
            );
        }
    }
}

#[test]
fn ties_at_the_cut_fall_back_to_the_exact_scan() {
    let mut rng = Rng::new(14);
    let crf = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 3,
            d: 5,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
    ));
    // 40 copies of the same 3-token sentence: every token has 39 exact twins.
    let base = corpus(&mut rng, &crf, 1, 1).pop().unwrap();
    let x = random_features(&mut rng, 3, 5);
    let y = feasible_labels(&mut rng, &crf, &x);
    let train: Vec<Seq> = (0..40)
        .map(|i| Seq {
            doc_id: 40 - i,
            x: x.clone(),
            y: y.clone(),
        })
        .collect();
    let index = Arc::new(build(&crf, &train, Storage::F32));
    let mut query = Query::new(Arc::clone(&index));
    let seg = TestSegment {
        features: base.x.view(),
        labels: &base.y,
        first: 0,
        last: 0,
    };
    // k + max(k, 32) candidates: for k = 1 and 5 the 40 twins straddle the candidate cut (no
    // f32 proof possible), for k = 39 all twins of the best token fit and the proof holds.
    for (k, fallbacks) in [(1, 1), (5, 1), (39, 0)] {
        let hits = query.run(&seg, k).unwrap();
        let scores = query.scores(&seg).unwrap();
        let got = |h: &[seginf::Hit]| {
            h.iter()
                .map(|h| (h.score, h.doc_id, h.position))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            got(&hits.supporting),
            expected_top(&index, &scores, k, false),
            "k = {k}"
        );
        assert_eq!(
            got(&hits.opposing),
            expected_top(&index, &scores, k, true),
            "k = {k}"
        );
        assert_eq!(query.exact_fallbacks(), fallbacks, "k = {k}");
    }
}

/// `(H + μI)⁻¹` as an explicit symmetric matrix, to test the preconditioned scoring path.
#[derive(Debug)]
struct DenseInverse(Array2<f64>);

impl seginf::query::InverseHessian for DenseInverse {
    fn apply(&self, g: &[f64]) -> seginf::Result<Vec<f64>> {
        Ok(self.0.dot(&ndarray::Array1::from(g.to_vec())).to_vec())
    }
}

#[test]
fn preconditioned_scores_equal_dense_products() {
    let mut rng = Rng::new(15);
    for shape in shapes() {
        let crf = Arc::new(random_crf(&mut rng, shape));
        let train = corpus(&mut rng, &crf, 20, 6);
        let index = Arc::new(build(&crf, &train, Storage::F32));
        let p = crf.num_params();
        // A random symmetric matrix (the scoring path does not need it to be definite).
        let a = Array2::from_shape_fn((p, p), |_| rng.uniform() - 0.5);
        let inverse = (&a + &a.t()) * 0.5;
        let mut query = Query::new(Arc::clone(&index));
        query.options.hessian = seginf::Hessian::Inverse(Arc::new(DenseInverse(inverse.clone())));
        let test = corpus(&mut rng, &crf, 3, 8);
        for s in &test {
            let n = s.y.len();
            let seg = TestSegment {
                features: s.x.view(),
                labels: &s.y,
                first: 0,
                last: n.min(2) - 1,
            };
            let g = crf
                .segment_gradient_dense(s.x.view(), &s.y, seg.first, seg.last)
                .unwrap();
            let h = inverse.dot(&ndarray::Array1::from(g)).to_vec();
            query.options.granularity = Granularity::Token;
            let want: Vec<f64> = train
                .iter()
                .flat_map(|t| (0..t.y.len()).map(move |k| (t, k)))
                .map(|(t, k)| {
                    -dot(
                        &h,
                        &crf.segment_gradient_dense(t.x.view(), &t.y, k, k).unwrap(),
                    )
                })
                .collect();
            assert_scores(
                &format!("token {shape:?}"),
                &query.scores(&seg).unwrap(),
                &want,
            );
            let hits = query.run(&seg, 5).unwrap();
            let sorted = expected_top(&index, &want, 5, false);
            assert_eq!(
                hits.supporting
                    .iter()
                    .map(|h| (h.doc_id, h.position))
                    .collect::<Vec<_>>(),
                sorted.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>()
            );
            query.options.granularity = Granularity::Instance;
            let want: Vec<f64> = train
                .iter()
                .map(|t| {
                    -dot(
                        &h,
                        &crf.segment_gradient_dense(t.x.view(), &t.y, 0, t.y.len() - 1)
                            .unwrap(),
                    )
                })
                .collect();
            assert_scores(
                &format!("instance {shape:?}"),
                &query.scores(&seg).unwrap(),
                &want,
            );
        }
    }
}
