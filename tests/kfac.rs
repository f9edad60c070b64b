//! K-FAC and EK-FAC against their definitions built densely on small problems.

// Index loops mirror the formulas.
#![allow(clippy::needless_range_loop)]

mod common;

use std::sync::Arc;

use common::*;
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use seginf::hessian::{objective_hvp, Factored, KroneckerInverse};
use seginf::query::InverseHessian;
use seginf::train::TrainSeq;
use seginf::Crf;

fn data(rng: &mut Rng, crf: &Crf, count: usize) -> Vec<TrainSeq> {
    (0..count)
        .map(|_| {
            let n = 1 + rng.below(4);
            let x = random_features(rng, n, crf.feature_dim());
            let y = crf.viterbi(x.view()).unwrap().0;
            TrainSeq::labelled(x, y)
        })
        .collect()
}

/// Where entry (j, i) of the emission block [W | b] (C × d̃) sits in the parameter vector.
fn emission_index(crf: &Crf, j: usize, i: usize) -> usize {
    let d = crf.feature_dim();
    let l = crf.layout();
    if i < d {
        l.weights + j * d + i
    } else {
        l.bias.unwrap() + j
    }
}

/// The factors by their definition: A = (1/|D|) Σ f̃ f̃ᵀ, B = (1/N) Σ (diag q − q qᵀ).
fn factors(crf: &Crf, data: &[TrainSeq]) -> (DMatrix<f64>, DMatrix<f64>) {
    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let dt = d + usize::from(crf.bias().is_some());
    let mut a = DMatrix::<f64>::zeros(dt, dt);
    let mut b = DMatrix::<f64>::zeros(c, c);
    let mut tokens = 0.0;
    for s in data {
        let m = crf.marginals(s.features.view()).unwrap();
        for t in 0..s.labels.len() {
            let f: Vec<f64> = (0..dt)
                .map(|i| {
                    if i < d {
                        f64::from(s.features[[t, i]])
                    } else {
                        1.0
                    }
                })
                .collect();
            for i in 0..dt {
                for k in 0..dt {
                    a[(i, k)] += f[i] * f[k];
                }
            }
            for j in 0..c {
                b[(j, j)] += m.unary[[t, j]];
                for k in 0..c {
                    b[(j, k)] -= m.unary[[t, j]] * m.unary[[t, k]];
                }
            }
            tokens += 1.0;
        }
    }
    (a / data.len() as f64, b / tokens)
}

/// The block-diagonal operator: an emission-block matrix (on [W | b]) shifted by
/// `emission_shift` and the exact transition/start/end block shifted by `shift`, inverted
/// densely and applied to `g`.
fn dense_apply(
    crf: &Crf,
    data: &[TrainSeq],
    emission: &DMatrix<f64>,
    emission_shift: f64,
    shift: f64,
    g: &[f64],
) -> Vec<f64> {
    let p = crf.num_params();
    let (c, d) = (crf.num_labels(), crf.feature_dim());
    let dt = d + usize::from(crf.bias().is_some());
    let l = crf.layout();
    let mut m = DMatrix::<f64>::zeros(p, p);
    for j in 0..c {
        for i in 0..dt {
            for k in 0..c {
                for h in 0..dt {
                    m[(emission_index(crf, j, i), emission_index(crf, k, h))] =
                        emission[(j * dt + i, k * dt + h)];
                }
            }
        }
    }
    let params = crf.params();
    let mut rest: Vec<usize> = (l.transitions..l.transitions + c * c).collect();
    rest.extend(l.start.map(|o| o..o + c).into_iter().flatten());
    rest.extend(l.end.map(|o| o..o + c).into_iter().flatten());
    rest.retain(|&i| params[i].is_finite());
    for &q in &rest {
        let mut e = vec![0.0; p];
        e[q] = 1.0;
        let hv = objective_hvp(crf, data, 0.0, 0.0, &e).unwrap();
        for &r in &rest {
            m[(r, q)] = hv[r];
        }
    }
    for j in 0..c {
        for i in 0..dt {
            m[(emission_index(crf, j, i), emission_index(crf, j, i))] += emission_shift - shift;
        }
    }
    let keep: Vec<usize> = (0..p).filter(|&i| params[i].is_finite()).collect();
    let sub = DMatrix::from_fn(keep.len(), keep.len(), |r, q| {
        m[(keep[r], keep[q])] + if r == q { shift } else { 0.0 }
    });
    let rhs = DVector::from_iterator(keep.len(), keep.iter().map(|&i| g[i]));
    let x = sub.lu().solve(&rhs).unwrap();
    let mut out = vec![0.0; p];
    for (r, &i) in keep.iter().enumerate() {
        out[i] = x[r];
    }
    out
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * scale.max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn kfac_and_ekfac_match_their_dense_definitions() {
    let mut rng = Rng::new(31);
    for shape in [
        Shape {
            c: 3,
            d: 3,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
        Shape {
            c: 3,
            d: 2,
            bias: false,
            start: false,
            end: true,
            forbid: 0.2,
        },
        Shape {
            c: 2,
            d: 4,
            bias: true,
            start: false,
            end: false,
            forbid: 0.0,
        },
    ] {
        let crf = Arc::new(random_crf(&mut rng, shape));
        let train = data(&mut rng, &crf, 8);
        let (l2, damping): (f64, f64) = (0.05, 0.01);
        let (a, b) = factors(&crf, &train);
        let (c, dt) = (b.nrows(), a.nrows());
        let g: Vec<f64> = crf
            .params()
            .iter()
            .map(|p| {
                if p.is_finite() {
                    rng.uniform() - 0.5
                } else {
                    0.0
                }
            })
            .collect();

        // K-FAC with factored damping (Martens & Grosse §6.3): the emission block is
        // (B + √s/π I) ⊗ (A + π√s I), π² = (tr A / d̃) / (tr B / C), entry ((j,i),(k,h)).
        let s = l2 + damping;
        let pi = ((a.trace() / dt as f64) / (b.trace() / c as f64)).sqrt();
        let pi = if pi.is_finite() && pi > 0.0 { pi } else { 1.0 };
        let (a_s, b_s) = (
            &a + DMatrix::identity(dt, dt) * (pi * s.sqrt()),
            &b + DMatrix::identity(c, c) * (s.sqrt() / pi),
        );
        let kron = DMatrix::from_fn(c * dt, c * dt, |r, q| {
            b_s[(r / dt, q / dt)] * a_s[(r % dt, q % dt)]
        });
        let kfac =
            KroneckerInverse::fit(Arc::clone(&crf), &train, l2, damping, Factored::Kfac).unwrap();
        assert_close(
            &format!("K-FAC {shape:?}"),
            &kfac.apply(&g).unwrap(),
            &dense_apply(&crf, &train, &kron, 0.0, s, &g),
        );

        // EK-FAC: K-FAC's eigenbasis, eigenvalues = the true curvature q_jiᵀ H q_ji.
        let (ea, eb) = (
            SymmetricEigen::new(a.clone()),
            SymmetricEigen::new(b.clone()),
        );
        let mut emission = DMatrix::<f64>::zeros(c * dt, c * dt);
        for j in 0..c {
            for i in 0..dt {
                let basis = DMatrix::from_fn(c, dt, |r, q| {
                    eb.eigenvectors[(r, j)] * ea.eigenvectors[(q, i)]
                });
                let mut v = vec![0.0; crf.num_params()];
                for r in 0..c {
                    for q in 0..dt {
                        v[emission_index(&crf, r, q)] = basis[(r, q)];
                    }
                }
                let hv = objective_hvp(&crf, &train, 0.0, 0.0, &v).unwrap();
                let curvature: f64 = v.iter().zip(&hv).map(|(x, y)| x * y).sum();
                // The basis vector in (j, i) row-major order, as the emission block is indexed.
                let flat = DVector::from_fn(c * dt, |r, _| basis[(r / dt, r % dt)]);
                emission += &flat * flat.transpose() * curvature;
            }
        }
        let ekfac =
            KroneckerInverse::fit(Arc::clone(&crf), &train, l2, damping, Factored::Ekfac).unwrap();
        assert_close(
            &format!("EK-FAC {shape:?}"),
            &ekfac.apply(&g).unwrap(),
            &dense_apply(&crf, &train, &emission, s, s, &g),
        );
    }
}

#[test]
fn saved_factors_reopen_identically_and_refuse_other_models() {
    let mut rng = Rng::new(32);
    let shape = Shape {
        c: 3,
        d: 4,
        bias: true,
        start: true,
        end: true,
        forbid: 0.1,
    };
    let crf = Arc::new(random_crf(&mut rng, shape));
    let train = data(&mut rng, &crf, 10);
    let dir = std::env::temp_dir().join(format!("seginf-kfac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for mode in [Factored::Kfac, Factored::Ekfac] {
        let fitted = KroneckerInverse::fit(Arc::clone(&crf), &train, 0.01, 0.001, mode).unwrap();
        let path = dir.join(format!("{mode:?}.safetensors"));
        fitted.save(&path).unwrap();
        let opened = KroneckerInverse::open(&path, Arc::clone(&crf)).unwrap();
        assert_eq!(opened.mode(), mode);
        let g: Vec<f64> = crf
            .params()
            .iter()
            .map(|p| if p.is_finite() { rng.uniform() } else { 0.0 })
            .collect();
        let (a, b) = (fitted.apply(&g).unwrap(), opened.apply(&g).unwrap());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{mode:?}: reopened factors differ"
        );
        let other = Arc::new(random_crf(&mut rng, shape));
        assert!(matches!(
            KroneckerInverse::open(&path, other),
            Err(seginf::Error::ModelMismatch(_))
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 9;
        bytes[at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            KroneckerInverse::open(&path, Arc::clone(&crf)),
            Err(seginf::Error::Format(_))
        ));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kfac_queries_keep_the_factored_form_and_equal_dense_preconditioning() {
    use seginf::{BuildOptions, Granularity, Hessian, IndexBuilder, Query, Storage, TestSegment};
    let mut rng = Rng::new(33);
    for shape in [
        Shape {
            c: 4,
            d: 5,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
        Shape {
            c: 3,
            d: 6,
            bias: false,
            start: false,
            end: true,
            forbid: 0.2,
        },
    ] {
        let crf = Arc::new(random_crf(&mut rng, shape));
        let train = data(&mut rng, &crf, 30);
        let kfac = Arc::new(
            KroneckerInverse::fit(Arc::clone(&crf), &train, 0.01, 0.001, Factored::Kfac).unwrap(),
        );
        let mut b = IndexBuilder::new(
            Arc::clone(&crf),
            BuildOptions {
                storage: Storage::F32,
                expected_tokens: 0,
            },
        );
        for (i, s) in train.iter().enumerate() {
            b.add(i as u64, s.features.view(), &s.labels).unwrap();
        }
        let index = Arc::new(b.finish().unwrap());
        let mut query = Query::new(Arc::clone(&index));
        query.options.hessian = Hessian::Inverse(kfac.clone());
        let test = &train[0];
        let n = test.labels.len();
        for (first, last) in [(0, 0), (0, n - 1)] {
            let seg = TestSegment {
                features: test.features.view(),
                labels: &test.labels,
                first,
                last,
            };
            let g = crf
                .segment_gradient(seg.features, seg.labels, first, last)
                .unwrap();
            // The factored path is taken when the segment has at most C tokens (the dense form
            // has C columns otherwise); both must equal the dense product.
            let m = last - first + 1;
            assert_eq!(
                kfac.apply_factored(&g, seg.features).is_some(),
                m <= crf.num_labels()
            );
            let h = kfac
                .apply(&g.to_dense(&crf, seg.features).unwrap())
                .unwrap();
            for granularity in [Granularity::Token, Granularity::Instance] {
                query.options.granularity = granularity;
                let got = query.scores(&seg).unwrap();
                let want: Vec<f64> = match granularity {
                    Granularity::Token => train
                        .iter()
                        .flat_map(|s| (0..s.labels.len()).map(move |k| (s, k)))
                        .map(|(s, k)| {
                            let gk = crf
                                .segment_gradient_dense(s.features.view(), &s.labels, k, k)
                                .unwrap();
                            -h.iter().zip(&gk).map(|(a, b)| a * b).sum::<f64>()
                        })
                        .collect(),
                    _ => train
                        .iter()
                        .map(|s| {
                            let gs = crf
                                .segment_gradient_dense(
                                    s.features.view(),
                                    &s.labels,
                                    0,
                                    s.labels.len() - 1,
                                )
                                .unwrap();
                            -h.iter().zip(&gs).map(|(a, b)| a * b).sum::<f64>()
                        })
                        .collect(),
                };
                assert_close(
                    &format!("{granularity:?} {shape:?} [{first},{last}]"),
                    &got,
                    &want,
                );
            }
        }
    }
}
