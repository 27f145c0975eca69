//! The serving engine: one thread owns the model and every sequence's KV
//! cache; callers hold an [`EngineHandle`] and [`EngineHandle::submit`] a
//! validated request to get an [`EventStream`] of its tokens. Dropping the
//! stream cancels the request.
//!
//! # Design
//!
//! Continuous batching. The engine thread loops over *steps*: take new
//! requests from the channel, admit waiting ones while fewer than `parallel`
//! run, draw one token for every running sequence that has logits, then run
//! one forward pass over the batch: each decoding sequence feeds its new token,
//! each sequence still reading its prompt feeds its next chunk (at most
//! [`PREFILL_BUDGET`] prompt tokens per step over all of them, so a long prompt
//! does not stall the others' streams). A request that arrives mid-generation
//! joins at the next step.
//!
//! The forward pass of a step is [`Engine::forward_batch`]: one call of
//! [`Model::forward_batch`] for every sequence that has tokens to feed, so the
//! weights are read once per step for the whole batch (every architecture
//! stacks the sequences' rows; DeepSeek's routed experts see the tokens of
//! all sequences at once).
//! Each sequence has its own cache and sampler, and the batched forward gives
//! every sequence the same bits as running it alone, so its greedy output does
//! not depend on what else runs.
//!
//! Admission control is one atomic count of requests in flight (waiting or
//! running): [`EngineHandle::submit`] refuses with [`SubmitError::QueueFull`]
//! once `parallel + max_queue` are in flight.
//!
//! Cancellation: the stream's `Drop` raises a flag the engine checks before
//! every step of that sequence, and a failed send (receiver gone) counts the
//! same. A cancelled sequence leaves the batch at once and its session goes
//! to the prefix cache.
//!
//! Prefix cache: see [`crate::serving::prefix_cache`]. On admission a request takes the
//! pooled session sharing the longest prefix with its prompt, or copies the
//! prefix out of a running session when that one matches better; the tokens
//! reused are reported as `cached_tokens`.
//!
//! The engine thread talks through `std::sync::mpsc` only; an async caller
//! passes a [`Waker`] that the engine calls after each event it sends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::models::{BatchSeq, Drafter, LogitsHidden, Model, ModelError};
use crate::serving::generate::{FinishReason, Session};
use crate::serving::prefix_cache::{common_prefix, copy_prefix, grow_cache, SessionPool};
use crate::serving::sampler::{top_k, Sampler, SamplerConfig};
use crate::serving::speculative::{self, SpecStats};
use crate::serving::stop::StopScanner;
use crate::text::constraint::{Commit, Constraint};
use crate::text::tokenizer::{StreamDecoder, Tokenizer};

/// Most prompt tokens fed in one step, over all sequences that are reading
/// their prompts.
pub const PREFILL_BUDGET: usize = crate::serving::generate::PREFILL_CHUNK;

/// Session capacities are rounded up to a multiple of this many tokens.
const CAPACITY_STEP: usize = 256;

/// Most alternatives `logprobs` may ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How the engine is sized.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most sequences running at once.
    pub parallel: usize,
    /// Most requests waiting for a slot; beyond, submit answers `QueueFull`.
    pub max_queue: usize,
    /// Most tokens per sequence (prompt and generated together).
    pub ctx: usize,
    /// Bound of the prefix cache, in bytes of KV cache.
    pub cache_bytes: usize,
    /// Speculative decoding with the model's multi-token-prediction layer:
    /// draft tokens a step (0: off; ignored for a model without the layer).
    pub spec_drafts: usize,
}

/// A request ready for the engine: token ids and resolved options.
#[derive(Clone, Debug)]
pub struct ValidRequest {
    pub prompt: Vec<u32>,
    /// At least 1.
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Stop at the model's end-of-generation tokens.
    pub stop_at_eog: bool,
    /// Report each token's log-probability and this many alternatives
    /// (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
    /// A grammar the output must match (JSON mode, a JSON schema, a strict
    /// tool call; see [`crate::text::constraint`]), compiled already.
    pub constraint: Option<Constraint>,
    /// Images in the prompt (a multimodal model's): the input rows of its
    /// image tokens.
    pub images: Option<Arc<ImageInput>>,
}

/// The input rows of a prompt's image tokens: `rows` is `[k, hidden]`, one
/// row for each of the `k` positions of `token` in the prompt, in order.
#[derive(Debug)]
pub struct ImageInput {
    pub token: u32,
    pub rows: Vec<f32>,
}

impl ImageInput {
    /// The rows of the image tokens in `prompt[from..to]`.
    fn rows_for(&self, prompt: &[u32], from: usize, to: usize) -> &[f32] {
        let count = |r: &[u32]| r.iter().filter(|&&t| t == self.token).count();
        let (before, within) = (count(&prompt[..from]), count(&prompt[from..to]));
        let h = self.rows.len() / count(prompt).max(1);
        &self.rows[before * h..(before + within) * h]
    }

    /// Where the first image token of `prompt` is (a cached prefix must end
    /// before it: rows of another image sit past it).
    fn first_in(&self, prompt: &[u32]) -> usize {
        prompt.iter().position(|&t| t == self.token).unwrap_or(prompt.len())
    }
}

/// A token's log-probability under the model (log-softmax of the raw logits,
/// before penalties, constraints and temperature).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, highest first.
    pub top: Vec<(u32, f32)>,
}

/// One generated token.
#[derive(Clone, Debug)]
pub struct TokenEvent {
    pub id: u32,
    /// Text that became final with this token (may be empty).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
}

/// How a request ended.
#[derive(Clone, Debug)]
pub struct Done {
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// From the request's slot to its first token (reading the prompt).
    pub prefill_time: Duration,
    /// From the first token to the last.
    pub decode_time: Duration,
}

/// What a request's stream carries, in this order: `Started`, any number of
/// `Token`, then `Done` or `Failed`.
#[derive(Clone, Debug)]
pub enum Event {
    /// The request left the queue and got a slot.
    Started {
        prompt_tokens: usize,
        cached_tokens: usize,
        queued: Duration,
    },
    Token(TokenEvent),
    Done(Done),
    /// The model failed on this request (not the caller's fault).
    Failed(String),
}

/// Called by the engine thread after it sends an event (to wake an async task).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is busy: {in_flight} requests are running or waiting and the queue is full; retry later")]
    QueueFull { in_flight: usize },
    #[error("the prompt is empty: at least one token is needed")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    NoTokens,
    #[error(
        "the prompt ({prompt} tokens) and max_tokens ({max_tokens}) do not fit the context of {ctx} tokens; \
         shorten the prompt or lower max_tokens"
    )]
    TooLong { prompt: usize, max_tokens: usize, ctx: usize },
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {0}")]
    TooManyLogprobs(usize),
    #[error("the engine has stopped")]
    Stopped,
}

/// Counters shared between the engine thread and the handles.
#[derive(Default)]
struct Shared {
    /// Requests submitted and not yet finished (waiting or running).
    in_flight: AtomicUsize,
    running: AtomicUsize,
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    cache_hit_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    cancelled: AtomicU64,
    pool_sessions: AtomicUsize,
    pool_bytes: AtomicUsize,
    /// Tokens in the caches of running sequences.
    kv_tokens: AtomicUsize,
    /// Requests failed by a panic on the engine thread.
    panics: AtomicU64,
    spec_steps: AtomicU64,
    spec_drafted: AtomicU64,
    spec_accepted: AtomicU64,
}

/// A snapshot of the engine's counters, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub running: usize,
    pub waiting: usize,
    /// Requests admitted (given a slot) since start.
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cache_hit_tokens: u64,
    pub generated_tokens: u64,
    pub cancelled: u64,
    pub cached_sessions: usize,
    pub cached_bytes: usize,
    /// Tokens held in the KV caches of running sequences, and the most they
    /// can hold (`parallel` × `ctx`).
    pub kv_tokens: usize,
    pub kv_capacity_tokens: usize,
    /// Requests failed by a panic on the engine thread (each a bug; the
    /// engine went on with the others).
    pub panics: u64,
    /// Speculative decoding: main-model passes that checked drafts, drafts
    /// made and drafts accepted, summed over all sequences.
    pub spec: SpecStats,
}

/// What a handle sends the engine thread.
enum Msg {
    Job(Box<Job>),
    /// Drop the prefix cache's sessions; the callback gets their count.
    FlushCache(Box<dyn FnOnce(usize) + Send>),
}

struct Job {
    req: ValidRequest,
    /// `None` only while the job is dropped.
    tx: Option<Sender<Event>>,
    cancel: Arc<AtomicBool>,
    waker: Option<Waker>,
    submitted: Instant,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Send an event; `false` if the receiver is gone.
    fn send(&self, ev: Event) -> bool {
        let ok = self.tx.as_ref().is_some_and(|tx| tx.send(ev).is_ok());
        if let Some(w) = &self.waker {
            w();
        }
        ok
    }
}

impl Drop for Job {
    /// Close the channel, then wake the receiver: an async caller waiting for
    /// the next event must learn that none will come.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = &self.waker {
            w();
        }
    }
}

/// The receiving end of a request. Dropping it cancels the request.
pub struct EventStream {
    rx: Receiver<Event>,
    cancel: Arc<AtomicBool>,
}

/// What [`EventStream::try_next`] found.
#[derive(Debug)]
pub enum TryNext {
    Event(Event),
    /// Nothing yet.
    Empty,
    /// The engine will send nothing more.
    Closed,
}

impl EventStream {
    /// The next event, waiting for it; `None` once the request is over.
    pub fn recv(&self) -> Option<Event> {
        self.rx.recv().ok()
    }

    /// The next event if one is there.
    pub fn try_next(&self) -> TryNext {
        match self.rx.try_recv() {
            Ok(ev) => TryNext::Event(ev),
            Err(TryRecvError::Empty) => TryNext::Empty,
            Err(TryRecvError::Disconnected) => TryNext::Closed,
        }
    }

    /// Stop the request (as dropping the stream does).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Iterator for EventStream {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        self.recv()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A cheap, cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Msg>,
    shared: Arc<Shared>,
    config: EngineConfig,
    vocab: usize,
}

impl EngineHandle {
    /// Start the engine thread; it runs until every handle is dropped.
    pub fn start(model: Box<dyn Model>, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> EngineHandle {
        let (tx, rx) = mpsc::channel::<Msg>();
        let shared = Arc::new(Shared::default());
        let vocab = model.info().vocab_size;
        let cfg = EngineConfig { parallel: config.parallel.max(1), ..config };
        let (thread_shared, thread_cfg) = (shared.clone(), cfg.clone());
        let spawned = std::thread::Builder::new().name("whale-engine".into()).spawn(move || {
            let mut engine = Engine::new(model.as_ref(), &tokenizer, thread_cfg, thread_shared);
            engine.run(rx);
        });
        if let Err(e) = spawned {
            // No engine: every submit will answer `Stopped`.
            tracing::error!("cannot start the engine thread: {e}");
        }
        EngineHandle { tx, shared, config: cfg, vocab }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Queue a request. The returned stream yields its events; drop it to cancel.
    pub fn submit(&self, req: ValidRequest, waker: Option<Waker>) -> Result<EventStream, SubmitError> {
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.max_tokens == 0 {
            return Err(SubmitError::NoTokens);
        }
        if req.prompt.len() + req.max_tokens > self.config.ctx {
            return Err(SubmitError::TooLong {
                prompt: req.prompt.len(),
                max_tokens: req.max_tokens,
                ctx: self.config.ctx,
            });
        }
        if let Some(&id) = req.prompt.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(SubmitError::TokenOutOfRange { id, vocab: self.vocab });
        }
        if let Some(k) = req.logprobs.filter(|&k| k > MAX_TOP_LOGPROBS) {
            return Err(SubmitError::TooManyLogprobs(k));
        }
        let limit = self.config.parallel + self.config.max_queue;
        let admitted =
            self.shared.in_flight.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < limit).then_some(n + 1));
        if let Err(n) = admitted {
            return Err(SubmitError::QueueFull { in_flight: n });
        }
        let (etx, erx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job { req, tx: Some(etx), cancel: cancel.clone(), waker, submitted: Instant::now() };
        if self.tx.send(Msg::Job(Box::new(job))).is_err() {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(EventStream { rx: erx, cancel })
    }

    /// Empty the prefix cache once every request submitted before this call
    /// has been queued (requests submitted after it find nothing cached);
    /// `done` gets the number of sessions dropped, on the engine thread,
    /// within one step of the running batch. `false` if the engine has
    /// stopped (`done` is not called).
    pub fn flush_cache(&self, done: impl FnOnce(usize) + Send + 'static) -> bool {
        self.tx.send(Msg::FlushCache(Box::new(done))).is_ok()
    }

    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        let in_flight = s.in_flight.load(Ordering::SeqCst);
        let running = s.running.load(Ordering::SeqCst);
        EngineStats {
            running,
            waiting: in_flight.saturating_sub(running),
            requests: s.requests.load(Ordering::Relaxed),
            prompt_tokens: s.prompt_tokens.load(Ordering::Relaxed),
            cache_hit_tokens: s.cache_hit_tokens.load(Ordering::Relaxed),
            generated_tokens: s.generated_tokens.load(Ordering::Relaxed),
            cancelled: s.cancelled.load(Ordering::Relaxed),
            cached_sessions: s.pool_sessions.load(Ordering::Relaxed),
            cached_bytes: s.pool_bytes.load(Ordering::Relaxed),
            kv_tokens: s.kv_tokens.load(Ordering::Relaxed),
            kv_capacity_tokens: self.config.parallel * self.config.ctx,
            panics: s.panics.load(Ordering::Relaxed),
            spec: SpecStats {
                steps: s.spec_steps.load(Ordering::Relaxed) as usize,
                drafted: s.spec_drafted.load(Ordering::Relaxed) as usize,
                accepted: s.spec_accepted.load(Ordering::Relaxed) as usize,
            },
        }
    }
}

/// The message a panic was raised with.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
}

/// Log-softmax of `logits` at `id`, and the `k` most likely tokens.
pub fn logprobs_of(logits: &[f32], id: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let top = if k > 0 { top_k(logits, k).into_iter().map(|(t, l)| (t, l - lse)).collect() } else { Vec::new() };
    TokenLogprob { logprob: logits.get(id as usize).map_or(f32::NEG_INFINITY, |&l| l - lse), top }
}

/// A running sequence.
struct Seq<'t> {
    job: Job,
    session: Session,
    /// Logits after the last token fed, once the prompt is read: a token is due.
    logits: Option<Vec<f32>>,
    /// The token drawn last step, to feed this step.
    next: Option<u32>,
    sampler: Sampler,
    decoder: StreamDecoder<'t>,
    scanner: StopScanner,
    /// Prompt and generated tokens (the penalties look at them).
    history: Vec<u32>,
    generated: usize,
    cached: usize,
    constraint: Option<Constraint>,
    finish: Option<FinishReason>,
    failed: Option<String>,
    /// A panic hit this sequence: its session is not reused.
    poisoned: bool,
    /// When it got its slot, and when its first token was drawn.
    admitted: Instant,
    first_token: Option<Instant>,
    /// With speculative decoding: the main model's hidden rows of the
    /// positions the draft layer has not seen yet (`draft.len .. cache.len`
    /// of the session; each waits for the token after it).
    pending: Vec<f32>,
}

impl Seq<'_> {
    /// End the sequence with an error for its caller.
    fn fail(&mut self, message: impl Into<String>) {
        self.failed = Some(message.into());
        self.finish = Some(FinishReason::Stop);
    }

    fn prompt(&self) -> &[u32] {
        &self.job.req.prompt
    }

    /// Prompt tokens not yet in the cache.
    fn prompt_left(&self) -> usize {
        if self.logits.is_some() || self.next.is_some() || self.finish.is_some() {
            0
        } else {
            self.prompt().len() - self.session.tokens.len()
        }
    }
}

struct Engine<'t> {
    model: &'t dyn Model,
    tok: &'t Tokenizer,
    cfg: EngineConfig,
    shared: Arc<Shared>,
    waiting: VecDeque<Job>,
    running: Vec<Seq<'t>>,
    pool: SessionPool,
    /// KV cache bytes per token of this model (with the draft layer's).
    bytes_per_token: usize,
    /// The model's draft layer, when speculative decoding is on, and the
    /// drafts a step.
    drafter: Option<&'t dyn Drafter>,
    spec_drafts: usize,
}

/// What one sequence feeds in a step: its drawn token (`drawn`) or its next
/// prompt chunk; `wants_logits` when a token is due after it.
struct Feed {
    seq: usize,
    tokens: Vec<u32>,
    wants_logits: bool,
    drawn: bool,
}

/// A draft-layer input of one sequence: the tokens after its positions and
/// the main model's hidden rows at those positions.
type DraftInput = (Vec<u32>, Vec<f32>);

/// Pairs each of `feeds` (a sequence's index in `running`, ascending, and
/// the tokens it feeds) with that sequence's main cache, or with its draft
/// cache when `draft` (a sequence without one is left out). Returns the
/// positions in `feeds` of the entries kept, and their batch entries.
fn batch_seqs<'a>(
    running: &'a mut [Seq<'_>],
    feeds: &[(usize, &'a [u32])],
    draft: bool,
) -> (Vec<usize>, Vec<BatchSeq<'a>>) {
    let mut entries = feeds.iter().enumerate().peekable();
    let (mut at, mut seqs) = (Vec::with_capacity(feeds.len()), Vec::with_capacity(feeds.len()));
    for (i, seq) in running.iter_mut().enumerate() {
        let Some((j, &(_, tokens))) = entries.next_if(|(_, (k, _))| *k == i) else { continue };
        let cache = if draft { seq.session.draft.as_mut() } else { Some(&mut seq.session.cache) };
        if let Some(cache) = cache {
            at.push(j);
            seqs.push(BatchSeq { cache, tokens });
        }
    }
    (at, seqs)
}

impl<'t> Engine<'t> {
    fn new(model: &'t dyn Model, tok: &'t Tokenizer, cfg: EngineConfig, shared: Arc<Shared>) -> Engine<'t> {
        let pool = SessionPool::new(cfg.cache_bytes);
        let drafter = if cfg.spec_drafts > 0 { model.drafter() } else { None };
        let spec_drafts = cfg.spec_drafts.min(8);
        let draft_bytes = drafter.map_or(0, |d| d.new_draft_cache(0).bytes_per_token());
        let bytes_per_token = model.new_cache(0).bytes_per_token() + draft_bytes;
        let (waiting, running) = (VecDeque::new(), Vec::new());
        Engine { model, tok, cfg, shared, waiting, running, pool, bytes_per_token, drafter, spec_drafts }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        let mut open = true;
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                if !open {
                    return;
                }
                match rx.recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => return,
                }
            }
            while open {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.admit();
            for i in 0..self.running.len() {
                self.guarded(i, Engine::draw);
            }
            self.retire();
            self.forward_batch_with_masks();
            self.retire();
            let kv: usize = self.running.iter().map(|s| s.session.cache.len).sum();
            self.shared.kv_tokens.store(kv, Ordering::Relaxed);
        }
    }

    /// A message from a handle: a request joins the queue; a flush empties
    /// the prefix cache (running sequences keep their caches).
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) => self.waiting.push_back(*job),
            Msg::FlushCache(done) => {
                let n = self.pool.clear();
                self.publish_pool();
                done(n);
            }
        }
    }

    /// Give waiting requests a slot while there is one.
    fn admit(&mut self) {
        // A cancelled request leaves the queue at once.
        let (gone, kept): (Vec<Job>, Vec<Job>) = self.waiting.drain(..).partition(Job::cancelled);
        self.waiting = kept.into();
        for _ in gone {
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        while self.running.len() < self.cfg.parallel {
            let Some(job) = self.waiting.pop_front() else { break };
            self.start(job);
        }
        self.shared.running.store(self.running.len(), Ordering::SeqCst);
        self.publish_pool();
    }

    /// Give `job` a slot: a session holding the longest cached prefix of its
    /// prompt, and a sequence in the batch. Taking the session runs under the
    /// same guard as the forward pass: a panic there fails this request alone.
    fn start(&mut self, mut job: Job) {
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.session_for(&job.req)));
        let (session, cached) = match taken {
            Ok(found) => found,
            Err(payload) => {
                tracing::error!("engine: admitting a request panicked: {}", panic_message(&*payload));
                self.shared.panics.fetch_add(1, Ordering::Relaxed);
                self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                job.send(Event::Failed("internal error".into()));
                return;
            }
        };
        let prompt_tokens = job.req.prompt.len();
        let started = Event::Started { prompt_tokens, cached_tokens: cached, queued: job.submitted.elapsed() };
        if !job.send(started) {
            self.pool.put(session);
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.shared.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.shared.cache_hit_tokens.fetch_add(cached as u64, Ordering::Relaxed);
        // The compiled grammar moves to the sequence (the request keeps none).
        let constraint = job.req.constraint.take();
        let req = &job.req;
        self.running.push(Seq {
            sampler: Sampler::new(req.sampler.clone()),
            decoder: StreamDecoder::new(self.tok),
            scanner: StopScanner::new(req.stop.clone()),
            history: req.prompt.clone(),
            generated: 0,
            cached,
            constraint,
            session,
            logits: None,
            next: None,
            finish: None,
            failed: None,
            poisoned: false,
            admitted: Instant::now(),
            first_token: None,
            pending: Vec::new(),
            job,
        });
    }

    /// A session for `req`, holding the longest cached prefix of its prompt
    /// (at most all but the last prompt token: its logits must be computed).
    fn session_for(&mut self, req: &ValidRequest) -> (Session, usize) {
        let prompt = &req.prompt;
        let capacity = (prompt.len() + req.max_tokens).next_multiple_of(CAPACITY_STEP).min(self.cfg.ctx);
        let pooled = self.pool.best_match(prompt);
        let live = self
            .running
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let held = &s.session.tokens[..s.session.cache.len.min(s.session.tokens.len())];
                let c = common_prefix(held, prompt);
                (i, s.job.req.images.as_ref().map_or(c, |im| c.min(im.first_in(held))))
            })
            .max_by_key(|&(_, c)| c);
        let (mut session, common) = match live {
            Some((i, c)) if c > pooled => {
                let mut s = self.fresh_session(capacity);
                copy_prefix(&self.running[i].session, &mut s, c);
                (s, c)
            }
            _ => match self.pool.take_best(prompt) {
                // The prompt continues (nearly) all of the cached session:
                // the next turn of a conversation, whose last tokens the
                // template may write differently, or another question after
                // the same system prompt. Take it over; little is lost.
                Some((s, c)) if s.tokens.len() - c <= s.tokens.len() / 8 => (s, c),
                // Only a smaller part is shared (the template's first tokens,
                // then another system prompt): copy that part out and keep
                // the cached session for the prompts it still serves. Taking
                // it over would cut it there, and requests that alternate
                // between a few system prompts would never find theirs.
                Some((cached, c)) => {
                    let mut s = self.fresh_session(capacity);
                    copy_prefix(&cached, &mut s, c);
                    self.pool.put(cached);
                    (s, c)
                }
                None => (self.fresh_session(capacity), 0),
            },
        };
        grow_cache(&mut session.cache, capacity);
        // Rows past an image token depend on the image, not only the ids.
        let common = req.images.as_ref().map_or(common, |im| common.min(im.first_in(prompt)));
        let mut reuse = common.min(prompt.len() - 1);
        if let Some(d) = &mut session.draft {
            grow_cache(d, capacity);
            // A draft row pairs a position with the token after it, which
            // must be the prompt's too; and every position past the draft
            // rows needs the main model's hidden state, so it is recomputed.
            reuse = reuse.min(common.saturating_sub(1)).min(d.len);
        }
        session.truncate(reuse);
        (session, reuse)
    }

    /// An empty session of at least `capacity` tokens: the memory of the
    /// least recently used cached session when the cache is full, else new.
    fn fresh_session(&mut self, capacity: usize) -> Session {
        if !self.pool.has_room_for(self.bytes_per_token * capacity) {
            if let Some(mut s) = self.pool.take_lru() {
                s.reset();
                grow_cache(&mut s.cache, capacity);
                return s;
            }
        }
        match self.drafter {
            Some(d) => Session::with_draft(self.model, d, capacity),
            None => Session::new(self.model, capacity),
        }
    }

    /// Draw the next token of sequence `i` if it has logits, and send it.
    fn draw(&mut self, i: usize) {
        let seq = &mut self.running[i];
        if seq.finish.is_some() {
            return;
        }
        if seq.job.cancelled() {
            seq.finish = Some(FinishReason::Cancelled);
            return;
        }
        let Some(mut logits) = seq.logits.take() else { return };
        let req = &seq.job.req;
        let raw = req.logprobs.map(|_| logits.clone());
        if let Some(c) = &mut seq.constraint {
            match c.apply(&mut logits) {
                Ok(true) => {}
                // Nothing can follow (the grammar allows no token of this vocabulary).
                Ok(false) => {
                    seq.finish = Some(FinishReason::Stop);
                    return;
                }
                Err(e) => return seq.fail(format!("the output grammar failed: {e}")),
            }
        }
        let id = seq.sampler.sample(&mut logits, &seq.history);
        let logprob = raw.map(|raw| logprobs_of(&raw, id, req.logprobs.unwrap_or(0)));
        let pos = seq.session.cache.len;
        self.emit(i, id, logprob, pos);
    }

    /// Sequence `i` generated `id` at position `pos`: send it, and end the
    /// sequence or make `id` the token it feeds next.
    fn emit(&mut self, i: usize, id: u32, logprob: Option<TokenLogprob>, pos: usize) {
        let tok = self.tok;
        let seq = &mut self.running[i];
        let req = &seq.job.req;
        seq.first_token.get_or_insert_with(Instant::now);
        seq.history.push(id);
        seq.generated += 1;
        self.shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
        let grammar_done = match seq.constraint.as_mut().map(|c| c.commit(id)) {
            None | Some(Ok(Commit::Continue)) => false,
            Some(Ok(Commit::Complete)) => true,
            Some(Err(e)) => return seq.fail(format!("the output grammar failed: {e}")),
        };
        // The same rules as `generate::generate`, so a greedy request gives
        // the same text as `whale run`.
        let eog = req.stop_at_eog && tok.is_eog(id);
        let piece = if eog { seq.decoder.flush() } else { seq.decoder.push(id) };
        let (mut text, hit_stop) = seq.scanner.push(&piece);
        let done_len = seq.generated >= req.max_tokens;
        let cache_full = pos + 1 > seq.session.cache.capacity;
        if eog || done_len || grammar_done || cache_full {
            text.push_str(&seq.scanner.finish());
        }
        let sent = seq.job.send(Event::Token(TokenEvent { id, text, logprob }));
        seq.finish = if eog || hit_stop || grammar_done {
            Some(FinishReason::Stop)
        } else if done_len || cache_full {
            Some(FinishReason::Length)
        } else if !sent {
            Some(FinishReason::Cancelled)
        } else {
            seq.next = Some(id);
            None
        };
    }

    /// [`Engine::forward_batch`], with the grammar masks of the next draw
    /// computed on another thread meanwhile: a constrained sequence's mask
    /// depends only on the tokens drawn so far, not on the logits this pass
    /// computes, so it is off the critical path of the step.
    fn forward_batch_with_masks(&mut self) {
        let mut pending: Vec<(usize, Constraint)> = Vec::new();
        for (i, seq) in self.running.iter_mut().enumerate() {
            if seq.finish.is_none() && seq.constraint.as_ref().is_some_and(Constraint::is_active) {
                pending.push((i, seq.constraint.take().expect("checked")));
            }
        }
        if pending.is_empty() {
            return self.forward_batch();
        }
        let out: Vec<usize> = pending.iter().map(|(i, _)| *i).collect();
        let masks = std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                let prepared: Vec<_> = pending.into_iter().map(|(i, mut c)| (i, c.prepare_mask(), c)).collect();
                prepared
            });
            self.forward_batch();
            worker.join()
        });
        match masks {
            Ok(prepared) => {
                for (i, r, c) in prepared {
                    let seq = &mut self.running[i];
                    seq.constraint = Some(c);
                    if let Err(e) = r {
                        seq.fail(format!("the output grammar failed: {e}"));
                    }
                }
            }
            // The grammar library catches its own panics; should one escape,
            // the sequences whose grammar was out fail and the others go on.
            Err(_) => {
                tracing::error!("engine: a grammar mask computation panicked");
                for i in out {
                    self.shared.panics.fetch_add(1, Ordering::Relaxed);
                    self.running[i].fail("internal error: the output grammar failed");
                }
            }
        }
    }

    /// What each sequence feeds this step: a decoding sequence its new token,
    /// sequences reading their prompt their next chunk (within the prefill
    /// budget); a sequence whose cache cannot take them fails alone.
    fn plan_batch(&mut self) -> Vec<Feed> {
        let mut batch: Vec<Feed> = Vec::new();
        let mut budget = PREFILL_BUDGET;
        for (i, seq) in self.running.iter_mut().enumerate() {
            if seq.finish.is_some() {
                continue;
            }
            if seq.job.cancelled() {
                seq.finish = Some(FinishReason::Cancelled);
                continue;
            }
            if let Some(id) = seq.next.take() {
                batch.push(Feed { seq: i, tokens: vec![id], wants_logits: true, drawn: true });
                continue;
            }
            let left = seq.prompt_left();
            if left == 0 || budget == 0 {
                continue;
            }
            let n = left.min(budget);
            budget -= n;
            let from = seq.session.tokens.len();
            let tokens = seq.job.req.prompt[from..from + n].to_vec();
            batch.push(Feed { seq: i, tokens, wants_logits: n == left, drawn: false });
        }
        batch.retain(|f| match self.running[f.seq].session.cache.reserve(f.tokens.len()) {
            Ok(()) => true,
            Err(e) => {
                self.running[f.seq].fail(e.to_string());
                false
            }
        });
        batch
    }

    /// One forward pass over the batch: each decoding sequence feeds its new
    /// token, sequences reading their prompt feed their next chunk.
    fn forward_batch(&mut self) {
        if let Some(d) = self.drafter {
            return self.forward_batch_spec(d);
        }
        let batch = self.plan_batch();
        if batch.is_empty() {
            return;
        }
        let model = self.model;
        // Where each cache stood: a panic part-way through the batch may
        // have advanced some of them, and they are run again one by one.
        let lens: Vec<usize> = batch.iter().map(|f| self.running[f.seq].session.cache.len).collect();
        // Image rows of prompt chunks: (the request's images, chunk start).
        let images: Vec<Option<(Arc<ImageInput>, usize)>> = batch
            .iter()
            .zip(&lens)
            .map(|(f, &from)| {
                let seq = &self.running[f.seq];
                let prompt_chunk = seq.session.tokens.len() < seq.job.req.prompt.len();
                seq.job.req.images.clone().filter(|_| prompt_chunk).map(|im| (im, from))
            })
            .collect();
        let rows: Vec<Option<&[f32]>> = batch
            .iter()
            .zip(&images)
            .map(|(f, im)| {
                im.as_ref()
                    .map(|(im, from)| im.rows_for(&self.running[f.seq].job.req.prompt, *from, from + f.tokens.len()))
            })
            .collect();
        let image_token = images.iter().flatten().map(|(im, _)| im.token).next();
        let running = &mut self.running;
        let feeds: Vec<(usize, &[u32])> = batch.iter().map(|f| (f.seq, f.tokens.as_slice())).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (_, mut seqs) = batch_seqs(running, &feeds, false);
            match image_token {
                Some(t) => model.forward_batch_rows(&mut seqs, t, &rows),
                None => model.forward_batch(&mut seqs),
            }
        }));
        match r {
            Ok(Ok(logits)) => {
                for (f, l) in batch.into_iter().zip(logits) {
                    let seq = &mut self.running[f.seq];
                    seq.session.tokens.extend_from_slice(&f.tokens);
                    if f.wants_logits {
                        seq.logits = Some(l);
                    }
                }
            }
            // An error or a panic (no cache has advanced): run the sequences
            // one by one, so that only the one at fault fails.
            _ => {
                for ((f, len), r) in batch.into_iter().zip(lens).zip(rows) {
                    self.running[f.seq].session.cache.truncate(len);
                    let Feed { seq: i, tokens, wants_logits, .. } = f;
                    match (r, image_token) {
                        (Some(r), Some(t)) => self.guarded(i, |e, i| e.feed_rows(i, &tokens, t, r, wants_logits)),
                        _ => self.guarded(i, |e, i| e.feed(i, &tokens, wants_logits)),
                    }
                }
            }
        }
    }

    /// [`Engine::forward_batch`] with speculative decoding. Each sequence's
    /// draft layer first catches up on the positions it has not seen (its
    /// pending hidden rows, now that the token after each is known), which
    /// also gives its first draft; each further draft takes one draft-layer
    /// pass, all sequences together. Then one main pass checks every
    /// sequence's token and drafts (and reads the prompt chunks), and each
    /// sequence keeps the drafts accepted and the token after them
    /// ([`speculative::verify`]). A failed step is rolled back and its
    /// sequences run one by one, so that only the one at fault fails.
    fn forward_batch_spec(&mut self, d: &'t dyn Drafter) {
        let batch = self.plan_batch();
        if batch.is_empty() {
            return;
        }
        let marks: Vec<(usize, usize)> = batch.iter().map(|f| self.cache_marks(f.seq)).collect();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spec_pass(d, &batch)));
        if matches!(r, Ok(Ok(()))) {
            return;
        }
        for (f, &mark) in batch.iter().zip(&marks) {
            self.roll_back(f.seq, mark);
        }
        for (f, mark) in batch.into_iter().zip(marks) {
            self.guarded(f.seq, |e, i| {
                if let Err(err) = e.spec_pass(d, std::slice::from_ref(&f)) {
                    e.roll_back(i, mark);
                    e.running[i].fail(err.to_string());
                }
            });
        }
    }

    /// The lengths of sequence `i`'s main and draft caches.
    fn cache_marks(&self, i: usize) -> (usize, usize) {
        let s = &self.running[i].session;
        (s.cache.len, s.draft.as_ref().map_or(0, |d| d.len))
    }

    /// Cut sequence `i`'s caches back to `marks`.
    fn roll_back(&mut self, i: usize, (main, draft): (usize, usize)) {
        let s = &mut self.running[i].session;
        s.cache.truncate(main);
        if let Some(d) = &mut s.draft {
            d.truncate(draft);
        }
    }

    /// Drafts sequence `i` may make this step: none under a grammar (the
    /// grammar would have to step back past rejected drafts), and no more
    /// than its cache and its token budget can take after the drawn token.
    fn drafts_for(&self, i: usize) -> usize {
        let seq = &self.running[i];
        if seq.constraint.is_some() {
            return 0;
        }
        let c = &seq.session.cache;
        let room = c.capacity.saturating_sub(c.len + 1);
        self.spec_drafts.min(room).min(seq.job.req.max_tokens.saturating_sub(seq.generated))
    }

    /// One speculative step of the sequences in `batch` (see
    /// [`Engine::forward_batch_spec`]). Nothing of a sequence but its caches
    /// and its sampler's state changes before every model pass has succeeded.
    fn spec_pass(&mut self, d: &dyn Drafter, batch: &[Feed]) -> Result<(), ModelError> {
        let (h, vocab) = (self.model.info().hidden_size, self.model.info().vocab_size);
        let n = batch.len();
        // The draft layer catches up: row `p` pairs the hidden state at `p`
        // with the token at `p + 1` (the last with this step's first token).
        let catch_up: Vec<Option<DraftInput>> = batch
            .iter()
            .map(|f| {
                let seq = &self.running[f.seq];
                let from = seq.session.draft.as_ref().filter(|_| !seq.pending.is_empty())?.len + 1;
                let next = seq.session.tokens[from..].iter().copied().chain([f.tokens[0]]).collect();
                Some((next, seq.pending.clone()))
            })
            .collect();
        let mut cur = self.draft_pass(d, batch, &catch_up)?;
        let ks: Vec<usize> = batch
            .iter()
            .zip(&cur)
            .map(|(f, c)| if f.drawn && c.is_some() { self.drafts_for(f.seq) } else { 0 })
            .collect();
        let mut drafts: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut qs: Vec<Vec<Vec<(u32, f32)>>> = vec![Vec::new(); n];
        loop {
            for (j, f) in batch.iter().enumerate() {
                let Some((logits, _)) = cur[j].as_mut().filter(|_| drafts[j].len() < ks[j]) else { continue };
                let seq = &mut self.running[f.seq];
                // The penalties see the drafts so far as history.
                let hist_len = seq.history.len();
                seq.history.extend_from_slice(&drafts[j]);
                let q = seq.sampler.distribution(logits, &seq.history);
                seq.history.truncate(hist_len);
                drafts[j].push(seq.sampler.draw(&q));
                qs[j].push(q);
            }
            let more: Vec<Option<DraftInput>> = (0..n)
                .map(|j| match (&cur[j], drafts[j].last()) {
                    (Some((_, hid)), Some(&x)) if drafts[j].len() < ks[j] => Some((vec![x], hid.clone())),
                    _ => None,
                })
                .collect();
            if more.iter().all(Option::is_none) {
                break;
            }
            for (j, o) in self.draft_pass(d, batch, &more)?.into_iter().enumerate() {
                if more[j].is_some() {
                    cur[j] = o;
                }
            }
        }
        // The main pass: every sequence's tokens, with its drafts.
        let feeds: Vec<Vec<u32>> =
            batch.iter().zip(&drafts).map(|(f, dr)| f.tokens.iter().chain(dr).copied().collect()).collect();
        let all_rows: Vec<bool> = drafts.iter().map(|dr| !dr.is_empty()).collect();
        let out = {
            let entries: Vec<(usize, &[u32])> = batch.iter().zip(&feeds).map(|(f, t)| (f.seq, t.as_slice())).collect();
            let (_, mut seqs) = batch_seqs(&mut self.running, &entries, false);
            d.forward_batch_hidden(&mut seqs, &all_rows)?
        };
        // Every pass succeeded: keep the results.
        for (j, (f, (mut logits, hidden))) in batch.iter().zip(out).enumerate() {
            let i = f.seq;
            let seq = &mut self.running[i];
            if catch_up[j].is_some() {
                seq.pending.clear();
            }
            let dr = &drafts[j];
            if dr.is_empty() {
                seq.session.tokens.extend_from_slice(&f.tokens);
                if seq.session.draft.is_some() {
                    seq.pending.extend_from_slice(&hidden);
                }
                if f.wants_logits {
                    seq.logits = Some(logits);
                }
                continue;
            }
            let base = seq.session.cache.len - dr.len() - 1;
            let top = seq.job.req.logprobs;
            let raw = top.map(|_| logits.clone());
            let (a, bonus) = speculative::verify(&mut seq.sampler, &mut logits, vocab, dr, &qs[j], &mut seq.history);
            seq.session.cache.truncate(base + 1 + a);
            seq.session.tokens.push(f.tokens[0]);
            seq.session.tokens.extend_from_slice(&dr[..a]);
            if let Some(c) = &mut seq.session.draft {
                c.truncate(base);
            }
            seq.pending = hidden[..(a + 1) * h].to_vec();
            self.shared.spec_steps.fetch_add(1, Ordering::Relaxed);
            self.shared.spec_drafted.fetch_add(dr.len() as u64, Ordering::Relaxed);
            self.shared.spec_accepted.fetch_add(a as u64, Ordering::Relaxed);
            for (r, &id) in dr[..a].iter().chain([&bonus]).enumerate() {
                let lp = raw.as_ref().map(|raw| logprobs_of(&raw[r * vocab..(r + 1) * vocab], id, top.unwrap_or(0)));
                self.emit(i, id, lp, base + 1 + r);
                if self.running[i].finish.is_some() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One draft-layer pass over the sequences of `batch` that have input
    /// (`inputs[j]`: the tokens after its positions and their hidden rows),
    /// all at once: for each, its last row's logits and output.
    fn draft_pass(
        &mut self,
        d: &dyn Drafter,
        batch: &[Feed],
        inputs: &[Option<DraftInput>],
    ) -> Result<Vec<Option<LogitsHidden>>, ModelError> {
        let mut res = vec![None; batch.len()];
        let given: Vec<(usize, &DraftInput)> =
            inputs.iter().enumerate().filter_map(|(j, x)| Some((j, x.as_ref()?))).collect();
        let entries: Vec<(usize, &[u32])> =
            given.iter().map(|(j, (next, _))| (batch[*j].seq, next.as_slice())).collect();
        let (kept, mut seqs) = batch_seqs(&mut self.running, &entries, true);
        if seqs.is_empty() {
            return Ok(res);
        }
        let hidden: Vec<&[f32]> = kept.iter().map(|&k| given[k].1 .1.as_slice()).collect();
        for (k, o) in kept.into_iter().zip(d.draft_batch(&mut seqs, &hidden)?) {
            res[given[k].0] = Some(o);
        }
        Ok(res)
    }

    /// [`Engine::feed`] of a prompt chunk holding image tokens, with their rows.
    fn feed_rows(&mut self, i: usize, tokens: &[u32], image_token: u32, rows: &[f32], wants_logits: bool) {
        let seq = &mut self.running[i];
        let mut seqs = [BatchSeq { cache: &mut seq.session.cache, tokens }];
        match self.model.forward_batch_rows(&mut seqs, image_token, &[Some(rows)]) {
            Ok(mut logits) => {
                seq.session.tokens.extend_from_slice(tokens);
                if wants_logits {
                    seq.logits = logits.pop();
                }
            }
            Err(e) => seq.fail(e.to_string()),
        }
    }

    /// Feed `tokens` to sequence `i`; keep the logits if a token is due next.
    fn feed(&mut self, i: usize, tokens: &[u32], wants_logits: bool) {
        let seq = &mut self.running[i];
        match seq.session.feed(self.model, tokens) {
            Ok(logits) => {
                if wants_logits {
                    seq.logits = Some(logits);
                }
            }
            Err(e) => seq.fail(e.to_string()),
        }
    }

    /// Run `f` on sequence `i`; a panic fails that request only (its session
    /// is dropped) instead of taking the engine down with every other one.
    fn guarded(&mut self, i: usize, f: impl FnOnce(&mut Self, usize)) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, i)));
        if let Err(payload) = r {
            tracing::error!("engine: request failed with a panic: {}", panic_message(&*payload));
            self.shared.panics.fetch_add(1, Ordering::Relaxed);
            let seq = &mut self.running[i];
            seq.fail("internal error");
            seq.poisoned = true;
        }
    }

    /// Take finished sequences out of the batch: their sessions go to the
    /// prefix cache, their callers get `Done` (or `Failed`).
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let Some(finish) = self.running[i].finish else {
                i += 1;
                continue;
            };
            let seq = self.running.swap_remove(i);
            let now = Instant::now();
            self.shared.running.store(self.running.len(), Ordering::SeqCst);
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            let ev = match seq.failed {
                Some(msg) => Event::Failed(msg),
                None => Event::Done(Done {
                    finish,
                    prompt_tokens: seq.job.req.prompt.len(),
                    cached_tokens: seq.cached,
                    completion_tokens: seq.generated,
                    prefill_time: seq.first_token.unwrap_or(now) - seq.admitted,
                    decode_time: seq.first_token.map_or(Duration::ZERO, |t| now - t),
                }),
            };
            if !seq.poisoned {
                let mut session = seq.session;
                // Only the part before the first image is reusable by ids.
                if let Some(im) = &seq.job.req.images {
                    let keep = im.first_in(&session.tokens).min(session.cache.len);
                    session.truncate(keep);
                }
                self.pool.put(session);
                self.publish_pool();
            }
            if finish == FinishReason::Cancelled {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            } else {
                seq.job.send(ev);
            }
        }
        // Keep admission order (swap_remove shuffles); the step order does not
        // change any output, but a stable order is easier to reason about.
        self.running.sort_by_key(|s| s.job.submitted);
    }

    fn publish_pool(&self) {
        self.shared.pool_sessions.store(self.pool.len(), Ordering::Relaxed);
        self.shared.pool_bytes.store(self.pool.bytes(), Ordering::Relaxed);
    }
}
