//! The streaming row kernels of a single query against 1–8 test columns (a segment's tokens),
//! one core, for f32, f16 and int8 rows (d = 768): each kernel over 100k rows from memory
//! next to a plain read of the same rows, in paired turns (the machine is shared and noisy:
//! the ratio is the median of the turns' ratios), and over 128 rows hot in L2 (what the
//! instructions alone cost). A kernel whose hot time per row nears the read's is bound by
//! instructions, not memory (BENCHMARKS.md, session 10). Then the block scoring that follows
//! the dots (`kernels::token_raws`, C = 9), per token: hot, and with each block's `r` rows in
//! memory (an `r` row is 72 bytes), scoring every token or, with the skip test, a given share
//! of them (session 11).
//!
//! Bytes per row: f32 3072, f16 1536, int8 768; per row and column, d multiply-adds. On a CPU
//! with AMX, int8 rows also through the tiles (`amx`, session 12).
//!
//! Run: `cargo bench --bench row_kernels` (SEGINF_BENCH_TOKENS overrides the row count,
//! SEGINF_BENCH_COLUMNS the column counts, comma-separated).

#[allow(dead_code)] // random_crf: no CRF here
mod common;

// The modules are crate-private: compiled into this binary from their sources, with the lint
// settings they have in the library (src/lib.rs allows needless_range_loop crate-wide).
#[path = "../src/amx.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, unused_imports)]
mod amx;
#[path = "../src/int_kernels.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, clippy::needless_range_loop)]
mod int_kernels;
#[path = "../src/kernels.rs"]
#[deny(unsafe_code)]
#[allow(dead_code, unused_imports, clippy::needless_range_loop)]
mod kernels;

use common::{best_of, stream, Rng};
use std::hint::black_box;

/// Rows per kernel call (as a single query blocks them), rows kept hot, paired turns.
const BLOCK: usize = 1024;
const HOT_ROWS: usize = 128;
const TURNS: usize = 7;

/// One storage's rows and its kernel over a range of them.
struct Kernel<'a> {
    name: &'static str,
    bytes: &'a [u8],
    run: Box<dyn Fn(std::ops::Range<usize>, usize) + 'a>,
}

fn main() {
    let d = 768;
    let rows: usize = std::env::var("SEGINF_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let columns: Vec<usize> = std::env::var("SEGINF_BENCH_COLUMNS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4, 5, 8]);
    let mut rng = Rng(7);
    let f32_rows: Vec<f32> = (0..rows * d).map(|_| rng.next() as f32).collect();
    let f16_rows: Vec<half::f16> = f32_rows.iter().map(|&v| half::f16::from_f32(v)).collect();
    let i8_rows: Vec<i8> = f32_rows.iter().map(|&v| (v * 127.0) as i8).collect();
    let cols: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..d).map(|_| rng.next() as f32).collect())
        .collect();
    let cols16: Vec<Vec<i16>> = (cols.iter())
        .map(|c| c.iter().map(|&v| (v * 3000.0) as i16).collect())
        .collect();
    println!("{rows} rows of d = {d}, one core, {BLOCK} rows per call; hot: {HOT_ROWS} rows in L2");
    for &m in columns.iter().filter(|&&m| (1..=8).contains(&m)) {
        let c: Vec<&[f32]> = cols[..m].iter().map(|v| v.as_slice()).collect();
        let c16: Vec<&[i16]> = cols16[..m].iter().map(|v| v.as_slice()).collect();
        let out = std::cell::RefCell::new(vec![0f32; BLOCK * m]);
        let ints = std::cell::RefCell::new(vec![0i32; BLOCK * m]);
        let tiles = amx::AmxCols::new(&c16.concat(), m, d);
        let mut kernels = vec![
            Kernel {
                name: "f32",
                bytes: bytemuck::cast_slice(&f32_rows),
                run: Box::new(|r, d| {
                    kernels::dot_rows_f32(&f32_rows, r, d, &c, &mut out.borrow_mut())
                }),
            },
            Kernel {
                name: "f16",
                bytes: bytemuck::cast_slice(&f16_rows),
                run: Box::new(|r, d| {
                    kernels::dot_rows_f16(&f16_rows, r, d, &c, &mut out.borrow_mut())
                }),
            },
            Kernel {
                name: "int8",
                bytes: bytemuck::cast_slice(&i8_rows),
                run: Box::new(|r: std::ops::Range<usize>, d| {
                    let rows = &i8_rows[r.start * d..r.end * d];
                    int_kernels::dot_rows_i8_i16(rows, d, &c16, &mut ints.borrow_mut())
                }),
            },
        ];
        // int8 rows through the AMX tiles (whole groups of 64 rows), where the CPU has them.
        if let Some(tiles) = &tiles {
            let (i8_rows, ints) = (&i8_rows, &ints);
            kernels.push(Kernel {
                name: "int8 tiles",
                bytes: bytemuck::cast_slice(i8_rows),
                run: Box::new(move |r: std::ops::Range<usize>, d| {
                    let rows = &i8_rows[r.start * d..r.end * d];
                    black_box(amx::dot_rows(rows, d, tiles, &mut ints.borrow_mut()));
                }),
            });
        }
        for k in &kernels {
            let scan = || {
                for s in (0..rows).step_by(BLOCK) {
                    (k.run)(s..(s + BLOCK).min(rows), d);
                }
            };
            let hot = best_of(5, || {
                for _ in 0..200 {
                    (k.run)(0..HOT_ROWS, d);
                }
            }) / (200 * HOT_ROWS) as f64;
            let mut turns: Vec<(f64, f64)> = (0..TURNS)
                .map(|_| (best_of(1, scan), best_of(1, || black_box(stream(k.bytes)))))
                .collect();
            let mut ratios: Vec<f64> = turns.iter().map(|(t, read)| read / t).collect();
            ratios.sort_by(f64::total_cmp);
            turns.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (t, read) = turns[TURNS / 2];
            let per_row = |t: f64| t / rows as f64 * 1e9;
            println!(
                "  {m} column(s), {:>10}: hot {:6.1} ns/row | from memory {:6.1} ns/row, a read \
                 {:6.1} -> {:3.0} % of the read (median of {TURNS} paired turns)",
                k.name,
                hot * 1e9,
                per_row(t),
                per_row(read),
                100.0 * ratios[TURNS / 2],
            );
        }
    }
    scoring(&columns);
}

/// The block scoring that follows the dots ([`kernels::token_raws`]) for blocks of
/// [`BLOCK`] tokens, C = 9: hot (one block's `r` rows in L2), and cold (each block's from a
/// 1M-token array, as a query meets them: one line of `r` in memory per scored token, the
/// dots hot as after the block's dot pass). Without the skip (every token scored), and with a
/// cut that lets the given share of the tokens' bounds through (the bench's queries: 10–32 %).
fn scoring(columns: &[usize]) {
    use int_kernels::{f32_at_least, SkipBelow, TokenTerms};
    let (c, n, big) = (9, BLOCK, 1 << 20);
    let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let mut rng = Rng(11);
    let classes: Vec<u32> = (0..big)
        .map(|_| ((rng.next() + 1.0) * 50.0) as u32 % 100)
        .collect();
    let table: Vec<f64> = (0..100 * c).map(|_| rng.next() * 0.1).collect();
    // Spiky r: most rows small (as a trained model's), a few large.
    let r: Vec<f64> = (0..big * c)
        .map(|i| rng.next() * if (i / c) % 5 == 0 { 1.0 } else { 0.05 })
        .collect();
    let norms: Vec<f32> = r.chunks_exact(c).map(|r| f32_at_least(norm(r))).collect();
    let row = |p: usize| &table[p * c..(p + 1) * c];
    let table_norms: Vec<f32> = classes
        .iter()
        .map(|&p| f32_at_least(norm(row(p as usize))))
        .collect();
    println!("block scoring, {n} tokens, C = {c}, ns a token, hot / cold:");
    for &m in columns.iter().filter(|&&m| (1..=8).contains(&m)) {
        let coefs: Vec<f64> = (0..m * c).map(|_| rng.next()).collect();
        let dots: Vec<f32> = (0..n * m).map(|_| rng.next() as f32 * 3.0).collect();
        let cols: Vec<&[f64]> = coefs.chunks_exact(c).collect();
        let coef_norms: Vec<f64> = cols.iter().map(|v| norm(v)).collect();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let coef_gram: Vec<f64> = (cols.iter())
            .flat_map(|a| cols.iter().map(|b| dot(a, b)))
            .collect();
        // The cut from the first block's bounds (the blocks' tokens are alike).
        let mut bounds: Vec<f64> = (0..n)
            .map(|i| {
                let u: Vec<f64> = (0..c)
                    .map(|j| {
                        (0..m)
                            .map(|l| f64::from(dots[i * m + l]) * cols[l][j])
                            .sum()
                    })
                    .collect();
                f64::from(norms[i]) * (norm(&u) + f64::from(table_norms[i]))
            })
            .collect();
        bounds.sort_by(f64::total_cmp);
        let mut out = vec![0.0; n];
        let mut line = format!("  {m} column(s):");
        for share in [1.0, 0.3, 0.17, 0.1, 0.0] {
            let below = bounds
                .get(((1.0 - share) * n as f64) as usize)
                .map_or(f64::MAX, |b| *b);
            let block = |b: usize| {
                let t = b * n..(b + 1) * n;
                let skip = (share < 1.0).then_some(SkipBelow {
                    norms: &norms[t.clone()],
                    coef_norms: &coef_norms,
                    coef_gram: &coef_gram,
                    table_norms: &table_norms[t.clone()],
                    below,
                });
                TokenTerms {
                    r: &r[t.start * c..t.end * c],
                    classes: &classes[t],
                    coefs: &coefs,
                    columns: m,
                    table: &table,
                    skip,
                }
            };
            let hot = best_of(7, || {
                for _ in 0..100 {
                    kernels::token_raws(&block(0), &dots, black_box(&mut out));
                }
            });
            let cold = best_of(3, || {
                for b in 0..big / n {
                    kernels::token_raws(&block(b), &dots, black_box(&mut out));
                }
            });
            let what = if share < 1.0 {
                format!("{:.0} % scored", share * 100.0)
            } else {
                "all".into()
            };
            let per = |t: f64, blocks: usize| t / (blocks * n) as f64 * 1e9;
            line += &format!(
                " {what} {:5.2} / {:5.2} |",
                per(hot, 100),
                per(cold, big / n)
            );
        }
        println!("{}", line.trim_end_matches(" |"));
    }
}
