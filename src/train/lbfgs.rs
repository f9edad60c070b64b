//! Limited-memory BFGS (Nocedal & Wright 2006, Alg. 7.4–7.5) with a strong-Wolfe line search
//! (Alg. 3.5–3.6), on plain `Vec<f64>`.
//!
//! Hand-written rather than argmin's `LBFGS`, because this crate needs three things argmin
//! (0.10) does not give:
//! - the stopping test is on the max-abs gradient (argmin's `tol_grad` is on the L2 norm, and
//!   a custom test could only be smuggled in as an error from the cost function);
//! - a run that ends at the tolerance even when the objective's change is at f64 resolution:
//!   argmin ends the run with `SolverExit` on any line-search failure, and stores every
//!   `(s, y)` pair without checking the curvature `sᵀy > 0`. Here a failed search or a bad pair
//!   resets the memory and retries along `−g`, and near the optimum the line search falls back
//!   to the gradient (Hager & Zhang's approximate Wolfe test), which stays exact long after
//!   differences of the objective are rounding noise;
//! - cancellation from a progress callback that returns the crate's `Error::Cancelled`.
//!
//! It also keeps the dependency tree small (argmin pulls in rand, anyhow, paste, …).

use std::collections::VecDeque;

use crate::error::{Error, Result};

/// Sufficient decrease (Armijo) constant `c1` and curvature constant `c2` of the strong Wolfe
/// conditions; the usual quasi-Newton choices (Nocedal & Wright §3.1).
const C1: f64 = 1e-4;
const C2: f64 = 0.9;
/// Objective evaluations per line search before it gives up.
const MAX_EVALUATIONS: usize = 40;
/// Relative size of differences of the objective that f64 summation cannot resolve: below it
/// the line search decides by the directional derivative alone.
const NOISE: f64 = 1e-12;

pub(crate) struct Settings {
    pub tolerance: f64,
    pub max_iterations: usize,
    pub memory: usize,
}

pub(crate) struct Outcome {
    pub x: Vec<f64>,
    pub value: f64,
    pub max_abs_gradient: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Minimises `f` from `x0`. `eval(x)` returns `(f(x), ∇f(x))`; its errors end the run.
/// Stops when `max |∇f| ≤ tolerance` (converged), after `max_iterations` steps, or when no
/// step along even the steepest descent direction lowers `f` (a stall: not converged).
/// `progress(iteration, f, max |∇f|)` runs after each step; `false` cancels the run.
pub(crate) fn minimize<E>(
    x0: Vec<f64>,
    mut eval: E,
    settings: &Settings,
    mut progress: Option<&mut dyn FnMut(usize, f64, f64) -> bool>,
) -> Result<Outcome>
where
    E: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
{
    let mut x = x0;
    let (mut value, mut grad) = eval(&x)?;
    if !value.is_finite() {
        return Err(Error::NonFinite(format!(
            "the objective at the starting point is {value}"
        )));
    }
    // (s_k, y_k, 1/y_kᵀs_k), oldest first.
    let mut memory: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(settings.memory);
    let mut iterations = 0;
    loop {
        let max_abs_gradient = max_abs(&grad);
        let done = |converged| Outcome {
            x: x.clone(),
            value,
            max_abs_gradient,
            iterations,
            converged,
        };
        if max_abs_gradient <= settings.tolerance {
            return Ok(done(true));
        }
        if iterations >= settings.max_iterations {
            return Ok(done(false));
        }

        let mut direction = two_loop(&grad, &memory);
        if dot(&grad, &direction) >= 0.0 {
            // Not a descent direction (rounding in a badly conditioned memory): start afresh.
            memory.clear();
            direction = two_loop(&grad, &memory);
        }
        let step = match line_search(&mut eval, &x, value, &grad, &direction)? {
            Some(step) => step,
            None if !memory.is_empty() => {
                memory.clear();
                let steepest = two_loop(&grad, &memory);
                match line_search(&mut eval, &x, value, &grad, &steepest)? {
                    Some(step) => step,
                    None => return Ok(done(false)),
                }
            }
            None => return Ok(done(false)),
        };

        // Curvature pair: s = x_{k+1} − x_k, y = ∇f_{k+1} − ∇f_k. BFGS needs yᵀs > 0, which
        // the Wolfe conditions guarantee in exact arithmetic; when rounding breaks it, drop
        // the memory rather than store an indefinite update.
        let s = sub(&step.x, &x);
        let y = sub(&step.grad, &grad);
        let sy = dot(&s, &y);
        if sy > f64::EPSILON * norm(&s) * norm(&y) {
            if memory.len() == settings.memory {
                memory.pop_front();
            }
            memory.push_back((s, y, 1.0 / sy));
        } else {
            memory.clear();
        }
        (x, value, grad) = (step.x, step.value, step.grad);
        iterations += 1;
        if let Some(progress) = progress.as_mut() {
            if !progress(iterations, value, max_abs(&grad)) {
                return Err(Error::Cancelled(format!(
                    "training cancelled by the progress callback at iteration {iterations}"
                )));
            }
        }
    }
}

/// `−H_k ∇f` by the two-loop recursion (Nocedal & Wright Alg. 7.4) with
/// `H_0 = (sᵀy / yᵀy) I` from the newest pair; with no memory, `−∇f / ‖∇f‖₂`, so the first
/// trial step of the line search has unit length.
fn two_loop(grad: &[f64], memory: &VecDeque<(Vec<f64>, Vec<f64>, f64)>) -> Vec<f64> {
    let mut q: Vec<f64> = grad.iter().map(|g| -g).collect();
    let Some((s_new, y_new, _)) = memory.back() else {
        let scale = 1.0 / norm(grad);
        q.iter_mut().for_each(|v| *v *= scale);
        return q;
    };
    let mut alphas = Vec::with_capacity(memory.len());
    for (s, y, rho) in memory.iter().rev() {
        let alpha = rho * dot(s, &q);
        axpy(-alpha, y, &mut q);
        alphas.push(alpha);
    }
    let gamma = dot(s_new, y_new) / dot(y_new, y_new);
    q.iter_mut().for_each(|v| *v *= gamma);
    for ((s, y, rho), alpha) in memory.iter().zip(alphas.iter().rev()) {
        let beta = rho * dot(y, &q);
        axpy(alpha - beta, s, &mut q);
    }
    q
}

/// A trial point `x + α·d` of the line search.
struct Trial {
    alpha: f64,
    x: Vec<f64>,
    value: f64,
    grad: Vec<f64>,
    /// `φ'(α) = ∇f(x + α·d)ᵀ d`.
    slope: f64,
}

/// A step length satisfying the strong Wolfe conditions along `d` (Nocedal & Wright
/// Alg. 3.5: bracket, then zoom), first trying `α = 1`. `None` when none was found within
/// [`MAX_EVALUATIONS`].
///
/// Sufficient decrease is `φ(α) ≤ φ(0) + c1·α·φ'(0)`, or, within the rounding noise of `φ`,
/// `φ(α) ≤ φ(0) + ε` (Hager & Zhang 2005's approximate Wolfe conditions): close to the
/// optimum `c1·α·φ'(0)` falls below what f64 resolves in `φ`, while `φ'` is still accurate,
/// so the curvature test `|φ'(α)| ≤ c2·|φ'(0)|` and the sign of `φ'` make the decisions.
fn line_search<E>(
    eval: &mut E,
    x: &[f64],
    value: f64,
    grad: &[f64],
    d: &[f64],
) -> Result<Option<Trial>>
where
    E: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>,
{
    let slope0 = dot(grad, d);
    let noise = NOISE * (1.0 + value.abs());
    let decreases = |t: &Trial| {
        t.value.is_finite()
            && (t.value <= value + C1 * t.alpha * slope0 || t.value <= value + noise)
    };
    let flat = |t: &Trial| t.slope.abs() <= C2 * slope0.abs();
    let mut evaluations = 0;
    let mut try_step = |alpha: f64| -> Result<Trial> {
        let mut x_new = x.to_vec();
        axpy(alpha, d, &mut x_new);
        let (value, grad) = eval(&x_new)?;
        let slope = dot(&grad, d);
        Ok(Trial {
            alpha,
            x: x_new,
            value,
            grad,
            slope,
        })
    };
    let origin = Trial {
        alpha: 0.0,
        x: x.to_vec(),
        value,
        grad: grad.to_vec(),
        slope: slope0,
    };

    // Bracketing: grow α until it overshoots (no decrease, or φ rises, or φ' ≥ 0).
    let mut previous = origin;
    let mut alpha = 1.0;
    let (mut lo, mut hi) = loop {
        evaluations += 1;
        let trial = try_step(alpha)?;
        let rose = previous.alpha > 0.0 && trial.value > previous.value + noise;
        if !decreases(&trial) || rose {
            break (previous, trial);
        }
        if flat(&trial) {
            return Ok(Some(trial));
        }
        if trial.slope >= 0.0 {
            break (trial, previous);
        }
        if evaluations >= MAX_EVALUATIONS {
            return Ok(None);
        }
        alpha *= 4.0;
        previous = trial;
    };

    // Zoom: `lo` has decreased φ (the lowest such point seen) and φ'(lo)·(hi − lo) < 0, so a
    // Wolfe point lies between them.
    while evaluations < MAX_EVALUATIONS
        && (hi.alpha - lo.alpha).abs() > f64::EPSILON * lo.alpha.max(hi.alpha)
    {
        evaluations += 1;
        let trial = try_step(interpolate(&lo, &hi))?;
        if !decreases(&trial) || trial.value > lo.value + noise {
            hi = trial;
            continue;
        }
        if flat(&trial) {
            return Ok(Some(trial));
        }
        if trial.slope * (hi.alpha - lo.alpha) >= 0.0 {
            hi = std::mem::replace(&mut lo, trial);
        } else {
            lo = trial;
        }
    }
    // No Wolfe point, but a lower one is still a step (its pair may fail the curvature check,
    // and then the memory is reset).
    Ok((lo.alpha > 0.0 && lo.value < value).then_some(lo))
}

/// The minimiser of the cubic through `(α, φ, φ')` at both ends (Nocedal & Wright Eq. 3.59),
/// kept at least 10% of the interval away from either end; bisection when the cubic has no
/// usable minimiser (or `hi`'s value is not finite).
fn interpolate(lo: &Trial, hi: &Trial) -> f64 {
    let (a, b) = (lo.alpha, hi.alpha);
    let bisect = 0.5 * (a + b);
    if !(hi.value.is_finite() && hi.slope.is_finite()) {
        return bisect;
    }
    let d1 = lo.slope + hi.slope - 3.0 * (lo.value - hi.value) / (a - b);
    let disc = d1 * d1 - lo.slope * hi.slope;
    if disc < 0.0 {
        return bisect;
    }
    let d2 = (b - a).signum() * disc.sqrt();
    let cubic = b - (b - a) * (hi.slope + d2 - d1) / (hi.slope - lo.slope + 2.0 * d2);
    let (left, right) = (a.min(b), a.max(b));
    let margin = 0.1 * (right - left);
    if cubic.is_finite() && cubic >= left + margin && cubic <= right - margin {
        cubic
    } else {
        bisect
    }
}

pub(crate) fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// `y += a·x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tolerance: f64) -> Settings {
        Settings {
            tolerance,
            max_iterations: 1000,
            memory: 10,
        }
    }

    /// Rosenbrock in `n` dimensions: non-convex, badly conditioned, minimum 0 at (1, …, 1).
    fn rosenbrock(x: &[f64]) -> Result<(f64, Vec<f64>)> {
        let n = x.len();
        let (mut f, mut g) = (0.0, vec![0.0; n]);
        for i in 0..n - 1 {
            let (a, b) = (1.0 - x[i], x[i + 1] - x[i] * x[i]);
            f += a * a + 100.0 * b * b;
            g[i] += -2.0 * a - 400.0 * x[i] * b;
            g[i + 1] += 200.0 * b;
        }
        Ok((f, g))
    }

    #[test]
    fn train_lbfgs_solves_rosenbrock_to_tight_tolerance() {
        let x0: Vec<f64> = (0..10)
            .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
            .collect();
        let out = minimize(x0, rosenbrock, &settings(1e-9), None).unwrap();
        assert!(out.converged, "max |g| = {}", out.max_abs_gradient);
        eprintln!(
            "rosenbrock: {} iterations, max |g| {:e}",
            out.iterations, out.max_abs_gradient
        );
        assert!(out.max_abs_gradient <= 1e-9);
        assert!(out.x.iter().all(|v| (v - 1.0).abs() < 1e-8), "{:?}", out.x);
    }

    #[test]
    fn train_lbfgs_quadratic_to_rounding_level() {
        // f = 3 + ½ Σ λ_i x_i², eigenvalues log-spaced from 1e-2 to 1. Near the end
        // f − 3 ~ 1e-24 is far below f64's resolution of f, so only the slope-based line search
        // decisions can carry the run to max |g| ≤ 1e-12. (Unit-step L-BFGS with m = 10 needs
        // about 135 steps here; a 1e-4 spread needs about 1000, which is the iteration cap's
        // business, not the line search's.)
        let lambda: Vec<f64> = (0..50)
            .map(|i| 10f64.powf(-2.0 * i as f64 / 49.0))
            .collect();
        let eval = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let g: Vec<f64> = x.iter().zip(&lambda).map(|(x, l)| l * x).collect();
            Ok((0.5 * dot(x, &g) + 3.0, g))
        };
        let out = minimize(vec![1.0; 50], eval, &settings(1e-12), None).unwrap();
        assert!(
            out.converged,
            "max |g| = {}, {} iterations",
            out.max_abs_gradient, out.iterations
        );
        eprintln!(
            "quadratic: {} iterations, max |g| {:e}",
            out.iterations, out.max_abs_gradient
        );
        assert!(out.iterations < 250, "{} iterations", out.iterations);
    }

    #[test]
    fn train_lbfgs_stops_at_iteration_cap_and_cancels() {
        let x0 = vec![-1.2, 1.0];
        let capped = Settings {
            max_iterations: 3,
            ..settings(1e-12)
        };
        let out = minimize(x0.clone(), rosenbrock, &capped, None).unwrap();
        assert!(!out.converged);
        assert_eq!(out.iterations, 3);

        let mut seen = Vec::new();
        let mut stop_at_2 = |k: usize, _f: f64, _g: f64| {
            seen.push(k);
            k < 2
        };
        let err = minimize(x0, rosenbrock, &settings(1e-12), Some(&mut stop_at_2));
        assert!(matches!(err, Err(Error::Cancelled(_))));
        assert_eq!(seen, vec![1, 2]);
    }

    #[test]
    fn train_lbfgs_already_optimal_takes_no_step() {
        let out = minimize(vec![1.0, 1.0], rosenbrock, &settings(1e-6), None).unwrap();
        assert!(out.converged);
        assert_eq!(out.iterations, 0);
    }
}
