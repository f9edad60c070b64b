//! Exact influence by retraining (paper Eq. 5–6) next to the influence-function prediction
//! (Eq. 9 with the `1/|D|` of a removal): the ground truth for validating Hessian modes.

use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::query::{InverseHessian, TestSegment};
use crate::train::{sequence_nll, train, TrainOptions, TrainSeq};

/// A segment `[first, last]` (inclusive) of training sequence `sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingSegment {
    pub sequence: usize,
    pub first: usize,
    pub last: usize,
}

/// Actual and predicted change of a test segment's loss when a training segment is removed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExactInfluence {
    /// `CL_test(θ_new) − CL_test(θ̂)`, θ_new retrained without the training segment's labels.
    pub actual: f64,
    /// `(1/|D|) g_testᵀ H⁻¹ g_train` with the given inverse Hessian.
    pub predicted: f64,
    /// L-BFGS iterations of the retraining, and whether it reached the tolerance.
    pub iterations: usize,
    pub converged: bool,
}

/// Removes the labels of `removed` (they become unlabelled, paper Eq. 5), retrains from
/// `trained` with `options`, and compares the change of the test segment's conditional loss
/// with the prediction through `inverse` (`(H + μI)⁻¹`). `trained` should be a minimiser of
/// the same objective (same data, same `options.l2`).
pub fn exact_influence(
    trained: &Crf,
    data: &[TrainSeq],
    options: &TrainOptions,
    removed: TrainingSegment,
    test: &TestSegment,
    inverse: &dyn InverseHessian,
) -> Result<ExactInfluence> {
    exact_influence_with_progress(trained, data, options, (removed, test), inverse, None)
}

/// [`exact_influence`] with the retraining's progress reported as [`train`] reports it
/// (`progress(iteration, objective, max_abs_gradient)` after each L-BFGS step; returning false
/// cancels with `Error::Cancelled`): a retraining takes as long as a training run.
pub fn exact_influence_with_progress(
    trained: &Crf,
    data: &[TrainSeq],
    options: &TrainOptions,
    (removed, test): (TrainingSegment, &TestSegment),
    inverse: &dyn InverseHessian,
    progress: Option<&mut dyn FnMut(usize, f64, f64) -> bool>,
) -> Result<ExactInfluence> {
    let TrainingSegment {
        sequence,
        first,
        last,
    } = removed;
    let seq = data.get(sequence).ok_or_else(|| {
        Error::InvalidArgument(format!("training sequence {sequence} of {}", data.len()))
    })?;
    let n = seq.labels.len();
    if first > last || last >= n {
        return Err(Error::BadSegment(format!(
            "[{first}, {last}] in a training sequence of {n} tokens"
        )));
    }
    if !seq.observed[first..=last].iter().all(|&o| o) {
        return Err(Error::InvalidArgument(
            "the training segment has unlabelled tokens already; removing it is not defined".into(),
        ));
    }
    let mut removed_seq = seq.clone();
    removed_seq.observed[first..=last]
        .iter_mut()
        .for_each(|o| *o = false);
    // Prediction: (1/|D|) g_testᵀ H⁻¹ g_train (DESIGN.md §3), with g_train the gradient of what
    // the removal takes out of the objective: NLL(observed) − NLL(observed without [a,b]) =
    // −log p(y_[a,b] | the other observed labels, x) — the segment's conditional loss, with
    // any unlabelled tokens of the sequence marginalised out rather than conditioned on.
    let (_, with) = sequence_nll(trained, seq)?;
    let (_, without) = sequence_nll(trained, &removed_seq)?;
    let g_train: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
    let g_test =
        trained.segment_gradient_dense(test.features, test.labels, test.first, test.last)?;
    let h = inverse.apply(&g_train)?;
    let predicted = g_test.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>() / data.len() as f64;
    // Ground truth: the same objective with those labels marginalised out, retrained.
    let mut removed = data.to_vec();
    removed[sequence].observed[first..=last]
        .iter_mut()
        .for_each(|o| *o = false);
    let result = train(trained, &removed, options, progress)?;
    let before = trained.segment_loss(test.features, test.labels, test.first, test.last)?;
    let after = result
        .crf
        .segment_loss(test.features, test.labels, test.first, test.last)?;
    Ok(ExactInfluence {
        actual: after - before,
        predicted,
        iterations: result.iterations,
        converged: result.converged,
    })
}
