//! Influence queries against an index: which training tokens (or sequences) support or oppose
//! a test segment's labels (DESIGN.md §3). Negative scores support, positive scores oppose.

mod options;
mod score;
mod topk;

use std::sync::Arc;

pub use options::{Granularity, Hessian, Normalization, QueryOptions};
pub use score::TestSegment;
pub use topk::Hit;

use crate::error::{Error, Result};
use crate::index::Index;
use score::Scratch;
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
    scratch: Scratch,
}

impl Query {
    pub fn new(index: Arc<Index>) -> Query {
        Query {
            index,
            options: QueryOptions::default(),
            scratch: Scratch::default(),
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
        let options = &self.options;
        options.check(index.crf().num_labels())?;
        let (sides, columns) = score::prepare(index.crf(), options, segments)?;
        let mut tops: Vec<TopK> = segments.iter().map(|_| TopK::new(k)).collect();
        let keep = filter(&index, options);
        let instance = options.granularity == Granularity::Instance;
        let (seq_of, positions, labels) = (
            index.tokens.sequences.as_slice(),
            index.tokens.positions.as_slice(),
            index.tokens.labels.as_slice(),
        );
        let doc_ids = index.seqs.doc_ids.as_slice();
        score::scan(
            &index,
            options,
            &sides,
            &columns,
            &mut self.scratch,
            |q, item, score| {
                if !keep(item) {
                    return;
                }
                match instance {
                    true => tops[q].offer(score, doc_ids[item], u32::MAX, item as u64, u32::MAX),
                    false => {
                        let doc = doc_ids[seq_of[item] as usize];
                        tops[q].offer(score, doc, positions[item], item as u64, labels[item])
                    }
                }
            },
        );
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

    /// Every item's score (tokens in index order, or sequences for instance granularity);
    /// items the filters exclude get NaN.
    pub fn scores(&mut self, segment: &TestSegment) -> Result<Vec<f64>> {
        let index = Arc::clone(&self.index);
        self.options.check(index.crf().num_labels())?;
        let (sides, columns) =
            score::prepare(index.crf(), &self.options, std::slice::from_ref(segment))?;
        let mut out = vec![f64::NAN; self.num_items()];
        let keep = filter(&index, &self.options);
        score::scan(
            &index,
            &self.options,
            &sides,
            &columns,
            &mut self.scratch,
            |_, item, score| {
                if keep(item) {
                    out[item] = score;
                }
            },
        );
        Ok(out)
    }
}

/// Whether an item passes the label and doc-id filters.
fn filter<'a>(index: &'a Index, options: &'a QueryOptions) -> impl Fn(usize) -> bool + 'a {
    let c = index.crf().num_labels();
    let allowed: Option<Vec<bool>> = options.labels.as_ref().map(|ls| {
        let mut v = vec![false; c];
        ls.iter().for_each(|&l| v[l as usize] = true);
        v
    });
    let excluded = &options.excluded_docs;
    let instance = options.granularity == Granularity::Instance;
    move |item| {
        let seq = if instance {
            item
        } else {
            index.tokens.sequences.as_slice()[item] as usize
        };
        if !excluded.is_empty() && excluded.contains(&index.seqs.doc_ids.as_slice()[seq]) {
            return false;
        }
        allowed
            .as_ref()
            .is_none_or(|a| a[index.tokens.labels.as_slice()[item] as usize])
    }
}
