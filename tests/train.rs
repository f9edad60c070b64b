//! Training (src/train/): the partial-label NLL against brute-force enumeration and finite
//! differences, the mean objective against an independent computation, and L-BFGS reaching
//! its gradient tolerance on a synthetic problem (warm start, cancellation, iteration cap).

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use common::oracle::{self, lse};
use common::*;
use ndarray::ArrayView2;
use seginf::train::{objective, sequence_nll, train, TrainOptions, TrainSeq};
use seginf::{Crf, Error};

/// `−log Σ_{y agreeing with the observed labels} p(y|x)` over all C^n labellings (Eq. 2).
fn brute_force_nll(crf: &Crf, seq: &TrainSeq) -> f64 {
    let n = seq.labels.len();
    let paths = oracle::labellings(crf, seq.features.view());
    let agrees = |y: &[u32]| (0..n).all(|t| !seq.observed[t] || y[t] == seq.labels[t]);
    lse(paths.iter().map(|p| p.1)) - lse(paths.iter().filter(|p| agrees(&p.0)).map(|p| p.1))
}

/// Central differences of `sequence_nll` in every finite parameter.
fn finite_difference_gradient(crf: &Crf, seq: &TrainSeq) -> Vec<f64> {
    let h = 1e-5;
    let theta = crf.params();
    let nll_at = |i: usize, delta: f64| {
        let mut p = theta.clone();
        p[i] += delta;
        sequence_nll(&crf.with_params(&p).unwrap(), seq).unwrap().0
    };
    (0..theta.len())
        .map(|i| match theta[i].is_finite() {
            true => (nll_at(i, h) - nll_at(i, -h)) / (2.0 * h),
            false => 0.0,
        })
        .collect()
}

fn possible(crf: &Crf, x: ArrayView2<f32>, y: &[u32]) -> bool {
    crf.score(x, y).unwrap() > f64::NEG_INFINITY
}

#[test]
fn fully_observed_nll_is_the_sequence_loss() {
    let mut rng = Rng::new(11);
    let mut checked = 0;
    for case in 0..200 {
        let shape = Shape {
            c: 1 + rng.below(5),
            d: 1 + rng.below(6),
            bias: rng.chance(0.5),
            start: rng.chance(0.5),
            end: rng.chance(0.5),
            forbid: if case % 2 == 0 { 0.0 } else { 0.2 },
        };
        let crf = random_crf(&mut rng, shape);
        let n = 1 + rng.below(8);
        let x = random_features(&mut rng, n, shape.d);
        let y = random_labels(&mut rng, n, shape.c);
        let seq = TrainSeq::labelled(x.clone(), y.clone());
        if crf.log_partition(x.view()).unwrap() == f64::NEG_INFINITY {
            continue;
        }
        if !possible(&crf, x.view(), &y) {
            assert!(
                matches!(sequence_nll(&crf, &seq), Err(Error::ImpossibleLabels(_))),
                "case {case}: impossible labels must be refused"
            );
            continue;
        }
        let (nll, grad) = sequence_nll(&crf, &seq).unwrap();
        let want = -crf.log_likelihood(x.view(), &y).unwrap();
        assert!(
            close(nll, want, 1e-10),
            "case {case}: nll {nll}, want {want}"
        );
        let want_grad = crf.segment_gradient_dense(x.view(), &y, 0, n - 1).unwrap();
        assert_close_slices(&format!("case {case} gradient"), &grad, &want_grad, 1e-10);
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cases had possible labels");
}

#[test]
fn partial_label_nll_matches_enumeration_and_finite_differences() {
    let mut rng = Rng::new(12);
    let mut checked = 0;
    for case in 0..300 {
        let shape = Shape {
            c: 1 + rng.below(3),
            d: 1 + rng.below(4),
            bias: rng.chance(0.5),
            start: rng.chance(0.5),
            end: rng.chance(0.5),
            forbid: if case % 2 == 0 { 0.0 } else { 0.25 },
        };
        let crf = random_crf(&mut rng, shape);
        let n = 1 + rng.below(5);
        let x = random_features(&mut rng, n, shape.d);
        let labels = random_labels(&mut rng, n, shape.c);
        // Unobserved labels are ignored, even out of range.
        let observed: Vec<bool> = (0..n).map(|_| rng.chance(0.5)).collect();
        let labels = labels
            .iter()
            .zip(&observed)
            .map(|(&y, &o)| if o { y } else { 99 })
            .collect();
        let seq = TrainSeq {
            features: x,
            labels,
            observed,
        };
        let want = brute_force_nll(&crf, &seq);
        if want.is_nan() || want.is_infinite() {
            // No labelling at all (NaN: -inf − -inf), or none agreeing with the observed ones.
            assert!(
                matches!(sequence_nll(&crf, &seq), Err(Error::ImpossibleLabels(_))),
                "case {case}: want an ImpossibleLabels error, brute force gives {want}"
            );
            continue;
        }
        let (nll, grad) = sequence_nll(&crf, &seq).unwrap();
        assert!(
            close(nll, want, 1e-10),
            "case {case} ({seq:?}): nll {nll}, brute force {want}"
        );
        let fd = finite_difference_gradient(&crf, &seq);
        assert_close_slices(&format!("case {case} gradient vs FD"), &grad, &fd, 1e-6);
        for (i, theta) in crf.params().iter().enumerate() {
            if *theta == f64::NEG_INFINITY {
                assert_eq!(grad[i], 0.0, "case {case}: gradient at a -inf entry {i}");
            }
        }
        checked += 1;
    }
    assert!(checked > 150, "only {checked} cases were possible");
}

#[test]
fn unobserved_everywhere_is_zero_and_bad_inputs_are_refused() {
    let mut rng = Rng::new(13);
    let shape = Shape {
        c: 3,
        d: 4,
        bias: true,
        start: true,
        end: true,
        forbid: 0.0,
    };
    let crf = random_crf(&mut rng, shape);
    let x = random_features(&mut rng, 5, 4);
    let none = TrainSeq {
        features: x.clone(),
        labels: vec![0; 5],
        observed: vec![false; 5],
    };
    let (nll, grad) = sequence_nll(&crf, &none).unwrap();
    assert!(nll.abs() < 1e-12, "{nll}");
    assert!(grad.iter().all(|g| g.abs() < 1e-12));

    let short = TrainSeq {
        observed: vec![true; 4],
        ..none.clone()
    };
    assert!(matches!(
        sequence_nll(&crf, &short),
        Err(Error::DimensionMismatch(_))
    ));
    let out_of_range = TrainSeq::labelled(x.clone(), vec![0, 1, 3, 0, 0]);
    assert!(matches!(
        sequence_nll(&crf, &out_of_range),
        Err(Error::LabelOutOfRange(_))
    ));
    let wrong_d = TrainSeq::labelled(random_features(&mut rng, 5, 3), vec![0; 5]);
    assert!(matches!(
        sequence_nll(&crf, &wrong_d),
        Err(Error::DimensionMismatch(_))
    ));
    assert!(matches!(
        objective(&crf, &[], 0.1),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        objective(&crf, std::slice::from_ref(&none), -1.0),
        Err(Error::InvalidArgument(_))
    ));
    // The failing sequence is named.
    match objective(&crf, &[none.clone(), none, out_of_range], 0.1) {
        Err(Error::LabelOutOfRange(m)) => assert!(m.contains("sequence 2"), "{m}"),
        other => panic!("want LabelOutOfRange, got {other:?}"),
    }
}

#[test]
fn objective_matches_an_independent_computation() {
    let mut rng = Rng::new(14);
    for case in 0..20 {
        let shape = Shape {
            c: 2 + rng.below(4),
            d: 1 + rng.below(6),
            bias: rng.chance(0.5),
            start: rng.chance(0.5),
            end: rng.chance(0.5),
            forbid: if case % 2 == 0 { 0.0 } else { 0.15 },
        };
        let crf = random_crf(&mut rng, shape);
        let mut data = Vec::new();
        while data.len() < 1 + rng.below(100) {
            let n = 1 + rng.below(9);
            let x = random_features(&mut rng, n, shape.d);
            if crf.log_partition(x.view()).unwrap() == f64::NEG_INFINITY {
                continue;
            }
            let y = random_labels(&mut rng, n, shape.c);
            if possible(&crf, x.view(), &y) {
                data.push(TrainSeq::labelled(x, y));
            }
        }
        let l2 = 0.05 * rng.uniform();
        let theta = crf.params();
        let finite_sq: f64 = theta.iter().filter(|v| v.is_finite()).map(|v| v * v).sum();
        let mut want = 0.0;
        let mut want_grad = vec![0.0; theta.len()];
        for seq in &data {
            let (x, y) = (seq.features.view(), &seq.labels);
            want -= crf.log_likelihood(x, y).unwrap();
            let g = crf.segment_gradient_dense(x, y, 0, y.len() - 1).unwrap();
            want_grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        }
        let k = data.len() as f64;
        want = want / k + 0.5 * l2 * finite_sq;
        for (g, t) in want_grad.iter_mut().zip(&theta) {
            *g = if t.is_finite() { *g / k + l2 * t } else { 0.0 };
        }
        let (value, grad) = objective(&crf, &data, l2).unwrap();
        assert!(close(value, want, 1e-12), "case {case}: {value} vs {want}");
        assert_close_slices(&format!("case {case} gradient"), &grad, &want_grad, 1e-12);
        // Deterministic: the parallel sum is the same every time.
        assert_eq!(objective(&crf, &data, l2).unwrap(), (value, grad));
    }
}

/// A synthetic tagging problem: labels are a random teacher CRF's Viterbi paths with 10% noise
/// (kept within the teacher's constraints) and 10% of tokens unlabelled. Returns the data and
/// a student CRF with the teacher's `-inf` entries and zeros elsewhere.
fn synthetic_problem(seed: u64, sequences: usize) -> (Vec<TrainSeq>, Crf) {
    let mut rng = Rng::new(seed);
    let (c, d) = (4, 8);
    let shape = Shape {
        c,
        d,
        bias: true,
        start: true,
        end: true,
        forbid: 0.0,
    };
    let teacher = random_crf(&mut rng, shape);
    // Forbid two transitions and one start label, as a tag scheme would.
    let mut theta = teacher.params();
    let l = teacher.layout();
    theta[l.transitions + 1] = f64::NEG_INFINITY; // 0 → 1
    theta[l.transitions + 3 * c + 2] = f64::NEG_INFINITY; // 3 → 2
    theta[l.start.unwrap() + 1] = f64::NEG_INFINITY;
    let teacher = teacher.with_params(&theta).unwrap();

    let mut data = Vec::new();
    for _ in 0..sequences {
        let n = 2 + rng.below(11);
        let x = random_features(&mut rng, n, d);
        let (mut y, _) = teacher.viterbi(x.view()).unwrap();
        for t in 0..n {
            if rng.chance(0.1) {
                let old = y[t];
                y[t] = rng.below(c) as u32;
                if !possible(&teacher, x.view(), &y) {
                    y[t] = old;
                }
            }
        }
        let observed = (0..n).map(|_| !rng.chance(0.1)).collect();
        data.push(TrainSeq {
            features: x,
            labels: y,
            observed,
        });
    }
    let student: Vec<f64> = theta
        .iter()
        .map(|v| if v.is_finite() { 0.0 } else { *v })
        .collect();
    (data, teacher.with_params(&student).unwrap())
}

fn options() -> TrainOptions {
    TrainOptions {
        l2: 1e-2,
        ..TrainOptions::default()
    }
}

#[test]
fn training_reaches_the_gradient_tolerance() {
    let (data, init) = synthetic_problem(21, 200);
    let mut trace = Vec::new();
    let mut record = |k: usize, f: f64, g: f64| {
        trace.push((k, f, g));
        true
    };
    let out = train(&init, &data, &options(), Some(&mut record)).unwrap();
    eprintln!(
        "trained: {} iterations, objective {:.12}, max |grad| {:.3e}",
        out.iterations, out.objective, out.max_abs_gradient
    );
    assert!(out.converged);
    assert!(out.max_abs_gradient <= 1e-6, "{}", out.max_abs_gradient);
    assert_eq!(trace.len(), out.iterations);
    assert!(trace.iter().enumerate().all(|(i, t)| t.0 == i + 1));
    // The line search never accepts a rise beyond the objective's rounding band (1e-12, relative).
    assert!(trace
        .windows(2)
        .all(|w| w[1].1 <= w[0].1 + 1e-12 * (1.0 + w[0].1)));

    // The reported numbers are the objective at the returned CRF.
    let (value, grad) = objective(&out.crf, &data, options().l2).unwrap();
    assert!(
        close(out.objective, value, 1e-12),
        "{} vs {value}",
        out.objective
    );
    let max_abs = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(max_abs <= 1e-6, "{max_abs}");
    assert!(close(out.max_abs_gradient, max_abs, 1e-12));

    // Constraints are untouched; every other parameter moved off its zero start.
    for (a, b) in init.params().iter().zip(out.crf.params()) {
        if *a == f64::NEG_INFINITY {
            assert_eq!(b, f64::NEG_INFINITY);
        } else {
            assert!(b.is_finite() && b != 0.0);
        }
    }
    assert!(out.objective < objective(&init, &data, options().l2).unwrap().0);

    // Warm start from the solution: already converged.
    let again = train(&out.crf, &data, &options(), None).unwrap();
    assert!(again.converged);
    assert!(again.iterations <= 2, "{} iterations", again.iterations);
    assert!(close(again.objective, out.objective, 1e-12));
}

#[test]
fn trained_model_fits_the_teacher_labels() {
    // The student's Viterbi agrees with most observed (teacher + 10% noise) labels: a check
    // that the fit means something, not only that the gradient is small.
    let (data, init) = synthetic_problem(22, 200);
    let out = train(&init, &data, &options(), None).unwrap();
    assert!(out.converged);
    let (mut agree, mut total) = (0, 0);
    for seq in &data {
        let (pred, _) = out.crf.viterbi(seq.features.view()).unwrap();
        for t in (0..pred.len()).filter(|&t| seq.observed[t]) {
            agree += usize::from(pred[t] == seq.labels[t]);
            total += 1;
        }
    }
    let accuracy = agree as f64 / total as f64;
    eprintln!("training accuracy {accuracy:.3}");
    assert!(accuracy > 0.8, "training accuracy {accuracy}");
}

#[test]
fn cancel_iteration_cap_and_bad_options() {
    let (data, init) = synthetic_problem(23, 50);
    let mut calls = Vec::new();
    let mut cancel_at_3 = |k: usize, _f: f64, _g: f64| {
        calls.push(k);
        k < 3
    };
    let err = train(&init, &data, &options(), Some(&mut cancel_at_3));
    assert!(matches!(err, Err(Error::Cancelled(_))), "{err:?}");
    assert_eq!(calls, vec![1, 2, 3]);

    let capped = TrainOptions {
        max_iterations: 5,
        ..options()
    };
    let out = train(&init, &data, &capped, None).unwrap();
    assert!(!out.converged);
    assert_eq!(out.iterations, 5);
    assert!(out.max_abs_gradient > 1e-6);

    let zero_steps = TrainOptions {
        max_iterations: 0,
        ..options()
    };
    let out = train(&init, &data, &zero_steps, None).unwrap();
    assert_eq!(out.iterations, 0);
    assert_eq!(out.crf, init);

    for bad in [
        TrainOptions {
            l2: -1.0,
            ..options()
        },
        TrainOptions {
            l2: f64::NAN,
            ..options()
        },
        TrainOptions {
            tolerance: 0.0,
            ..options()
        },
        TrainOptions {
            tolerance: f64::NAN,
            ..options()
        },
        TrainOptions {
            memory: 0,
            ..options()
        },
    ] {
        assert!(
            matches!(
                train(&init, &data, &bad, None),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        train(&init, &[], &options(), None),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn removing_a_segment_is_training_with_it_unlabelled() {
    // Paper Eq. 5: the model retrained without segment [a, b] of sequence k minimises the same
    // objective with those labels unobserved. Each optimum is the better fit to its own data,
    // and the removed sequence's loss is its full loss minus the segment's CL (Eq. 4).
    let (mut data, init) = synthetic_problem(24, 60);
    let k = 7;
    let n = data[k].labels.len();
    data[k].observed = vec![true; n];
    let (a, b) = (n / 2 - 1, n / 2);
    let mut removed = data.clone();
    for t in a..=b {
        removed[k].observed[t] = false;
    }
    let full = train(&init, &data, &options(), None).unwrap();
    let without = train(&full.crf, &removed, &options(), None).unwrap();
    assert!(full.converged && without.converged);
    assert!(without.iterations > 0);
    assert_ne!(without.crf, full.crf);
    let l2 = options().l2;
    assert!(objective(&without.crf, &data, l2).unwrap().0 >= full.objective - 1e-12);
    assert!(objective(&full.crf, &removed, l2).unwrap().0 >= without.objective - 1e-12);

    let seq = &data[k];
    let full_nll = sequence_nll(&full.crf, seq).unwrap().0;
    let partial_nll = sequence_nll(&full.crf, &removed[k]).unwrap().0;
    let cl = full
        .crf
        .segment_loss(seq.features.view(), &seq.labels, a, b)
        .unwrap();
    assert!(
        close(partial_nll, full_nll - cl, 1e-10),
        "{partial_nll} vs {full_nll} - {cl}"
    );
}
