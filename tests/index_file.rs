//! Saving and opening indexes (bit-identical scores, clear errors on damaged files or the wrong
//! model), compressed storage accuracy, and concurrent queries on one shared index.

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use ndarray::Array2;
use seginf::{
    BuildOptions, Crf, Error, Granularity, Index, IndexBuilder, Query, Storage, TestSegment,
};

struct Data {
    crf: Arc<Crf>,
    seqs: Vec<(u64, Array2<f32>, Vec<u32>)>,
}

/// A random CRF and `tokens` training tokens in sentences of 1..=20, labels mostly the
/// model's own (so error vectors are realistic: small for easy tokens, large for the rest).
fn data(seed: u64, tokens: usize, d: usize) -> Data {
    let mut rng = Rng::new(seed);
    let crf = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 5,
            d,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
    ));
    let mut seqs = Vec::new();
    let mut total = 0;
    while total < tokens {
        let n = 1 + rng.below(20);
        let x = random_features(&mut rng, n, d);
        let mut y = crf.viterbi(x.view()).unwrap().0;
        for l in y.iter_mut() {
            if rng.chance(0.2) {
                *l = rng.below(5) as u32;
            }
        }
        seqs.push((seqs.len() as u64 * 3 + 1, x, y));
        total += n;
    }
    Data { crf, seqs }
}

fn build(data: &Data, storage: Storage) -> Index {
    let mut b = IndexBuilder::new(
        Arc::clone(&data.crf),
        BuildOptions {
            storage,
            expected_tokens: 0,
        },
    );
    for (doc, x, y) in &data.seqs {
        b.add(*doc, x.view(), y).unwrap();
    }
    b.finish().unwrap()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seginf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn all_scores(index: &Arc<Index>, data: &Data) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut q = Query::new(Arc::clone(index));
    for granularity in [
        Granularity::Token,
        Granularity::Instance,
        Granularity::NearestCosine,
    ] {
        q.options.granularity = granularity;
        for (_, x, y) in data.seqs.iter().take(3) {
            let seg = TestSegment {
                features: x.view(),
                labels: y,
                first: 0,
                last: y.len() - 1,
            };
            out.push(q.scores(&seg).unwrap());
        }
    }
    out
}

#[test]
fn save_then_open_gives_bit_identical_scores() {
    let data = data(21, 3000, 12);
    for storage in [Storage::F32, Storage::F16, Storage::Int8] {
        let built = Arc::new(build(&data, storage));
        let path = temp(&format!("roundtrip-{}.safetensors", storage.name()));
        built.save(&path).unwrap();
        let opened = Arc::new(Index::open(&path, Arc::clone(&data.crf)).unwrap());
        assert_eq!(
            (
                opened.num_tokens(),
                opened.num_sequences(),
                opened.storage()
            ),
            (built.num_tokens(), built.num_sequences(), storage)
        );
        let (a, b) = (all_scores(&built, &data), all_scores(&opened, &data));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{storage:?}: scores differ after reopening"
            );
        }
        assert_eq!(built.token_losses(), opened.token_losses());
        // Saving over an existing file replaces it atomically and leaves no temporary behind.
        built.save(&path).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

/// What a scan streams (`Index::scan_columns`, read by the bench's ceiling): per token, the
/// stored row (and an int8 row's scale), `r_k`, the label and the pair class of the previous
/// and next labels; the same bytes after saving and opening; `scan_bytes` their total.
#[test]
fn scan_columns_are_the_stored_rows_and_token_columns() {
    let data = data(22, 500, 12);
    let (n, d, c) = (data.seqs.iter().map(|s| s.2.len()).sum::<usize>(), 12, 5);
    let as_u32 = |b: &[u8]| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    };
    let labels: Vec<u32> = data.seqs.iter().flat_map(|s| s.2.clone()).collect();
    for (storage, row_widths) in [
        (Storage::F32, vec![4 * d]),
        (Storage::F16, vec![2 * d]),
        (Storage::Int8, vec![d, 4]),
    ] {
        let built = build(&data, storage);
        let path = temp(&format!("scan-{}.safetensors", storage.name()));
        built.save(&path).unwrap();
        let opened = Index::open(&path, Arc::clone(&data.crf)).unwrap();
        let columns = built.scan_columns();
        let widths: Vec<usize> = columns.iter().map(|col| col.len() / n).collect();
        let want: Vec<usize> = row_widths.into_iter().chain([8 * c, 4, 4, 4]).collect();
        assert_eq!(widths, want, "{storage:?}: bytes per token of each column");
        assert!(columns.iter().all(|col| col.len() % n == 0));
        assert_eq!(built.scan_bytes(), n * want.iter().sum::<usize>());
        assert_eq!(columns, opened.scan_columns(), "{storage:?}: reopened");
        let k = columns.len() - 2;
        assert_eq!(as_u32(columns[k]), labels, "{storage:?}: labels");
        // Each sequence's previous and next labels are its labels shifted, none (C) at the
        // ends; a token's pair class is previous · (C + 1) + next.
        let mut classes = Vec::new();
        for (_, _, y) in &data.seqs {
            let prev = std::iter::once(c as u32).chain(y[..y.len() - 1].iter().copied());
            let next = y[1..].iter().copied().chain(std::iter::once(c as u32));
            classes.extend(prev.zip(next).map(|(p, n)| p * (c as u32 + 1) + n));
        }
        assert_eq!(as_u32(columns[k + 1]), classes, "{storage:?}: pair classes");
        // Before the labels: the r_k (f64) and their norms rounded up to f32.
        let errors: Vec<f64> = (columns[k - 2].chunks_exact(8))
            .map(|w| f64::from_le_bytes(w.try_into().unwrap()))
            .collect();
        let norms = as_u32(columns[k - 1]).into_iter().map(f32::from_bits);
        for (r, norm) in errors.chunks_exact(c).zip(norms) {
            let exact = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            let norm = f64::from(norm);
            let ulp = f64::from(f32::EPSILON);
            assert!(
                norm >= exact && norm <= exact * (1.0 + ulp),
                "{norm} vs {exact}"
            );
        }
        if storage == Storage::F32 {
            let rows: Vec<u8> = data
                .seqs
                .iter()
                .flat_map(|s| s.1.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
                .collect();
            assert_eq!(columns[0], rows.as_slice(), "the f32 rows as given");
        }
    }
}

#[test]
fn damaged_files_and_wrong_models_are_clear_errors() {
    let data = data(22, 500, 6);
    let index = build(&data, Storage::F32);
    let path = temp("damage.safetensors");
    index.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let open = |b: &[u8], name: &str| {
        let p = temp(name);
        std::fs::write(&p, b).unwrap();
        Index::open(&p, Arc::clone(&data.crf))
    };
    // Truncations anywhere: header length, inside the header, inside the data, one byte short.
    for len in [0, 4, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        match open(&bytes[..len], "truncated.safetensors") {
            Err(Error::Format(m)) => assert!(!m.is_empty()),
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    // Single bit flips across the whole file, header included.
    let mut rng = Rng::new(5);
    for _ in 0..60 {
        let mut flipped = bytes.clone();
        let at = rng.below(flipped.len());
        flipped[at] ^= 1 << rng.below(8);
        match open(&flipped, "flipped.safetensors") {
            Err(Error::Format(_) | Error::ModelMismatch(_) | Error::Unsupported(_)) => {}
            Ok(_) => panic!(
                "a flipped bit at byte {at} of {} went unnoticed",
                bytes.len()
            ),
            Err(other) => panic!("byte {at}: unexpected {other:?}"),
        }
    }
    // Another CRF of the same shape: refused by fingerprint.
    let mut rng = Rng::new(99);
    let other = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 5,
            d: 6,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
    ));
    assert!(
        matches!(Index::open(&path, other), Err(Error::ModelMismatch(m)) if m.contains("fingerprint"))
    );
    let smaller = Arc::new(random_crf(
        &mut rng,
        Shape {
            c: 3,
            d: 6,
            bias: true,
            start: true,
            end: true,
            forbid: 0.0,
        },
    ));
    assert!(
        matches!(Index::open(&path, smaller), Err(Error::ModelMismatch(m)) if m.contains("3 labels"))
    );
    assert!(matches!(
        Index::open(&temp("missing.safetensors"), Arc::clone(&data.crf)),
        Err(Error::Io(_))
    ));
    // A query with features of the wrong width.
    let mut q = Query::new(Arc::new(index));
    let x = Array2::<f32>::zeros((3, 7));
    let seg = TestSegment {
        features: x.view(),
        labels: &[0, 1, 2],
        first: 0,
        last: 1,
    };
    assert!(matches!(q.run(&seg, 5), Err(Error::DimensionMismatch(_))));
}

/// Mean fraction of the f32 top-10 (supporting and opposing) that a compressed index finds.
fn top10_overlap(
    reference: &Arc<Index>,
    compressed: &Arc<Index>,
    data: &Data,
    queries: usize,
) -> f64 {
    let (mut a, mut b) = (
        Query::new(Arc::clone(reference)),
        Query::new(Arc::clone(compressed)),
    );
    let mut total = 0.0;
    let mut count = 0.0;
    for (_, x, y) in data.seqs.iter().step_by(7).take(queries) {
        let seg = TestSegment {
            features: x.view(),
            labels: y,
            first: 0,
            last: 0,
        };
        let (ra, rb) = (a.run(&seg, 10).unwrap(), b.run(&seg, 10).unwrap());
        for (p, q) in [
            (&ra.supporting, &rb.supporting),
            (&ra.opposing, &rb.opposing),
        ] {
            let ids = |h: &Vec<seginf::Hit>| {
                h.iter()
                    .map(|h| (h.doc_id, h.position))
                    .collect::<std::collections::HashSet<_>>()
            };
            total += ids(p).intersection(&ids(q)).count() as f64 / 10.0;
            count += 1.0;
        }
    }
    total / count
}

#[test]
fn compressed_storage_keeps_the_top_10() {
    let data = data(23, 50_000, 32);
    let f32_index = Arc::new(build(&data, Storage::F32));
    assert!(f32_index.num_tokens() >= 50_000);
    for storage in [Storage::F16, Storage::Int8] {
        let compressed = Arc::new(build(&data, storage));
        let overlap = top10_overlap(&f32_index, &compressed, &data, 100);
        println!("{storage:?}: top-10 overlap with f32 over 100 queries = {overlap:.4}");
        assert!(overlap >= 0.99, "{storage:?}: top-10 overlap {overlap}");
    }
}

#[test]
fn eight_threads_on_one_index_agree_with_one_thread() {
    let data = Arc::new(data(24, 5000, 16));
    let index = Arc::new(build(&data, Storage::F16));
    let run = |index: &Arc<Index>, data: &Data| -> Vec<seginf::TopHits> {
        let mut q = Query::new(Arc::clone(index));
        data.seqs
            .iter()
            .take(20)
            .map(|(_, x, y)| {
                q.run(
                    &TestSegment {
                        features: x.view(),
                        labels: y,
                        first: 0,
                        last: y.len() - 1,
                    },
                    25,
                )
                .unwrap()
            })
            .collect()
    };
    let expected = run(&index, &data);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (index, data) = (Arc::clone(&index), Arc::clone(&data));
            std::thread::spawn(move || run(&index, &data))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), expected);
    }
}

#[test]
fn f16_storage_refuses_values_it_cannot_hold() {
    let data = data(25, 50, 4);
    let mut b = IndexBuilder::new(
        Arc::clone(&data.crf),
        BuildOptions {
            storage: Storage::F16,
            expected_tokens: 0,
        },
    );
    let (doc, x, y) = &data.seqs[0];
    b.add(*doc, x.view(), y).unwrap();
    let mut big = x.clone();
    big[[0, 1]] = 1e5;
    let err = b.add(9, big.view(), y).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("f16 range") && m.contains("doc 9")),
        "{err}"
    );
    assert_eq!(
        b.num_tokens(),
        y.len(),
        "nothing of the refused sequence was added"
    );
    // f32 and int8 storage take the same values.
    for storage in [Storage::F32, Storage::Int8] {
        let mut b = IndexBuilder::new(
            Arc::clone(&data.crf),
            BuildOptions {
                storage,
                expected_tokens: 0,
            },
        );
        b.add(9, big.view(), y).unwrap();
    }
}
