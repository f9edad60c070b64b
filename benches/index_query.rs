//! Index and query throughput on a synthetic CoNLL-sized index: 200k training tokens, d = 768,
//! C = 9. Every figure is printed next to a baseline measured in the same run (the machine is
//! shared and noisy): the fastest of three plain reads of the same bytes for single queries
//! (u64 words, the ceiling until session 16, printed beside it; 64-byte AVX-512 loads; the
//! same asking ahead: `common::ReadKind`), an OpenBLAS sgemm of the same shape for batches,
//! and (when python3 with numpy is available) the paper's NumPy factored scorer,
//! `(F·f_qᵀ) ∘ (Err·e_qᵀ)` then argpartition, batched 300.
//!
//! Run: `cargo bench --bench index_query` (SEGINF_BENCH_TOKENS overrides the index size,
//! SEGINF_BENCH_STORAGE=f32|f16|int8 measures one storage type, SEGINF_BENCH_SINGLE_ONLY skips
//! the batches, SEGINF_BENCH_REPS sets the single-query repetitions, SEGINF_BENCH_SEGMENT=m
//! makes the single queries m-token segments, 1 to 8, such as an entity's).

mod common;

use common::{best_of, stream_as, stream_kinds, ReadKind, Rng};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array2};
use seginf::{BuildOptions, Index, IndexBuilder, Query, Storage, TestSegment};

/// The query's threads: rayon's pool (`RAYON_NUM_THREADS`, else every core), which the read
/// runs on too. `RAYON_NUM_THREADS=1` compares one core's query with one core's read: the
/// regime where the host leaves each core all the bandwidth it can pull, steadier than the
/// two-core runs.
fn rayon_threads() -> usize {
    rayon::current_num_threads()
}

/// A plain read of `columns` (each `tokens ×` its bytes per token) as `kind` on the query's thread
/// pool, one contiguous range of tokens per thread, each column's share of it streamed in
/// turn: the bytes a query's scan reads, in the same pages, split as its scan splits them,
/// started and woken the same way (a read on freshly spawned threads paid ~50 µs more per
/// call, and rayon's idle workers yielding beside it), so the ratio compares the two loops.
fn stream_parallel(columns: &[&[u8]], tokens: usize, kind: ReadKind) -> u64 {
    use rayon::prelude::*;
    let per_thread = tokens.div_ceil(rayon_threads());
    (0..tokens.div_ceil(per_thread))
        .into_par_iter()
        .with_min_len(1)
        .map(|part| {
            let range = part * per_thread..((part + 1) * per_thread).min(tokens);
            columns.iter().fold(0, |acc: u64, column| {
                let width = column.len() / tokens;
                acc.wrapping_add(stream_as(
                    kind,
                    &column[range.start * width..range.end * width],
                ))
            })
        })
        .reduce(|| 0, u64::wrapping_add)
}

/// One turn of a single-query measurement, in seconds: each kind of read (as
/// `common::stream_kinds` lists them, u64 words first) and the query.
struct Turn {
    reads: Vec<f64>,
    query: f64,
}

impl Turn {
    /// The u64-word read: the ceiling until session 16.
    fn words(&self) -> f64 {
        self.reads[0]
    }

    /// The fastest read of the turn: the ceiling.
    fn fastest(&self) -> f64 {
        self.reads.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

fn main() {
    let tokens: usize = std::env::var("SEGINF_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (c, d) = (9usize, 768usize);
    let mut rng = Rng(11);
    let crf = Arc::new(common::random_crf(&mut rng, c, d, 0.08));
    let features = Array2::from_shape_fn((tokens, d), |_| rng.next() as f32);
    let labels: Vec<u32> = (0..tokens)
        .map(|_| ((rng.next() + 1.0) * 4.5) as u32 % c as u32)
        .collect();
    let mut bounds = vec![0usize];
    while *bounds.last().unwrap() < tokens {
        let len = 1 + ((rng.next() + 1.0) * 14.0) as usize;
        bounds.push((bounds.last().unwrap() + len).min(tokens));
    }
    println!(
        "index: {tokens} tokens, {} sequences, C = {c}, d = {d}",
        bounds.len() - 1
    );

    let build = |storage| {
        let t = Instant::now();
        let mut b = IndexBuilder::new(
            Arc::clone(&crf),
            BuildOptions {
                storage,
                expected_tokens: tokens as u64,
            },
        );
        for (i, w) in bounds.windows(2).enumerate() {
            b.add(
                i as u64,
                features.slice(s![w[0]..w[1], ..]),
                &labels[w[0]..w[1]],
            )
            .unwrap();
        }
        let index = Arc::new(b.finish().unwrap());
        (index, t.elapsed().as_secs_f64())
    };
    let mut indexes: Vec<(Storage, Arc<Index>)> = Vec::new();
    // SEGINF_BENCH_STORAGE=int8 (or f16, f32) measures one storage type only (profiling).
    let only = std::env::var("SEGINF_BENCH_STORAGE").ok();
    let storages = [Storage::F32, Storage::F16, Storage::Int8];
    for storage in storages
        .into_iter()
        .filter(|s| only.as_deref().is_none_or(|o| o == s.name()))
    {
        let (index, secs) = build(storage);
        println!(
            "build {:>4}: {:>7.0} ms  {:>9.0} tokens/s",
            storage.name(),
            secs * 1e3,
            tokens as f64 / secs
        );
        indexes.push((storage, index));
    }

    // A test sentence; single-token query segment unless asked for more.
    let test = features.slice(s![0..12, ..]).to_owned();
    let test_labels = labels[0..12].to_vec();
    let m: usize = std::env::var("SEGINF_BENCH_SEGMENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .clamp(1, 8);
    println!(
        "\nsingle query ({m} token{}, k = 10), {} threads:",
        if m == 1 { "" } else { "s" },
        rayon_threads()
    );
    let kinds = stream_kinds();
    for (storage, index) in &indexes {
        let bytes = index.scan_bytes();
        let columns = index.scan_columns();
        let mut q = Query::new(Arc::clone(index));
        let seg = TestSegment {
            features: test.view(),
            labels: &test_labels,
            first: 3,
            last: 3 + m - 1,
        };
        let reps = std::env::var("SEGINF_BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9);
        // One query first: whatever it builds once per index (the i16 copy of the rows that
        // an f16 index's entities of 4–8 tokens rank through where the CPU has the AMX tiles:
        // as many bytes as the f16 rows) is not the query's time; reported here.
        let first = best_of(1, || q.run(&seg, 10).unwrap());
        if index.ranking_copy_bytes() > 0 {
            println!(
                "  {:>4}: first query {:.0} ms, building the i16 copy of the rows ({:.0} MB)",
                storage.name(),
                first * 1e3,
                index.ranking_copy_bytes() as f64 / 1e6
            );
        }
        // The reads and the query in turns, so that each turn sees the same host load (other
        // work on this machine moves the ceiling by ±20 % between seconds); each ratio
        // reported is the median of the turns'. Each turn times every kind of read (in an
        // order that rotates, so that none is always the one just before the query); the
        // turn's ceiling is the fastest of them.
        let turns: Vec<Turn> = (0..reps.max(1))
            .map(|turn| {
                let mut reads = vec![f64::INFINITY; kinds.len()];
                for i in 0..kinds.len() {
                    let at = (i + turn) % kinds.len();
                    reads[at] = best_of(1, || stream_parallel(&columns, tokens, kinds[at]));
                }
                Turn {
                    reads,
                    query: best_of(1, || q.run(&seg, 10).unwrap()),
                }
            })
            .collect();
        let fastest = |f: &dyn Fn(&Turn) -> f64| turns.iter().map(f).fold(f64::INFINITY, f64::min);
        let median_ratio = |f: &dyn Fn(&Turn) -> f64| {
            let mut ratios: Vec<f64> = turns.iter().map(|t| f(t) / t.query).collect();
            ratios.sort_by(f64::total_cmp);
            ratios[ratios.len() / 2]
        };
        let gb_s = |secs: f64| bytes as f64 / secs / 1e9;
        println!(
            "  {:>4}: {:>7.1} ms  {:>5.1} GB/s of {:>4.0} MB   | streaming read of the same bytes {:>5.1} GB/s -> {:>3.0} % of ceiling | u64 words alone {:>5.1} GB/s -> {:>3.0} % (medians of {} turns)",
            storage.name(),
            fastest(&|t| t.query) * 1e3,
            gb_s(fastest(&|t| t.query)),
            bytes as f64 / 1e6,
            gb_s(fastest(&Turn::fastest)),
            100.0 * median_ratio(&Turn::fastest),
            gb_s(fastest(&Turn::words)),
            100.0 * median_ratio(&Turn::words),
            turns.len()
        );
        let each: Vec<String> = kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| format!("{kind:?} {:.1}", gb_s(fastest(&|t| t.reads[i]))))
            .collect();
        println!("        reads (GB/s, fastest turn): {}", each.join(", "));
    }

    if std::env::var("SEGINF_BENCH_SINGLE_ONLY").is_ok() {
        return;
    }
    // With the integer kernels (AVX-512 VNNI or AVX2) int8 rows, and the f32/f16 index's i16
    // ranking copy, go through the integer GEMM (i16 columns); OpenBLAS sgemm otherwise. The
    // baselines are the same f32 sgemm and NumPy.
    let mut numpy = None;
    for (storage, index) in &indexes {
        println!(
            "\nbatched single-token queries, k = 10 ({} index):",
            storage.name()
        );
        batches(index, &features, &test, &test_labels, &mut numpy);
    }
}

/// Turns of each batch measurement: the batch, the sgemm and (Q = 300) the NumPy scorer run
/// one after the other in each turn, and each ratio is the median of the turns' ratios (the
/// host's speed moves between turns; a best-of-n of each measured at different moments
/// says little).
const TURNS: usize = 5;

/// Q = 64 and 300 single-token queries in one batch, next to an sgemm of the same shape (into
/// a preallocated output) and (Q = 300) the NumPy scorer, in paired turns.
fn batches(
    index: &Arc<Index>,
    features: &Array2<f32>,
    test: &Array2<f32>,
    test_labels: &[u32],
    numpy: &mut Option<Option<NumPy>>,
) {
    let (tokens, d) = features.dim();
    let c = index.crf().num_labels();
    for qn in [64usize, 300] {
        let segs: Vec<TestSegment> = (0..qn)
            .map(|i| TestSegment {
                features: test.view(),
                labels: test_labels,
                first: i % 12,
                last: i % 12,
            })
            .collect();
        let mut q = Query::new(Arc::clone(index));
        let t = Instant::now();
        q.run_batch(&segs, 10).unwrap();
        if index.ranking_copy_bytes() > 0 && qn == 64 {
            println!(
                "  first batch, building the index's i16 ranking copy ({:.0} MB) if not built yet: {:.0} ms",
                index.ranking_copy_bytes() as f64 / 1e6,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        let cols = Array2::from_shape_fn((d, qn), |(i, j)| ((i + j) % 7) as f32 * 0.1);
        let mut product = Array2::<f32>::zeros((tokens, qn));
        let mut numpy = match qn {
            300 => numpy
                .get_or_insert_with(|| NumPy::start(tokens, d, c, qn))
                .as_mut(),
            _ => None,
        };
        let (mut ours, mut vs_sgemm, mut vs_numpy) = (vec![], vec![], vec![]);
        for _ in 0..TURNS {
            let secs = best_of(1, || q.run_batch(&segs, 10).unwrap());
            let sgemm = best_of(1, || {
                general_mat_mul(1.0, features, &cols, 0.0, &mut product)
            });
            ours.push(secs);
            vs_sgemm.push(sgemm / secs);
            if let Some(per_query) = numpy.as_mut().and_then(|p| p.time()) {
                vs_numpy.push(per_query / (secs / qn as f64));
            }
        }
        let fallbacks = q.exact_fallbacks();
        let flops = 2.0 * tokens as f64 * d as f64 * qn as f64;
        let secs = median(&mut ours);
        println!(
            "  Q = {qn:>3}: {:>7.1} ms  {:>7.0} queries/s  {:>6.1} GFLOP/s | vs sgemm {tokens}x{d}x{qn}: {:>3.0} % (median of {TURNS} paired turns)",
            secs * 1e3,
            qn as f64 / secs,
            flops / secs / 1e9,
            100.0 * median(&mut vs_sgemm)
        );
        println!("          ({fallbacks} of {qn} queries needed the exact fallback scan)");
        if qn != 300 {
            continue;
        }
        match vs_numpy.len() {
            0 => println!(
                "  NumPy baseline skipped: python3 with numpy is not available (pip install numpy)"
            ),
            _ => {
                let (lo, hi) = vs_numpy
                    .iter()
                    .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
                println!(
                    "  vs the NumPy factored scorer (paper), batched {qn}: {:.1}x faster per query (median of {} paired turns; {lo:.1}-{hi:.1}x)",
                    median(&mut vs_numpy),
                    vs_numpy.len()
                );
            }
        }
    }
}

/// The median (upper median for an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The paper's NumPy scorer on the same shapes, in a python process that times one batch per
/// request (so that its turns interleave with seginf's).
struct NumPy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NumPy {
    /// `None` without python3 and numpy.
    fn start(n: usize, d: usize, c: usize, q: usize) -> Option<NumPy> {
        let script = format!(
            r#"
import sys, time, numpy as np
rng = np.random.default_rng(0)
F = rng.standard_normal(({n}, {d}), dtype=np.float32)
Err = rng.standard_normal(({n}, {c}), dtype=np.float32)
fq = rng.standard_normal(({q}, {d}), dtype=np.float32)
eq = rng.standard_normal(({q}, {c}), dtype=np.float32)
def run():
    t = time.perf_counter()
    S = (F @ fq.T) * (Err @ eq.T)
    top = np.argpartition(S, 10, axis=0)[:10]
    bot = np.argpartition(-S, 10, axis=0)[:10]
    return time.perf_counter() - t
run()
print("ready", flush=True)
for line in sys.stdin:
    print(run() / {q}, flush=True)
"#
        );
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        (line.trim() == "ready").then_some(NumPy {
            child,
            stdin,
            stdout,
        })
    }

    /// Seconds per query of one batch.
    fn time(&mut self) -> Option<f64> {
        writeln!(self.stdin).ok()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).ok()?;
        line.trim().parse().ok()
    }
}

impl Drop for NumPy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
