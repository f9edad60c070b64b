//! `seginf train`: fit a CRF head on fixed token features (full-batch L-BFGS).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use ndarray::Array2;
use seginf::data::Conll;
use seginf::train::{TrainOptions, TrainResult, TrainSeq};
use seginf::{ConstraintMask, Crf, ModelMetadata, TagScheme};

use crate::args::{FeatureArgs, ReadArgs};
use crate::load::{self, FEATURES_KEY, SOURCE_SCHEME_KEY, SYNTHETIC};
use crate::{progress, Result};

/// Train a CRF tagger on a CoNLL file and its token features.
///
/// Minimises mean NLL + (l2/2)·‖θ‖² with L-BFGS from zero weights, over emission weights and
/// biases, transitions, start and end scores. The label set is the file's labels (O first,
/// then by entity type), stored in the model file with the scheme.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct TrainArgs {
    /// Training data (CoNLL columns: word first, label last; -DOCSTART- starts a document).
    #[arg(long, value_name = "FILE.conll")]
    pub train: PathBuf,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Columns of the synthetic features (used without --features).
    #[arg(long, value_name = "D", default_value_t = 48)]
    pub feature_dim: usize,
    /// Where to save the model (safetensors; label names and scheme in its metadata).
    #[arg(long, value_name = "MODEL.safetensors")]
    pub out: PathBuf,
    /// L2 regularisation λ of mean NLL + (λ/2)·‖θ‖².
    #[arg(long, default_value_t = 1e-4)]
    pub l2: f64,
    /// Stop when the largest gradient entry is at most this.
    #[arg(long, default_value_t = 1e-5)]
    pub tolerance: f64,
    /// Stop (not converged, saved anyway, with a warning) after this many L-BFGS steps.
    #[arg(long, default_value_t = 1000)]
    pub max_iterations: usize,
    /// Forbid the transitions the tagging scheme does not allow (O → I-PER under IOB2, say)
    /// with -inf scores, in training and in every later loss, marginal and Viterbi path.
    #[arg(long)]
    pub constraints: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Zero parameters (every block present), with the scheme's constraints when asked.
pub fn initial_crf(
    labels: &[String],
    d: usize,
    scheme: Option<TagScheme>,
    constrain: bool,
) -> Result<Crf> {
    let zero = Crf::zeros(labels.len(), d)?;
    match (constrain, scheme) {
        (false, _) => Ok(zero),
        (true, Some(scheme)) => {
            Ok(zero.with_constraints(&ConstraintMask::from_labels(scheme, labels)?)?)
        }
        (true, None) => {
            Err("--constraints needs a tagging scheme (iob1, iob2 or bioes), not none".into())
        }
    }
}

/// Trains with a progress bar; `what` labels it.
pub fn fit(
    init: &Crf,
    data: &[TrainSeq],
    options: &TrainOptions,
    quiet: bool,
) -> Result<TrainResult> {
    let bar = progress::bar(quiet, options.max_iterations as u64, "training");
    let mut report = |step: usize, objective: f64, gradient: f64| {
        bar.set_position(step as u64);
        bar.set_message(format!(
            "objective {objective:.5}, max |gradient| {gradient:.1e}"
        ));
        true
    };
    let result = seginf::train::train(init, data, options, Some(&mut report));
    bar.finish_and_clear();
    Ok(result?)
}

/// One training sequence per sentence of `conll`, with its label ids.
pub fn sequences(
    conll: &Conll,
    labels: &[String],
    features: Vec<Array2<f32>>,
) -> Result<Vec<TrainSeq>> {
    let ids = conll.label_ids(labels)?;
    Ok(features
        .into_iter()
        .zip(ids)
        .map(|(x, y)| TrainSeq::labelled(x, y))
        .collect())
}

pub fn run(args: &TrainArgs) -> Result<()> {
    let (conll, read_scheme) = load::read_training_conll(&args.train, &args.read)?;
    let labels = conll.label_names();
    let features = load::features(&conll, &args.features, args.feature_dim, None)?;
    let d = features.first().map_or(args.feature_dim, |x| x.ncols());
    let init = initial_crf(&labels, d, conll.scheme, args.constraints)?;
    let data = sequences(&conll, &labels, features)?;
    let options = TrainOptions {
        l2: args.l2,
        tolerance: args.tolerance,
        max_iterations: args.max_iterations,
        ..TrainOptions::default()
    };
    let trained = fit(&init, &data, &options, args.quiet)?;
    let mut extra = BTreeMap::from([
        ("train_file".to_string(), args.train.display().to_string()),
        ("l2".to_string(), args.l2.to_string()),
        ("constraints".to_string(), args.constraints.to_string()),
        ("iterations".to_string(), trained.iterations.to_string()),
        ("converged".to_string(), trained.converged.to_string()),
        ("objective".to_string(), trained.objective.to_string()),
        (
            FEATURES_KEY.to_string(),
            match &args.features.features {
                Some(path) => path.display().to_string(),
                None => SYNTHETIC.to_string(),
            },
        ),
    ]);
    if read_scheme != conll.scheme {
        if let Some(s) = read_scheme {
            extra.insert(SOURCE_SCHEME_KEY.to_string(), s.name().to_string());
        }
    }
    let meta = ModelMetadata {
        labels: labels.clone(),
        scheme: conll.scheme,
        extra,
    };
    trained.crf.save_safetensors(&args.out, &meta)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "trained on {} sentences ({} tokens), {} labels, {d} features: {} L-BFGS steps, \
         objective {:.6}, max |gradient| {:.2e}{}",
        conll.num_sentences(),
        conll.num_tokens(),
        labels.len(),
        trained.iterations,
        trained.objective,
        trained.max_abs_gradient,
        if trained.converged {
            ""
        } else {
            " (NOT converged: raise --max-iterations or --tolerance)"
        }
    )?;
    writeln!(out, "saved {}", args.out.display())?;
    if !trained.converged {
        eprintln!("seginf: warning: training stopped before the tolerance was reached");
    }
    Ok(())
}
