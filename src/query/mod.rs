//! Influence queries against an index: which training tokens (or sequences) support or oppose
//! a test segment's labels (DESIGN.md §3). Negative scores support, positive scores oppose.

mod options;
pub(crate) mod ranking;
pub(crate) mod score;
mod topk;

use std::sync::Arc;

pub use options::{
    FactoredGradient, Granularity, Hessian, InverseHessian, Normalization, QueryOptions,
};
pub use score::TestSegment;
pub use topk::Hit;

use crate::error::{Error, Result};
use crate::index::Index;
use topk::TopK;

/// Supporting (most negative first) and opposing (most positive first) hits of one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct TopHits {
    pub supporting: Vec<Hit>,
    pub opposing: Vec<Hit>,
}

/// A prepared query over one index: options and scratch space. One thread at a time; make one
/// per thread to query a shared index concurrently.
pub struct Query {
    index: Arc<Index>,
    pub options: QueryOptions,
    fallbacks: usize,
}

impl Query {
    pub fn new(index: Arc<Index>) -> Query {
        Query {
            index,
            options: QueryOptions::default(),
            fallbacks: 0,
        }
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The number of scores [`Query::scores`] returns: tokens, or sequences for instance
    /// granularity.
    pub fn num_items(&self) -> usize {
        match self.options.granularity {
            Granularity::Instance => self.index.num_sequences(),
            _ => self.index.num_tokens(),
        }
    }

    /// How many segments of the last `run`/`run_batch` needed the exact fallback scan (the
    /// f32 ranking pass could not prove its top k; ties at the cut are the usual reason).
    pub fn exact_fallbacks(&self) -> usize {
        self.fallbacks
    }

    /// The `k` most supporting and `k` most opposing training items for one test segment.
    /// Fewer than `k` when the filters leave fewer items; a supporting hit's score may be ≥ 0
    /// when fewer than `k` items have negative scores (and likewise for opposing).
    pub fn run(&mut self, segment: &TestSegment, k: usize) -> Result<TopHits> {
        let mut all = self.run_batch(std::slice::from_ref(segment), k)?;
        all.pop()
            .ok_or_else(|| Error::InvalidArgument("no segment".into()))
    }

    /// As [`Query::run`] for many segments, scored in one pass over the index.
    pub fn run_batch(&mut self, segments: &[TestSegment], k: usize) -> Result<Vec<TopHits>> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        if segments.is_empty() {
            return Err(Error::InvalidArgument("no test segments given".into()));
        }
        let index = Arc::clone(&self.index);
        // More than every item is every item (and keeps the heaps' sizes sane).
        let k = k.min(self.num_items());
        let options = &self.options;
        options.check(index.crf().num_labels())?;
        let prep = score::prepare(index.crf(), options, segments)?;
        let keep = filter(&index, options);
        let instance = options.granularity == Granularity::Instance;
        let (seq_of, positions, labels) = (
            index.tokens.sequences.as_slice(),
            index.tokens.positions.as_slice(),
            index.tokens.labels.as_slice(),
        );
        let doc_ids = index.seqs.doc_ids.as_slice();
        let offer = |top: &mut TopK, item: usize, score: f64| match instance {
            // Most scores fall between the cuts: skip gathering their ids.
            _ if !top.admits(score) => {}
            true => top.offer(score, doc_ids[item], u32::MAX, item as u64, u32::MAX),
            false => top.offer(
                score,
                doc_ids[seq_of[item] as usize],
                positions[item],
                item as u64,
                labels[item],
            ),
        };
        // On a pool thread from the start: the scan and the rescoring's parallel loops then
        // run nested, instead of the caller's thread waiting on (and being woken from) each
        // in turn (0.1–0.2 ms a query, measured on a small index).
        let (tops, fallbacks) =
            rayon::scope(|_| score::top_k(&index, options, &prep, k, &keep, &offer));
        self.fallbacks = fallbacks;
        Ok(tops
            .into_iter()
            .map(|t| {
                let (supporting, opposing) = t.into_hits();
                TopHits {
                    supporting,
                    opposing,
                }
            })
            .collect())
    }

    /// Every item's exact score (tokens in index order, or sequences for instance
    /// granularity); items the filters exclude get NaN.
    pub fn scores(&mut self, segment: &TestSegment) -> Result<Vec<f64>> {
        let index = Arc::clone(&self.index);
        self.options.check(index.crf().num_labels())?;
        let prep = score::prepare(index.crf(), &self.options, std::slice::from_ref(segment))?;
        let keep = filter(&index, &self.options);
        let mut out = score::exact_scores(&index, &self.options, &prep, 0);
        out.iter_mut()
            .enumerate()
            .filter(|(i, _)| !keep(*i))
            .for_each(|(_, v)| *v = f64::NAN);
        Ok(out)
    }
}

/// Whether an item passes the label and doc-id filters, decided once per run for all items.
fn filter<'a>(index: &'a Index, options: &'a QueryOptions) -> impl Fn(usize) -> bool + Sync + 'a {
    let instance = options.granularity == Granularity::Instance;
    let mask: Option<Vec<bool>> = (options.labels.is_some() || !options.excluded_docs.is_empty())
        .then(|| {
            let c = index.crf().num_labels();
            let mut allowed = vec![options.labels.is_none(); c];
            options
                .labels
                .iter()
                .flatten()
                .for_each(|&l| allowed[l as usize] = true);
            let doc_ok: Vec<bool> = index
                .sequence_doc_ids()
                .iter()
                .map(|d| !options.excluded_docs.contains(d))
                .collect();
            match instance {
                true => doc_ok,
                false => {
                    let (seq_of, labels) = (
                        index.tokens.sequences.as_slice(),
                        index.tokens.labels.as_slice(),
                    );
                    (0..index.num_tokens())
                        .map(|k| doc_ok[seq_of[k] as usize] && allowed[labels[k] as usize])
                        .collect()
                }
            }
        });
    move |item| mask.as_ref().is_none_or(|m| m[item])
}
