//! The token-gradient index (DESIGN.md §3): for every training token what the factored
//! influence formula needs (`f_k`, `r_k`, labels around it), never a `C × d` gradient.

mod build;
mod column;
pub(crate) mod file;
mod ranking_copy;
mod storage;

use std::sync::{Arc, OnceLock};

pub use build::{BuildOptions, IndexBuilder, Progress, TrainingSequence};
pub use file::IndexInfo;
pub use storage::Storage;

pub(crate) use column::Column;
pub(crate) use ranking_copy::{balanced_limit, tiled, CopyValues, RankingCopy};
pub(crate) use storage::FeatureRows;

use crate::crf::Crf;

/// Marks "no previous/next label" (the first/last token of a sequence).
pub const NO_LABEL: u32 = u32::MAX;

/// Per training token (N rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenColumns {
    /// N × C single-token error vectors `r_k = q_k − ȳ_k` (DESIGN.md §2).
    pub errors: Column<f64>,
    /// N × C whole-sequence error vectors `p(y_k|x) − ȳ_k` (instance influence).
    pub instance_errors: Column<f64>,
    pub labels: Column<u32>,
    /// Label of the previous token, or [`NO_LABEL`] at position 0.
    pub prev_labels: Column<u32>,
    /// Label of the next token, or [`NO_LABEL`] at the last position.
    pub next_labels: Column<u32>,
    pub positions: Column<u32>,
    /// Which sequence (0..S) the token belongs to.
    pub sequences: Column<u32>,
    /// `CL(k,k)`.
    pub losses: Column<f64>,
    /// Entropy of the model's marginal `p(y_k | x)` (nats).
    pub entropies: Column<f64>,
    /// `‖∇_θ CL(k,k)‖₂` over all parameters.
    pub grad_norms: Column<f64>,
    /// `‖f_k‖₂` of the features as given (before any compression).
    pub feature_norms: Column<f64>,
}

/// Per training sequence (S rows).
#[derive(Debug, Clone, Default)]
pub(crate) struct SequenceColumns {
    pub doc_ids: Column<u64>,
    /// S + 1 token offsets: sequence `s` is tokens `offsets[s]..offsets[s+1]`.
    pub offsets: Column<u64>,
    /// S × C `∇_b` of the whole-sequence NLL (zeros when the model has no bias).
    pub bias_grads: Column<f64>,
    /// S × C × C `∇_A` of the whole-sequence NLL.
    pub transition_grads: Column<f64>,
    /// S × C `∇_s` (zeros when the model has no start scores).
    pub start_grads: Column<f64>,
    /// S × C `∇_e` (zeros when the model has no end scores).
    pub end_grads: Column<f64>,
    /// `−log p(y|x)`.
    pub losses: Column<f64>,
    /// `‖∇_θ −log p(y|x)‖₂`.
    pub grad_norms: Column<f64>,
}

/// A token-gradient index over a training set, for one CRF. Read-only once built or opened:
/// `Send + Sync`, shared by any number of queries.
#[derive(Debug, Clone)]
pub struct Index {
    pub(crate) crf: Arc<Crf>,
    pub(crate) features: FeatureRows,
    pub(crate) tokens: TokenColumns,
    pub(crate) seqs: SequenceColumns,
    pub(crate) derived: Arc<Derived>,
}

/// What queries derive from an index once and reuse (in memory only, never saved).
#[derive(Debug, Default)]
pub(crate) struct Derived {
    /// The largest factor of the ranking pass's error bound over all items, per granularity
    /// and normalisation (`query::score::max_item_factor`): one pass over every token's `r_k`
    /// and norms, which single queries would otherwise repeat each time.
    pub max_item_factor: [OnceLock<f64>; 8],
    /// An f32/f16 index's i16 copy for the integer GEMM of batches ([`RankingCopy`]), built
    /// by the first batch that uses it; `None` when it would not help (see there).
    pub ranking_copy: OnceLock<Option<RankingCopy>>,
    /// Per token, `‖r_k‖₂` and `‖r_k‖₂ / ‖∇CL(k,k)‖₂` rounded up to f32
    /// ([`Index::error_norms`]).
    pub error_norms: [OnceLock<Vec<f32>>; 2],
    /// Per token, its [`pair_class`] ([`Index::pair_classes`]).
    pub pair_classes: OnceLock<Vec<u32>>,
}

/// A token's row in the (C+1)² per-(previous, next label) tables of a query: C stands for
/// "none" ([`NO_LABEL`]).
#[inline]
pub(crate) fn pair_class(prev: u32, next: u32, c: usize) -> usize {
    // NO_LABEL (u32::MAX) is past every label < C: a min, which vectorises, maps it to C.
    let side = |label: u32| (label as usize).min(c);
    side(prev) * (c + 1) + side(next)
}

impl Index {
    pub fn crf(&self) -> &Arc<Crf> {
        &self.crf
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.labels.len()
    }

    pub fn num_sequences(&self) -> usize {
        self.seqs.doc_ids.len()
    }

    pub fn storage(&self) -> Storage {
        self.features.storage()
    }

    /// Bytes a full scan reads: the features plus the per-token columns scoring touches.
    pub fn scan_bytes(&self) -> usize {
        self.scan_columns().iter().map(|c| c.len()).sum()
    }

    /// The memory a single query's full scan streams, column by column, each `N ×` its
    /// bytes per token in token order: the feature rows (and an int8 index's row scales), the
    /// `r_k` and their norms (f32, derived in memory on first use), the label column and the
    /// pair classes (derived likewise). For measuring what a plain read of exactly these
    /// bytes reaches (`benches/index_query.rs`): the ceiling of a query on this index, in the
    /// same pages.
    pub fn scan_columns(&self) -> Vec<&[u8]> {
        let mut columns = match &self.features {
            FeatureRows::F32(rows) => vec![rows.bytes()],
            FeatureRows::F16(rows) => vec![rows.bytes()],
            FeatureRows::Int8 { values, scales } => vec![values.bytes(), scales.bytes()],
        };
        let t = &self.tokens;
        columns.extend([
            t.errors.bytes(),
            bytemuck::cast_slice(self.error_norms(false)),
            t.labels.bytes(),
            bytemuck::cast_slice(self.pair_classes()),
        ]);
        columns
    }

    /// Per token, the [`pair_class`] of its previous and next labels: what a single query's
    /// scan reads to find each token's row of the query's transition table. Computed on first
    /// use, 4 bytes a token: computed per chunk of the scan from the two label columns (8
    /// bytes a token, read cold), they took 0.9–1.8 ms of thread time of an int8 3-token query
    /// of ~16 (session 11).
    pub(crate) fn pair_classes(&self) -> &[u32] {
        self.derived.pair_classes.get_or_init(|| {
            let (prev, next) = (
                self.tokens.prev_labels.as_slice(),
                self.tokens.next_labels.as_slice(),
            );
            let c = self.crf.num_labels();
            // (C+1)² classes fit in u32 below C = 65535, where the CRF's C × C transitions
            // alone take 34 GB (and a query's (C+1)² × C table 10⁵ times that); a class that
            // did not fit would read as past the table, which the kernels refuse.
            (prev.iter().zip(next))
                .map(|(&p, &n)| u32::try_from(pair_class(p, n, c)).unwrap_or(u32::MAX))
                .collect()
        })
    }

    /// Per token, `‖r_k‖₂` — over the token's gradient norm when `per_grad_norm` (0 for a zero
    /// gradient, whose normalised score is 0) — rounded up to f32, so that it bounds the value
    /// (up to the f64 arithmetic's own rounding): single queries leave out the O(C) scoring of
    /// tokens whose score it proves small (`int_kernels::SkipBelow`). Computed on first use,
    /// 4 bytes a token each.
    pub(crate) fn error_norms(&self, per_grad_norm: bool) -> &[f32] {
        self.derived.error_norms[usize::from(per_grad_norm)].get_or_init(|| {
            let c = self.crf.num_labels().max(1);
            let errors = self.tokens.errors.as_slice().chunks_exact(c);
            (errors.zip(self.tokens.grad_norms.as_slice()))
                .map(|(r, &grad_norm)| {
                    let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                    crate::int_kernels::f32_at_least(match per_grad_norm {
                        false => norm,
                        true if grad_norm > 0.0 => norm / grad_norm,
                        true => 0.0,
                    })
                })
                .collect()
        })
    }

    /// The i16 copy of the rows for the batches' integer GEMM (and f16 entity queries' tiles),
    /// built on first use (an f32 or f16 index on a CPU with the integer kernels; `None`
    /// otherwise): tiled, in int8 planes, where the AMX tiles take them.
    pub(crate) fn ranking_copy(&self) -> Option<&RankingCopy> {
        let d = self.crf.feature_dim();
        self.derived
            .ranking_copy
            .get_or_init(|| {
                // Past d = 8192 the limit falls below 512 and the columns' own rounding with it
                // would loosen the ranking bound too much.
                let limit = balanced_limit(d);
                let (shape, tiled) = ((self.num_tokens(), d), RankingCopy::kept_tiled(d));
                (crate::int_kernels::intrinsics_available() && limit >= 512)
                    .then(|| RankingCopy::build(&self.features, shape, limit, tiled))
                    .flatten()
            })
            .as_ref()
    }

    /// Memory held by the i16 copy of the rows that batches of more than 4 test columns rank
    /// through on an f32/f16 index, and f16 single queries of 4–8 tokens where the CPU has
    /// the AMX tiles (2·d + 4 bytes per token, the rows padded to a multiple of 64 where the
    /// tiles read them; built by the first such query on a CPU with
    /// [`crate::integer_kernels_available`]); 0 before that, for int8 indexes, and when the
    /// copy would be too coarse or cannot be allocated.
    pub fn ranking_copy_bytes(&self) -> usize {
        match self.derived.ranking_copy.get() {
            Some(Some(copy)) => copy.values.bytes() + 4 * copy.scales.len(),
            _ => 0,
        }
    }

    /// `(doc_id, position)` of token `k`.
    pub fn token_id(&self, k: usize) -> (u64, u32) {
        let s = self.tokens.sequences.as_slice()[k] as usize;
        (
            self.seqs.doc_ids.as_slice()[s],
            self.tokens.positions.as_slice()[k],
        )
    }

    pub fn token_label(&self, k: usize) -> u32 {
        self.tokens.labels.as_slice()[k]
    }

    /// Per-token `CL(k,k)`, the model's label entropy, and `‖∇CL(k,k)‖` (noisy-label baselines).
    pub fn token_losses(&self) -> &[f64] {
        self.tokens.losses.as_slice()
    }

    pub fn token_entropies(&self) -> &[f64] {
        self.tokens.entropies.as_slice()
    }

    pub fn token_grad_norms(&self) -> &[f64] {
        self.tokens.grad_norms.as_slice()
    }

    pub fn sequence_doc_ids(&self) -> &[u64] {
        self.seqs.doc_ids.as_slice()
    }

    pub fn sequence_losses(&self) -> &[f64] {
        self.seqs.losses.as_slice()
    }

    pub fn sequence_grad_norms(&self) -> &[f64] {
        self.seqs.grad_norms.as_slice()
    }

    /// Token range of sequence `s`.
    pub fn sequence_tokens(&self, s: usize) -> std::ops::Range<usize> {
        let o = self.seqs.offsets.as_slice();
        o[s] as usize..o[s + 1] as usize
    }
}
