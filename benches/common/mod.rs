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

/// A plain streaming read of `bytes`, the baseline of the row and integer kernel benches:
/// 64-byte loads where the CPU has AVX-512 F, else u64 words ([`ReadKind`]).
#[allow(dead_code)] // not every bench binary streams
pub fn stream(bytes: &[u8]) -> u64 {
    stream_as(ReadKind::Zmm, bytes)
}

/// The ways a plain read can load memory. Until session 16 the ceiling was `Words` alone,
/// compiled for baseline x86-64 (16-byte loads): on the Intel VM of sessions 12–17 it reads
/// 69–96 % (median 79 %) of the fastest kind on two cores (four loads a line keep fewer
/// lines in flight than one; `benches/read_rate.rs`), so it understated the bandwidth a
/// scan can reach, and queries read "more than 100 %" of it. `index_query` times every kind
/// available in each turn and takes the fastest as the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum ReadKind {
    /// u64 words, four accumulators (the compiler's baseline vector loads).
    Words,
    /// 64-byte AVX-512 loads, one a cache line, four accumulators.
    Zmm,
    /// As `Zmm`, asking for every 8th line 16 KB ahead into L2 (the tile kernels' own asks).
    ZmmAhead,
}

/// The read kinds this CPU runs.
#[allow(dead_code)]
pub fn stream_kinds() -> Vec<ReadKind> {
    let mut kinds = vec![ReadKind::Words];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        kinds.extend([ReadKind::Zmm, ReadKind::ZmmAhead]);
    }
    kinds
}

/// One plain read of `bytes` as `kind` (a kind the CPU lacks reads as `Words`).
#[allow(dead_code)]
pub fn stream_as(kind: ReadKind, bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if kind != ReadKind::Words && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512 F checked just above.
        return unsafe { x86::stream_zmm(bytes, kind == ReadKind::ZmmAhead) };
    }
    let _ = kind;
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Sums `bytes` as u64 lanes of 64-byte loads (unaligned; the tail as words), asking for
    /// every 8th line 16 KB ahead when `ahead`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn stream_zmm(bytes: &[u8], ahead: bool) -> u64 {
        let lines = bytes.len() / 64;
        let p = bytes.as_ptr();
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut line = 0;
        // SAFETY: every load reads 64 bytes within `bytes` (line + 4 <= lines); prefetches
        // never fault.
        unsafe {
            while line + 4 <= lines {
                if ahead && line % 8 == 0 {
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64 * line + (16 << 10)).cast());
                }
                for (i, a) in acc.iter_mut().enumerate() {
                    let v = _mm512_loadu_si512(p.add(64 * (line + i)).cast());
                    *a = _mm512_add_epi64(*a, v);
                }
                line += 4;
            }
        }
        let sum = _mm512_add_epi64(
            _mm512_add_epi64(acc[0], acc[1]),
            _mm512_add_epi64(acc[2], acc[3]),
        );
        let tail = bytes[64 * line..]
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .fold(0, u64::wrapping_add);
        (_mm512_reduce_add_epi64(sum) as u64).wrapping_add(tail)
    }
}
