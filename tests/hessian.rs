//! Exact Hessian–vector products and CG solves against dense oracles: the Hessian of the
//! (partial-label) NLL by brute-force enumeration of all C^n labellings,
//! `Cov_{p(y|x)}[φ] − Cov_{p(y|y_obs,x)}[φ]`, and dense Cholesky solves of the damped system.

// Index loops mirror the formulas (t over positions, i/j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use common::oracle::{self, lse};
use common::*;
use ndarray::{Array2, ArrayView2};
use seginf::hessian::{
    conjugate_gradient, exact_inverse_hvp, objective_hvp, sequence_hvp, CgResult,
};
use seginf::train::TrainSeq;
use seginf::{Crf, Error};

/// HVP against the enumerated Hessian (relative to the largest entry of `H v`).
const HVP_TOL: f64 = 1e-9;
/// `uᵀ(Hv)` against `vᵀ(Hu)`, relative to `‖u‖·‖Hv‖`.
const SYMMETRY_TOL: f64 = 1e-10;
/// CG solution against a dense solve, relative to the largest entry of the solution.
const SOLVE_TOL: f64 = 1e-6;
const CG_TOL: f64 = 1e-8;

// ---------------------------------------------------------------------------------------------
// The oracle: every labelling, its score, and its sufficient statistics.

struct Oracle<'a> {
    crf: &'a Crf,
    x: ArrayView2<'a, f32>,
    /// Every labelling with its score S(y) (-inf when it uses a forbidden entry).
    paths: Vec<(Vec<u32>, f64)>,
}

impl<'a> Oracle<'a> {
    fn new(crf: &'a Crf, x: ArrayView2<'a, f32>) -> Oracle<'a> {
        let paths = oracle::labellings(crf, x);
        Oracle { crf, x, paths }
    }

    fn phi(&self, y: &[u32]) -> Vec<f64> {
        oracle::phi(self.crf, self.x, y)
    }

    /// `Cov[φ]` under `p(y) ∝ exp S(y)` restricted to the labellings `keep` accepts, as the
    /// centred sum `Σ_y p(y) (φ(y) − μ)(φ(y) − μ)ᵀ` (P × P).
    fn covariance(&self, keep: impl Fn(&[u32]) -> bool) -> Array2<f64> {
        let kept: Vec<&(Vec<u32>, f64)> = self.paths.iter().filter(|(y, _)| keep(y)).collect();
        let log_norm = lse(kept.iter().map(|p| p.1));
        assert!(log_norm > f64::NEG_INFINITY, "no allowed labelling");
        let p = self.crf.num_params();
        let weighted: Vec<(f64, Vec<f64>)> = kept
            .iter()
            .map(|(y, s)| ((s - log_norm).exp(), self.phi(y)))
            .filter(|(w, _)| *w > 0.0)
            .collect();
        let mut mean = vec![0.0; p];
        for (w, phi) in &weighted {
            mean.iter_mut().zip(phi).for_each(|(m, f)| *m += w * f);
        }
        let mut cov = Array2::<f64>::zeros((p, p));
        for (w, phi) in &weighted {
            for a in 0..p {
                for b in 0..p {
                    cov[[a, b]] += w * (phi[a] - mean[a]) * (phi[b] - mean[b]);
                }
            }
        }
        cov
    }

    /// The Hessian of `log Z − log Z_obs`: `Cov_{p(y|x)}[φ] − Cov_{p(y|y_obs,x)}[φ]`.
    fn hessian(&self, labels: &[u32], observed: &[bool]) -> Array2<f64> {
        let agrees = |y: &[u32]| (0..y.len()).all(|t| !observed[t] || y[t] == labels[t]);
        self.covariance(|_| true) - self.covariance(agrees)
    }

    /// A random labelling with p(y|x) > 0, or `None` when there is none.
    fn feasible_labels(&self, rng: &mut Rng) -> Option<Vec<u32>> {
        let feasible: Vec<&Vec<u32>> = self
            .paths
            .iter()
            .filter(|(_, s)| *s > f64::NEG_INFINITY)
            .map(|(y, _)| y)
            .collect();
        (!feasible.is_empty()).then(|| feasible[rng.below(feasible.len())].clone())
    }
}

fn matvec(a: &Array2<f64>, v: &[f64]) -> Vec<f64> {
    a.rows()
        .into_iter()
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `‖got − want‖∞ / ‖want‖∞` (the absolute error when `want` is 0).
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .fold(0.0, |m: f64, (g, w)| m.max((g - w).abs()));
    match max_abs(want) {
        0.0 => err,
        scale => err / scale,
    }
}

fn random_vector(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| f64::from(rng.value(1.0))).collect()
}

/// Random CRFs with and without b/s/e, with and without -inf entries, C ≤ 3, d ≤ 3.
fn shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for c in 1..=3 {
        for d in [1, 3] {
            for (bias, start, end) in [
                (false, false, false),
                (true, true, true),
                (true, false, true),
                (false, true, false),
            ] {
                for forbid in [0.0, 0.3] {
                    out.push(Shape {
                        c,
                        d,
                        bias,
                        start,
                        end,
                        forbid,
                    });
                }
            }
        }
    }
    out
}

/// One random case of the HVP checks: a CRF, a sequence (n ≤ 5) with at least one allowed
/// labelling, labels drawn among the allowed ones, and an observed mask.
struct Case {
    ctx: String,
    crf: Crf,
    x: Array2<f32>,
    labels: Vec<u32>,
    observed: Vec<bool>,
}

/// Every shape × length, each from its own printed seed; `partial` draws random observed masks
/// (otherwise all observed).
fn cases(seed: u64, partial: bool) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for shape in shapes() {
        for n in 1..=5 {
            let seed = rng.next_u64();
            let mut case = Rng::new(seed);
            let crf = random_crf(&mut case, shape);
            let x = random_features(&mut case, n, shape.d);
            let Some(labels) = Oracle::new(&crf, x.view()).feasible_labels(&mut case) else {
                continue; // the constraints allow nothing of this length: tested below
            };
            let observed = (0..n).map(|_| !partial || case.chance(0.5)).collect();
            let ctx = format!("seed {seed}, {shape:?}, n = {n}, observed = {observed:?}");
            out.push(Case {
                ctx,
                crf,
                x,
                labels,
                observed,
            });
        }
    }
    out
}

fn check_against_enumeration(partial: bool) {
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for case in cases(if partial { 2 } else { 1 }, partial) {
        let Case {
            ctx,
            crf,
            x,
            labels,
            observed,
        } = &case;
        let hessian = Oracle::new(crf, x.view()).hessian(labels, observed);
        let mut rng = Rng::new(checked as u64);
        for _ in 0..3 {
            let v = random_vector(&mut rng, crf.num_params());
            let mask = partial.then_some(observed.as_slice());
            let got = sequence_hvp(crf, x.view(), labels, mask, &v).unwrap();
            let want = matvec(&hessian, &v);
            let err = relative_error(&got, &want);
            worst = worst.max(err);
            assert!(
                err <= HVP_TOL,
                "H v off by {err:e}: {ctx}\n got  {got:?}\n want {want:?}"
            );
            assert!(got.iter().all(|h| h.is_finite()), "{ctx}");
        }
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} cases");
    println!("{checked} cases (partial = {partial}): max relative error of H v = {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// (1), (2): H v against the enumerated Hessian.

#[test]
fn hvp_matches_enumerated_hessian_with_all_labels_observed() {
    check_against_enumeration(false);
}

#[test]
fn hvp_matches_enumerated_hessian_with_partial_labels() {
    check_against_enumeration(true);
}

#[test]
fn fully_unobserved_sequence_has_zero_hessian() {
    // log Z − log Z_obs with nothing observed is identically 0.
    let mut rng = Rng::new(3);
    let shape = Shape {
        c: 3,
        d: 2,
        bias: true,
        start: true,
        end: true,
        forbid: 0.0,
    };
    let crf = random_crf(&mut rng, shape);
    let x = random_features(&mut rng, 4, 2);
    let v = random_vector(&mut rng, crf.num_params());
    // Labels at unobserved positions are ignored, even out of range.
    let got = sequence_hvp(&crf, x.view(), &[7, 7, 7, 7], Some(&[false; 4]), &v).unwrap();
    assert!(got.iter().all(|&h| h == 0.0), "{got:?}");
}

// ---------------------------------------------------------------------------------------------
// (3): symmetry.

#[test]
fn hvp_is_symmetric() {
    let mut worst: f64 = 0.0;
    for (k, case) in cases(4, true).iter().enumerate() {
        let Case {
            ctx,
            crf,
            x,
            labels,
            observed,
        } = case;
        let mut rng = Rng::new(k as u64);
        let (u, v) = (
            random_vector(&mut rng, crf.num_params()),
            random_vector(&mut rng, crf.num_params()),
        );
        let hv = sequence_hvp(crf, x.view(), labels, Some(observed), &v).unwrap();
        let hu = sequence_hvp(crf, x.view(), labels, Some(observed), &u).unwrap();
        let scale = dot(&u, &u).sqrt() * dot(&hv, &hv).sqrt();
        let err = (dot(&u, &hv) - dot(&v, &hu)).abs() / scale.max(f64::MIN_POSITIVE);
        worst = worst.max(err);
        assert!(
            err <= SYMMETRY_TOL,
            "uᵀHv = {} vs vᵀHu = {} ({err:e}): {ctx}",
            dot(&u, &hv),
            dot(&v, &hu)
        );
    }
    println!("max relative asymmetry uᵀHv − vᵀHu = {worst:e}");
}

// ---------------------------------------------------------------------------------------------
// (4): CG against dense solves.

/// Solves `A x = b` for SPD `A` by Cholesky (`A = L Lᵀ`); panics when `A` is not PD.
fn cholesky_solve(a: &Array2<f64>, b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[[i, j]] - (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum::<f64>();
            if i == j {
                assert!(s > 0.0, "not positive definite (pivot {i}: {s})");
                l[[i, i]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[[i, k]] * y[k]).sum::<f64>()) / l[[i, i]];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[[k, i]] * x[k]).sum::<f64>()) / l[[i, i]];
    }
    x
}

fn check_cg(what: &str, got: &CgResult, want: &[f64], max_iterations: usize) -> f64 {
    assert!(
        got.converged && got.relative_residual <= CG_TOL,
        "{what}: {got:?}"
    );
    assert!(
        got.iterations >= 1 && got.iterations <= max_iterations,
        "{what}: {} iterations",
        got.iterations
    );
    let err = relative_error(&got.x, want);
    assert!(err <= SOLVE_TOL, "{what}: x off by {err:e}");
    println!(
        "{what}: {} CG iterations, relative residual {:e}, max relative error vs dense {err:e}",
        got.iterations, got.relative_residual
    );
    err
}

#[test]
fn conjugate_gradient_matches_cholesky_on_random_spd_matrices() {
    for seed in 0..5u64 {
        let mut rng = Rng::new(seed);
        let n = 10 + rng.below(30);
        // A = MᵀM/n + I: SPD with a moderate condition number.
        let m = Array2::from_shape_fn((n, n), |_| f64::from(rng.value(1.0)));
        let a = m.t().dot(&m) / n as f64 + Array2::<f64>::eye(n);
        let b = random_vector(&mut rng, n);
        let got = conjugate_gradient(|v| Ok(matvec(&a, v)), &b, CG_TOL, 200).unwrap();
        let want = cholesky_solve(&a, &b);
        check_cg(
            &format!("random SPD, seed {seed}, n = {n}"),
            &got,
            &want,
            200,
        );
    }
}

/// A small training set: C = 3, d = 3, with b/s/e and some -inf transitions/starts/ends,
/// sequences of 1..=5 tokens with allowed labels and (when `partial`) random masks.
fn small_problem(seed: u64, partial: bool) -> (Crf, Vec<TrainSeq>) {
    let mut rng = Rng::new(seed);
    let shape = Shape {
        c: 3,
        d: 3,
        bias: true,
        start: true,
        end: true,
        forbid: 0.25,
    };
    let crf = loop {
        let crf = random_crf(&mut rng, shape);
        // Keep CRFs that forbid something but allow every length used below.
        let forbids = crf.params().iter().any(|t| !t.is_finite());
        let allows_all = (1..=5).all(|n| {
            let x = random_features(&mut rng, n, 3);
            crf.log_partition(x.view()).unwrap() > f64::NEG_INFINITY
        });
        if forbids && allows_all {
            break crf;
        }
    };
    let data = (0..6)
        .map(|k| {
            let n = 1 + k % 5;
            let features = random_features(&mut rng, n, 3);
            let labels = Oracle::new(&crf, features.view())
                .feasible_labels(&mut rng)
                .unwrap();
            let observed = (0..n).map(|_| !partial || rng.chance(0.7)).collect();
            TrainSeq {
                features,
                labels,
                observed,
            }
        })
        .collect();
    (crf, data)
}

#[test]
fn exact_inverse_hvp_matches_a_dense_solve() {
    let (l2, damping) = (0.1, 0.4);
    for (seed, partial) in [(5, false), (6, false), (7, true), (8, true)] {
        let (crf, data) = small_problem(seed, partial);
        let p = crf.num_params();
        let finite: Vec<usize> = (0..p).filter(|&k| crf.params()[k].is_finite()).collect();

        // The dense damped Hessian, column by column from unit vectors (finite entries only).
        let mut dense = Array2::<f64>::zeros((p, p));
        for &k in &finite {
            let mut e = vec![0.0; p];
            e[k] = 1.0;
            let column = objective_hvp(&crf, &data, l2, damping, &e).unwrap();
            dense.column_mut(k).assign(&ndarray::Array1::from(column));
        }
        // It is (1/|D|) Σ_seq H_seq + (λ + μ) I by enumeration, on the finite entries.
        let mut want = Array2::<f64>::zeros((p, p));
        for seq in &data {
            let oracle = Oracle::new(&crf, seq.features.view());
            want = want + oracle.hessian(&seq.labels, &seq.observed) / data.len() as f64;
        }
        for &k in &finite {
            want[[k, k]] += l2 + damping;
        }
        let err = relative_error(dense.as_slice().unwrap(), want.as_slice().unwrap());
        assert!(err <= HVP_TOL, "seed {seed}: dense Hessian off by {err:e}");

        // Solve on the finite subspace densely, and by CG.
        let mut rng = Rng::new(seed);
        let g = random_vector(&mut rng, p);
        let sub = Array2::from_shape_fn((finite.len(), finite.len()), |(a, b)| {
            dense[[finite[a], finite[b]]]
        });
        let sub_g: Vec<f64> = finite.iter().map(|&k| g[k]).collect();
        let mut want_x = vec![0.0; p];
        for (a, x) in cholesky_solve(&sub, &sub_g).into_iter().enumerate() {
            want_x[finite[a]] = x;
        }
        let got = exact_inverse_hvp(&crf, &data, l2, damping, &g, CG_TOL, 500).unwrap();
        check_cg(
            &format!("exact_inverse_hvp, seed {seed}, partial = {partial}, {p} parameters"),
            &got,
            &want_x,
            500,
        );
        for k in (0..p).filter(|k| !finite.contains(k)) {
            assert_eq!(got.x[k], 0.0, "x at -inf parameter {k}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (5): -inf entries.

#[test]
fn minus_inf_entries_are_exactly_zero_and_nothing_is_nan() {
    for (k, case) in cases(9, true).iter().enumerate() {
        let Case {
            ctx,
            crf,
            x,
            labels,
            observed,
        } = case;
        let params = crf.params();
        let mut rng = Rng::new(k as u64);
        // Entries of v at -inf parameters are ignored, whatever they hold.
        let v: Vec<f64> = params
            .iter()
            .map(|t| match t.is_finite() {
                true => f64::from(rng.value(1.0)),
                false => f64::NAN,
            })
            .collect();
        let hv = sequence_hvp(crf, x.view(), labels, Some(observed), &v).unwrap();
        let data = [TrainSeq {
            features: x.clone(),
            labels: labels.clone(),
            observed: observed.clone(),
        }];
        let objective = objective_hvp(crf, &data, 0.1, 0.1, &v).unwrap();
        for out in [&hv, &objective] {
            assert!(out.iter().all(|h| h.is_finite()), "NaN/inf: {ctx}\n{out:?}");
            for (h, t) in out.iter().zip(&params) {
                if !t.is_finite() {
                    assert!(h == &0.0 && h.is_sign_positive(), "{h} at -inf: {ctx}");
                }
            }
        }
        // Same as with 0 there.
        let zeroed: Vec<f64> = v
            .iter()
            .map(|x| if x.is_nan() { 0.0 } else { *x })
            .collect();
        let again = sequence_hvp(crf, x.view(), labels, Some(observed), &zeroed).unwrap();
        assert_eq!(hv, again, "{ctx}");
    }
}

// ---------------------------------------------------------------------------------------------
// The objective's sum and the errors.

#[test]
fn objective_hvp_is_the_mean_plus_shift_and_independent_of_threads() {
    let mut rng = Rng::new(10);
    let shape = Shape {
        c: 3,
        d: 4,
        bias: true,
        start: true,
        end: false,
        forbid: 0.0,
    };
    let crf = random_crf(&mut rng, shape);
    // More sequences than one parallel chunk.
    let data: Vec<TrainSeq> = (0..75)
        .map(|k| {
            let n = 1 + k % 7;
            let mut seq = TrainSeq::labelled(
                random_features(&mut rng, n, 4),
                random_labels(&mut rng, n, 3),
            );
            seq.observed = (0..n).map(|_| rng.chance(0.8)).collect();
            seq
        })
        .collect();
    let v = random_vector(&mut rng, crf.num_params());
    let (l2, damping) = (0.01, 0.5);

    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| objective_hvp(&crf, &data, l2, damping, &v).unwrap())
    };
    let one = run(1);
    assert_eq!(one, run(2), "depends on the number of threads");
    assert_eq!(one, run(5), "depends on the number of threads");

    let mut want: Vec<f64> = v.iter().map(|x| (l2 + damping) * x).collect();
    for seq in &data {
        let h = sequence_hvp(
            &crf,
            seq.features.view(),
            &seq.labels,
            Some(&seq.observed),
            &v,
        )
        .unwrap();
        want.iter_mut()
            .zip(h)
            .for_each(|(w, h)| *w += h / data.len() as f64);
    }
    let err = relative_error(&one, &want);
    assert!(err <= 1e-13, "objective_hvp off by {err:e}");
}

#[test]
fn bad_arguments_are_errors() {
    let mut rng = Rng::new(11);
    let shape = Shape {
        c: 3,
        d: 2,
        bias: false,
        start: true,
        end: true,
        forbid: 0.0,
    };
    let mut crf = random_crf(&mut rng, shape);
    let x = random_features(&mut rng, 3, 2);
    let p = crf.num_params();
    let v = vec![0.5; p];
    let labels = [0, 1, 2];

    let short = sequence_hvp(&crf, x.view(), &labels, None, &v[..p - 1]);
    assert!(
        matches!(short, Err(Error::DimensionMismatch(_))),
        "{short:?}"
    );
    let mut nan = v.clone();
    nan[0] = f64::NAN;
    let nan = sequence_hvp(&crf, x.view(), &labels, None, &nan);
    assert!(matches!(nan, Err(Error::NonFinite(_))), "{nan:?}");
    let mask = sequence_hvp(&crf, x.view(), &labels, Some(&[true; 2]), &v);
    assert!(matches!(mask, Err(Error::DimensionMismatch(_))), "{mask:?}");
    let label = sequence_hvp(&crf, x.view(), &[0, 3, 0], None, &v);
    assert!(matches!(label, Err(Error::LabelOutOfRange(_))), "{label:?}");

    // Observed labels the constraints forbid: the NLL is +inf, no Hessian.
    let mut params = crf.params();
    params[crf.layout().transitions + 1] = f64::NEG_INFINITY; // 0 → 1
    crf = crf.with_params(&params).unwrap();
    let impossible = sequence_hvp(&crf, x.view(), &[0, 1, 2], None, &v);
    assert!(
        matches!(impossible, Err(Error::ImpossibleLabels(_))),
        "{impossible:?}"
    );
    let partial = sequence_hvp(&crf, x.view(), &[0, 1, 2], Some(&[true, true, false]), &v);
    assert!(
        matches!(partial, Err(Error::ImpossibleLabels(_))),
        "{partial:?}"
    );
    // Unobserving one end of the forbidden pair makes it fine.
    sequence_hvp(&crf, x.view(), &[0, 1, 2], Some(&[true, false, true]), &v).unwrap();

    let seq = TrainSeq::labelled(x.clone(), vec![0, 1, 2]);
    let data = [TrainSeq::labelled(x.clone(), vec![2, 2, 2]), seq];
    let named = objective_hvp(&crf, &data, 0.0, 0.1, &v);
    assert!(
        matches!(&named, Err(Error::ImpossibleLabels(m)) if m.contains("training sequence 1")),
        "{named:?}"
    );
    for (l2, damping) in [(-1.0, 0.1), (0.1, f64::NAN), (0.0, f64::INFINITY)] {
        let bad = objective_hvp(&crf, &data[..1], l2, damping, &v);
        assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    }
    let empty = objective_hvp(&crf, &[], 0.1, 0.1, &v);
    assert!(matches!(empty, Err(Error::InvalidArgument(_))), "{empty:?}");

    // b = 0 is solved by x = 0 without a product.
    let zero = exact_inverse_hvp(&crf, &data[..1], 0.1, 0.1, &vec![0.0; p], CG_TOL, 10).unwrap();
    assert_eq!(zero.x, vec![0.0; p]);
    assert_eq!(zero.iterations, 0);
}
