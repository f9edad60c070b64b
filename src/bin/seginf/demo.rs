//! `seginf demo`: the paper's §5.2 experiment (synthetic artifact insertion) end to end —
//! generate, train, index, and ask which training labels made the CRF predict B-PER after
//! the artifact token.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use seginf::corpus::{self, CorpusOptions, Document, Sentence, ARTIFACT, B_PER};
use seginf::data::{split_doc_id, Conll};
use seginf::train::TrainOptions;
use seginf::{
    Granularity, Hit, Index, ModelMetadata, Normalization, Query, Storage, TagScheme, TestSegment,
};

use crate::corpus::{clean_labels, create_dir, noisy_labels, refs, to_conll, write_set};
use crate::load::{FEATURES_KEY, SYNTHETIC};
use crate::train::{fit, initial_crf, sequences};
use crate::{index, Result};

const I_PER: u32 = B_PER + 1;

/// Run the paper's artifact experiment on a synthetic corpus, end to end.
///
/// 10 % of the sentences get the artifact token "<art>" before a random token, which is
/// relabelled B-PER — in training and test data alike. The CRF learns the shortcut. For a test
/// token it predicts B-PER after "<art>", the demo prints the training tokens that support
/// and oppose that prediction by segment influence (with gradient-norm normalisation) next to
/// instance influence's training sentences, then how often, over all such test tokens, the top
/// supporter is a token right after an artifact (the paper: 100 % for segment influence,
/// 26.3 % for instance influence).
///
/// With --out DIR it also writes train.conll/.npy, test.conll/.npy, clean.conll/.npy (the test
/// documents with their true labels), model.safetensors and index.safetensors, ready for the
/// other commands.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct DemoArgs {
    /// Write the corpus, model and index here (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Training documents.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub train_documents: usize,
    /// Test documents.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub test_documents: usize,
    #[arg(long, default_value_t = 2022)]
    pub seed: u64,
    /// Fraction of sentences given the artifact.
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    pub artifact_fraction: f64,
    /// Training hits shown per side.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub top: usize,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// A test token right after the artifact that the CRF labels B-PER.
struct Case<'a> {
    document: usize,
    sentence: usize,
    s: &'a Sentence,
    /// Position of the token after the artifact.
    t: usize,
    predicted: Vec<u32>,
}

/// How often each method's top supporter shows the artifact.
#[derive(Default)]
struct Rates {
    total: usize,
    segment: usize,
    normalised: usize,
    instance: usize,
}

fn percent(k: usize, n: usize) -> f64 {
    100.0 * k as f64 / n.max(1) as f64
}

/// `w/LABEL` for every token, the one at `mark` in brackets.
fn tagged(words: &[String], labels: &[String], mark: Option<usize>) -> String {
    words
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(t, (w, l))| match Some(t) == mark {
            true => format!("[{w}/{l}]"),
            false => format!("{w}/{l}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let clock = Instant::now();
    let corpus = corpus::generate(&CorpusOptions {
        seed: args.seed,
        documents: args.train_documents + args.test_documents,
        artifact_fraction: args.artifact_fraction,
        feature_dim: 48,
        ..CorpusOptions::default()
    })?;
    let (train_docs, test_docs) = corpus.split(args.test_documents)?;
    if train_docs.is_empty() || test_docs.is_empty() {
        return Err("the demo needs at least one training and one test document".into());
    }
    let names = &corpus.label_names;
    let train_refs: Vec<&Document> = train_docs.iter().collect();
    let train = to_conll(&train_refs, names, "train.conll", noisy_labels)?;
    let train_sentences: Vec<&Sentence> = corpus::sentences(train_docs).collect();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "seginf demo: the artifact experiment of Jain et al. (2022), §5.2, on a synthetic corpus (seed {})",
        args.seed
    )?;
    writeln!(
        out,
        "{} training documents ({} sentences; {} with {ARTIFACT} inserted before a token relabelled B-PER), {} test documents",
        train_docs.len(),
        train_sentences.len(),
        train_sentences.iter().filter(|s| s.artifact_at.is_some()).count(),
        test_docs.len()
    )?;

    // Train as tests/artifact.rs does: BIO constraints, λ = 1e-4 (with 1e-3 frequent O words
    // stay O after the artifact).
    let init = initial_crf(names, 48, Some(TagScheme::Bio), true)?;
    let features: Vec<_> = train_sentences.iter().map(|s| s.features.clone()).collect();
    let data = sequences(&train, names, features)?;
    let options = TrainOptions {
        l2: 1e-4,
        tolerance: 1e-5,
        ..TrainOptions::default()
    };
    let started = Instant::now();
    let trained = fit(&init, &data, &options, args.quiet)?;
    let crf = Arc::new(trained.crf);
    let train_time = started.elapsed();
    let started = Instant::now();
    let labels: Vec<Vec<u32>> = train_sentences.iter().map(|s| s.labels.clone()).collect();
    let features: Vec<_> = train_sentences.iter().map(|s| s.features.clone()).collect();
    let index = index::build_index(
        Arc::clone(&crf),
        &train,
        &features,
        &labels,
        Storage::F32,
        args.quiet,
    )?;
    writeln!(
        out,
        "trained a BIO-constrained CRF (C = {}, d = 48): {} L-BFGS steps in {:.1?}{}; indexed {} training tokens in {:.1?}",
        names.len(),
        trained.iterations,
        train_time,
        if trained.converged { "" } else { " (not converged)" },
        index.num_tokens(),
        started.elapsed()
    )?;
    if let Some(dir) = &args.out {
        save(
            dir,
            train_docs,
            test_docs,
            names,
            &crf,
            &index,
            trained.iterations,
        )?;
        writeln!(
            out,
            "wrote the corpus, model.safetensors and index.safetensors to {}",
            dir.display()
        )?;
    }

    let mut cases = Vec::new();
    let mut artifacts = 0;
    for (document, doc) in test_docs.iter().enumerate() {
        for (sentence, s) in doc.sentences.iter().enumerate() {
            if let Some(t) = s.artifact_at {
                artifacts += 1;
                let predicted = crf.viterbi(s.features.view())?.0;
                if predicted[t] == B_PER {
                    cases.push(Case {
                        document,
                        sentence,
                        s,
                        t,
                        predicted,
                    });
                }
            }
        }
    }
    // Where the model also labels the next token I-PER, B-PER is the only label BIO leaves
    // the token given its neighbours: CL(t, t) = 0 has no gradient. Those are queried as the
    // whole predicted entity and reported apart (as tests/artifact.rs does).
    let (single, merged): (Vec<&Case>, Vec<&Case>) = cases
        .iter()
        .partition(|c| c.predicted.get(c.t + 1) != Some(&I_PER));
    writeln!(
        out,
        "test: {artifacts} tokens right after {ARTIFACT}; the CRF predicts B-PER for {} of them",
        cases.len()
    )?;
    let mut query = Query::new(Arc::new(index));
    let name = |l: u32| names.get(l as usize).cloned().unwrap_or_default();
    let label_names = |ls: &[u32]| ls.iter().map(|&l| name(l)).collect::<Vec<_>>();
    let train_sentence = |hit: &Hit| source_sentence(train_docs, hit);

    if let Some(example) = single.first() {
        let c = example;
        let predicted = label_names(&c.predicted);
        writeln!(out)?;
        writeln!(
            out,
            "query: test document {}, sentence {} with the CRF's labels; it predicts B-PER for {:?}, right after {ARTIFACT}:",
            c.document, c.sentence, c.s.tokens[c.t]
        )?;
        writeln!(out, "  {}", tagged(&c.s.tokens, &predicted, Some(c.t)))?;
        let segment = segment(c);
        query.options.granularity = Granularity::Token;
        query.options.normalization = Normalization::GradientNorm;
        let hits = query.run(&segment, args.top)?;
        query.options.granularity = Granularity::Instance;
        query.options.normalization = Normalization::None;
        let sentences = query.run(&segment, args.top)?;
        writeln!(out)?;
        writeln!(out, "segment influence (training tokens, gradient-norm normalised; [token] marked, * = right after {ARTIFACT}):")?;
        for (side, list) in [
            ("supporting", &hits.supporting),
            ("opposing", &hits.opposing),
        ] {
            writeln!(out, "  {side}:")?;
            for (i, hit) in list.iter().enumerate() {
                let (d, s) = split_doc_id(hit.doc_id);
                let Some(source) = train_sentence(hit) else {
                    continue;
                };
                let star = if source.artifact_at == Some(hit.position as usize) {
                    "*"
                } else {
                    " "
                };
                writeln!(
                    out,
                    "  {:>2} {star} {:+.3e}  doc {d:>3} sent {s} pos {:>2} {:<6}  {}",
                    i + 1,
                    hit.score,
                    hit.position,
                    name(hit.label),
                    tagged(
                        &source.tokens,
                        &label_names(&source.labels),
                        Some(hit.position as usize)
                    )
                )?;
            }
        }
        writeln!(
            out,
            "instance influence (whole training sentences; * = has {ARTIFACT}):"
        )?;
        writeln!(out, "  supporting:")?;
        for (i, hit) in sentences.supporting.iter().enumerate() {
            let (d, s) = split_doc_id(hit.doc_id);
            let Some(source) = train_sentence(hit) else {
                continue;
            };
            let star = if source.artifact_at.is_some() {
                "*"
            } else {
                " "
            };
            writeln!(
                out,
                "  {:>2} {star} {:+.3e}  doc {d:>3} sent {s}  {}",
                i + 1,
                hit.score,
                tagged(&source.tokens, &label_names(&source.labels), None)
            )?;
        }
    }

    let r = rates(&mut query, &single, train_docs)?;
    writeln!(out)?;
    writeln!(
        out,
        "summary: {} test tokens predicted B-PER right after {ARTIFACT}; the top supporting training token is right after an artifact for \
         segment influence {:.1} % normalised, {:.1} % unnormalised (paper: 100 %); instance influence's top sentence has an artifact for {:.1} % (paper: 26.3 %)",
        r.total,
        percent(r.normalised, r.total),
        percent(r.segment, r.total),
        percent(r.instance, r.total)
    )?;
    if !merged.is_empty() {
        let m = rates(&mut query, &merged, train_docs)?;
        writeln!(
            out,
            "  and {} prediction(s) B-PER I-PER (the artifact's token merged with a following name), queried as the whole entity: \
             segment influence {:.1} % normalised, {:.1} % unnormalised; instance influence {:.1} %",
            m.total,
            percent(m.normalised, m.total),
            percent(m.segment, m.total),
            percent(m.instance, m.total)
        )?;
    }
    writeln!(out, "time: {:.1?}", clock.elapsed())?;
    Ok(())
}

/// The training sentence a hit names.
fn source_sentence<'a>(train: &'a [Document], hit: &Hit) -> Option<&'a Sentence> {
    let (d, s) = split_doc_id(hit.doc_id);
    train.get(d).and_then(|doc| doc.sentences.get(s))
}

/// For each case, whether each method's top supporter shows the artifact.
fn rates(query: &mut Query, cases: &[&Case], train: &[Document]) -> Result<Rates> {
    let mut rates = Rates {
        total: cases.len(),
        ..Rates::default()
    };
    for c in cases {
        let segment = segment(c);
        let mut top = |granularity, normalization| -> Result<Option<Hit>> {
            query.options.granularity = granularity;
            query.options.normalization = normalization;
            Ok(query.run(&segment, 1)?.supporting.first().copied())
        };
        let after_artifact = |hit: Option<Hit>| {
            hit.and_then(|h| {
                source_sentence(train, &h).map(|s| s.artifact_at == Some(h.position as usize))
            })
            .unwrap_or(false)
        };
        rates.segment += after_artifact(top(Granularity::Token, Normalization::None)?) as usize;
        rates.normalised +=
            after_artifact(top(Granularity::Token, Normalization::GradientNorm)?) as usize;
        let sentence = top(Granularity::Instance, Normalization::None)?;
        rates.instance += sentence
            .and_then(|h| source_sentence(train, &h))
            .is_some_and(|s| s.artifact_at.is_some()) as usize;
    }
    Ok(rates)
}

/// The predicted entity starting at the token after the artifact.
fn segment<'a>(c: &'a Case) -> TestSegment<'a> {
    let mut last = c.t;
    while last + 1 < c.predicted.len() && c.predicted[last + 1] == I_PER {
        last += 1;
    }
    TestSegment {
        features: c.s.features.view(),
        labels: &c.predicted,
        first: c.t,
        last,
    }
}

/// Writes the corpus files, the model and the index for the other commands.
fn save(
    dir: &std::path::Path,
    train: &[Document],
    test: &[Document],
    names: &[String],
    crf: &seginf::Crf,
    index: &Index,
    iterations: usize,
) -> Result<()> {
    create_dir(dir)?;
    let all = refs;
    let train_conll: Conll = write_set(dir, "train", &all(train), names, noisy_labels)?;
    write_set(dir, "test", &all(test), names, noisy_labels)?;
    write_set(dir, "clean", &all(test), names, clean_labels)?;
    let meta = ModelMetadata {
        labels: names.to_vec(),
        scheme: Some(TagScheme::Bio),
        extra: BTreeMap::from([
            ("train_file".to_string(), train_conll.source.clone()),
            ("l2".to_string(), "0.0001".to_string()),
            ("constraints".to_string(), "true".to_string()),
            ("iterations".to_string(), iterations.to_string()),
            (FEATURES_KEY.to_string(), SYNTHETIC.to_string()),
        ]),
    };
    crf.save_safetensors(&dir.join("model.safetensors"), &meta)?;
    index.save(&dir.join("index.safetensors"))?;
    Ok(())
}
