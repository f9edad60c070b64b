//! Noisy-label ranking (paper §6.1) on a synthetic CoNLL-sized index: every training token
//! against every token of a clean set, as blocked GEMMs with a per-row top-10.
//!
//! Baseline, measured in the same run: one f64 GEMM of the same shape (N × d times d × M),
//! the flops that bound segment influence and nearest-neighbour ranking; for reference, the
//! per-token alternative (one `Query::scores` per clean token) on a sample of clean tokens.
//!
//! `SEGINF_BENCH_TOKENS` (default 200000) and `SEGINF_BENCH_CLEAN` (clean tokens, default
//! 2000: about ten CoNLL documents) set the sizes.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{best_of, Rng};
use ndarray::Array2;
use seginf::rank::{rank_training, CleanSequence, RankMethod, RankOptions};
use seginf::{BuildOptions, IndexBuilder, Query, Storage, TestSegment};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (tokens, clean_tokens) = (
        env("SEGINF_BENCH_TOKENS", 200_000),
        env("SEGINF_BENCH_CLEAN", 2000),
    );
    let (c, d) = (9usize, 768usize);
    let mut rng = Rng(5);
    let crf = Arc::new(common::random_crf(&mut rng, c, d, 0.08));
    let sequence = |n: usize, rng: &mut Rng| {
        let x = Array2::from_shape_fn((n, d), |_| rng.next() as f32);
        let y: Vec<u32> = (0..n)
            .map(|_| ((rng.next() + 1.0) * 4.5) as u32 % c as u32)
            .collect();
        (x, y)
    };
    let mut builder = IndexBuilder::new(
        Arc::clone(&crf),
        BuildOptions {
            storage: Storage::F32,
            expected_tokens: tokens as u64,
        },
    );
    let mut added = 0;
    while added < tokens {
        let n = (1 + ((rng.next() + 1.0) * 14.0) as usize).min(tokens - added);
        let (x, y) = sequence(n, &mut rng);
        builder.add(added as u64, x.view(), &y).unwrap();
        added += n;
    }
    let index = Arc::new(builder.finish().unwrap());
    let clean_data: Vec<(Array2<f32>, Vec<u32>)> = (0..clean_tokens.div_ceil(20))
        .map(|i| sequence(20.min(clean_tokens - 20 * i), &mut rng))
        .collect();
    let clean: Vec<CleanSequence> = clean_data
        .iter()
        .map(|(x, y)| CleanSequence {
            features: x.view(),
            labels: y,
        })
        .collect();
    println!(
        "index: {tokens} tokens, C = {c}, d = {d}; clean set: {clean_tokens} tokens in {} sequences",
        clean.len()
    );

    // The bound: N × d × M multiply-adds in f64.
    let flops = 2.0 * tokens as f64 * d as f64 * clean_tokens as f64;
    let f = Array2::from_shape_fn((tokens, d), |_| rng.next());
    let cols = Array2::from_shape_fn((clean_tokens, d), |_| rng.next());
    let gemm = best_of(2, || f.dot(&cols.t()));
    println!(
        "baseline  dgemm {tokens} x {d} x {clean_tokens}: {gemm:.2} s = {:.1} GFLOP/s",
        flops / gemm / 1e9
    );
    drop((f, cols));

    for method in [
        RankMethod::SegmentInfluence,
        RankMethod::SegmentNearest,
        RankMethod::InstanceInfluence,
        RankMethod::TokenLoss,
    ] {
        let options = RankOptions {
            method,
            ..RankOptions::default()
        };
        let t = best_of(2, || rank_training(&index, &options, &clean).unwrap());
        println!(
            "rank {:20} {t:7.2} s = {:5.2}x the dgemm time ({:.0} k training tokens/s)",
            method.name(),
            t / gemm,
            tokens as f64 / t / 1e3
        );
    }

    // The per-token alternative: one exact score vector per clean token, on a sample.
    let sample = 20.min(clean_tokens);
    let mut query = Query::new(Arc::clone(&index));
    let started = Instant::now();
    for t in 0..sample {
        let (x, y) = &clean_data[t / 20];
        let segment = TestSegment {
            features: x.view(),
            labels: y,
            first: t % 20,
            last: t % 20,
        };
        std::hint::black_box(query.scores(&segment).unwrap());
    }
    let per_token = started.elapsed().as_secs_f64() / sample as f64;
    println!(
        "one Query::scores per clean token: {per_token:.3} s each, {:.1} s for the clean set ({:.1}x the dgemm time)",
        per_token * clean_tokens as f64,
        per_token * clean_tokens as f64 / gemm
    );
}
