//! Noisy-label ranking (paper §6.1) against references computed the slow, obvious way: one
//! full exact score vector per clean token from `Query::scores` (itself tested against dense
//! gradients), dense feature dot products, and the CRF's own losses, marginals and gradients.

mod common;

use std::sync::Arc;

use common::{random_crf, random_features, random_labels, Rng, Shape};
use ndarray::Array2;
use seginf::query::InverseHessian;
use seginf::rank::{rank_training, Aggregate, CleanSequence, RankMethod, RankOptions};
use seginf::{
    BuildOptions, Crf, Error, Granularity, Hessian, Index, IndexBuilder, Normalization, Query,
    Storage, TestSegment,
};

struct Seq {
    doc_id: u64,
    x: Array2<f32>,
    y: Vec<u32>,
}

fn sequences(rng: &mut Rng, count: usize, d: usize, c: usize) -> Vec<Seq> {
    (0..count)
        .map(|s| {
            let n = 1 + rng.below(7);
            Seq {
                // Documents of three sentences: `document << 32 | sentence`.
                doc_id: ((s as u64 / 3) << 32) | (s as u64 % 3),
                x: random_features(rng, n, d),
                y: random_labels(rng, n, c),
            }
        })
        .collect()
}

fn index_of(crf: &Arc<Crf>, train: &[Seq]) -> Index {
    stored_index_of(crf, train, Storage::F32)
}

fn stored_index_of(crf: &Arc<Crf>, train: &[Seq], storage: Storage) -> Index {
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

fn clean_of(seqs: &[Seq]) -> Vec<CleanSequence<'_>> {
    seqs.iter()
        .map(|s| CleanSequence {
            features: s.x.view(),
            labels: &s.y,
        })
        .collect()
}

fn top_mean(mut v: Vec<f64>, top: usize) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| b.total_cmp(a));
    let top = top.min(v.len());
    v[..top].iter().sum::<f64>() / top as f64
}

fn assert_scores(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-300);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-9 * scale;
        assert!(ok, "{what}[{i}]: got {g}, want {w} (scale {scale})");
    }
}

/// A made-up inverse Hessian (a positive diagonal), to check that ranking goes through the
/// same preconditioning as queries: any `InverseHessian` must do.
#[derive(Debug)]
struct Diagonal(Vec<f64>);

impl InverseHessian for Diagonal {
    fn apply(&self, gradient: &[f64]) -> seginf::Result<Vec<f64>> {
        Ok(gradient.iter().zip(&self.0).map(|(g, s)| g * s).collect())
    }
}

/// Per training token, the mean of its `top` largest scores over the clean tokens, from one
/// exact `Query::scores` vector per clean token.
fn reference_segment_influence(
    index: &Arc<Index>,
    clean: &[Seq],
    hessian: Hessian,
    normalization: Normalization,
    top: usize,
) -> Vec<f64> {
    let mut q = Query::new(Arc::clone(index));
    q.options.hessian = hessian;
    q.options.normalization = normalization;
    reference_top_means(&mut q, clean, top, |_, _, score| Some(score))
}

/// Per training token k, the mean of the `top` largest `pair(k, clean label, score)` over the
/// clean tokens (those it gives `None` left out), `score` from one exact `Query::scores`
/// vector per clean token.
fn reference_top_means(
    q: &mut Query,
    clean: &[Seq],
    top: usize,
    pair: impl Fn(usize, u32, f64) -> Option<f64>,
) -> Vec<f64> {
    let mut per_token: Vec<Vec<f64>> = vec![Vec::new(); q.index().num_tokens()];
    for s in clean {
        for t in 0..s.y.len() {
            let seg = TestSegment {
                features: s.x.view(),
                labels: &s.y,
                first: t,
                last: t,
            };
            for (k, v) in q.scores(&seg).unwrap().into_iter().enumerate() {
                per_token[k].extend(pair(k, s.y[t], v));
            }
        }
    }
    per_token.into_iter().map(|v| top_mean(v, top)).collect()
}

fn shapes() -> [Shape; 2] {
    let base = Shape {
        c: 4,
        d: 6,
        bias: true,
        start: true,
        end: true,
        forbid: 0.0,
    };
    [
        base,
        Shape {
            c: 3,
            d: 5,
            bias: false,
            start: false,
            end: false,
            ..base
        },
    ]
}

#[test]
fn segment_influence_is_the_mean_of_the_top_opposing_influences_on_clean_tokens() {
    for (case, shape) in shapes().into_iter().enumerate() {
        let mut rng = Rng::new(100 + case as u64);
        let crf = Arc::new(random_crf(&mut rng, shape));
        let train = sequences(&mut rng, 40, shape.d, shape.c);
        let clean = sequences(&mut rng, 3, shape.d, shape.c);
        let index = Arc::new(index_of(&crf, &train));
        let diagonal = Hessian::Inverse(Arc::new(Diagonal(
            (0..crf.num_params())
                .map(|i| 0.5 + (i % 3) as f64)
                .collect(),
        )));
        for (hessian, normalization, top) in [
            (Hessian::Identity { damping: 1.0 }, Normalization::None, 10),
            (Hessian::Identity { damping: 2.5 }, Normalization::None, 3),
            (
                Hessian::Identity { damping: 1.0 },
                Normalization::GradientNorm,
                10,
            ),
            (diagonal.clone(), Normalization::None, 10),
            // More than the clean set's tokens: the mean of all of them.
            (
                Hessian::Identity { damping: 1.0 },
                Normalization::None,
                1000,
            ),
        ] {
            let what = format!("case {case}, {hessian:?}, {normalization:?}, top {top}");
            let options = RankOptions {
                method: RankMethod::SegmentInfluence,
                top,
                hessian: hessian.clone(),
                normalization,
                doc_id_shift: 32,
                ..RankOptions::default()
            };
            let got = rank_training(&index, &options, &clean_of(&clean)).unwrap();
            let want = reference_segment_influence(&index, &clean, hessian, normalization, top);
            assert_scores(&what, &got.token_scores, &want);
            assert!(got.sequence_scores.is_none());
        }
    }
}

#[test]
fn segment_rankings_are_exact_on_every_storage() {
    // A clean set of ~100 tokens, so that each training row rescores only its `top + 8` best
    // ranking scores when the ranking bound proves the rest cannot reach the top: int8 rows
    // rank through the integer GEMM (quantised columns, the coarsest bound), f16 and f32 rows
    // through f32 arithmetic; every mean must still be that of the exact scores.
    let shape = Shape {
        d: 24,
        ..shapes()[0]
    };
    let mut rng = Rng::new(41);
    let crf = Arc::new(random_crf(&mut rng, shape));
    let train = sequences(&mut rng, 40, shape.d, shape.c);
    let mut clean = sequences(&mut rng, 25, shape.d, shape.c);
    // And 60 near-copies of one clean token (features within 1e-5): their scores crowd
    // together, closer than the ranking error, so a bound that is too small picks a wrong top.
    let token = clean[0].x.row(0).to_owned();
    let label = clean[0].y[0];
    for s in 0..60 {
        let noise = random_features(&mut rng, 1, shape.d);
        let x = Array2::from_shape_fn((1, shape.d), |(_, j)| {
            token[j] * (1.0 + 1e-5 * noise[[0, j]])
        });
        clean.push(Seq {
            doc_id: 1000 + s,
            x,
            y: vec![label],
        });
    }
    // The f32/f16 rows rank through the i16 ranking copy, or (opted out) f32 arithmetic.
    let ways = [
        (Storage::F32, true),
        (Storage::F32, false),
        (Storage::F16, true),
        (Storage::F16, false),
        (Storage::Int8, true),
    ];
    for (storage, ranking_copy) in ways {
        let index = Arc::new(stored_index_of(&crf, &train, storage));
        // The identity keeps one test column per clean token (one vectorised kernel per
        // row); a preconditioned test gradient has C columns (the general pair terms).
        let identity = Hessian::Identity { damping: 1.0 };
        let diagonal = Hessian::Inverse(Arc::new(Diagonal(
            (0..crf.num_params())
                .map(|i| 0.5 + (i % 3) as f64)
                .collect(),
        )));
        for ((hessian, name), normalization, top) in [
            ((&identity, "identity"), Normalization::None, 3),
            ((&identity, "identity"), Normalization::None, 10),
            ((&identity, "identity"), Normalization::GradientNorm, 3),
            ((&diagonal, "diagonal"), Normalization::None, 10),
        ] {
            let options = RankOptions {
                method: RankMethod::SegmentInfluence,
                top,
                hessian: hessian.clone(),
                normalization,
                ranking_copy,
                ..RankOptions::default()
            };
            let got = rank_training(&index, &options, &clean_of(&clean)).unwrap();
            let want =
                reference_segment_influence(&index, &clean, hessian.clone(), normalization, top);
            let what =
                format!("{storage:?}, copy {ranking_copy}, {name}, {normalization:?}, top {top}");
            assert_scores(&what, &got.token_scores, &want);
        }
        assert_eq!(
            index.ranking_copy_bytes() > 0,
            ranking_copy && storage != Storage::Int8 && seginf::integer_kernels_available(),
            "{storage:?}"
        );
        // Nearest: the top-3 mean of the stored rows' dot products with the clean tokens of
        // another label (the index's decoded rows, as its exact scores use them).
        let options = RankOptions {
            method: RankMethod::SegmentNearest,
            top: 3,
            ranking_copy,
            ..RankOptions::default()
        };
        let got = rank_training(&index, &options, &clean_of(&clean)).unwrap();
        let mut q = Query::new(Arc::clone(&index));
        q.options.granularity = Granularity::NearestDot;
        let want = reference_top_means(&mut q, &clean, 3, |k, label, score| {
            // Nearest scores are −similarity.
            (index.token_label(k) != label).then_some(-score)
        });
        assert_scores(
            &format!("nearest, {storage:?}, copy {ranking_copy}"),
            &got.token_scores,
            &want,
        );
    }
}

#[test]
fn nearest_and_instance_influence_match_their_definitions() {
    let shape = shapes()[0];
    let mut rng = Rng::new(7);
    let crf = Arc::new(random_crf(&mut rng, shape));
    let train = sequences(&mut rng, 30, shape.d, shape.c);
    let clean = sequences(&mut rng, 4, shape.d, shape.c);
    let index = Arc::new(index_of(&crf, &train));

    // Nearest: top-3 mean of f_k·f_t over clean tokens t of another label.
    let options = RankOptions {
        method: RankMethod::SegmentNearest,
        top: 3,
        ..RankOptions::default()
    };
    let got = rank_training(&index, &options, &clean_of(&clean)).unwrap();
    let mut want = Vec::new();
    for s in &train {
        for k in 0..s.y.len() {
            let mut sims = Vec::new();
            for c in &clean {
                for t in 0..c.y.len() {
                    if c.y[t] != s.y[k] {
                        let dot: f64 = (0..shape.d)
                            .map(|j| f64::from(s.x[[k, j]]) * f64::from(c.x[[t, j]]))
                            .sum();
                        sims.push(dot);
                    }
                }
            }
            want.push(top_mean(sims, 3));
        }
    }
    assert_scores("nearest", &got.token_scores, &want);

    // Nearest with every clean token of one label: tokens of that label have no score.
    let one_label: Vec<Seq> = clean
        .iter()
        .map(|s| Seq {
            doc_id: 0,
            x: s.x.clone(),
            y: vec![0; s.y.len()],
        })
        .collect();
    let got = rank_training(&index, &options, &clean_of(&one_label)).unwrap();
    for (k, v) in got.token_scores.iter().enumerate() {
        assert_eq!(v.is_nan(), index.token_label(k) == 0, "token {k}: {v}");
    }

    // Instance influence averaged over the clean sequences.
    for normalization in [Normalization::None, Normalization::GradientNorm] {
        let options = RankOptions {
            method: RankMethod::InstanceInfluence,
            normalization,
            ..RankOptions::default()
        };
        let got = rank_training(&index, &options, &clean_of(&clean)).unwrap();
        let mut q = Query::new(Arc::clone(&index));
        q.options.granularity = Granularity::Instance;
        q.options.normalization = normalization;
        let mut want = vec![0.0; index.num_sequences()];
        for c in &clean {
            let seg = TestSegment {
                features: c.x.view(),
                labels: &c.y,
                first: 0,
                last: c.y.len() - 1,
            };
            for (w, v) in want.iter_mut().zip(q.scores(&seg).unwrap()) {
                *w += v / clean.len() as f64;
            }
        }
        let seqs = got.sequence_scores.as_ref().unwrap();
        assert_scores(&format!("instance {normalization:?}"), seqs, &want);
        for (s, &score) in seqs.iter().enumerate() {
            for k in index.sequence_tokens(s) {
                assert_eq!(got.token_scores[k], score);
            }
        }
    }
}

#[test]
fn baselines_are_the_crf_losses_entropies_and_gradient_norms() {
    let shape = shapes()[0];
    let mut rng = Rng::new(11);
    let crf = Arc::new(random_crf(&mut rng, shape));
    let train = sequences(&mut rng, 20, shape.d, shape.c);
    let index = index_of(&crf, &train);
    let rank = |method| {
        let options = RankOptions {
            method,
            doc_id_shift: 32,
            ..RankOptions::default()
        };
        rank_training(&index, &options, &[]).unwrap()
    };
    let norm = |g: Vec<f64>| g.iter().map(|v| v * v).sum::<f64>().sqrt();
    let (mut loss, mut marginal, mut entropy, mut grad) = (vec![], vec![], vec![], vec![]);
    let (mut seq_loss, mut seq_grad) = (vec![], vec![]);
    for s in &train {
        let (x, y, n) = (s.x.view(), &s.y[..], s.y.len());
        let m = crf.marginals(x).unwrap();
        for k in 0..n {
            loss.push(crf.segment_loss(x, y, k, k).unwrap());
            marginal.push(-m.unary[[k, y[k] as usize]].ln());
            entropy.push(
                -m.unary
                    .row(k)
                    .iter()
                    .filter(|p| **p > 0.0)
                    .map(|p| p * p.ln())
                    .sum::<f64>(),
            );
            let g = crf.segment_gradient(x, y, k, k).unwrap();
            grad.push(norm(g.to_dense(&crf, x).unwrap()));
        }
        seq_loss.push(-crf.log_likelihood(x, y).unwrap());
        let g = crf.segment_gradient(x, y, 0, n - 1).unwrap();
        seq_grad.push(norm(g.to_dense(&crf, x).unwrap()));
    }
    assert_scores("loss", &rank(RankMethod::TokenLoss).token_scores, &loss);
    assert_scores(
        "marginal loss",
        &rank(RankMethod::TokenMarginalLoss).token_scores,
        &marginal,
    );
    assert_scores(
        "entropy",
        &rank(RankMethod::TokenEntropy).token_scores,
        &entropy,
    );
    assert_scores(
        "gradient norm",
        &rank(RankMethod::TokenGradientNorm).token_scores,
        &grad,
    );
    let instance = rank(RankMethod::InstanceLoss);
    assert_scores(
        "instance loss",
        instance.sequence_scores.as_ref().unwrap(),
        &seq_loss,
    );
    assert_scores(
        "instance gradient norm",
        rank(RankMethod::InstanceGradientNorm)
            .sequence_scores
            .as_ref()
            .unwrap(),
        &seq_grad,
    );

    // Documents (doc_id >> 32): mean and max over tokens, or over sequences.
    let token_level = rank(RankMethod::TokenLoss);
    for (scores, ranking, per_seq) in [(&loss, &token_level, false), (&seq_loss, &instance, true)] {
        let mut docs: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        let mut at = 0;
        for (s, seq) in train.iter().enumerate() {
            let items = if per_seq {
                vec![scores[s]]
            } else {
                let v = scores[at..at + seq.y.len()].to_vec();
                at += seq.y.len();
                v
            };
            docs.entry(seq.doc_id >> 32).or_default().extend(items);
        }
        assert_eq!(ranking.documents.len(), docs.len());
        for (aggregate, pick) in [(Aggregate::Mean, 0usize), (Aggregate::Max, 1usize)] {
            let mut want: Vec<(f64, u64)> = docs
                .iter()
                .map(|(&d, v)| {
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let max = v.iter().cloned().fold(f64::MIN, f64::max);
                    ([mean, max][pick], d)
                })
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let got = ranking.documents_by(aggregate);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.doc_id, w.1, "{aggregate:?} order");
                let v = [g.mean, g.max][pick];
                assert!((v - w.0).abs() <= 1e-12 * w.0.abs().max(1.0));
            }
        }
        assert_eq!(ranking.documents, ranking.documents_by(Aggregate::Mean));
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let shape = shapes()[0];
    let mut rng = Rng::new(5);
    let crf = Arc::new(random_crf(&mut rng, shape));
    let train = sequences(&mut rng, 6, shape.d, shape.c);
    let clean = sequences(&mut rng, 2, shape.d, shape.c);
    let index = index_of(&crf, &train);
    let with = |method, top, shift, normalization| RankOptions {
        method,
        top,
        doc_id_shift: shift,
        normalization,
        ..RankOptions::default()
    };
    let none = Normalization::None;
    let influence = RankMethod::SegmentInfluence;
    let is_invalid = |r: seginf::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(is_invalid(rank_training(
        &index,
        &with(influence, 0, 0, none),
        &clean_of(&clean)
    )));
    assert!(is_invalid(rank_training(
        &index,
        &with(influence, 10, 64, none),
        &clean_of(&clean)
    )));
    for method in [
        influence,
        RankMethod::SegmentNearest,
        RankMethod::InstanceInfluence,
    ] {
        assert!(is_invalid(rank_training(
            &index,
            &with(method, 10, 0, none),
            &[]
        )));
    }
    assert!(is_invalid(rank_training(
        &index,
        &with(
            RankMethod::SegmentNearest,
            10,
            0,
            Normalization::GradientNorm
        ),
        &clean_of(&clean)
    )));
    let mut bad = clean_of(&clean);
    let wrong_label = vec![shape.c as u32; clean[0].y.len()];
    bad[0].labels = &wrong_label;
    assert!(matches!(
        rank_training(&index, &with(influence, 10, 0, none), &bad),
        Err(Error::LabelOutOfRange(_))
    ));
    let mut nan = clean[1].x.clone();
    nan[[0, 0]] = f32::NAN;
    let mut bad = clean_of(&clean);
    bad[1].features = nan.view();
    assert!(matches!(
        rank_training(
            &index,
            &with(RankMethod::InstanceInfluence, 10, 0, none),
            &bad
        ),
        Err(Error::NonFinite(_))
    ));
    let narrow = Array2::<f32>::zeros((clean[0].y.len(), shape.d - 1));
    let mut bad = clean_of(&clean);
    bad[0].features = narrow.view();
    assert!(matches!(
        rank_training(&index, &with(RankMethod::SegmentNearest, 10, 0, none), &bad),
        Err(Error::DimensionMismatch(_))
    ));
}
