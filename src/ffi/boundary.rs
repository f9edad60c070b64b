//! Status codes, the panic guard, the thread-local last error, and pointer checks.

use std::cell::RefCell;
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::ArrayView2;

use crate::error::Error;

/// Result of every fallible call. Values are part of the ABI: they are never renumbered or
/// reused (a retired code stays listed here as a comment).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_status {
    SEGINF_OK = 0,
    /// A required pointer argument was NULL.
    SEGINF_ERR_NULL_ARGUMENT = -1,
    /// An argument has a value the call cannot accept (n = 0, a misaligned pointer, ...).
    SEGINF_ERR_INVALID_ARGUMENT = -2,
    /// Sizes disagree (feature_dim, buffer lengths, tensor shapes).
    SEGINF_ERR_DIMENSION_MISMATCH = -3,
    /// A label is >= num_labels.
    SEGINF_ERR_LABEL_OUT_OF_RANGE = -4,
    /// A segment [first, last] is not 0 <= first <= last < n.
    SEGINF_ERR_BAD_SEGMENT = -5,
    /// NaN or infinity in features or weights (or +inf/NaN in transitions, start, end).
    SEGINF_ERR_NON_FINITE = -6,
    /// The gold labels (or every labelling) are impossible under the -inf constraints.
    SEGINF_ERR_IMPOSSIBLE_LABELS = -7,
    /// A file could not be read or written.
    SEGINF_ERR_IO = -8,
    /// A file is not in the expected format.
    SEGINF_ERR_FORMAT = -9,
    /// An index or file was built for a different CRF.
    SEGINF_ERR_MODEL_MISMATCH = -10,
    /// A valid request that this build does not support (e.g. a tensor dtype).
    SEGINF_ERR_UNSUPPORTED = -11,
    /// A progress callback asked to stop.
    SEGINF_ERR_CANCELLED = -12,
    /// A bug in seginf was caught at the boundary; the handle arguments are unchanged.
    SEGINF_ERR_PANIC = -13,
    /// An iterative solver (training, conjugate gradient) stopped short of its tolerance.
    SEGINF_ERR_NOT_CONVERGED = -14,
}

use seginf_status::*;

/// An error on its way out through the C ABI.
pub(crate) struct FfiError {
    status: seginf_status,
    message: String,
}

pub(crate) type FfiResult<T> = Result<T, FfiError>;

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument(_) => SEGINF_ERR_INVALID_ARGUMENT,
            Error::DimensionMismatch(_) => SEGINF_ERR_DIMENSION_MISMATCH,
            Error::LabelOutOfRange(_) => SEGINF_ERR_LABEL_OUT_OF_RANGE,
            Error::BadSegment(_) => SEGINF_ERR_BAD_SEGMENT,
            Error::NonFinite(_) => SEGINF_ERR_NON_FINITE,
            Error::ImpossibleLabels(_) => SEGINF_ERR_IMPOSSIBLE_LABELS,
            Error::Io(_) => SEGINF_ERR_IO,
            Error::Format(_) => SEGINF_ERR_FORMAT,
            Error::ModelMismatch(_) => SEGINF_ERR_MODEL_MISMATCH,
            Error::Unsupported(_) => SEGINF_ERR_UNSUPPORTED,
            Error::Cancelled(_) => SEGINF_ERR_CANCELLED,
            Error::NotConverged(_) => SEGINF_ERR_NOT_CONVERGED,
        };
        FfiError {
            status,
            message: e.to_string(),
        }
    }
}

pub(crate) fn null(what: &str) -> FfiError {
    FfiError {
        status: SEGINF_ERR_NULL_ARGUMENT,
        message: format!("`{what}` is NULL"),
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|m| *m.borrow_mut() = message);
}

/// Runs one entry point: catches panics, maps errors to a status and records the message.
pub(crate) fn guard(body: impl FnOnce() -> FfiResult<()>) -> seginf_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SEGINF_OK,
        Ok(Err(e)) => {
            set_last_error(e.message);
            e.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error (please report): {what}"));
            SEGINF_ERR_PANIC
        }
    }
}

/// Like [`guard`] for functions that cannot report a status (getters, `_free`): a panic
/// yields `fallback` instead of unwinding into C.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// `&T` from a handle pointer, or `SEGINF_ERR_NULL_ARGUMENT` naming it.
pub(crate) unsafe fn borrow<'a, T>(ptr: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: the caller passes a handle made by this library (documented in the header).
    unsafe { ptr.as_ref() }.ok_or_else(|| null(what))
}

fn check_pointer<T>(ptr: *const T, len: usize, what: &str) -> FfiResult<()> {
    if ptr.is_null() {
        return Err(null(what));
    }
    if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return Err(Error::InvalidArgument(format!("`{what}` is not aligned for its type")).into());
    }
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::InvalidArgument(format!("`{what}` length {len} is too large")).into());
    }
    Ok(())
}

/// `&mut T` from a handle the caller lets this call mutate (one thread at a time).
pub(crate) unsafe fn borrow_mut<'a, T>(ptr: *mut T, what: &str) -> FfiResult<&'a mut T> {
    // SAFETY: the caller passes a handle made by this library, used by one thread at a time.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(what))
}

/// A caller array of `len` elements as a slice (NULL, misalignment and overflow checked).
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> FfiResult<&'a [T]> {
    check_pointer(ptr, len, what)?;
    // SAFETY: non-NULL and aligned, checked above; the header documents that `ptr` holds `len`
    // readable elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Like [`slice`], but NULL means "absent" (optional arrays such as `bias`).
pub(crate) unsafe fn optional_slice<'a, T>(
    ptr: *const T,
    len: usize,
    what: &str,
) -> FfiResult<Option<&'a [T]>> {
    match ptr.is_null() {
        true => Ok(None),
        false => unsafe { slice(ptr, len, what) }.map(Some),
    }
}

/// Copies `values` into a caller buffer of exactly `values.len()` elements.
pub(crate) unsafe fn write_slice<T: Copy>(ptr: *mut T, values: &[T], what: &str) -> FfiResult<()> {
    check_pointer(ptr as *const T, values.len(), what)?;
    // SAFETY: non-NULL and aligned, checked above; the header documents the buffer's length.
    unsafe { std::slice::from_raw_parts_mut(ptr, values.len()) }.copy_from_slice(values);
    Ok(())
}

/// Checks an output pointer before any work is done, so bad calls fail fast.
pub(crate) fn out_ptr<T>(ptr: *mut T, what: &str) -> FfiResult<()> {
    check_pointer(ptr as *const T, 1, what)
}

/// Writes one value through a checked output pointer.
pub(crate) unsafe fn write<T>(ptr: *mut T, value: T, what: &str) -> FfiResult<()> {
    out_ptr(ptr, what)?;
    // SAFETY: non-NULL and aligned, checked above.
    unsafe { ptr.write(value) };
    Ok(())
}

/// `a * b` for buffer sizes, as an error instead of an overflow.
pub(crate) fn product(a: usize, b: usize, what: &str) -> FfiResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| Error::InvalidArgument(format!("{what}: {a} x {b} overflows")).into())
}

/// `features` (n × d, row-major) of one sequence as a view.
pub(crate) unsafe fn features_view<'a>(
    features: *const f32,
    n: usize,
    d: usize,
) -> FfiResult<ArrayView2<'a, f32>> {
    let x = unsafe { slice(features, product(n, d, "features n x d")?, "features") }?;
    ArrayView2::from_shape((n, d), x)
        .map_err(|e| Error::InvalidArgument(format!("features: {e}")).into())
}

/// Features (n × d) and labels (n) of one sequence.
pub(crate) unsafe fn labelled_view<'a>(
    features: *const f32,
    labels: *const u32,
    n: usize,
    d: usize,
) -> FfiResult<(ArrayView2<'a, f32>, &'a [u32])> {
    let x = unsafe { features_view(features, n, d) }?;
    Ok((x, unsafe { slice(labels, n, "labels") }?))
}

/// Sequences stored back to back (`lengths[i]` tokens each) as (features, labels) views.
pub(crate) unsafe fn back_to_back<'a>(
    features: *const f32,
    labels: *const u32,
    lengths: &[usize],
    d: usize,
) -> FfiResult<Vec<(ArrayView2<'a, f32>, &'a [u32])>> {
    let total = total_length(lengths)?;
    let (x, y) = unsafe { labelled_view(features, labels, total, d) }?;
    let mut out = Vec::with_capacity(lengths.len());
    let mut at = 0;
    for &n in lengths {
        out.push((x.slice_move(ndarray::s![at..at + n, ..]), &y[at..at + n]));
        at += n;
    }
    Ok(out)
}

/// Decodes an int32_t enum argument through its table, or INVALID_ARGUMENT naming the type.
pub(crate) fn from_code<T: Copy>(value: i32, table: &[(i32, T)], type_name: &str) -> FfiResult<T> {
    table
        .iter()
        .find(|(code, _)| *code == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| Error::InvalidArgument(format!("{value} is not a {type_name}")).into())
}

/// The sum of sequence lengths of a batch, as an error instead of an overflow.
pub(crate) fn total_length(lengths: &[usize]) -> FfiResult<usize> {
    lengths
        .iter()
        .try_fold(0usize, |sum, n| sum.checked_add(*n))
        .ok_or_else(|| Error::InvalidArgument("seq_lengths add up past SIZE_MAX".into()).into())
}

/// The library version, e.g. "0.1.0" (static string; do not free). Equals
/// SEGINF_VERSION_MAJOR.MINOR.PATCH of the header the caller compiled against when the two
/// match.
#[no_mangle]
pub extern "C" fn seginf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// 1 when this process runs the Intel AMX tile kernels (a CPU with AMX-INT8, Linux granting
/// the tile state, SEGINF_AMX not "off"), else 0: then an int8 index's entity queries of 5–8
/// tokens, an f16 index's of 4–8 (feature dimension a multiple of 64) and the batches' integer GEMM
/// multiply in the tiles. Results are identical either way. The first call (or the first query
/// that could use the tiles) asks Linux for the tile state: from then on Linux refuses
/// alternate signal stacks (sigaltstack) too small for the AMX signal frame, and if one that
/// is too small is installed already the request fails and this is 0 (the other kernels
/// serve).
#[no_mangle]
pub extern "C" fn seginf_tiles_available() -> c_int {
    c_int::from(crate::tiles_available())
}

/// A short constant name for a status, e.g. "SEGINF_ERR_BAD_SEGMENT" (static; do not free).
/// Unknown values give "SEGINF_UNKNOWN_STATUS".
#[no_mangle]
pub extern "C" fn seginf_status_name(status: i32) -> *const c_char {
    let name: &'static str = match status {
        0 => "SEGINF_OK\0",
        -1 => "SEGINF_ERR_NULL_ARGUMENT\0",
        -2 => "SEGINF_ERR_INVALID_ARGUMENT\0",
        -3 => "SEGINF_ERR_DIMENSION_MISMATCH\0",
        -4 => "SEGINF_ERR_LABEL_OUT_OF_RANGE\0",
        -5 => "SEGINF_ERR_BAD_SEGMENT\0",
        -6 => "SEGINF_ERR_NON_FINITE\0",
        -7 => "SEGINF_ERR_IMPOSSIBLE_LABELS\0",
        -8 => "SEGINF_ERR_IO\0",
        -9 => "SEGINF_ERR_FORMAT\0",
        -10 => "SEGINF_ERR_MODEL_MISMATCH\0",
        -11 => "SEGINF_ERR_UNSUPPORTED\0",
        -12 => "SEGINF_ERR_CANCELLED\0",
        -13 => "SEGINF_ERR_PANIC\0",
        -14 => "SEGINF_ERR_NOT_CONVERGED\0",
        _ => "SEGINF_UNKNOWN_STATUS\0",
    };
    name.as_ptr().cast()
}

/// Copies the message of the last failed call on this thread into `buf` (NUL-terminated,
/// truncated to `len - 1` bytes, snprintf-style) and stores the message's full length in
/// `*written` (may be NULL). `buf` may be NULL only when `len` is 0 (to ask for the length).
/// The message is "" when no call on this thread has failed. Read it right after the failing
/// call, on the same thread (JNI shims included).
/// Returns SEGINF_OK, or SEGINF_ERR_NULL_ARGUMENT when `buf` is NULL and `len` > 0.
#[no_mangle]
pub unsafe extern "C" fn seginf_last_error_message(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> seginf_status {
    // Not through `guard`: reporting must not overwrite the message it reports.
    let message = LAST_ERROR.with(|m| m.borrow().clone());
    if buf.is_null() && len > 0 {
        return SEGINF_ERR_NULL_ARGUMENT;
    }
    if len > 0 {
        let mut take = message.len().min(len - 1);
        while !message.is_char_boundary(take) {
            take -= 1;
        }
        // SAFETY: `buf` is non-NULL and, per the header, holds `len` bytes; take + 1 <= len.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), take + 1) };
        out[..take].copy_from_slice(&message.as_bytes()[..take]);
        out[take] = 0;
    }
    if !written.is_null() {
        // SAFETY: non-NULL; the header documents it as a size_t to write.
        unsafe { written.write_unaligned(message.len()) };
    }
    SEGINF_OK
}
