//! The C ABI: argument checks and conversions around the safe core, nothing else.
//! Every entry point has the same shape (STYLE.md): `guard(|| { borrow; slice; call; write })`.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)] // the safety contract of each function is in the header

mod boundary;
mod crf;
mod index;
mod query;
mod rank;
mod train;

// The exported symbols are the `#[no_mangle]` functions; nothing is re-exported to Rust.
