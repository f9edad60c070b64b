//! Training and Hessian modes on a CoNLL-sized synthetic set (200k tokens, d = 768, C = 9):
//! L-BFGS throughput (tokens × iterations per second, next to the emission GEMM over the same
//! tokens), curvature fitting time, the per-query cost of each Hessian mode against the
//! identity in the same run, and CG iterations to a 1e-8 relative residual.
//!
//! Run: `cargo bench --bench train_hessian` (SEGINF_BENCH_TOKENS overrides the size).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{best_of, Rng};
use ndarray::Array2;
use seginf::hessian::{ExactInverse, Factored, KroneckerInverse};
use seginf::train::{objective, train, TrainOptions, TrainSeq};
use seginf::{BuildOptions, Hessian, IndexBuilder, Query, Storage, TestSegment};

fn main() {
    let tokens: usize = std::env::var("SEGINF_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (c, d) = (9usize, 768usize);
    let mut rng = Rng(5);
    let teacher = common::random_crf(&mut rng, c, d, 0.1);
    let mut data = Vec::new();
    let mut total = 0;
    while total < tokens {
        let n = (1 + ((rng.next() + 1.0) * 14.0) as usize).min(tokens - total);
        let x = Array2::from_shape_fn((n, d), |_| rng.next() as f32);
        let mut y = teacher.viterbi(x.view()).unwrap().0;
        for l in y.iter_mut() {
            if rng.next() > 0.8 {
                *l = ((rng.next() + 1.0) * 4.5) as u32 % c as u32;
            }
        }
        data.push(TrainSeq::labelled(x, y));
        total += n;
    }
    let data = Arc::new(data);
    println!(
        "training set: {tokens} tokens, {} sequences, C = {c}, d = {d}",
        data.len()
    );

    // Baseline: the emission GEMM over all tokens (what one objective evaluation cannot avoid).
    let w32 = teacher.weights().mapv(|v| v as f32);
    let gemm = best_of(2, || {
        data.iter()
            .map(|s| s.features.dot(&w32.t()).sum())
            .sum::<f32>()
    });
    let eval = best_of(2, || objective(&teacher, &data, 1e-4).unwrap());
    println!(
        "objective + gradient, one pass : {:>8.1} ms  ({:.2}x the f32 emission GEMM, {gemm:.3} s)",
        eval * 1e3,
        eval / gemm
    );
    let l2 = 1e-3;
    let start = teacher
        .with_params(&vec![0.0; teacher.num_params()])
        .unwrap();
    let t = Instant::now();
    let iters = 15;
    let fit = train(
        &start,
        &data,
        &TrainOptions {
            l2,
            max_iterations: iters,
            ..TrainOptions::default()
        },
        None,
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "L-BFGS, {} iterations           : {:>8.1} s   {:>9.0} tokens x iterations / s  (max |grad| {:.2e})",
        fit.iterations,
        secs,
        tokens as f64 * fit.iterations as f64 / secs,
        fit.max_abs_gradient
    );
    let crf = Arc::new(fit.crf);

    let t = Instant::now();
    let kfac = KroneckerInverse::fit(Arc::clone(&crf), &data, l2, 1e-3, Factored::Kfac).unwrap();
    println!(
        "fit K-FAC                      : {:>8.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let ekfac = KroneckerInverse::fit(Arc::clone(&crf), &data, l2, 1e-3, Factored::Ekfac).unwrap();
    println!(
        "fit EK-FAC                     : {:>8.1} s",
        t.elapsed().as_secs_f64()
    );
    let exact = Arc::new(ExactInverse::new(
        Arc::clone(&crf),
        Arc::clone(&data),
        l2,
        1e-3,
    ));

    let mut b = IndexBuilder::new(
        Arc::clone(&crf),
        BuildOptions {
            storage: Storage::F32,
            expected_tokens: tokens as u64,
        },
    );
    for (i, s) in data.iter().enumerate() {
        b.add(i as u64, s.features.view(), &s.labels).unwrap();
    }
    let index = Arc::new(b.finish().unwrap());
    let test = &data[0];
    let seg = TestSegment {
        features: test.features.view(),
        labels: &test.labels,
        first: 0,
        last: 0,
    };
    let mut q = Query::new(Arc::clone(&index));
    let identity = best_of(3, || q.run(&seg, 10).unwrap());
    println!(
        "\nper query (one token, k = 10)  : identity {:>7.1} ms",
        identity * 1e3
    );
    for (name, inverse) in [
        (
            "kfac",
            Arc::new(kfac) as Arc<dyn seginf::query::InverseHessian>,
        ),
        ("ekfac", Arc::new(ekfac)),
        ("exact", exact.clone()),
    ] {
        q.options.hessian = Hessian::Inverse(inverse);
        let reps = if name == "exact" { 1 } else { 3 };
        let secs = best_of(reps, || q.run(&seg, 10).unwrap());
        let cg = match name {
            "exact" => exact.last_solve().map_or(String::new(), |(it, r)| {
                format!("  (CG: {it} iterations to relative residual {r:.1e})")
            }),
            _ => String::new(),
        };
        println!(
            "                                  {name:<8} {:>7.1} ms = {:>6.1}x identity{cg}",
            secs * 1e3,
            secs / identity
        );
    }
}
