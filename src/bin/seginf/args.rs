//! Options several commands share.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ndarray::Array2;
use seginf::data::{Conll, ReadOptions};
use seginf::TagScheme;

use crate::load::Model;

/// A CoNLL file's tagging scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scheme {
    /// Original CoNLL-2003 tags (entities start with I-); converted to IOB2 on read.
    Iob1,
    /// BIO: every entity starts with B-.
    #[value(alias = "bio")]
    Iob2,
    /// B-, I-, E- for multi-token entities, S- for single tokens (BILOU's L-, U- too).
    #[value(alias = "bilou")]
    Bioes,
    /// Plain tags (POS tags, say): no checks, no constraints, no entities.
    None,
}

impl Scheme {
    pub fn tag_scheme(self) -> Option<TagScheme> {
        match self {
            Scheme::Iob1 => Some(TagScheme::Iob1),
            Scheme::Iob2 => Some(TagScheme::Bio),
            Scheme::Bioes => Some(TagScheme::Bioes),
            Scheme::None => None,
        }
    }
}

/// How to read CoNLL files.
#[derive(Debug, Clone, Args)]
pub struct ReadArgs {
    /// Tagging scheme of the CoNLL files [default: iob2 for `train`; the scheme the model
    /// was trained from otherwise]. IOB1 files are converted to IOB2 on read (a model
    /// trained on them is an IOB2 model); IOB2 and BIOES files are checked, and a tag
    /// sequence the scheme does not allow is an error naming its line.
    #[arg(long, value_enum, value_name = "SCHEME")]
    pub scheme: Option<Scheme>,
    /// Column holding the label, counted from 1 (the word is column 1) [default: the last].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..))]
    pub label_column: Option<u32>,
}

impl ReadArgs {
    pub fn options(&self, scheme: Option<TagScheme>) -> ReadOptions {
        ReadOptions {
            scheme,
            label_column: self.label_column.map(|c| c as usize),
        }
    }
}

/// Token features for a CoNLL file.
#[derive(Debug, Clone, Args)]
pub struct FeatureArgs {
    /// Token features, one row per token of the CoNLL file in file order (all documents and
    /// sentences): a 2-D .npy array (f32 or f64) or a safetensors file. Without it, seginf
    /// computes its synthetic stand-in features (word vectors of a ±1 window plus word shape,
    /// see `seginf::corpus::sentence_features`): fine for trying the tool, no substitute for
    /// an encoder.
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
    /// The tensor holding the features when the safetensors file has several.
    #[arg(long, value_name = "NAME", requires = "features")]
    pub features_tensor: Option<String>,
}

/// A model and the CoNLL training data (with its token features) it was trained on: what
/// `index build` and `index curvature` both read.
#[derive(Debug, Args)]
pub struct ModelDataArgs {
    /// The model (from `seginf train`, or any safetensors CRF that records its labels).
    #[arg(long, value_name = "MODEL.safetensors")]
    pub model: PathBuf,
    /// The training data the model was trained on (CoNLL).
    #[arg(long, value_name = "FILE.conll")]
    pub train: PathBuf,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

impl ModelDataArgs {
    /// The model, its training file and that file's features, one array per sentence.
    pub fn load(&self) -> crate::Result<(Model, Conll, Vec<Array2<f32>>)> {
        let model = Model::load(&self.model)?;
        let conll = model.read_conll(&self.train, &self.read)?;
        let features = model.features(&conll, &self.features)?;
        Ok((model, conll, features))
    }
}
