//! Token features from a file: a 2-D `.npy` array (f32 or f64) or one 2-D tensor of a
//! safetensors file (F32, F64, F16 or BF16), one row per token.

use std::io::Cursor;
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use safetensors::tensor::SafeTensors;

use crate::crf::load::to_f64;
use crate::error::{Error, Result};

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Reads an n × d feature matrix from `path`: a `.npy` file (told by its magic bytes) or a
/// safetensors file. `tensor` names the tensor of a safetensors file; it may be `None` when
/// the file holds one tensor. f64 values are rounded to f32 (an error when one does not fit).
pub fn read_features(path: &Path, tensor: Option<&str>) -> Result<Array2<f32>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    let source = path.display().to_string();
    match bytes.starts_with(NPY_MAGIC) {
        true => {
            if let Some(name) = tensor {
                return Err(Error::InvalidArgument(format!(
                    "{source} is a .npy file (one array): a tensor name ({name:?}) is for safetensors files"
                )));
            }
            from_npy(&bytes, &source)
        }
        false => from_safetensors(&bytes, &source, tensor),
    }
}

fn from_npy(bytes: &[u8], source: &str) -> Result<Array2<f32>> {
    let format =
        |e: ReadNpyError| Error::Format(format!("{source}: not a 2-D f32 or f64 .npy array ({e})"));
    match Array2::<f32>::read_npy(Cursor::new(bytes)) {
        Ok(x) => Ok(x),
        Err(ReadNpyError::WrongDescriptor(_)) => {
            let wide = Array2::<f64>::read_npy(Cursor::new(bytes)).map_err(format)?;
            narrow(wide.dim(), wide.iter().copied(), source)
        }
        Err(e) => Err(format(e)),
    }
}

fn from_safetensors(bytes: &[u8], source: &str, tensor: Option<&str>) -> Result<Array2<f32>> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| {
        Error::Format(format!(
            "{source}: neither a .npy nor a safetensors file ({e})"
        ))
    })?;
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    let name = match (tensor, names.as_slice()) {
        (Some(name), _) => name,
        (None, [only]) => only,
        (None, _) => {
            return Err(Error::InvalidArgument(format!(
                "{source} has {} tensors ({}): name the one holding the features",
                names.len(),
                names.join(", ")
            )))
        }
    };
    let view = file.tensor(name).map_err(|_| {
        Error::Format(format!(
            "{source}: no tensor named {name:?} (the file has: {})",
            names.join(", ")
        ))
    })?;
    let (shape, values) = to_f64(name, &view).map_err(|e| match e {
        Error::Unsupported(m) => Error::Unsupported(format!("{source}: {m}")),
        other => other,
    })?;
    let [n, d] = shape[..] else {
        return Err(Error::Format(format!(
            "{source}: tensor {name:?} has shape {shape:?}, expected [tokens, feature_dim]"
        )));
    };
    narrow((n, d), values.into_iter(), source)
}

/// f64 values to f32, refusing finite values beyond the f32 range (they would become inf).
fn narrow(
    dim: (usize, usize),
    values: impl Iterator<Item = f64>,
    source: &str,
) -> Result<Array2<f32>> {
    let d = dim.1.max(1);
    let mut out = Vec::with_capacity(dim.0 * dim.1);
    for (i, v) in values.enumerate() {
        let x = v as f32;
        if v.is_finite() && !x.is_finite() {
            return Err(Error::NonFinite(format!(
                "{source}: row {}, column {}: {v} does not fit in f32",
                i / d,
                i % d
            )));
        }
        out.push(x);
    }
    Array2::from_shape_vec(dim, out).map_err(|e| Error::Format(format!("{source}: {e}")))
}

/// Writes an n × d f32 matrix as a `.npy` file (C order), readable by `numpy.load`.
pub fn write_npy(path: &Path, features: ArrayView2<f32>) -> Result<()> {
    let file = std::fs::File::create(path)
        .map_err(|e| Error::Io(format!("cannot create {}: {e}", path.display())))?;
    features
        .write_npy(std::io::BufWriter::new(file))
        .map_err(|e| Error::Io(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("seginf-features-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn npy_f32_and_f64_round_trip() {
        let x = Array2::from_shape_fn((3, 4), |(i, j)| i as f32 - 0.25 * j as f32);
        let p = temp("x32.npy");
        write_npy(&p, x.view()).unwrap();
        assert_eq!(read_features(&p, None).unwrap(), x);
        let wide = x.mapv(f64::from);
        let p = temp("x64.npy");
        ndarray_npy::write_npy(&p, &wide).unwrap();
        assert_eq!(read_features(&p, None).unwrap(), x);
        assert!(read_features(&p, Some("x")).is_err());
        let too_big = Array2::from_elem((2, 2), 1e300f64);
        ndarray_npy::write_npy(&p, &too_big).unwrap();
        let e = read_features(&p, None).unwrap_err().to_string();
        assert!(e.contains("row 0, column 0"), "{e}");
        let p = temp("x1.npy");
        ndarray_npy::write_npy(&p, &ndarray::arr1(&[1.0f32, 2.0])).unwrap();
        let e = read_features(&p, None).unwrap_err().to_string();
        assert!(e.contains("x1.npy") && e.contains("2-D"), "{e}");
        let e = read_features(&temp("missing.npy"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.npy"), "{e}");
    }

    #[test]
    fn safetensors_one_or_named_tensor() {
        use safetensors::tensor::{Dtype, TensorView};
        let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [7.0f64, 8.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let one = HashMap::from([("h", TensorView::new(Dtype::F32, vec![3, 2], &a).unwrap())]);
        let p = temp("one.safetensors");
        safetensors::tensor::serialize_to_file(one, None, &p).unwrap();
        let x = read_features(&p, None).unwrap();
        assert_eq!(x, ndarray::arr2(&[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]));
        let two = HashMap::from([
            ("h", TensorView::new(Dtype::F32, vec![3, 2], &a).unwrap()),
            ("g", TensorView::new(Dtype::F64, vec![1, 2], &b).unwrap()),
        ]);
        let p = temp("two.safetensors");
        safetensors::tensor::serialize_to_file(two, None, &p).unwrap();
        let e = read_features(&p, None).unwrap_err().to_string();
        assert!(e.contains("2 tensors (g, h)"), "{e}");
        assert_eq!(
            read_features(&p, Some("g")).unwrap(),
            ndarray::arr2(&[[7.0, 8.0]])
        );
        let e = read_features(&p, Some("nope")).unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
        let p = temp("junk.bin");
        std::fs::write(&p, b"hello world, not features").unwrap();
        let e = read_features(&p, None).unwrap_err().to_string();
        assert!(e.contains("junk.bin"), "{e}");
    }
}
