//! Shared by the bench binaries: a seeded generator, a random CRF and best-of-n timing.

use std::hint::black_box;
use std::time::Instant;

use ndarray::{Array1, Array2};
use seginf::Crf;

/// A 64-bit LCG: enough to fill synthetic matrices reproducibly.
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// The fastest of `reps` runs, in seconds (the least disturbed by the shared machine).
pub fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// A CRF with every block: weights uniform in ±`weight_scale`, the rest in ±1 (drawn in the
/// order W, b, A, s, e).
pub fn random_crf(rng: &mut Rng, c: usize, d: usize, weight_scale: f64) -> Crf {
    Crf::new(
        Array2::from_shape_fn((c, d), |_| rng.next() * weight_scale),
        Some(Array1::from_shape_fn(c, |_| rng.next())),
        Array2::from_shape_fn((c, c), |_| rng.next()),
        Some(Array1::from_shape_fn(c, |_| rng.next())),
        Some(Array1::from_shape_fn(c, |_| rng.next())),
    )
    .expect("finite parameters make a valid CRF")
}

/// Sums the bytes as u64 words with 4 independent accumulators: a plain streaming read (the
/// ceiling of the scan benches).
#[allow(dead_code)] // not every bench binary streams
pub fn stream(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    for chunk in bytes.chunks_exact(32) {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(u64::from_le_bytes(
                chunk[i * 8..i * 8 + 8].try_into().unwrap(),
            ));
        }
    }
    acc.iter().fold(0, |a, b| a.wrapping_add(*b))
}
