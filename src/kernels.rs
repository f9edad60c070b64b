//! Dot-product kernels for the index scans, written so that LLVM vectorises them
//! (independent partial sums). The block-level loops are compiled twice by `multiversion`:
//! for the baseline target and for AVX2+FMA, chosen at run time by CPU feature detection.

use std::ops::Range;

use multiversion::multiversion;

/// `Σ_i a_i b_i` in f64 over f32 × f64 (exact products, f64 sums): the exact scoring pass.
#[inline]
pub fn dot_exact(a: &[f32], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += f64::from(x[i]) * y[i];
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(&x, &y)| f64::from(x) * y).sum();
    acc.iter().sum::<f64>() + tail
}

/// `Σ_i a_i b_i` in f32 with 16 independent partial sums; its rounding error is within the
/// `γ_d` bound of recursive summation that the ranking pass's proof uses.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ_i a_i b_i` over int8 × f32 (the int8 row's scale applied by the caller).
#[inline]
pub fn dot_i8(a: &[i8], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += f32::from(x[i]) * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(&x, y)| f32::from(x) * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out[i*L + l] = row_{start+i} · cols[l]` over an f32 matrix (`values`, rows of `d`).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_rows_f32(
    values: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    let l = cols.len();
    for (i, k) in rows.enumerate() {
        let row = &values[k * d..(k + 1) * d];
        for (j, col) in cols.iter().enumerate() {
            out[i * l + j] = dot_f32(row, col);
        }
    }
}

/// As [`dot_rows_f32`] over int8 rows, each scaled by its `scales[k]`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_rows_i8(
    values: &[i8],
    scales: &[f32],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
) {
    let l = cols.len();
    for (i, k) in rows.enumerate() {
        let row = &values[k * d..(k + 1) * d];
        for (j, col) in cols.iter().enumerate() {
            out[i * l + j] = dot_i8(row, col) * scales[k];
        }
    }
}

/// As [`dot_rows_f32`] over f16 rows, decoded one row at a time into `buf` (F16C when the
/// CPU has it, through `half`).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn dot_rows_f16(
    values: &[half::f16],
    rows: Range<usize>,
    d: usize,
    cols: &[&[f32]],
    out: &mut [f32],
    buf: &mut Vec<f32>,
) {
    use half::slice::HalfFloatSliceExt;
    let l = cols.len();
    buf.resize(d, 0.0);
    for (i, k) in rows.enumerate() {
        values[k * d..(k + 1) * d].convert_to_f32_slice(buf);
        for (j, col) in cols.iter().enumerate() {
            out[i * l + j] = dot_f32(buf, col);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_plain_sums() {
        for n in [0, 1, 7, 16, 17, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let q: Vec<i8> = (0..n).map(|i| ((i * 37) % 255) as i8).collect();
            let plain: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let b64: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
            assert!((dot_exact(&a, &b64) - plain).abs() <= 1e-12 * (1.0 + plain.abs()));
            assert!((f64::from(dot_f32(&a, &b)) - plain).abs() <= 1e-5 * (1.0 + plain.abs()));
            let plain_q: f64 = q
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot_i8(&q, &b)) - plain_q).abs() <= 1e-4 * (1.0 + plain_q.abs()));
        }
    }
}
