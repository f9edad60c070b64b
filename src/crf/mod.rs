//! The linear-chain CRF: parameters, exact inference, and segment losses with their gradients
//! (DESIGN.md §1–2; the paper's §2 and Appendix B).

mod constraints;
mod forward_backward;
mod load;
mod model;
mod segment;
mod viterbi;

pub use constraints::{ConstraintMask, TagScheme};
pub use forward_backward::Marginals;
pub use load::LoadOptions;
pub use model::Crf;
pub use segment::{SegmentGradient, SegmentMarginals};
