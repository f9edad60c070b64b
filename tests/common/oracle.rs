//! Brute-force CRF quantities straight from DESIGN.md §1–2, shared by the oracle tests.

use ndarray::ArrayView2;
use seginf::Crf;

/// `log Σ exp(v)`, `-inf` when every term is.
pub fn lse(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().collect();
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `S(y)` with emissions by explicit dot products.
pub fn score(crf: &Crf, x: ArrayView2<f32>, y: &[u32]) -> f64 {
    let n = y.len();
    let emission = |t: usize, j: usize| {
        let mut u = crf.bias().map_or(0.0, |b| b[j]);
        for k in 0..x.ncols() {
            u += crf.weights()[[j, k]] * f64::from(x[[t, k]]);
        }
        u
    };
    let mut s = crf.start().map_or(0.0, |v| v[y[0] as usize])
        + crf.end().map_or(0.0, |v| v[y[n - 1] as usize]);
    for t in 0..n {
        s += emission(t, y[t] as usize);
        if t > 0 {
            s += crf.transitions()[[y[t - 1] as usize, y[t] as usize]];
        }
    }
    s
}

/// Every labelling of `n` tokens over `c` labels with its score `S(y)`.
pub fn labellings(crf: &Crf, x: ArrayView2<f32>) -> Vec<(Vec<u32>, f64)> {
    let (n, c) = (x.nrows(), crf.num_labels());
    (0..c.pow(n as u32))
        .map(|code| {
            let y: Vec<u32> = (0..n)
                .map(|t| ((code / c.pow(t as u32)) % c) as u32)
                .collect();
            let s = score(crf, x, &y);
            (y, s)
        })
        .collect()
}

/// Sufficient statistics `φ(y)` in the parameter order (W, b, A, s, e).
pub fn phi(crf: &Crf, x: ArrayView2<f32>, y: &[u32]) -> Vec<f64> {
    let (c, d, n) = (crf.num_labels(), crf.feature_dim(), y.len());
    let layout = crf.layout();
    let mut v = vec![0.0; crf.num_params()];
    for t in 0..n {
        let j = y[t] as usize;
        for k in 0..d {
            v[j * d + k] += f64::from(x[[t, k]]);
        }
        if let Some(b) = layout.bias {
            v[b + j] += 1.0;
        }
        if t > 0 {
            v[layout.transitions + y[t - 1] as usize * c + j] += 1.0;
        }
    }
    if let Some(s) = layout.start {
        v[s + y[0] as usize] += 1.0;
    }
    if let Some(e) = layout.end {
        v[e + y[n - 1] as usize] += 1.0;
    }
    v
}
