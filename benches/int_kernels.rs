//! The exact integer kernels of `src/int_kernels.rs` on 200k × 768 int8 rows, single-threaded
//! (the caller parallelises over blocks of rows), each next to its baseline measured in the
//! same run (the machine is shared and noisy):
//! - `gemm` (int8 rows) for L = 300 and 64 in blocks of 2048 rows, next to OpenBLAS sgemm of the
//!   same shapes (ndarray's `general_mat_mul` on f32 copies of the rows): GMAC/s and ratio;
//! - on CPUs with AMX, `amx::gemm` for the same shapes: int8 rows, and i16 rows kept tiled in
//!   two int8 planes (an f32/f16 index's ranking copy, four tile products a value), with its
//!   time per `tdpbssd` (one 16 × 16 × 64 tile product) beside the sgemm of the same run;
//! - `dot_rows_i8_i16` for L = 1 in blocks of 256 rows, next to a plain streaming read of the
//!   same bytes: GB/s and ratio;
//! - `dot_score_rows` (an int8 single query's fused dots and scores, C = 9) on both cores as the
//!   query runs it, with and without `prefetch_ahead`, next to a read of the rows on both
//!   cores: the median over paired turns of each one's rate (rows, scales and `r_k` bytes)
//!   over the read's.
//!
//! OpenBLAS reads `OPENBLAS_NUM_THREADS` once, when the library loads, so setting it from
//! `main` would be too late: the binary runs itself again with `OPENBLAS_NUM_THREADS=1` when
//! it is not already set to 1, and sgemm then runs on one thread like the integer kernels.
//!
//! Run: `cargo bench --bench int_kernels` (SEGINF_BENCH_TOKENS overrides the row count).

#[allow(dead_code)] // random_crf: no CRF here
mod common;

// The module is crate-private: compiled into this binary from its source, with the lint
// settings it has in the library (src/lib.rs allows needless_range_loop crate-wide).
#[path = "../src/amx.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, unused_imports)]
mod amx;
#[path = "../src/int_kernels.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, clippy::needless_range_loop)]
mod int_kernels;

use common::{best_of, stream, Rng};
use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use int_kernels::{
    dot_rows_i8_i16, dot_score_rows, gemm, set_prefetch, vnni_available, PackedCols, Rows,
    TokenTerms,
};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2};

/// Rows per `gemm` (int8 rows) call and per `dot_rows_i8_i16` call (as the caller blocks them).
const GEMM_BLOCK: usize = 2048;
const DOT_BLOCK: usize = 256;
/// Rows per `dot_score_rows` call (as a single query blocks them) and labels.
const FUSED_BLOCK: usize = 1024;
const LABELS: usize = 9;
/// Paired turns of the fused kernel's measurement.
const TURNS: usize = 21;

/// The fastest of `reps` runs of `f` and of `g`, in seconds, the two taking turns (so that
/// a busy spell on the shared machine slows both, not just one side of the ratio).
fn best_of_both<A, B>(
    reps: usize,
    mut f: impl FnMut() -> A,
    mut g: impl FnMut() -> B,
) -> (f64, f64) {
    (0..reps).fold((f64::INFINITY, f64::INFINITY), |(a, b), _| {
        (a.min(best_of(1, &mut f)), b.min(best_of(1, &mut g)))
    })
}

fn main() {
    if std::env::var("OPENBLAS_NUM_THREADS").as_deref() != Ok("1") {
        let status = Command::new(std::env::current_exe().expect("the bench binary's path"))
            .args(std::env::args_os().skip(1))
            .env("OPENBLAS_NUM_THREADS", "1")
            .status()
            .expect("running the bench binary again with OPENBLAS_NUM_THREADS=1");
        std::process::exit(status.code().unwrap_or(1));
    }
    let n: usize = std::env::var("SEGINF_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let d = 768usize;
    let mut rng = Rng(5);
    let rows: Vec<i8> = (0..n * d).map(|_| (rng.next() * 127.5) as i8).collect();
    let rows_f32 = Array2::from_shape_fn((n, d), |(i, j)| f32::from(rows[i * d + j]));
    // The caller's bound: 127·U·d < 2^31.
    let u = (i32::MAX as usize / (127 * d)) as f64;
    println!(
        "{n} × {d} int8 rows ({:.0} MB), one thread, AVX-512 VNNI: {}",
        (n * d) as f64 / 1e6,
        vnni_available()
    );

    println!("\ngemm (int8 rows), blocks of {GEMM_BLOCK} rows:");
    let mut scratch = Vec::new();
    for l in [300usize, 64] {
        let cols: Vec<i16> = (0..l * d).map(|_| (rng.next() * u) as i16).collect();
        let packed = PackedCols::new(&cols, l, d);
        let mut out = vec![0i32; GEMM_BLOCK * l];
        let cols_f32 = Array2::from_shape_fn((d, l), |(k, j)| f32::from(cols[j * d + k]));
        let mut c = Array2::<f32>::zeros((GEMM_BLOCK, l));
        let (secs, sgemm) = best_of_both(
            3,
            || {
                for block in rows.chunks(GEMM_BLOCK * d) {
                    gemm(Rows::I8(block), d, &packed, &mut out, &mut scratch);
                }
                out[0]
            },
            || {
                for i0 in (0..n).step_by(GEMM_BLOCK) {
                    let i1 = (i0 + GEMM_BLOCK).min(n);
                    let mut c = c.slice_mut(s![..i1 - i0, ..]);
                    general_mat_mul(1.0, &rows_f32.slice(s![i0..i1, ..]), &cols_f32, 0.0, &mut c);
                }
                c[[0, 0]]
            },
        );
        // A spot check of the last row against the streaming kernel (both exact).
        let mut check = vec![0i32; l];
        let col_refs: Vec<&[i16]> = cols.chunks_exact(d).collect();
        dot_rows_i8_i16(&rows[(n - 1) * d..], d, &col_refs, &mut check);
        let last = (n - 1) % GEMM_BLOCK;
        assert_eq!(out[last * l..(last + 1) * l], check[..]);

        let macs = (n * d * l) as f64;
        println!(
            "  L = {l:>3}: {:>7.1} ms  {:>6.1} GMAC/s | sgemm {:>7.1} ms  {:>6.1} GMAC/s -> {:.2}x sgemm",
            secs * 1e3,
            macs / secs / 1e9,
            sgemm * 1e3,
            macs / sgemm / 1e9,
            sgemm / secs
        );
    }

    tile_gemm(&rows, &rows_f32, d, &mut rng);

    println!("\ndot_rows_i8_i16, L = 1, blocks of {DOT_BLOCK} rows:");
    let col: Vec<i16> = (0..d).map(|_| (rng.next() * u) as i16).collect();
    let mut out = vec![0i32; DOT_BLOCK];
    let bytes: &[u8] = bytemuck::cast_slice(&rows);
    let (secs, read) = best_of_both(
        7,
        || {
            let mut sum = 0i32;
            for block in rows.chunks(DOT_BLOCK * d) {
                dot_rows_i8_i16(block, d, &[&col], &mut out);
                sum = sum.wrapping_add(out[0]);
            }
            sum
        },
        || stream(bytes),
    );
    println!(
        "  {:>7.1} ms  {:>5.1} GB/s | streaming read of the same bytes {:>5.1} GB/s -> {:.0} % of it",
        secs * 1e3,
        bytes.len() as f64 / secs / 1e9,
        bytes.len() as f64 / read / 1e9,
        100.0 * read / secs
    );

    fused(&rows, d, u, &mut rng);
}

/// `f(range)` on both cores, each over half of `0..n` (as the query's rayon tasks split it).
fn on_both_cores<F: Fn(std::ops::Range<usize>) -> f64 + Sync>(n: usize, f: F) -> f64 {
    std::thread::scope(|s| {
        let halves = [0..n / 2, n / 2..n].map(|range| {
            let f = &f;
            s.spawn(move || f(range))
        });
        halves
            .into_iter()
            .map(|h| h.join().expect("a bench thread"))
            .sum()
    })
}

/// The fused single-query kernel with and without prefetching, against a read on both cores.
fn fused(rows: &[i8], d: usize, u: f64, rng: &mut Rng) {
    let n = rows.len() / d;
    let c = LABELS;
    let scales: Vec<f32> = (0..n).map(|_| 0.01 + rng.next().abs() as f32).collect();
    let r: Vec<f64> = (0..n * c).map(|_| rng.next()).collect();
    let classes: Vec<u32> = (0..n).map(|_| (rng.next().abs() * 99.0) as u32).collect();
    let coefs: Vec<f64> = (0..c).map(|_| rng.next()).collect();
    let table: Vec<f64> = (0..(c + 1) * (c + 1) * c).map(|_| rng.next()).collect();
    let col: Vec<i16> = (0..d).map(|_| (rng.next() * u) as i16).collect();
    let query = |prefetch: bool| {
        set_prefetch(prefetch);
        let t = Instant::now();
        let sum = on_both_cores(n, |range| {
            let mut out = vec![0.0f64; FUSED_BLOCK];
            let mut sum = 0.0;
            for start in range.clone().step_by(FUSED_BLOCK) {
                let end = (start + FUSED_BLOCK).min(range.end);
                let terms = TokenTerms {
                    r: &r[start * c..end * c],
                    classes: &classes[start..end],
                    coefs: &coefs,
                    columns: 1,
                    table: &table,
                    skip: None,
                };
                let (block, out) = (&rows[start * d..end * d], &mut out[..end - start]);
                assert!(dot_score_rows(
                    block,
                    &scales[start..end],
                    d,
                    (&col, 1e-4),
                    &terms,
                    out
                ));
                sum += out[0];
            }
            sum
        });
        black_box(sum);
        t.elapsed().as_secs_f64()
    };
    let bytes: &[u8] = bytemuck::cast_slice(rows);
    let read = || {
        let t = Instant::now();
        black_box(on_both_cores(bytes.len(), |range| {
            stream(&bytes[range]) as f64
        }));
        t.elapsed().as_secs_f64()
    };
    if !vnni_available() {
        println!("\ndot_score_rows: no AVX-512 VNNI on this CPU");
        return;
    }
    // Per turn: the read, then the kernel, for each setting; ratios of rates.
    let scanned = (n * (d + 4 + 8 * c)) as f64;
    let (mut with, mut without, mut reads) = (vec![], vec![], vec![]);
    for _ in 0..TURNS {
        for (prefetch, ratios) in [(true, &mut with), (false, &mut without)] {
            let r = read();
            ratios.push((scanned / query(prefetch)) / (bytes.len() as f64 / r));
            reads.push(bytes.len() as f64 / r / 1e9);
        }
    }
    set_prefetch(true);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\ndot_score_rows, L = 1, C = {c}, both cores, blocks of {FUSED_BLOCK} rows ({:.0} MB with scales and r_k):",
        scanned / 1e6
    );
    println!(
        "  with prefetch_ahead {:>3.0} % | without {:>3.0} % of a read of the rows on both cores (median {:.1} GB/s; medians of {TURNS} paired turns)",
        100.0 * median(&mut with),
        100.0 * median(&mut without),
        median(&mut reads)
    );
}

/// `amx::gemm` (int8 rows) and `amx::gemm_tiled` (i16 rows kept tiled, two planes) in blocks of
/// [`GEMM_BLOCK`] rows (the whole blocks of the n rows) next to sgemm on the f32 copies of
/// the int8 rows, turn by turn; the time per `tdpbssd` is
/// what a tile product costs with its loads, stores and the combine of the sums around it.
fn tile_gemm(rows: &[i8], rows_f32: &Array2<f32>, d: usize, rng: &mut Rng) {
    let n = rows_f32.nrows();
    if !amx::available() {
        println!("\ntile gemm: no AMX on this CPU");
        return;
    }
    // i16 rows within the copy's balanced bound, kept tiled as the copy keeps them.
    let bound = ((i32::MAX as usize / d) as f64).sqrt();
    let shape = amx::Tiled { d, planes: 2 };
    let mut tiled = vec![0i8; shape.bytes(n)];
    for i in 0..n * d {
        let (hi, lo) = amx::split((rng.next() * bound) as i16);
        tiled[shape.at(i / d, 0, i % d)] = hi;
        tiled[shape.at(i / d, 1, i % d)] = lo;
    }
    println!("\ntile gemm (AMX), blocks of {GEMM_BLOCK} rows:");
    let mut scratch = amx::GemmScratch::default();
    for l in [300usize, 64] {
        let cols: Vec<i16> = (0..l * d).map(|_| (rng.next() * bound) as i16).collect();
        let Some(tiles) = amx::AmxCols::new(&cols, l, d) else {
            println!("  L = {l}: the tiles refuse these columns");
            continue;
        };
        let mut out = vec![0i32; GEMM_BLOCK * l];
        let cols_f32 = Array2::from_shape_fn((d, l), |(k, j)| f32::from(cols[j * d + k]));
        let mut c = Array2::<f32>::zeros((GEMM_BLOCK, l));
        let blocks = n / GEMM_BLOCK;
        let macs = (blocks * GEMM_BLOCK * d * l) as f64;
        for (what, planes) in [("int8 rows", 1), ("i16 tiled", 2)] {
            let (secs, sgemm) = best_of_both(
                3,
                || {
                    for b in 0..blocks {
                        let ran = match planes {
                            1 => {
                                let block = &rows[b * GEMM_BLOCK * d..(b + 1) * GEMM_BLOCK * d];
                                let rows = (Rows::I8(block), 0);
                                amx::gemm(rows, d, &tiles, &mut out, &mut scratch)
                            }
                            _ => {
                                let range = b * GEMM_BLOCK..(b + 1) * GEMM_BLOCK;
                                let t = (&tiled[..], shape);
                                amx::gemm_tiled(t, range, &tiles, &mut out, &mut scratch)
                            }
                        };
                        assert!(ran, "the tiles ran");
                    }
                },
                || {
                    for b in 0..blocks {
                        let block = rows_f32.slice(s![b * GEMM_BLOCK..(b + 1) * GEMM_BLOCK, ..]);
                        general_mat_mul(1.0, &block, &cols_f32, 0.0, &mut c);
                    }
                },
            );
            // tdpbssd: 16-row tiles × column tiles (8 columns each) × 64-value steps × planes.
            let products = (blocks * GEMM_BLOCK / 16 * l.div_ceil(8) * d / 64 * planes) as f64;
            println!(
                "  L = {l:>3}, {what}: {:>7.1} ms  {:>6.1} GMAC/s  {:>5.2} ns a tdpbssd | sgemm {:>7.1} ms -> {:.2}x sgemm",
                secs * 1e3,
                macs / secs / 1e9,
                secs / products * 1e9,
                sgemm * 1e3,
                sgemm / secs
            );
        }
    }
}
