//! Allowed transitions for the usual NER tagging schemes, from label names.
//!
//! Put `-inf` where the mask says no (`Crf::with_constraints`): seginf honours it in the
//! likelihood, marginals, segment losses and Viterbi alike.

use crate::error::{Error, Result};

/// How entity spans are written as tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagScheme {
    /// BIO / IOB2: every entity starts with `B-X`; `I-X` only continues `B-X` or `I-X`.
    Bio,
    /// IOB1 (original CoNLL-2003): entities start with `I-X`; `B-X` only separates two adjacent
    /// entities of the same type, so it must follow `B-X` or `I-X`.
    Iob1,
    /// BIOES (also read as BILOU: `L-` = `E-`, `U-` = `S-`): `B-X` and `I-X` must be followed by
    /// `I-X` or `E-X`; an entity ends with `E-X`, single tokens are `S-X`.
    Bioes,
}

impl TagScheme {
    /// `"iob2"`, `"iob1"` or `"bioes"`: the names the CLI and saved models use.
    pub fn name(self) -> &'static str {
        match self {
            TagScheme::Bio => "iob2",
            TagScheme::Iob1 => "iob1",
            TagScheme::Bioes => "bioes",
        }
    }

    /// The scheme of [`TagScheme::name`], also accepting `"bio"` (IOB2) and `"bilou"` (BIOES).
    pub fn from_name(name: &str) -> Option<TagScheme> {
        match name {
            "iob2" | "bio" => Some(TagScheme::Bio),
            "iob1" => Some(TagScheme::Iob1),
            "bioes" | "bilou" => Some(TagScheme::Bioes),
            _ => None,
        }
    }
}

/// The role of a tag in its entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    Outside,
    Begin,
    Inside,
    End,
    Single,
}

/// Which transitions `[from][to]`, start labels and end labels a scheme allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintMask {
    num_labels: usize,
    transitions: Vec<bool>,
    start: Vec<bool>,
    end: Vec<bool>,
}

/// A tag's prefix and entity type (`""` for `O`); errors on a name `scheme` does not know.
pub(crate) fn parse_tag(scheme: TagScheme, name: &str) -> Result<(Prefix, &str)> {
    if name == "O" {
        return Ok((Prefix::Outside, ""));
    }
    let bad = || {
        Error::InvalidArgument(format!(
            "label {name:?} is not a {scheme:?} tag (expected \"O\" or a prefix such as \"B-\" \
             followed by a type)"
        ))
    };
    let mut chars = name.chars();
    let (letter, sep) = (chars.next().ok_or_else(bad)?, chars.next().ok_or_else(bad)?);
    if !(sep == '-' || sep == '_') {
        return Err(bad());
    }
    let kind = chars.as_str();
    if kind.is_empty() {
        return Err(bad());
    }
    let prefix = match (scheme, letter) {
        (_, 'B') => Prefix::Begin,
        (_, 'I') => Prefix::Inside,
        (TagScheme::Bioes, 'E' | 'L') => Prefix::End,
        (TagScheme::Bioes, 'S' | 'U') => Prefix::Single,
        _ => return Err(bad()),
    };
    Ok((prefix, kind))
}

impl ConstraintMask {
    /// Everything allowed.
    pub fn allow_all(num_labels: usize) -> ConstraintMask {
        ConstraintMask {
            num_labels,
            transitions: vec![true; num_labels * num_labels],
            start: vec![true; num_labels],
            end: vec![true; num_labels],
        }
    }

    /// The mask of `scheme` for labels named like `O`, `B-PER`, `I-PER` (`_` also separates).
    /// Errors on a name the scheme does not know, naming it.
    pub fn from_labels<S: AsRef<str>>(scheme: TagScheme, names: &[S]) -> Result<ConstraintMask> {
        if names.is_empty() {
            return Err(Error::InvalidArgument("no label names given".into()));
        }
        let tags = names
            .iter()
            .map(|n| parse_tag(scheme, n.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        use Prefix::*;
        let allowed = |(p, x): (Prefix, &str), (q, y): (Prefix, &str)| match scheme {
            TagScheme::Bio => q != Inside || (matches!(p, Begin | Inside) && x == y),
            TagScheme::Iob1 => q != Begin || (matches!(p, Begin | Inside) && x == y),
            TagScheme::Bioes => match p {
                Begin | Inside => matches!(q, Inside | End) && x == y,
                Outside | End | Single => matches!(q, Outside | Begin | Single),
            },
        };
        let starts = |(p, _): (Prefix, &str)| match scheme {
            TagScheme::Bio => p != Inside,
            TagScheme::Iob1 => p != Begin,
            TagScheme::Bioes => matches!(p, Outside | Begin | Single),
        };
        let ends = |(p, _): (Prefix, &str)| match scheme {
            TagScheme::Bio | TagScheme::Iob1 => true,
            TagScheme::Bioes => matches!(p, Outside | End | Single),
        };
        let c = tags.len();
        let mut mask = ConstraintMask::allow_all(c);
        for i in 0..c {
            for j in 0..c {
                mask.transitions[i * c + j] = allowed(tags[i], tags[j]);
            }
            mask.start[i] = starts(tags[i]);
            mask.end[i] = ends(tags[i]);
        }
        Ok(mask)
    }

    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    pub fn transition_allowed(&self, from: usize, to: usize) -> bool {
        self.transitions[from * self.num_labels + to]
    }

    pub fn start_allowed(&self, label: usize) -> bool {
        self.start[label]
    }

    pub fn end_allowed(&self, label: usize) -> bool {
        self.end[label]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<&str> {
        s.split(' ').collect()
    }

    #[test]
    fn bio_forbids_inside_without_begin() {
        let m = ConstraintMask::from_labels(TagScheme::Bio, &names("O B-PER I-PER B-LOC I-LOC"))
            .unwrap();
        assert!(!m.transition_allowed(0, 2)); // O -> I-PER
        assert!(m.transition_allowed(1, 2)); // B-PER -> I-PER
        assert!(m.transition_allowed(2, 2)); // I-PER -> I-PER
        assert!(!m.transition_allowed(3, 2)); // B-LOC -> I-PER
        assert!(m.transition_allowed(2, 3)); // I-PER -> B-LOC
        assert!(!m.start_allowed(2) && m.start_allowed(1) && m.end_allowed(2));
    }

    #[test]
    fn iob1_begin_only_after_same_type() {
        let m =
            ConstraintMask::from_labels(TagScheme::Iob1, &names("O I-PER B-PER I-LOC")).unwrap();
        assert!(m.transition_allowed(0, 1)); // O -> I-PER starts an entity
        assert!(!m.transition_allowed(0, 2)); // O -> B-PER
        assert!(m.transition_allowed(1, 2)); // I-PER -> B-PER separates two PERs
        assert!(!m.transition_allowed(3, 2)); // I-LOC -> B-PER
        assert!(!m.start_allowed(2) && m.start_allowed(1));
    }

    #[test]
    fn bioes_spans_must_close() {
        let m = ConstraintMask::from_labels(TagScheme::Bioes, &names("O B-X I-X E-X S-X U-Y L-Y"))
            .unwrap();
        assert!(m.transition_allowed(1, 2) && m.transition_allowed(1, 3));
        assert!(!m.transition_allowed(1, 0) && !m.transition_allowed(2, 4));
        assert!(m.transition_allowed(3, 4) && m.transition_allowed(4, 1));
        assert!(!m.transition_allowed(0, 3) && !m.transition_allowed(1, 6));
        assert!(!m.start_allowed(2) && !m.end_allowed(1) && m.end_allowed(6));
    }

    #[test]
    fn unknown_names_are_errors() {
        for bad in ["X", "B", "B-", "E-PER", "b-PER", "B+PER"] {
            let err = ConstraintMask::from_labels(TagScheme::Bio, &["O", bad]).unwrap_err();
            assert!(
                matches!(err, Error::InvalidArgument(ref m) if m.contains(bad)),
                "{bad}: {err}"
            );
        }
    }
}
