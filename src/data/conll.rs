//! CoNLL column files: one token per line, whitespace-separated columns (the word first, the
//! label last unless said otherwise), a blank line between sentences, and `-DOCSTART-` lines
//! starting a new document (CoNLL-2003's layout).
//!
//! Labels are read in one of three schemes, or as plain tags:
//! - **IOB2** (BIO): every entity starts with `B-X`. An `I-X` that does not continue an `X`
//!   entity is an error (naming the line), since it usually means the file is IOB1.
//! - **IOB1** (original CoNLL-2003): entities start with `I-X`; `B-X` only separates two
//!   adjacent `X` entities. IOB1 files are **converted to IOB2 on read** (an `I-X` that starts
//!   an entity becomes `B-X`): models trained on them are IOB2 models, and every label a
//!   query prints is IOB2. Read the test files of such a model as IOB1 too.
//! - **BIOES** (also BILOU): `B-X` and `I-X` must be followed by `I-X` or `E-X`; single-token
//!   entities are `S-X`. Sequences that break this are errors, naming the line.
//! - plain (`scheme: None`): labels are taken as they are (POS tags, for example).

use std::path::Path;

use ndarray::{Array2, ArrayView2};

use crate::crf::{parse_tag, Prefix, TagScheme};
use crate::error::{Error, Result};

/// How to read a CoNLL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// The file's tagging scheme; `None` takes labels as they are, unchecked.
    pub scheme: Option<TagScheme>,
    /// The label's column, counted from 1 (the word is column 1); `None` = the last column.
    pub label_column: Option<usize>,
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions {
            scheme: Some(TagScheme::Bio),
            label_column: None,
        }
    }
}

/// A CoNLL file's documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conll {
    /// Where the text came from (usually its path): error messages say `source:line`.
    pub source: String,
    pub documents: Vec<ConllDocument>,
    /// The scheme of the labels held: as read, except IOB1, which is converted to IOB2.
    pub scheme: Option<TagScheme>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConllDocument {
    /// 1-based line of its `-DOCSTART-`, or of its first token when it has none.
    pub line: usize,
    pub sentences: Vec<ConllSentence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConllSentence {
    /// 1-based line of the first token; token `t` is on line `line + t`.
    pub line: usize,
    pub words: Vec<String>,
    pub labels: Vec<String>,
}

impl ConllSentence {
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

impl Conll {
    /// Reads and checks a CoNLL file (module docs); errors name `path:line`.
    pub fn read(path: &Path, options: &ReadOptions) -> Result<Conll> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
        Conll::parse(&text, &path.display().to_string(), options)
    }

    /// As [`Conll::read`], from the file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str, options: &ReadOptions) -> Result<Conll> {
        let at =
            |line: usize, message: String| Error::Format(format!("{source}:{line}: {message}"));
        if options.label_column == Some(0) {
            return Err(Error::InvalidArgument(
                "label column 0: columns are counted from 1 (the word is column 1)".into(),
            ));
        }
        let mut documents: Vec<ConllDocument> = Vec::new();
        let mut document = ConllDocument {
            line: 1,
            sentences: Vec::new(),
        };
        let mut sentence: Option<ConllSentence> = None;
        // Columns of the file's first token line, and that line: every token line must match.
        let mut width: Option<(usize, usize)> = None;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, line) in text.lines().enumerate() {
            let number = i + 1;
            let columns: Vec<&str> = line.split_whitespace().collect();
            let Some(&first) = columns.first() else {
                document.sentences.extend(sentence.take());
                continue;
            };
            if first == "-DOCSTART-" {
                document.sentences.extend(sentence.take());
                if !document.sentences.is_empty() {
                    documents.push(std::mem::replace(
                        &mut document,
                        ConllDocument {
                            line: number,
                            sentences: Vec::new(),
                        },
                    ));
                }
                document.line = number;
                continue;
            }
            match width {
                None => width = Some((columns.len(), number)),
                Some((w, first_line)) if w != columns.len() => {
                    return Err(at(
                        number,
                        format!(
                            "{} columns, but line {first_line} (the first token line) has {w}: \
                             every token line needs the same columns",
                            columns.len()
                        ),
                    ))
                }
                Some(_) => {}
            }
            if columns.len() < 2 {
                return Err(at(
                    number,
                    format!("one column ({first:?}): a token line needs a word and a label"),
                ));
            }
            let label = match options.label_column {
                None => columns[columns.len() - 1],
                Some(c) => *columns.get(c - 1).ok_or_else(|| {
                    at(
                        number,
                        format!("{} columns, no label column {c}", columns.len()),
                    )
                })?,
            };
            let s = sentence.get_or_insert_with(|| ConllSentence {
                line: number,
                words: Vec::new(),
                labels: Vec::new(),
            });
            s.words.push(first.to_string());
            s.labels.push(label.to_string());
        }
        document.sentences.extend(sentence.take());
        if !document.sentences.is_empty() {
            documents.push(document);
        }
        if documents.is_empty() {
            return Err(Error::Format(format!("{source}: no tokens")));
        }
        let mut conll = Conll {
            source: source.to_string(),
            documents,
            scheme: options.scheme,
        };
        if let Some(scheme) = options.scheme {
            for d in &mut conll.documents {
                for s in &mut d.sentences {
                    check_tags(scheme, s).map_err(|(t, m)| at(s.line + t, m))?;
                }
            }
            if scheme == TagScheme::Iob1 {
                conll.scheme = Some(TagScheme::Bio);
            }
        }
        Ok(conll)
    }

    pub fn num_tokens(&self) -> usize {
        self.sentences().map(|(_, _, s)| s.len()).sum()
    }

    pub fn num_sentences(&self) -> usize {
        self.documents.iter().map(|d| d.sentences.len()).sum()
    }

    /// Every sentence in file order, with its document and its index in the document.
    pub fn sentences(&self) -> impl Iterator<Item = (usize, usize, &ConllSentence)> {
        self.documents.iter().enumerate().flat_map(|(d, doc)| {
            doc.sentences
                .iter()
                .enumerate()
                .map(move |(s, x)| (d, s, x))
        })
    }

    /// Sentence `sentence` of document `document` (both from 0), or an error saying how many
    /// there are.
    pub fn sentence(&self, document: usize, sentence: usize) -> Result<&ConllSentence> {
        let doc = self.documents.get(document).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no document {document} (it has {}, counted from 0)",
                self.source,
                self.documents.len()
            ))
        })?;
        doc.sentences.get(sentence).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: document {document} (line {}) has no sentence {sentence} (it has {}, counted from 0)",
                self.source,
                doc.line,
                doc.sentences.len()
            ))
        })
    }

    /// The distinct labels, `O` first, then by entity type and B, I, E, S order (plain tags
    /// alphabetically): a stable label-id order for a model trained on this file.
    pub fn label_names(&self) -> Vec<String> {
        let mut names: Vec<&str> = self
            .sentences()
            .flat_map(|(_, _, s)| s.labels.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let key = |name: &str| match self.scheme.map(|scheme| parse_tag(scheme, name)) {
            Some(Ok((prefix, kind))) => (kind.to_string(), prefix as usize, name.to_string()),
            _ => (name.to_string(), 0, String::new()),
        };
        names.sort_by_cached_key(|n| key(n));
        names.into_iter().map(str::to_string).collect()
    }

    /// Every sentence's labels as ids into `names` (a model's label list). Errors name the
    /// line of a label that is not in `names`.
    pub fn label_ids<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<Vec<u32>>> {
        let lookup: std::collections::HashMap<&str, u32> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_ref(), i as u32))
            .collect();
        self.sentences()
            .map(|(_, _, s)| {
                s.labels
                    .iter()
                    .enumerate()
                    .map(|(t, label)| {
                        lookup.get(label.as_str()).copied().ok_or_else(|| {
                            let known: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
                            Error::Format(format!(
                                "{}:{}: label {label:?} is not one of the model's labels ({})",
                                self.source,
                                s.line + t,
                                known.join(", ")
                            ))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Splits a feature matrix with one row per token of this file (file order, across
    /// documents and sentences) into one matrix per sentence. `features_source` names the
    /// matrix in errors. Errors on a row count other than the token count and on non-finite
    /// values, naming the line of the token concerned.
    pub fn split_features(
        &self,
        features: ArrayView2<f32>,
        features_source: &str,
    ) -> Result<Vec<Array2<f32>>> {
        let (rows, tokens) = (features.nrows(), self.num_tokens());
        let mut out = Vec::with_capacity(self.num_sentences());
        let mut row = 0;
        for (_, _, s) in self.sentences() {
            if row + s.len() > rows {
                let t = rows - row;
                return Err(Error::Format(format!(
                    "{}:{}: token {} of {tokens} ({:?}) has no feature row: {features_source} has {rows} rows",
                    self.source,
                    s.line + t,
                    rows + 1,
                    s.words[t]
                )));
            }
            let x = features.slice(ndarray::s![row..row + s.len(), ..]);
            if let Some(i) = x.iter().position(|v| !v.is_finite()) {
                let (t, j) = (i / x.ncols(), i % x.ncols());
                return Err(Error::NonFinite(format!(
                    "{features_source}: row {}, column {j} is {} (the features of {:?} at {}:{})",
                    row + t,
                    x[[t, j]],
                    s.words[t],
                    self.source,
                    s.line + t
                )));
            }
            out.push(x.to_owned());
            row += s.len();
        }
        if rows > tokens {
            let last = self
                .sentences()
                .last()
                .map_or(0, |(_, _, s)| s.line + s.len() - 1);
            return Err(Error::Format(format!(
                "{features_source} has {rows} rows, one per token is {tokens}: {} ends with its \
                 last token on line {last}",
                self.source
            )));
        }
        Ok(out)
    }

    /// The file in CoNLL form again: `-DOCSTART- O` before each document, then `word label`
    /// lines with a blank line after each sentence.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for d in &self.documents {
            out.push_str("-DOCSTART- O\n\n");
            for s in &d.sentences {
                for (w, l) in s.words.iter().zip(&s.labels) {
                    out.push_str(w);
                    out.push(' ');
                    out.push_str(l);
                    out.push('\n');
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Checks one sentence's tags against `scheme` and converts IOB1 to IOB2 in place. On error:
/// the token's position in the sentence and the message.
fn check_tags(
    scheme: TagScheme,
    s: &mut ConllSentence,
) -> std::result::Result<(), (usize, String)> {
    let mut tags = Vec::with_capacity(s.len());
    for (t, label) in s.labels.iter().enumerate() {
        let (prefix, kind) = parse_tag(scheme, label).map_err(|_| {
            let hint = match scheme {
                TagScheme::Bioes => "O or B-, I-, E-, S- (or BILOU's L-, U-) and a type",
                _ => "O or B-, I- and a type",
            };
            (
                t,
                format!(
                    "label {label:?} is not a {} tag (expected {hint}; other tag sets: scheme none)",
                    scheme.name().to_uppercase()
                ),
            )
        })?;
        tags.push((prefix, kind.to_string()));
    }
    use Prefix::*;
    let n = tags.len();
    let mut converted = Vec::new();
    for t in 0..n {
        let (p, kind) = (tags[t].0, tags[t].1.as_str());
        let prev = t.checked_sub(1).map(|u| (tags[u].0, tags[u].1.as_str()));
        let continues = |allowed: &[Prefix]| {
            prev.is_some_and(|(q, other)| allowed.contains(&q) && other == kind)
        };
        let after = || match t {
            0 => "starts the sentence".to_string(),
            _ => format!("follows {:?}", s.labels[t - 1]),
        };
        match scheme {
            TagScheme::Bio if p == Inside && !continues(&[Begin, Inside]) => {
                return Err((
                    t,
                    format!(
                        "{:?} {}: IOB2 starts every entity with B- (is the file IOB1? read it as iob1)",
                        s.labels[t],
                        after()
                    ),
                ));
            }
            TagScheme::Iob1 if p == Inside && !continues(&[Begin, Inside]) => {
                converted.push((t, format!("B{}", &s.labels[t][1..])));
            }
            TagScheme::Bioes => {
                let open = prev.is_some_and(|(q, _)| matches!(q, Begin | Inside));
                let ok = match p {
                    Inside | End => continues(&[Begin, Inside]),
                    Outside | Begin | Single => !open,
                };
                if !ok {
                    return Err((
                        t,
                        format!(
                            "{:?} {}: BIOES entities are B- I-… E- or S-",
                            s.labels[t],
                            after()
                        ),
                    ));
                }
                if t + 1 == n && matches!(p, Begin | Inside) {
                    return Err((
                        t,
                        format!(
                            "{:?} ends the sentence: a BIOES entity ends with E- or S-",
                            s.labels[t]
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    for (t, label) in converted {
        s.labels[t] = label;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, scheme: Option<TagScheme>) -> Result<Conll> {
        Conll::parse(
            text,
            "t.conll",
            &ReadOptions {
                scheme,
                label_column: None,
            },
        )
    }

    fn labels(c: &Conll) -> Vec<Vec<&str>> {
        c.sentences()
            .map(|(_, _, s)| s.labels.iter().map(String::as_str).collect())
            .collect()
    }

    fn error(result: Result<Conll>) -> String {
        match result {
            Ok(c) => panic!("expected an error, read {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const CONLL2003: &str = "\
-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
";

    #[test]
    fn documents_sentences_and_lines() {
        let c = parse(CONLL2003, Some(TagScheme::Iob1)).unwrap();
        assert_eq!(c.documents.len(), 2);
        assert_eq!((c.num_sentences(), c.num_tokens()), (3, 9));
        assert_eq!(c.documents[0].line, 1);
        assert_eq!(c.documents[1].line, 12);
        assert_eq!(c.documents[1].sentences[0].line, 14);
        let s = &c.documents[0].sentences[1];
        assert_eq!(s.line, 9);
        assert_eq!(s.words, ["Peter", "Blackburn"]);
        assert_eq!(c.sentence(1, 0).unwrap().words, ["BRUSSELS", "1996-08-22"]);
        assert!(c
            .sentence(1, 1)
            .unwrap_err()
            .to_string()
            .contains("no sentence 1"));
        assert!(c
            .sentence(2, 0)
            .unwrap_err()
            .to_string()
            .contains("no document 2"));
        let ids: Vec<(usize, usize)> = c.sentences().map(|(d, s, _)| (d, s)).collect();
        assert_eq!(ids, [(0, 0), (0, 1), (1, 0)]);
    }

    #[test]
    fn iob1_is_converted_to_iob2() {
        let c = parse(CONLL2003, Some(TagScheme::Iob1)).unwrap();
        assert_eq!(c.scheme, Some(TagScheme::Bio));
        assert_eq!(
            labels(&c),
            [
                vec!["B-ORG", "O", "B-MISC", "O", "O"],
                vec!["B-PER", "I-PER"],
                vec!["B-LOC", "O"]
            ]
        );
        // B- separates two adjacent entities of a type; an I- after another type starts one.
        let c = parse(
            "a I-PER\nb B-PER\nc I-PER\nd I-LOC\n",
            Some(TagScheme::Iob1),
        )
        .unwrap();
        assert_eq!(labels(&c), [vec!["B-PER", "B-PER", "I-PER", "B-LOC"]]);
        assert_eq!(c.label_names(), ["B-LOC", "B-PER", "I-PER"]);
    }

    #[test]
    fn iob2_is_checked_and_iob1_files_are_named() {
        let c = parse("a B-PER\nb I-PER\nc O\n\nd B_LOC\n", Some(TagScheme::Bio)).unwrap();
        assert_eq!(labels(&c), [vec!["B-PER", "I-PER", "O"], vec!["B_LOC"]]);
        let e = error(parse(CONLL2003, Some(TagScheme::Bio)));
        assert!(e.contains("t.conll:3:") && e.contains("iob1"), "{e}");
        let e = error(parse("a B-PER\nb I-LOC\n", Some(TagScheme::Bio)));
        assert!(
            e.contains("t.conll:2:") && e.contains("follows \"B-PER\""),
            "{e}"
        );
        let e = error(parse("a O\nb S-LOC\n", Some(TagScheme::Bio)));
        assert!(e.contains("t.conll:2:") && e.contains("\"S-LOC\""), "{e}");
    }

    #[test]
    fn bioes_is_checked() {
        let ok = "a B-ORG\nb I-ORG\nc E-ORG\nd S-PER\ne O\n\nf U-LOC\n";
        let c = parse(ok, Some(TagScheme::Bioes)).unwrap();
        assert_eq!(c.scheme, Some(TagScheme::Bioes));
        assert_eq!(
            c.label_names(),
            ["O", "U-LOC", "B-ORG", "I-ORG", "E-ORG", "S-PER"]
        );
        for (bad, line) in [
            ("a B-ORG\nb O\n", 2),
            ("a O\nb E-ORG\n", 2),
            ("a B-ORG\nb E-LOC\n", 2),
            ("a S-ORG\nb I-ORG\nc E-ORG\n", 2),
            ("a O\nb B-ORG\n", 2),
            ("a I-ORG\n", 1),
        ] {
            let e = error(parse(bad, Some(TagScheme::Bioes)));
            assert!(e.contains(&format!("t.conll:{line}:")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn plain_tags_are_taken_as_they_are() {
        let c = parse("The DT\ndog NN\nbarks VBZ\n", None).unwrap();
        assert_eq!(c.label_names(), ["DT", "NN", "VBZ"]);
        assert_eq!(c.scheme, None);
    }

    #[test]
    fn label_column_and_blank_lines() {
        let text = "\n\n  \nEU NNP I-ORG\r\nrejects VBZ O\n\n\n\nx NN O\n\n";
        let opts = ReadOptions {
            scheme: None,
            label_column: Some(2),
        };
        let c = Conll::parse(text, "t", &opts).unwrap();
        assert_eq!(labels(&c), [vec!["NNP", "VBZ"], vec!["NN"]]);
        assert_eq!(c.documents.len(), 1);
        assert_eq!(c.documents[0].sentences[1].line, 9);
        let opts = ReadOptions {
            label_column: Some(4),
            ..opts
        };
        let e = Conll::parse(text, "t", &opts).unwrap_err().to_string();
        assert!(e.contains("t:4:") && e.contains("no label column 4"), "{e}");
        let opts = ReadOptions {
            label_column: Some(0),
            ..opts
        };
        assert!(Conll::parse(text, "t", &opts).is_err());
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = error(parse("a B-PER\nb I-PER\n\nc x O\n", None));
        assert!(
            e.contains("t.conll:4:") && e.contains("3 columns") && e.contains("line 1"),
            "{e}"
        );
        let e = error(parse("a O\nlonely\n", None));
        assert!(e.contains("t.conll:2:"), "{e}");
        let e = error(parse("lonely\n", None));
        assert!(
            e.contains("t.conll:1:") && e.contains("needs a word and a label"),
            "{e}"
        );
        let e = error(parse("\n-DOCSTART- O\n\n", None));
        assert!(e.contains("no tokens"), "{e}");
    }

    #[test]
    fn docstart_without_tokens_makes_no_empty_document() {
        let c = parse(
            "-DOCSTART- O\n\n-DOCSTART- O\n\na O\n\n-DOCSTART- O\n",
            None,
        )
        .unwrap();
        assert_eq!(c.documents.len(), 1);
        assert_eq!(c.documents[0].line, 3);
        // Tokens before the first -DOCSTART- form document 0.
        let c = parse("a O\n\n-DOCSTART- O\nb O\n", None).unwrap();
        assert_eq!(c.documents.len(), 2);
        assert_eq!(c.documents[1].sentences[0].line, 4);
    }

    #[test]
    fn unknown_labels_name_the_line() {
        let c = parse("a B-PER\nb O\n\nc B-LOC\n", Some(TagScheme::Bio)).unwrap();
        let ids = c.label_ids(&["O", "B-PER", "B-LOC"]).unwrap();
        assert_eq!(ids, [vec![1, 0], vec![2]]);
        let e = c.label_ids(&["O", "B-PER"]).unwrap_err().to_string();
        assert!(e.contains("t.conll:4:") && e.contains("\"B-LOC\""), "{e}");
    }

    #[test]
    fn features_are_split_by_sentence_and_checked() {
        let c = parse("a O\nb O\n\nc O\n", None).unwrap();
        let x = Array2::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f32);
        let parts = c.split_features(x.view(), "f.npy").unwrap();
        assert_eq!(parts[0], x.slice(ndarray::s![0..2, ..]));
        assert_eq!(parts[1], x.slice(ndarray::s![2..3, ..]));
        let e = c
            .split_features(x.slice(ndarray::s![0..2, ..]), "f.npy")
            .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("t.conll:4:") && e.contains("f.npy has 2 rows"),
            "{e}"
        );
        let four = Array2::zeros((4, 2));
        let e = c
            .split_features(four.view(), "f.npy")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.npy has 4 rows") && e.contains("line 4"),
            "{e}"
        );
        let mut bad = x.clone();
        bad[[1, 1]] = f32::NAN;
        let e = c
            .split_features(bad.view(), "f.npy")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 1, column 1") && e.contains("t.conll:2"),
            "{e}"
        );
    }

    #[test]
    fn text_round_trip() {
        let c = parse(CONLL2003, Some(TagScheme::Iob1)).unwrap();
        let again = parse(&c.to_text(), Some(TagScheme::Bio)).unwrap();
        assert_eq!(labels(&again), labels(&c));
        let words = |c: &Conll| {
            c.sentences()
                .map(|(_, _, s)| s.words.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(words(&again), words(&c));
        assert_eq!(again.documents.len(), 2);
    }
}
