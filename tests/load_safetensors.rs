//! Loading CRFs from safetensors files as pytorch-crf, AllenNLP and flair users export them.

// Index loops mirror the formulas (t over positions, j over labels).
#![allow(clippy::needless_range_loop)]

use half::{bf16, f16};
use safetensors::tensor::{serialize, Dtype, TensorView};
use seginf::{Crf, Error, LoadOptions};

/// One tensor to write: name, dtype, shape, f64 values (encoded in that dtype).
struct T(&'static str, Dtype, Vec<usize>, Vec<f64>);

fn encode(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| match dtype {
            Dtype::F32 => (v as f32).to_le_bytes().to_vec(),
            Dtype::F64 => v.to_le_bytes().to_vec(),
            Dtype::F16 => f16::from_f64(v).to_le_bytes().to_vec(),
            Dtype::BF16 => bf16::from_f64(v).to_le_bytes().to_vec(),
            Dtype::I32 => (v as i32).to_le_bytes().to_vec(),
            _ => unreachable!("test dtype"),
        })
        .collect()
}

fn file(tensors: &[T]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| encode(t.1, &t.3)).collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| (t.0, TensorView::new(t.1, t.2.clone(), b).unwrap()))
        .collect();
    serialize(views, None).unwrap()
}

/// Values that survive a round trip through every float dtype (multiples of 1/8).
fn values(len: usize, offset: usize) -> Vec<f64> {
    (0..len)
        .map(|i| ((i * 7 + offset * 3) % 17) as f64 / 8.0 - 1.0)
        .collect()
}

fn pytorch_crf(dtype: Dtype) -> Vec<T> {
    vec![
        T("weight", dtype, vec![3, 2], values(6, 0)),
        T("bias", dtype, vec![3], values(3, 1)),
        T("transitions", dtype, vec![3, 3], values(9, 2)),
        T("start_transitions", dtype, vec![3], values(3, 3)),
        T("end_transitions", dtype, vec![3], values(3, 4)),
    ]
}

#[test]
fn every_float_dtype_loads_with_pytorch_crf_names() {
    for dtype in [Dtype::F32, Dtype::F64, Dtype::F16, Dtype::BF16] {
        let crf = Crf::from_safetensors_bytes(&file(&pytorch_crf(dtype)), &LoadOptions::default())
            .unwrap();
        assert_eq!(
            (crf.num_labels(), crf.feature_dim(), crf.num_params()),
            (3, 2, 6 + 3 + 9 + 3 + 3)
        );
        let mut want = values(6, 0);
        for (len, offset) in [(3, 1), (9, 2), (3, 3), (3, 4)] {
            want.extend(values(len, offset));
        }
        assert_eq!(crf.params(), want, "{dtype:?}");
    }
}

#[test]
fn optional_blocks_may_be_absent_and_names_are_configurable() {
    // AllenNLP-style names, no bias/start/end, transitions stored [to][from] (flair layout).
    let a = values(9, 2);
    let bytes = file(&[
        T(
            "tag_projection_layer._module.weight",
            Dtype::F32,
            vec![3, 2],
            values(6, 0),
        ),
        T("crf.transitions", Dtype::F32, vec![3, 3], a.clone()),
    ]);
    let options = LoadOptions {
        weight: "tag_projection_layer._module.weight".into(),
        transitions: "crf.transitions".into(),
        transitions_to_from: true,
        ..LoadOptions::default()
    };
    let crf = Crf::from_safetensors_bytes(&bytes, &options).unwrap();
    assert!(crf.bias().is_none() && crf.start().is_none() && crf.end().is_none());
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(
                crf.transitions()[[i, j]],
                a[j * 3 + i],
                "transposed [{i}][{j}]"
            );
        }
    }
    // An empty name means "never load" even when the tensor is there.
    let no_bias = LoadOptions {
        bias: String::new(),
        ..LoadOptions::default()
    };
    let crf = Crf::from_safetensors_bytes(&file(&pytorch_crf(Dtype::F32)), &no_bias).unwrap();
    assert!(crf.bias().is_none() && crf.start().is_some());
}

#[test]
fn bad_files_give_clear_errors() {
    let defaults = LoadOptions::default();
    let err =
        |tensors: Vec<T>| Crf::from_safetensors_bytes(&file(&tensors), &defaults).unwrap_err();

    let mut missing = pytorch_crf(Dtype::F32);
    missing.remove(2);
    assert!(
        matches!(err(missing), Error::Format(m) if m.contains("\"transitions\"") && m.contains("weight"))
    );

    let mut wrong_shape = pytorch_crf(Dtype::F32);
    wrong_shape[2] = T("transitions", Dtype::F32, vec![2, 2], values(4, 0));
    assert!(matches!(err(wrong_shape), Error::DimensionMismatch(m) if m.contains("[3, 3]")));

    let mut wrong_vector = pytorch_crf(Dtype::F32);
    wrong_vector[4] = T("end_transitions", Dtype::F32, vec![4], values(4, 0));
    assert!(
        matches!(err(wrong_vector), Error::DimensionMismatch(m) if m.contains("end_transitions"))
    );

    let mut integer = pytorch_crf(Dtype::F32);
    integer[0] = T("weight", Dtype::I32, vec![3, 2], values(6, 0));
    assert!(matches!(err(integer), Error::Unsupported(m) if m.contains("I32")));

    let mut nan = pytorch_crf(Dtype::F32);
    nan[0].3[4] = f64::NAN;
    assert!(matches!(err(nan), Error::NonFinite(m) if m.contains("weights[2][0]")));

    let mut forbidden = pytorch_crf(Dtype::F32);
    forbidden[2].3[1] = f64::NEG_INFINITY; // allowed: a constraint
    assert!(Crf::from_safetensors_bytes(&file(&forbidden), &defaults).is_ok());

    assert!(matches!(
        Crf::from_safetensors_bytes(b"not a safetensors file", &defaults),
        Err(Error::Format(_))
    ));
    let missing_file = std::path::Path::new("/nonexistent/seginf/model.safetensors");
    assert!(
        matches!(Crf::load_safetensors(missing_file, &defaults), Err(Error::Io(m)) if m.contains("/nonexistent"))
    );
}

#[test]
fn a_loaded_model_computes_like_one_built_from_arrays() {
    let dir = std::env::temp_dir().join(format!("seginf-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("crf.safetensors");
    std::fs::write(&path, file(&pytorch_crf(Dtype::F32))).unwrap();
    let loaded = Crf::load_safetensors(&path, &LoadOptions::default()).unwrap();
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let built = Crf::from_f32(
        3,
        2,
        &f(values(6, 0)),
        Some(&f(values(3, 1))),
        &f(values(9, 2)),
        Some(&f(values(3, 3))),
        Some(&f(values(3, 4))),
    )
    .unwrap();
    assert_eq!(loaded, built);
    std::fs::remove_dir_all(&dir).unwrap();
}
