//! C ABI for influence queries (`seginf_query_*`).

use std::sync::Arc;

use super::boundary::*;
use super::index::seginf_index;
use super::train::seginf_curvature;
use crate::error::Error;
use crate::query::{Granularity, Hessian, Hit, Normalization, Query, TestSegment, TopHits};

/// One ranked training item. `score` < 0 supports the test segment's labels (including the
/// training label lowered the test loss), > 0 opposes them. For instance granularity
/// `position` and `label` are UINT32_MAX (the hit is the whole sequence `doc_id`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct seginf_hit {
    pub doc_id: u64,
    pub position: u32,
    pub label: u32,
    pub score: f64,
}

/// What a query scores (passed as int32_t).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_granularity {
    /// Segment influence of each training token (emission and transition gradients).
    SEGINF_GRANULARITY_TOKEN = 0,
    /// Koh & Liang influence of each training sequence.
    SEGINF_GRANULARITY_INSTANCE = 1,
    /// Segment nearest neighbour: score = -(f_k . mean test feature); most similar supports.
    SEGINF_GRANULARITY_NEAREST_DOT = 2,
    /// As NEAREST_DOT with cosine similarity.
    SEGINF_GRANULARITY_NEAREST_COSINE = 3,
}

/// Per-item score scaling (passed as int32_t).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_normalization {
    SEGINF_NORMALIZATION_NONE = 0,
    /// Divide by the norm of the training item's gradient (RelatIF-style).
    SEGINF_NORMALIZATION_GRADIENT_NORM = 1,
}

/// Hessian approximations (passed as int32_t). More modes will be added with new values.
/// Only the identity is set on a query directly (seginf_query_set_hessian); the others need
/// the training data: fit a seginf_curvature with seginf_curvature_fit and pass it to
/// seginf_query_set_curvature. Each inverts the Hessian of the training objective
/// `mean NLL + (l2/2)|theta|^2` plus damping * I.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_hessian {
    /// H = damping * I: scores are -g_test . g_train / damping (the paper uses damping = 1).
    SEGINF_HESSIAN_IDENTITY = 0,
    /// K-FAC (Martens & Grosse 2015): the emission block as a Kronecker product of the feature
    /// second moment and the mean label covariance; the transition/start/end block exact.
    SEGINF_HESSIAN_KFAC = 1,
    /// EK-FAC (George et al. 2018): K-FAC's eigenbases with the exact curvature along each basis
    /// direction; closer to the exact Hessian at the same cost per query.
    SEGINF_HESSIAN_EKFAC = 2,
    /// The exact Hessian, inverted by conjugate gradient on exact Hessian-vector products (one
    /// pass over the training data per CG iteration, at every query): the magnitudes of
    /// influence, at a price.
    SEGINF_HESSIAN_EXACT = 3,
}

/// A prepared query over one index: options (granularity, normalisation, Hessian, filters)
/// and scratch space. Use from one thread at a time; make one per thread to query a shared
/// index concurrently. Made by seginf_query_new, freed by seginf_query_free.
pub struct seginf_query {
    pub(crate) query: Query,
}

impl From<&Hit> for seginf_hit {
    fn from(h: &Hit) -> Self {
        seginf_hit {
            doc_id: h.doc_id,
            position: h.position,
            label: h.label,
            score: h.score,
        }
    }
}

/// A new query on `index` (kept alive by the query) with defaults: token granularity, no
/// normalisation, identity Hessian with damping 1, no filters, ranking copy allowed.
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_new(
    index: *const seginf_index,
    out: *mut *mut seginf_query,
) -> seginf_status {
    guard(|| {
        let index = &unsafe { borrow(index, "index") }?.index;
        out_ptr(out, "out")?;
        let q = seginf_query {
            query: Query::new(Arc::clone(index)),
        };
        unsafe { write(out, Box::into_raw(Box::new(q)), "out") }
    })
}

/// Frees a query. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_free(query: *mut seginf_query) {
    if !query.is_null() {
        // SAFETY: made by Box::into_raw in seginf_query_new; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(query) }));
    }
}

/// Sets the granularity (a seginf_granularity). Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_granularity(
    query: *mut seginf_query,
    granularity: i32,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        use seginf_granularity::*;
        let table = [
            (SEGINF_GRANULARITY_TOKEN as i32, Granularity::Token),
            (SEGINF_GRANULARITY_INSTANCE as i32, Granularity::Instance),
            (
                SEGINF_GRANULARITY_NEAREST_DOT as i32,
                Granularity::NearestDot,
            ),
            (
                SEGINF_GRANULARITY_NEAREST_COSINE as i32,
                Granularity::NearestCosine,
            ),
        ];
        q.query.options.granularity = from_code(granularity, &table, "seginf_granularity")?;
        Ok(())
    })
}

/// Whether batches of more than 4 test columns (seginf_query_run_batch), single segments of
/// more than 8 tokens, and the segment methods of seginf_rank_training, on an f32 or f16
/// index — and, on CPUs with Intel AMX, an f16 index's single segments of 4–8 tokens when
/// the feature dimension is a multiple of 64 — may rank through the index's i16
/// copy of its rows: 1 (the default) or 0. The copy is built by the first such call on a CPU
/// with AVX-512 VNNI or AVX2 and kept with the index
/// (2·d + 4 bytes per token, as much as an f16 index's features; with AMX the rows are
/// kept in groups of 64, the last padded; see
/// seginf_index_ranking_copy_bytes); the integer GEMM runs at about twice the rate of the f32
/// sgemm, and the AMX tiles take an f16 entity's 4–8 columns at the speed of reading the
/// copy, where the f16 kernel is bound by its FMAs. Results are identical either way: every
/// reported score is computed exactly from the stored rows. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_ranking_copy(
    query: *mut seginf_query,
    enabled: i32,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        q.query.options.ranking_copy =
            from_code(enabled, &[(0, false), (1, true)], "flag (0 or 1)")?;
        Ok(())
    })
}

/// Sets the normalisation (a seginf_normalization). Gradient-norm normalisation applies to
/// token and instance granularity; running a nearest-neighbour query with it is an error.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_normalization(
    query: *mut seginf_query,
    normalization: i32,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        use seginf_normalization::*;
        let table = [
            (SEGINF_NORMALIZATION_NONE as i32, Normalization::None),
            (
                SEGINF_NORMALIZATION_GRADIENT_NORM as i32,
                Normalization::GradientNorm,
            ),
        ];
        q.query.options.normalization = from_code(normalization, &table, "seginf_normalization")?;
        Ok(())
    })
}

/// Sets the Hessian to SEGINF_HESSIAN_IDENTITY with `damping` (finite, > 0): H = damping * I,
/// replacing any curvature set before. The other modes need the training data, so they are not
/// set here: fit a seginf_curvature (seginf_curvature_fit) and call seginf_query_set_curvature;
/// passing them here fails with INVALID_ARGUMENT and says so.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a mode other than identity, an unknown mode, a bad
/// damping).
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_hessian(
    query: *mut seginf_query,
    mode: i32,
    damping: f64,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        use seginf_hessian::*;
        let all = [
            SEGINF_HESSIAN_IDENTITY,
            SEGINF_HESSIAN_KFAC,
            SEGINF_HESSIAN_EKFAC,
            SEGINF_HESSIAN_EXACT,
        ];
        let mode = from_code(mode, &all.map(|m| (m as i32, m)), "seginf_hessian")?;
        if mode != SEGINF_HESSIAN_IDENTITY {
            return Err(Error::InvalidArgument(format!(
                "{mode:?} needs the training data: fit it with seginf_curvature_fit and set it with seginf_query_set_curvature"
            ))
            .into());
        }
        if !(damping.is_finite() && damping > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "damping must be finite and > 0, got {damping}"
            ))
            .into());
        }
        q.query.options.hessian = Hessian::Identity { damping };
        Ok(())
    })
}

/// Makes the query use a fitted curvature (K-FAC, EK-FAC or exact; see seginf_curvature_fit)
/// as its inverse Hessian, with the damping it was fitted with: each test gradient is
/// preconditioned once per run, h = (H + (l2 + damping) I)^-1 g_test, and every item scores
/// -h . g_train. The curvature must have been fitted at the CRF of the query's index. The query
/// keeps its own reference (the caller may free the curvature handle). With an exact curvature
/// every run does a conjugate-gradient solve over the training data, and a solve that does not
/// converge fails that run with NOT_CONVERGED. seginf_query_set_hessian(query,
/// SEGINF_HESSIAN_IDENTITY, damping) goes back to the identity.
/// Errors: NULL_ARGUMENT, MODEL_MISMATCH (fitted at another CRF).
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_curvature(
    query: *mut seginf_query,
    curvature: *const seginf_curvature,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        let curvature = unsafe { borrow(curvature, "curvature") }?;
        let index_crf = q.query.index().crf().fingerprint();
        if curvature.fingerprint != index_crf {
            return Err(Error::ModelMismatch(format!(
                "the curvature was fitted at another CRF (fingerprint {:016x}) than the query's index was built for ({index_crf:016x})",
                curvature.fingerprint
            ))
            .into());
        }
        q.query.options.hessian = Hessian::Inverse(Arc::clone(&curvature.inverse));
        Ok(())
    })
}

/// Keeps only training tokens whose gold label is one of `labels` (`len` of them); len = 0
/// (labels may then be NULL) removes the filter. Not valid with instance granularity.
/// Errors: NULL_ARGUMENT, LABEL_OUT_OF_RANGE.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_label_filter(
    query: *mut seginf_query,
    labels: *const u32,
    len: usize,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        if len == 0 {
            q.query.options.labels = None;
            return Ok(());
        }
        let ls = unsafe { slice(labels, len, "labels") }?;
        let c = q.query.index().crf().num_labels();
        if let Some(l) = ls.iter().find(|&&l| l as usize >= c) {
            return Err(Error::LabelOutOfRange(format!(
                "label {l} in the filter, the CRF has {c} labels"
            ))
            .into());
        }
        q.query.options.labels = Some(ls.to_vec());
        Ok(())
    })
}

/// Skips training items whose doc id is one of `doc_ids` (`len`); len = 0 clears the set.
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_set_excluded_docs(
    query: *mut seginf_query,
    doc_ids: *const u64,
    len: usize,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        q.query.options.excluded_docs = match len {
            0 => Default::default(),
            _ => unsafe { slice(doc_ids, len, "doc_ids") }?
                .iter()
                .copied()
                .collect(),
        };
        Ok(())
    })
}

/// Number of scores seginf_query_scores writes: N tokens, or S sequences for instance
/// granularity (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn seginf_query_num_items(query: *const seginf_query) -> usize {
    guard_value(0, || {
        unsafe { query.as_ref() }.map_or(0, |q| q.query.num_items())
    })
}

/// Writes each segment's hits into its `k_capacity` slots of `supporting`/`opposing`.
unsafe fn write_hits(
    all: &[TopHits],
    supporting: *mut seginf_hit,
    opposing: *mut seginf_hit,
    k: usize,
    found: *mut usize,
) -> FfiResult<()> {
    let q = all.len();
    let total = product(q, k, "segments x k_capacity")?;
    let sup = unsafe { std::slice::from_raw_parts_mut(supporting, total) };
    let opp = unsafe { std::slice::from_raw_parts_mut(opposing, total) };
    let counts = unsafe { std::slice::from_raw_parts_mut(found, q) };
    for (i, hits) in all.iter().enumerate() {
        for (j, h) in hits.supporting.iter().enumerate() {
            sup[i * k + j] = h.into();
        }
        for (j, h) in hits.opposing.iter().enumerate() {
            opp[i * k + j] = h.into();
        }
        counts[i] = hits.supporting.len();
    }
    Ok(())
}

/// Checks the hit and count buffers of `segments` segments before any work.
fn check_hit_buffers(
    supporting: *mut seginf_hit,
    opposing: *mut seginf_hit,
    k: usize,
    found: *mut usize,
    segments: usize,
) -> FfiResult<()> {
    if k == 0 {
        return Err(Error::InvalidArgument("k_capacity must be at least 1".into()).into());
    }
    let total = product(segments, k, "segments x k_capacity")?;
    unsafe { slice(supporting as *const seginf_hit, total, "supporting") }?;
    unsafe { slice(opposing as *const seginf_hit, total, "opposing") }?;
    unsafe { slice(found as *const usize, segments, "found") }?;
    // The two hit buffers are written as separate slices: they must not overlap.
    let bytes = total * std::mem::size_of::<seginf_hit>();
    let (a, b) = (supporting as usize, opposing as usize);
    if a < b.saturating_add(bytes) && b < a.saturating_add(bytes) {
        return Err(Error::InvalidArgument(
            "`supporting` and `opposing` overlap; pass two distinct buffers".into(),
        )
        .into());
    }
    Ok(())
}

/// Ranks training items against the segment [first, last] (inclusive, any length) of one test
/// sequence (features n x d, labels n: gold or predicted, the caller chooses). Writes up to
/// k_capacity hits into each of `supporting` (most negative score first) and `opposing` (most
/// positive first; the two buffers must not overlap), found in one pass; *found = how many were
/// written to each (fewer than k_capacity only when the filters leave fewer items). Ties break
/// by (doc_id, position). Reported scores are exact (f64), as seginf_query_scores gives them.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (k_capacity = 0, a bad option mix), NON_FINITE,
/// DIMENSION_MISMATCH, LABEL_OUT_OF_RANGE, BAD_SEGMENT, IMPOSSIBLE_LABELS, NOT_CONVERGED (the
/// conjugate-gradient solve of an exact curvature; see seginf_query_set_curvature).
#[no_mangle]
pub unsafe extern "C" fn seginf_query_run(
    query: *mut seginf_query,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    supporting: *mut seginf_hit,
    opposing: *mut seginf_hit,
    k_capacity: usize,
    found: *mut usize,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        let (x, y) =
            unsafe { labelled_view(features, labels, n, q.query.index().crf().feature_dim()) }?;
        check_hit_buffers(supporting, opposing, k_capacity, found, 1)?;
        let hits = q.query.run(
            &TestSegment {
                features: x,
                labels: y,
                first,
                last,
            },
            k_capacity,
        )?;
        unsafe { write_hits(&[hits], supporting, opposing, k_capacity, found) }
    })
}

/// Scores `num_segments` test segments in one pass over the index. The test sequences are
/// stored back to back: sequence i has seq_lengths[i] tokens (`features`: sum x d, `labels`:
/// sum). Segment j is [seg_first[j], seg_last[j]] of sequence seg_seq[j]. Its hits go to
/// supporting[j*k_capacity ...] and opposing[j*k_capacity ...], their count to found[j].
/// Results equal those of seginf_query_run on each segment. On an f32 or f16 index, the first
/// batch of more than 4 test columns (a segment of t tokens counts t; a single segment of up
/// to 8 tokens streams instead) builds the index's i16 ranking copy unless the query opted
/// out (seginf_query_set_ranking_copy).
/// Error messages name the failing segment. Errors: as seginf_query_run; INVALID_ARGUMENT
/// when num_segments = 0.
#[no_mangle]
pub unsafe extern "C" fn seginf_query_run_batch(
    query: *mut seginf_query,
    features: *const f32,
    labels: *const u32,
    seq_lengths: *const usize,
    num_seqs: usize,
    seg_seq: *const usize,
    seg_first: *const usize,
    seg_last: *const usize,
    num_segments: usize,
    supporting: *mut seginf_hit,
    opposing: *mut seginf_hit,
    k_capacity: usize,
    found: *mut usize,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        let d = q.query.index().crf().feature_dim();
        let lengths = unsafe { slice(seq_lengths, num_seqs, "seq_lengths") }?;
        let which = unsafe { slice(seg_seq, num_segments, "seg_seq") }?;
        let firsts = unsafe { slice(seg_first, num_segments, "seg_first") }?;
        let lasts = unsafe { slice(seg_last, num_segments, "seg_last") }?;
        check_hit_buffers(supporting, opposing, k_capacity, found, num_segments)?;
        let sequences = unsafe { back_to_back(features, labels, lengths, d) }?;
        let mut segments = Vec::with_capacity(num_segments);
        for j in 0..num_segments {
            let Some(&(features, labels)) = sequences.get(which[j]) else {
                let s = which[j];
                return Err(Error::InvalidArgument(format!(
                    "seg_seq[{j}] = {s} but there are {num_seqs} sequences"
                ))
                .into());
            };
            segments.push(TestSegment {
                features,
                labels,
                first: firsts[j],
                last: lasts[j],
            });
        }
        let all = q.query.run_batch(&segments, k_capacity)?;
        unsafe { write_hits(&all, supporting, opposing, k_capacity, found) }
    })
}

/// Every item's score against one test segment, in index order (tokens, or sequences for
/// instance granularity), into `scores_out` of `len` = seginf_query_num_items doubles. Items
/// the filters exclude get NaN. Errors: as seginf_query_run, DIMENSION_MISMATCH (len).
#[no_mangle]
pub unsafe extern "C" fn seginf_query_scores(
    query: *mut seginf_query,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    scores_out: *mut f64,
    len: usize,
) -> seginf_status {
    guard(|| {
        let q = unsafe { borrow_mut(query, "query") }?;
        let (x, y) =
            unsafe { labelled_view(features, labels, n, q.query.index().crf().feature_dim()) }?;
        out_ptr(scores_out, "scores_out")?;
        if len != q.query.num_items() {
            return Err(Error::DimensionMismatch(format!(
                "len = {len} but the query scores {} items",
                q.query.num_items()
            ))
            .into());
        }
        let scores = q.query.scores(&TestSegment {
            features: x,
            labels: y,
            first,
            last,
        })?;
        unsafe { write_slice(scores_out, &scores, "scores_out") }
    })
}
