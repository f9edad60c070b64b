//! Reading a command's inputs: a model with its label names, CoNLL files, their features.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Array2;
use seginf::data::{Conll, ReadOptions};
use seginf::{Crf, LoadOptions, ModelMetadata, TagScheme};

use crate::args::{FeatureArgs, ReadArgs, Scheme};
use crate::Result;

/// Metadata keys `seginf train` adds: where the features came from, and the scheme of the
/// training file as read (`iob1` when it was converted).
pub const FEATURES_KEY: &str = "features";
pub const SYNTHETIC: &str = "synthetic";
pub const SOURCE_SCHEME_KEY: &str = "source_scheme";

/// A CRF with the label names and scheme its file records.
pub struct Model {
    pub path: PathBuf,
    pub crf: Arc<Crf>,
    pub meta: ModelMetadata,
}

impl Model {
    /// Loads a model file; it must record its label names (models saved by `seginf train`
    /// do), since CoNLL labels are matched to them by name.
    pub fn load(path: &Path) -> Result<Model> {
        let meta = ModelMetadata::read(path)?;
        let crf = Crf::load_safetensors(path, &LoadOptions::default())?;
        if meta.labels.is_empty() {
            return Err(format!(
                "{}: the model records no label names (its metadata has no \"labels\"); \
                 models saved by `seginf train` do, and Crf::save_safetensors writes them",
                path.display()
            )
            .into());
        }
        Ok(Model {
            path: path.to_path_buf(),
            crf: Arc::new(crf),
            meta,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.meta.labels
    }

    /// The L2 strength of the model's training objective: `given`, else the one `seginf train`
    /// recorded in the model (what the Hessian modes need).
    pub fn l2(&self, given: Option<f64>) -> Result<f64> {
        match (given, self.meta.extra.get("l2")) {
            (Some(l2), _) => Ok(l2),
            (None, Some(recorded)) => recorded.parse().map_err(|_| {
                format!(
                    "{}: the recorded l2 {recorded:?} is not a number: give --l2",
                    self.path.display()
                )
                .into()
            }),
            (None, None) => Err(format!(
                "{} does not record the l2 it was trained with: give --l2",
                self.path.display()
            )
            .into()),
        }
    }

    pub fn label_name(&self, label: u32) -> &str {
        self.meta
            .labels
            .get(label as usize)
            .map_or("?", String::as_str)
    }

    /// The scheme to read CoNLL files with: the one given, else the training file's.
    pub fn read_scheme(&self, given: Option<Scheme>) -> Option<TagScheme> {
        match given {
            Some(s) => s.tag_scheme(),
            None => self
                .meta
                .extra
                .get(SOURCE_SCHEME_KEY)
                .and_then(|s| TagScheme::from_name(s))
                .or(self.meta.scheme),
        }
    }

    /// Reads a CoNLL file with this model's scheme (or the one given).
    pub fn read_conll(&self, path: &Path, read: &ReadArgs) -> Result<Conll> {
        Ok(Conll::read(
            path,
            &read.options(self.read_scheme(read.scheme)),
        )?)
    }

    /// Per-sentence features for `conll`: from the file given, or synthetic when the model
    /// was trained on synthetic features (anything else would silently give wrong answers).
    pub fn features(&self, conll: &Conll, args: &FeatureArgs) -> Result<Vec<Array2<f32>>> {
        let d = self.crf.feature_dim();
        let synthetic = self.meta.extra.get(FEATURES_KEY).map(String::as_str) == Some(SYNTHETIC);
        if args.features.is_none() && !synthetic {
            return Err(format!(
                "{}: no --features given, and {} was not trained on seginf's synthetic \
                 features: give the features of {} from the model's encoder",
                conll.source,
                self.path.display(),
                conll.source
            )
            .into());
        }
        features(conll, args, d, Some(d))
    }
}

/// Per-sentence features for `conll`: read from `args.features` (which must have
/// `expected_dim` columns when given), or synthetic with `synthetic_dim` columns.
pub fn features(
    conll: &Conll,
    args: &FeatureArgs,
    synthetic_dim: usize,
    expected_dim: Option<usize>,
) -> Result<Vec<Array2<f32>>> {
    let Some(path) = &args.features else {
        return conll
            .sentences()
            .map(|(_, _, s)| Ok(seginf::corpus::sentence_features(&s.words, synthetic_dim)?))
            .collect();
    };
    let x = seginf::data::read_features(path, args.features_tensor.as_deref())?;
    if let Some(d) = expected_dim {
        if x.ncols() != d {
            return Err(format!(
                "{}: {} feature columns, the model expects {d}",
                path.display(),
                x.ncols()
            )
            .into());
        }
    }
    Ok(conll.split_features(x.view(), &path.display().to_string())?)
}

/// Reads a CoNLL file for training: IOB2 unless a scheme is given.
pub fn read_training_conll(path: &Path, read: &ReadArgs) -> Result<(Conll, Option<TagScheme>)> {
    let scheme = read.scheme.unwrap_or(Scheme::Iob2).tag_scheme();
    let options: ReadOptions = read.options(scheme);
    Ok((Conll::read(path, &options)?, scheme))
}
