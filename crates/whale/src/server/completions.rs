//! `POST /completions` (and DeepSeek's `/beta/completions`): a raw prompt
//! continued, or with `suffix`, fill-in-the-middle through the model's FIM
//! tokens. Log-probabilities come in the legacy completions layout
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use whale_engine::serving::engine::{Done, Event, TokenEvent, ValidRequest};
use whale_engine::serving::generate::FinishReason;

use super::chat::{token_text, usage_json};
use super::errors::{ApiError, RequestError};
use super::request::{budget, validate_common, CompletionRequest, PromptField};
use super::sse::{chunks, sse_response, AsyncEvents, ChunkWriter};
use super::{new_id, parse_and_prepare, unix_now, AppState};

/// `system_fingerprint` of every response.
pub const FINGERPRINT: &str = concat!("fp_whale_", env!("CARGO_PKG_VERSION"));

/// OpenAI's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

struct Prepared {
    valid: ValidRequest,
    stream: bool,
    include_usage: bool,
    /// `logprobs` asked for (with this many alternatives).
    logprobs: Option<usize>,
}

pub async fn completions(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let prep = parse_and_prepare(&app, body, prepare).await?;
    let mut run = CompletionRun::new(app.clone(), prep.logprobs, t0);
    let mut events = AsyncEvents::submit(&app.engine, app.metrics.clone(), prep.valid)?;
    if prep.stream {
        let writer = CompletionChunks { run, include_usage: prep.include_usage, over: false };
        return Ok(sse_response(chunks(events, writer), app.keep_alive));
    }
    while let Some(ev) = events.next().await {
        match ev {
            Event::Started { .. } => {}
            Event::Token(t) => {
                run.token(&t);
            }
            Event::Done(d) => {
                run.done = Some(d);
                return Ok(Json(run.response()).into_response());
            }
            Event::Failed(m) => return Err(ApiError::Internal(m)),
        }
    }
    Err(ApiError::Unavailable("the engine stopped before the request finished".into()))
}

fn prepare(app: &AppState, req: CompletionRequest) -> Result<Prepared, ApiError> {
    let common = validate_common(&req.common, app.ctx, app.tok.vocab_size())?;
    if req.echo == Some(true) {
        return Err(RequestError::Echo.into());
    }
    let logprobs = match req.logprobs {
        None => None,
        Some(n) if !(0..=whale_engine::serving::engine::MAX_TOP_LOGPROBS as i64).contains(&n) => {
            return Err(RequestError::CompletionLogprobs(n).into())
        }
        Some(n) => Some(n as usize),
    };
    let tok = &app.tok;
    let encode = |t: &str, special: bool| tok.encode(t, special).map_err(|e| RequestError::Tokenize(e.to_string()));
    let ids = match (&req.prompt, &req.suffix) {
        (PromptField::Text(prefix), Some(suffix)) => {
            let fim = app.fim.ok_or(RequestError::NoFim)?;
            // prefix-suffix-middle: [BOS] <prefix> P <suffix> S <middle>
            let mut ids: Vec<u32> = tok.bos_id().filter(|_| tok.add_bos()).into_iter().collect();
            ids.push(fim.prefix);
            // The code around the hole is text, never control tokens.
            let plain = |t: &str| {
                tok.encode_guarded(&tok.guard_text(t, true), false).map_err(|e| RequestError::Tokenize(e.to_string()))
            };
            ids.extend(plain(prefix)?);
            ids.push(fim.suffix);
            ids.extend(plain(suffix)?);
            ids.push(fim.middle);
            ids
        }
        (_, Some(_)) => {
            return Err(RequestError::BadPrompt("with \"suffix\" the prompt must be a string".into()).into())
        }
        (PromptField::Text(t), None) => encode(t, true)?,
        (PromptField::Ids(ids), None) => ids.clone(),
        (PromptField::Texts(v), None) if v.len() == 1 => encode(&v[0], true)?,
        (PromptField::IdLists(v), None) if v.len() == 1 => v[0].clone(),
        (PromptField::Texts(_) | PromptField::IdLists(_), None) => {
            return Err(RequestError::BadPrompt("give one prompt per request (a list of one is accepted)".into()).into())
        }
    };
    let max_tokens = budget(ids.len(), common.max_tokens, Some(DEFAULT_MAX_TOKENS), app.ctx)?;
    Ok(Prepared {
        valid: ValidRequest {
            prompt: ids,
            max_tokens,
            sampler: common.sampler,
            stop: common.stop,
            stop_at_eog: true,
            logprobs,
            constraint: None,
            images: None,
        },
        stream: common.stream,
        include_usage: common.include_usage,
        logprobs,
    })
}

/// The legacy `logprobs` object, built up token by token.
#[derive(Default)]
struct LegacyLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl LegacyLogprobs {
    fn json(&self) -> Value {
        json!({
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        })
    }
}

struct CompletionRun {
    app: Arc<AppState>,
    id: String,
    created: u64,
    t0: Instant,
    first_token: bool,
    want_logprobs: Option<usize>,
    text: String,
    logprobs: LegacyLogprobs,
    done: Option<Done>,
}

impl CompletionRun {
    fn new(app: Arc<AppState>, want_logprobs: Option<usize>, t0: Instant) -> CompletionRun {
        CompletionRun {
            app,
            id: new_id("cmpl"),
            created: unix_now(),
            t0,
            first_token: false,
            want_logprobs,
            text: String::new(),
            logprobs: LegacyLogprobs::default(),
            done: None,
        }
    }

    /// Record a token; returns the log-probabilities added (legacy layout).
    fn token(&mut self, t: &TokenEvent) -> Option<LegacyLogprobs> {
        if !self.first_token {
            self.first_token = true;
            self.app.metrics.observe_ttft(self.t0.elapsed());
        }
        let mut added = None;
        if let (Some(_), Some(lp)) = (self.want_logprobs, &t.logprob) {
            let tok = &self.app.tok;
            let mut top = Map::new();
            for &(id, l) in &lp.top {
                top.insert(token_text(tok, id).0, json!(l));
            }
            let one = LegacyLogprobs {
                tokens: vec![token_text(tok, t.id).0],
                token_logprobs: vec![lp.logprob],
                top_logprobs: vec![Value::Object(top)],
                text_offset: vec![self.text.len()],
            };
            self.logprobs.tokens.extend(one.tokens.iter().cloned());
            self.logprobs.token_logprobs.extend(&one.token_logprobs);
            self.logprobs.top_logprobs.extend(one.top_logprobs.iter().cloned());
            self.logprobs.text_offset.extend(&one.text_offset);
            added = Some(one);
        }
        self.text.push_str(&t.text);
        added
    }

    fn finish_reason(&self) -> &'static str {
        match self.done.as_ref().map(|d| d.finish) {
            Some(FinishReason::Length) => "length",
            _ => "stop",
        }
    }

    fn usage(&self) -> Value {
        self.done.as_ref().map_or(Value::Null, |d| usage_json(d, None))
    }

    fn response(&self) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.app.model_id,
            "choices": [{
                "text": self.text,
                "index": 0,
                "logprobs": if self.want_logprobs.is_some() { self.logprobs.json() } else { Value::Null },
                "finish_reason": self.finish_reason(),
            }],
            "usage": self.usage(),
            "system_fingerprint": FINGERPRINT,
        })
    }
}

struct CompletionChunks {
    run: CompletionRun,
    include_usage: bool,
    over: bool,
}

impl CompletionChunks {
    fn chunk(&self, text: &str, logprobs: Option<Value>, finish: Option<&str>) -> String {
        let r = &self.run;
        json!({
            "id": r.id,
            "object": "text_completion",
            "created": r.created,
            "model": r.app.model_id,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}],
        })
        .to_string()
    }
}

impl ChunkWriter for CompletionChunks {
    fn on_event(&mut self, ev: Event) -> Vec<String> {
        match ev {
            Event::Started { .. } => Vec::new(),
            Event::Token(t) => {
                let lp = self.run.token(&t);
                if t.text.is_empty() && lp.is_none() {
                    return Vec::new();
                }
                vec![self.chunk(&t.text, lp.map(|l| l.json()), None)]
            }
            Event::Done(d) => {
                self.run.done = Some(d);
                self.over = true;
                let mut out = vec![self.chunk("", None, Some(self.run.finish_reason()))];
                if self.include_usage {
                    let r = &self.run;
                    out.push(
                        json!({
                            "id": r.id,
                            "object": "text_completion",
                            "created": r.created,
                            "model": r.app.model_id,
                            "system_fingerprint": FINGERPRINT,
                            "choices": [],
                            "usage": r.usage(),
                        })
                        .to_string(),
                    );
                }
                out.push("[DONE]".to_string());
                out
            }
            Event::Failed(m) => {
                self.over = true;
                vec![ApiError::Internal(m).body().to_string(), "[DONE]".to_string()]
            }
        }
    }

    fn on_close(&mut self) -> Vec<String> {
        if self.over {
            return Vec::new();
        }
        self.over = true;
        vec![
            ApiError::Unavailable("the engine stopped before the request finished".into()).body().to_string(),
            "[DONE]".into(),
        ]
    }
}
