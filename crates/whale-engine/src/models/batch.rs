//! Continuous batching at the model's boundary: several sequences, each with
//! its own cache, stacked into one set of rows so that the weights are read
//! once per step.

use crate::models::{KvCache, ModelError};

/// Every sequence of a batch has tokens and room for them in its cache
/// (checked before anything runs, so a failed batch advances no cache).
pub fn check_batch(seqs: &[BatchSeq<'_>]) -> Result<(), ModelError> {
    for s in seqs {
        if s.tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        s.cache.reserve(s.tokens.len())?;
    }
    Ok(())
}

/// Where a checked batch's rows go when stacked: each sequence's row range,
/// its first position (its cache length) and all tokens in order.
pub struct BatchRows {
    pub spans: Vec<std::ops::Range<usize>>,
    pub pos0: Vec<usize>,
    pub tokens: Vec<u32>,
}

impl BatchRows {
    pub fn new(seqs: &[BatchSeq<'_>]) -> Result<BatchRows, ModelError> {
        check_batch(seqs)?;
        Ok(BatchRows {
            spans: batch_spans(seqs.iter().map(|s| s.tokens.len())),
            pos0: seqs.iter().map(|s| s.cache.len).collect(),
            tokens: seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect(),
        })
    }
}

/// One sequence's part of [`Model::forward_batch`].
pub struct BatchSeq<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// Where each sequence's rows sit when the rows of a batch are stacked.
pub fn batch_spans(lens: impl IntoIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut at = 0;
    lens.into_iter()
        .map(|n| {
            at += n;
            at - n..at
        })
        .collect()
}
