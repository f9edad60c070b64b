//! Reading a tagged corpus from files: CoNLL columns ([`conll`]), token features from `.npy`
//! or safetensors ([`features`]), and entity spans from tags ([`entity_spans`]).
//!
//! Errors name the file and the line (`train.conll:812: ...`), so that a bad file is found,
//! not guessed at. The `seginf` command line reads its inputs with these functions.

pub mod conll;
pub mod features;
mod spans;

pub use conll::{Conll, ConllDocument, ConllSentence, ReadOptions};
pub use features::{read_features, write_npy};
pub use spans::{entity_spans, EntitySpan};

use crate::error::{Error, Result};

/// The doc id the command line gives sentence `sentence` of document `document` (both
/// counted from 0 in file order) in an index: `(document << 32) | sentence`.
/// Errors when either does not fit in 32 bits.
pub fn doc_id(document: usize, sentence: usize) -> Result<u64> {
    match (u32::try_from(document), u32::try_from(sentence)) {
        (Ok(d), Ok(s)) => Ok((u64::from(d) << 32) | u64::from(s)),
        _ => Err(Error::InvalidArgument(format!(
            "document {document}, sentence {sentence}: doc ids hold 32 bits of each"
        ))),
    }
}

/// `(document, sentence)` of a [`doc_id`].
pub fn split_doc_id(doc_id: u64) -> (usize, usize) {
    ((doc_id >> 32) as usize, (doc_id & 0xFFFF_FFFF) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_ids_round_trip() {
        for (d, s) in [(0, 0), (1, 0), (0, 1), (70_000, 12), (u32::MAX as usize, 3)] {
            assert_eq!(split_doc_id(doc_id(d, s).unwrap()), (d, s));
        }
        assert_eq!(doc_id(2, 5).unwrap(), (2 << 32) | 5);
        assert!(doc_id(1 << 32, 0).is_err());
        assert!(doc_id(0, 1 << 32).is_err());
    }
}
