//! What a core's streaming read rate costs when the loop does work beside its loads: the
//! ceiling reads of the scan benches (`common::ReadKind`), then the fastest of them (64-byte
//! AVX-512 loads asking for every 8th line 16 KB ahead) with `k` FMAs per cache line on
//! registers only (no memory operands, not fed by the loads, eight independent chains that
//! converge to 2.0, so no denormal or NaN: k FMAs take k/2 cycles a line at two a cycle,
//! against the ~13 cycles a line takes at one core's ~13 GB/s). On one core and on two, in
//! paired turns over 256 MB (beyond what this host's caches hold); each ratio is the median
//! of the turns' ratios to the read without work.
//!
//! A scan's kernel is such a loop: its dots, conversions and prefetches are the work. If
//! the rate falls with `k` although the work is far from the time the line's bytes take, the
//! core does not hide that work behind its reads in such a loop, and a kernel's share of the
//! read depends on how much it spends a line, not only on its arithmetic's throughput (the
//! query kernels ask for every line ahead and fare better than this loop: BENCHMARKS.md,
//! session 17).
//!
//! Run: `cargo bench --bench read_rate`.

#[allow(dead_code)] // random_crf, Rng: no CRF here
mod common;

use common::{stream_as, stream_kinds, ReadKind};
use std::hint::black_box;
use std::time::Instant;

/// Bytes read per measurement (both cores together when two).
const BYTES: usize = 256 << 20;

/// FMAs per line measured.
const WORK: [usize; 5] = [1, 2, 4, 8, 16];

/// GB/s of `read` over `buf`, split in two halves over two threads when `two`.
fn rate(buf: &[u8], two: bool, read: &(dyn Fn(&[u8]) -> u64 + Sync)) -> f64 {
    let t = Instant::now();
    if two {
        let (a, b) = buf.split_at(buf.len() / 2);
        black_box(rayon::join(|| read(a), || read(b)));
    } else {
        black_box(read(buf));
    }
    buf.len() as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let buf: Vec<u8> = (0..BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let kinds = stream_kinds();
    let fast = *kinds.last().unwrap_or(&ReadKind::Words);
    if fast == ReadKind::Words {
        println!("(no AVX-512 here: only the u64-word read, without work)");
    }
    type Read<'a> = (String, Box<dyn Fn(&[u8]) -> u64 + Sync + 'a>);
    let mut reads: Vec<Read> = kinds
        .iter()
        .map(|&kind| -> Read { (format!("{kind:?}"), Box::new(move |b| stream_as(kind, b))) })
        .collect();
    if fast != ReadKind::Words {
        for k in WORK {
            reads.push((
                format!("{fast:?} + {k} FMA/line"),
                Box::new(move |b| work::read_with_fmas(b, k)),
            ));
        }
    }
    let base = kinds.len() - 1; // the fastest kind, without work
    for two in [false, true] {
        println!(
            "{} MB, {}: GB/s (fastest turn) and the median of the turns' ratios to {:?}",
            BYTES >> 20,
            if two { "two cores" } else { "one core" },
            fast
        );
        let turns: Vec<Vec<f64>> = (0..9)
            .map(|turn| {
                let mut r = vec![0.0; reads.len()];
                for i in 0..reads.len() {
                    let at = (i + turn) % reads.len();
                    r[at] = rate(&buf, two, reads[at].1.as_ref());
                }
                r
            })
            .collect();
        for (i, (name, _)) in reads.iter().enumerate() {
            let best = turns.iter().map(|t| t[i]).fold(0.0, f64::max);
            let ratio = median(turns.iter().map(|t| t[i] / t[base]).collect());
            println!("  {name:<24} {best:>5.1} GB/s  {:>4.0} %", 100.0 * ratio);
        }
    }
}

mod work {
    /// The fastest plain read of `bytes` with `k` FMAs on registers per line (a kind the CPU
    /// lacks: the word read, without them).
    pub fn read_with_fmas(bytes: &[u8], k: usize) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512 F checked just above.
            return unsafe { x86::read_with_fmas(bytes, k) };
        }
        let _ = k;
        super::stream_as(super::ReadKind::Words, bytes)
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// As `common::stream_as(ZmmAhead)` (eight lines a step, every 8th line asked for
        /// 16 KB ahead), with `k` FMAs a line on a chain of its own (`x ← x/2 + 1`).
        ///
        /// # Safety
        /// The CPU has AVX-512 F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn read_with_fmas(bytes: &[u8], k: usize) -> u64 {
            let (p, lines) = (bytes.as_ptr(), bytes.len() / 64);
            let mut acc = [_mm512_setzero_si512(); 8];
            let mut fma = [_mm512_setzero_ps(); 8];
            let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
            let mut line = 0;
            // SAFETY: every load reads 64 bytes within `bytes` (line + 8 <= lines);
            // prefetches never fault.
            unsafe {
                while line + 8 <= lines {
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(64 * line + (16 << 10)).cast());
                    for i in 0..8 {
                        let v = _mm512_loadu_si512(p.add(64 * (line + i)).cast());
                        acc[i] = _mm512_add_epi64(acc[i], v);
                        for _ in 0..k {
                            fma[i] = _mm512_fmadd_ps(fma[i], half, one);
                        }
                    }
                    line += 8;
                }
            }
            let mut sum = _mm512_setzero_si512();
            for (a, f) in acc.iter().zip(&fma) {
                sum = _mm512_add_epi64(sum, *a);
                sum = _mm512_add_epi64(sum, _mm512_castps_si512(*f));
            }
            _mm512_reduce_add_epi64(sum) as u64
        }
    }
}
