//! K-FAC and EK-FAC inverse Hessians for the CRF head (Martens & Grosse 2015; George et al.
//! 2018), block-diagonal: the emission block `[W | b]` Kronecker-factored, the small
//! transition/start/end block dense and exact.
//!
//! Emission block, over training tokens (q_t = the model's marginals p(y_t|x), f̃ = [f, 1]
//! when the model has a bias):
//!
//! ```text
//! H_W ≈ A ⊗ B,  A = (1/|D|) Σ_t f̃_t f̃_tᵀ,  B = (1/N) Σ_t (diag q_t − q_t q_tᵀ)
//! ```
//!
//! (scaled so that `A ⊗ B ≈ (1/|D|) Σ_t f̃_t f̃_tᵀ ⊗ Cov(ȳ_t)`, the mean-NLL Hessian when
//! tokens are independent). As an operator on the C × d̃ gradient block G: `H·G = B G A`, so
//! with `A = U_A Λ_A U_Aᵀ`, `B = U_B Λ_B U_Bᵀ`:
//! `(H + s I)⁻¹ G = U_B [(U_Bᵀ G U_A) ⊘ (λ_B λ_Aᵀ + s)] U_Aᵀ`, `s = l2 + damping`.
//! K-FAC damps the factors instead (Martens & Grosse 2015, §6.3): `(A + π√s I) ⊗ (B + √s/π I)`
//! with `π² = (tr A / d̃) / (tr B / C)`, whose inverse is again a Kronecker product, so a rank-m
//! test gradient `Σ_t r_t ⊗ f̃_t` stays rank m: `Σ_t (B_s⁻¹ r_t) ⊗ (A_s⁻¹ f̃_t)` — the query
//! keeps the identity's m test columns and cost.
//! EK-FAC keeps the eigenbases and replaces `λ_B[j] λ_A[i]` by the true curvature along each
//! basis direction `q_ji = u_B^j ⊗ u_A^i`: `q_jiᵀ H q_ji = (1/|D|) Σ_seq Var_{p(y|x)}[φ(y)·q_ji]`,
//! computed exactly from all-pairs label covariances of each sequence.

use std::sync::Arc;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::crf::Crf;
use crate::crf::SegmentGradient;
use crate::error::{Error, Result};
use crate::hessian::transition_block::{dense_block_hessian, posterior_step};
use crate::query::{FactoredGradient, InverseHessian};
use crate::train::TrainSeq;

/// Which eigenvalues the emission block uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factored {
    Kfac,
    Ekfac,
}

/// A fitted K-FAC or EK-FAC inverse Hessian (with its damping), ready to precondition test
/// gradients.
#[derive(Debug, Clone)]
pub struct KroneckerInverse {
    crf: Arc<Crf>,
    mode: Factored,
    /// Eigenvectors (columns) of A (d̃ × d̃) and B (C × C).
    u_a: DMatrix<f64>,
    u_b: DMatrix<f64>,
    /// C × d̃ curvature along each basis direction: `(λ_B + β)(λ_A + α)ᵀ` for K-FAC (damping
    /// included), the refitted true curvature for EK-FAC.
    eigenvalues: DMatrix<f64>,
    /// The damped factor eigenvalues `λ_A + α` (d̃) and `λ_B + β` (C) of K-FAC.
    factor_a: Vec<f64>,
    factor_b: Vec<f64>,
    /// Added to `eigenvalues` before dividing: 0 for K-FAC (damped in the factors), `s` for
    /// EK-FAC.
    emission_shift: f64,
    /// `l2 + damping`, added to the dense block's diagonal.
    shift: f64,
    /// Parameter indices of the transition/start/end block (finite entries only) and the
    /// inverse of its damped exact Hessian.
    dense_index: Vec<usize>,
    dense_inverse: DMatrix<f64>,
}

/// Token marginals of every sequence (whole-sequence posteriors).
fn marginals(crf: &Crf, data: &[TrainSeq]) -> Result<Vec<crate::crf::Marginals>> {
    data.par_iter()
        .map(|s| crf.marginals(s.features.view()))
        .collect()
}

/// `f̃_t`: the features with the bias's constant 1 appended when the model has a bias.
fn augmented(crf: &Crf, seq: &TrainSeq) -> Array2<f64> {
    let (n, d) = seq.features.dim();
    let extra = usize::from(crf.bias().is_some());
    Array2::from_shape_fn((n, d + extra), |(t, i)| {
        if i < d {
            f64::from(seq.features[[t, i]])
        } else {
            1.0
        }
    })
}

/// Tokens per GEMM of [`gram_of_augmented`].
const GRAM_BLOCK: usize = 2048;

/// `Σ_t f̃_t f̃_tᵀ` over every token of `data` (d̃ × d̃): blocks of [`GRAM_BLOCK`] tokens'
/// f̃ rows (f64) accumulated by one GEMM each, in place (one Gram matrix per sequence,
/// allocated and added, cost more than the products).
fn gram_of_augmented(crf: &Crf, data: &[TrainSeq]) -> Array2<f64> {
    let d = crf.feature_dim();
    let dt = d + usize::from(crf.bias().is_some());
    let mut gram = Array2::<f64>::zeros((dt, dt));
    let mut block = Array2::<f64>::ones((GRAM_BLOCK, dt)); // the bias column stays 1
    let mut rows = 0;
    let flush = |block: &Array2<f64>, rows: usize, gram: &mut Array2<f64>| {
        let x = block.slice(ndarray::s![..rows, ..]);
        ndarray::linalg::general_mat_mul(1.0, &x.t(), &x, 1.0, gram);
    };
    for row in data.iter().flat_map(|seq| seq.features.rows()) {
        block
            .row_mut(rows)
            .iter_mut()
            .zip(row)
            .for_each(|(o, &v)| *o = f64::from(v));
        rows += 1;
        if rows == GRAM_BLOCK {
            flush(&block, rows, &mut gram);
            rows = 0;
        }
    }
    if rows > 0 {
        flush(&block, rows, &mut gram);
    }
    gram
}

fn to_nalgebra(a: &Array2<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

impl KroneckerInverse {
    /// Fits the factors on the training data at the trained parameters `crf`.
    pub fn fit(
        crf: Arc<Crf>,
        data: &[TrainSeq],
        l2: f64,
        damping: f64,
        mode: Factored,
    ) -> Result<KroneckerInverse> {
        if data.is_empty() {
            return Err(Error::InvalidArgument(
                "no training sequences to fit the curvature on".into(),
            ));
        }
        if !(l2 >= 0.0 && damping >= 0.0 && (l2 + damping) > 0.0 && (l2 + damping).is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "l2 = {l2} and damping = {damping}: both ≥ 0 with a positive, finite sum"
            )));
        }
        let c = crf.num_labels();
        let margs = marginals(&crf, data)?;
        let tokens: usize = data.iter().map(|s| s.labels.len()).sum();
        let mut a = gram_of_augmented(&crf, data);
        let mut b = Array2::<f64>::zeros((c, c));
        for m in &margs {
            for q in m.unary.rows() {
                for i in 0..c {
                    b[[i, i]] += q[i];
                    for j in 0..c {
                        b[[i, j]] -= q[i] * q[j];
                    }
                }
            }
        }
        a /= data.len() as f64;
        b /= tokens as f64;
        let ea = SymmetricEigen::new(to_nalgebra(&a));
        let eb = SymmetricEigen::new(to_nalgebra(&b));
        let (u_a, u_b) = (ea.eigenvectors, eb.eigenvectors);
        // Factored Tikhonov damping: π balances the two factors' mean eigenvalues.
        let s = l2 + damping;
        let (trace_a, trace_b) = (a.diag().sum() / a.nrows() as f64, b.diag().sum() / c as f64);
        let pi = if trace_a > 0.0 && trace_b > 0.0 {
            (trace_a / trace_b).sqrt()
        } else {
            1.0
        };
        let factor_a: Vec<f64> = ea
            .eigenvalues
            .iter()
            .map(|l| l.max(0.0) + pi * s.sqrt())
            .collect();
        let factor_b: Vec<f64> = eb
            .eigenvalues
            .iter()
            .map(|l| l.max(0.0) + s.sqrt() / pi)
            .collect();
        let (eigenvalues, emission_shift) = match mode {
            Factored::Kfac => (
                DMatrix::from_fn(c, u_a.ncols(), |j, i| factor_b[j] * factor_a[i]),
                0.0,
            ),
            Factored::Ekfac => (ekfac_eigenvalues(&crf, data, &margs, &u_a, &u_b)?, s),
        };
        let (dense_index, dense_inverse) = dense_block_inverse(&crf, data, &margs, l2 + damping)?;
        Ok(KroneckerInverse {
            crf,
            mode,
            u_a,
            u_b,
            eigenvalues,
            factor_a,
            factor_b,
            emission_shift,
            shift: s,
            dense_index,
            dense_inverse,
        })
    }
}

const FORMAT: &str = "seginf-curvature";
const FORMAT_VERSION: &str = "1";

fn f64_bytes(m: &DMatrix<f64>) -> Vec<u8> {
    // Row-major, as safetensors readers (numpy) expect.
    (0..m.nrows())
        .flat_map(|r| (0..m.ncols()).map(move |c| (r, c)))
        .flat_map(|(r, c)| m[(r, c)].to_le_bytes())
        .collect()
}

fn from_f64_bytes(rows: usize, cols: usize, bytes: &[u8]) -> DMatrix<f64> {
    let v: Vec<f64> = bytes
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect();
    DMatrix::from_fn(rows, cols, |r, c| v[r * cols + c])
}

impl KroneckerInverse {
    pub fn mode(&self) -> Factored {
        self.mode
    }

    /// Saves the fitted factors as a safetensors companion file (atomically, with a checksum
    /// and the CRF's fingerprint), so that later queries only pay for applying them.
    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        use crate::index::file::{write_safetensors, Raw};
        use safetensors::tensor::Dtype;
        let row = |v: &[f64]| DMatrix::from_row_slice(1, v.len(), v);
        let matrices = [
            ("u_a", f64_bytes(&self.u_a), self.u_a.shape()),
            ("u_b", f64_bytes(&self.u_b), self.u_b.shape()),
            (
                "eigenvalues",
                f64_bytes(&self.eigenvalues),
                self.eigenvalues.shape(),
            ),
            (
                "factor_a",
                f64_bytes(&row(&self.factor_a)),
                (1, self.factor_a.len()),
            ),
            (
                "factor_b",
                f64_bytes(&row(&self.factor_b)),
                (1, self.factor_b.len()),
            ),
            (
                "dense_inverse",
                f64_bytes(&self.dense_inverse),
                self.dense_inverse.shape(),
            ),
        ];
        let index: Vec<u8> = self
            .dense_index
            .iter()
            .flat_map(|&i| (i as u64).to_le_bytes())
            .collect();
        let mut tensors: Vec<(&str, Raw)> = matrices
            .iter()
            .map(|(name, bytes, (r, c))| {
                (
                    *name,
                    Raw {
                        dtype: Dtype::F64,
                        shape: vec![*r, *c],
                        data: bytes,
                    },
                )
            })
            .collect();
        tensors.push((
            "dense_index",
            Raw {
                dtype: Dtype::U64,
                shape: vec![index.len() / 8],
                data: &index,
            },
        ));
        let meta = std::collections::HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("format_version".to_string(), FORMAT_VERSION.to_string()),
            (
                "mode".to_string(),
                format!("{:?}", self.mode).to_lowercase(),
            ),
            ("shift".to_string(), format!("{:e}", self.shift)),
            (
                "emission_shift".to_string(),
                format!("{:e}", self.emission_shift),
            ),
            (
                "crf_fingerprint".to_string(),
                format!("{:016x}", self.crf.fingerprint()),
            ),
        ]);
        write_safetensors(path, &tensors, meta)
    }

    /// Reads factors saved by [`KroneckerInverse::save`] for `crf` (refused, with
    /// `ModelMismatch`, when they were fitted for another CRF).
    pub fn open(path: &std::path::Path, crf: Arc<Crf>) -> Result<KroneckerInverse> {
        use safetensors::tensor::{Dtype, SafeTensors};
        let format = |m: String| Error::Format(format!("{}: {m}", path.display()));
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| format(format!("not a valid safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| format(format!("metadata field {k:?} is missing")))
        };
        let number = |k: &str| -> Result<f64> {
            field(k)?
                .parse()
                .map_err(|_| format(format!("{k} is not a number")))
        };
        if field("format")? != FORMAT || field("format_version")? != FORMAT_VERSION {
            return Err(format(format!(
                "not a {FORMAT} file of version {FORMAT_VERSION}"
            )));
        }
        if field("crf_fingerprint")? != format!("{:016x}", crf.fingerprint()) {
            return Err(Error::ModelMismatch(format!(
                "{} was fitted for another CRF",
                path.display()
            )));
        }
        let mode = match field("mode")?.as_str() {
            "kfac" => Factored::Kfac,
            "ekfac" => Factored::Ekfac,
            other => return Err(format(format!("unknown mode {other:?}"))),
        };
        let names = [
            "u_a",
            "u_b",
            "eigenvalues",
            "factor_a",
            "factor_b",
            "dense_inverse",
            "dense_index",
        ];
        let views = names
            .iter()
            .map(|n| st.tensor(n).map(|t| (*n, t)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format(e.to_string()))?;
        let stored = crate::index::file::checksum(views.iter().map(|(n, t)| (*n, t.data())));
        if field("checksum")? != format!("{stored:016x}") {
            return Err(format("checksum mismatch: the file is corrupted".into()));
        }
        let (c, dt) = (
            crf.num_labels(),
            crf.feature_dim() + usize::from(crf.bias().is_some()),
        );
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<DMatrix<f64>> {
            let t = st.tensor(name).map_err(|e| format(e.to_string()))?;
            if t.dtype() != Dtype::F64 || t.shape() != [rows, cols] {
                return Err(format(format!(
                    "{name} is {:?} {:?}, expected F64 [{rows}, {cols}]",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(from_f64_bytes(rows, cols, t.data()))
        };
        let index_t = st
            .tensor("dense_index")
            .map_err(|e| format(e.to_string()))?;
        let p = crf.num_params();
        let dense_index: Vec<usize> = index_t
            .data()
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as usize)
            .collect();
        if index_t.dtype() != Dtype::U64 || dense_index.iter().any(|&i| i >= p) {
            return Err(format(
                "dense_index is not a list of parameter indices".into(),
            ));
        }
        let m = dense_index.len();
        Ok(KroneckerInverse {
            u_a: matrix("u_a", dt, dt)?,
            u_b: matrix("u_b", c, c)?,
            eigenvalues: matrix("eigenvalues", c, dt)?,
            factor_a: matrix("factor_a", 1, dt)?.iter().copied().collect(),
            factor_b: matrix("factor_b", 1, c)?.iter().copied().collect(),
            dense_inverse: matrix("dense_inverse", m, m)?,
            dense_index,
            shift: number("shift")?,
            emission_shift: number("emission_shift")?,
            mode,
            crf,
        })
    }
}

/// The transition/start/end block of `(1/|D|) Σ H_seq + shift·I`, exact (one Hessian-vector
/// product per parameter of the block), inverted.
fn dense_block_inverse(
    crf: &Crf,
    data: &[TrainSeq],
    margs: &[crate::crf::Marginals],
    shift: f64,
) -> Result<(Vec<usize>, DMatrix<f64>)> {
    let index = dense_index(crf);
    let mut h = dense_block_hessian(crf, data, margs, &index)?;
    for i in 0..index.len() {
        h[(i, i)] += shift;
    }
    let h = (&h + h.transpose()) * 0.5; // symmetric up to rounding
    let inverse = h.cholesky().map(|ch| ch.inverse()).ok_or_else(|| {
        Error::InvalidArgument(
            "the damped transition block is not positive definite: raise the damping".into(),
        )
    })?;
    Ok((index, inverse))
}

/// The finite parameters of the transition, start and end blocks, in parameter order.
pub(super) fn dense_index(crf: &Crf) -> Vec<usize> {
    let l = crf.layout();
    let c = crf.num_labels();
    let params = crf.params();
    let mut index: Vec<usize> = (l.transitions..l.transitions + c * c).collect();
    index.extend(l.start.map(|o| o..o + c).into_iter().flatten());
    index.extend(l.end.map(|o| o..o + c).into_iter().flatten());
    index.retain(|&i| params[i].is_finite());
    index
}

/// Sequences per parallel task of [`ekfac_eigenvalues`] (fixed: the sum does not depend on
/// the thread count).
const EKFAC_CHUNK: usize = 32;

/// EK-FAC: `(1/|D|) Σ_seq Var[φ·q_ji]` for every basis direction, from all-pairs covariances
/// of `U_B[y_t, j]` along each sequence (the posterior is a Markov chain, so
/// `P(y_s, y_t) = p_s ⊙ (P_{s+1} ⋯ P_t)` with the posterior transition matrices `P_r`):
///
/// ```text
/// out[j, i] = Σ_{s,t} K^j_st z_s[i] z_t[i] = Σ_s z_s[i] (K^j Z)_s[i],
/// K^j_st = u_B^jᵀ P(y_s, y_t) u_B^j − v_s[j] v_t[j]
/// ```
///
/// with `z_t = U_Aᵀ f̃_t` (the rows of Z) and `v_t = U_Bᵀ p_t`: per sequence, the C symmetric
/// n × n matrices K^j, then one GEMM `K^j Z` each.
fn ekfac_eigenvalues(
    crf: &Crf,
    data: &[TrainSeq],
    margs: &[crate::crf::Marginals],
    u_a: &DMatrix<f64>,
    u_b: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    let c = crf.num_labels();
    let dt = u_a.ncols();
    let u_a = Array2::from_shape_fn((dt, dt), |(r, q)| u_a[(r, q)]);
    let u_b = Array2::from_shape_fn((c, c), |(r, q)| u_b[(r, q)]);
    let per_chunk: Vec<Array2<f64>> = data
        .par_chunks(EKFAC_CHUNK)
        .zip(margs.par_chunks(EKFAC_CHUNK))
        .map(|(seqs, ms)| {
            let mut out = Array2::<f64>::zeros((c, dt));
            for (seq, m) in seqs.iter().zip(ms) {
                let z = augmented(crf, seq).dot(&u_a); // n × d̃
                for (j, k) in label_covariances(m, &u_b).outer_iter().enumerate() {
                    let kz = k.dot(&z);
                    let mut row = out.row_mut(j);
                    for (zs, kzs) in z.outer_iter().zip(kz.outer_iter()) {
                        row.iter_mut()
                            .zip(zs.iter().zip(kzs.iter()))
                            .for_each(|(o, (a, b))| *o += a * b);
                    }
                }
            }
            out
        })
        .collect();
    let mut total = Array2::<f64>::zeros((c, dt));
    for part in &per_chunk {
        total += part;
    }
    let scale = 1.0 / data.len() as f64;
    Ok(DMatrix::from_fn(c, dt, |j, i| scale * total[[j, i]]))
}

/// `K[j, s, t] = Cov[U_B[y_s, j], U_B[y_t, j]]` under the posterior `m` (C × n × n, symmetric
/// in s and t).
fn label_covariances(m: &crate::crf::Marginals, u_b: &Array2<f64>) -> ndarray::Array3<f64> {
    let (n, c) = m.unary.dim();
    let mean = m.unary.dot(u_b); // n × C: v_t = U_Bᵀ p_t
    let steps: Vec<Array2<f64>> = (1..n).map(|t| posterior_step(m, t)).collect();
    let mut k = ndarray::Array3::<f64>::zeros((c, n, n));
    for s in 0..n {
        // joint[a][b] = P(y_s = a, y_t = b), propagated from t = s.
        let mut joint =
            Array2::from_shape_fn((c, c), |(a, b)| if a == b { m.unary[[s, a]] } else { 0.0 });
        for t in s..n {
            if t > s {
                joint = joint.dot(&steps[t - 1]);
            }
            let ju = joint.dot(u_b);
            for j in 0..c {
                let second = (0..c).map(|a| u_b[[a, j]] * ju[[a, j]]).sum::<f64>();
                let cov = second - mean[[s, j]] * mean[[t, j]];
                k[[j, s, t]] = cov;
                k[[j, t, s]] = cov;
            }
        }
    }
    k
}

impl InverseHessian for KroneckerInverse {
    fn apply(&self, g: &[f64]) -> Result<Vec<f64>> {
        let crf = &self.crf;
        let (c, d) = (crf.num_labels(), crf.feature_dim());
        let l = crf.layout();
        if g.len() != l.len {
            return Err(Error::DimensionMismatch(format!(
                "gradient of {} values, the CRF has {} parameters",
                g.len(),
                l.len
            )));
        }
        let dt = self.u_a.ncols();
        // G = [∇W | ∇b] (C × d̃).
        let grad = DMatrix::from_fn(c, dt, |j, i| match i < d {
            true => g[l.weights + j * d + i],
            false => l.bias.map_or(0.0, |o| g[o + j]),
        });
        let mut rotated = self.u_b.transpose() * grad * &self.u_a;
        for j in 0..c {
            for i in 0..dt {
                rotated[(j, i)] /= self.eigenvalues[(j, i)].max(0.0) + self.emission_shift;
            }
        }
        let back = &self.u_b * rotated * self.u_a.transpose();
        let mut out = vec![0.0; l.len];
        for j in 0..c {
            for i in 0..d {
                out[l.weights + j * d + i] = back[(j, i)];
            }
            if let Some(o) = l.bias {
                out[o + j] = back[(j, d)];
            }
        }
        self.solve_dense_block(g, &mut out);
        Ok(out)
    }

    fn apply_factored(
        &self,
        g: &SegmentGradient,
        features: ArrayView2<f32>,
    ) -> Option<Result<FactoredGradient>> {
        let crf = &self.crf;
        let (c, d) = (crf.num_labels(), crf.feature_dim());
        let m = g.error_vectors.nrows();
        // Only K-FAC's damped Kronecker inverse keeps the rank; beyond C tokens the dense form
        // has fewer columns anyway.
        if self.mode != Factored::Kfac || m > c || g.last() >= features.nrows() {
            return None;
        }
        let l = crf.layout();
        let dt = self.u_a.ncols();
        // (A_s⁻¹ ⊗ B_s⁻¹)(r_t ⊗ f̃_t) = (B_s⁻¹ r_t) ⊗ (A_s⁻¹ f̃_t), each through its eigenbasis.
        let inv = |u: &DMatrix<f64>, factor: &[f64], v: DVector<f64>| {
            let mut w = u.transpose() * v;
            w.iter_mut().zip(factor).for_each(|(x, f)| *x /= f);
            u * w
        };
        let mut columns = Array2::<f64>::zeros((m, d));
        let mut coefs = Array2::<f64>::zeros((m, c));
        let mut rest = vec![0.0; l.len];
        for t in 0..m {
            let x = features.row(g.first + t);
            let f = DVector::from_fn(dt, |i, _| if i < d { f64::from(x[i]) } else { 1.0 });
            let col = inv(&self.u_a, &self.factor_a, f);
            let coef = inv(
                &self.u_b,
                &self.factor_b,
                DVector::from_fn(c, |j, _| g.error_vectors[[t, j]]),
            );
            for i in 0..d {
                columns[[t, i]] = col[i];
            }
            for j in 0..c {
                coefs[[t, j]] = coef[j];
            }
            // The bias is f̃'s last feature: its share of the preconditioned W̃ block.
            if let Some(o) = l.bias {
                for j in 0..c {
                    rest[o + j] += col[d] * coef[j];
                }
            }
        }
        // The transition/start/end block, exact and dense.
        let mut dense = vec![0.0; l.len];
        dense[l.transitions..l.transitions + c * c]
            .iter_mut()
            .zip(g.transitions.iter())
            .for_each(|(o, v)| *o = *v);
        for (at, block) in [(l.start, &g.start), (l.end, &g.end)] {
            if let (Some(o), Some(v)) = (at, block) {
                dense[o..o + c]
                    .iter_mut()
                    .zip(v.iter())
                    .for_each(|(a, b)| *a = *b);
            }
        }
        self.solve_dense_block(&dense, &mut rest);
        Some(Ok(FactoredGradient {
            columns,
            coefs,
            rest,
        }))
    }
}

impl KroneckerInverse {
    /// `out[block] = (H_block + s I)⁻¹ g[block]` for the transition/start/end block.
    fn solve_dense_block(&self, g: &[f64], out: &mut [f64]) {
        let block = DVector::from_iterator(
            self.dense_index.len(),
            self.dense_index.iter().map(|&i| g[i]),
        );
        let solved = &self.dense_inverse * block;
        for (k, &i) in self.dense_index.iter().enumerate() {
            out[i] = solved[k];
        }
    }
}
