//! The linear-chain CRF: parameters, exact inference, and segment losses with their gradients
//! (DESIGN.md §1–2; the paper's §2 and Appendix B).

mod constraints;
mod forward_backward;
pub(crate) mod load;
mod model;
mod save;
mod segment;
mod viterbi;

pub(crate) use constraints::{parse_tag, Prefix};
pub use constraints::{ConstraintMask, TagScheme};
pub use forward_backward::Marginals;
pub(crate) use forward_backward::{clamp_to_observed, no_labelling, no_observed_labelling};
pub use load::LoadOptions;
pub use model::Crf;
pub use save::{ModelMetadata, MODEL_FORMAT};
pub use segment::{SegmentGradient, SegmentMarginals};
