//! The `seginf` command line, run as a program: help texts, the corpus → train → index →
//! query → inspect round trip checked against the Rust API, bad files named by file and line,
//! and the demo's artifact result.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use seginf::data::{split_doc_id, Conll, ReadOptions};
use seginf::hessian::{ExactInverse, Factored, KroneckerInverse};
use seginf::query::InverseHessian;
use seginf::rank::{rank_training, Aggregate, CleanSequence, RankMethod, RankOptions};
use seginf::train::TrainSeq;
use seginf::{Crf, Granularity, Hessian, Index, LoadOptions, Normalization, Query, TestSegment};
use serde_json::Value;

fn seginf(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seginf"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the seginf binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = seginf(dir, args);
    assert!(
        out.status.success(),
        "seginf {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs a command whose arguments the parser must refuse (exit code 2, a usage message);
/// returns its stderr.
fn refused(dir: &Path, args: &[&str]) -> String {
    let out = seginf(dir, args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "seginf {args:?}: {stderr}");
    assert!(stderr.contains("Usage: seginf"), "{stderr}");
    stderr
}

/// Runs a command that must fail (exit code 1, not a crash); returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = seginf(dir, args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "seginf {args:?}: {stderr}");
    assert!(stderr.starts_with("seginf: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn every_command_has_help_naming_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &[&str]); 9] = [
        (
            &["--help"],
            &[
                "train", "index", "query", "inspect", "demo", "corpus", "<< 32",
            ],
        ),
        (
            &["train", "--help"],
            &[
                "--train",
                "--features",
                "--features-tensor",
                "--out",
                "--l2",
                "--max-iterations",
                "--scheme",
                "--constraints",
                "--label-column",
                "iob1",
            ],
        ),
        (
            &["index", "build", "--help"],
            &[
                "--model",
                "--train",
                "--features",
                "--out",
                "--storage",
                "int8",
                "(document << 32) | sentence",
            ],
        ),
        (
            &["query", "--help"],
            &[
                "--model",
                "--index",
                "--test",
                "--doc",
                "--sentence",
                "--token",
                "--span",
                "--entity",
                "--labels",
                "--granularity",
                "nearest-cosine",
                "--normalize",
                "-k",
                "--context",
                "--train",
                "--curvature",
                "--exact-hessian",
                "--train-features",
                "--damping",
                "--l2",
            ],
        ),
        (
            &["index", "curvature", "--help"],
            &[
                "--model",
                "--train",
                "--mode",
                "ekfac",
                "--damping",
                "--l2",
                "--out",
            ],
        ),
        (&["inspect", "--help"], &["--json", "FILE"]),
        (
            &["rank-noise", "--help"],
            &[
                "--model",
                "--index",
                "--clean",
                "--clean-features",
                "--method",
                "--all",
                "--format",
                "--top",
                "--per",
                "segment-influence",
                "token-entropy",
            ],
        ),
        (
            &["demo", "--help"],
            &["--out", "<art>", "--train-documents"],
        ),
        (
            &["corpus", "--help"],
            &[
                "--out",
                "--systematic",
                "--random",
                "--held-out",
                "--artifact-fraction",
                "clean.conll",
            ],
        ),
    ];
    for (args, words) in cases {
        let help = ok(dir.path(), args);
        for w in words {
            assert!(
                help.contains(w),
                "seginf {args:?} does not mention {w}:\n{help}"
            );
        }
    }
}

/// A small noisy corpus in `dir` (train/test/clean .conll + .npy, noise.tsv).
fn small_corpus(dir: &Path) -> String {
    ok(
        dir,
        &[
            "corpus",
            "--out",
            ".",
            "--documents",
            "60",
            "--held-out",
            "20",
            "--systematic",
            "2",
            "--random",
            "3",
            "--seed",
            "5",
        ],
    )
}

#[test]
fn corpus_writes_conll_features_and_the_noise_truth() {
    let dir = tempfile::tempdir().unwrap();
    let said = small_corpus(dir.path());
    assert!(
        said.contains("40 documents") && said.contains("2 with systematic noise"),
        "{said}"
    );
    let train = Conll::read(&dir.path().join("train.conll"), &ReadOptions::default()).unwrap();
    assert_eq!(train.documents.len(), 40);
    let x = seginf::data::read_features(&dir.path().join("train.npy"), None).unwrap();
    assert_eq!(x.dim(), (train.num_tokens(), 48));
    // The rows are the synthetic features of the words, in file order.
    let first = train.documents[0].sentences[0].words.clone();
    let expected = seginf::corpus::sentence_features(&first, 48).unwrap();
    assert_eq!(x.slice(ndarray::s![0..first.len(), ..]), expected);
    let test = Conll::read(&dir.path().join("test.conll"), &ReadOptions::default()).unwrap();
    assert_eq!(test.documents.len(), 20);
    let clean = Conll::read(&dir.path().join("clean.conll"), &ReadOptions::default()).unwrap();
    assert_eq!(clean.documents.len(), 7);
    assert!(said.contains("clean.conll: 7 held-out documents"), "{said}");
    let truth = std::fs::read_to_string(dir.path().join("noise.tsv")).unwrap();
    let rows: Vec<&str> = truth.lines().skip(1).collect();
    assert_eq!(rows.len(), 40);
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("\ttrue\tfalse\t"))
            .count(),
        2
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("\tfalse\ttrue\t"))
            .count(),
        3
    );
}

/// A query's options, the test labels they select, the segment, and what the API is asked.
type Case<'a> = (
    &'a [&'a str],
    &'a Vec<u32>,
    (usize, usize),
    Granularity,
    Normalization,
);

/// `seginf query` on the round trip's model, index and test file (with its features); the
/// sentence, segment and options follow.
const QUERY_TEST_FILE: &[&str] = &[
    "query",
    "--model",
    "model.safetensors",
    "--index",
    "index.safetensors",
    "--test",
    "test.conll",
    "--features",
    "test.npy",
];

/// The test sentence most queries of the round trip ask about (document 1, sentence 0).
const TEST_SENTENCE: &[&str] = &["--doc", "1", "--sentence", "0"];

fn hits(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn train_index_query_inspect_round_trip_agrees_with_the_rust_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    small_corpus(dir);
    let said = ok(
        dir,
        &[
            "train",
            "--train",
            "train.conll",
            "--features",
            "train.npy",
            "--constraints",
            "--out",
            "model.safetensors",
            "--tolerance",
            "1e-4",
        ],
    );
    assert!(said.contains("9 labels, 48 features"), "{said}");
    let said = ok(
        dir,
        &[
            "index",
            "build",
            "--model",
            "model.safetensors",
            "--train",
            "train.conll",
            "--features",
            "train.npy",
            "--out",
            "index.safetensors",
        ],
    );
    let train = Conll::read(&dir.join("train.conll"), &ReadOptions::default()).unwrap();
    assert!(
        said.contains(&format!("indexed {} tokens", train.num_tokens())),
        "{said}"
    );

    // inspect: the right counts, as text and as JSON.
    let info = ok(dir, &["inspect", "index.safetensors"]);
    assert!(info.contains(&train.num_tokens().to_string()), "{info}");
    let json: Value =
        serde_json::from_str(&ok(dir, &["inspect", "--json", "index.safetensors"])).unwrap();
    assert_eq!(json["kind"], "index");
    assert_eq!(json["num_tokens"], train.num_tokens());
    assert_eq!(json["num_sequences"], train.num_sentences());
    assert_eq!(json["storage"], "f32");
    let model: Value =
        serde_json::from_str(&ok(dir, &["inspect", "--json", "model.safetensors"])).unwrap();
    assert_eq!(model["kind"], "model");
    // The file's labels: O first, then by entity type.
    assert_eq!(
        model["labels"],
        serde_json::json!([
            "O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"
        ])
    );
    assert_eq!(model["scheme"], "iob2");
    assert_eq!(model["feature_dim"], 48);
    assert_eq!(json["crf_fingerprint"], model["fingerprint"]);
    assert!(model["forbidden_transitions"].as_u64().unwrap() > 0);

    // The same queries through the Rust API.
    let crf = Arc::new(
        Crf::load_safetensors(&dir.join("model.safetensors"), &LoadOptions::default()).unwrap(),
    );
    let labels = seginf::ModelMetadata::read(&dir.join("model.safetensors"))
        .unwrap()
        .labels;
    let index = Arc::new(Index::open(&dir.join("index.safetensors"), Arc::clone(&crf)).unwrap());
    let test = Conll::read(&dir.join("test.conll"), &ReadOptions::default()).unwrap();
    let x = seginf::data::read_features(&dir.join("test.npy"), None).unwrap();
    let features = test.split_features(x.view(), "test.npy").unwrap();
    let gold = test.label_ids(&labels).unwrap();
    let (doc, sentence) = (1, 0);
    let row = test
        .sentences()
        .position(|(d, s, _)| (d, s) == (doc, sentence))
        .unwrap();
    let words = &test.documents[doc].sentences[sentence].words;
    let predicted = crf.viterbi(features[row].view()).unwrap().0;
    let entity = seginf::data::entity_spans(
        seginf::TagScheme::Bio,
        &test.documents[doc].sentences[sentence].labels,
    )
    .unwrap()[0]
        .clone();

    // (options, the test labels they select, segment, what the API is asked)
    let (token, instance, cosine) = (
        Granularity::Token,
        Granularity::Instance,
        Granularity::NearestCosine,
    );
    let (plain, normalised) = (Normalization::None, Normalization::GradientNorm);
    let cases: [Case; 4] = [
        (&["--token", "0"], &predicted, (0, 0), token, plain),
        (
            &["--span", "1:3", "--labels", "gold", "--normalize"],
            &gold[row],
            (1, 3),
            token,
            normalised,
        ),
        (
            &[
                "--entity",
                "0",
                "--labels",
                "gold",
                "--granularity",
                "instance",
            ],
            &gold[row],
            (entity.first, entity.last),
            instance,
            plain,
        ),
        (
            &["--token", "0", "--granularity", "nearest-cosine"],
            &predicted,
            (0, 0),
            cosine,
            plain,
        ),
    ];
    for (extra, y, (first, last), granularity, normalization) in cases {
        let shown = ["-k", "4", "--train", "train.conll", "--context", "2"];
        let args = [QUERY_TEST_FILE, TEST_SENTENCE, &shown, extra].concat();
        let out = seginf(dir, &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(&words[first]),
            "{}",
            text(&out.stderr)
        );
        let got = hits(&text(&out.stdout));

        let mut query = Query::new(Arc::clone(&index));
        query.options.granularity = granularity;
        query.options.normalization = normalization;
        let segment = TestSegment {
            features: features[row].view(),
            labels: y,
            first,
            last,
        };
        let want = query.run(&segment, 4).unwrap();
        // Every case has a gradient to rank by (a token inside an entity may have none).
        assert!(
            want.supporting.iter().any(|h| h.score != 0.0),
            "{extra:?}: all scores 0"
        );
        let expected: Vec<(&str, usize, &seginf::Hit)> = want
            .supporting
            .iter()
            .enumerate()
            .map(|(i, h)| ("supporting", i + 1, h))
            .chain(
                want.opposing
                    .iter()
                    .enumerate()
                    .map(|(i, h)| ("opposing", i + 1, h)),
            )
            .collect();
        assert_eq!(got.len(), expected.len(), "{extra:?}");
        for (line, (side, rank, hit)) in got.iter().zip(expected) {
            assert_eq!(line["side"], side, "{extra:?}");
            assert_eq!(line["rank"], rank);
            assert_eq!(line["score"].as_f64(), Some(hit.score), "{extra:?}: {line}");
            assert_eq!(line["doc_id"], hit.doc_id);
            let (d, s) = split_doc_id(hit.doc_id);
            assert_eq!(
                (line["doc"].clone(), line["sentence"].clone()),
                (d.into(), s.into())
            );
            let source = &train.documents[d].sentences[s];
            match granularity {
                Granularity::Instance => {
                    assert!(line["position"].is_null() && line["label"].is_null());
                    assert_eq!(line["tokens"], serde_json::json!(source.words));
                }
                _ => {
                    let p = hit.position as usize;
                    assert_eq!(line["position"], hit.position);
                    assert_eq!(line["label"], labels[hit.label as usize]);
                    assert_eq!(line["label"], source.labels[p]);
                    assert_eq!(line["token"], source.words[p]);
                    assert_eq!(
                        line["left"],
                        serde_json::json!(source.words[p.saturating_sub(2)..p])
                    );
                    assert_eq!(
                        line["right"],
                        serde_json::json!(source.words[p + 1..(p + 3).min(source.len())])
                    );
                }
            }
        }
    }

    // index curvature, then query --curvature: the fit the Rust API makes with the model's
    // recorded l2, and the same hits as a query with that inverse Hessian.
    let said = ok(
        dir,
        &[
            "index",
            "curvature",
            "--model",
            "model.safetensors",
            "--train",
            "train.conll",
            "--features",
            "train.npy",
            "--mode",
            "ekfac",
            "--damping",
            "0.01",
            "--out",
            "curvature.safetensors",
        ],
    );
    assert!(said.contains("fitted EK-FAC on"), "{said}");
    let meta = seginf::ModelMetadata::read(&dir.join("model.safetensors")).unwrap();
    let l2: f64 = meta.extra["l2"].parse().unwrap();
    let tx = seginf::data::read_features(&dir.join("train.npy"), None).unwrap();
    let data: Vec<TrainSeq> = train
        .split_features(tx.view(), "train.npy")
        .unwrap()
        .into_iter()
        .zip(train.label_ids(&labels).unwrap())
        .map(|(x, y)| TrainSeq::labelled(x, y))
        .collect();
    let fitted = KroneckerInverse::fit(Arc::clone(&crf), &data, l2, 0.01, Factored::Ekfac).unwrap();
    let saved =
        KroneckerInverse::open(&dir.join("curvature.safetensors"), Arc::clone(&crf)).unwrap();
    let g: Vec<f64> = (crf.params().iter().enumerate())
        .map(|(i, p)| {
            if p.is_finite() {
                ((i * 7) % 13) as f64 - 6.0
            } else {
                0.0
            }
        })
        .collect();
    let (want, got) = (fitted.apply(&g).unwrap(), saved.apply(&g).unwrap());
    assert!(want
        .iter()
        .zip(&got)
        .all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + a.abs())));
    // The segment both Hessian modes are queried for: the entity at tokens 1..=3, gold labels.
    let span = ["--span", "1:3", "--labels", "gold", "-k", "4"];
    let args = ["--curvature", "curvature.safetensors"];
    let out = ok(
        dir,
        &[QUERY_TEST_FILE, TEST_SENTENCE, &span, &args].concat(),
    );
    let mut query = Query::new(Arc::clone(&index));
    query.options.hessian = Hessian::Inverse(Arc::new(saved));
    let segment = TestSegment {
        features: features[row].view(),
        labels: &gold[row],
        first: 1,
        last: 3,
    };
    let want = query.run(&segment, 4).unwrap();
    let scores: Vec<f64> = want
        .supporting
        .iter()
        .chain(&want.opposing)
        .map(|h| h.score)
        .collect();
    let printed: Vec<f64> = hits(&out)
        .iter()
        .map(|l| l["score"].as_f64().unwrap())
        .collect();
    assert_eq!(printed, scores);
    // ... which are not the identity's (the segment has a gradient).
    query.options.hessian = Hessian::Identity { damping: 1.0 };
    let identity = query.run(&segment, 4).unwrap();
    assert_ne!(identity.supporting[0].score, scores[0]);
    // Not a curvature file: an error, not a crash.
    let args = ["--token", "2", "--curvature", "index.safetensors"];
    let said = fails(dir, &[QUERY_TEST_FILE, TEST_SENTENCE, &args].concat());
    assert!(said.contains("curvature"), "{said}");

    // query --exact-hessian: the same hits as a query with the exact inverse (conjugate
    // gradient over the training data, the model's recorded l2), and not the identity's.
    let exact_args = [
        "--exact-hessian",
        "--damping",
        "0.01",
        "--train",
        "train.conll",
        "--train-features",
        "train.npy",
    ];
    let out = seginf(
        dir,
        &[QUERY_TEST_FILE, TEST_SENTENCE, &span, &exact_args].concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("exact Hessian: conjugate gradient"),
        "{}",
        text(&out.stderr)
    );
    let exact = ExactInverse::new(Arc::clone(&crf), Arc::new(data), l2, 0.01);
    query.options.hessian = Hessian::Inverse(Arc::new(exact));
    let want = query.run(&segment, 4).unwrap();
    let printed: Vec<(u64, u32, f64)> = hits(&text(&out.stdout))
        .iter()
        .map(|l| {
            let position = l["position"].as_u64().unwrap() as u32;
            (
                l["doc_id"].as_u64().unwrap(),
                position,
                l["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, u32, f64)> = (want.supporting.iter().chain(&want.opposing))
        .map(|h| (h.doc_id, h.position, h.score))
        .collect();
    // Two CG solves to a relative residual of 1e-8 (the CLI's and this one) may differ in the
    // last digits; the ranking and the scores to 1e-6 agree.
    assert_eq!(printed.len(), expected.len());
    for (p, e) in printed.iter().zip(&expected) {
        assert_eq!((p.0, p.1), (e.0, e.1), "{printed:?} vs {expected:?}");
        assert!(
            (p.2 - e.2).abs() <= 1e-6 * e.2.abs(),
            "{printed:?} vs {expected:?}"
        );
    }
    assert!(expected.iter().all(|e| e.2 != identity.supporting[0].score));
    // Bad uses: clean errors.
    let without_train = ["--token", "2", "--exact-hessian"];
    let said = refused(
        dir,
        &[QUERY_TEST_FILE, TEST_SENTENCE, &without_train].concat(),
    );
    assert!(said.contains("--train"), "{said}");
    // The other bad uses, each a valid --exact-hessian query with one thing changed.
    fn exact_query<'a>(changed: &[&'a str], then: &[&'a str]) -> Vec<&'a str> {
        let (train, features) = match changed {
            [train, features] => (*train, *features),
            _ => ("train.conll", "train.npy"),
        };
        let mut args = [QUERY_TEST_FILE, TEST_SENTENCE].concat();
        args.extend(["--token", "2", "--exact-hessian", "--train", train]);
        if !features.is_empty() {
            args.extend(["--train-features", features]);
        }
        args.extend(then);
        args
    }
    let said = refused(
        dir,
        &exact_query(&[], &["--curvature", "curvature.safetensors"]),
    );
    assert!(said.contains("cannot be used with"), "{said}");
    let said = fails(dir, &exact_query(&["train.conll", ""], &[]));
    assert!(said.contains("--train-features"), "{said}");
    let said = fails(dir, &exact_query(&["clean.conll", "clean.npy"], &[]));
    assert!(said.contains("clean.conll"), "{said}");
    let said = fails(dir, &exact_query(&[], &["--damping=-1"]));
    assert!(said.contains("must be finite and >= 0"), "{said}");

    // rank-noise: the same ranking as seginf::rank, per document and per token.
    let clean = Conll::read(&dir.join("clean.conll"), &ReadOptions::default()).unwrap();
    let cx = seginf::data::read_features(&dir.join("clean.npy"), None).unwrap();
    let clean_features = clean.split_features(cx.view(), "clean.npy").unwrap();
    let clean_labels = clean.label_ids(&labels).unwrap();
    let clean_set: Vec<CleanSequence> = clean_features
        .iter()
        .zip(&clean_labels)
        .map(|(x, y)| CleanSequence {
            features: x.view(),
            labels: y,
        })
        .collect();
    let rank = |method: RankMethod| {
        let options = RankOptions {
            method,
            doc_id_shift: 32,
            ..RankOptions::default()
        };
        rank_training(&index, &options, &clean_set).unwrap()
    };
    let base = [
        "rank-noise",
        "--model",
        "model.safetensors",
        "--index",
        "index.safetensors",
        "--clean",
        "clean.conll",
        "--clean-features",
        "clean.npy",
        "-q",
    ];
    let with = |extra: &[&'static str]| base.iter().chain(extra).copied().collect::<Vec<&str>>();
    let rows = hits(&ok(
        dir,
        &with(&[
            "--method",
            "segment-influence",
            "--format",
            "json",
            "--sort",
            "max",
        ]),
    ));
    let want = rank(RankMethod::SegmentInfluence).documents_by(Aggregate::Max);
    assert_eq!(rows.len(), want.len());
    assert_eq!(rows.len(), train.documents.len());
    for (i, (row, doc)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(row["method"], "segment-influence");
        assert_eq!(row["rank"], i + 1);
        assert_eq!(row["document"], doc.doc_id);
        assert_eq!(row["mean"].as_f64(), Some(doc.mean));
        assert_eq!(row["max"].as_f64(), Some(doc.max));
        assert_eq!(row["items"], doc.items);
    }
    let tsv = ok(
        dir,
        &with(&["--all", "--limit", "3", "--train", "train.conll"]),
    );
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], "method\trank\tdocument\tmean\tmax\titems");
    assert_eq!(lines.len(), 1 + 3 * RankMethod::ALL.len(), "{tsv}");
    for method in RankMethod::ALL {
        let top = rank(method).documents[0];
        let first = format!("{}\t1\t{}\t", method.name(), top.doc_id);
        assert!(
            lines.iter().any(|l| l.starts_with(&first)),
            "{first} not in {tsv}"
        );
    }
    let tokens = hits(&ok(
        dir,
        &with(&[
            "--method",
            "token-loss",
            "--per",
            "token",
            "--format",
            "json",
            "--limit",
            "5",
            "--train",
            "train.conll",
        ]),
    ));
    let mut losses: Vec<(f64, usize)> = index.token_losses().iter().copied().zip(0..).collect();
    losses.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (row, (loss, k)) in tokens.iter().zip(&losses) {
        assert_eq!(row["score"].as_f64(), Some(*loss));
        let (doc_id, position) = index.token_id(*k);
        let (d, s) = split_doc_id(doc_id);
        assert_eq!(
            (row["doc_id"].as_u64(), row["position"].as_u64()),
            (Some(doc_id), Some(position.into()))
        );
        assert_eq!(
            row["token"],
            train.documents[d].sentences[s].words[position as usize]
        );
        assert_eq!(
            row["label"],
            train.documents[d].sentences[s].labels[position as usize]
        );
    }
    let e = fails(
        dir,
        &[
            "rank-noise",
            "--model",
            "model.safetensors",
            "--index",
            "index.safetensors",
            "--method",
            "segment-influence",
        ],
    );
    assert!(e.contains("--clean"), "{e}");
    let out = seginf(dir, &with(&["--method", "no-such-method"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("token-entropy"),
        "{}",
        text(&out.stderr)
    );

    // Without --train, hits carry ids only.
    let first_token: &[&str] = &["--doc", "0", "--sentence", "0", "--token", "0"];
    let out = ok(
        dir,
        &[QUERY_TEST_FILE, first_token, &["-k", "1", "-q"]].concat(),
    );
    let lines = hits(&out);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].get("token").is_none() && lines[0]["position"].is_u64());

    // Bad queries are errors that say why.
    let with = |extra: &[&'static str]| [QUERY_TEST_FILE, &["--doc", "0"], extra].concat();
    let e = fails(dir, &with(&["--sentence", "99", "--token", "0"]));
    assert!(e.contains("no sentence 99"), "{e}");
    let e = fails(dir, &with(&["--sentence", "0", "--token", "999"]));
    assert!(e.contains("test.conll:") && e.contains("999"), "{e}");
    let e = fails(dir, &with(&["--sentence", "0", "--entity", "999"]));
    assert!(e.contains("no entity 999"), "{e}");
    // A query of document 0's first token with `model`, without --features.
    let unfeatured = |model: &'static str| {
        let file = ["query", "--model", model, "--index", "index.safetensors"];
        [&file[..], &["--test", "test.conll"], first_token].concat()
    };
    // The model was trained on features from a file: synthetic ones would be wrong answers.
    let e = fails(dir, &unfeatured("model.safetensors"));
    assert!(e.contains("--features"), "{e}");
    // An index built for another model is refused.
    ok(
        dir,
        &[
            "train",
            "--train",
            "train.conll",
            "--out",
            "other.safetensors",
            "--max-iterations",
            "3",
            "-q",
        ],
    );
    let e = fails(dir, &unfeatured("other.safetensors"));
    assert!(e.contains("another CRF"), "{e}");
}

#[test]
fn bad_files_are_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write(
        "ok.conll",
        "-DOCSTART- O\n\nAnna B-PER\nVarga I-PER\nspoke O\n\nin O\nKelby B-LOC\n",
    );
    // A ragged line.
    write(
        "ragged.conll",
        "Anna NNP B-PER\nVarga NNP I-PER\n\nspoke O\n",
    );
    let e = fails(
        dir,
        &["train", "--train", "ragged.conll", "--out", "m.safetensors"],
    );
    assert!(
        e.contains("ragged.conll:4:") && e.contains("columns"),
        "{e}"
    );
    // Feature rows that do not match the tokens, both ways.
    let x = ndarray::Array2::<f32>::zeros((4, 12));
    seginf::data::write_npy(&dir.join("short.npy"), x.view()).unwrap();
    let e = fails(
        dir,
        &[
            "train",
            "--train",
            "ok.conll",
            "--features",
            "short.npy",
            "--out",
            "m.safetensors",
        ],
    );
    assert!(
        e.contains("ok.conll:8:") && e.contains("short.npy has 4 rows"),
        "{e}"
    );
    let x = ndarray::Array2::<f32>::zeros((6, 12));
    seginf::data::write_npy(&dir.join("long.npy"), x.view()).unwrap();
    let e = fails(
        dir,
        &[
            "train",
            "--train",
            "ok.conll",
            "--features",
            "long.npy",
            "--out",
            "m.safetensors",
        ],
    );
    assert!(
        e.contains("long.npy has 6 rows") && e.contains("ok.conll") && e.contains("line 8"),
        "{e}"
    );
    // An IOB1 file read as IOB2 (the default) is named, with the fix.
    write("iob1.conll", "EU I-ORG\nrejects O\n");
    let e = fails(
        dir,
        &["train", "--train", "iob1.conll", "--out", "m.safetensors"],
    );
    assert!(e.contains("iob1.conll:1:") && e.contains("iob1"), "{e}");
    // A label the model does not know.
    ok(
        dir,
        &[
            "train",
            "--train",
            "ok.conll",
            "--out",
            "m.safetensors",
            "--feature-dim",
            "12",
            "-q",
        ],
    );
    write(
        "unknown.conll",
        "Anna B-PER\nspoke O\n\nat O\nHelix B-ORG\n",
    );
    let e = fails(
        dir,
        &[
            "index",
            "build",
            "--model",
            "m.safetensors",
            "--train",
            "unknown.conll",
            "--out",
            "i.safetensors",
        ],
    );
    assert!(
        e.contains("unknown.conll:5:") && e.contains("\"B-ORG\""),
        "{e}"
    );
    // Features of the wrong width for the model.
    let x = ndarray::Array2::<f32>::zeros((5, 7));
    seginf::data::write_npy(&dir.join("narrow.npy"), x.view()).unwrap();
    let e = fails(
        dir,
        &[
            "index",
            "build",
            "--model",
            "m.safetensors",
            "--train",
            "ok.conll",
            "--features",
            "narrow.npy",
            "--out",
            "i.safetensors",
        ],
    );
    assert!(e.contains("narrow.npy") && e.contains("expects 12"), "{e}");
    // Not a model, not a CoNLL file, a missing file.
    write("junk.safetensors", "junk");
    let e = fails(dir, &["inspect", "junk.safetensors"]);
    assert!(e.contains("junk.safetensors"), "{e}");
    let e = fails(
        dir,
        &[
            "train",
            "--train",
            "missing.conll",
            "--out",
            "m.safetensors",
        ],
    );
    assert!(e.contains("missing.conll"), "{e}");
    assert!(!dir.join("i.safetensors").exists());
}

#[test]
fn demo_finds_the_artifact_and_writes_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    // A smaller corpus than the demo's default (300 + 100 documents, the setting of
    // tests/artifact.rs) keeps this test at a few seconds; the result is the same there.
    let out = ok(
        tmp.path(),
        &[
            "demo",
            "--out",
            "demo",
            "-q",
            "--train-documents",
            "150",
            "--test-documents",
            "60",
        ],
    );
    let summary = out
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_else(|| panic!("no summary in\n{out}"));
    // As tests/artifact.rs asserts: normalised segment influence's top supporter is right after
    // an artifact for every test token the CRF labels B-PER after one.
    assert!(
        summary.contains("segment influence 100.0 % normalised"),
        "{out}"
    );
    assert!(out.contains("query: test document"), "{out}");
    for f in [
        "train.conll",
        "train.npy",
        "test.conll",
        "test.npy",
        "clean.conll",
        "clean.npy",
        "model.safetensors",
        "index.safetensors",
    ] {
        assert!(tmp.path().join("demo").join(f).is_file(), "{f} missing");
    }
    // The files work with the other commands.
    let dir = tmp.path().join("demo");
    let info: Value =
        serde_json::from_str(&ok(&dir, &["inspect", "--json", "index.safetensors"])).unwrap();
    let train = Conll::read(&dir.join("train.conll"), &ReadOptions::default()).unwrap();
    assert_eq!(info["num_tokens"], train.num_tokens());
}
