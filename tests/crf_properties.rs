//! Invariants of the CRF core on random models (proptest): probabilities sum to one, the
//! whole-sequence conditional loss is the NLL, segment losses are non-negative and grow with the
//! segment, error vectors sum to zero, and nothing is NaN even with large scores.

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use proptest::prelude::*;

fn case() -> impl Strategy<Value = (u64, Shape, usize, f64)> {
    (
        any::<u64>(),
        1usize..=5,
        1usize..=10,
        any::<[bool; 3]>(),
        0.0..0.3f64,
        0.1..40.0f64,
    )
        .prop_map(|(seed, c, n, [bias, start, end], forbid, scale)| {
            (
                seed,
                Shape {
                    c,
                    d: 4,
                    bias,
                    start,
                    end,
                    forbid,
                },
                n,
                scale,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold((seed, shape, n, scale) in case()) {
        let mut rng = common::Rng::new(seed);
        let crf = random_crf(&mut rng, shape);
        let x = random_features(&mut rng, n, shape.d).mapv(|v| v * scale as f32);
        let Ok(m) = crf.marginals(x.view()) else {
            // No labelling is allowed: then log Z is -inf and Viterbi agrees.
            prop_assert_eq!(crf.log_partition(x.view()).unwrap(), f64::NEG_INFINITY);
            prop_assert!(crf.viterbi(x.view()).is_err());
            return Ok(());
        };
        for t in 0..n {
            prop_assert!((m.unary.row(t).sum() - 1.0).abs() < 1e-9, "row {} sums to {}", t, m.unary.row(t).sum());
            if t > 0 {
                let pair = m.pairwise.index_axis(ndarray::Axis(0), t - 1);
                for j in 0..shape.c {
                    prop_assert!((pair.column(j).sum() - m.unary[[t, j]]).abs() < 1e-9);
                    prop_assert!((pair.row(j).sum() - m.unary[[t - 1, j]]).abs() < 1e-9);
                }
            }
        }
        let (y, _) = crf.viterbi(x.view()).unwrap();
        let ll = crf.log_likelihood(x.view(), &y).unwrap();
        prop_assert!(ll <= 1e-12 && ll.is_finite());
        let whole = crf.segment_loss(x.view(), &y, 0, n - 1).unwrap();
        prop_assert!((whole + ll).abs() <= 1e-9 * ll.abs().max(1.0), "CL(0,n-1) = {} vs NLL {}", whole, -ll);
        for a in 0..n {
            for b in a..n {
                let cl = crf.segment_loss(x.view(), &y, a, b).unwrap();
                prop_assert!(cl >= 0.0 && cl.is_finite(), "CL({},{}) = {}", a, b, cl);
                // p(y_S' | rest) = p(y_S | rest) · p(y_{S'∖S} | y outside S'), so CL grows with S.
                if b + 1 < n {
                    let wider = crf.segment_loss(x.view(), &y, a, b + 1).unwrap();
                    prop_assert!(wider >= cl - 1e-9 * cl.max(1.0), "CL({},{}) = {} > CL({},{}) = {}", a, b, cl, a, b + 1, wider);
                }
                let g = crf.segment_gradient(x.view(), &y, a, b).unwrap();
                for row in g.error_vectors.rows() {
                    prop_assert!(row.sum().abs() < 1e-9 && row.iter().all(|v| v.is_finite()));
                }
            }
        }
        // Any labelling: log p is ≤ 0, and -inf exactly when it uses a forbidden entry.
        let other = random_labels(&mut rng, n, shape.c);
        let lp = crf.log_likelihood(x.view(), &other).unwrap();
        prop_assert!(lp <= 1e-12 && !lp.is_nan());
        prop_assert_eq!(lp == f64::NEG_INFINITY, crf.score(x.view(), &other).unwrap() == f64::NEG_INFINITY);
    }
}

/// Input validation finds every non-finite feature, wherever it lies in the sequence (before,
/// on and past the boundaries of the vectorised pass's 1024-value chunks, in the last value) and
/// however the features are laid out (a contiguous array, a strided view), and names its
/// position; finite features pass.
#[test]
fn every_non_finite_feature_is_found_and_named() {
    let (n, d) = (5, 700);
    let mut rng = common::Rng::new(31);
    let shape = Shape {
        c: 3,
        d,
        bias: true,
        start: false,
        end: false,
        forbid: 0.0,
    };
    let crf = random_crf(&mut rng, shape);
    let x = random_features(&mut rng, n, d);
    // Every other column of a wider array: the same values, not contiguous.
    let mut wide = ndarray::Array2::<f32>::zeros((n, 2 * d));
    wide.slice_mut(ndarray::s![.., ..;2]).assign(&x);
    assert!(crf.check_sequence(x.view(), None).is_ok());
    assert!(crf
        .check_sequence(wide.slice(ndarray::s![.., ..;2]), None)
        .is_ok());
    for flat in [0, 1023, 1024, 2047, 2048, 1500, n * d - 1] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (t, j) = (flat / d, flat % d);
            let want = format!("features[{t}][{j}]");
            let mut y = x.clone();
            y[[t, j]] = bad;
            let mut w = wide.clone();
            w[[t, 2 * j]] = bad;
            for (layout, view) in [
                ("contiguous", y.view()),
                ("strided", w.slice(ndarray::s![.., ..;2])),
            ] {
                match crf.check_sequence(view, None) {
                    Err(seginf::Error::NonFinite(m)) => {
                        assert!(m.contains(&want), "{layout}: {m} for {want}")
                    }
                    other => panic!("{layout}, {bad} at {want}: {other:?}"),
                }
            }
        }
    }
}
