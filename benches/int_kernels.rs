//! The exact integer kernels of `src/int_kernels.rs` on 200k × 768 int8 rows, single-threaded
//! (the caller parallelises over blocks of rows), each next to its baseline measured in the
//! same run (the machine is shared and noisy):
//! - `gemm` (int8 rows) for L = 300 and 64 in blocks of 2048 rows, next to OpenBLAS sgemm of the
//!   same shapes (ndarray's `general_mat_mul` on f32 copies of the rows): GMAC/s and ratio;
//! - `dot_rows_i8_i16` for L = 1 in blocks of 256 rows, next to a plain streaming read of the
//!   same bytes: GB/s and ratio.
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
#[path = "../src/int_kernels.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, clippy::needless_range_loop)]
mod int_kernels;

use common::{best_of, stream, Rng};
use std::process::Command;

use int_kernels::{dot_rows_i8_i16, gemm, vnni_available, PackedCols, Rows};
use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2};

/// Rows per `gemm` (int8 rows) call and per `dot_rows_i8_i16` call (as the caller blocks them).
const GEMM_BLOCK: usize = 2048;
const DOT_BLOCK: usize = 256;

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
}
