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

/// The rows that the last block has to finish when only the last logits of
/// each sequence are read (`Logits::Last`): the last row of each span. The
/// other rows still write their cache entries in that block, but their
/// queries, attention, output projection and feed-forward would only feed
/// logits nobody reads (llama.cpp skips the last layer's feed-forward for
/// them the same way).
pub struct OutputRows {
    /// Row index of each kept row in the full stack.
    pub rows: Vec<usize>,
    /// The kept rows' spans: one row each.
    pub spans: Vec<std::ops::Range<usize>>,
}

impl OutputRows {
    /// The last row of each span; `None` when every span is one row (a
    /// decode step), where there is nothing to drop.
    pub fn last_of(spans: &[std::ops::Range<usize>]) -> Option<OutputRows> {
        spans.iter().any(|s| s.len() > 1).then(|| OutputRows {
            rows: spans.iter().map(|s| s.end - 1).collect(),
            spans: batch_spans(spans.iter().map(|_| 1)),
        })
    }

    /// Rows `self.rows` of `x` (`[_, width]`), stacked.
    pub fn gather(&self, x: &[f32], width: usize) -> Vec<f32> {
        self.rows.iter().flat_map(|&t| &x[t * width..(t + 1) * width]).copied().collect()
    }

    /// `v[t]` for each kept row `t`.
    pub fn pick<T: Copy>(&self, v: &[T]) -> Vec<T> {
        self.rows.iter().map(|&t| v[t]).collect()
    }
}
