//! Saving a CRF as safetensors, with its label names and tagging scheme in the metadata.
//!
//! The tensors have the names [`LoadOptions::default`](crate::crf::LoadOptions) reads (`weight`, `bias`,
//! `transitions`, `start_transitions`, `end_transitions`; absent blocks are not written), in
//! F64, so that [`Crf::load_safetensors`] gives back the same parameters bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use crate::crf::{ConstraintMask, Crf, TagScheme};
use crate::error::{Error, Result};
use crate::index::file::{checksum, write_safetensors, Raw};

/// The `format` field of a saved model's metadata.
pub const MODEL_FORMAT: &str = "seginf-crf";
const MODEL_FORMAT_VERSION: &str = "1";
/// Metadata keys seginf writes itself.
const RESERVED: [&str; 6] = [
    "format",
    "format_version",
    "labels",
    "scheme",
    "checksum",
    "seginf_version",
];

/// What a model file says beside the parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelMetadata {
    /// Label names in label-id order (C of them); empty when not recorded (a file exported
    /// from PyTorch, say).
    pub labels: Vec<String>,
    /// The labels' tagging scheme; `None` when not recorded or for plain tags.
    pub scheme: Option<TagScheme>,
    /// Any other fields (training settings, say), saved as they are. Keys seginf writes
    /// itself (`format`, `format_version`, `labels`, `scheme`, `checksum`, `seginf_version`)
    /// are refused on save and left out on read.
    pub extra: BTreeMap<String, String>,
}

impl ModelMetadata {
    /// Reads the metadata of a model file. A file without seginf metadata gives the default
    /// (no labels); a seginf file whose checksum does not match its tensors is an error.
    pub fn read(path: &Path) -> Result<ModelMetadata> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        ModelMetadata::from_safetensors_bytes(&bytes)
            .map_err(|e| Error::Format(format!("{}: {}", path.display(), message(&e))))
    }

    /// As [`ModelMetadata::read`], from the file's bytes.
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<ModelMetadata> {
        let file = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::Format(format!("not a valid safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format(format!("not a valid safetensors file: {e}")))?;
        let mut meta = header.metadata().clone().unwrap_or_default();
        match meta.get("format").map(String::as_str) {
            None => return Ok(ModelMetadata::default()),
            Some(MODEL_FORMAT) => {}
            Some(other) => {
                return Err(Error::Format(format!(
                    "metadata format is {other:?}, not a model ({MODEL_FORMAT:?})"
                )))
            }
        }
        if let Some(stored) = meta.get("checksum") {
            let names = file.names();
            let views = names
                .iter()
                .map(|n| file.tensor(n).map(|v| (*n, v)))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Format(e.to_string()))?;
            let actual = format!(
                "{:016x}",
                checksum(views.iter().map(|(n, v)| (*n, v.data())))
            );
            if *stored != actual {
                return Err(Error::Format(format!(
                    "checksum mismatch (stored {stored}, data {actual}): the file is corrupted"
                )));
            }
        }
        let labels = match meta.get("labels") {
            None => Vec::new(),
            Some(json) => serde_json::from_str::<Vec<String>>(json).map_err(|e| {
                Error::Format(format!(
                    "metadata labels are not a JSON list of strings ({e})"
                ))
            })?,
        };
        let scheme = match meta.get("scheme").map(String::as_str) {
            None | Some("none") => None,
            Some(name) => Some(TagScheme::from_name(name).ok_or_else(|| {
                Error::Format(format!(
                    "metadata scheme {name:?} is not iob1, iob2 or bioes"
                ))
            })?),
        };
        for key in RESERVED {
            meta.remove(key);
        }
        Ok(ModelMetadata {
            labels,
            scheme,
            extra: meta.into_iter().collect(),
        })
    }

    fn check(&self, crf: &Crf) -> Result<()> {
        let c = crf.num_labels();
        if !self.labels.is_empty() && self.labels.len() != c {
            return Err(Error::DimensionMismatch(format!(
                "{} label names for a CRF with {c} labels",
                self.labels.len()
            )));
        }
        if let (Some(scheme), false) = (self.scheme, self.labels.is_empty()) {
            ConstraintMask::from_labels(scheme, &self.labels)?;
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "label {dup:?} is named twice"
            )));
        }
        if let Some(key) = self.extra.keys().find(|k| RESERVED.contains(&k.as_str())) {
            return Err(Error::InvalidArgument(format!(
                "metadata key {key:?} is reserved for seginf"
            )));
        }
        Ok(())
    }
}

/// The message of an error without its kind's prefix, to re-wrap with a path.
fn message(e: &Error) -> String {
    let full = e.to_string();
    match full.split_once(": ") {
        Some((_, rest)) if matches!(e, Error::Format(_)) => rest.to_string(),
        _ => full,
    }
}

fn le_bytes<'a>(values: impl IntoIterator<Item = &'a f64>) -> Vec<u8> {
    values.into_iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl Crf {
    /// Writes the CRF to `path` atomically (a temporary file in the same directory, synced,
    /// then renamed; on failure `path` is untouched), with `metadata` and a checksum.
    /// Errors when the label names do not match the CRF or the scheme, or on a reserved key.
    pub fn save_safetensors(&self, path: &Path, metadata: &ModelMetadata) -> Result<()> {
        metadata.check(self)?;
        let (c, d) = (self.num_labels(), self.feature_dim());
        let mut blocks: Vec<(&str, Vec<usize>, Vec<u8>)> = vec![
            ("weight", vec![c, d], le_bytes(self.weights())),
            ("transitions", vec![c, c], le_bytes(self.transitions())),
        ];
        for (name, block) in [
            ("bias", self.bias()),
            ("start_transitions", self.start()),
            ("end_transitions", self.end()),
        ] {
            if let Some(v) = block {
                blocks.push((name, vec![c], le_bytes(v)));
            }
        }
        let tensors: Vec<(&str, Raw)> = blocks
            .iter()
            .map(|(name, shape, data)| {
                (
                    *name,
                    Raw {
                        dtype: Dtype::F64,
                        shape: shape.clone(),
                        data,
                    },
                )
            })
            .collect();
        let mut meta: HashMap<String, String> = metadata.extra.clone().into_iter().collect();
        meta.insert("format".into(), MODEL_FORMAT.into());
        meta.insert("format_version".into(), MODEL_FORMAT_VERSION.into());
        meta.insert("seginf_version".into(), crate::VERSION.into());
        if !metadata.labels.is_empty() {
            let json = serde_json::to_string(&metadata.labels)
                .map_err(|e| Error::InvalidArgument(format!("label names: {e}")))?;
            meta.insert("labels".into(), json);
        }
        if let Some(scheme) = metadata.scheme {
            meta.insert("scheme".into(), scheme.name().into());
        }
        write_safetensors(path, &tensors, meta)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};

    use super::*;
    use crate::crf::LoadOptions;

    fn crf(with_optional: bool) -> Crf {
        let (c, d) = (3, 4);
        let w = Array2::from_shape_fn((c, d), |(i, j)| (i as f64 - 1.3) * (j as f64 + 0.1) / 7.0);
        let a = Array2::from_shape_fn((c, c), |(i, j)| match (i, j) {
            (0, 2) => f64::NEG_INFINITY,
            _ => 0.1 * i as f64 - 0.3 * j as f64 + 1e-17,
        });
        let v = |k: f64| with_optional.then(|| Array1::from_shape_fn(c, |i| k * i as f64 + 0.5));
        Crf::new(w, v(0.7), a, v(-0.2), v(1.0 / 3.0)).unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("seginf-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn save_load_round_trip_is_bit_identical() {
        for with_optional in [true, false] {
            let model = crf(with_optional);
            let meta = ModelMetadata {
                labels: vec!["O".into(), "B-PER".into(), "I-PER".into()],
                scheme: Some(TagScheme::Bio),
                extra: BTreeMap::from([("l2".to_string(), "0.0001".to_string())]),
            };
            let path = temp(&format!("model-{with_optional}.safetensors"));
            model.save_safetensors(&path, &meta).unwrap();
            let back = Crf::load_safetensors(&path, &LoadOptions::default()).unwrap();
            let bits = |c: &Crf| c.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&model));
            assert_eq!(back.fingerprint(), model.fingerprint());
            assert_eq!(back.bias().is_some(), with_optional);
            assert_eq!(ModelMetadata::read(&path).unwrap(), meta);
        }
    }

    #[test]
    fn bad_metadata_is_refused_and_corruption_found() {
        let model = crf(true);
        let path = temp("bad.safetensors");
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (labels, scheme, key) in [
            (names(&["O", "B-PER"]), None, "x"),
            (names(&["O", "B-PER", "X"]), Some(TagScheme::Bio), "x"),
            (names(&["O", "O", "B-PER"]), None, "x"),
            (names(&["O", "B-PER", "I-PER"]), None, "labels"),
        ] {
            let meta = ModelMetadata {
                labels,
                scheme,
                extra: BTreeMap::from([(key.to_string(), String::new())]),
            };
            assert!(model.save_safetensors(&path, &meta).is_err(), "{meta:?}");
            assert!(!path.exists());
        }
        model
            .save_safetensors(&path, &ModelMetadata::default())
            .unwrap();
        assert_eq!(
            ModelMetadata::read(&path).unwrap(),
            ModelMetadata::default()
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = ModelMetadata::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("checksum"),
            "{e}"
        );
    }
}
