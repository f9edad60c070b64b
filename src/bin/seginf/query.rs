//! `seginf query`: the training tokens (or sentences) that support and oppose a test
//! segment's labels, as JSON lines.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgGroup, Args, ValueEnum};
use seginf::data::{entity_spans, split_doc_id, Conll, ReadOptions};
use seginf::hessian::{ExactInverse, KroneckerInverse};
use seginf::query::InverseHessian;
use seginf::{Granularity, Hessian, Hit, Index, Normalization, Query, TestSegment};
use serde::Serialize;

use crate::args::{FeatureArgs, ReadArgs};
use crate::load::Model;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelsArg {
    /// The test file's labels.
    Gold,
    /// The model's Viterbi labels.
    Predicted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GranularityArg {
    /// Segment influence of each training token (emission and transition terms).
    Token,
    /// Koh & Liang influence of each training sentence (whole-sentence loss).
    Instance,
    /// The paper's nearest-neighbour baseline: −f_k·f̄ (dot product with the mean test features).
    NearestDot,
    /// As nearest-dot with cosine similarity.
    NearestCosine,
}

impl From<GranularityArg> for Granularity {
    fn from(g: GranularityArg) -> Granularity {
        match g {
            GranularityArg::Token => Granularity::Token,
            GranularityArg::Instance => Granularity::Instance,
            GranularityArg::NearestDot => Granularity::NearestDot,
            GranularityArg::NearestCosine => Granularity::NearestCosine,
        }
    }
}

/// Which training labels support or oppose a test token, span or entity (JSON lines).
///
/// Prints one JSON object per hit: side ("supporting": score < 0 first, the training label
/// lowered the test segment's loss; "opposing": score > 0 first), rank, score, doc_id =
/// (document << 32) | sentence with doc and sentence apart, position in the sentence, the
/// training label, and with --train the token and --context tokens on each side ("left",
/// "right"; for instance granularity the whole sentence as "tokens").
#[derive(Debug, Args)]
#[command(long_about)]
#[command(group(ArgGroup::new("segment").required(true).args(["token", "span", "entity"])))]
pub struct QueryArgs {
    /// The model the index was built for.
    #[arg(long, value_name = "MODEL.safetensors")]
    pub model: PathBuf,
    /// The index (`seginf index build`).
    #[arg(long, value_name = "INDEX.safetensors")]
    pub index: PathBuf,
    /// The CoNLL file holding the test sentence.
    #[arg(long, value_name = "FILE.conll")]
    pub test: PathBuf,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub read: ReadArgs,
    /// The test sentence's document (from 0, in file order; -DOCSTART- starts one).
    #[arg(long, value_name = "N")]
    pub doc: usize,
    /// The test sentence within its document (from 0).
    #[arg(long, value_name = "S")]
    pub sentence: usize,
    /// Query one token (its index in the sentence, from 0).
    #[arg(long, value_name = "T")]
    pub token: Option<usize>,
    /// Query tokens FIRST to LAST, inclusive (e.g. 3:4).
    #[arg(long, value_name = "FIRST:LAST", value_parser = parse_span)]
    pub span: Option<(usize, usize)>,
    /// Query the E-th entity of the sentence (from 0) under the chosen labels.
    #[arg(long, value_name = "E")]
    pub entity: Option<usize>,
    /// The test labels whose influence is asked for.
    #[arg(long, value_enum, default_value_t = LabelsArg::Predicted)]
    pub labels: LabelsArg,
    /// What is scored.
    #[arg(long, value_enum, default_value_t = GranularityArg::Token)]
    pub granularity: GranularityArg,
    /// Divide each training score by its gradient's norm (RelatIF-style): ranks causes of a
    /// prediction better; leave it off to find noisy labels (they have large gradients).
    #[arg(long)]
    pub normalize: bool,
    /// Score with this K-FAC/EK-FAC inverse Hessian (`seginf index curvature`) instead of the
    /// identity: −g_testᵀ (H + damping·I)⁻¹ g_train.
    #[arg(long, value_name = "CURVATURE.safetensors")]
    pub curvature: Option<PathBuf>,
    /// Score with the exact inverse Hessian of the model's training objective instead: conjugate
    /// gradient on exact Hessian–vector products over the training data (--train, and
    /// --train-features unless the model uses seginf's synthetic features), once per query —
    /// seconds to minutes on CoNLL-sized data, where a --curvature file takes milliseconds.
    #[arg(long, requires = "train", conflicts_with = "curvature")]
    pub exact_hessian: bool,
    /// With --exact-hessian: added to the Hessian's diagonal (with l2) before inverting.
    #[arg(long, default_value_t = 1e-3, requires = "exact_hessian")]
    pub damping: f64,
    /// With --exact-hessian: the L2 strength of the training objective (default: the one
    /// `seginf train` recorded in the model).
    #[arg(long, requires = "exact_hessian")]
    pub l2: Option<f64>,
    /// With --exact-hessian: the --train file's token features, as `index build --features`
    /// took them (a 2-D .npy array or a safetensors file).
    #[arg(long, value_name = "FILE", requires = "exact_hessian")]
    pub train_features: Option<PathBuf>,
    /// The tensor holding the training features when that safetensors file has several.
    #[arg(long, value_name = "NAME", requires = "train_features")]
    pub train_features_tensor: Option<String>,
    /// Hits per side.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Training tokens shown on each side of a hit (needs --train).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub context: usize,
    /// The training CoNLL file the index was built from: hits then show their words.
    #[arg(long, value_name = "FILE.conll")]
    pub train: Option<PathBuf>,
    /// Do not describe the query on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_span(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not FIRST:LAST"))?;
    let number = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("{x:?} is not a token index"))
    };
    let (a, b) = (number(a)?, number(b)?);
    match a <= b {
        true => Ok((a, b)),
        false => Err(format!("{s}: FIRST is after LAST")),
    }
}

/// One hit, as printed.
#[derive(Debug, Serialize)]
pub struct HitLine<'a> {
    pub side: &'static str,
    pub rank: usize,
    pub score: f64,
    pub doc_id: u64,
    pub doc: usize,
    pub sentence: usize,
    /// `None` (null) for a whole sentence.
    pub position: Option<u32>,
    pub label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<&'a [String]>,
}

/// The training CoNLL file of an index, checked against it sentence by sentence.
pub fn training_words(
    path: &std::path::Path,
    index: &Index,
    label_column: Option<usize>,
) -> Result<Conll> {
    let conll = Conll::read(
        path,
        &ReadOptions {
            scheme: None,
            label_column,
        },
    )?;
    check_against_index(&conll, path, index)?;
    Ok(conll)
}

/// That `conll` (read from `path`) has every sentence of the index, with its length.
fn check_against_index(conll: &Conll, path: &std::path::Path, index: &Index) -> Result<()> {
    for s in 0..index.num_sequences() {
        let (d, k) = split_doc_id(index.sequence_doc_ids()[s]);
        let n = index.sequence_tokens(s).len();
        let found = conll.sentence(d, k).map(|x| x.len()).ok();
        if found != Some(n) {
            return Err(format!(
                "{} does not match the index: the index has document {d}, sentence {k} with {n} tokens, the file {}",
                path.display(),
                match found {
                    Some(m) => format!("has {m}"),
                    None => "has no such sentence".to_string(),
                }
            )
            .into());
        }
    }
    Ok(())
}

/// The JSON line of one hit; `words` adds the training token and its context.
pub fn hit_line<'a>(
    model: &'a Model,
    words: Option<&'a Conll>,
    side: &'static str,
    rank: usize,
    hit: &Hit,
    context: usize,
) -> HitLine<'a> {
    let (doc, sentence) = split_doc_id(hit.doc_id);
    let whole = hit.position == u32::MAX;
    let mut line = HitLine {
        side,
        rank,
        score: hit.score,
        doc_id: hit.doc_id,
        doc,
        sentence,
        position: (!whole).then_some(hit.position),
        label: (!whole).then(|| model.label_name(hit.label)),
        token: None,
        left: None,
        right: None,
        tokens: None,
    };
    if let Some(s) = words.and_then(|c| c.sentence(doc, sentence).ok()) {
        let p = hit.position as usize;
        match whole {
            true => line.tokens = Some(&s.words),
            false if p < s.len() => {
                line.token = Some(&s.words[p]);
                line.left = Some(&s.words[p.saturating_sub(context)..p]);
                line.right = Some(&s.words[p + 1..(p + 1 + context).min(s.len())]);
            }
            false => {}
        }
    }
    line
}

/// `--exact-hessian`: the training data (`train`, the `--train` file read from `path` and
/// checked against the index, with `--train-features`) and the CG inverse of the model's
/// damped training Hessian over it.
fn exact_inverse(
    model: &Model,
    args: &QueryArgs,
    index: &Index,
    (path, train): (&std::path::Path, &Conll),
) -> Result<Arc<ExactInverse>> {
    if args.features.features.is_some() && args.train_features.is_none() {
        return Err(format!(
            "--exact-hessian: give --train-features, the features of {} (the test file's come \
             from --features)",
            path.display()
        )
        .into());
    }
    let features = FeatureArgs {
        features: args.train_features.clone(),
        features_tensor: args.train_features_tensor.clone(),
    };
    let data = crate::train::sequences(train, model.labels(), model.features(train, &features)?)?;
    let tokens: usize = data.iter().map(|s| s.labels.len()).sum();
    if (data.len(), tokens) != (index.num_sequences(), index.num_tokens()) {
        return Err(format!(
            "{}: {} sentences and {tokens} tokens, the index {} and {}: give the file the index \
             was built from",
            path.display(),
            data.len(),
            index.num_sequences(),
            index.num_tokens()
        )
        .into());
    }
    let l2 = model.l2(args.l2)?;
    let fine = |x: f64| x.is_finite() && x >= 0.0;
    if !(fine(l2) && fine(args.damping) && l2 + args.damping > 0.0) {
        return Err(format!(
            "--exact-hessian: l2 ({l2}) and --damping ({}) must be finite and >= 0, and not both 0",
            args.damping
        )
        .into());
    }
    Ok(Arc::new(ExactInverse::new(
        Arc::clone(&model.crf),
        Arc::new(data),
        l2,
        args.damping,
    )))
}

pub fn run(args: &QueryArgs) -> Result<()> {
    let model = Model::load(&args.model)?;
    let test = model.read_conll(&args.test, &args.read)?;
    let sentence = test.sentence(args.doc, args.sentence)?;
    let features = model.features(&test, &args.features)?;
    let row = test
        .sentences()
        .position(|(d, s, _)| (d, s) == (args.doc, args.sentence))
        .ok_or("the test sentence vanished")?;
    let x = &features[row];
    let labels: Vec<u32> = match args.labels {
        LabelsArg::Gold => test.label_ids(model.labels())?.swap_remove(row),
        LabelsArg::Predicted => model.crf.viterbi(x.view())?.0,
    };
    let n = sentence.len();
    let (first, last) = match (args.token, args.span, args.entity) {
        (Some(t), _, _) => (t, t),
        (_, Some(span), _) => span,
        (_, _, Some(e)) => {
            let scheme = model
                .meta
                .scheme
                .ok_or("--entity needs a model with a tagging scheme (this one has plain tags)")?;
            let names: Vec<&str> = labels.iter().map(|&l| model.label_name(l)).collect();
            let spans = entity_spans(scheme, &names)?;
            let span = spans.get(e).ok_or_else(|| {
                format!(
                    "{}:{}: the sentence has {} entities by {} labels, no entity {e} (counted from 0)",
                    test.source,
                    sentence.line,
                    spans.len(),
                    if args.labels == LabelsArg::Gold { "gold" } else { "predicted" }
                )
            })?;
            (span.first, span.last)
        }
        _ => return Err("give --token, --span or --entity".into()),
    };
    if last >= n {
        return Err(format!(
            "{}:{}: the sentence has {n} tokens (0..={}), the segment ends at {last}",
            test.source,
            sentence.line,
            n.saturating_sub(1)
        )
        .into());
    }
    let index = Index::open(&args.index, Arc::clone(&model.crf))?;
    // The training file, read once: with the model's label scheme when the exact Hessian
    // needs its labels, else for its words only.
    let words = match &args.train {
        Some(path) if args.exact_hessian => {
            let train = model.read_conll(path, &args.read)?;
            check_against_index(&train, path, &index)?;
            Some(train)
        }
        Some(path) => Some(training_words(
            path,
            &index,
            args.read.label_column.map(|c| c as usize),
        )?),
        None => None,
    };
    let mut query = Query::new(Arc::new(index));
    query.options.granularity = args.granularity.into();
    query.options.normalization = match args.normalize {
        true => Normalization::GradientNorm,
        false => Normalization::None,
    };
    if let Some(path) = &args.curvature {
        let inverse = KroneckerInverse::open(path, Arc::clone(&model.crf))?;
        query.options.hessian = Hessian::Inverse(Arc::new(inverse));
    }
    let exact = match (args.exact_hessian, &args.train, &words) {
        (true, Some(path), Some(train)) => {
            Some(exact_inverse(&model, args, query.index(), (path, train))?)
        }
        (true, ..) => return Err("--exact-hessian needs --train".into()),
        (false, ..) => None,
    };
    if let Some(inverse) = &exact {
        query.options.hessian = Hessian::Inverse(Arc::clone(inverse) as Arc<dyn InverseHessian>);
    }
    let segment = TestSegment {
        features: x.view(),
        labels: &labels,
        first,
        last,
    };
    let hits = query.run(&segment, args.k)?;
    if !args.quiet {
        let shown: Vec<String> = (first..=last)
            .map(|t| format!("{}/{}", sentence.words[t], model.label_name(labels[t])))
            .collect();
        eprintln!(
            "query: {}:{} (document {}, sentence {}), tokens {first}..={last}: {} ({} labels)",
            test.source,
            sentence.line + first,
            args.doc,
            args.sentence,
            shown.join(" "),
            if args.labels == LabelsArg::Gold {
                "gold"
            } else {
                "predicted"
            }
        );
    }
    if let Some((iterations, residual)) = exact.and_then(|e| e.last_solve()).filter(|_| !args.quiet)
    {
        eprintln!(
            "exact Hessian: conjugate gradient, {iterations} iterations to a relative residual of {residual:.1e}"
        );
    }
    let mut out = std::io::stdout().lock();
    for (side, list) in [
        ("supporting", &hits.supporting),
        ("opposing", &hits.opposing),
    ] {
        for (i, hit) in list.iter().enumerate() {
            let line = hit_line(&model, words.as_ref(), side, i + 1, hit, args.context);
            writeln!(out, "{}", serde_json::to_string(&line)?)?;
        }
    }
    Ok(())
}
