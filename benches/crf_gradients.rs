//! Throughput of single-token segment gradients (the factored `r_t` of every token, DESIGN.md
//! §2) over a CoNLL-sized synthetic corpus: 200k tokens in sentences of 14.5 tokens on average,
//! C = 9, d = 768. Printed next to the emission GEMM alone (the part no CRF code can avoid), in
//! the same run, so the ratio is meaningful on a shared, noisy machine.
//!
//! Run: `cargo bench --bench crf_gradients` (SEGINF_BENCH_TOKENS overrides the corpus size).

mod common;

use common::{best_of, Rng};
use std::hint::black_box;

use ndarray::{s, Array2};

fn main() {
    let tokens: usize = std::env::var("SEGINF_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (c, d) = (9usize, 768usize);
    let mut rng = Rng(7);
    let features = Array2::from_shape_fn((tokens, d), |_| rng.next() as f32);
    // Sentence lengths 1..=28 (mean 14.5, like CoNLL-2003's 14.5 tokens per sentence).
    let mut bounds = vec![0usize];
    while *bounds.last().unwrap() < tokens {
        let len = 1 + (rng.next().abs() * 28.0) as usize;
        bounds.push((bounds.last().unwrap() + len.max(1)).min(tokens));
    }
    let labels: Vec<u32> = (0..tokens)
        .map(|_| (rng.next().abs() * c as f64) as u32 % c as u32)
        .collect();
    let crf = common::random_crf(&mut rng, c, d, 0.05);
    let sentences = bounds.len() - 1;
    println!("corpus: {tokens} tokens, {sentences} sentences, C = {c}, d = {d}");
    let flops = 2.0 * tokens as f64 * d as f64 * c as f64;
    let bytes = (tokens * d * 4) as f64;

    // Baselines: the emission GEMM over the whole corpus at once, f32 and f64.
    let w32 = crf.weights().mapv(|v| v as f32);
    let sgemm = best_of(3, || features.dot(&w32.t()));
    let dgemm = best_of(3, || features.mapv(f64::from).dot(&crf.weights().t()));

    // What an index build does: per sentence, emissions (f64) then every token's r_t and CL(t,t).
    let per_sentence = |f: &dyn Fn(usize, usize)| {
        for w in bounds.windows(2) {
            f(w[0], w[1]);
        }
    };
    let gradients = best_of(3, || {
        per_sentence(&|a, b| {
            let (losses, errors) = crf
                .token_errors(features.slice(s![a..b, ..]), &labels[a..b])
                .expect("valid input");
            black_box((losses, errors));
        })
    });
    // The general segment path, one call per token (what a naive caller would do), on a tenth.
    let tenth = bounds.len() / 10;
    let general = best_of(1, || {
        for w in bounds[..tenth + 1].windows(2) {
            let x = features.slice(s![w[0]..w[1], ..]);
            for t in 0..w[1] - w[0] {
                black_box(
                    crf.segment_gradient(x, &labels[w[0]..w[1]], t, t)
                        .expect("valid"),
                );
            }
        }
    });
    let general_tokens = bounds[tenth] as f64;

    let rate = |secs: f64, n: f64| n / secs;
    println!("emission GEMM, f32 sgemm, whole corpus : {:>8.1} ms  {:>6.1} GFLOP/s  {:>5.1} GB/s of features",
        sgemm * 1e3, flops / sgemm / 1e9, bytes / sgemm / 1e9);
    println!("emission GEMM, f64 dgemm, whole corpus : {:>8.1} ms  {:>6.1} GFLOP/s  (seginf's f64 path, incl. widening)",
        dgemm * 1e3, flops / dgemm / 1e9);
    println!("single-token gradients (token_errors)   : {:>8.1} ms  {:>10.0} tokens/s  = {:.2}x the f64 emission GEMM time",
        gradients * 1e3, rate(gradients, tokens as f64), gradients / dgemm);
    println!("single-token gradients (segment_gradient per token, {} tokens): {:>10.0} tokens/s  ({:.1}x slower than token_errors)",
        general_tokens, rate(general, general_tokens), rate(gradients, tokens as f64) / rate(general, general_tokens));
}
