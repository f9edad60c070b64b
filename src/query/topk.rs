//! Both ends of the score distribution in one pass: the k most negative (supporting) and the
//! k most positive (opposing) scores, ties broken by `(doc_id, position)` and then by the
//! index's own order, so results are deterministic and shard merges are exact.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A scored training item (a token, or a sequence for instance influence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub doc_id: u64,
    /// Position in the training sequence; `u32::MAX` for a whole sequence.
    pub position: u32,
    /// The training token's label; `u32::MAX` for a whole sequence.
    pub label: u32,
    pub score: f64,
}

/// Total order on f64 (inputs are validated, so NaN never occurs; `total_cmp` keeps it safe).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f64);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Tie-break identity: caller ids first, then the index row (unique).
type Id = (u64, u32, u64);

/// Keeps the `k` smallest items of a max-heap (its top is the worst one kept).
#[inline]
fn push_bounded<T: Ord>(heap: &mut BinaryHeap<T>, item: T, k: usize) {
    if heap.len() < k {
        heap.push(item);
    } else if let Some(mut top) = heap.peek_mut() {
        // Replacing the top in place sifts once, where pop + push sifted twice.
        if item < *top {
            *top = item;
        }
    }
}

/// Max-heaps whose top is the worst entry kept, so a better candidate replaces it.
pub(crate) struct TopK {
    k: usize,
    /// Once an end is full: scores strictly past both cuts cannot enter either end.
    low_cut: f64,
    high_cut: f64,
    supporting: BinaryHeap<(Score, Id, u32)>,
    opposing: BinaryHeap<(Reverse<Score>, Id, u32)>,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            low_cut: f64::INFINITY,
            high_cut: f64::NEG_INFINITY,
            // Grow on demand: a chunk may see far fewer items than k.
            supporting: BinaryHeap::with_capacity(k.min(1024) + 1),
            opposing: BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    /// Whether `score` could enter either end (false for most scores once both are full):
    /// callers check this before gathering the item's ids.
    #[inline]
    pub fn admits(&self, score: f64) -> bool {
        !(score > self.low_cut && score < self.high_cut)
    }

    /// `(low, high)`: a score strictly between them cannot enter either end ([`TopK::admits`]).
    #[inline]
    pub fn cuts(&self) -> (f64, f64) {
        (self.low_cut, self.high_cut)
    }

    /// Narrows the cuts to `(low, high)` where those are tighter, e.g. another task's
    /// ([`SharedCuts`]): scores past them are then refused even before this keeper is full.
    pub fn narrow(&mut self, (low, high): (f64, f64)) {
        self.low_cut = self.low_cut.min(low);
        self.high_cut = self.high_cut.max(high);
    }

    /// Offers one score to both ends.
    #[inline]
    pub fn offer(&mut self, score: f64, doc_id: u64, position: u32, row: u64, label: u32) {
        if score > self.low_cut && score < self.high_cut {
            return; // the common case once both ends are full
        }
        let id = (doc_id, position, row);
        push_bounded(&mut self.supporting, (Score(score), id, label), self.k);
        push_bounded(
            &mut self.opposing,
            (Reverse(Score(score)), id, label),
            self.k,
        );
        self.update_cuts();
    }

    fn update_cuts(&mut self) {
        if let Some(s) = self.kth_supporting() {
            self.low_cut = s;
        }
        if let Some(s) = self.kth_opposing() {
            self.high_cut = s;
        }
    }

    /// Merges another TopK (e.g. a shard's) into this one.
    pub fn merge(&mut self, other: TopK) {
        for entry in other.supporting {
            push_bounded(&mut self.supporting, entry, self.k);
        }
        for entry in other.opposing {
            push_bounded(&mut self.opposing, entry, self.k);
        }
        self.update_cuts();
    }

    /// Whether both ends hold k entries.
    pub fn is_full(&self) -> bool {
        self.supporting.len() == self.k && self.opposing.len() == self.k
    }

    /// The largest score kept at the supporting end (its k-th best when full).
    pub fn worst_supporting(&self) -> Option<f64> {
        self.supporting.peek().map(|e| e.0 .0)
    }

    /// The smallest score kept at the opposing end.
    pub fn worst_opposing(&self) -> Option<f64> {
        self.opposing.peek().map(|e| e.0 .0 .0)
    }

    /// The k-th best supporting score, when k are kept.
    pub fn kth_supporting(&self) -> Option<f64> {
        (self.supporting.len() == self.k)
            .then(|| self.worst_supporting())
            .flatten()
    }

    /// The k-th best opposing score, when k are kept.
    pub fn kth_opposing(&self) -> Option<f64> {
        (self.opposing.len() == self.k)
            .then(|| self.worst_opposing())
            .flatten()
    }

    /// The index rows kept at either end (each once).
    pub fn items(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self
            .supporting
            .iter()
            .map(|e| e.1 .2 as usize)
            .chain(self.opposing.iter().map(|e| e.1 .2 as usize))
            .collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// (supporting, opposing), each best first: most negative first, most positive first.
    pub fn into_hits(self) -> (Vec<Hit>, Vec<Hit>) {
        let hit = |score: f64, (doc_id, position, _): Id, label: u32| Hit {
            doc_id,
            position,
            label,
            score,
        };
        let supporting = self
            .supporting
            .into_sorted_vec()
            .into_iter()
            .map(|(s, id, l)| hit(s.0, id, l))
            .collect();
        let opposing = self
            .opposing
            .into_sorted_vec()
            .into_iter()
            .map(|(Reverse(s), id, l)| hit(s.0, id, l))
            .collect();
        (supporting, opposing)
    }
}

/// The tightest cuts of the keepers that parallel tasks fill for one query. Any task's k-th
/// best supporting score is at least the merged keepers' k-th best (the task's k items are
/// among those merged), so a score strictly past it cannot enter the merged top k; sharing
/// the cuts lets every task refuse such scores at once instead of filling its own keepers
/// first (18 keepers per single query took ~9k offers where the merged result needs ~1k).
pub(crate) struct SharedCuts {
    low: AtomicU64,
    high: AtomicU64,
}

/// f64 → u64 preserving the order of non-NaN values (negative values bit-flipped, positive
/// ones with the sign bit set), so that `fetch_min`/`fetch_max` work on the bits.
fn ordered(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn from_ordered(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

impl SharedCuts {
    pub fn new() -> SharedCuts {
        SharedCuts {
            low: AtomicU64::new(ordered(f64::INFINITY)),
            high: AtomicU64::new(ordered(f64::NEG_INFINITY)),
        }
    }

    /// [`SharedCuts::exchange`] for each query's keeper: `shared[q]` with `tops[q]`.
    pub fn exchange_all(shared: &[SharedCuts], tops: &mut [TopK]) {
        for (shared, top) in shared.iter().zip(tops) {
            shared.exchange(top);
        }
    }

    /// Publishes `top`'s cuts (no-ops until an end is full) and narrows `top` to the
    /// tightest published.
    pub fn exchange(&self, top: &mut TopK) {
        let (low, high) = top.cuts();
        let low = self.low.fetch_min(ordered(low), Relaxed).min(ordered(low));
        let high = self
            .high
            .fetch_max(ordered(high), Relaxed)
            .max(ordered(high));
        top.narrow((from_ordered(low), from_ordered(high)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_keys_keep_the_order_of_floats() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE,
            -0.0,
            0.0,
            5e-324,
            1.0,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered(w[0]) <= ordered(w[1]), "{} {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(from_ordered(ordered(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn shared_cuts_give_the_merged_result() {
        // Two tasks' keepers over halves of the scores, narrowed by each other's cuts: their
        // merge equals one keeper over all scores, and the second task offers fewer.
        let scores: Vec<f64> = (0..400)
            .map(|i| ((i * 7919) % 401) as f64 - 200.0)
            .collect();
        let mut one = TopK::new(5);
        for (i, &s) in scores.iter().enumerate() {
            one.offer(s, i as u64, 0, i as u64, 0);
        }
        let shared = SharedCuts::new();
        let (mut a, mut b) = (TopK::new(5), TopK::new(5));
        let mut admitted = [0, 0];
        for (t, (top, half)) in [(&mut a, 0..200), (&mut b, 200..400)]
            .into_iter()
            .enumerate()
        {
            for i in half {
                if i % 10 == 0 {
                    shared.exchange(top);
                }
                admitted[t] += usize::from(top.admits(scores[i]));
                top.offer(scores[i], i as u64, 0, i as u64, 0);
            }
        }
        assert!(admitted[1] < admitted[0], "{admitted:?}");
        a.merge(b);
        assert_eq!(a.into_hits(), one.into_hits());
    }

    #[test]
    fn keeps_both_ends_with_deterministic_ties() {
        let mut top = TopK::new(3);
        let scores = [0.5, -2.0, 3.0, -2.0, 0.0, 3.0, -1.0, 7.0];
        for (i, &s) in scores.iter().enumerate() {
            top.offer(s, 10 - i as u64, 0, i as u64, 0);
        }
        let (sup, opp) = top.into_hits();
        let s: Vec<(f64, u64)> = sup.iter().map(|h| (h.score, h.doc_id)).collect();
        let o: Vec<(f64, u64)> = opp.iter().map(|h| (h.score, h.doc_id)).collect();
        // -2.0 twice: doc 7 (i = 3) before doc 9 (i = 1).
        assert_eq!(s, vec![(-2.0, 7), (-2.0, 9), (-1.0, 4)]);
        // 3.0 twice: doc 5 (i = 5) before doc 8 (i = 2).
        assert_eq!(o, vec![(7.0, 3), (3.0, 5), (3.0, 8)]);
    }

    #[test]
    fn merging_shards_equals_one_pass() {
        let scores: Vec<f64> = (0..200)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        let mut whole = TopK::new(10);
        let (mut a, mut b) = (TopK::new(10), TopK::new(10));
        for (i, &s) in scores.iter().enumerate() {
            whole.offer(s, i as u64 % 13, i as u32, i as u64, 1);
            let shard = if i % 2 == 0 { &mut a } else { &mut b };
            shard.offer(s, i as u64 % 13, i as u32, i as u64, 1);
        }
        a.merge(b);
        assert_eq!(a.into_hits(), whole.into_hits());
    }
}
