//! `seginf index build`: the influence index of a model's training tokens.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use ndarray::Array2;
use seginf::data::{doc_id, Conll};
use seginf::index::TrainingSequence;
use seginf::{BuildOptions, Crf, Index, IndexBuilder, Storage};

use crate::args::ModelDataArgs;
use crate::{progress, Result};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    Build(BuildArgs),
    Curvature(crate::curvature::CurvatureArgs),
}

/// How the index stores training features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    /// Exact (scores equal the dense computation).
    F32,
    /// Half the bytes; features beyond ±65504 are refused.
    F16,
    /// A quarter of the bytes (per-token scale max|f|/127).
    Int8,
}

impl From<StorageArg> for Storage {
    fn from(s: StorageArg) -> Storage {
        match s {
            StorageArg::F32 => Storage::F32,
            StorageArg::F16 => Storage::F16,
            StorageArg::Int8 => Storage::Int8,
        }
    }
}

/// Build the influence index of a model's training data and save it.
///
/// Per training token it keeps the features, the single-token error vector r = q − ȳ, the
/// labels around it, its loss, entropy and gradient norm; per sentence the whole-sequence
/// gradient (instance influence). Training items are named by doc id = (document << 32) |
/// sentence, both counted from 0 in the CoNLL file's order, and by position = the token's
/// index in its sentence.
#[derive(Debug, Args)]
#[command(long_about)]
pub struct BuildArgs {
    #[command(flatten)]
    pub data: ModelDataArgs,
    /// Where to save the index (safetensors, opened memory-mapped by queries).
    #[arg(long, value_name = "INDEX.safetensors")]
    pub out: PathBuf,
    /// How to store the features.
    #[arg(long, value_enum, default_value_t = StorageArg::F32)]
    pub storage: StorageArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Indexes every sentence of `conll` (doc id = (document << 32) | sentence), with a progress bar.
pub fn build_index(
    crf: Arc<Crf>,
    conll: &Conll,
    features: &[Array2<f32>],
    labels: &[Vec<u32>],
    storage: Storage,
    quiet: bool,
) -> Result<Index> {
    let tokens = conll.num_tokens() as u64;
    let mut builder = IndexBuilder::new(
        crf,
        BuildOptions {
            storage,
            expected_tokens: tokens,
        },
    );
    let ids = conll
        .sentences()
        .map(|(d, s, _)| doc_id(d, s))
        .collect::<seginf::Result<Vec<u64>>>()?;
    let batch: Vec<TrainingSequence> = ids
        .iter()
        .zip(features)
        .zip(labels)
        .map(|((&doc_id, x), y)| TrainingSequence {
            doc_id,
            features: x.view(),
            labels: y,
        })
        .collect();
    let bar = progress::bar(quiet, tokens, "indexing");
    let mut report = |done: u64, _total: u64| {
        bar.set_position(done);
        true
    };
    let added = builder.add_batch(&batch, Some(&mut report));
    bar.finish_and_clear();
    added?;
    Ok(builder.finish()?)
}

pub fn build(args: &BuildArgs) -> Result<()> {
    let (model, conll, features) = args.data.load()?;
    let labels = conll.label_ids(model.labels())?;
    let index = build_index(
        Arc::clone(&model.crf),
        &conll,
        &features,
        &labels,
        args.storage.into(),
        args.quiet,
    )?;
    index.save(&args.out)?;
    writeln!(
        std::io::stdout().lock(),
        "indexed {} tokens in {} sentences ({} documents), {} storage: saved {}",
        index.num_tokens(),
        index.num_sequences(),
        conll.documents.len(),
        index.storage().name(),
        args.out.display()
    )?;
    Ok(())
}
