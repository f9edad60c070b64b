//! Viterbi decoding (max-product in log space), honouring `-inf` like the other inference.

use ndarray::ArrayView2;

use crate::crf::forward_backward::no_labelling;
use crate::crf::Crf;
use crate::error::Result;

impl Crf {
    /// The highest-scoring labelling and its score `S(y*)` (not normalised by `log Z`).
    /// Ties go to the smaller label index, so the result is deterministic.
    /// Errors with `ImpossibleLabels` when the constraints allow no labelling at all.
    pub fn viterbi(&self, features: ArrayView2<f32>) -> Result<(Vec<u32>, f64)> {
        let u = self.emissions(features)?;
        let (n, c) = u.dim();
        let a = self.transitions();
        let mut delta: Vec<f64> = (0..c).map(|j| self.start_score(j) + u[[0, j]]).collect();
        let mut next = vec![0.0; c];
        let mut back = vec![0u32; n * c];
        for t in 1..n {
            for j in 0..c {
                let (mut best, mut arg) = (f64::NEG_INFINITY, 0usize);
                for (i, &d) in delta.iter().enumerate() {
                    let s = d + a[[i, j]];
                    if s > best {
                        (best, arg) = (s, i);
                    }
                }
                next[j] = best + u[[t, j]];
                back[t * c + j] = arg as u32;
            }
            std::mem::swap(&mut delta, &mut next);
        }
        let (mut best, mut last) = (f64::NEG_INFINITY, 0usize);
        for (j, &d) in delta.iter().enumerate() {
            let s = d + self.end_score(j);
            if s > best {
                (best, last) = (s, j);
            }
        }
        if best == f64::NEG_INFINITY {
            return Err(no_labelling(n));
        }
        let mut path = vec![0u32; n];
        path[n - 1] = last as u32;
        for t in (1..n).rev() {
            path[t - 1] = back[t * c + path[t] as usize];
        }
        Ok((path, best))
    }
}
