//! Loading CRF parameters from a safetensors file (pytorch-crf, AllenNLP, flair exports).

use std::path::Path;

use half::{bf16, f16};
use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::crf::Crf;
use crate::error::{Error, Result};

/// Which tensors hold which parameter, and how transitions are laid out.
///
/// Defaults: pytorch-crf's `transitions`, `start_transitions`, `end_transitions` plus a linear
/// layer's `weight` (C × d) and `bias`. `weight` and `transitions` are required; `bias`,
/// `start` and `end` are loaded when the file has them (an empty name means "never load").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    pub weight: String,
    pub bias: String,
    pub transitions: String,
    pub start: String,
    pub end: String,
    /// The file stores `transitions[to][from]` (flair, torch-struct); seginf uses `[from][to]`.
    pub transitions_to_from: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            weight: "weight".into(),
            bias: "bias".into(),
            transitions: "transitions".into(),
            start: "start_transitions".into(),
            end: "end_transitions".into(),
            transitions_to_from: false,
        }
    }
}

/// A tensor's values widened to f64, with its shape. f32, f64, f16 and bf16 are accepted.
pub(crate) fn to_f64(name: &str, view: &TensorView) -> Result<(Vec<usize>, Vec<f64>)> {
    let bytes = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        other => {
            return Err(Error::Unsupported(format!(
                "tensor {name:?} has dtype {other:?}; seginf loads F32, F64, F16 and BF16"
            )))
        }
    };
    Ok((view.shape().to_vec(), values))
}

impl Crf {
    /// Reads a CRF from a safetensors file. Shapes are checked against each other
    /// (`weight` C × d, `transitions` C × C, vectors of C) and values as in [`Crf::new`].
    pub fn load_safetensors(path: &Path, options: &LoadOptions) -> Result<Crf> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        Crf::from_safetensors_bytes(&bytes, options).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// As [`Crf::load_safetensors`], from the file's bytes.
    pub fn from_safetensors_bytes(bytes: &[u8], options: &LoadOptions) -> Result<Crf> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Format(format!("not a valid safetensors file: {e}")))?;
        let get = |name: &str, required: bool| -> Result<Option<(Vec<usize>, Vec<f64>)>> {
            if name.is_empty() {
                return Ok(None);
            }
            match file.tensor(name) {
                Ok(view) => to_f64(name, &view).map(Some),
                Err(_) if !required => Ok(None),
                Err(_) => {
                    let mut have: Vec<String> =
                        file.names().into_iter().map(str::to_owned).collect();
                    have.sort();
                    Err(Error::Format(format!(
                        "no tensor named {name:?} (the file has: {})",
                        have.join(", ")
                    )))
                }
            }
        };
        let required = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            get(name, true)?.ok_or_else(|| {
                Error::InvalidArgument(format!("the name of a required tensor is empty ({name:?})"))
            })
        };
        let (w_shape, w) = required(&options.weight)?;
        let [c, d] = w_shape[..] else {
            return Err(Error::Format(format!(
                "{:?} has shape {w_shape:?}, expected [num_labels, feature_dim]",
                options.weight
            )));
        };
        let weights = Array2::from_shape_vec((c, d), w)
            .map_err(|e| Error::Format(format!("{:?}: {e}", options.weight)))?;
        let (a_shape, a) = required(&options.transitions)?;
        if a_shape != [c, c] {
            return Err(Error::DimensionMismatch(format!(
                "{:?} has shape {a_shape:?}, expected [{c}, {c}] to match {:?} {w_shape:?}",
                options.transitions, options.weight
            )));
        }
        let mut transitions = Array2::from_shape_vec((c, c), a)
            .map_err(|e| Error::Format(format!("{:?}: {e}", options.transitions)))?;
        if options.transitions_to_from {
            transitions = transitions.t().to_owned();
        }
        let vector = |name: &str| -> Result<Option<Array1<f64>>> {
            match get(name, false)? {
                None => Ok(None),
                Some((shape, v)) if shape == [c] => Ok(Some(Array1::from(v))),
                Some((shape, _)) => Err(Error::DimensionMismatch(format!(
                    "{name:?} has shape {shape:?}, expected [{c}]"
                ))),
            }
        };
        Crf::new(
            weights,
            vector(&options.bias)?,
            transitions,
            vector(&options.start)?,
            vector(&options.end)?,
        )
    }
}
