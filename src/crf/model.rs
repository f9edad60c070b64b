//! CRF parameters (DESIGN.md §1) and the checks every input passes before the math sees it.

use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{Error, Result};

/// A linear-chain CRF over `C` labels on `d`-dimensional token features.
///
/// `u_t[j] = W[j]·f_t + b[j]`;
/// `S(y) = s[y_0] + Σ_t u_t[y_t] + Σ_{t≥1} A[y_{t-1}][y_t] + e[y_{n-1}]`;
/// `log p(y|x) = S(y) − log Z(x)`.
///
/// Parameters are kept in f64 (inputs may be f32); `A`, `s`, `e` may hold `-inf` (forbidden),
/// everything else is finite. Immutable once built, so it is `Send + Sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct Crf {
    /// `W`: C × d emission weights.
    weights: Array2<f64>,
    /// `b`: C emission biases (absent = zero and not a parameter).
    bias: Option<Array1<f64>>,
    /// `A`: C × C transition scores, `A[from][to]`.
    transitions: Array2<f64>,
    /// `s`: C start scores.
    start: Option<Array1<f64>>,
    /// `e`: C end scores.
    end: Option<Array1<f64>>,
}

/// Offsets of each parameter block in the dense gradient vector: `W` (row-major), `b`, `A`
/// (row-major), `s`, `e`, the absent ones skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    pub weights: usize,
    pub bias: Option<usize>,
    pub transitions: usize,
    pub start: Option<usize>,
    pub end: Option<usize>,
    pub len: usize,
}

impl Crf {
    /// Builds a CRF after checking shapes and values: `W` and `b` finite; `A`, `s`, `e` free of
    /// NaN and `+inf` (`-inf` marks a forbidden transition, start or end).
    pub fn new(
        weights: Array2<f64>,
        bias: Option<Array1<f64>>,
        transitions: Array2<f64>,
        start: Option<Array1<f64>>,
        end: Option<Array1<f64>>,
    ) -> Result<Crf> {
        let (c, d) = weights.dim();
        if c == 0 {
            return Err(Error::InvalidArgument(
                "num_labels must be at least 1".into(),
            ));
        }
        if d == 0 {
            return Err(Error::InvalidArgument(
                "feature_dim must be at least 1".into(),
            ));
        }
        if transitions.dim() != (c, c) {
            return Err(Error::DimensionMismatch(format!(
                "transitions are {:?}, expected {c} x {c} for {c} labels",
                transitions.dim()
            )));
        }
        for (name, v) in [("bias", &bias), ("start", &start), ("end", &end)] {
            if let Some(v) = v {
                if v.len() != c {
                    return Err(Error::DimensionMismatch(format!(
                        "{name} has {} entries, expected {c}",
                        v.len()
                    )));
                }
            }
        }
        if let Some(i) = weights.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite(format!(
                "weights[{}][{}] = {}",
                i / d,
                i % d,
                weights.iter().nth(i).copied().unwrap_or(f64::NAN)
            )));
        }
        if let Some(b) = &bias {
            if let Some(i) = b.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite(format!("bias[{i}] = {}", b[i])));
            }
        }
        let allows_minus_inf = |name: &str, values: &[f64]| -> Result<()> {
            match values
                .iter()
                .position(|v| v.is_nan() || *v == f64::INFINITY)
            {
                Some(i) => Err(Error::NonFinite(format!(
                    "{name}[{i}] = {} (only -inf is allowed, to forbid)",
                    values[i]
                ))),
                None => Ok(()),
            }
        };
        allows_minus_inf(
            "transitions",
            &transitions.iter().copied().collect::<Vec<_>>(),
        )?;
        if let Some(s) = &start {
            allows_minus_inf("start", &s.to_vec())?;
        }
        if let Some(e) = &end {
            allows_minus_inf("end", &e.to_vec())?;
        }
        Ok(Crf {
            weights,
            bias,
            transitions,
            start,
            end,
        })
    }

    /// All parameters zero, every block (bias, start, end) present: where training starts.
    /// Errors when `c` or `d` is 0.
    pub fn zeros(c: usize, d: usize) -> Result<Crf> {
        Crf::new(
            Array2::zeros((c, d)),
            Some(Array1::zeros(c)),
            Array2::zeros((c, c)),
            Some(Array1::zeros(c)),
            Some(Array1::zeros(c)),
        )
    }

    /// Builds a CRF from f32 buffers as a C caller holds them: `weights` C×d row-major,
    /// `transitions` C×C `[from*C + to]`.
    pub fn from_f32(
        num_labels: usize,
        feature_dim: usize,
        weights: &[f32],
        bias: Option<&[f32]>,
        transitions: &[f32],
        start: Option<&[f32]>,
        end: Option<&[f32]>,
    ) -> Result<Crf> {
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
        let matrix = |name: &str, rows: usize, cols: usize, v: &[f32]| {
            Array2::from_shape_vec((rows, cols), widen(v)).map_err(|_| {
                Error::DimensionMismatch(format!(
                    "{name} has {} values, expected {rows} x {cols}",
                    v.len()
                ))
            })
        };
        Crf::new(
            matrix("weights", num_labels, feature_dim, weights)?,
            bias.map(|b| Array1::from(widen(b))),
            matrix("transitions", num_labels, num_labels, transitions)?,
            start.map(|s| Array1::from(widen(s))),
            end.map(|e| Array1::from(widen(e))),
        )
    }

    pub fn num_labels(&self) -> usize {
        self.weights.nrows()
    }

    pub fn feature_dim(&self) -> usize {
        self.weights.ncols()
    }

    pub fn weights(&self) -> &Array2<f64> {
        &self.weights
    }

    pub fn bias(&self) -> Option<&Array1<f64>> {
        self.bias.as_ref()
    }

    pub fn transitions(&self) -> &Array2<f64> {
        &self.transitions
    }

    pub fn start(&self) -> Option<&Array1<f64>> {
        self.start.as_ref()
    }

    pub fn end(&self) -> Option<&Array1<f64>> {
        self.end.as_ref()
    }

    /// Where each block sits in the dense parameter (and gradient) vector.
    pub fn layout(&self) -> ParamLayout {
        let c = self.num_labels();
        let mut at = c * self.feature_dim();
        let mut take = |present: bool, size: usize| {
            present.then(|| {
                at += size;
                at - size
            })
        };
        let bias = take(self.bias.is_some(), c);
        let transitions = take(true, c * c).unwrap_or(0);
        let start = take(self.start.is_some(), c);
        let end = take(self.end.is_some(), c);
        ParamLayout {
            weights: 0,
            bias,
            transitions,
            start,
            end,
            len: at,
        }
    }

    /// `C·d + C² + C·(number of b, s, e present)`.
    pub fn num_params(&self) -> usize {
        self.layout().len
    }

    /// All parameters as one vector in the gradient's order (`-inf` entries included).
    pub fn params(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.num_params());
        out.extend(self.weights.iter());
        out.extend(self.bias.iter().flatten());
        out.extend(self.transitions.iter());
        out.extend(self.start.iter().flatten());
        out.extend(self.end.iter().flatten());
        out
    }

    /// A 64-bit hash (xxh3) of the dimensions, which blocks are present, and every parameter's
    /// bits: an index records it and refuses to be opened with another CRF.
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(b"seginf-crf-v1");
        for v in [self.num_labels(), self.feature_dim()] {
            h.update(&(v as u64).to_le_bytes());
        }
        h.update(&[
            self.bias.is_some() as u8,
            self.start.is_some() as u8,
            self.end.is_some() as u8,
        ]);
        for v in self.params() {
            h.update(&v.to_le_bytes());
        }
        h.digest()
    }

    /// The same CRF (same blocks present) with every parameter replaced from `params`, in the
    /// order of [`Crf::params`]. `-inf` entries may be given (constraints); NaN and `+inf`
    /// are refused as in [`Crf::new`].
    pub fn with_params(&self, params: &[f64]) -> Result<Crf> {
        let (c, d) = (self.num_labels(), self.feature_dim());
        let l = self.layout();
        if params.len() != l.len {
            return Err(Error::DimensionMismatch(format!(
                "{} parameters given, the CRF has {}",
                params.len(),
                l.len
            )));
        }
        let vector = |at: Option<usize>| at.map(|o| Array1::from(params[o..o + c].to_vec()));
        let matrix = |at: usize, rows: usize, cols: usize| {
            Array2::from_shape_vec((rows, cols), params[at..at + rows * cols].to_vec())
                .map_err(|e| Error::InvalidArgument(e.to_string()))
        };
        Crf::new(
            matrix(l.weights, c, d)?,
            vector(l.bias),
            matrix(l.transitions, c, c)?,
            vector(l.start),
            vector(l.end),
        )
    }

    /// Start score `s[j]`, zero when the model has no start vector.
    pub(crate) fn start_score(&self, j: usize) -> f64 {
        self.start.as_ref().map_or(0.0, |s| s[j])
    }

    /// End score `e[j]`, zero when the model has no end vector.
    pub(crate) fn end_score(&self, j: usize) -> f64 {
        self.end.as_ref().map_or(0.0, |e| e[j])
    }

    /// Checks one sequence: `features` n × d with n ≥ 1 and every value finite, and (when
    /// given) `labels` of length n, each below C. Every public operation calls this first.
    pub fn check_sequence(&self, features: ArrayView2<f32>, labels: Option<&[u32]>) -> Result<()> {
        let (n, d) = features.dim();
        if n == 0 {
            return Err(Error::InvalidArgument(
                "the sequence is empty (n = 0)".into(),
            ));
        }
        if d != self.feature_dim() {
            return Err(Error::DimensionMismatch(format!(
                "features have {d} columns, the CRF expects feature_dim = {}",
                self.feature_dim()
            )));
        }
        // A branch-free pass first (it vectorises); the search for the culprit's position,
        // element by element with its early exit, only when that pass fails.
        let finite = |xs: &[f32]| xs.iter().fold(true, |all, v| all & v.is_finite());
        let all_finite = match features.as_slice() {
            Some(xs) => xs.chunks(1024).all(finite),
            None => features.iter().all(|v| v.is_finite()),
        };
        if let Some((i, v)) = (!all_finite)
            .then(|| features.iter().enumerate().find(|(_, v)| !v.is_finite()))
            .flatten()
        {
            return Err(Error::NonFinite(format!(
                "features[{}][{}] = {v} (token {}, dimension {})",
                i / d,
                i % d,
                i / d,
                i % d
            )));
        }
        if let Some(labels) = labels {
            if labels.len() != n {
                return Err(Error::DimensionMismatch(format!(
                    "{} labels for {n} tokens",
                    labels.len()
                )));
            }
            let c = self.num_labels();
            if let Some(t) = labels.iter().position(|&l| l as usize >= c) {
                return Err(Error::LabelOutOfRange(format!(
                    "labels[{t}] = {} but the CRF has {c} labels (0..{c})",
                    labels[t]
                )));
            }
        }
        Ok(())
    }

    /// Emission scores `u_t[j] = W[j]·f_t + b[j]` (n × C), computed in f64 through BLAS dgemm.
    pub fn emissions(&self, features: ArrayView2<f32>) -> Result<Array2<f64>> {
        self.check_sequence(features, None)?;
        Ok(self.emissions_unchecked(features))
    }

    pub(crate) fn emissions_unchecked(&self, features: ArrayView2<f32>) -> Array2<f64> {
        let mut u = features.mapv(f64::from).dot(&self.weights.t());
        if let Some(b) = &self.bias {
            u += b;
        }
        u
    }

    /// `S(y)`, the unnormalised score of a labelling; `-inf` when it uses a forbidden entry.
    pub fn score(&self, features: ArrayView2<f32>, labels: &[u32]) -> Result<f64> {
        self.check_sequence(features, Some(labels))?;
        Ok(self.path_score(&self.emissions_unchecked(features), labels))
    }

    pub(crate) fn path_score(&self, emissions: &Array2<f64>, labels: &[u32]) -> f64 {
        let y = |t: usize| labels[t] as usize;
        let n = labels.len();
        let mut s = self.start_score(y(0)) + self.end_score(y(n - 1));
        for t in 0..n {
            s += emissions[[t, y(t)]];
            if t > 0 {
                s += self.transitions[[y(t - 1), y(t)]];
            }
        }
        s
    }

    /// The same CRF with every transition, start and end that `mask` forbids set to `-inf`.
    /// Start/end vectors are created (as zeros) when the mask forbids a start or end label and
    /// the model has none, which adds them to the parameter layout.
    pub fn with_constraints(&self, mask: &crate::crf::ConstraintMask) -> Result<Crf> {
        let c = self.num_labels();
        if mask.num_labels() != c {
            return Err(Error::DimensionMismatch(format!(
                "the constraint mask is for {} labels, the CRF has {c}",
                mask.num_labels()
            )));
        }
        let mut out = self.clone();
        for i in 0..c {
            for j in 0..c {
                if !mask.transition_allowed(i, j) {
                    out.transitions[[i, j]] = f64::NEG_INFINITY;
                }
            }
        }
        let restrict = |v: &mut Option<Array1<f64>>, allowed: &dyn Fn(usize) -> bool| {
            if (0..c).any(|j| !allowed(j)) {
                let v = v.get_or_insert_with(|| Array1::zeros(c));
                for j in (0..c).filter(|&j| !allowed(j)) {
                    v[j] = f64::NEG_INFINITY;
                }
            }
        };
        restrict(&mut out.start, &|j| mask.start_allowed(j));
        restrict(&mut out.end, &|j| mask.end_allowed(j));
        Ok(out)
    }
}
