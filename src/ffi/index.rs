//! C ABI for index building, saving and opening (`seginf_index_*`).

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;

use super::boundary::*;
use super::crf::{c_str, seginf_crf};
use crate::error::Error;
use crate::index::{BuildOptions, Index, IndexBuilder, Storage, TrainingSequence};

/// Progress callback: `done` tokens indexed of `total` expected (see
/// seginf_index_options_set_expected_tokens); return non-zero to cancel the build. Called on
/// the thread that called seginf_index_builder_add*.
pub type seginf_progress_fn =
    Option<unsafe extern "C" fn(done: u64, total: u64, user: *mut c_void) -> i32>;

/// Storage type of training features in an index (passed as int32_t).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_storage {
    /// 4 bytes per value; scores equal the dense computation up to rounding.
    SEGINF_STORAGE_F32 = 0,
    /// 2 bytes per value (IEEE half); top-10 agree with f32 in tests.
    SEGINF_STORAGE_F16 = 1,
    /// 1 byte per value plus a float scale per token; a quarter of the bytes. Queries rank
    /// with exact integer dot products (AVX-512 VNNI / AVX2 when the CPU has them): the
    /// fastest single queries and batches.
    SEGINF_STORAGE_INT8 = 2,
}

/// Per-token statistics stored in an index (passed as int32_t).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_token_stat {
    /// CL(k,k), the single-token conditional loss.
    SEGINF_TOKEN_LOSS = 0,
    /// Entropy (nats) of the model's marginal p(y_k | x).
    SEGINF_TOKEN_ENTROPY = 1,
    /// Norm of the gradient of CL(k,k) over all parameters.
    SEGINF_TOKEN_GRAD_NORM = 2,
}

/// Options for building an index: storage type, expected size, progress callback. Made by
/// seginf_index_options_new, freed by seginf_index_options_free; copied by
/// seginf_index_builder_new, so it may be freed right after.
pub struct seginf_index_options {
    build: BuildOptions,
    progress: seginf_progress_fn,
    user: *mut c_void,
}

/// An index under construction. One thread at a time. Made by seginf_index_builder_new;
/// consumed by seginf_index_builder_finish or freed by seginf_index_builder_free.
pub struct seginf_index_builder {
    builder: IndexBuilder,
    progress: seginf_progress_fn,
    user: *mut c_void,
}

/// A token-gradient index over a training set for one CRF. Read-only: any number of threads
/// may query it at once (one seginf_query per thread). It keeps its CRF alive. Made by
/// seginf_index_builder_finish or seginf_index_open; freed by seginf_index_free (queries made
/// from it keep it alive until they are freed).
pub struct seginf_index {
    pub(crate) index: Arc<Index>,
}

fn storage_from(value: i32) -> FfiResult<Storage> {
    use seginf_storage::*;
    let table = [
        (SEGINF_STORAGE_F32 as i32, Storage::F32),
        (SEGINF_STORAGE_F16 as i32, Storage::F16),
        (SEGINF_STORAGE_INT8 as i32, Storage::Int8),
    ];
    from_code(value, &table, "seginf_storage")
}

/// New build options (f32 storage, no callback) into *out. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_options_new(
    out: *mut *mut seginf_index_options,
) -> seginf_status {
    guard(|| {
        out_ptr(out, "out")?;
        let opts = seginf_index_options {
            build: BuildOptions::default(),
            progress: None,
            user: std::ptr::null_mut(),
        };
        unsafe { write(out, Box::into_raw(Box::new(opts)), "out") }
    })
}

/// Frees build options. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_options_free(opts: *mut seginf_index_options) {
    if !opts.is_null() {
        // SAFETY: made by Box::into_raw in seginf_index_options_new; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(opts) }));
    }
}

/// Sets the feature storage type (a seginf_storage). Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_options_set_storage(
    opts: *mut seginf_index_options,
    storage: i32,
) -> seginf_status {
    guard(|| {
        let opts = unsafe { borrow_mut(opts, "opts") }?;
        opts.build.storage = storage_from(storage)?;
        Ok(())
    })
}

/// Sets how many tokens the caller will add in all (only used as the progress `total`).
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_options_set_expected_tokens(
    opts: *mut seginf_index_options,
    tokens: u64,
) -> seginf_status {
    guard(|| {
        unsafe { borrow_mut(opts, "opts") }?.build.expected_tokens = tokens;
        Ok(())
    })
}

/// Sets a progress callback (NULL to remove) and the pointer passed back to it.
/// Errors: NULL_ARGUMENT (opts).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_options_set_progress(
    opts: *mut seginf_index_options,
    callback: seginf_progress_fn,
    user: *mut c_void,
) -> seginf_status {
    guard(|| {
        let opts = unsafe { borrow_mut(opts, "opts") }?;
        opts.progress = callback;
        opts.user = user;
        Ok(())
    })
}

/// Starts an index for `crf` (which the index keeps alive). `opts` may be NULL for defaults.
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_new(
    crf: *const seginf_crf,
    opts: *const seginf_index_options,
    out: *mut *mut seginf_index_builder,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        out_ptr(out, "out")?;
        // SAFETY: a non-NULL `opts` is a handle from seginf_index_options_new.
        let (build, progress, user) = match unsafe { opts.as_ref() } {
            Some(o) => (o.build, o.progress, o.user),
            None => (BuildOptions::default(), None, std::ptr::null_mut()),
        };
        let b = seginf_index_builder {
            builder: IndexBuilder::new(Arc::clone(crf), build),
            progress,
            user,
        };
        unsafe { write(out, Box::into_raw(Box::new(b)), "out") }
    })
}

/// Frees a builder that will not be finished. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_free(builder: *mut seginf_index_builder) {
    if !builder.is_null() {
        // SAFETY: made by Box::into_raw in seginf_index_builder_new; freed once.
        guard_value((), || drop(unsafe { Box::from_raw(builder) }));
    }
}

/// Runs the builder on sequences, reporting progress through the C callback.
fn add_all(b: &mut seginf_index_builder, batch: &[TrainingSequence]) -> FfiResult<()> {
    let (callback, user) = (b.progress, b.user);
    let mut report = |done: u64, total: u64| match callback {
        // SAFETY: the caller registered this function and its user pointer for this purpose.
        Some(f) => (unsafe { f(done, total, user) }) == 0,
        None => true,
    };
    b.builder
        .add_batch(batch, Some(&mut report))
        .map_err(Into::into)
}

/// Adds one training sequence: caller id `doc_id`, features n x d, gold labels n. On any error
/// (bad input, labels impossible under the constraints, cancel) nothing is added.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE, LABEL_OUT_OF_RANGE,
/// IMPOSSIBLE_LABELS, CANCELLED.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_add(
    builder: *mut seginf_index_builder,
    doc_id: u64,
    features: *const f32,
    n: usize,
    labels: *const u32,
) -> seginf_status {
    guard(|| {
        let b = unsafe { borrow_mut(builder, "builder") }?;
        let d = b.builder.crf().feature_dim();
        let (features, labels) = unsafe { labelled_view(features, labels, n, d) }?;
        add_all(
            b,
            &[TrainingSequence {
                doc_id,
                features,
                labels,
            }],
        )
    })
}

/// Adds `num_seqs` sequences stored back to back: sequence i has seq_lengths[i] tokens, id
/// doc_ids[i]; `features` holds sum(seq_lengths) x d floats and `labels` sum(seq_lengths)
/// labels. Progress is reported after each sequence. On any error or a cancel, none of the
/// batch is added; num_seqs = 0 adds nothing and succeeds. Errors: as
/// seginf_index_builder_add.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_add_batch(
    builder: *mut seginf_index_builder,
    doc_ids: *const u64,
    features: *const f32,
    labels: *const u32,
    seq_lengths: *const usize,
    num_seqs: usize,
) -> seginf_status {
    guard(|| {
        let b = unsafe { borrow_mut(builder, "builder") }?;
        let d = b.builder.crf().feature_dim();
        let ids = unsafe { slice(doc_ids, num_seqs, "doc_ids") }?;
        let lengths = unsafe { slice(seq_lengths, num_seqs, "seq_lengths") }?;
        let sequences = unsafe { back_to_back(features, labels, lengths, d) }?;
        let batch: Vec<TrainingSequence> = ids
            .iter()
            .zip(sequences)
            .map(|(&doc_id, (features, labels))| TrainingSequence {
                doc_id,
                features,
                labels,
            })
            .collect();
        add_all(b, &batch)
    })
}

/// Tokens added so far (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_num_tokens(
    builder: *const seginf_index_builder,
) -> usize {
    guard_value(0, || {
        unsafe { builder.as_ref() }.map_or(0, |b| b.builder.num_tokens())
    })
}

/// Finishes the index into *out. The builder is consumed (freed) whenever `builder` and `out`
/// are non-NULL, on success and on error alike (a misaligned `out` included); with a NULL
/// `out` it is left untouched.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (no tokens were added, misaligned `out`).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_builder_finish(
    builder: *mut seginf_index_builder,
    out: *mut *mut seginf_index,
) -> seginf_status {
    guard(|| {
        unsafe { borrow(builder, "builder") }?;
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: non-NULL, made by seginf_index_builder_new; ownership passes to this call.
        let b = unsafe { Box::from_raw(builder) };
        out_ptr(out, "out")?;
        let index = b.builder.finish()?;
        let handle = Box::into_raw(Box::new(seginf_index {
            index: Arc::new(index),
        }));
        unsafe { write(out, handle, "out") }
    })
}

/// Writes the index to `path` as one safetensors file, atomically (temporary file in the same
/// directory, then rename): `path` is either the old file or the complete new one.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (path not UTF-8), IO.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_save(
    index: *const seginf_index,
    path: *const c_char,
) -> seginf_status {
    guard(|| {
        let index = &unsafe { borrow(index, "index") }?.index;
        let path = unsafe { c_str(path, "path") }?;
        index.save(Path::new(path)).map_err(Into::into)
    })
}

/// Opens a saved index memory-mapped, for `crf` (which must be the CRF it was built with).
/// Every header field, size, label range and a checksum of the data are validated first. Do
/// not modify the file while it is open.
/// Errors: NULL_ARGUMENT, IO, FORMAT (not an index, truncated, corrupted), MODEL_MISMATCH
/// (built for another CRF), UNSUPPORTED (a newer format version).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_open(
    path: *const c_char,
    crf: *const seginf_crf,
    out: *mut *mut seginf_index,
) -> seginf_status {
    guard(|| {
        let path = unsafe { c_str(path, "path") }?;
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        out_ptr(out, "out")?;
        let index = Index::open(Path::new(path), Arc::clone(crf))?;
        unsafe {
            write(
                out,
                Box::into_raw(Box::new(seginf_index {
                    index: Arc::new(index),
                })),
                "out",
            )
        }
    })
}

/// Frees an index handle. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_free(index: *mut seginf_index) {
    if !index.is_null() {
        // SAFETY: made by Box::into_raw in this module; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(index) }));
    }
}

/// Number of training tokens N (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_num_tokens(index: *const seginf_index) -> usize {
    guard_value(0, || {
        unsafe { index.as_ref() }.map_or(0, |i| i.index.num_tokens())
    })
}

/// Bytes held by the index's i16 ranking copy (see seginf_query_set_ranking_copy): 0 before
/// the first batch (or, with AMX, f16 entity query of 4–8 tokens) that builds it, for int8
/// indexes, on CPUs without the integer kernels, when the copy would be too coarse to help or
/// cannot be allocated (the batches then rank with the f32 sgemm), and for NULL.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_ranking_copy_bytes(index: *const seginf_index) -> usize {
    guard_value(0, || {
        unsafe { index.as_ref() }.map_or(0, |i| i.index.ranking_copy_bytes())
    })
}

/// Number of training sequences S (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_num_sequences(index: *const seginf_index) -> usize {
    guard_value(0, || {
        unsafe { index.as_ref() }.map_or(0, |i| i.index.num_sequences())
    })
}

/// The storage type (a seginf_storage), or -1 for NULL.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_storage(index: *const seginf_index) -> i32 {
    guard_value(-1, || {
        unsafe { index.as_ref() }.map_or(-1, |i| match i.index.storage() {
            Storage::F32 => seginf_storage::SEGINF_STORAGE_F32 as i32,
            Storage::F16 => seginf_storage::SEGINF_STORAGE_F16 as i32,
            Storage::Int8 => seginf_storage::SEGINF_STORAGE_INT8 as i32,
        })
    })
}

/// Copies one per-token statistic (a seginf_token_stat) of every training token, in index
/// order, into `out` (`len` doubles; `len` must equal seginf_index_num_tokens).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown stat), DIMENSION_MISMATCH.
#[no_mangle]
pub unsafe extern "C" fn seginf_index_token_stats(
    index: *const seginf_index,
    stat: i32,
    out: *mut f64,
    len: usize,
) -> seginf_status {
    guard(|| {
        let index = &unsafe { borrow(index, "index") }?.index;
        out_ptr(out, "out")?;
        use seginf_token_stat::*;
        let all = [
            SEGINF_TOKEN_LOSS,
            SEGINF_TOKEN_ENTROPY,
            SEGINF_TOKEN_GRAD_NORM,
        ];
        let values = match from_code(stat, &all.map(|s| (s as i32, s)), "seginf_token_stat")? {
            SEGINF_TOKEN_LOSS => index.token_losses(),
            SEGINF_TOKEN_ENTROPY => index.token_entropies(),
            SEGINF_TOKEN_GRAD_NORM => index.token_grad_norms(),
        };
        if len != values.len() {
            return Err(Error::DimensionMismatch(format!(
                "len = {len} but the index has {} tokens",
                values.len()
            ))
            .into());
        }
        unsafe { write_slice(out, values, "out") }
    })
}

/// The caller ids and label of training token `k` (0 <= k < N): doc_id, position in its
/// sequence, gold label. Any output pointer may be NULL. Errors: NULL_ARGUMENT (index),
/// INVALID_ARGUMENT (k out of range).
#[no_mangle]
pub unsafe extern "C" fn seginf_index_token(
    index: *const seginf_index,
    k: usize,
    doc_id: *mut u64,
    position: *mut u32,
    label: *mut u32,
) -> seginf_status {
    guard(|| {
        let index = &unsafe { borrow(index, "index") }?.index;
        if k >= index.num_tokens() {
            return Err(
                Error::InvalidArgument(format!("token {k} of {}", index.num_tokens())).into(),
            );
        }
        let (doc, pos) = index.token_id(k);
        let label_k = index.token_label(k);
        // Check every given pointer before writing any (outputs only on success).
        if !doc_id.is_null() {
            out_ptr(doc_id, "doc_id")?;
        }
        if !position.is_null() {
            out_ptr(position, "position")?;
        }
        if !label.is_null() {
            out_ptr(label, "label")?;
        }
        if !doc_id.is_null() {
            unsafe { write(doc_id, doc, "doc_id") }?;
        }
        if !position.is_null() {
            unsafe { write(position, pos, "position") }?;
        }
        if !label.is_null() {
            unsafe { write(label, label_k, "label") }?;
        }
        Ok(())
    })
}
