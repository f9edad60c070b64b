//! Saving an index as one safetensors file (tensors + string metadata, readable with
//! `safetensors.numpy.load_file`) and opening it again memory-mapped, validated before use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, View};
use xxhash_rust::xxh3::Xxh3;

use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::index::{Column, FeatureRows, Index, SequenceColumns, Storage, TokenColumns, NO_LABEL};

const FORMAT: &str = "seginf-index";
const FORMAT_VERSION: &str = "1";

/// A borrowed tensor to write.
pub(crate) struct Raw<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl View for &Raw<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// What each tensor must be: name, dtype, shape.
struct Spec {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
}

fn specs(storage: Storage, n: usize, s: usize, c: usize, d: usize) -> Vec<Spec> {
    let spec = |name, dtype, shape: &[usize]| Spec {
        name,
        dtype,
        shape: shape.to_vec(),
    };
    let mut out = vec![
        spec(
            "features",
            match storage {
                Storage::F32 => Dtype::F32,
                Storage::F16 => Dtype::F16,
                Storage::Int8 => Dtype::I8,
            },
            &[n, d],
        ),
        spec("token_errors", Dtype::F64, &[n, c]),
        spec("token_instance_errors", Dtype::F64, &[n, c]),
        spec("token_labels", Dtype::U32, &[n]),
        spec("token_prev_labels", Dtype::U32, &[n]),
        spec("token_next_labels", Dtype::U32, &[n]),
        spec("token_positions", Dtype::U32, &[n]),
        spec("token_sequences", Dtype::U32, &[n]),
        spec("token_losses", Dtype::F64, &[n]),
        spec("token_entropies", Dtype::F64, &[n]),
        spec("token_grad_norms", Dtype::F64, &[n]),
        spec("token_feature_norms", Dtype::F64, &[n]),
        spec("seq_doc_ids", Dtype::U64, &[s]),
        spec("seq_offsets", Dtype::U64, &[s + 1]),
        spec("seq_bias_grads", Dtype::F64, &[s, c]),
        spec("seq_transition_grads", Dtype::F64, &[s, c, c]),
        spec("seq_start_grads", Dtype::F64, &[s, c]),
        spec("seq_end_grads", Dtype::F64, &[s, c]),
        spec("seq_losses", Dtype::F64, &[s]),
        spec("seq_grad_norms", Dtype::F64, &[s]),
    ];
    if storage == Storage::Int8 {
        out.push(spec("feature_scales", Dtype::F32, &[n]));
    }
    out
}

impl Index {
    /// The bytes of each tensor, by name.
    fn tensor_bytes(&self) -> HashMap<&'static str, &[u8]> {
        let t = &self.tokens;
        let q = &self.seqs;
        let mut m: HashMap<&'static str, &[u8]> = HashMap::from([
            ("token_errors", t.errors.bytes()),
            ("token_instance_errors", t.instance_errors.bytes()),
            ("token_labels", t.labels.bytes()),
            ("token_prev_labels", t.prev_labels.bytes()),
            ("token_next_labels", t.next_labels.bytes()),
            ("token_positions", t.positions.bytes()),
            ("token_sequences", t.sequences.bytes()),
            ("token_losses", t.losses.bytes()),
            ("token_entropies", t.entropies.bytes()),
            ("token_grad_norms", t.grad_norms.bytes()),
            ("token_feature_norms", t.feature_norms.bytes()),
            ("seq_doc_ids", q.doc_ids.bytes()),
            ("seq_offsets", q.offsets.bytes()),
            ("seq_bias_grads", q.bias_grads.bytes()),
            ("seq_transition_grads", q.transition_grads.bytes()),
            ("seq_start_grads", q.start_grads.bytes()),
            ("seq_end_grads", q.end_grads.bytes()),
            ("seq_losses", q.losses.bytes()),
            ("seq_grad_norms", q.grad_norms.bytes()),
        ]);
        match &self.features {
            FeatureRows::F32(f) => m.insert("features", f.bytes()),
            FeatureRows::F16(f) => m.insert("features", f.bytes()),
            FeatureRows::Int8 { values, scales } => {
                m.insert("feature_scales", scales.bytes());
                m.insert("features", values.bytes())
            }
        };
        m
    }

    /// Writes the index to `path` atomically: a temporary file in the same directory, synced,
    /// then renamed over `path`. On failure `path` is untouched and the temporary is removed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (n, s, c, d) = self.dims();
        let bytes = self.tensor_bytes();
        let specs = specs(self.storage(), n, s, c, d);
        let raws: Vec<(&str, Raw)> = specs
            .iter()
            .map(|sp| {
                (
                    sp.name,
                    Raw {
                        dtype: sp.dtype,
                        shape: sp.shape.clone(),
                        data: bytes[sp.name],
                    },
                )
            })
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            ("num_labels".to_string(), c.to_string()),
            ("feature_dim".to_string(), d.to_string()),
            ("num_tokens".to_string(), n.to_string()),
            ("num_sequences".to_string(), s.to_string()),
            ("storage".to_string(), self.storage().name().to_string()),
            (
                "crf_fingerprint".to_string(),
                format!("{:016x}", self.crf.fingerprint()),
            ),
            ("seginf_version".to_string(), crate::VERSION.to_string()),
        ]);
        write_safetensors(path, &raws, meta)
    }

    fn dims(&self) -> (usize, usize, usize, usize) {
        (
            self.num_tokens(),
            self.num_sequences(),
            self.crf.num_labels(),
            self.crf.feature_dim(),
        )
    }

    /// Opens a saved index, memory-mapped. Checks the format, every tensor's dtype, shape and
    /// alignment, a checksum of all tensor data (a flipped bit is an error, not a wrong
    /// answer), label ranges and sequence offsets, and that it was built for `crf`.
    pub fn open(path: &Path, crf: Arc<Crf>) -> Result<Index> {
        let format = |m: String| Error::Format(format!("{}: {m}", path.display()));
        let map = Arc::new(map_path(path)?);
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| format(format!("not a valid safetensors file ({e})")))?;
        let header = Header::read(path, &map)?;
        let (field, number) = (|k| header.field(k), |k| header.number(k));
        let version = field("format_version")?;
        if version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "{}: index format version {version}; this seginf reads version {FORMAT_VERSION}",
                path.display()
            )));
        }
        let (c, d) = (number("num_labels")?, number("feature_dim")?);
        if (c, d) != (crf.num_labels(), crf.feature_dim()) {
            return Err(Error::ModelMismatch(format!(
                "{} was built for a CRF with {c} labels and {d} features; this CRF has {} labels and {} features",
                path.display(),
                crf.num_labels(),
                crf.feature_dim()
            )));
        }
        let fingerprint = format!("{:016x}", crf.fingerprint());
        if field("crf_fingerprint")? != fingerprint {
            return Err(Error::ModelMismatch(format!(
                "{} was built for another CRF (fingerprint {}, this CRF's is {fingerprint}); rebuild the index",
                path.display(),
                field("crf_fingerprint")?
            )));
        }
        let storage = header.storage()?;
        let (n, s) = (number("num_tokens")?, number("num_sequences")?);
        let specs = specs(storage, n, s, c, d);
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        let mut expected: Vec<&str> = specs.iter().map(|sp| sp.name).collect();
        expected.sort_unstable();
        if names != expected {
            return Err(format(format!("tensors {names:?}, expected {expected:?}")));
        }
        let mut ranges = HashMap::new();
        for sp in &specs {
            let view = st.tensor(sp.name).map_err(|e| format(e.to_string()))?;
            if view.dtype() != sp.dtype || view.shape() != sp.shape.as_slice() {
                return Err(format(format!(
                    "tensor {:?} is {:?} {:?}, expected {:?} {:?}",
                    sp.name,
                    view.dtype(),
                    view.shape(),
                    sp.dtype,
                    sp.shape
                )));
            }
            let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
            ranges.insert(sp.name, start..start + view.data().len());
        }
        let stored = field("checksum")?;
        let actual = format!(
            "{:016x}",
            checksum(
                specs
                    .iter()
                    .map(|sp| (sp.name, &map[ranges[sp.name].clone()]))
            )
        );
        if stored != actual {
            return Err(format(format!(
                "checksum mismatch (stored {stored}, data {actual}): the file is corrupted"
            )));
        }
        let column = |name: &'static str| -> Result<(Arc<Mmap>, std::ops::Range<usize>)> {
            Ok((Arc::clone(&map), ranges[name].clone()))
        };
        fn typed<T: Pod>(
            name: &str,
            (map, bytes): (Arc<Mmap>, std::ops::Range<usize>),
        ) -> Result<Column<T>> {
            bytemuck::try_cast_slice::<u8, T>(&map[bytes.clone()]).map_err(|_| {
                Error::Format(format!("tensor {name:?} is not aligned for its type"))
            })?;
            Ok(Column::Mapped { map, bytes })
        }
        let features = match storage {
            Storage::F32 => FeatureRows::F32(typed("features", column("features")?)?),
            Storage::F16 => FeatureRows::F16(typed("features", column("features")?)?),
            Storage::Int8 => FeatureRows::Int8 {
                values: typed("features", column("features")?)?,
                scales: typed("feature_scales", column("feature_scales")?)?,
            },
        };
        macro_rules! col {
            ($name:literal) => {
                typed($name, column($name)?)?
            };
        }
        let index = Index {
            crf,
            features,
            tokens: TokenColumns {
                errors: col!("token_errors"),
                instance_errors: col!("token_instance_errors"),
                labels: col!("token_labels"),
                prev_labels: col!("token_prev_labels"),
                next_labels: col!("token_next_labels"),
                positions: col!("token_positions"),
                sequences: col!("token_sequences"),
                losses: col!("token_losses"),
                entropies: col!("token_entropies"),
                grad_norms: col!("token_grad_norms"),
                feature_norms: col!("token_feature_norms"),
            },
            seqs: SequenceColumns {
                doc_ids: col!("seq_doc_ids"),
                offsets: col!("seq_offsets"),
                bias_grads: col!("seq_bias_grads"),
                transition_grads: col!("seq_transition_grads"),
                start_grads: col!("seq_start_grads"),
                end_grads: col!("seq_end_grads"),
                losses: col!("seq_losses"),
                grad_norms: col!("seq_grad_norms"),
            },
            derived: Default::default(),
        };
        index.check_structure().map_err(format)?;
        Ok(index)
    }

    /// Label ranges, offsets and token-to-sequence links, so that scoring never indexes out of
    /// bounds on a crafted file whose checksum was recomputed.
    fn check_structure(&self) -> std::result::Result<(), String> {
        let (n, s, c, _) = self.dims();
        if n == 0 {
            return Err("the index has no tokens".into());
        }
        let t = &self.tokens;
        let in_range = |l: u32| (l as usize) < c;
        if let Some(k) = t.labels.as_slice().iter().position(|&l| !in_range(l)) {
            return Err(format!(
                "token {k} has label {} >= {c}",
                t.labels.as_slice()[k]
            ));
        }
        for (name, col) in [("previous", &t.prev_labels), ("next", &t.next_labels)] {
            if let Some(k) = col
                .as_slice()
                .iter()
                .position(|&l| l != NO_LABEL && !in_range(l))
            {
                return Err(format!(
                    "token {k} has {name} label {} >= {c}",
                    col.as_slice()[k]
                ));
            }
        }
        let offsets = self.seqs.offsets.as_slice();
        if offsets[0] != 0 || offsets[s] != n as u64 || offsets.windows(2).any(|w| w[0] >= w[1]) {
            return Err("sequence offsets are not increasing from 0 to the token count".into());
        }
        let (seq_of, pos) = (t.sequences.as_slice(), t.positions.as_slice());
        for q in 0..s {
            for k in offsets[q] as usize..offsets[q + 1] as usize {
                if seq_of[k] as usize != q || pos[k] as u64 != k as u64 - offsets[q] {
                    return Err(format!("token {k} does not match sequence {q}'s offsets"));
                }
            }
        }
        Ok(())
    }
}

/// What a saved index's metadata says, read without opening the index (no CRF needed, no
/// tensor data read): `seginf inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexInfo {
    pub format_version: String,
    pub num_labels: usize,
    pub feature_dim: usize,
    pub num_tokens: usize,
    pub num_sequences: usize,
    pub storage: Storage,
    /// The fingerprint of the CRF it was built for, as 16 hex digits ([`Crf::fingerprint`]).
    pub crf_fingerprint: String,
    /// The seginf version that wrote it (empty when not recorded).
    pub seginf_version: String,
    /// Size of the file in bytes.
    pub file_bytes: u64,
}

impl IndexInfo {
    /// Reads the metadata of the index file at `path` (memory-mapped; only the header is
    /// touched). Errors when it is not a seginf index. [`Index::open`] checks everything else.
    pub fn read(path: &Path) -> Result<IndexInfo> {
        let map = map_path(path)?;
        let header = Header::read(path, &map)?;
        let (field, number) = (|k| header.field(k), |k| header.number(k));
        Ok(IndexInfo {
            format_version: field("format_version")?,
            num_labels: number("num_labels")?,
            feature_dim: number("feature_dim")?,
            num_tokens: number("num_tokens")?,
            num_sequences: number("num_sequences")?,
            storage: header.storage()?,
            crf_fingerprint: field("crf_fingerprint")?,
            seginf_version: header
                .meta
                .get("seginf_version")
                .cloned()
                .unwrap_or_default(),
            file_bytes: map.len() as u64,
        })
    }
}

/// Opens and memory-maps the file at `path`.
fn map_path(path: &Path) -> Result<Mmap> {
    let file =
        File::open(path).map_err(|e| Error::Io(format!("cannot open {}: {e}", path.display())))?;
    map_file(&file).map_err(|e| Error::Io(format!("cannot map {}: {e}", path.display())))
}

/// The metadata of a seginf index file (its safetensors header, format checked), shared by
/// [`Index::open`] and [`IndexInfo::read`]; errors name the file.
struct Header<'p> {
    path: &'p Path,
    meta: HashMap<String, String>,
}

impl<'p> Header<'p> {
    fn read(path: &'p Path, bytes: &[u8]) -> Result<Header<'p>> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            Error::Format(format!(
                "{}: not a valid safetensors file ({e})",
                path.display()
            ))
        })?;
        let meta = header.metadata().clone().unwrap_or_default();
        let header = Header { path, meta };
        if header.field("format")? != FORMAT {
            return Err(header.error(format!("metadata format is not {FORMAT:?}")));
        }
        Ok(header)
    }

    fn error(&self, m: String) -> Error {
        Error::Format(format!("{}: {m}", self.path.display()))
    }

    fn field(&self, k: &str) -> Result<String> {
        (self.meta.get(k).cloned()).ok_or_else(|| {
            self.error(format!(
                "metadata field {k:?} is missing (not a seginf index?)"
            ))
        })
    }

    fn number(&self, k: &str) -> Result<usize> {
        (self.field(k)?.parse::<usize>())
            .map_err(|_| self.error(format!("metadata field {k:?} is not a number")))
    }

    fn storage(&self) -> Result<Storage> {
        Storage::from_name(&self.field("storage")?)
            .ok_or_else(|| self.error(format!("unknown storage {:?}", self.meta.get("storage"))))
    }
}

/// Writes named tensors plus metadata (and their checksum) as one safetensors file,
/// atomically: a temporary file in the same directory, synced, then renamed over `path`. On
/// failure `path` is untouched and the temporary is removed.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Raw)],
    mut meta: HashMap<String, String>,
) -> Result<()> {
    meta.insert(
        "checksum".to_string(),
        format!(
            "{:016x}",
            checksum(tensors.iter().map(|(k, r)| (*k, r.data)))
        ),
    );
    let tmp = temporary_path(path);
    let written = safetensors::tensor::serialize_to_file(
        tensors.iter().map(|(k, r)| (*k, r)),
        Some(meta),
        &tmp,
    )
    .map_err(|e| Error::Io(format!("cannot write {}: {e}", tmp.display())))
    .and_then(|()| {
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| Error::Io(format!("cannot save {}: {e}", path.display())))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// xxh3 over every tensor's name and bytes, in name order (independent of the file layout).
pub(crate) fn checksum<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> u64 {
    let mut sorted: Vec<(&str, &[u8])> = tensors.collect();
    sorted.sort_by_key(|(name, _)| *name);
    let mut h = Xxh3::new();
    for (name, data) in sorted {
        h.update(name.as_bytes());
        h.update(&(data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.digest()
}

fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Memory-maps a file read-only.
#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: memmap2 requires that the file is not truncated or modified while mapped (that
    // would be undefined behaviour). seginf only writes indexes to a new temporary file that
    // is renamed into place, so a save never changes a mapped file; the header documents that
    // callers must not modify index files in place either. Contents are fully validated
    // (checksum included) before use.
    unsafe { Mmap::map(file) }
}
