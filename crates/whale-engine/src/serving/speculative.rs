//! Speculative decoding with the model's own multi-token-prediction layer
//! (DeepSeek-V3's MTP): the draft layer proposes `k` tokens, the main model
//! checks them in one forward pass over `k + 1` rows, and both caches are
//! cut back past the first rejected draft.
//!
//! Drafts are drawn from the draft layer's distribution `q` (the sampler's
//! chain applied to its logits) and checked by standard speculative
//! rejection sampling (Leviathan et al. 2023; Chen et al. 2023): draft `d`
//! is accepted with probability `min(1, p(d) / q(d))`, where `p` is the main
//! model's distribution after the same chain; at the first rejection the
//! token is drawn from `max(0, p - q)` renormalised, and when all are
//! accepted one more is drawn from `p`. Every token then follows `p`
//! exactly, whatever the drafts were; the drafts only decide how many
//! tokens one main pass yields. Greedy sampling is the special case where
//! `p` and `q` are point masses: a draft is accepted iff it is the main
//! model's argmax, and the output is the plain greedy output.
//!
//! # The invariant between the two caches
//! After each step the draft cache holds as many positions as the main
//! cache: its row `i` was computed from the main model's hidden state at
//! `i` and the token at `i + 1`, and the draft layer's logits of the last
//! row are the first draft of the next step. Drafts beyond the first feed
//! the draft layer its own output; their rows are dropped after the check
//! and recomputed from the main model's states for the positions accepted.

use crate::models::{Drafter, KvCache, Logits, Model, ModelError};
use crate::serving::sampler::{Sampler, SamplerConfig};

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
/// step: [`generate`] with a greedy sampler.
pub fn greedy(
    model: &dyn Model,
    d: &dyn Drafter,
    prompt: &[u32],
    n: usize,
    k: usize,
    capacity: usize,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<(Vec<u32>, SpecStats), ModelError> {
    let mut sampler = Sampler::new(SamplerConfig::greedy());
    generate(model, d, prompt, n, k, capacity, &mut sampler, on_token)
}

/// Generation of up to `n` tokens after `prompt` with `k` drafts a step
/// (1 ..= 8), each token following `sampler`'s distribution over the main
/// model's logits (see the module docs). `on_token` sees each token as it
/// is decided and returns `true` to stop there. `capacity` bounds both
/// caches (generation stops when the main one is full).
#[allow(clippy::too_many_arguments)]
pub fn generate(
    model: &dyn Model,
    d: &dyn Drafter,
    prompt: &[u32],
    n: usize,
    k: usize,
    capacity: usize,
    sampler: &mut Sampler,
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
    let mut history = prompt.to_vec();
    let mut main = model.new_cache(capacity);
    let mut draft: KvCache = d.new_draft_cache(capacity);
    let (mut logits, hidden) = d.forward_with_hidden(&mut main, prompt, Logits::Last)?;
    let p0 = sampler.distribution(&mut logits, &history);
    let mut t = sampler.draw(&p0);
    out.push(t);
    history.push(t);
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
        // The penalties see the drafts as history: `history` holds them
        // while they are drafted and checked, and is cut back after.
        let hist_len = history.len();
        let mut drafts = Vec::with_capacity(k);
        let mut qs = Vec::with_capacity(k);
        let mut row = dl;
        let mut last_h = dh;
        while drafts.len() < k {
            if !drafts.is_empty() {
                (row, last_h) = d.draft(&mut draft, &last_h, &drafts[drafts.len() - 1..])?;
            }
            let q = sampler.distribution(&mut row, &history);
            let x = sampler.draw(&q);
            drafts.push(x);
            history.push(x);
            qs.push(q);
        }
        history.truncate(hist_len);
        let base = main.len;
        let rows: Vec<u32> = [t].into_iter().chain(drafts.iter().copied()).collect();
        let (mut vl, vh) = d.forward_with_hidden(&mut main, &rows, Logits::All)?;
        stats.steps += 1;
        stats.drafted += drafts.len();
        let (a, bonus) = verify(sampler, &mut vl, vocab, &drafts, &qs, &mut history);
        stats.accepted += a;
        main.truncate(base + 1 + a);
        draft.truncate(base);
        let mut done = false;
        for &tok in drafts[..a].iter().chain([&bonus]) {
            out.push(tok);
            history.push(tok);
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

/// The check of one step: `rows` holds the main model's logits (`[k + 1,
/// vocab]`) after the token before the drafts and after each draft, `qs`
/// the draft layer's distribution of each draft. Drafts are accepted in
/// order with probability `min(1, p / q)`; the first rejected one is
/// replaced by a draw from the residual, and if none is, one more token is
/// drawn from the last row. Returns how many drafts were accepted and the
/// token after them. The penalties see the accepted drafts as history;
/// `history` is back to its length on return.
pub(crate) fn verify(
    sampler: &mut Sampler,
    rows: &mut [f32],
    vocab: usize,
    drafts: &[u32],
    qs: &[Vec<(u32, f32)>],
    history: &mut Vec<u32>,
) -> (usize, u32) {
    let hist_len = history.len();
    let mut a = 0;
    let token = loop {
        history.truncate(hist_len);
        history.extend_from_slice(&drafts[..a]);
        let p = sampler.distribution(&mut rows[a * vocab..(a + 1) * vocab], history);
        let Some(&x) = drafts.get(a) else {
            break sampler.draw(&p);
        };
        let (px, qx) = (prob(&p, x), prob(&qs[a], x));
        if qx > 0.0 && sampler.uniform() * qx < px {
            a += 1;
            continue;
        }
        let residual = residual(&p, &qs[a]);
        break sampler.draw(if residual.is_empty() { &p } else { &residual });
    };
    history.truncate(hist_len);
    (a, token)
}

/// The probability of `id` in a sparse distribution.
fn prob(dist: &[(u32, f32)], id: u32) -> f32 {
    dist.iter().find(|c| c.0 == id).map_or(0.0, |c| c.1)
}

/// `max(0, p - q)` renormalised (empty when `q` covers `p`).
fn residual(p: &[(u32, f32)], q: &[(u32, f32)]) -> Vec<(u32, f32)> {
    let q: std::collections::HashMap<u32, f32> = q.iter().copied().collect();
    let mut r: Vec<(u32, f32)> =
        p.iter().map(|&(id, pp)| (id, pp - q.get(&id).copied().unwrap_or(0.0))).filter(|c| c.1 > 0.0).collect();
    let sum: f32 = r.iter().map(|c| c.1).sum();
    if sum <= 0.0 {
        return Vec::new();
    }
    for c in &mut r {
        c.1 /= sum;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_is_the_renormalised_excess_of_p_over_q() {
        let p = [(1, 0.5), (2, 0.3), (3, 0.2)];
        let q = [(1, 0.7), (3, 0.1), (4, 0.2)];
        // max(0, p - q) = {2: 0.3, 3: 0.1}, renormalised to {2: 0.75, 3: 0.25}.
        let r = residual(&p, &q);
        assert_eq!(r.len(), 2);
        assert!((prob(&r, 2) - 0.75).abs() < 1e-6 && (prob(&r, 3) - 0.25).abs() < 1e-6, "{r:?}");
        // q covering p leaves nothing (the caller then draws from p).
        assert!(residual(&p, &p).is_empty());
        assert_eq!(prob(&q, 9), 0.0);
    }

    #[test]
    fn stats_rates() {
        let s = SpecStats { steps: 4, drafted: 8, accepted: 6 };
        assert_eq!(s.acceptance_rate(), 0.75);
        assert_eq!(s.tokens_per_step(), 2.5);
        assert_eq!(SpecStats::default().acceptance_rate(), 0.0);
    }
}
