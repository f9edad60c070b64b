//! Conjugate gradient for symmetric positive-definite systems `A x = b`, given only products
//! `v ↦ A v` (Hestenes & Stiefel 1952; Shewchuk, *An Introduction to the Conjugate Gradient
//! Method Without the Agonizing Pain*, 1994, §B2).

use crate::error::{Error, Result};

/// The outcome of [`conjugate_gradient`].
#[derive(Debug, Clone, PartialEq)]
pub struct CgResult {
    pub x: Vec<f64>,
    /// CG steps taken (each costs one product with `A`; the final true residual costs one more
    /// product per restart, not counted here).
    pub iterations: usize,
    /// `‖b − A x‖ / ‖b‖` from a freshly computed product (not CG's recurrence), 0 when `b = 0`.
    pub relative_residual: f64,
    /// `relative_residual ≤ relative_tolerance`.
    pub converged: bool,
}

/// How many times CG restarts from the true residual when the recurrence says it converged but
/// the recomputed residual disagrees (rounding drift of the recurrence).
const MAX_RESTARTS: usize = 3;

/// Solves `A x = b` for a symmetric positive-definite `A` given as `apply(v) = A v`, from
/// `x = 0`, until `‖b − A x‖ ≤ relative_tolerance·‖b‖` or `max_iterations` steps.
///
/// The recurrence's residual drifts from the true one in floating point, so convergence is
/// confirmed on `b − A x` recomputed with one more product; if that is still above the
/// tolerance (and steps remain), CG restarts from it. `b = 0` gives `x = 0` with no products.
///
/// Errors: `b` not finite or `relative_tolerance` negative/not finite → `InvalidArgument` /
/// `NonFinite`; `apply` returning the wrong length or non-finite values, or a direction with
/// `pᵀAp ≤ 0` (A is not positive definite) → `NonFinite` / `InvalidArgument`; errors of
/// `apply` are passed on.
pub fn conjugate_gradient(
    apply: impl Fn(&[f64]) -> Result<Vec<f64>>,
    b: &[f64],
    relative_tolerance: f64,
    max_iterations: usize,
) -> Result<CgResult> {
    if !(relative_tolerance.is_finite() && relative_tolerance >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "relative_tolerance = {relative_tolerance}, expected a finite value >= 0"
        )));
    }
    if let Some(k) = b.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite(format!("right-hand side[{k}] = {}", b[k])));
    }
    let n = b.len();
    let b_norm = norm(b);
    if b_norm == 0.0 {
        return Ok(CgResult {
            x: vec![0.0; n],
            iterations: 0,
            relative_residual: 0.0,
            converged: true,
        });
    }
    let product = |v: &[f64]| -> Result<Vec<f64>> {
        let av = apply(v)?;
        if av.len() != n {
            return Err(Error::DimensionMismatch(format!(
                "the operator returned {} values for a vector of {n}",
                av.len()
            )));
        }
        if let Some(k) = av.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "the operator returned {} at entry {k}",
                av[k]
            )));
        }
        Ok(av)
    };
    let target = relative_tolerance * b_norm;

    let mut x = vec![0.0; n];
    let mut r = b.to_vec(); // r = b − A x, exactly, at x = 0
    let mut iterations = 0;
    let mut restarts = 0;
    loop {
        let mut p = r.clone();
        let mut rr = dot(&r, &r);
        while rr.sqrt() > target && iterations < max_iterations {
            let ap = product(&p)?;
            let curvature = dot(&p, &ap);
            if curvature <= 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "the operator is not positive definite: pᵀAp = {curvature:e} at CG step {}",
                    iterations + 1
                )));
            }
            // Step to the minimum of ½xᵀAx − bᵀx along p, then make the next direction
            // A-conjugate to the previous ones.
            let step = rr / curvature;
            axpy(step, &p, &mut x);
            axpy(-step, &ap, &mut r);
            let rr_next = dot(&r, &r);
            let beta = rr_next / rr;
            for (p, r) in p.iter_mut().zip(&r) {
                *p = r + beta * *p;
            }
            rr = rr_next;
            iterations += 1;
        }
        if iterations == 0 {
            // No step taken (max_iterations = 0): r = b is exact.
            break;
        }
        let ax = product(&x)?;
        r = b.iter().zip(&ax).map(|(b, ax)| b - ax).collect();
        let done = norm(&r) <= target || iterations >= max_iterations;
        if done || restarts == MAX_RESTARTS {
            break;
        }
        restarts += 1;
    }
    let relative_residual = norm(&r) / b_norm;
    Ok(CgResult {
        x,
        iterations,
        relative_residual,
        converged: relative_residual <= relative_tolerance,
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += a·x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matvec(a: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
        a.iter().map(|row| dot(row, v)).collect()
    }

    #[test]
    fn solves_a_small_spd_system() {
        let a = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 2.0],
        ];
        let want = [1.0, -2.0, 0.5];
        let b = matvec(&a, &want);
        let got = conjugate_gradient(|v| Ok(matvec(&a, v)), &b, 1e-12, 50).unwrap();
        assert!(got.converged && got.relative_residual <= 1e-12);
        // Exact arithmetic needs at most n = 3 steps; allow a restart's worth more.
        assert!(got.iterations <= 6, "{} iterations", got.iterations);
        for (g, w) in got.x.iter().zip(want) {
            assert!((g - w).abs() < 1e-10, "{g} vs {w}");
        }
    }

    #[test]
    fn zero_right_hand_side_takes_no_products() {
        let got = conjugate_gradient(|_| panic!("no product needed"), &[0.0; 4], 1e-8, 10).unwrap();
        assert_eq!(got.x, vec![0.0; 4]);
        assert_eq!((got.iterations, got.relative_residual), (0, 0.0));
        assert!(got.converged);
    }

    #[test]
    fn reports_non_convergence_and_indefinite_operators() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 100.0]];
        let got = conjugate_gradient(|v| Ok(matvec(&a, v)), &[1.0, 1.0], 1e-12, 1).unwrap();
        assert_eq!(got.iterations, 1);
        assert!(!got.converged && got.relative_residual > 1e-12);
        let zero = conjugate_gradient(|v| Ok(matvec(&a, v)), &[1.0, 1.0], 1e-12, 0).unwrap();
        assert_eq!((zero.iterations, zero.relative_residual), (0, 1.0));

        let indefinite = vec![vec![1.0, 0.0], vec![0.0, -1.0]];
        let err = conjugate_gradient(|v| Ok(matvec(&indefinite, v)), &[0.0, 1.0], 1e-8, 10);
        assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
    }
}
