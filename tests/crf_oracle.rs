//! The CRF core against brute-force enumeration of all C^n labellings (C ≤ 4, n ≤ 6):
//! log Z, log p(y|x), Viterbi, marginals, pairwise marginals, CL(a,b) for every segment and its
//! dense gradient (expected minus observed sufficient statistics), to 1e-9.

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use common::oracle::{self, lse};
use common::*;
use ndarray::{Array2, ArrayView2};
use seginf::{Crf, Error};

const TOL: f64 = 1e-9;

/// Everything the oracle needs, computed from the parameters with plain loops.
struct Oracle<'a> {
    crf: &'a Crf,
    x: ArrayView2<'a, f32>,
    n: usize,
    /// Every labelling with its score S(y).
    paths: Vec<(Vec<u32>, f64)>,
}

impl<'a> Oracle<'a> {
    fn new(crf: &'a Crf, x: ArrayView2<'a, f32>) -> Oracle<'a> {
        let n = x.nrows();
        let paths = oracle::labellings(crf, x);
        Oracle { crf, x, n, paths }
    }

    fn log_z(&self) -> f64 {
        lse(self.paths.iter().map(|p| p.1))
    }

    fn phi(&self, y: &[u32]) -> Vec<f64> {
        oracle::phi(self.crf, self.x, y)
    }

    /// Labellings equal to `y` outside [a, b], with their scores.
    fn agreeing(&self, y: &[u32], a: usize, b: usize) -> Vec<&(Vec<u32>, f64)> {
        self.paths
            .iter()
            .filter(|(p, _)| (0..self.n).all(|t| (a..=b).contains(&t) || p[t] == y[t]))
            .collect()
    }

    /// CL(a,b) = −log p(y) / Σ_{y' = y outside [a,b]} p(y'); +inf when p(y) = 0.
    fn segment_loss(&self, y: &[u32], a: usize, b: usize) -> f64 {
        let gold = oracle::score(self.crf, self.x, y);
        if gold == f64::NEG_INFINITY {
            return f64::INFINITY;
        }
        lse(self.agreeing(y, a, b).into_iter().map(|p| p.1)) - gold
    }

    /// ∇CL(a,b) = E_{y' ~ p(·| y outside)}[φ(y')] − φ(y).
    fn segment_gradient(&self, y: &[u32], a: usize, b: usize) -> Vec<f64> {
        let log_norm = lse(self.agreeing(y, a, b).into_iter().map(|p| p.1));
        let mut g: Vec<f64> = self.phi(y).iter().map(|v| -v).collect();
        for (p, s) in self.agreeing(y, a, b) {
            let w = (s - log_norm).exp();
            if w > 0.0 {
                for (gi, fi) in g.iter_mut().zip(self.phi(p)) {
                    *gi += w * fi;
                }
            }
        }
        g
    }
}

fn shapes() -> Vec<Shape> {
    let mut out = Vec::new();
    for c in 1..=4 {
        for (bias, start, end) in [
            (false, false, false),
            (true, true, true),
            (true, false, true),
        ] {
            for forbid in [0.0, 0.25] {
                out.push(Shape {
                    c,
                    d: 3,
                    bias,
                    start,
                    end,
                    forbid,
                });
            }
        }
    }
    out
}

fn lengths(c: usize) -> impl Iterator<Item = usize> {
    (1..=6).filter(move |&n| c.pow(n as u32) <= 4096)
}

#[test]
fn inference_matches_enumeration() {
    let mut rng = Rng::new(1);
    let mut checked = 0;
    for shape in shapes() {
        for n in lengths(shape.c) {
            let seed = rng.next_u64();
            let mut case = Rng::new(seed);
            let crf = random_crf(&mut case, shape);
            let x = random_features(&mut case, n, shape.d);
            let oracle = Oracle::new(&crf, x.view());
            let ctx = format!("seed {seed}, {shape:?}, n = {n}");
            let log_z = oracle.log_z();
            assert!(
                close(crf.log_partition(x.view()).unwrap(), log_z, TOL),
                "log Z: {ctx}"
            );
            if log_z == f64::NEG_INFINITY {
                assert!(
                    matches!(crf.marginals(x.view()), Err(Error::ImpossibleLabels(_))),
                    "{ctx}"
                );
                assert!(
                    matches!(crf.viterbi(x.view()), Err(Error::ImpossibleLabels(_))),
                    "{ctx}"
                );
                continue;
            }
            // log p(y|x) for every labelling, -inf ones included.
            for (y, s) in &oracle.paths {
                let got = crf.log_likelihood(x.view(), y).unwrap();
                assert!(
                    close(got, s - log_z, TOL),
                    "log p({y:?}) = {got} vs {}: {ctx}",
                    s - log_z
                );
            }
            // Viterbi: the best score; the path too when the maximum is unique.
            let mut sorted: Vec<f64> = oracle.paths.iter().map(|p| p.1).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let (path, score) = crf.viterbi(x.view()).unwrap();
            assert!(close(score, sorted[0], TOL), "viterbi score: {ctx}");
            if sorted.len() == 1 || sorted[0] - sorted[1] > 1e-9 {
                let best = oracle.paths.iter().find(|p| p.1 == sorted[0]).unwrap();
                assert_eq!(path, best.0, "viterbi path: {ctx}");
            }
            // Marginals.
            let m = crf.marginals(x.view()).unwrap();
            let (c, n) = (shape.c, n);
            let mut unary = Array2::<f64>::zeros((n, c));
            let mut pairwise = vec![0.0; n.saturating_sub(1) * c * c];
            for (y, s) in &oracle.paths {
                let p = (s - log_z).exp();
                for t in 0..n {
                    unary[[t, y[t] as usize]] += p;
                    if t > 0 {
                        pairwise[(t - 1) * c * c + y[t - 1] as usize * c + y[t] as usize] += p;
                    }
                }
            }
            assert!(close(m.log_z, log_z, TOL), "{ctx}");
            assert_close_slices(
                &format!("marginals ({ctx})"),
                m.unary.as_slice().unwrap(),
                unary.as_slice().unwrap(),
                TOL,
            );
            assert_close_slices(
                &format!("pairwise ({ctx})"),
                &m.pairwise.iter().copied().collect::<Vec<_>>(),
                &pairwise,
                TOL,
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} feasible cases");
}

#[test]
fn every_segment_loss_and_gradient_matches_enumeration() {
    let mut rng = Rng::new(2);
    let mut segments = 0;
    for shape in shapes() {
        for n in lengths(shape.c) {
            let seed = rng.next_u64();
            let mut case = Rng::new(seed);
            let crf = random_crf(&mut case, shape);
            let x = random_features(&mut case, n, shape.d);
            let oracle = Oracle::new(&crf, x.view());
            // Gold: a feasible labelling when there is one (drawn at random), and one random
            // labelling that may be impossible.
            let feasible: Vec<&Vec<u32>> = oracle
                .paths
                .iter()
                .filter(|p| p.1 > f64::NEG_INFINITY)
                .map(|p| &p.0)
                .collect();
            let mut golds = vec![random_labels(&mut case, n, shape.c)];
            if !feasible.is_empty() {
                golds.push(feasible[case.below(feasible.len())].clone());
            }
            for y in &golds {
                let possible = oracle::score(&crf, x.view(), y) > f64::NEG_INFINITY;
                for a in 0..n {
                    for b in a..n {
                        let ctx = format!("seed {seed}, {shape:?}, n = {n}, y = {y:?}, [{a},{b}]");
                        let want = oracle.segment_loss(y, a, b);
                        let got = crf.segment_loss(x.view(), y, a, b).unwrap();
                        assert!(close(got, want, TOL), "CL = {got}, want {want}: {ctx}");
                        let grad = crf.segment_gradient_dense(x.view(), y, a, b);
                        if !possible {
                            assert_eq!(got, f64::INFINITY, "{ctx}");
                            assert!(matches!(grad, Err(Error::ImpossibleLabels(_))), "{ctx}");
                            continue;
                        }
                        let want = oracle.segment_gradient(y, a, b);
                        assert_close_slices(
                            &format!("gradient ({ctx})"),
                            &grad.unwrap(),
                            &want,
                            TOL,
                        );
                        let q = crf.segment_marginals(x.view(), y, a, b).unwrap();
                        for t in a..=b {
                            let row_sum: f64 = q.unary.row(t - a).sum();
                            assert!(close(row_sum, 1.0, TOL), "{ctx}");
                        }
                        segments += 1;
                    }
                }
            }
        }
    }
    assert!(segments >= 500, "only {segments} segments checked");
}

#[test]
fn single_token_fast_path_equals_general_segments() {
    let mut rng = Rng::new(3);
    for shape in shapes() {
        let n = 7;
        let crf = random_crf(
            &mut rng,
            Shape {
                forbid: 0.0,
                ..shape
            },
        );
        let x = random_features(&mut rng, n, shape.d);
        let y = random_labels(&mut rng, n, shape.c);
        let (losses, errors) = crf.token_errors(x.view(), &y).unwrap();
        for t in 0..n {
            let g = crf.segment_gradient(x.view(), &y, t, t).unwrap();
            assert!(close(losses[t], g.loss, 1e-12), "{shape:?} t = {t}");
            assert_close_slices(
                "r_t",
                &errors.row(t).to_vec(),
                &g.error_vectors.row(0).to_vec(),
                1e-12,
            );
        }
    }
}

#[test]
fn gradient_matches_finite_differences() {
    let mut rng = Rng::new(4);
    for shape in shapes().into_iter().filter(|s| s.c >= 2) {
        let n = 5;
        let crf = random_crf(&mut rng, shape);
        let x = random_features(&mut rng, n, shape.d);
        // A gold labelling with finite score: Viterbi's, when any exists.
        let Ok((y, _)) = crf.viterbi(x.view()) else {
            continue;
        };
        let (a, b) = (rng.below(n), n - 1);
        let (a, b) = (a.min(b), a.max(b).max(a));
        let grad = crf.segment_gradient_dense(x.view(), &y, a, b).unwrap();
        let theta = crf.params();
        let rebuild = |theta: &[f64]| {
            let (c, d) = (crf.num_labels(), crf.feature_dim());
            let l = crf.layout();
            let vec_at =
                |at: Option<usize>| at.map(|o| ndarray::Array1::from(theta[o..o + c].to_vec()));
            Crf::new(
                Array2::from_shape_vec((c, d), theta[..c * d].to_vec()).unwrap(),
                vec_at(l.bias),
                Array2::from_shape_vec(
                    (c, c),
                    theta[l.transitions..l.transitions + c * c].to_vec(),
                )
                .unwrap(),
                vec_at(l.start),
                vec_at(l.end),
            )
            .unwrap()
        };
        let h = 1e-5;
        for i in 0..theta.len() {
            if !theta[i].is_finite() {
                assert_eq!(grad[i], 0.0, "a forbidden entry has no gradient");
                continue;
            }
            let mut plus = theta.clone();
            plus[i] += h;
            let mut minus = theta.clone();
            minus[i] -= h;
            let fd = (rebuild(&plus).segment_loss(x.view(), &y, a, b).unwrap()
                - rebuild(&minus).segment_loss(x.view(), &y, a, b).unwrap())
                / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-6 * grad[i].abs().max(1.0),
                "param {i}: finite difference {fd} vs gradient {}: {shape:?}",
                grad[i]
            );
        }
    }
}
