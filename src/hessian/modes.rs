//! Hessian modes for queries that need the training data: the exact inverse by conjugate
//! gradient (this file) and the Kronecker-factored ones (`kfac`).

use std::sync::{Arc, Mutex};

use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::hessian::exact_inverse_hvp;
use crate::query::InverseHessian;
use crate::train::TrainSeq;

/// `(H + (λ + μ)I)⁻¹ g` by conjugate gradient on exact Hessian–vector products of the training
/// objective `mean NLL + (λ/2)‖θ‖²` at the trained parameters: the `exact` Hessian mode.
#[derive(Debug)]
pub struct ExactInverse {
    crf: Arc<Crf>,
    data: Arc<Vec<TrainSeq>>,
    l2: f64,
    damping: f64,
    /// Relative residual `‖g − (H + sI)x‖ / ‖g‖` to reach (default 1e-8).
    pub tolerance: f64,
    pub max_iterations: usize,
    /// (iterations, relative residual) of the last solve, for reporting.
    last: Mutex<Option<(usize, f64)>>,
}

impl ExactInverse {
    /// `crf` should minimise the objective with this `l2` on `data`.
    pub fn new(crf: Arc<Crf>, data: Arc<Vec<TrainSeq>>, l2: f64, damping: f64) -> ExactInverse {
        ExactInverse {
            crf,
            data,
            l2,
            damping,
            tolerance: 1e-8,
            max_iterations: 10_000,
            last: Mutex::new(None),
        }
    }

    /// Iterations and relative residual of the last solve.
    pub fn last_solve(&self) -> Option<(usize, f64)> {
        self.last.lock().map(|l| *l).unwrap_or(None)
    }
}

impl InverseHessian for ExactInverse {
    fn apply(&self, g: &[f64]) -> Result<Vec<f64>> {
        let r = exact_inverse_hvp(
            &self.crf,
            &self.data,
            self.l2,
            self.damping,
            g,
            self.tolerance,
            self.max_iterations,
        )?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((r.iterations, r.relative_residual));
        }
        if !r.converged {
            return Err(Error::NotConverged(format!(
                "conjugate gradient reached a relative residual of {:.3e} after {} iterations (asked {:.1e}); raise the damping or the iteration cap",
                r.relative_residual, r.iterations, self.tolerance
            )));
        }
        Ok(r.x)
    }
}
