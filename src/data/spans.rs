//! Entity spans from a tag sequence: the segments an entity-level query scores.

use crate::crf::{parse_tag, Prefix, TagScheme};
use crate::error::{Error, Result};

/// An entity: tokens `first..=last` of type `kind` (`PER` for `B-PER I-PER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitySpan {
    pub first: usize,
    /// Inclusive.
    pub last: usize,
    pub kind: String,
}

/// The entities of `labels` in order. Decoding is lenient, as evaluation scripts are, so that
/// the predictions of an unconstrained model can be read too: a continuation tag (`I-X`,
/// `E-X`) that does not continue an `X` entity starts a new one. IOB1 starts an entity at an
/// `I-X` after anything but `X`, and at every `B-X`. Errors on a label `scheme` does not know.
pub fn entity_spans<S: AsRef<str>>(scheme: TagScheme, labels: &[S]) -> Result<Vec<EntitySpan>> {
    let mut spans: Vec<EntitySpan> = Vec::new();
    // Whether the last span may still grow (it ended at t − 1 and was not closed by E-/S-).
    let mut open = false;
    for (t, label) in labels.iter().enumerate() {
        let label = label.as_ref();
        let (prefix, kind) = parse_tag(scheme, label).map_err(|_| {
            Error::InvalidArgument(format!(
                "label {label:?} at position {t} is not a {} tag",
                scheme.name()
            ))
        })?;
        let continues = open && spans.last().is_some_and(|s| s.kind == kind);
        let starts = match (scheme, prefix) {
            (_, Prefix::Outside) => {
                open = false;
                continue;
            }
            (TagScheme::Iob1, Prefix::Begin) => true,
            (_, Prefix::Begin | Prefix::Single) => true,
            (_, Prefix::Inside | Prefix::End) => !continues,
        };
        match (starts, spans.last_mut()) {
            (false, Some(last)) => last.last = t,
            _ => spans.push(EntitySpan {
                first: t,
                last: t,
                kind: kind.to_string(),
            }),
        }
        open = !matches!(prefix, Prefix::End | Prefix::Single);
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(scheme: TagScheme, labels: &str) -> Vec<(usize, usize, String)> {
        let labels: Vec<&str> = labels.split(' ').collect();
        entity_spans(scheme, &labels)
            .unwrap()
            .into_iter()
            .map(|s| (s.first, s.last, s.kind))
            .collect()
    }

    fn s(first: usize, last: usize, kind: &str) -> (usize, usize, String) {
        (first, last, kind.to_string())
    }

    #[test]
    fn bio() {
        assert_eq!(
            spans(
                TagScheme::Bio,
                "B-ORG I-ORG O B-PER B-PER I-PER I-LOC O I-LOC"
            ),
            [
                s(0, 1, "ORG"),
                s(3, 3, "PER"),
                s(4, 5, "PER"),
                s(6, 6, "LOC"),
                s(8, 8, "LOC")
            ]
        );
        assert!(spans(TagScheme::Bio, "O O").is_empty());
    }

    #[test]
    fn iob1() {
        assert_eq!(
            spans(TagScheme::Iob1, "I-PER I-PER B-PER O I-LOC I-ORG"),
            [
                s(0, 1, "PER"),
                s(2, 2, "PER"),
                s(4, 4, "LOC"),
                s(5, 5, "ORG")
            ]
        );
    }

    #[test]
    fn bioes() {
        assert_eq!(
            spans(
                TagScheme::Bioes,
                "B-ORG I-ORG E-ORG S-PER E-PER U-LOC B-X L-X"
            ),
            [
                s(0, 2, "ORG"),
                s(3, 3, "PER"),
                s(4, 4, "PER"),
                s(5, 5, "LOC"),
                s(6, 7, "X")
            ]
        );
    }

    #[test]
    fn unknown_tags_are_errors() {
        let e = entity_spans(TagScheme::Bio, &["O", "E-PER"]).unwrap_err();
        assert!(e.to_string().contains("\"E-PER\" at position 1"), "{e}");
    }
}
