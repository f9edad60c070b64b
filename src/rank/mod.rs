//! Finding bad training labels (paper §6.1–6.2): a misannotation score for every training token
//! (and sequence), aggregated per training document by mean and max, from the loss/entropy/
//! gradient-norm baselines or from influence on a small clean (expert-labelled) set.
//!
//! Higher scores mean "more likely mislabelled" for every method. The influence-based scores
//! follow the paper: a training token is suspect when including it *raises* the loss of clean
//! tokens (positive, opposing influence), or when its features look like clean tokens of
//! another label. Use unnormalised influence here (DESIGN.md §3: noisy labels are the
//! large-gradient tokens normalisation buries).

mod baselines;
mod transposed;

use ndarray::ArrayView2;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::query::{Hessian, Normalization, QueryOptions};

/// How training items are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RankMethod {
    /// Token conditional loss `CL(k,k)` (given the neighbouring labels).
    TokenLoss,
    /// Token marginal loss `−log p(y_k|x)` (neighbours marginalised out).
    TokenMarginalLoss,
    /// Entropy of the model's marginal label distribution of the token.
    TokenEntropy,
    /// `‖∇_θ CL(k,k)‖₂`.
    TokenGradientNorm,
    /// The whole sequence's loss `−log p(y|x)`.
    InstanceLoss,
    /// `‖∇_θ −log p(y|x)‖₂` of the whole sequence.
    InstanceGradientNorm,
    /// Mean of the `top` largest segment influences on the clean tokens (needs a clean set).
    SegmentInfluence,
    /// Mean of the `top` largest feature dot products with clean tokens of a different label
    /// (needs a clean set).
    SegmentNearest,
    /// Instance influence averaged over the clean sequences (needs a clean set).
    InstanceInfluence,
}

impl RankMethod {
    pub const ALL: [RankMethod; 9] = [
        RankMethod::TokenLoss,
        RankMethod::TokenMarginalLoss,
        RankMethod::TokenEntropy,
        RankMethod::TokenGradientNorm,
        RankMethod::InstanceLoss,
        RankMethod::InstanceGradientNorm,
        RankMethod::SegmentInfluence,
        RankMethod::SegmentNearest,
        RankMethod::InstanceInfluence,
    ];

    /// The method's name on the command line and in reports (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            RankMethod::TokenLoss => "token-loss",
            RankMethod::TokenMarginalLoss => "token-marginal-loss",
            RankMethod::TokenEntropy => "token-entropy",
            RankMethod::TokenGradientNorm => "token-gradient-norm",
            RankMethod::InstanceLoss => "instance-loss",
            RankMethod::InstanceGradientNorm => "instance-gradient-norm",
            RankMethod::SegmentInfluence => "segment-influence",
            RankMethod::SegmentNearest => "segment-nearest",
            RankMethod::InstanceInfluence => "instance-influence",
        }
    }

    pub fn from_name(name: &str) -> Option<RankMethod> {
        RankMethod::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method reads the clean set (the others ignore it).
    pub fn needs_clean(self) -> bool {
        matches!(
            self,
            RankMethod::SegmentInfluence
                | RankMethod::SegmentNearest
                | RankMethod::InstanceInfluence
        )
    }

    /// Whether the method scores whole sequences (then documents aggregate sequences, and each
    /// token carries its sequence's score).
    pub fn per_sequence(self) -> bool {
        matches!(
            self,
            RankMethod::InstanceLoss
                | RankMethod::InstanceGradientNorm
                | RankMethod::InstanceInfluence
        )
    }
}

/// One clean (expert-labelled) validation sequence.
#[derive(Debug, Clone, Copy)]
pub struct CleanSequence<'a> {
    /// n × d.
    pub features: ArrayView2<'a, f32>,
    /// n labels.
    pub labels: &'a [u32],
}

/// Settings of [`rank_training`].
#[derive(Debug, Clone)]
pub struct RankOptions {
    pub method: RankMethod,
    /// How many of a training token's largest influences (or similarities) are averaged
    /// (paper: 10).
    pub top: usize,
    /// The Hessian of the influence methods (ignored by the others).
    pub hessian: Hessian,
    /// Normalisation of the influence methods (ignored by the others; nearest neighbours
    /// refuse gradient-norm normalisation).
    pub normalization: Normalization,
    /// Documents are the training items' `doc_id >> doc_id_shift` (0: every doc id is a
    /// document; 32 when doc ids are `document << 32 | sentence`). At most 63.
    pub doc_id_shift: u32,
    /// Let the segment methods on an f32/f16 index rank through the index's i16 ranking copy
    /// (as batches do, [`crate::query::QueryOptions::ranking_copy`]): the integer GEMM, built
    /// once per index, 2·d + 4 bytes per token. Results are exact either way.
    pub ranking_copy: bool,
}

impl Default for RankOptions {
    fn default() -> Self {
        RankOptions {
            method: RankMethod::SegmentInfluence,
            top: 10,
            hessian: Hessian::Identity { damping: 1.0 },
            normalization: Normalization::None,
            doc_id_shift: 0,
            ranking_copy: true,
        }
    }
}

/// Which per-document aggregate orders a ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Mean,
    Max,
}

/// A training document's aggregated score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocScore {
    /// `doc_id >> doc_id_shift`.
    pub doc_id: u64,
    /// Mean and max over the document's items (tokens, or sequences for per-sequence
    /// methods) with a finite score; NaN when it has none.
    pub mean: f64,
    pub max: f64,
    /// Items with a finite score.
    pub items: usize,
}

/// The scores of one method.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub method: RankMethod,
    /// One per training token, in index order (per-sequence methods: the sequence's score).
    /// NaN where a score is undefined (nearest neighbours with no clean token of another label).
    pub token_scores: Vec<f64>,
    /// One per training sequence for per-sequence methods.
    pub sequence_scores: Option<Vec<f64>>,
    /// Every document, most suspect first by mean (NaN last, ties by doc id).
    pub documents: Vec<DocScore>,
}

impl Ranking {
    /// The documents ordered by `aggregate`, most suspect first (NaN last, ties by doc id).
    pub fn documents_by(&self, aggregate: Aggregate) -> Vec<DocScore> {
        let mut docs = self.documents.clone();
        sort_documents(&mut docs, aggregate);
        docs
    }
}

fn sort_documents(docs: &mut [DocScore], aggregate: Aggregate) {
    let key = |d: &DocScore| match aggregate {
        Aggregate::Mean => d.mean,
        Aggregate::Max => d.max,
    };
    docs.sort_by(|a, b| {
        let (x, y) = (key(a), key(b));
        // Descending, NaN after every number.
        (x.is_nan().cmp(&y.is_nan()))
            .then(y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal))
            .then(a.doc_id.cmp(&b.doc_id))
    });
}

/// Scores every training token (and sequence) of `index` by `options.method` and ranks the
/// documents. `clean` is read by the influence-based methods only ([`RankMethod::needs_clean`]).
pub fn rank_training(
    index: &Index,
    options: &RankOptions,
    clean: &[CleanSequence],
) -> Result<Ranking> {
    if options.top == 0 {
        return Err(Error::InvalidArgument("top must be at least 1".into()));
    }
    if options.doc_id_shift > 63 {
        return Err(Error::InvalidArgument(format!(
            "doc_id_shift = {}, at most 63",
            options.doc_id_shift
        )));
    }
    let query = QueryOptions {
        hessian: options.hessian.clone(),
        normalization: options.normalization,
        ranking_copy: options.ranking_copy,
        ..QueryOptions::default()
    };
    let method = options.method;
    let (token_scores, sequence_scores) = match method.per_sequence() {
        false => {
            let tokens = match method {
                RankMethod::SegmentInfluence => {
                    transposed::segment_influence(index, &query, clean, options.top)?
                }
                RankMethod::SegmentNearest => {
                    if options.normalization != Normalization::None {
                        return Err(Error::InvalidArgument(
                            "segment nearest-neighbour ranking takes no normalisation".into(),
                        ));
                    }
                    transposed::segment_nearest(index, &query, clean, options.top)?
                }
                other => baselines::token_scores(index, other),
            };
            (tokens, None)
        }
        true => {
            let seqs = match method {
                RankMethod::InstanceInfluence => {
                    transposed::instance_influence(index, &query, clean)?
                }
                other => baselines::sequence_scores(index, other),
            };
            let mut tokens = vec![0.0; index.num_tokens()];
            for (s, &score) in seqs.iter().enumerate() {
                tokens[index.sequence_tokens(s)].fill(score);
            }
            (tokens, Some(seqs))
        }
    };
    let items: Vec<(u64, f64)> = match &sequence_scores {
        Some(seqs) => index
            .sequence_doc_ids()
            .iter()
            .zip(seqs)
            .map(|(&d, &v)| (d, v))
            .collect(),
        None => (0..index.num_tokens())
            .map(|k| (index.token_id(k).0, token_scores[k]))
            .collect(),
    };
    let mut documents = aggregate(&items, options.doc_id_shift);
    sort_documents(&mut documents, Aggregate::Mean);
    Ok(Ranking {
        method,
        token_scores,
        sequence_scores,
        documents,
    })
}

/// Mean and max of the finite scores per `doc_id >> shift`, documents in order of first
/// appearance.
fn aggregate(items: &[(u64, f64)], shift: u32) -> Vec<DocScore> {
    let mut at = std::collections::HashMap::new();
    let mut docs: Vec<(DocScore, f64)> = Vec::new();
    for &(doc_id, score) in items {
        let key = doc_id >> shift;
        let i = *at.entry(key).or_insert_with(|| {
            docs.push((
                DocScore {
                    doc_id: key,
                    mean: f64::NAN,
                    max: f64::NAN,
                    items: 0,
                },
                0.0,
            ));
            docs.len() - 1
        });
        if score.is_finite() {
            let (doc, sum) = &mut docs[i];
            doc.items += 1;
            *sum += score;
            doc.max = if doc.items == 1 {
                score
            } else {
                doc.max.max(score)
            };
        }
    }
    docs.into_iter()
        .map(|(mut doc, sum)| {
            if doc.items > 0 {
                doc.mean = sum / doc.items as f64;
            }
            doc
        })
        .collect()
}

/// The number of documents `rank_training` reports for this index and shift.
pub fn num_documents(index: &Index, doc_id_shift: u32) -> Result<usize> {
    if doc_id_shift > 63 {
        return Err(Error::InvalidArgument(format!(
            "doc_id_shift = {doc_id_shift}, at most 63"
        )));
    }
    let keys: std::collections::HashSet<u64> = index
        .sequence_doc_ids()
        .iter()
        .map(|d| d >> doc_id_shift)
        .collect();
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_skips_non_finite_scores_and_groups_by_shifted_ids() {
        let items = [
            (1 << 32, 1.0),
            ((1 << 32) | 1, 3.0),
            (0, f64::NAN),
            (2 << 32, -1.0),
        ];
        let docs = aggregate(&items, 32);
        assert_eq!(docs.len(), 3);
        assert_eq!((docs[0].doc_id, docs[0].mean, docs[0].max), (1, 2.0, 3.0));
        assert_eq!(docs[0].items, 2);
        assert!(docs[1].mean.is_nan() && docs[1].items == 0);
        let mut sorted = docs.clone();
        sort_documents(&mut sorted, Aggregate::Mean);
        let order: Vec<u64> = sorted.iter().map(|d| d.doc_id).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn names_round_trip() {
        for m in RankMethod::ALL {
            assert_eq!(RankMethod::from_name(m.name()), Some(m));
        }
        assert_eq!(RankMethod::from_name("loss"), None);
    }
}
