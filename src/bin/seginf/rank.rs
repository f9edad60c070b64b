//! `seginf rank-noise`: which training documents (or tokens) are most likely mislabelled
//! (paper §6), by the loss/entropy/gradient-norm baselines or by influence on a clean set.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, ValueEnum};
use seginf::data::split_doc_id;
use seginf::rank::{rank_training, Aggregate, CleanSequence, RankMethod, RankOptions, Ranking};
use seginf::{Index, Normalization};
use serde::Serialize;

use crate::args::{FeatureArgs, ReadArgs};
use crate::load::Model;
use crate::query::training_words;
use crate::{progress, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tab-separated with a header line.
    Tsv,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Per {
    /// Training documents by the mean (or max) of their items' scores.
    Document,
    /// Every training token by its score.
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    Mean,
    Max,
}

fn parse_method(name: &str) -> std::result::Result<RankMethod, String> {
    RankMethod::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = RankMethod::ALL.iter().map(|m| m.name()).collect();
        format!("unknown method {name:?}; methods: {}", names.join(", "))
    })
}

/// Rank the training documents (or tokens) by how likely their labels are wrong.
///
/// Higher scores = more suspect, for every method. Baselines from the index alone:
/// token-loss, token-marginal-loss, token-entropy, token-gradient-norm, instance-loss,
/// instance-gradient-norm. From a small clean (expert-labelled) set, --clean:
/// segment-influence (mean of each training token's --top largest influences on the clean
/// tokens: the paper's method), segment-nearest (feature similarity to clean tokens of
/// another label), instance-influence (whole sentences). Documents are the training file's
/// (doc_id >> 32); a document scores the mean and max over its tokens (sentences for the
/// instance methods). Use unnormalised influence here: noisy labels have large gradients,
/// which normalisation buries.
#[derive(Debug, Args)]
#[command(long_about)]
#[command(group(ArgGroup::new("methods").required(true).args(["method", "all"])))]
pub struct RankArgs {
    /// The model the index was built for.
    #[arg(long, value_name = "MODEL.safetensors")]
    pub model: PathBuf,
    /// The index of the training data (`seginf index build`).
    #[arg(long, value_name = "INDEX.safetensors")]
    pub index: PathBuf,
    /// Clean (expert-labelled) CoNLL data, for the influence and nearest-neighbour methods.
    #[arg(long, value_name = "FILE.conll")]
    pub clean: Option<PathBuf>,
    /// Token features of the clean file (as --features elsewhere; synthetic when absent and
    /// the model was trained on synthetic features).
    #[arg(long, value_name = "FILE", requires = "clean")]
    pub clean_features: Option<PathBuf>,
    /// The tensor holding the clean features when the safetensors file has several.
    #[arg(long, value_name = "NAME", requires = "clean_features")]
    pub clean_features_tensor: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
    /// The ranking method: token-loss, token-marginal-loss, token-entropy,
    /// token-gradient-norm, instance-loss, instance-gradient-norm, segment-influence,
    /// segment-nearest, instance-influence.
    #[arg(long, value_name = "NAME", value_parser = parse_method)]
    pub method: Option<RankMethod>,
    /// Every method (those needing a clean set only with --clean).
    #[arg(long)]
    pub all: bool,
    /// How many of a training token's largest influences (or similarities) on clean tokens
    /// are averaged (paper: 10).
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub top: usize,
    /// Rank documents or tokens.
    #[arg(long, value_enum, default_value_t = Per::Document)]
    pub per: Per,
    /// The document aggregate that orders the ranking.
    #[arg(long, value_enum, default_value_t = SortBy::Mean)]
    pub sort: SortBy,
    /// Rows printed per method (0 = all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Tsv)]
    pub format: Format,
    /// Gradient-norm normalisation of the influence methods (usually worse for this).
    #[arg(long)]
    pub normalize: bool,
    /// The training CoNLL file the index was built from: token rows then show their words.
    #[arg(long, value_name = "FILE.conll")]
    pub train: Option<PathBuf>,
    /// No progress spinner.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Serialize)]
struct DocumentRow {
    method: &'static str,
    rank: usize,
    document: u64,
    mean: f64,
    max: f64,
    items: usize,
}

#[derive(Debug, Serialize)]
struct TokenRow<'a> {
    method: &'static str,
    rank: usize,
    score: f64,
    doc_id: u64,
    doc: usize,
    sentence: usize,
    position: u32,
    label: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
}

fn number(x: f64) -> String {
    match x.is_nan() {
        true => "nan".into(),
        false => format!("{x}"),
    }
}

pub fn run(args: &RankArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let methods: Vec<RankMethod> = match (args.method, args.clean.is_some()) {
        (Some(m), false) if m.needs_clean() => {
            return Err(format!("{} needs a clean set: give --clean FILE.conll", m.name()).into())
        }
        (Some(m), _) => vec![m],
        (None, clean) => {
            if !clean && !args.quiet {
                eprintln!("seginf: no --clean set: the influence and nearest-neighbour methods are left out");
            }
            RankMethod::ALL
                .into_iter()
                .filter(|m| clean || !m.needs_clean())
                .collect()
        }
    };
    let clean = match &args.clean {
        Some(path) => {
            let conll = model.read_conll(path, &args.read)?;
            let labels = conll.label_ids(model.labels())?;
            let features = model.features(
                &conll,
                &FeatureArgs {
                    features: args.clean_features.clone(),
                    features_tensor: args.clean_features_tensor.clone(),
                },
            )?;
            Some((labels, features))
        }
        None => None,
    };
    let sequences: Vec<CleanSequence> = clean
        .iter()
        .flat_map(|(labels, features)| {
            features.iter().zip(labels).map(|(x, y)| CleanSequence {
                features: x.view(),
                labels: y,
            })
        })
        .collect();
    let index = Index::open(&args.index, model.crf.clone())?;
    let words = match (&args.train, args.per) {
        (Some(path), Per::Token) => Some(training_words(
            path,
            &index,
            args.read.label_column.map(|c| c as usize),
        )?),
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    if args.format == Format::Tsv {
        let header = match (args.per, words.is_some()) {
            (Per::Document, _) => "method\trank\tdocument\tmean\tmax\titems",
            (Per::Token, false) => "method\trank\tscore\tdoc\tsentence\tposition\tlabel",
            (Per::Token, true) => "method\trank\tscore\tdoc\tsentence\tposition\tlabel\ttoken",
        };
        writeln!(out, "{header}")?;
    }
    for method in methods {
        let influence = matches!(
            method,
            RankMethod::SegmentInfluence | RankMethod::InstanceInfluence
        );
        let options = RankOptions {
            method,
            top: args.top,
            normalization: match args.normalize && influence {
                true => Normalization::GradientNorm,
                false => Normalization::None,
            },
            doc_id_shift: 32,
            ..RankOptions::default()
        };
        let spinner = progress::bar(args.quiet, 0, &format!("ranking by {}", method.name()));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let ranking = rank_training(&index, &options, &sequences);
        spinner.finish_and_clear();
        let ranking = ranking?;
        match args.per {
            Per::Document => print_documents(&mut out, args, &ranking)?,
            Per::Token => print_tokens(&mut out, args, &model, &index, words.as_ref(), &ranking)?,
        }
    }
    Ok(())
}

fn limit(args: &RankArgs, n: usize) -> usize {
    match args.limit {
        0 => n,
        l => l.min(n),
    }
}

fn print_documents(out: &mut impl Write, args: &RankArgs, ranking: &Ranking) -> Result<()> {
    let aggregate = match args.sort {
        SortBy::Mean => Aggregate::Mean,
        SortBy::Max => Aggregate::Max,
    };
    let docs = ranking.documents_by(aggregate);
    let method = ranking.method.name();
    for (i, d) in docs.iter().take(limit(args, docs.len())).enumerate() {
        match args.format {
            Format::Tsv => writeln!(
                out,
                "{method}\t{}\t{}\t{}\t{}\t{}",
                i + 1,
                d.doc_id,
                number(d.mean),
                number(d.max),
                d.items
            )?,
            Format::Json => {
                let row = DocumentRow {
                    method,
                    rank: i + 1,
                    document: d.doc_id,
                    mean: d.mean,
                    max: d.max,
                    items: d.items,
                };
                writeln!(out, "{}", serde_json::to_string(&row)?)?
            }
        }
    }
    Ok(())
}

fn print_tokens(
    out: &mut impl Write,
    args: &RankArgs,
    model: &Model,
    index: &Index,
    words: Option<&seginf::data::Conll>,
    ranking: &Ranking,
) -> Result<()> {
    let scores = &ranking.token_scores;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Most suspect first, NaN last, ties in index order.
    order.sort_by(|&a, &b| {
        let (x, y) = (scores[a], scores[b]);
        x.is_nan()
            .cmp(&y.is_nan())
            .then(y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal))
            .then(a.cmp(&b))
    });
    let method = ranking.method.name();
    for (i, &k) in order.iter().take(limit(args, order.len())).enumerate() {
        let (doc_id, position) = index.token_id(k);
        let (doc, sentence) = split_doc_id(doc_id);
        let label = model.label_name(index.token_label(k));
        let token = words
            .and_then(|c| c.sentence(doc, sentence).ok())
            .and_then(|s| s.words.get(position as usize))
            .map(String::as_str);
        match args.format {
            Format::Tsv => {
                write!(
                    out,
                    "{method}\t{}\t{}\t{doc}\t{sentence}\t{position}\t{label}",
                    i + 1,
                    number(scores[k])
                )?;
                match token {
                    Some(w) => writeln!(out, "\t{w}")?,
                    None => writeln!(out)?,
                }
            }
            Format::Json => {
                let row = TokenRow {
                    method,
                    rank: i + 1,
                    score: scores[k],
                    doc_id,
                    doc,
                    sentence,
                    position,
                    label,
                    token,
                };
                writeln!(out, "{}", serde_json::to_string(&row)?)?
            }
        }
    }
    Ok(())
}
