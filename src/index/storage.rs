//! How training feature vectors are stored: f32 (exact), f16 (half the bytes) or int8 with a
//! per-row scale (a quarter). Influence rankings depend on feature dot products, which both
//! compressed forms keep to about 3 (f16) and 2 (int8) significant digits; the error vectors,
//! labels and gradient norms are always stored exactly (f64).

use half::f16;

use crate::index::column::Column;

/// The storage type of training features, chosen at build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Storage {
    /// 4 bytes per value: scores equal the dense f64 computation up to rounding.
    F32,
    /// 2 bytes per value (IEEE half): ~1e-3 relative error per value, range ±65504.
    F16,
    /// 1 byte per value plus one f32 scale per row (`f ≈ scale · q`, `q ∈ [-127, 127]`,
    /// `scale = max|f| / 127`): ~0.4 % of the row's largest value per entry. Queries rank
    /// these rows with exact integer dot products (`query/ranking.rs`).
    Int8,
}

impl Storage {
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
            Storage::Int8 => "int8",
        }
    }

    pub fn from_name(name: &str) -> Option<Storage> {
        [Storage::F32, Storage::F16, Storage::Int8]
            .into_iter()
            .find(|s| s.name() == name)
    }

    pub fn bytes_per_value(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
            Storage::Int8 => 1,
        }
    }
}

/// The feature matrix (N × d, row-major) in its storage type.
#[derive(Debug, Clone)]
pub(crate) enum FeatureRows {
    F32(Column<f32>),
    F16(Column<f16>),
    Int8 {
        values: Column<i8>,
        scales: Column<f32>,
    },
}

impl FeatureRows {
    pub fn empty(storage: Storage) -> FeatureRows {
        match storage {
            Storage::F32 => FeatureRows::F32(Column::default()),
            Storage::F16 => FeatureRows::F16(Column::default()),
            Storage::Int8 => FeatureRows::Int8 {
                values: Column::default(),
                scales: Column::default(),
            },
        }
    }

    pub fn storage(&self) -> Storage {
        match self {
            FeatureRows::F32(_) => Storage::F32,
            FeatureRows::F16(_) => Storage::F16,
            FeatureRows::Int8 { .. } => Storage::Int8,
        }
    }

    /// Appends rows (a builder's index is always owned).
    pub fn push_rows(&mut self, rows: &[f32], d: usize) {
        match self {
            FeatureRows::F32(Column::Owned(v)) => v.extend_from_slice(rows),
            FeatureRows::F16(Column::Owned(v)) => v.extend(rows.iter().map(|&x| f16::from_f32(x))),
            FeatureRows::Int8 {
                values: Column::Owned(v),
                scales: Column::Owned(s),
            } => {
                for row in rows.chunks_exact(d) {
                    let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    s.push(scale);
                    v.extend(
                        row.iter()
                            .map(|&x| (x / scale).round().clamp(-127.0, 127.0) as i8),
                    );
                }
            }
            _ => unreachable!("a builder's columns are owned"),
        }
    }

    /// Drops rows past `rows` (to roll back a cancelled batch).
    pub fn truncate(&mut self, rows: usize, d: usize) {
        match self {
            FeatureRows::F32(Column::Owned(v)) => v.truncate(rows * d),
            FeatureRows::F16(Column::Owned(v)) => v.truncate(rows * d),
            FeatureRows::Int8 {
                values: Column::Owned(v),
                scales: Column::Owned(s),
            } => {
                v.truncate(rows * d);
                s.truncate(rows);
            }
            _ => unreachable!("a builder's columns are owned"),
        }
    }

    /// Asks the CPU for row `k`'s stored bytes (and its scale), ahead of reading it
    /// ([`crate::int_kernels::prefetch`]).
    pub fn prefetch_row(&self, k: usize, d: usize) {
        use crate::int_kernels::prefetch;
        match self {
            FeatureRows::F32(c) => prefetch(&c.as_slice()[k * d..(k + 1) * d]),
            FeatureRows::F16(c) => prefetch(&c.as_slice()[k * d..(k + 1) * d]),
            FeatureRows::Int8 { values, scales } => {
                prefetch(&values.as_slice()[k * d..(k + 1) * d]);
                prefetch(&scales.as_slice()[k..k + 1]);
            }
        }
    }

    /// Rows `[start, end)` as f32 values (`f` itself for f32; decoded into `scratch` otherwise).
    pub fn rows<'a>(
        &'a self,
        start: usize,
        end: usize,
        d: usize,
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        match self {
            FeatureRows::F32(c) => &c.as_slice()[start * d..end * d],
            FeatureRows::F16(c) => {
                use half::slice::HalfFloatSliceExt;
                scratch.resize((end - start) * d, 0.0);
                c.as_slice()[start * d..end * d].convert_to_f32_slice(scratch);
                scratch
            }
            FeatureRows::Int8 { values, scales } => {
                scratch.clear();
                let (v, s) = (values.as_slice(), scales.as_slice());
                for r in start..end {
                    scratch.extend(v[r * d..(r + 1) * d].iter().map(|&q| f32::from(q) * s[r]));
                }
                scratch
            }
        }
    }

    /// `out[i*L + l] = row_{start+i} · cols[l]` in f32 for rows `[start, end)`, converting
    /// f16 and int8 values in registers.
    pub fn dot_rows(
        &self,
        rows: std::ops::Range<usize>,
        d: usize,
        cols: &[&[f32]],
        out: &mut [f32],
    ) {
        use crate::kernels::{dot_rows_f16, dot_rows_f32, dot_rows_i8};
        match self {
            FeatureRows::F32(c) => dot_rows_f32(c.as_slice(), rows, d, cols, out),
            FeatureRows::F16(c) => dot_rows_f16(c.as_slice(), rows, d, cols, out),
            FeatureRows::Int8 { values, scales } => {
                dot_rows_i8(values.as_slice(), scales.as_slice(), rows, d, cols, out)
            }
        }
    }

    /// An upper bound on `‖decoded row k‖` from the norm of the row as given (`stored_norm`):
    /// int8 moves each value by at most scale/2, f16 by a relative 2^-11 (plus 2^-25 near 0).
    pub fn decoded_norm_bound(&self, k: usize, stored_norm: f64, d: usize) -> f64 {
        let root_d = (d as f64).sqrt();
        match self {
            FeatureRows::F32(_) => stored_norm,
            FeatureRows::F16(_) => stored_norm * (1.0 + 2f64.powi(-11)) + root_d * 2f64.powi(-25),
            FeatureRows::Int8 { scales, .. } => {
                stored_norm + root_d * f64::from(scales.as_slice()[k]) * 0.5
            }
        }
    }
}
