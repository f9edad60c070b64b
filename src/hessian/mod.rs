//! Curvature of the training objective: exact Hessian–vector products and solvers.
//!
//! The Hessian is that of `mean NLL + (λ/2)‖θ‖²` over the CRF parameters (DESIGN.md §3), in
//! the order of [`crate::Crf::params`]; `-inf` parameters are constraints, not parameters, so
//! every vector here is 0 there.
//!
//! - [`exact`]: `H v` by forward-mode differentiation of forward–backward
//!   ([`sequence_hvp`], [`objective_hvp`]) and `(H + μI)⁻¹ g` by CG on them
//!   ([`exact_inverse_hvp`]);
//! - [`cg`]: conjugate gradient on any SPD operator given as products;
//! - [`kfac`]: K-FAC and EK-FAC, whose transition/start/end block is exact, from covariances of
//!   its statistics along each chain (`transition_block`).

pub mod cg;
pub mod exact;
pub mod kfac;
pub mod modes;
mod transition_block;

pub use cg::{conjugate_gradient, CgResult};
pub use exact::{exact_inverse_hvp, objective_hvp, sequence_hvp};
pub use kfac::{Factored, KroneckerInverse};
pub use modes::ExactInverse;
