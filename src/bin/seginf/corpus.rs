//! `seginf corpus`: write a synthetic NER corpus with label noise (paper §6.2) as CoNLL and
//! .npy files, for trying `train`, `index build`, `query` and `rank-noise` on.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use ndarray::{Array2, ArrayView2, Axis};
use seginf::corpus::{self, CorpusOptions, Document, Sentence};
use seginf::data::{Conll, ConllDocument, ConllSentence, ReadOptions};

use crate::Result;

/// Write a synthetic NER corpus with label noise as CoNLL + .npy files.
///
/// The corpus of `seginf::corpus` (seeded; ~30 sentence templates over invented names;
/// IOB2 labels O, B-/I-PER, ORG, LOC, MISC; 3–8 sentences a document; a quarter of the
/// documents are about sport, the only ones naming football clubs). Its last --held-out
/// documents get no noise. The defaults are the setting of the library's noise-ranking test
/// (tests/noise.rs). In DIR:
///   train.conll, train.npy   the other documents, with their noisy labels
///   test.conll, test.npy     the held-out documents (no noise)
///   clean.conll, clean.npy   the first --clean-documents held-out documents that mention a
///                            football club: the expert-labelled set of `rank-noise --clean`
///   noise.tsv                per training document: which noise it got, tokens changed
/// The .npy files hold the synthetic features (one row per token in file order), the same
/// ones `seginf train` computes without --features.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct CorpusArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Documents in all (training + held out).
    #[arg(long, default_value_t = 560)]
    pub documents: usize,
    /// Noise-free documents at the end: test.conll, and clean.conll among them.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub held_out: usize,
    /// Held-out documents mentioning a club written to clean.conll (0 = all of them).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub clean_documents: usize,
    /// Training documents that mention a football club whose clubs are labelled LOC instead of
    /// ORG (systematic noise, like CoNLL's sports teams).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub systematic: usize,
    /// Other training documents in which every entity gets a random wrong type.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub random: usize,
    /// Fraction of sentences with the artifact token "<art>" before a token labelled B-PER
    /// (paper §5.2).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub artifact_fraction: f64,
    #[arg(long, default_value_t = 62)]
    pub seed: u64,
    /// Columns of the synthetic features.
    #[arg(long, value_name = "D", default_value_t = 48)]
    pub feature_dim: usize,
}

/// The documents as CoNLL (IOB2) with the labels `labels` picks, named `source`.
pub fn to_conll(
    documents: &[&Document],
    names: &[String],
    source: &str,
    labels: fn(&Sentence) -> &[u32],
) -> Result<Conll> {
    let name = |l: u32| names.get(l as usize).cloned().unwrap_or_default();
    let built = Conll {
        source: source.to_string(),
        documents: documents
            .iter()
            .map(|d| ConllDocument {
                line: 0,
                sentences: d
                    .sentences
                    .iter()
                    .map(|s| ConllSentence {
                        line: 0,
                        words: s.tokens.clone(),
                        labels: labels(s).iter().map(|&l| name(l)).collect(),
                    })
                    .collect(),
            })
            .collect(),
        scheme: Some(seginf::TagScheme::Bio),
    };
    // Parsed back from its text: line numbers as in the file written, and the labels checked.
    Ok(Conll::parse(
        &built.to_text(),
        source,
        &ReadOptions::default(),
    )?)
}

/// Every sentence's features stacked, one row per token in file order.
pub fn stacked_features(documents: &[&Document]) -> Result<Array2<f32>> {
    let views: Vec<ArrayView2<f32>> = documents
        .iter()
        .flat_map(|d| d.sentences.iter().map(|s| s.features.view()))
        .collect();
    Ok(ndarray::concatenate(Axis(0), &views)?)
}

/// Writes `<name>.conll` and `<name>.npy` into `dir`; returns the CoNLL as written.
pub fn write_set(
    dir: &Path,
    name: &str,
    documents: &[&Document],
    names: &[String],
    labels: fn(&Sentence) -> &[u32],
) -> Result<Conll> {
    let conll_path = dir.join(format!("{name}.conll"));
    let conll = to_conll(documents, names, &conll_path.display().to_string(), labels)?;
    std::fs::write(&conll_path, conll.to_text())
        .map_err(|e| format!("cannot write {}: {e}", conll_path.display()))?;
    seginf::data::write_npy(
        &dir.join(format!("{name}.npy")),
        stacked_features(documents)?.view(),
    )?;
    Ok(conll)
}

pub fn refs(documents: &[Document]) -> Vec<&Document> {
    documents.iter().collect()
}

/// The labels to train on (noise and artifacts included).
pub fn noisy_labels(s: &Sentence) -> &[u32] {
    &s.labels
}

/// The true labels.
pub fn clean_labels(s: &Sentence) -> &[u32] {
    &s.clean_labels
}

pub fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()).into())
}

pub fn run(args: &CorpusArgs) -> Result<()> {
    let corpus = corpus::generate(&CorpusOptions {
        seed: args.seed,
        documents: args.documents,
        artifact_fraction: args.artifact_fraction,
        systematic_noise_documents: args.systematic,
        random_noise_documents: args.random,
        held_out_documents: args.held_out,
        feature_dim: args.feature_dim,
    })?;
    let (train, held_out) = corpus.split(args.held_out)?;
    if train.is_empty() {
        return Err("no training documents: --held-out takes them all".into());
    }
    create_dir(&args.out)?;
    let names = &corpus.label_names;
    let (all, noisy) = (refs, noisy_labels);
    let train_conll = write_set(&args.out, "train", &all(train), names, noisy)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "train.conll: {} documents, {} sentences, {} tokens ({} with systematic noise, {} with random noise)",
        train.len(),
        train_conll.num_sentences(),
        train_conll.num_tokens(),
        train.iter().filter(|d| d.systematic_noise).count(),
        train.iter().filter(|d| d.random_noise).count()
    )?;
    if !held_out.is_empty() {
        let test = write_set(&args.out, "test", &all(held_out), names, noisy)?;
        writeln!(
            out,
            "test.conll: {} held-out documents, {} tokens",
            held_out.len(),
            test.num_tokens()
        )?;
        let take = match args.clean_documents {
            0 => usize::MAX,
            n => n,
        };
        let clubs: Vec<&Document> = held_out
            .iter()
            .filter(|d| d.mentions_club)
            .take(take)
            .collect();
        match clubs.is_empty() {
            true => writeln!(
                out,
                "clean.conll: not written (no held-out document mentions a club)"
            )?,
            false => {
                let clean = write_set(&args.out, "clean", &clubs, names, noisy)?;
                writeln!(
                    out,
                    "clean.conll: {} held-out documents that mention a football club, {} tokens",
                    clubs.len(),
                    clean.num_tokens()
                )?;
            }
        }
    }
    let mut tsv = String::from("document\tsystematic_noise\trandom_noise\tchanged_tokens\n");
    for (d, doc) in train.iter().enumerate() {
        let changed: usize = doc
            .sentences
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .zip(&s.clean_labels)
                    .filter(|(a, b)| a != b)
                    .count()
            })
            .sum();
        tsv.push_str(&format!(
            "{d}\t{}\t{}\t{changed}\n",
            doc.systematic_noise, doc.random_noise
        ));
    }
    let tsv_path = args.out.join("noise.tsv");
    std::fs::write(&tsv_path, tsv)
        .map_err(|e| format!("cannot write {}: {e}", tsv_path.display()))?;
    writeln!(
        out,
        "noise.tsv: the noise of each training document; all in {}",
        args.out.display()
    )?;
    Ok(())
}
