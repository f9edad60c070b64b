//! C ABI for noisy-label ranking (`seginf_rank_training`, paper §6).

use super::boundary::*;
use super::index::seginf_index;
use super::query::seginf_query;
use crate::error::Error;
use crate::rank::{rank_training, CleanSequence, RankMethod, RankOptions};

/// How seginf_rank_training scores training items (passed as int32_t). Higher = more likely
/// mislabelled, for every method. The influence methods read the clean set; the others
/// ignore it (pass num_clean = 0).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_rank_method {
    /// CL(k,k): the token's loss given its neighbours' labels.
    SEGINF_RANK_TOKEN_LOSS = 0,
    /// -log p(y_k | x): the token's marginal loss.
    SEGINF_RANK_TOKEN_MARGINAL_LOSS = 1,
    /// Entropy of the model's marginal label distribution of the token.
    SEGINF_RANK_TOKEN_ENTROPY = 2,
    /// Norm of the gradient of CL(k,k).
    SEGINF_RANK_TOKEN_GRADIENT_NORM = 3,
    /// -log p(y|x) of the token's sequence.
    SEGINF_RANK_INSTANCE_LOSS = 4,
    /// Norm of the gradient of the sequence's -log p(y|x).
    SEGINF_RANK_INSTANCE_GRADIENT_NORM = 5,
    /// Mean of the token's `top` largest (most opposing) segment influences on the clean
    /// tokens (paper §6.1), with the query's Hessian and normalisation.
    SEGINF_RANK_SEGMENT_INFLUENCE = 6,
    /// Mean of the token's `top` largest feature dot products with clean tokens of another
    /// label (segment nearest neighbour).
    SEGINF_RANK_SEGMENT_NEAREST = 7,
    /// The sequence's instance influence averaged over the clean sequences, with the query's
    /// Hessian and normalisation.
    SEGINF_RANK_INSTANCE_INFLUENCE = 8,
}

/// A training document's aggregated misannotation score. Documents are doc_id >> shift.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct seginf_doc_score {
    /// doc_id >> doc_id_shift.
    pub doc_id: u64,
    /// Mean and max over the document's items (tokens; sequences for the INSTANCE methods)
    /// with a finite score; NaN when none has one.
    pub mean: f64,
    pub max: f64,
    /// Items with a finite score.
    pub items: u64,
}

fn method_from(value: i32) -> FfiResult<RankMethod> {
    use seginf_rank_method::*;
    from_code(
        value,
        &[
            (SEGINF_RANK_TOKEN_LOSS as i32, RankMethod::TokenLoss),
            (
                SEGINF_RANK_TOKEN_MARGINAL_LOSS as i32,
                RankMethod::TokenMarginalLoss,
            ),
            (SEGINF_RANK_TOKEN_ENTROPY as i32, RankMethod::TokenEntropy),
            (
                SEGINF_RANK_TOKEN_GRADIENT_NORM as i32,
                RankMethod::TokenGradientNorm,
            ),
            (SEGINF_RANK_INSTANCE_LOSS as i32, RankMethod::InstanceLoss),
            (
                SEGINF_RANK_INSTANCE_GRADIENT_NORM as i32,
                RankMethod::InstanceGradientNorm,
            ),
            (
                SEGINF_RANK_SEGMENT_INFLUENCE as i32,
                RankMethod::SegmentInfluence,
            ),
            (
                SEGINF_RANK_SEGMENT_NEAREST as i32,
                RankMethod::SegmentNearest,
            ),
            (
                SEGINF_RANK_INSTANCE_INFLUENCE as i32,
                RankMethod::InstanceInfluence,
            ),
        ],
        "seginf_rank_method",
    )
}

/// Number of training documents (distinct doc_id >> doc_id_shift) into *out: the size of the
/// `docs` buffer seginf_rank_training needs.
/// Errors: NULL_ARGUMENT; INVALID_ARGUMENT when doc_id_shift > 63.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_num_documents(
    index: *const seginf_index,
    doc_id_shift: u32,
    out: *mut usize,
) -> seginf_status {
    guard(|| {
        let index = &unsafe { borrow(index, "index") }?.index;
        out_ptr(out, "out")?;
        let n = crate::rank::num_documents(index, doc_id_shift)?;
        unsafe { write(out, n, "out") }
    })
}

/// Scores every training token of the query's index for how likely its label is wrong (paper
/// §6.1-6.2) and ranks the training documents (doc_id >> doc_id_shift; 32 when doc ids are
/// `document << 32 | sentence`).
///
/// `query` supplies the index, the Hessian (seginf_query_set_hessian or _set_curvature) and
/// the normalisation (use NONE to find noisy labels); its granularity is not used (the method
/// decides) and its label filter and excluded docs must be unset. `top`: how many of a
/// token's largest influences or similarities are averaged (the paper: 10).
/// The clean (expert-labelled) sequences are stored back to back: sequence i has
/// clean_lengths[i] tokens (`clean_features`: sum x d, `clean_labels`: sum). Only the
/// SEGMENT_INFLUENCE, SEGMENT_NEAREST and INSTANCE_INFLUENCE methods read them; the others
/// accept num_clean = 0 with NULL pointers.
///
/// Outputs, written only on success: `token_scores` (N = seginf_index_num_tokens doubles,
/// index order; INSTANCE methods give each token its sequence's score; NaN where undefined:
/// SEGMENT_NEAREST with no clean token of another label), or NULL with token_scores_len = 0 to
/// skip; `docs` (docs_capacity >= seginf_index_num_documents entries), most suspect first by
/// mean (NaN last, ties by doc id), or NULL with docs_capacity = 0 to skip; *num_docs the
/// number of documents.
/// Cost: the influence methods run blocked GEMMs of the index against the clean set's test
/// columns (one per clean token; one per clean sequence and label for INSTANCE_INFLUENCE);
/// with an EXACT curvature each clean token costs a conjugate-gradient solve. The SEGMENT
/// methods rank through the f32/f16 index's i16 ranking copy, as batches do, unless the query
/// opted out (seginf_query_set_ranking_copy); the scores are exact either way.
/// Thread-safety: the query is used by this thread only; the index may be shared.
/// Errors: NULL_ARGUMENT; INVALID_ARGUMENT (unknown method, top = 0, shift > 63, filters set
/// on the query, no clean tokens for an influence method, NEAREST with normalisation,
/// docs_capacity too small); DIMENSION_MISMATCH (token_scores_len != N); LABEL_OUT_OF_RANGE,
/// NON_FINITE (clean data); IMPOSSIBLE_LABELS (clean labels the constraints forbid).
#[no_mangle]
pub unsafe extern "C" fn seginf_rank_training(
    query: *mut seginf_query,
    method: i32,
    top: usize,
    doc_id_shift: u32,
    clean_features: *const f32,
    clean_labels: *const u32,
    clean_lengths: *const usize,
    num_clean: usize,
    token_scores: *mut f64,
    token_scores_len: usize,
    docs: *mut seginf_doc_score,
    docs_capacity: usize,
    num_docs: *mut usize,
) -> seginf_status {
    guard(|| {
        let q = &unsafe { borrow_mut(query, "query") }?.query;
        let method = method_from(method)?;
        out_ptr(num_docs, "num_docs")?;
        let index = q.index();
        let options = &q.options;
        if options.labels.is_some() || !options.excluded_docs.is_empty() {
            return Err(Error::InvalidArgument(
                "the query has a label filter or excluded docs; ranking scores every training token (clear them)".into(),
            )
            .into());
        }
        if !token_scores.is_null() && token_scores_len != index.num_tokens() {
            return Err(Error::DimensionMismatch(format!(
                "token_scores_len is {token_scores_len}, the index has {} tokens",
                index.num_tokens()
            ))
            .into());
        }
        if token_scores.is_null() && token_scores_len != 0 {
            return Err(null("token_scores"));
        }
        if docs.is_null() && docs_capacity != 0 {
            return Err(null("docs"));
        }
        // Alignment checked now, so that no output is touched when a later one would fail.
        if !token_scores.is_null() {
            out_ptr(token_scores, "token_scores")?;
        }
        if !docs.is_null() {
            out_ptr(docs, "docs")?;
        }
        let needed = crate::rank::num_documents(index, doc_id_shift)?;
        if !docs.is_null() && docs_capacity < needed {
            return Err(Error::InvalidArgument(format!(
                "docs_capacity is {docs_capacity}, the ranking has {needed} documents (seginf_index_num_documents)"
            ))
            .into());
        }
        let clean = match num_clean {
            0 => Vec::new(),
            n => {
                let lengths = unsafe { slice(clean_lengths, n, "clean_lengths") }?;
                let d = index.crf().feature_dim();
                unsafe { back_to_back(clean_features, clean_labels, lengths, d) }?
            }
        };
        let clean: Vec<CleanSequence> = clean
            .into_iter()
            .map(|(features, labels)| CleanSequence { features, labels })
            .collect();
        let ranking = rank_training(
            index,
            &RankOptions {
                method,
                top,
                hessian: options.hessian.clone(),
                normalization: options.normalization,
                doc_id_shift,
                ranking_copy: options.ranking_copy,
            },
            &clean,
        )?;
        if !token_scores.is_null() {
            unsafe { write_slice(token_scores, &ranking.token_scores, "token_scores") }?;
        }
        if !docs.is_null() {
            let out: Vec<seginf_doc_score> = ranking
                .documents
                .iter()
                .map(|d| seginf_doc_score {
                    doc_id: d.doc_id,
                    mean: d.mean,
                    max: d.max,
                    items: d.items as u64,
                })
                .collect();
            unsafe { write_slice(docs, &out, "docs") }?;
        }
        unsafe { write(num_docs, ranking.documents.len(), "num_docs") }
    })
}
