//! Speculative decoding with the model's own multi-token-prediction layer
//! (DeepSeek-V3's MTP): the draft layer proposes `k` tokens, the main model
//! checks them in one forward pass over `k + 1` rows, and both caches are
//! cut back past the first rejected draft.
//!
//! Greedy only (for now): every emitted token is the main model's argmax at
//! its position, so the output is the plain greedy output whatever the
//! drafts were; the drafts only decide how many tokens one main pass
//! yields. Sampled decoding (speculative rejection sampling) is not built.
//!
//! # The invariant between the two caches
//! After each step the draft cache holds as many positions as the main
//! cache: its row `i` was computed from the main model's hidden state at
//! `i` and the token at `i + 1`, and the draft layer's logits of the last
//! row are the first draft of the next step. Drafts beyond the first feed
//! the draft layer its own output; their rows are dropped after the check
//! and recomputed from the main model's states for the positions accepted.

use crate::models::{Drafter, KvCache, Model, ModelError};
use crate::serving::sampler::argmax;

/// What one run of [`greedy`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpecStats {
    /// Main-model passes after the prompt (each yields 1 to `k + 1` tokens).
    pub steps: usize,
    /// Draft tokens proposed.
    pub drafted: usize,
    /// Draft tokens the main model agreed with.
    pub accepted: usize,
}

impl SpecStats {
    /// The share of drafts accepted (0 when none were made).
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens a main pass yielded on average.
    pub fn tokens_per_step(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            (self.steps + self.accepted) as f64 / self.steps as f64
        }
    }
}

/// Greedy generation of up to `n` tokens after `prompt` with `k` drafts a
/// step (1 ..= 8). `on_token` sees each token as it is decided and returns
/// `true` to stop there. `capacity` bounds both caches (generation stops
/// when the main one is full). The tokens are those of plain greedy
/// decoding.
pub fn greedy(
    model: &dyn Model,
    d: &dyn Drafter,
    prompt: &[u32],
    n: usize,
    k: usize,
    capacity: usize,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, SpecStats), ModelError> {
    if !(1..=8).contains(&k) {
        return Err(ModelError::Config(format!("--spec mtp:{k}: the number of drafts must be 1 to 8")));
    }
    let vocab = model.info().vocab_size;
    let h = model.info().hidden_size;
    let mut stats = SpecStats::default();
    let mut out = Vec::new();
    if n == 0 {
        return Ok((out, stats));
    }
    let mut main = model.new_cache(capacity);
    let mut draft: KvCache = d.new_draft_cache(capacity);
    let (logits, hidden) = d.forward_with_hidden(&mut main, prompt)?;
    let mut t = argmax(&logits[logits.len() - vocab..]);
    out.push(t);
    if on_token(t) || out.len() >= n || main.len >= capacity {
        return Ok((out, stats));
    }
    // The draft layer over the prompt: position i pairs the hidden state at
    // i with the token at i + 1 (the last with the token just chosen).
    let next: Vec<u32> = prompt[1..].iter().copied().chain([t]).collect();
    let (mut dl, mut dh) = d.draft(&mut draft, &hidden, &next)?;
    loop {
        // A step must leave room in the main cache for t and k drafts.
        let k = k.min(capacity.saturating_sub(main.len + 1)).min(n - out.len());
        let mut drafts = vec![argmax(&dl[dl.len() - vocab..])];
        let mut last_h = dh[dh.len() - h..].to_vec();
        while drafts.len() < k {
            let (l, hh) = d.draft(&mut draft, &last_h, &drafts[drafts.len() - 1..])?;
            drafts.push(argmax(&l));
            last_h = hh;
        }
        drafts.truncate(k);
        let base = main.len;
        let rows: Vec<u32> = [t].into_iter().chain(drafts.iter().copied()).collect();
        let (vl, vh) = d.forward_with_hidden(&mut main, &rows)?;
        stats.steps += 1;
        stats.drafted += drafts.len();
        let mut a = 0;
        while a < drafts.len() && argmax(&vl[a * vocab..(a + 1) * vocab]) == drafts[a] {
            a += 1;
        }
        stats.accepted += a;
        let bonus = argmax(&vl[a * vocab..(a + 1) * vocab]);
        main.truncate(base + 1 + a);
        draft.truncate(base);
        let mut done = false;
        for &tok in drafts[..a].iter().chain([&bonus]) {
            out.push(tok);
            if on_token(tok) || out.len() >= n {
                done = true;
                break;
            }
        }
        if done || main.len >= capacity {
            return Ok((out, stats));
        }
        t = bonus;
        // The draft layer catches up on the accepted positions from the main
        // model's states; its last row drafts the next step.
        let next: Vec<u32> = drafts[..a].iter().copied().chain([t]).collect();
        (dl, dh) = d.draft(&mut draft, &vh[..(a + 1) * h], &next)?;
    }
}
