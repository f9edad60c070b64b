//! Building an index, one training sequence at a time.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, Axis};

use crate::crf::Crf;
use crate::error::{Error, Result};
use crate::index::{Column, FeatureRows, Index, SequenceColumns, Storage, TokenColumns, NO_LABEL};

/// How to build an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    pub storage: Storage,
    /// Tokens the caller expects to add in all (0 = unknown); only used as progress `total`.
    pub expected_tokens: u64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            storage: Storage::F32,
            expected_tokens: 0,
        }
    }
}

/// Progress report: called with (tokens indexed, total expected); return `false` to cancel.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64) -> bool;

/// Accumulates training sequences; [`IndexBuilder::finish`] turns it into an [`Index`].
#[derive(Debug)]
pub struct IndexBuilder {
    crf: Arc<Crf>,
    options: BuildOptions,
    features: FeatureRows,
    errors: Vec<f64>,
    instance_errors: Vec<f64>,
    labels: Vec<u32>,
    prev_labels: Vec<u32>,
    next_labels: Vec<u32>,
    positions: Vec<u32>,
    sequences: Vec<u32>,
    losses: Vec<f64>,
    entropies: Vec<f64>,
    grad_norms: Vec<f64>,
    feature_norms: Vec<f64>,
    doc_ids: Vec<u64>,
    offsets: Vec<u64>,
    bias_grads: Vec<f64>,
    transition_grads: Vec<f64>,
    start_grads: Vec<f64>,
    end_grads: Vec<f64>,
    seq_losses: Vec<f64>,
    seq_grad_norms: Vec<f64>,
}

/// One training sequence to add: caller id, features (n × d), gold labels (n).
pub struct TrainingSequence<'a> {
    pub doc_id: u64,
    pub features: ArrayView2<'a, f32>,
    pub labels: &'a [u32],
}

fn squared(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().map(|x| x * x).sum()
}

impl IndexBuilder {
    pub fn new(crf: Arc<Crf>, options: BuildOptions) -> IndexBuilder {
        IndexBuilder {
            features: FeatureRows::empty(options.storage),
            crf,
            options,
            errors: Vec::new(),
            instance_errors: Vec::new(),
            labels: Vec::new(),
            prev_labels: Vec::new(),
            next_labels: Vec::new(),
            positions: Vec::new(),
            sequences: Vec::new(),
            losses: Vec::new(),
            entropies: Vec::new(),
            grad_norms: Vec::new(),
            feature_norms: Vec::new(),
            doc_ids: Vec::new(),
            offsets: vec![0],
            bias_grads: Vec::new(),
            transition_grads: Vec::new(),
            start_grads: Vec::new(),
            end_grads: Vec::new(),
            seq_losses: Vec::new(),
            seq_grad_norms: Vec::new(),
        }
    }

    pub fn crf(&self) -> &Arc<Crf> {
        &self.crf
    }

    pub fn num_tokens(&self) -> usize {
        self.labels.len()
    }

    pub fn num_sequences(&self) -> usize {
        self.doc_ids.len()
    }

    /// Adds one training sequence. On error nothing is added.
    pub fn add(&mut self, doc_id: u64, features: ArrayView2<f32>, labels: &[u32]) -> Result<()> {
        self.add_batch(
            &[TrainingSequence {
                doc_id,
                features,
                labels,
            }],
            None,
        )
    }

    /// Adds sequences in order, reporting progress after each. On an error or a cancel, none of
    /// this batch is kept (the builder is as before the call).
    pub fn add_batch(
        &mut self,
        batch: &[TrainingSequence],
        mut progress: Option<Progress>,
    ) -> Result<()> {
        let (tokens_before, seqs_before) = (self.num_tokens(), self.num_sequences());
        let batch_tokens: u64 = batch.iter().map(|s| s.labels.len() as u64).sum();
        let total = self
            .options
            .expected_tokens
            .max(tokens_before as u64 + batch_tokens);
        for seq in batch {
            let done = self.num_tokens() as u64;
            let step = self.push(seq).and_then(|()| {
                let keep_going = match progress.as_mut() {
                    Some(report) => report(self.num_tokens() as u64, total),
                    None => true,
                };
                match keep_going {
                    true => Ok(()),
                    false => Err(Error::Cancelled(format!(
                        "the progress callback stopped the build at {done} tokens; this batch of {} sequences was not added",
                        batch.len()
                    ))),
                }
            });
            if let Err(e) = step {
                self.truncate(tokens_before, seqs_before);
                return Err(e);
            }
        }
        Ok(())
    }

    fn push(&mut self, seq: &TrainingSequence) -> Result<()> {
        let crf = Arc::clone(&self.crf);
        let (x, y) = (seq.features, seq.labels);
        let in_doc = |e: Error| match e {
            Error::ImpossibleLabels(m) => {
                Error::ImpossibleLabels(format!("doc {}: {m}", seq.doc_id))
            }
            Error::NonFinite(m) => Error::NonFinite(format!("doc {}: {m}", seq.doc_id)),
            Error::LabelOutOfRange(m) => Error::LabelOutOfRange(format!("doc {}: {m}", seq.doc_id)),
            other => other,
        };
        crf.check_sequence(x, Some(y)).map_err(in_doc)?;
        if self.options.storage == Storage::F16 {
            if let Some(i) = x.iter().position(|v| v.abs() > f32::from(half::f16::MAX)) {
                let d = crf.feature_dim();
                return Err(Error::InvalidArgument(format!(
                    "doc {}: features[{}][{}] = {} is outside the f16 range (±65504); use f32 or int8 storage",
                    seq.doc_id,
                    i / d,
                    i % d,
                    x.iter().nth(i).copied().unwrap_or(0.0)
                )));
            }
        }
        let (n, c, d) = (y.len(), crf.num_labels(), crf.feature_dim());
        if n > u32::MAX as usize || self.num_sequences() >= u32::MAX as usize {
            return Err(Error::InvalidArgument(
                "more than 2^32 - 1 tokens in a sequence or sequences in an index".into(),
            ));
        }
        let u = crf.emissions_unchecked(x);
        let (token_losses, r) = crf.token_errors_from_emissions(&u, y).map_err(in_doc)?;
        let chain = crf.chain_unchecked(&u);
        let p = chain.unary_marginals();
        let pairwise = chain.pairwise_marginals(u.view(), crf.transitions().view());

        // Whole-sequence gradient (DESIGN.md §2 with [a,b] = [0, n-1]).
        let mut big_r = p.clone();
        for t in 0..n {
            big_r[[t, y[t] as usize]] -= 1.0;
        }
        let mut grad_a = pairwise.sum_axis(Axis(0));
        if grad_a.is_empty() {
            grad_a = Array2::zeros((c, c));
        }
        for t in 1..n {
            grad_a[[y[t - 1] as usize, y[t] as usize]] -= 1.0;
        }
        let grad_b = big_r.sum_axis(Axis(0));
        let zeros = vec![0.0; c];
        let grad_s = if crf.start().is_some() {
            big_r.row(0).to_vec()
        } else {
            zeros.clone()
        };
        let grad_e = if crf.end().is_some() {
            big_r.row(n - 1).to_vec()
        } else {
            zeros.clone()
        };
        let xf = x.mapv(f64::from);
        let grad_w = big_r.t().dot(&xf); // C × d, Σ_t R_t ⊗ f_t
        let seq_norm2 = squared(grad_w.iter().copied())
            + if crf.bias().is_some() {
                squared(grad_b.iter().copied())
            } else {
                0.0
            }
            + squared(grad_a.iter().copied())
            + squared(grad_s.iter().copied())
            + squared(grad_e.iter().copied());
        let seq_loss = (chain.log_z - crf.path_score(&u, y)).max(0.0);

        let s = self.num_sequences() as u32;
        for t in 0..n {
            let rt = r.row(t);
            let prev = if t > 0 { y[t - 1] } else { NO_LABEL };
            let next = if t + 1 < n { y[t + 1] } else { NO_LABEL };
            let f_norm2 = squared(xf.row(t).iter().copied());
            let r_norm2 = squared(rt.iter().copied());
            // ‖∇CL(t,t)‖²: W block ‖r‖²‖f‖², b block ‖r‖², A block ‖[p]ȳ_p⊗r + [n]r⊗ȳ_n‖²
            // (= [p]‖r‖² + [n]‖r‖² + 2[p][n] r[p]·r[n]), s and e blocks ‖r‖² at the ends.
            let mut norm2 = r_norm2 * f_norm2;
            norm2 += if crf.bias().is_some() { r_norm2 } else { 0.0 };
            norm2 += r_norm2 * ((prev != NO_LABEL) as u8 + (next != NO_LABEL) as u8) as f64;
            if prev != NO_LABEL && next != NO_LABEL {
                norm2 += 2.0 * rt[prev as usize] * rt[next as usize];
            }
            norm2 += if crf.start().is_some() && t == 0 {
                r_norm2
            } else {
                0.0
            };
            norm2 += if crf.end().is_some() && t + 1 == n {
                r_norm2
            } else {
                0.0
            };
            let entropy: f64 = -p
                .row(t)
                .iter()
                .filter(|&&q| q > 0.0)
                .map(|&q| q * q.ln())
                .sum::<f64>();

            self.errors.extend(rt.iter());
            self.instance_errors.extend(big_r.row(t).iter());
            self.labels.push(y[t]);
            self.prev_labels.push(prev);
            self.next_labels.push(next);
            self.positions.push(t as u32);
            self.sequences.push(s);
            self.losses.push(token_losses[t]);
            self.entropies.push(entropy.max(0.0));
            self.grad_norms.push(norm2.max(0.0).sqrt());
            self.feature_norms.push(f_norm2.sqrt());
        }
        match x.as_slice() {
            Some(rows) => self.features.push_rows(rows, d),
            None => self
                .features
                .push_rows(&x.iter().copied().collect::<Vec<_>>(), d),
        }
        self.doc_ids.push(seq.doc_id);
        self.offsets.push(self.labels.len() as u64);
        self.bias_grads.extend(grad_b.iter());
        self.transition_grads.extend(grad_a.iter());
        self.start_grads.extend(grad_s);
        self.end_grads.extend(grad_e);
        self.seq_losses.push(seq_loss);
        self.seq_grad_norms.push(seq_norm2.sqrt());
        Ok(())
    }

    fn truncate(&mut self, tokens: usize, seqs: usize) {
        let c = self.crf.num_labels();
        self.features.truncate(tokens, self.crf.feature_dim());
        for v in [&mut self.errors, &mut self.instance_errors] {
            v.truncate(tokens * c);
        }
        for v in [
            &mut self.labels,
            &mut self.prev_labels,
            &mut self.next_labels,
            &mut self.positions,
            &mut self.sequences,
        ] {
            v.truncate(tokens);
        }
        for v in [
            &mut self.losses,
            &mut self.entropies,
            &mut self.grad_norms,
            &mut self.feature_norms,
        ] {
            v.truncate(tokens);
        }
        self.doc_ids.truncate(seqs);
        self.offsets.truncate(seqs + 1);
        for v in [
            &mut self.bias_grads,
            &mut self.start_grads,
            &mut self.end_grads,
        ] {
            v.truncate(seqs * c);
        }
        self.transition_grads.truncate(seqs * c * c);
        self.seq_losses.truncate(seqs);
        self.seq_grad_norms.truncate(seqs);
    }

    /// The finished index. An index with no tokens is an error (nothing to query).
    pub fn finish(self) -> Result<Index> {
        if self.labels.is_empty() {
            return Err(Error::InvalidArgument(
                "the index has no training tokens; add sequences before finishing".into(),
            ));
        }
        Ok(Index {
            crf: self.crf,
            features: self.features,
            tokens: TokenColumns {
                errors: Column::Owned(self.errors),
                instance_errors: Column::Owned(self.instance_errors),
                labels: Column::Owned(self.labels),
                prev_labels: Column::Owned(self.prev_labels),
                next_labels: Column::Owned(self.next_labels),
                positions: Column::Owned(self.positions),
                sequences: Column::Owned(self.sequences),
                losses: Column::Owned(self.losses),
                entropies: Column::Owned(self.entropies),
                grad_norms: Column::Owned(self.grad_norms),
                feature_norms: Column::Owned(self.feature_norms),
            },
            seqs: SequenceColumns {
                doc_ids: Column::Owned(self.doc_ids),
                offsets: Column::Owned(self.offsets),
                bias_grads: Column::Owned(self.bias_grads),
                transition_grads: Column::Owned(self.transition_grads),
                start_grads: Column::Owned(self.start_grads),
                end_grads: Column::Owned(self.end_grads),
                losses: Column::Owned(self.seq_losses),
                grad_norms: Column::Owned(self.seq_grad_norms),
            },
            derived: Default::default(),
        })
    }
}
