//! Shared test helpers: a seeded RNG and random CRFs/sequences (no external RNG crate, so the
//! cases are reproducible from the seed printed on failure).
#![allow(dead_code)]

pub mod oracle;

use ndarray::{Array1, Array2};
use seginf::Crf;

/// SplitMix64: tiny, seedable, good enough to draw test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-scale, scale), rounded to f32 (the C ABI's input type).
    pub fn value(&mut self, scale: f64) -> f32 {
        ((self.uniform() * 2.0 - 1.0) * scale) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
}

/// What a random CRF has.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub c: usize,
    pub d: usize,
    pub bias: bool,
    pub start: bool,
    pub end: bool,
    /// Probability that a transition/start/end entry is -inf.
    pub forbid: f64,
}

pub fn random_crf(rng: &mut Rng, shape: Shape) -> Crf {
    let Shape { c, d, .. } = shape;
    let vector = |rng: &mut Rng, forbid: f64| {
        Array1::from_shape_fn(c, |_| match rng.chance(forbid) {
            true => f64::NEG_INFINITY,
            false => f64::from(rng.value(1.5)),
        })
    };
    let weights = Array2::from_shape_fn((c, d), |_| f64::from(rng.value(1.0)));
    let bias = shape.bias.then(|| vector(rng, 0.0));
    let transitions = Array2::from_shape_fn((c, c), |_| match rng.chance(shape.forbid) {
        true => f64::NEG_INFINITY,
        false => f64::from(rng.value(1.5)),
    });
    let start = shape.start.then(|| vector(rng, shape.forbid));
    let end = shape.end.then(|| vector(rng, shape.forbid));
    Crf::new(weights, bias, transitions, start, end).expect("random parameters are valid")
}

pub fn random_features(rng: &mut Rng, n: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, d), |_| rng.value(1.0))
}

pub fn random_labels(rng: &mut Rng, n: usize, c: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(c) as u32).collect()
}

/// `|a − b| ≤ tol·max(1, |b|)`: relative for magnitudes ≥ 1, absolute below (marginals near
/// zero have no meaningful relative error).
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    if a == b {
        return true; // also ±inf
    }
    (a - b).abs() <= tol * b.abs().max(1.0)
}

pub fn assert_close_slices(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, tol),
            "{what}[{i}]: got {g}, want {w} (tol {tol})"
        );
    }
}
