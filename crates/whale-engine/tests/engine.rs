//! The serving engine on real weights: the tiny DeepSeek-V3 GGUF (real
//! 129,280-token vocabulary, random weights; fast) and SmolLM2-135M.
//!
//! What must hold: a greedy request gives the same tokens as the plain
//! generation loop, alone or among others, with or without a prefix-cache hit;
//! cancelling frees the slot; the queue bound is enforced; JSON mode yields
//! JSON.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use whale_engine::models::{load, LoadOptions, LoadedModel};
use whale_engine::serving::engine::{Done, EngineConfig, EngineHandle, Event, SubmitError, ValidRequest};
use whale_engine::serving::generate::{generate, FinishReason, GenerateRequest, Session};
use whale_engine::serving::sampler::SamplerConfig;
use whale_engine::text::constraint::{ConstraintEnv, Grammar};

fn tiny_deepseek() -> LoadedModel {
    let path = common::hf_reference().join("gguf/dsv3_a_qlora_yarn_v129280.f32.gguf");
    load(&path, LoadOptions { threads: 1, ..Default::default() }).expect("load the tiny DeepSeek GGUF")
}

fn config(parallel: usize, max_queue: usize) -> EngineConfig {
    EngineConfig { parallel, max_queue, ctx: 512, cache_bytes: 64 << 20, spec_drafts: 0 }
}

fn start(m: LoadedModel, cfg: EngineConfig) -> (EngineHandle, Arc<whale_engine::text::tokenizer::Tokenizer>) {
    let tok = Arc::new(m.tokenizer);
    (EngineHandle::start(m.model, tok.clone(), cfg), tok)
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> ValidRequest {
    ValidRequest {
        prompt,
        max_tokens,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eog: false,
        logprobs: None,
        constraint: None,
        images: None,
    }
}

/// Everything a request produced: (generated ids, text, Done).
fn collect(stream: whale_engine::serving::engine::EventStream) -> (Vec<u32>, String, Done) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    for ev in stream {
        match ev {
            Event::Started { .. } => {}
            Event::Token(t) => {
                ids.push(t.id);
                text.push_str(&t.text);
            }
            Event::Done(d) => return (ids, text, d),
            Event::Failed(m) => panic!("request failed: {m}"),
        }
    }
    panic!("stream ended without Done");
}

/// Prompts of different lengths over the real vocabulary (no shared prefix).
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| (0..(3 + 5 * i) as u32).map(|j| 1000 + 7919 * (i as u32 + 1) * (j + 1) % 120_000).collect())
        .collect()
}

#[test]
fn greedy_matches_the_generation_loop_alone_and_in_a_batch() {
    let m = tiny_deepseek();
    // Reference: the plain loop, one fresh session per prompt.
    let reference: Vec<Vec<u32>> = prompts(8)
        .into_iter()
        .map(|p| {
            let mut s = Session::new(m.model.as_ref(), 512);
            let req = GenerateRequest {
                max_tokens: 12,
                sampler: SamplerConfig::greedy(),
                stop_at_eog: false,
                ..GenerateRequest::default()
            };
            generate(m.model.as_ref(), &m.tokenizer, &mut s, &p, &req, |_| true).unwrap().generated_ids
        })
        .collect();
    let (engine, _) = start(m, EngineConfig { cache_bytes: 0, ..config(8, 8) });
    // Alone, one after the other.
    for (p, want) in prompts(8).into_iter().zip(&reference) {
        let (ids, _, done) = collect(engine.submit(greedy(p, 12), None).unwrap());
        assert_eq!(&ids, want);
        assert_eq!((done.finish, done.completion_tokens), (FinishReason::Length, 12));
    }
    // All eight at once, sharing the steps.
    let streams: Vec<_> = prompts(8).into_iter().map(|p| engine.submit(greedy(p, 12), None).unwrap()).collect();
    for (s, want) in streams.into_iter().zip(&reference) {
        assert_eq!(&collect(s).0, want);
    }
}

#[test]
fn prefix_cache_hit_gives_the_same_tokens() {
    let m = tiny_deepseek();
    let (engine, _) = start(m, config(2, 4));
    let system: Vec<u32> = (0..300).map(|i| 2000 + i * 13).collect();
    let with = |tail: &[u32]| [system.as_slice(), tail].concat();
    // Fresh: nothing cached.
    let (a, _, done_a) = collect(engine.submit(greedy(with(&[50, 51, 52]), 8), None).unwrap());
    assert_eq!(done_a.cached_tokens, 0);
    // Another prompt with the same 300-token start reuses them.
    let (b, _, done_b) = collect(engine.submit(greedy(with(&[60, 61]), 8), None).unwrap());
    assert_eq!(done_b.cached_tokens, 300);
    assert_eq!(done_b.prompt_tokens, 302);
    // The first prompt again: everything but its last token is cached
    // (its session went back to the pool)... and the tokens are the same.
    let (a2, _, done_a2) = collect(engine.submit(greedy(with(&[50, 51, 52]), 8), None).unwrap());
    assert!(done_a2.cached_tokens >= 300, "{done_a2:?}");
    assert_eq!(a2, a);
    // The second prompt again. Its session went on with the first prompt
    // (they differ in their last few tokens only, so it was taken over, not
    // copied): the 300 shared tokens come from the cache.
    let (b2, _, done_b2) = collect(engine.submit(greedy(with(&[60, 61]), 8), None).unwrap());
    assert_eq!(done_b2.cached_tokens, 300);
    assert_eq!(b2, b);
    // While a request with a new 200-token prefix runs, a second one with the
    // same prefix copies it out of the running session.
    let other: Vec<u32> = (0..200).map(|i| 3000 + i * 7).collect();
    let running = engine.submit(greedy([other.as_slice(), &[70, 71, 72, 73]].concat(), 40), None).unwrap();
    assert!(matches!(running.recv(), Some(Event::Started { .. })));
    assert!(matches!(running.recv(), Some(Event::Token(_))));
    let (_, _, done_c) = collect(engine.submit(greedy([other.as_slice(), &[80, 81]].concat(), 8), None).unwrap());
    assert_eq!(done_c.cached_tokens, 200);
    drop(running);
    let stats = engine.stats();
    assert!(stats.cache_hit_tokens >= 600, "{stats:?}");
    assert!(stats.cached_sessions >= 1);
}

/// Requests that alternate between a few system prompts (tenants) which share
/// only their first tokens (the template's): each finds its own prefix again.
/// A partial match is copied out of the cached session, which stays for the
/// prompts it still serves; taking it over would cut it to the shared start.
#[test]
fn alternating_system_prompts_each_stay_cached() {
    let (engine, _) = start(tiny_deepseek(), config(1, 4));
    let template = [7u32, 8, 9, 10, 11];
    let tenants: Vec<Vec<u32>> = (0..3u32)
        .map(|t| [&template[..], &(0..150).map(|i| 5000 + t * 1000 + i).collect::<Vec<u32>>()].concat())
        .collect();
    for round in 0..3u32 {
        for (t, system) in tenants.iter().enumerate() {
            let prompt = [system.as_slice(), &[90 + round, 91 + round]].concat();
            let (_, _, done) = collect(engine.submit(greedy(prompt, 4), None).unwrap());
            let want = if round == 0 {
                if t == 0 {
                    0
                } else {
                    template.len()
                }
            } else {
                system.len()
            };
            assert_eq!(done.cached_tokens, want, "round {round}, tenant {t}");
        }
    }
    // Each tenant's session went on with its next question: one each.
    assert_eq!(engine.stats().cached_sessions, 3);
}

#[test]
fn cache_is_bounded_by_bytes() {
    let m = tiny_deepseek();
    // Room for about one 256-token session of this model (3 layers x 40
    // values, f16: the default cache type).
    let per_session = 3 * 40 * 2 * 256;
    let (engine, _) = start(m, EngineConfig { cache_bytes: per_session, ..config(1, 4) });
    for p in prompts(4) {
        collect(engine.submit(greedy(p, 4), None).unwrap());
    }
    let s = engine.stats();
    assert!(s.cached_bytes <= per_session, "{s:?}");
    assert!(s.cached_sessions <= 1, "{s:?}");
}

#[test]
fn dropping_the_stream_frees_the_slot_and_queue_is_bounded() {
    let m = tiny_deepseek();
    let (engine, _) = start(m, config(1, 1));
    let long = engine.submit(greedy(vec![5, 6, 7], 400), None).unwrap();
    // Wait until it runs.
    match long.recv() {
        Some(Event::Started { .. }) => {}
        other => panic!("expected Started, got {other:?}"),
    }
    let queued = engine.submit(greedy(vec![8, 9], 2), None).unwrap();
    let refused = engine.submit(greedy(vec![8, 9], 2), None);
    assert!(matches!(refused, Err(SubmitError::QueueFull { in_flight: 2 })), "{:?}", refused.err());
    // Cancel the long one after a token: the queued one gets the slot and ends.
    assert!(matches!(long.recv(), Some(Event::Token(_))));
    drop(long);
    let t0 = Instant::now();
    let (_, _, done) = collect(queued);
    assert_eq!(done.completion_tokens, 2);
    assert!(t0.elapsed() < Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while engine.stats().running + engine.stats().waiting > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = engine.stats();
    assert_eq!((s.running, s.waiting, s.cancelled), (0, 0, 1), "{s:?}");
    // The slot is free again.
    collect(engine.submit(greedy(vec![8, 9], 2), None).unwrap());
}

#[test]
fn bad_requests_are_refused_at_submit() {
    let (engine, _) = start(tiny_deepseek(), config(1, 1));
    assert_eq!(engine.submit(greedy(vec![], 4), None).err(), Some(SubmitError::EmptyPrompt));
    assert_eq!(engine.submit(greedy(vec![1], 0), None).err(), Some(SubmitError::NoTokens));
    assert_eq!(
        engine.submit(greedy(vec![1; 500], 13), None).err(),
        Some(SubmitError::TooLong { prompt: 500, max_tokens: 13, ctx: 512 })
    );
    assert_eq!(
        engine.submit(greedy(vec![1, 999_999], 1), None).err(),
        Some(SubmitError::TokenOutOfRange { id: 999_999, vocab: 129_280 })
    );
}

#[test]
fn stop_strings_logprobs_and_seeds() {
    let m = tiny_deepseek();
    let (engine, tok) = start(m, config(2, 2));
    let prompt = vec![100, 200, 300];
    let (ids, text, _) = collect(engine.submit(greedy(prompt.clone(), 10), None).unwrap());
    assert_eq!(text, tok.decode(&ids));
    // Stop at a piece of the greedy text: the text ends right before it.
    let cut = text.char_indices().nth(text.chars().count() / 2).map(|(i, _)| i).unwrap();
    let stop = text[cut..].chars().take(3).collect::<String>();
    let want = &text[..text.find(&stop).unwrap()];
    let req = ValidRequest { stop: vec![stop.clone()], ..greedy(prompt.clone(), 10) };
    let (_, stopped, done) = collect(engine.submit(req, None).unwrap());
    assert_eq!(stopped, want, "stop {stop:?}");
    assert_eq!(done.finish, FinishReason::Stop);
    // Log-probabilities: the greedy token is the top alternative, and the
    // alternatives are sorted and are log-probabilities (≤ 0).
    let req = ValidRequest { logprobs: Some(3), ..greedy(prompt.clone(), 4) };
    for ev in engine.submit(req, None).unwrap() {
        if let Event::Token(t) = ev {
            let lp = t.logprob.expect("logprob");
            assert_eq!(lp.top.len(), 3);
            assert_eq!(lp.top[0].0, t.id);
            assert_eq!(lp.top[0].1, lp.logprob);
            assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1) && lp.top[0].1 <= 0.0);
        }
    }
    // A seed repeats a sampled output; another seed gives another one.
    let sampled = |seed| {
        let sampler = SamplerConfig {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: Some(seed),
            ..SamplerConfig::default()
        };
        collect(engine.submit(ValidRequest { sampler, ..greedy(prompt.clone(), 12) }, None).unwrap()).0
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));
}

/// JSON mode and a JSON schema through the engine on a real model: greedy
/// output, with every draw masked by the grammar, parses and follows the
/// schema, and generation ends when the object closes.
#[test]
fn json_mode_and_schema_outputs_are_json() {
    let m = common::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = load(&m, LoadOptions::default()).unwrap();
    let env = ConstraintEnv::new(&m.tokenizer).unwrap();
    let prompt_text = "<|im_start|>user\nGive me a JSON object describing a cat, with name and age.<|im_end|>\n<|im_start|>assistant\n";
    let prompt = m.tokenizer.encode(prompt_text, false).unwrap();
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let object = env.compile(&Grammar::JsonObject, None).unwrap();
    let with_schema = env.compile(&Grammar::JsonSchema(schema), None).unwrap();
    let (engine, _) = start(m, config(2, 2));
    let run = |c| {
        let req = ValidRequest { constraint: Some(c), stop_at_eog: true, ..greedy(prompt.clone(), 64) };
        collect(engine.submit(req, None).unwrap())
    };
    let (_, text, done) = run(object);
    assert!(text.trim_start().starts_with('{'), "{text:?}");
    assert_eq!(done.finish, FinishReason::Stop, "{text:?}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert!(v.is_object(), "{text:?}");

    let (_, text, done) = run(with_schema);
    assert_eq!(done.finish, FinishReason::Stop, "{text:?}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "age"], "{text:?}");
    assert!(v["name"].is_string() && v["age"].is_i64(), "{text:?}");
}

/// An async-style consumer: sleeps until the waker runs whenever the stream is
/// empty. It must see the end of the stream (the engine wakes it after closing
/// the channel), never sleep forever after `Done`.
#[test]
fn waker_runs_after_the_stream_closes() {
    use std::sync::{Condvar, Mutex};
    use whale_engine::serving::engine::TryNext;
    let (engine, _) = start(tiny_deepseek(), config(2, 2));
    for round in 0..20 {
        let wakes = Arc::new((Mutex::new(0u64), Condvar::new()));
        let w = wakes.clone();
        let waker: whale_engine::serving::engine::Waker = Arc::new(move || {
            *w.0.lock().unwrap() += 1;
            w.1.notify_all();
        });
        let stream = engine.submit(greedy(vec![7, 8, 9], 2), Some(waker)).unwrap();
        let mut seen = 0;
        let (mut events, mut done) = (0, false);
        loop {
            match stream.try_next() {
                TryNext::Event(ev) => {
                    events += 1;
                    done |= matches!(ev, Event::Done(_));
                }
                TryNext::Closed => break,
                TryNext::Empty => {
                    let g = wakes.0.lock().unwrap();
                    let (g, timeout) = wakes.1.wait_timeout_while(g, Duration::from_secs(10), |n| *n == seen).unwrap();
                    assert!(!timeout.timed_out(), "round {round}: no wake-up after {events} events (done: {done})");
                    seen = *g;
                }
            }
        }
        assert!(done && events == 4, "round {round}: {events} events");
    }
}

/// The tiny model with injected faults: no cache of 400 tokens or more can
/// be made (a panic while a request is admitted), and token 77 panics the
/// forward pass.
struct Faulty(Box<dyn whale_engine::models::Model>);

const POISON: u32 = 77;

impl whale_engine::models::Model for Faulty {
    fn info(&self) -> &whale_engine::models::ModelInfo {
        self.0.info()
    }
    fn new_cache(&self, capacity: usize) -> whale_engine::models::KvCache {
        assert!(capacity < 400, "injected fault: no cache of {capacity} tokens");
        self.0.new_cache(capacity)
    }
    fn forward(
        &self,
        cache: &mut whale_engine::models::KvCache,
        tokens: &[u32],
        logits: whale_engine::models::Logits,
    ) -> Result<Vec<f32>, whale_engine::models::ModelError> {
        assert!(!tokens.contains(&POISON), "injected fault: a poisoned token");
        // Slow enough that requests are still decoding when others arrive.
        std::thread::sleep(Duration::from_millis(2));
        self.0.forward(cache, tokens, logits)
    }
    fn active_weight_bytes(&self) -> u64 {
        self.0.active_weight_bytes()
    }
}

/// What a request ended with: its ids, or the failure message.
fn outcome(stream: whale_engine::serving::engine::EventStream) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for ev in stream {
        match ev {
            Event::Token(t) => ids.push(t.id),
            Event::Done(_) => return Ok(ids),
            Event::Failed(m) => return Err(m),
            Event::Started { .. } => {}
        }
    }
    Err("the stream ended without Done or Failed".into())
}

#[test]
fn a_panic_while_admitting_or_running_fails_that_request_alone() {
    let m = tiny_deepseek();
    let healthy = prompts(2);
    let want: Vec<Vec<u32>> = healthy
        .iter()
        .map(|p| {
            let mut s = Session::new(m.model.as_ref(), 512);
            let req = GenerateRequest {
                max_tokens: 32,
                sampler: SamplerConfig::greedy(),
                stop_at_eog: false,
                ..Default::default()
            };
            generate(m.model.as_ref(), &m.tokenizer, &mut s, p, &req, |_| true).unwrap().generated_ids
        })
        .collect();
    let tok = Arc::new(m.tokenizer);
    let engine = EngineHandle::start(Box::new(Faulty(m.model)), tok, config(4, 8));
    // Submitted together, so that the faults hit while the healthy requests run.
    // The healthy requests are decoding when the faulty ones arrive, so the
    // poisoned prompt joins their batch, last: the healthy ones have gone
    // through the forward pass that it breaks.
    let ok: Vec<_> = healthy.iter().map(|p| engine.submit(greedy(p.clone(), 32), None).unwrap()).collect();
    let firsts: Vec<u32> = ok
        .iter()
        .map(|s| loop {
            match s.recv() {
                Some(Event::Started { .. }) => continue,
                Some(Event::Token(t)) => break t.id,
                other => panic!("expected a token, got {other:?}"),
            }
        })
        .collect();
    let too_big = engine.submit(greedy(vec![1; 300], 200), None).unwrap();
    let poisoned = engine.submit(greedy(vec![5, POISON, 9], 8), None).unwrap();
    assert_eq!(outcome(too_big), Err("internal error".to_string()));
    assert_eq!(outcome(poisoned), Err("internal error".to_string()));
    for ((s, first), want) in ok.into_iter().zip(firsts).zip(&want) {
        let rest = outcome(s).unwrap();
        assert_eq!(&[vec![first], rest].concat(), want);
    }
    assert_eq!(engine.stats().panics, 2);
    // The engine goes on: the slots were given back.
    assert_eq!(&outcome(engine.submit(greedy(healthy[0].clone(), 32), None).unwrap()).unwrap(), &want[0]);
    let s = engine.stats();
    assert_eq!((s.running, s.waiting), (0, 0));
}
