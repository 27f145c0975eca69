//! The generation loop: prompt ids → prefill → sample → stream text, with stop
//! conditions (end-of-generation tokens, stop strings, a token budget).
//!
//! A [`Session`] owns a KV cache and remembers which tokens it holds, so a
//! new prompt that starts with the same tokens (the earlier turns of a chat)
//! only computes what is new.

use crate::models::{KvCache, Logits, Model, ModelError};
use crate::serving::sampler::{top_k, Sampler, SamplerConfig};
use crate::serving::stop::StopScanner;
use crate::text::tokenizer::{StreamDecoder, Tokenizer};

/// Longest batch given to one forward pass during prefill (bounds memory).
pub const PREFILL_CHUNK: usize = 512;

/// A KV cache and the tokens it holds.
pub struct Session {
    pub cache: KvCache,
    pub tokens: Vec<u32>,
    /// With speculative decoding, the draft layer's cache: its row `i` pairs
    /// the main model's state at `i` with the token at `i + 1`, so it holds
    /// at most as many rows as `cache`, and often fewer (rows wait for their
    /// next token).
    pub draft: Option<KvCache>,
}

impl Session {
    pub fn new(model: &dyn Model, capacity: usize) -> Session {
        Session { cache: model.new_cache(capacity), tokens: Vec::new(), draft: None }
    }

    /// A session with a draft cache for speculative decoding.
    pub fn with_draft(model: &dyn Model, drafter: &dyn crate::models::Drafter, capacity: usize) -> Session {
        Session { draft: Some(drafter.new_draft_cache(capacity)), ..Session::new(model, capacity) }
    }

    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keep the first `n` tokens (and their rows in both caches).
    pub fn truncate(&mut self, n: usize) {
        self.cache.truncate(n);
        self.tokens.truncate(n);
        if let Some(d) = &mut self.draft {
            d.truncate(n);
        }
    }

    /// Feed tokens (all of them; reuse of a common prefix is the caller's
    /// choice, see [`Session::prefill`]) and return the last token's logits.
    pub fn feed(&mut self, model: &dyn Model, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.cache.reserve(tokens.len())?;
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = model.forward(&mut self.cache, chunk, Logits::Last)?;
            self.tokens.extend_from_slice(chunk);
        }
        Ok(logits)
    }

    /// Bring the cache to hold exactly `prompt`, reusing the longest common
    /// prefix already cached, and return the logits after its last token.
    /// Returns the logits and how many prompt tokens came from the cache.
    pub fn prefill(&mut self, model: &dyn Model, prompt: &[u32]) -> Result<(Vec<f32>, usize), ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let common = self.tokens.iter().zip(prompt).take_while(|(a, b)| a == b).count();
        // At least the last prompt token is recomputed: its logits are needed.
        let reuse = common.min(prompt.len() - 1);
        self.cache.truncate(reuse);
        self.tokens.truncate(reuse);
        let logits = self.feed(model, &prompt[reuse..])?;
        Ok((logits, reuse))
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these; the stop
    /// string itself is not part of the text.
    pub stop: Vec<String>,
    /// Stop at the model's end-of-generation tokens.
    pub stop_at_eog: bool,
    /// Report this many top (id, logit) pairs with each step.
    pub top_logits: usize,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        GenerateRequest {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
            stop_at_eog: true,
            top_logits: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token budget (or the context) ran out.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// One generated token, as streamed to the caller.
#[derive(Clone, Debug)]
pub struct Step {
    pub id: u32,
    /// Text that became final with this token (may be empty: half a character,
    /// or text held back because it might start a stop string).
    pub text: String,
    /// The top (id, raw logit) pairs before sampling, highest first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub generated_ids: Vec<u32>,
    pub text: String,
    pub steps: Vec<Step>,
    pub finish: FinishReason,
    /// Prompt tokens whose KV came from the session's cache.
    pub cached_prompt_tokens: usize,
}

/// Generation of `prompt` with speculative decoding by the model's MTP
/// layer, `k` drafts a step ([`crate::serving::speculative`]): the text,
/// stop handling and callback of [`generate`], tokens from the same
/// distribution (with a greedy sampler, the same tokens), in its own
/// caches (no session: nothing is kept for a next prompt). Without
/// `top_logits` (the checked rows are not all kept).
#[allow(clippy::too_many_arguments)]
pub fn generate_speculative(
    model: &dyn Model,
    drafter: &dyn crate::models::Drafter,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    req: &GenerateRequest,
    k: usize,
    capacity: usize,
    mut on_step: impl FnMut(&Step) -> bool,
) -> Result<(Generation, crate::serving::speculative::SpecStats), ModelError> {
    if req.top_logits > 0 {
        return Err(ModelError::Config("speculative decoding does not report top logits".into()));
    }
    let mut em = Emitter::new(tokenizer, req);
    if req.max_tokens == 0 {
        return Ok((em.out, Default::default()));
    }
    let mut sampler = Sampler::new(req.sampler.clone());
    let (_, stats) = crate::serving::speculative::generate(
        model,
        drafter,
        prompt,
        req.max_tokens,
        k,
        capacity,
        &mut sampler,
        &mut |id| em.push(id, Vec::new(), &mut on_step).is_some(),
    )?;
    Ok((em.out, stats))
}

/// Turns generated ids into [`Step`]s and text, as both generation loops
/// need: end-of-generation tokens, the streaming decoder, stop strings,
/// the token budget and the caller's callback.
struct Emitter<'a> {
    tokenizer: &'a Tokenizer,
    req: &'a GenerateRequest,
    decoder: StreamDecoder<'a>,
    scanner: StopScanner,
    out: Generation,
}

impl<'a> Emitter<'a> {
    fn new(tokenizer: &'a Tokenizer, req: &'a GenerateRequest) -> Emitter<'a> {
        Emitter {
            tokenizer,
            req,
            decoder: StreamDecoder::new(tokenizer),
            scanner: StopScanner::new(req.stop.clone()),
            out: Generation {
                generated_ids: Vec::new(),
                text: String::new(),
                steps: Vec::new(),
                finish: FinishReason::Length,
                cached_prompt_tokens: 0,
            },
        }
    }

    /// Records token `id`; `Some(reason)` (also set as the finish reason)
    /// when generation ends with it.
    fn push(&mut self, id: u32, top: Vec<(u32, f32)>, on_step: &mut impl FnMut(&Step) -> bool) -> Option<FinishReason> {
        self.out.generated_ids.push(id);
        let eog = self.req.stop_at_eog && self.tokenizer.is_eog(id);
        // The end-of-generation token itself is not part of the text.
        let piece = if eog { self.decoder.flush() } else { self.decoder.push(id) };
        let (mut text, hit_stop) = self.scanner.push(&piece);
        let done_len = self.out.generated_ids.len() >= self.req.max_tokens;
        if eog || done_len {
            text.push_str(&self.scanner.finish());
        }
        let step = Step { id, text, top };
        self.out.text.push_str(&step.text);
        let go_on = on_step(&step);
        self.out.steps.push(step);
        let finish = if eog || hit_stop {
            FinishReason::Stop
        } else if done_len {
            FinishReason::Length
        } else if !go_on {
            FinishReason::Cancelled
        } else {
            return None;
        };
        self.out.finish = finish;
        Some(finish)
    }
}

/// Generate from `prompt` in `session`. `on_step` sees each token as it comes
/// and returns `false` to stop early.
pub fn generate(
    model: &dyn Model,
    tokenizer: &Tokenizer,
    session: &mut Session,
    prompt: &[u32],
    req: &GenerateRequest,
    mut on_step: impl FnMut(&Step) -> bool,
) -> Result<Generation, ModelError> {
    let mut sampler = Sampler::new(req.sampler.clone());
    let mut em = Emitter::new(tokenizer, req);
    if req.max_tokens == 0 {
        return Ok(em.out);
    }
    let (mut logits, cached) = session.prefill(model, prompt)?;
    em.out.cached_prompt_tokens = cached;
    let mut history = prompt.to_vec();
    loop {
        let top = if req.top_logits > 0 { top_k(&logits, req.top_logits) } else { Vec::new() };
        let id = sampler.sample(&mut logits, &history);
        history.push(id);
        if em.push(id, top, &mut on_step).is_some() {
            break;
        }
        if session.cache.len + 1 > session.cache.capacity {
            em.out.finish = FinishReason::Length;
            break;
        }
        logits = session.feed(model, &[id])?;
    }
    Ok(em.out)
}
