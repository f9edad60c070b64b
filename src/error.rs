//! The error type of the safe Rust API. The C ABI maps each variant to one `seginf_status`.

/// Why an operation failed. Messages name the offending argument, position or file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("dimension mismatch: {0}")]
    DimensionMismatch(String),
    #[error("label out of range: {0}")]
    LabelOutOfRange(String),
    #[error("bad segment: {0}")]
    BadSegment(String),
    #[error("non-finite input: {0}")]
    NonFinite(String),
    #[error("impossible labels: {0}")]
    ImpossibleLabels(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("format error: {0}")]
    Format(String),
    #[error("model mismatch: {0}")]
    ModelMismatch(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("cancelled: {0}")]
    Cancelled(String),
    #[error("not converged: {0}")]
    NotConverged(String),
}

pub type Result<T> = std::result::Result<T, Error>;
