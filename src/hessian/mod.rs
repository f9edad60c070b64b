//! Curvature of the training objective: exact Hessian–vector products and solvers.
