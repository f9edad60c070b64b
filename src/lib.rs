//! seginf: segment influence functions for linear-chain CRF taggers.
//!
//! The math (sign conventions, factored gradients) follows `DESIGN.md` and Jain et al.,
//! *Influence Functions for Sequence Tagging Models* (Findings of EMNLP 2022).
//! The safe Rust API lives in [`crf`]; the C ABI (`include/seginf.h`) is a thin layer over it in
//! the private `ffi` module, the only place where `unsafe` is allowed.

// Index loops mirror the formulas (t over positions, i/j over labels) and stay readable.
#![allow(clippy::needless_range_loop)]

// Links the system OpenBLAS that ndarray's `blas` feature calls into.
extern crate blas_src;

#[deny(unsafe_code)]
mod amx;
#[deny(unsafe_code)]
pub mod corpus;
#[deny(unsafe_code)] // not `forbid`: ndarray's `s!` macro allows it internally
pub mod crf;
#[deny(unsafe_code)] // not `forbid`: ndarray's `s!` macro allows it internally
pub mod data;
#[deny(unsafe_code)] // not `forbid`: ndarray's `s!` macro allows it internally
pub mod error;
#[deny(unsafe_code)]
pub mod hessian;
#[deny(unsafe_code)] // one documented exception: memory-mapping a saved index (memmap2)
pub mod index;
#[deny(unsafe_code)]
pub mod influence;
#[deny(unsafe_code)]
mod int_kernels;
#[deny(unsafe_code)]
mod kernels;
#[deny(unsafe_code)]
pub mod query;
#[deny(unsafe_code)]
pub mod rank;
#[deny(unsafe_code)]
pub mod train;

mod ffi;

pub use crf::{
    ConstraintMask, Crf, LoadOptions, Marginals, ModelMetadata, SegmentGradient, SegmentMarginals,
    TagScheme,
};
pub use error::{Error, Result};
pub use index::{BuildOptions, Index, IndexBuilder, Storage};
pub use query::{Granularity, Hessian, Hit, Normalization, Query, TestSegment, TopHits};

/// Whether this CPU runs the integer ranking kernels (AVX-512 VNNI or AVX2): then int8 indexes
/// rank with exact integer sums, and batches on f32/f16 indexes through an i16 copy of the rows
/// ([`Index::ranking_copy_bytes`]).
pub fn integer_kernels_available() -> bool {
    int_kernels::intrinsics_available()
}

/// Whether this CPU runs the AMX tile kernels (Intel AMX-INT8, granted by Linux; not with
/// `SEGINF_AMX=off`): then an int8 index's entity queries of 5–8 tokens, an f16 index's of 4–8 (d a
/// multiple of 64, through the i16 copy of its rows kept as int8 planes in the tiles' order)
/// and the batches' GEMMs multiply in the tiles.
pub fn tiles_available() -> bool {
    amx::available()
}

/// The crate version, as in Cargo.toml (and the `SEGINF_VERSION_*` macros of the C header).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
