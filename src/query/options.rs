//! What a query computes: granularity, normalisation, Hessian, filters.

use std::collections::HashSet;

use crate::error::{Error, Result};

/// What is scored against the test segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Segment influence of every single training token (DESIGN.md §3): emission **and**
    /// transition/start/end gradients.
    Token,
    /// Koh & Liang influence of every training sequence (whole-sequence NLL gradient).
    Instance,
    /// The paper's segment nearest neighbour: `−f_k · f̄` with `f̄` the mean feature vector of
    /// the test segment (negative, so that "supporting" = most similar, as for influence).
    NearestDot,
    /// As `NearestDot` with cosine similarity.
    NearestCosine,
}

/// How scores are scaled per training item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    None,
    /// Divide each training score by the norm of its gradient (RelatIF-style; DESIGN.md §3):
    /// often ranks causes better, but buries noisy labels (they have large gradients).
    GradientNorm,
}

/// A preconditioned test gradient that kept the factored form of DESIGN.md §3: emission
/// block `Σ_l c_l ⊗ col_l`, and every other block dense.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoredGradient {
    /// L × d test columns.
    pub columns: ndarray::Array2<f64>,
    /// L × C coefficient vectors.
    pub coefs: ndarray::Array2<f64>,
    /// A full parameter vector whose W block is ignored (b, A, s, e are read from it).
    pub rest: Vec<f64>,
}

/// Applies `(H + μI)⁻¹` to a dense gradient vector (in `Crf::params` order): the Hessian
/// modes beyond the identity (exact conjugate gradient, K-FAC, EK-FAC) implement it.
pub trait InverseHessian: Send + Sync + std::fmt::Debug {
    fn apply(&self, gradient: &[f64]) -> crate::error::Result<Vec<f64>>;

    /// The same product for a segment gradient given in factored form (`features` are the
    /// whole test sequence), when the inverse keeps that form (K-FAC): then a query keeps the
    /// identity's number of test columns. `None` means "use [`InverseHessian::apply`]".
    fn apply_factored(
        &self,
        _gradient: &crate::crf::SegmentGradient,
        _features: ndarray::ArrayView2<f32>,
    ) -> Option<crate::error::Result<FactoredGradient>> {
        None
    }
}

/// The Hessian used in `−g_testᵀ H⁻¹ g_train`.
#[derive(Debug, Clone)]
pub enum Hessian {
    /// `H = damping · I` (the paper uses `I`): scores are `−g_test·g_train / damping`.
    Identity { damping: f64 },
    /// Any other mode: the test gradient is preconditioned once per query,
    /// `h = (H + μI)⁻¹ g_test`, and scores are `−h·g_train` — scoring keeps the cost of the
    /// identity (the W block of `h` becomes C test columns).
    Inverse(std::sync::Arc<dyn InverseHessian>),
}

/// A query's settings; validated by the setters of [`crate::query::Query`].
#[derive(Debug, Clone)]
pub struct QueryOptions {
    pub granularity: Granularity,
    pub normalization: Normalization,
    pub hessian: Hessian,
    /// Keep only training tokens with these labels (token and nearest granularities).
    pub labels: Option<Vec<u32>>,
    /// Skip training items whose doc id is here.
    pub excluded_docs: HashSet<u64>,
    /// Let batches of more than 4 test columns, single segments of more than 8 tokens (and
    /// the segment methods of noisy-label ranking) on an f32/f16 index — and, where the CPU
    /// has the AMX tiles ([`crate::tiles_available`]), an f16 index's single segments of 4–8
    /// tokens (d a multiple of 64) — rank through the index's i16 copy of its rows (integer
    /// GEMM, about twice the f32 sgemm's rate; the tiles for an f16 entity's 4–8 columns;
    /// built once per index by the first such call and kept with it: 2·d + 4 bytes per
    /// token, rows padded to a multiple of 64 where the tiles read it, see
    /// [`crate::Index::ranking_copy_bytes`]). Scores and ranks are exact either way.
    pub ranking_copy: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            granularity: Granularity::Token,
            normalization: Normalization::None,
            hessian: Hessian::Identity { damping: 1.0 },
            labels: None,
            excluded_docs: HashSet::new(),
            ranking_copy: true,
        }
    }
}

impl QueryOptions {
    /// Checks the combination (called before every run, so a bad mix is an error, not a
    /// silently ignored setting).
    pub fn check(&self, num_labels: usize) -> Result<()> {
        if let Hessian::Identity { damping } = self.hessian {
            if !(damping.is_finite() && damping > 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "the Hessian damping must be finite and > 0, got {damping}"
                )));
            }
        }
        if let Some(labels) = &self.labels {
            if let Some(l) = labels.iter().find(|&&l| l as usize >= num_labels) {
                return Err(Error::LabelOutOfRange(format!(
                    "label filter has {l}, the CRF has {num_labels} labels"
                )));
            }
            if self.granularity == Granularity::Instance {
                return Err(Error::InvalidArgument(
                    "a label filter selects tokens; instance granularity scores whole sequences (clear the filter)".into(),
                ));
            }
        }
        if self.normalization == Normalization::GradientNorm
            && matches!(
                self.granularity,
                Granularity::NearestDot | Granularity::NearestCosine
            )
        {
            return Err(Error::InvalidArgument(
                "gradient-norm normalisation applies to influence granularities; use nearest_cosine for normalised similarity".into(),
            ));
        }
        Ok(())
    }
}
