//! C ABI for the CRF handle (`seginf_crf`) and its loader options.

use std::ffi::{c_char, CStr};
use std::path::Path;
use std::sync::Arc;

use super::boundary::*;
use crate::crf::{ConstraintMask, Crf, LoadOptions, TagScheme};
use crate::error::Error;

/// A linear-chain CRF (DESIGN.md section 1). Immutable once made: any number of threads may
/// use one handle at once. Made by seginf_crf_new, seginf_crf_load_safetensors or
/// seginf_crf_with_constraints; freed by seginf_crf_free.
pub struct seginf_crf {
    pub(crate) crf: Arc<Crf>,
}

/// Options for seginf_crf_load_safetensors (tensor names, transition layout). Made by
/// seginf_load_options_new, freed by seginf_load_options_free. Not for concurrent mutation.
pub struct seginf_load_options {
    options: LoadOptions,
}

/// The parameter blocks of a CRF, in the order of the dense parameter/gradient vector:
/// W (C x d, row-major), b (C), A (C x C, [from*C + to]), s (C), e (C); b, s, e only when present.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_param {
    SEGINF_PARAM_WEIGHT = 0,
    SEGINF_PARAM_BIAS = 1,
    SEGINF_PARAM_TRANSITIONS = 2,
    SEGINF_PARAM_START = 3,
    SEGINF_PARAM_END = 4,
}

/// Tagging schemes understood by seginf_constraint_mask (passed as int32_t).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum seginf_tag_scheme {
    /// BIO / IOB2: I-X only after B-X or I-X; no I-X at the start.
    SEGINF_TAG_SCHEME_BIO = 0,
    /// IOB1: B-X only after B-X or I-X (it separates adjacent same-type entities).
    SEGINF_TAG_SCHEME_IOB1 = 1,
    /// BIOES (BILOU accepted): spans open with B-, continue with I-, close with E-; S- alone.
    SEGINF_TAG_SCHEME_BIOES = 2,
}

fn param_from(value: i32) -> FfiResult<seginf_param> {
    use seginf_param::*;
    let all = [
        SEGINF_PARAM_WEIGHT,
        SEGINF_PARAM_BIAS,
        SEGINF_PARAM_TRANSITIONS,
        SEGINF_PARAM_START,
        SEGINF_PARAM_END,
    ];
    from_code(value, &all.map(|p| (p as i32, p)), "seginf_param")
}

fn scheme_from(value: i32) -> FfiResult<TagScheme> {
    use seginf_tag_scheme::*;
    let table = [
        (SEGINF_TAG_SCHEME_BIO as i32, TagScheme::Bio),
        (SEGINF_TAG_SCHEME_IOB1 as i32, TagScheme::Iob1),
        (SEGINF_TAG_SCHEME_BIOES as i32, TagScheme::Bioes),
    ];
    from_code(value, &table, "seginf_tag_scheme")
}

pub(crate) unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> FfiResult<&'a str> {
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL; the header documents a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Error::InvalidArgument(format!("`{what}` is not valid UTF-8")).into())
}

/// Hands a new CRF to the caller through `out`.
unsafe fn give(out: *mut *mut seginf_crf, crf: Crf) -> FfiResult<()> {
    let handle = Box::into_raw(Box::new(seginf_crf { crf: Arc::new(crf) }));
    unsafe { write(out, handle, "out") }
}

/// Makes a CRF from caller arrays (copied; the caller keeps ownership of its buffers).
/// weights: num_labels x feature_dim; bias, start, end: num_labels each, or NULL for "none";
/// transitions: num_labels x num_labels, [from*C + to]. -INFINITY is allowed in transitions,
/// start and end (forbidden); weights and bias must be finite.
/// On success *out holds a handle to free with seginf_crf_free.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a zero dimension), NON_FINITE.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_new(
    num_labels: usize,
    feature_dim: usize,
    weights: *const f32,
    bias: *const f32,
    transitions: *const f32,
    start: *const f32,
    end: *const f32,
    out: *mut *mut seginf_crf,
) -> seginf_status {
    guard(|| {
        out_ptr(out, "out")?;
        let c = num_labels;
        let w = unsafe { slice(weights, product(c, feature_dim, "weights")?, "weights") }?;
        let a = unsafe { slice(transitions, product(c, c, "transitions")?, "transitions") }?;
        let b = unsafe { optional_slice(bias, c, "bias") }?;
        let s = unsafe { optional_slice(start, c, "start") }?;
        let e = unsafe { optional_slice(end, c, "end") }?;
        let crf = Crf::from_f32(c, feature_dim, w, b, a, s, e)?;
        unsafe { give(out, crf) }
    })
}

/// Loads a CRF from a safetensors file. `opts` may be NULL for the defaults: pytorch-crf names
/// `transitions`, `start_transitions`, `end_transitions` plus a linear layer `weight` (C x d)
/// and `bias`; F32, F64, F16 and BF16 tensors are read.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (path not UTF-8, a zero dimension), IO, FORMAT
/// (missing tensor, bad file), DIMENSION_MISMATCH, NON_FINITE, UNSUPPORTED (dtype).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_load_safetensors(
    path: *const c_char,
    opts: *const seginf_load_options,
    out: *mut *mut seginf_crf,
) -> seginf_status {
    guard(|| {
        out_ptr(out, "out")?;
        let path = unsafe { c_str(path, "path") }?;
        let defaults = LoadOptions::default();
        // SAFETY: a non-NULL `opts` is a handle from seginf_load_options_new.
        let options = unsafe { opts.as_ref() }.map_or(&defaults, |o| &o.options);
        let crf = Crf::load_safetensors(Path::new(path), options)?;
        unsafe { give(out, crf) }
    })
}

/// Frees a CRF handle. Indexes made from it keep their own reference. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_free(crf: *mut seginf_crf) {
    if !crf.is_null() {
        // SAFETY: made by Box::into_raw in `give`; the caller frees each handle once.
        guard_value((), || drop(unsafe { Box::from_raw(crf) }));
    }
}

/// Number of labels C (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_num_labels(crf: *const seginf_crf) -> usize {
    guard_value(0, || {
        unsafe { crf.as_ref() }.map_or(0, |h| h.crf.num_labels())
    })
}

/// Feature dimension d (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_feature_dim(crf: *const seginf_crf) -> usize {
    guard_value(0, || {
        unsafe { crf.as_ref() }.map_or(0, |h| h.crf.feature_dim())
    })
}

/// Number of parameters C*d + C*C + C for each of b, s, e present: the length of the vectors
/// of seginf_crf_get_params and seginf_crf_segment_gradient (0 for a NULL handle).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_num_params(crf: *const seginf_crf) -> usize {
    guard_value(0, || {
        unsafe { crf.as_ref() }.map_or(0, |h| h.crf.num_params())
    })
}

/// Where block `param` (a seginf_param) starts in the dense parameter vector; SIZE_MAX when the
/// model does not have that block (b, s or e absent).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown param).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_param_offset(
    crf: *const seginf_crf,
    param: i32,
    offset_out: *mut usize,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        out_ptr(offset_out, "offset_out")?;
        let layout = crf.layout();
        use seginf_param::*;
        let offset = match param_from(param)? {
            SEGINF_PARAM_WEIGHT => Some(layout.weights),
            SEGINF_PARAM_BIAS => layout.bias,
            SEGINF_PARAM_TRANSITIONS => Some(layout.transitions),
            SEGINF_PARAM_START => layout.start,
            SEGINF_PARAM_END => layout.end,
        };
        unsafe { write(offset_out, offset.unwrap_or(usize::MAX), "offset_out") }
    })
}

/// Copies all parameters (f64, -inf included) into `out`, which holds `len` doubles; `len`
/// must equal seginf_crf_num_params. Errors: NULL_ARGUMENT, DIMENSION_MISMATCH.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_get_params(
    crf: *const seginf_crf,
    out: *mut f64,
    len: usize,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        out_ptr(out, "out")?;
        if len != crf.num_params() {
            return Err(Error::DimensionMismatch(format!(
                "len = {len} but the CRF has {} parameters",
                crf.num_params()
            ))
            .into());
        }
        unsafe { write_slice(out, &crf.params(), "out") }
    })
}

/// Most likely labelling y* = argmax_y p(y|x) (ties to the smaller label). features: n x d;
/// labels_out: n; score_out (may be NULL): S(y*), the unnormalised path score.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (n = 0), NON_FINITE, IMPOSSIBLE_LABELS (the
/// constraints allow no labelling).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_viterbi(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels_out: *mut u32,
    score_out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let x = unsafe { features_view(features, n, crf.feature_dim()) }?;
        out_ptr(labels_out, "labels_out")?;
        if !score_out.is_null() {
            out_ptr(score_out, "score_out")?;
        }
        let (path, score) = crf.viterbi(x)?;
        unsafe { write_slice(labels_out, &path, "labels_out") }?;
        match score_out.is_null() {
            true => Ok(()),
            false => unsafe { write(score_out, score, "score_out") },
        }
    })
}

/// log p(y|x) = S(y) - log Z(x); -INFINITY when `labels` use a forbidden transition.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE, LABEL_OUT_OF_RANGE,
/// IMPOSSIBLE_LABELS (no labelling allowed at all).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_log_likelihood(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels: *const u32,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let (x, y) = unsafe { labelled_view(features, labels, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let value = crf.log_likelihood(x, y)?;
        unsafe { write(out, value, "out") }
    })
}

/// log Z(x); -INFINITY when the constraints allow no labelling of length n.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_log_partition(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let x = unsafe { features_view(features, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let value = crf.log_partition(x)?;
        unsafe { write(out, value, "out") }
    })
}

/// Token marginals p(y_t = j | x) into `out` (n x C, row-major).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE, IMPOSSIBLE_LABELS.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_marginals(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let x = unsafe { features_view(features, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let m = crf.marginals(x)?;
        unsafe { write_slice(out, &m.unary.iter().copied().collect::<Vec<_>>(), "out") }
    })
}

/// Pairwise marginals p(y_{t-1} = i, y_t = j | x) into `out` ((n-1) x C x C, [(t-1)*C*C +
/// i*C + j]); nothing is written when n = 1.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE, IMPOSSIBLE_LABELS.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_pairwise_marginals(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let x = unsafe { features_view(features, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let m = crf.marginals(x)?;
        unsafe { write_slice(out, &m.pairwise.iter().copied().collect::<Vec<_>>(), "out") }
    })
}

/// Conditional loss CL(first, last) = -log p(y_first..y_last | y outside, x), for any segment
/// 0 <= first <= last < n (inclusive). +INFINITY when `labels` are impossible under the
/// constraints. CL(0, n-1) = -log p(y|x).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, NON_FINITE, LABEL_OUT_OF_RANGE, BAD_SEGMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_segment_loss(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let (x, y) = unsafe { labelled_view(features, labels, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let loss = crf.segment_loss(x, y, first, last)?;
        unsafe { write(out, loss, "out") }
    })
}

/// Segment-conditional marginals q_t[j] = p(y_t = j | y outside [first, last], x) for
/// t = first..last, into `out` ((last-first+1) x C).
/// Errors: as seginf_crf_segment_loss, plus IMPOSSIBLE_LABELS.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_segment_marginals(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let (x, y) = unsafe { labelled_view(features, labels, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let q = crf.segment_marginals(x, y, first, last)?;
        unsafe { write_slice(out, &q.unary.iter().copied().collect::<Vec<_>>(), "out") }
    })
}

/// The error vectors r_t = q_t - onehot(y_t) of CL(first, last) (the factored form of its
/// emission gradient: grad_W = sum_t r_t (x) f_t), into `out` ((last-first+1) x C).
/// Errors: as seginf_crf_segment_marginals.
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_segment_error_vectors(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let (x, y) = unsafe { labelled_view(features, labels, n, crf.feature_dim()) }?;
        out_ptr(out, "out")?;
        let g = crf.segment_gradient(x, y, first, last)?;
        let r: Vec<f64> = g.error_vectors.iter().copied().collect();
        unsafe { write_slice(out, &r, "out") }
    })
}

/// Gradient of CL(first, last) over all parameters, as a dense vector of
/// seginf_crf_num_params doubles in the order W (row-major), b, A (row-major), s, e (absent
/// blocks skipped; see seginf_crf_param_offset). With first = 0, last = n-1 this is the
/// gradient of the whole-sequence NLL.
/// Errors: as seginf_crf_segment_loss, plus IMPOSSIBLE_LABELS (the loss is +inf).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_segment_gradient(
    crf: *const seginf_crf,
    features: *const f32,
    n: usize,
    labels: *const u32,
    first: usize,
    last: usize,
    grad_out: *mut f64,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let (x, y) = unsafe { labelled_view(features, labels, n, crf.feature_dim()) }?;
        out_ptr(grad_out, "grad_out")?;
        let g = crf.segment_gradient_dense(x, y, first, last)?;
        unsafe { write_slice(grad_out, &g, "grad_out") }
    })
}

/// The label names of a tagging scheme as a Rust vector.
unsafe fn label_names(names: *const *const c_char, num_labels: usize) -> FfiResult<Vec<String>> {
    let ptrs = unsafe { slice(names, num_labels, "label_names") }?;
    ptrs.iter()
        .enumerate()
        .map(|(i, &p)| unsafe { c_str(p, &format!("label_names[{i}]")) }.map(str::to_owned))
        .collect()
}

/// Which transitions, start and end labels `scheme` (a seginf_tag_scheme) allows for labels
/// named like "O", "B-PER", "I-PER" (num_labels C-strings). Writes 1 (allowed) or 0 into
/// allowed_transitions (C x C, [from*C + to]), allowed_start (C) and allowed_end (C).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown scheme or a name the scheme rejects).
#[no_mangle]
pub unsafe extern "C" fn seginf_constraint_mask(
    scheme: i32,
    label_names: *const *const c_char,
    num_labels: usize,
    allowed_transitions: *mut u8,
    allowed_start: *mut u8,
    allowed_end: *mut u8,
) -> seginf_status {
    guard(|| {
        let scheme = scheme_from(scheme)?;
        let names = unsafe { self::label_names(label_names, num_labels) }?;
        out_ptr(allowed_transitions, "allowed_transitions")?;
        out_ptr(allowed_start, "allowed_start")?;
        out_ptr(allowed_end, "allowed_end")?;
        let mask = ConstraintMask::from_labels(scheme, &names)?;
        let c = num_labels;
        let flags =
            |f: &dyn Fn(usize) -> bool, len| (0..len).map(|i| f(i) as u8).collect::<Vec<_>>();
        let trans = flags(&|k| mask.transition_allowed(k / c, k % c), c * c);
        unsafe { write_slice(allowed_transitions, &trans, "allowed_transitions") }?;
        unsafe {
            write_slice(
                allowed_start,
                &flags(&|j| mask.start_allowed(j), c),
                "allowed_start",
            )
        }?;
        unsafe {
            write_slice(
                allowed_end,
                &flags(&|j| mask.end_allowed(j), c),
                "allowed_end",
            )
        }
    })
}

/// A new CRF equal to `crf` with -INFINITY wherever `scheme` forbids a transition, start or
/// end label (label_names: C C-strings). Start/end vectors are added (zeros) when the model
/// had none and the scheme restricts them, which changes seginf_crf_num_params.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, DIMENSION_MISMATCH (num_labels != C).
#[no_mangle]
pub unsafe extern "C" fn seginf_crf_with_constraints(
    crf: *const seginf_crf,
    scheme: i32,
    label_names: *const *const c_char,
    num_labels: usize,
    out: *mut *mut seginf_crf,
) -> seginf_status {
    guard(|| {
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        let scheme = scheme_from(scheme)?;
        let names = unsafe { self::label_names(label_names, num_labels) }?;
        out_ptr(out, "out")?;
        let constrained = crf.with_constraints(&ConstraintMask::from_labels(scheme, &names)?)?;
        unsafe { give(out, constrained) }
    })
}

/// New loader options with the defaults (see seginf_crf_load_safetensors), into *out; free
/// with seginf_load_options_free. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_load_options_new(
    out: *mut *mut seginf_load_options,
) -> seginf_status {
    guard(|| {
        out_ptr(out, "out")?;
        let handle = Box::into_raw(Box::new(seginf_load_options {
            options: LoadOptions::default(),
        }));
        unsafe { write(out, handle, "out") }
    })
}

/// Frees loader options. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_load_options_free(opts: *mut seginf_load_options) {
    if !opts.is_null() {
        // SAFETY: made by Box::into_raw in seginf_load_options_new; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(opts) }));
    }
}

/// Sets the tensor name of block `param` (a seginf_param), copied. "" means "never load" for
/// the optional blocks (bias, start, end); weight and transitions are always required.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (unknown param, non-UTF-8 name, "" for a required
/// block).
#[no_mangle]
pub unsafe extern "C" fn seginf_load_options_set_tensor_name(
    opts: *mut seginf_load_options,
    param: i32,
    name: *const c_char,
) -> seginf_status {
    guard(|| {
        let opts = unsafe { borrow_mut(opts, "opts") }?;
        let param = param_from(param)?;
        let name = unsafe { c_str(name, "name") }?.to_owned();
        use seginf_param::*;
        if name.is_empty() && matches!(param, SEGINF_PARAM_WEIGHT | SEGINF_PARAM_TRANSITIONS) {
            return Err(Error::InvalidArgument(format!(
                "{param:?} is required; its name cannot be empty"
            ))
            .into());
        }
        let o = &mut opts.options;
        let slot = match param {
            SEGINF_PARAM_WEIGHT => &mut o.weight,
            SEGINF_PARAM_BIAS => &mut o.bias,
            SEGINF_PARAM_TRANSITIONS => &mut o.transitions,
            SEGINF_PARAM_START => &mut o.start,
            SEGINF_PARAM_END => &mut o.end,
        };
        *slot = name;
        Ok(())
    })
}

/// Nonzero: the file stores transitions as [to][from] (flair, torch-struct) and seginf
/// transposes them on load. Zero (default): [from][to] (pytorch-crf, AllenNLP).
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_load_options_set_transitions_to_from(
    opts: *mut seginf_load_options,
    to_from: i32,
) -> seginf_status {
    guard(|| {
        unsafe { borrow_mut(opts, "opts") }?
            .options
            .transitions_to_from = to_from != 0;
        Ok(())
    })
}
