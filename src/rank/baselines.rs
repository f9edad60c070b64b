//! The paper's §6.1 baselines: what the index already stores per token and per sequence.

use crate::index::Index;
use crate::rank::RankMethod;

/// Per-token baseline scores, index order. `method` is a token-level baseline.
pub(crate) fn token_scores(index: &Index, method: RankMethod) -> Vec<f64> {
    match method {
        RankMethod::TokenLoss => index.token_losses().to_vec(),
        RankMethod::TokenEntropy => index.token_entropies().to_vec(),
        RankMethod::TokenGradientNorm => index.token_grad_norms().to_vec(),
        _ => marginal_losses(index),
    }
}

/// `−log p(y_k|x)`: the index keeps `p(·|x) − ȳ_k` (the instance error vectors), so the gold
/// label's marginal is its entry plus one. Below ~1e-300 the marginal is clamped (the loss
/// stays finite, ~690).
fn marginal_losses(index: &Index) -> Vec<f64> {
    let c = index.crf().num_labels();
    let errors = index.tokens.instance_errors.as_slice();
    (0..index.num_tokens())
        .map(|k| {
            let p = errors[k * c + index.token_label(k) as usize] + 1.0;
            -p.max(f64::MIN_POSITIVE).ln()
        })
        .collect()
}

/// Per-sequence baseline scores. `method` is a sequence-level baseline.
pub(crate) fn sequence_scores(index: &Index, method: RankMethod) -> Vec<f64> {
    match method {
        RankMethod::InstanceGradientNorm => index.sequence_grad_norms().to_vec(),
        _ => index.sequence_losses().to_vec(),
    }
}
