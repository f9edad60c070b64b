//! C ABI for training (`seginf_trainer_*`), fitted curvatures for the non-identity Hessian
//! modes (`seginf_curvature_*`) and exact influence by retraining (`seginf_exact_influence`).

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::boundary::*;
use super::crf::{c_str, seginf_crf};
use super::query::seginf_hessian;
use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::hessian::{ExactInverse, Factored, KroneckerInverse};
use crate::influence::{exact_influence_with_progress, TrainingSegment};
use crate::query::{InverseHessian, TestSegment};
use crate::train::{sequence_nll, train, TrainOptions, TrainSeq};

/// Training progress callback: after L-BFGS step `iteration` (counted from 1), the objective
/// `mean NLL + (l2/2)|theta|^2` and the largest absolute gradient entry. Return non-zero to
/// cancel training (seginf_trainer_run or seginf_exact_influence's retraining then returns
/// SEGINF_ERR_CANCELLED). Called on the thread that called seginf_trainer_run or
/// seginf_exact_influence.
pub type seginf_train_progress_fn = Option<
    unsafe extern "C" fn(
        iteration: u64,
        objective: f64,
        max_abs_gradient: f64,
        user: *mut c_void,
    ) -> i32,
>;

/// Training of a CRF on fixed features: a copy of the training sequences (with per-token
/// "labelled" flags), the options (l2, tolerance, iteration cap), the model to start from
/// (warm start; it fixes the shape and the -inf constraints) and a progress callback. Made by
/// seginf_trainer_new, freed by seginf_trainer_free. Calls that change it (seginf_trainer_add,
/// seginf_trainer_set_*) need it to themselves; the calls that take a const pointer
/// (seginf_trainer_run, seginf_trainer_num_sequences, seginf_curvature_fit,
/// seginf_exact_influence) only read it and may run concurrently with each other (concurrent
/// seginf_trainer_run and seginf_exact_influence calls each call the progress callback, with
/// the same `user` pointer).
pub struct seginf_trainer {
    /// The starting point of training; every sequence was checked against its shape.
    init: Arc<Crf>,
    /// Shared with the exact curvatures fitted from it; `add` copies on write.
    data: Arc<Vec<TrainSeq>>,
    options: TrainOptions,
    progress: seginf_train_progress_fn,
    user: *mut c_void,
}

impl seginf_trainer {
    /// The progress callback as the training functions take it (`None` without one): false
    /// (cancel) when the callback returns non-zero.
    fn report(&self) -> Option<impl FnMut(usize, f64, f64) -> bool> {
        let (callback, user) = (self.progress?, self.user);
        // SAFETY: the caller registered this function and its user pointer for this purpose.
        Some(move |iteration: usize, value: f64, gradient: f64| unsafe {
            callback(iteration as u64, value, gradient, user) == 0
        })
    }

    /// `run` with the progress callback as the training functions take it.
    fn with_progress<R>(
        &self,
        run: impl FnOnce(Option<&mut dyn FnMut(usize, f64, f64) -> bool>) -> R,
    ) -> R {
        let mut report = self.report();
        run(report
            .as_mut()
            .map(|f| f as &mut dyn FnMut(usize, f64, f64) -> bool))
    }
}

/// The curvature of a training objective at a trained CRF, fitted once, for the Hessian modes
/// that need the training data (K-FAC, EK-FAC, exact): applies (H + (l2 + damping) I)^-1.
/// Immutable: any number of threads may use one handle at once (queries on several threads may
/// share it). It keeps what it needs alive (for the exact mode, the trainer's training data as
/// it was when fitted). Made by seginf_curvature_fit, freed by seginf_curvature_free.
pub struct seginf_curvature {
    pub(crate) inverse: Arc<dyn InverseHessian>,
    /// Set for the exact mode, for seginf_curvature_last_solve.
    exact: Option<Arc<ExactInverse>>,
    /// Set for K-FAC/EK-FAC, for seginf_curvature_save.
    factored: Option<Arc<KroneckerInverse>>,
    /// `Crf::fingerprint` of the trained CRF it was fitted at.
    pub(crate) fingerprint: u64,
    mode: seginf_hessian,
}

/// Relative residual the exact mode's conjugate gradient solves to, and its iteration cap.
const EXACT_TOLERANCE: f64 = 1e-8;
const EXACT_MAX_ITERATIONS: usize = 10_000;

/// `H = I` (the paper's choice): the prediction of seginf_exact_influence without a curvature.
#[derive(Debug)]
struct Identity;

impl InverseHessian for Identity {
    fn apply(&self, gradient: &[f64]) -> Result<Vec<f64>> {
        Ok(gradient.to_vec())
    }
}

/// `DimensionMismatch` unless `other` has the shape of `model`: labels, features and which of
/// the bias, start and end blocks are present (its -inf entries may differ).
fn same_shape(model: &Crf, other: &Crf, what: &str) -> FfiResult<()> {
    let shape = |c: &Crf| {
        (
            c.num_labels(),
            c.feature_dim(),
            c.bias().is_some(),
            c.start().is_some(),
            c.end().is_some(),
        )
    };
    if shape(model) == shape(other) {
        return Ok(());
    }
    let describe = |c: &Crf| {
        let (labels, dim, b, s, e) = shape(c);
        format!("C = {labels}, d = {dim}, bias {b}, start {s}, end {e}")
    };
    Err(Error::DimensionMismatch(format!(
        "`{what}` has {}, the trainer's model has {}",
        describe(other),
        describe(model)
    ))
    .into())
}

/// A new trainer that starts from `init` (a warm start; the trainer keeps it alive, so the
/// caller may free its handle right after) into *out, with no sequences and the defaults: l2 = 1e-4,
/// tolerance = 1e-6, max_iterations = 1000, no progress callback. `init` fixes the shape of
/// every CRF the trainer makes (labels, features, which of bias/start/end exist) and its -inf
/// entries are constraints that stay -inf. Free with seginf_trainer_free.
/// Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_new(
    init: *const seginf_crf,
    out: *mut *mut seginf_trainer,
) -> seginf_status {
    guard(|| {
        let init = &unsafe { borrow(init, "init") }?.crf;
        out_ptr(out, "out")?;
        let trainer = seginf_trainer {
            init: Arc::clone(init),
            data: Arc::new(Vec::new()),
            // The defaults the header states, pinned here rather than taken from the core's.
            options: TrainOptions {
                l2: 1e-4,
                tolerance: 1e-6,
                max_iterations: 1000,
                ..TrainOptions::default()
            },
            progress: None,
            user: std::ptr::null_mut(),
        };
        unsafe { write(out, Box::into_raw(Box::new(trainer)), "out") }
    })
}

/// Frees a trainer. Curvatures fitted from it keep their own reference to what they need. NULL
/// is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_free(trainer: *mut seginf_trainer) {
    if !trainer.is_null() {
        // SAFETY: made by Box::into_raw in seginf_trainer_new; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(trainer) }));
    }
}

/// Adds one training sequence (copied): features n x d (finite), labels n, and `observed`: n
/// flags, non-zero = token t is labelled with labels[t], 0 = unlabelled (its label is ignored,
/// any value accepted, and marginalised out of the loss: partial-label training, paper Eq. 2).
/// `observed` = NULL means every token is labelled. A sequence with no labelled token is
/// accepted (its loss is 0; it still counts in the mean over sequences). The labelled tokens
/// must be possible under the starting model's -inf constraints. On any error nothing is added.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (n = 0), NON_FINITE, LABEL_OUT_OF_RANGE (at a
/// labelled token), IMPOSSIBLE_LABELS.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_add(
    trainer: *mut seginf_trainer,
    features: *const f32,
    n: usize,
    labels: *const u32,
    observed: *const u8,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow_mut(trainer, "trainer") }?;
        let (x, y) = unsafe { labelled_view(features, labels, n, t.init.feature_dim()) }?;
        let observed: Vec<bool> = match unsafe { optional_slice(observed, n, "observed") }? {
            Some(flags) => flags.iter().map(|&f| f != 0).collect(),
            None => vec![true; n],
        };
        // Unlabelled tokens store label 0, so no later computation can meet an unchecked label.
        let labels = y
            .iter()
            .zip(&observed)
            .map(|(&l, &o)| if o { l } else { 0 })
            .collect();
        let seq = TrainSeq {
            features: x.to_owned(),
            labels,
            observed,
        };
        // Every check training makes (shapes, values, labels, feasibility), made now.
        sequence_nll(&t.init, &seq)?;
        Arc::make_mut(&mut t.data).push(seq);
        Ok(())
    })
}

/// Number of training sequences added so far (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_num_sequences(trainer: *const seginf_trainer) -> usize {
    guard_value(0, || {
        unsafe { trainer.as_ref() }.map_or(0, |t| t.data.len())
    })
}

/// Sets l2 (lambda) of the objective `mean NLL + (l2/2)|theta|^2` (default 1e-4), finite and at
/// least 0. With every label observed, l2 > 0 makes the minimiser unique and the Hessian
/// positive definite. Curvatures and exact influence use the l2 set when they are made.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_set_l2(
    trainer: *mut seginf_trainer,
    l2: f64,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow_mut(trainer, "trainer") }?;
        if !(l2.is_finite() && l2 >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "l2 = {l2:?}, expected a finite value >= 0"
            ))
            .into());
        }
        t.options.l2 = l2;
        Ok(())
    })
}

/// Sets the convergence tolerance (default 1e-6): training stops, converged, when the largest
/// absolute gradient entry of the objective is <= tolerance. Finite and > 0.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_set_tolerance(
    trainer: *mut seginf_trainer,
    tolerance: f64,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow_mut(trainer, "trainer") }?;
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "tolerance = {tolerance:?}, expected a finite value > 0"
            ))
            .into());
        }
        t.options.tolerance = tolerance;
        Ok(())
    })
}

/// Sets the most L-BFGS steps one training run may take (default 1000); training that reaches
/// it without converging fails with NOT_CONVERGED. 0 takes no step: the run only succeeds when
/// the starting model already meets the tolerance. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_set_max_iterations(
    trainer: *mut seginf_trainer,
    max_iterations: usize,
) -> seginf_status {
    guard(|| {
        unsafe { borrow_mut(trainer, "trainer") }?
            .options
            .max_iterations = max_iterations;
        Ok(())
    })
}

/// Starts later runs from `crf` instead (a warm start, e.g. from a CRF an earlier run made;
/// kept alive by the trainer). It must have the shape of the trainer's model: the same number
/// of labels and features and the same blocks (bias, start, end) present. Its -inf entries
/// become the constraints (sequences added earlier are checked against them by the next run).
/// Errors: NULL_ARGUMENT, DIMENSION_MISMATCH.
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_set_init(
    trainer: *mut seginf_trainer,
    crf: *const seginf_crf,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow_mut(trainer, "trainer") }?;
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        same_shape(&t.init, crf, "crf")?;
        t.init = Arc::clone(crf);
        Ok(())
    })
}

/// Sets a progress callback (NULL to remove) and the pointer passed back to it; it is called
/// after every L-BFGS step of seginf_trainer_run and of seginf_exact_influence's retraining
/// (a non-zero return cancels either with CANCELLED).
/// Errors: NULL_ARGUMENT (trainer).
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_set_progress(
    trainer: *mut seginf_trainer,
    callback: seginf_train_progress_fn,
    user: *mut c_void,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow_mut(trainer, "trainer") }?;
        t.progress = callback;
        t.user = user;
        Ok(())
    })
}

/// Trains: minimises `mean partial-label NLL + (l2/2)|theta|^2` over the sequences added, by
/// full-batch L-BFGS from the starting model, over its finite parameters (-inf entries stay
/// -inf, absent blocks stay absent). The result is deterministic: the same on any number of
/// threads. On success (the largest absolute gradient entry reached the tolerance) *out holds a
/// new CRF to free with seginf_crf_free, and the optional outputs (each may be NULL) the final
/// objective, largest absolute gradient entry and number of L-BFGS steps. Nothing is written on
/// error. Does not change the trainer: to continue from the result, pass it to
/// seginf_trainer_set_init.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (no sequences added), NON_FINITE (the objective at the
/// start), IMPOSSIBLE_LABELS (labels the -inf constraints forbid, naming the sequence),
/// CANCELLED (the progress callback returned non-zero), NOT_CONVERGED (the iteration cap was
/// reached, or no step lowered the objective any more, before the tolerance: raise
/// seginf_trainer_set_max_iterations, or the tolerance).
#[no_mangle]
pub unsafe extern "C" fn seginf_trainer_run(
    trainer: *const seginf_trainer,
    out: *mut *mut seginf_crf,
    objective: *mut f64,
    max_abs_gradient: *mut f64,
    iterations: *mut usize,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow(trainer, "trainer") }?;
        out_ptr(out, "out")?;
        optional_out(objective, "objective")?;
        optional_out(max_abs_gradient, "max_abs_gradient")?;
        optional_out(iterations, "iterations")?;
        let result = t.with_progress(|progress| train(&t.init, &t.data, &t.options, progress))?;
        if !result.converged {
            return Err(not_converged(
                "training",
                result.iterations,
                Some(result.max_abs_gradient),
                &t.options,
            ));
        }
        unsafe { write_optional(objective, result.objective, "objective") }?;
        unsafe {
            write_optional(
                max_abs_gradient,
                result.max_abs_gradient,
                "max_abs_gradient",
            )
        }?;
        unsafe { write_optional(iterations, result.iterations, "iterations") }?;
        let handle = Box::into_raw(Box::new(seginf_crf {
            crf: Arc::new(result.crf),
        }));
        unsafe { write(out, handle, "out") }
    })
}

/// Checks an optional output pointer (NULL = not wanted).
fn optional_out<T>(ptr: *mut T, what: &str) -> FfiResult<()> {
    match ptr.is_null() {
        true => Ok(()),
        false => out_ptr(ptr, what),
    }
}

/// Writes through an optional output pointer checked by [`optional_out`].
unsafe fn write_optional<T>(ptr: *mut T, value: T, what: &str) -> FfiResult<()> {
    match ptr.is_null() {
        true => Ok(()),
        false => unsafe { write(ptr, value, what) },
    }
}

/// NOT_CONVERGED for a training run that stopped short of the tolerance, saying why.
fn not_converged(
    what: &str,
    iterations: usize,
    gradient: Option<f64>,
    options: &TrainOptions,
) -> FfiError {
    let why = match iterations >= options.max_iterations {
        true => format!(
            "the iteration cap ({}) was reached; raise it with seginf_trainer_set_max_iterations",
            options.max_iterations
        ),
        false => "no step lowered the objective any more (it is flat to double precision); \
                  raise the tolerance with seginf_trainer_set_tolerance"
            .to_string(),
    };
    let gradient = gradient.map_or(String::new(), |g| format!(" with max |gradient| = {g:.3e}"));
    Error::NotConverged(format!(
        "{what} stopped after {iterations} L-BFGS steps{gradient}, short of the tolerance {:.1e}: {why}",
        options.tolerance
    ))
    .into()
}

fn hessian_mode(mode: i32) -> FfiResult<seginf_hessian> {
    use seginf_hessian::*;
    let all = [
        SEGINF_HESSIAN_IDENTITY,
        SEGINF_HESSIAN_KFAC,
        SEGINF_HESSIAN_EKFAC,
        SEGINF_HESSIAN_EXACT,
    ];
    from_code(mode, &all.map(|m| (m as i32, m)), "seginf_hessian")
}

/// Fits the curvature of the trainer's objective (its sequences and its l2) at `trained`
/// (normally what seginf_trainer_run made from the same trainer), for Hessian mode `mode` (a
/// seginf_hessian) with `damping` (finite, >= 0; l2 + damping must be > 0), into *out: free
/// with seginf_curvature_free. The handle then applies (H + (l2 + damping) I)^-1 with H the
/// Hessian of the mean NLL:
/// - SEGINF_HESSIAN_KFAC / SEGINF_HESSIAN_EKFAC: Kronecker-factored emission block
///   (eigendecompositions, done here), exact transition/start/end block; each later use costs
///   about two small matrix products.
/// - SEGINF_HESSIAN_EXACT: conjugate gradient on exact Hessian-vector products over the
///   training data at every use (relative residual 1e-8, at most 10000 iterations; the handle
///   keeps its own reference to the training data); fitting only checks the data against
///   `trained`. A use that does not converge fails with NOT_CONVERGED; with unlabelled tokens
///   H may be indefinite, and a larger damping helps.
///
/// Use it with seginf_query_set_curvature and seginf_exact_influence.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (SEGINF_HESSIAN_IDENTITY, which is not fitted: use
/// seginf_query_set_hessian; an unknown mode; a bad damping; no sequences added; a singular
/// damped transition block), DIMENSION_MISMATCH (`trained` has another shape than the
/// trainer's model), IMPOSSIBLE_LABELS (labels `trained`'s -inf constraints forbid).
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_fit(
    data: *const seginf_trainer,
    trained: *const seginf_crf,
    mode: i32,
    damping: f64,
    out: *mut *mut seginf_curvature,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow(data, "data") }?;
        let crf = &unsafe { borrow(trained, "trained") }?.crf;
        out_ptr(out, "out")?;
        let mode = hessian_mode(mode)?;
        same_shape(&t.init, crf, "trained")?;
        let l2 = t.options.l2;
        if !(damping.is_finite() && damping >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "damping = {damping:?}, expected a finite value >= 0"
            ))
            .into());
        }
        if l2 + damping <= 0.0 {
            return Err(Error::InvalidArgument(
                "l2 + damping = 0: the Hessian may be singular; set a damping > 0 (or train with l2 > 0)".into(),
            )
            .into());
        }
        if t.data.is_empty() {
            return Err(Error::InvalidArgument(
                "the trainer has no sequences to fit the curvature on".into(),
            )
            .into());
        }
        use seginf_hessian::*;
        let (inverse, exact, factored): (Arc<dyn InverseHessian>, _, _) = match mode {
            SEGINF_HESSIAN_IDENTITY => {
                return Err(Error::InvalidArgument(
                    "SEGINF_HESSIAN_IDENTITY is not fitted: set it on a query with seginf_query_set_hessian".into(),
                )
                .into())
            }
            SEGINF_HESSIAN_KFAC | SEGINF_HESSIAN_EKFAC => {
                let factored = match mode {
                    SEGINF_HESSIAN_KFAC => Factored::Kfac,
                    _ => Factored::Ekfac,
                };
                let fitted = Arc::new(KroneckerInverse::fit(Arc::clone(crf), &t.data, l2, damping, factored)?);
                (Arc::clone(&fitted) as Arc<dyn InverseHessian>, None, Some(fitted))
            }
            SEGINF_HESSIAN_EXACT => {
                // The solves happen at each use; check now what they will need (a finite
                // objective: shapes, labels, feasibility under `trained`'s constraints).
                crate::train::objective(crf, &t.data, l2)?;
                let mut exact = ExactInverse::new(Arc::clone(crf), Arc::clone(&t.data), l2, damping);
                exact.tolerance = EXACT_TOLERANCE;
                exact.max_iterations = EXACT_MAX_ITERATIONS;
                let exact = Arc::new(exact);
                (Arc::clone(&exact) as Arc<dyn InverseHessian>, Some(exact), None)
            }
        };
        let curvature = seginf_curvature {
            inverse,
            exact,
            factored,
            fingerprint: crf.fingerprint(),
            mode,
        };
        unsafe { write(out, Box::into_raw(Box::new(curvature)), "out") }
    })
}

/// Saves a K-FAC or EK-FAC curvature to `path` as a safetensors companion file (atomically,
/// checksummed, with the CRF's fingerprint), to reopen with seginf_curvature_open instead of
/// fitting again. An exact curvature holds no statistics (it solves on the training data at
/// each use). Errors: NULL_ARGUMENT, INVALID_ARGUMENT (path not UTF-8), UNSUPPORTED (exact), IO.
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_save(
    curvature: *const seginf_curvature,
    path: *const c_char,
) -> seginf_status {
    guard(|| {
        let curvature = unsafe { borrow(curvature, "curvature") }?;
        let path = unsafe { c_str(path, "path") }?;
        let Some(factored) = &curvature.factored else {
            return Err(Error::Unsupported(
                "an exact curvature has no statistics to save: fit it again from the training data"
                    .into(),
            )
            .into());
        };
        factored
            .save(std::path::Path::new(path))
            .map_err(Into::into)
    })
}

/// Opens a K-FAC or EK-FAC curvature saved by seginf_curvature_save, for `crf` (the trained
/// CRF it was fitted at), into *out (free with seginf_curvature_free).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT, IO, FORMAT (not a curvature file, corrupted),
/// MODEL_MISMATCH (fitted at another CRF).
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_open(
    path: *const c_char,
    crf: *const seginf_crf,
    out: *mut *mut seginf_curvature,
) -> seginf_status {
    guard(|| {
        let path = unsafe { c_str(path, "path") }?;
        let crf = &unsafe { borrow(crf, "crf") }?.crf;
        out_ptr(out, "out")?;
        let opened = Arc::new(KroneckerInverse::open(
            std::path::Path::new(path),
            Arc::clone(crf),
        )?);
        let mode = match opened.mode() {
            Factored::Kfac => seginf_hessian::SEGINF_HESSIAN_KFAC,
            Factored::Ekfac => seginf_hessian::SEGINF_HESSIAN_EKFAC,
        };
        let curvature = seginf_curvature {
            inverse: Arc::clone(&opened) as Arc<dyn InverseHessian>,
            exact: None,
            factored: Some(opened),
            fingerprint: crf.fingerprint(),
            mode,
        };
        unsafe { write(out, Box::into_raw(Box::new(curvature)), "out") }
    })
}

/// Frees a curvature. Queries it was set on keep their own reference. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_free(curvature: *mut seginf_curvature) {
    if !curvature.is_null() {
        // SAFETY: made by Box::into_raw in seginf_curvature_fit; freed once by the caller.
        guard_value((), || drop(unsafe { Box::from_raw(curvature) }));
    }
}

/// The Hessian mode (a seginf_hessian) a curvature was fitted for, or -1 for NULL.
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_mode(curvature: *const seginf_curvature) -> i32 {
    guard_value(-1, || {
        unsafe { curvature.as_ref() }.map_or(-1, |c| c.mode as i32)
    })
}

/// For a SEGINF_HESSIAN_EXACT curvature: the conjugate-gradient iterations and the relative
/// residual |g - (H + sI)x| / |g| of its most recent solve, on any thread (a query's
/// seginf_query_run/_scores, or seginf_exact_influence), converged or not.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (a K-FAC or EK-FAC curvature, which solves directly;
/// or no solve yet).
#[no_mangle]
pub unsafe extern "C" fn seginf_curvature_last_solve(
    curvature: *const seginf_curvature,
    iterations: *mut usize,
    relative_residual: *mut f64,
) -> seginf_status {
    guard(|| {
        let c = unsafe { borrow(curvature, "curvature") }?;
        out_ptr(iterations, "iterations")?;
        out_ptr(relative_residual, "relative_residual")?;
        let exact = c.exact.as_ref().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a {:?} curvature solves directly; only SEGINF_HESSIAN_EXACT iterates",
                c.mode
            ))
        })?;
        let (steps, residual) = exact.last_solve().ok_or_else(|| {
            Error::InvalidArgument("the curvature has not been used for a solve yet".into())
        })?;
        unsafe { write(iterations, steps, "iterations") }?;
        unsafe { write(relative_residual, residual, "relative_residual") }
    })
}

/// Exact influence by retraining (paper Eq. 5-6), the ground truth for influence scores:
/// removes the labels of tokens train_first..train_last (inclusive) of training sequence
/// `train_sequence` (0-based, in the order of seginf_trainer_add; they become unlabelled),
/// retrains with the trainer's options warm-started from `trained` (reporting each L-BFGS step
/// to the trainer's progress callback, which may cancel), and
/// writes the change of the test segment's conditional loss CL(test_first, test_last) (test
/// features test_n x d, labels test_n) into *actual = CL(retrained) - CL(trained), and the
/// influence-function prediction of it, (1/S) g_test . (H + (l2 + damping) I)^-1 g_train
/// (S = number of training sequences), into *predicted. `curvature` (fitted at `trained`) gives
/// the inverse Hessian; NULL means the identity with damping 1 (the paper's choice). For a
/// query on an index of the same training data, the token's score with that curvature is
/// -S * predicted. `trained` should minimise the trainer's objective (seginf_trainer_run).
/// In a partially labelled training sequence the removed segment's loss conditions on the
/// other labelled tokens only (unlabelled ones are marginalised out); the segment itself must
/// be labelled.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (train_sequence out of range, test_n = 0),
/// BAD_SEGMENT (either segment), DIMENSION_MISMATCH, NON_FINITE, LABEL_OUT_OF_RANGE,
/// IMPOSSIBLE_LABELS, MODEL_MISMATCH (curvature fitted at another CRF), INVALID_ARGUMENT (the
/// training segment has unlabelled tokens),
/// NOT_CONVERGED (the retraining, or the exact curvature's solve, stopped short of its
/// tolerance; nothing is written), CANCELLED (the progress callback returned non-zero; nothing
/// is written).
#[no_mangle]
pub unsafe extern "C" fn seginf_exact_influence(
    data: *const seginf_trainer,
    trained: *const seginf_crf,
    curvature: *const seginf_curvature,
    train_sequence: usize,
    train_first: usize,
    train_last: usize,
    test_features: *const f32,
    test_n: usize,
    test_labels: *const u32,
    test_first: usize,
    test_last: usize,
    actual: *mut f64,
    predicted: *mut f64,
) -> seginf_status {
    guard(|| {
        let t = unsafe { borrow(data, "data") }?;
        let crf = &unsafe { borrow(trained, "trained") }?.crf;
        // SAFETY: a non-NULL `curvature` is a handle from seginf_curvature_fit.
        let curvature = unsafe { curvature.as_ref() };
        if test_features.is_null() {
            return Err(null("test_features"));
        }
        if test_labels.is_null() {
            return Err(null("test_labels"));
        }
        let (x, y) =
            unsafe { labelled_view(test_features, test_labels, test_n, crf.feature_dim()) }?;
        out_ptr(actual, "actual")?;
        out_ptr(predicted, "predicted")?;
        same_shape(&t.init, crf, "trained")?;
        if curvature.is_some_and(|c| c.fingerprint != crf.fingerprint()) {
            return Err(Error::ModelMismatch(
                "the curvature was fitted at another CRF than `trained`; fit it at `trained`"
                    .into(),
            )
            .into());
        }
        let inverse: &dyn InverseHessian = match curvature {
            Some(c) => c.inverse.as_ref(),
            None => &Identity,
        };
        let removed = TrainingSegment {
            sequence: train_sequence,
            first: train_first,
            last: train_last,
        };
        let test = TestSegment {
            features: x,
            labels: y,
            first: test_first,
            last: test_last,
        };
        let r = t.with_progress(|progress| {
            exact_influence_with_progress(
                crf,
                &t.data,
                &t.options,
                (removed, &test),
                inverse,
                progress,
            )
        })?;
        if !r.converged {
            return Err(not_converged("retraining", r.iterations, None, &t.options));
        }
        unsafe { write(actual, r.actual, "actual") }?;
        unsafe { write(predicted, r.predicted, "predicted") }
    })
}
