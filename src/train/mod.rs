//! Training a CRF head on fixed features: full-batch L-BFGS on `mean NLL + (λ/2)‖θ‖²` with
//! partial labels (paper Eq. 2, Tsuboi et al. 2008).

use ndarray::Array2;

/// One training sequence. `observed[t] == false` marks token t unlabelled: its label is
/// marginalised out (`labels[t]` is then ignored). Removing segment [a,b] of a sequence (paper
/// Eq. 5) is the same sequence with `observed[a..=b]` false.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSeq {
    /// n × d.
    pub features: Array2<f32>,
    pub labels: Vec<u32>,
    pub observed: Vec<bool>,
}

impl TrainSeq {
    /// A fully labelled sequence.
    pub fn labelled(features: Array2<f32>, labels: Vec<u32>) -> TrainSeq {
        let observed = vec![true; labels.len()];
        TrainSeq {
            features,
            labels,
            observed,
        }
    }
}
