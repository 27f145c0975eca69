//! `POST /chat/completions`: messages through the chat template, the answer
//! split into `reasoning_content` and `content`, tool calls parsed from the
//! model's own format, JSON mode, log-probabilities and chat prefix
//! completion, as one JSON response or as SSE chunks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use whale_engine::serving::engine::{Done, Event, ImageInput, TokenEvent, TokenLogprob, ValidRequest};
use whale_engine::serving::generate::FinishReason;
use whale_engine::text::chat_template::{guard_json, ChatMessage};
use whale_engine::text::constraint::{Constraint, Grammar};
use whale_engine::text::reasoning::{prompt_opens_thinking, ReasoningParser, Segment};
use whale_engine::text::tokenizer::Tokenizer;
use whale_engine::text::tool_calls::{ToolCall, ToolCallSplitter, ToolFormat};
use whale_engine::vision::janus::IMAGE_TOKEN;

use crate::commands::vision::{Vision, MAX_IMAGES};

use super::errors::{ApiError, RequestError};
use super::request::{
    budget, data_url_bytes, parse_messages, parse_tools, schema_bytes, validate_common, ChatRequest, ToolChoice,
    ToolSpec, IMAGE_MARK, MAX_SCHEMA_BYTES,
};
use super::sse::{chunks, sse_response, AsyncEvents, ChunkWriter};
use super::{new_id, parse_and_prepare, unix_now, AppState};

/// How the answer's tool calls come out.
#[derive(Clone, Debug)]
struct ToolMode {
    format: ToolFormat,
    /// Text the server put at the end of the prompt to force a call; the
    /// generated text continues it.
    forced_prefix: Option<String>,
    /// What closes a forced call once its arguments are complete.
    closing: Option<String>,
    /// The tool a forced call calls.
    forced_name: Option<String>,
}

/// A chat request, validated and tokenized.
struct Prepared {
    valid: ValidRequest,
    stream: bool,
    include_usage: bool,
    logprobs: bool,
    /// The prompt leaves the model inside `<think>`.
    in_thinking: bool,
    reasoning_model: bool,
    tools: Option<ToolMode>,
}

pub async fn chat_completions(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t0 = Instant::now();
    let prep = parse_and_prepare(&app, body, prepare).await?;
    let run = ChatRun::new(app.clone(), &prep, t0);
    // The request moves to the engine (its compiled grammar is not copied).
    let events = AsyncEvents::submit(&app.engine, app.metrics.clone(), prep.valid)?;
    if prep.stream {
        let writer = ChatChunks { run, include_usage: prep.include_usage, pending_logprobs: Vec::new(), over: false };
        Ok(sse_response(chunks(events, writer), app.keep_alive))
    } else {
        Ok(Json(collect(run, events).await?).into_response())
    }
}

/// Validate, render the template and tokenize (runs on a blocking thread).
fn prepare(app: &AppState, req: ChatRequest) -> Result<Prepared, ApiError> {
    let chat = app.chat.as_ref().ok_or(RequestError::NoChatTemplate)?;
    let common = validate_common(&req.common, app.ctx, app.tok.vocab_size())?;
    let logprobs = req.logprobs.unwrap_or(false);
    let top_logprobs = match req.top_logprobs {
        None => 0,
        Some(n) if !(0..=whale_engine::serving::engine::MAX_TOP_LOGPROBS as i64).contains(&n) => {
            return Err(RequestError::TopLogprobs(n).into())
        }
        Some(n) if n > 0 && !logprobs => return Err(RequestError::TopLogprobsWithoutLogprobs.into()),
        Some(n) => n as usize,
    };
    let format_grammar = match &req.response_format {
        None => None,
        Some(f) => match f.kind.as_str() {
            "text" => None,
            "json_object" => Some(Grammar::JsonObject),
            "json_schema" => {
                let js = f.json_schema.as_ref().ok_or(RequestError::NoJsonSchema)?;
                if let Some(n) = js.schema.as_ref().map(schema_bytes).filter(|&n| n > MAX_SCHEMA_BYTES) {
                    return Err(RequestError::SchemaTooLarge(n).into());
                }
                Some(Grammar::JsonSchema(js.schema.clone().unwrap_or_else(|| json!({}))))
            }
            other => return Err(RequestError::ResponseFormat(other.to_string()).into()),
        },
    };
    let tools = req.tools.unwrap_or_default();
    let (specs, choice) = parse_tools(&tools, req.tool_choice.as_ref())?;
    let mut messages = req.messages;
    if req.continue_final_message == Some(true) {
        if let Some(last) = messages.last_mut() {
            last.prefix = Some(true);
        }
    }
    let mut conv = parse_messages(messages, chat.tool_format)?;
    // The request's text stays text: spellings of control tokens in it are
    // broken, so only the template's markup becomes control ids.
    let tok = &app.tok;
    for m in conv.messages.iter_mut().chain(conv.prefix.iter_mut()) {
        m.guard(tok);
    }
    // The tools as the client sent them (the template may print any field).
    let mut guarded_tools: Vec<Value> = tools.into_iter().map(|t| t.raw).collect();
    guarded_tools.iter_mut().for_each(|t| guard_json(tok, t, true));
    let tool_mode = match choice {
        ToolChoice::None => None,
        choice => {
            let format = chat.tool_format.ok_or(RequestError::NoToolFormat)?;
            let required = choice == ToolChoice::Required;
            let forced = match choice {
                ToolChoice::Named(n) => Some(n),
                ToolChoice::Required if specs.len() == 1 => Some(specs[0].name.clone()),
                _ => None,
            };
            let (forced_prefix, closing) = match (&forced, required) {
                (Some(name), _) => {
                    (Some(format.forced_call_prefix(&tok.guard_text(name, true))), Some(format.closing()))
                }
                (None, true) => (Some(format.opener().to_string()), None),
                (None, false) => (None, None),
            };
            Some(ToolMode { format, forced_prefix, closing, forced_name: forced })
        }
    };
    // Templates that render tool calls but not the tool list (R1's) get the
    // list in the system message.
    if let (Some(tm), false) = (&tool_mode, chat.renders_tools) {
        let description = tm.format.describe_tools(&guarded_tools);
        match conv.messages.first_mut() {
            Some(first) if first.role == "system" => first.content = format!("{}\n\n{description}", first.content),
            _ => conv.messages.insert(0, ChatMessage::new("system", description)),
        }
    }
    let tools_json = (tool_mode.is_some() && chat.renders_tools).then(|| Value::Array(guarded_tools.clone()));
    let bos = tok.bos_token();
    let mut text = chat
        .template
        .render(&conv.messages, true, &bos, &tok.eos_token(), tools_json.as_ref())
        .map_err(|e| RequestError::Template(e.to_string()))?;
    // Same rule as `whale run --chat`: the template usually writes BOS itself.
    let add_bos = bos.is_empty() || !text.starts_with(&bos);
    // Chat prefix completion: the answer continues the given text.
    if let Some(p) = &conv.prefix {
        text.push_str(&p.content);
    }
    if let Some(fp) = tool_mode.as_ref().and_then(|t| t.forced_prefix.as_deref()) {
        text.push_str(fp);
    }
    let in_thinking = prompt_opens_thinking(&text);
    // Images: each mark becomes the model's image token (then its 576).
    let vision = match (&conv.images[..], app.vision.as_ref()) {
        ([], _) => None,
        (_, None) => return Err(RequestError::NoVision.into()),
        (urls, Some(v)) => {
            let rows = image_rows(v, urls)?;
            text = text.replace(IMAGE_MARK, &format!("{IMAGE_TOKEN}\n"));
            Some((v, rows))
        }
    };
    let mut ids = tok.encode_guarded(&text, add_bos).map_err(|e| RequestError::Tokenize(e.to_string()))?;
    let images = match vision {
        None => None,
        Some((v, rows)) => {
            ids = v.expand(&ids);
            let slots = ids.iter().filter(|&&t| t == v.marks.image).count();
            if slots != conv.images.len() * v.janus.image_rows() {
                return Err(RequestError::Image(format!(
                    "the chat template kept {} of the {} images",
                    slots / v.janus.image_rows(),
                    conv.images.len()
                ))
                .into());
            }
            Some(Arc::new(ImageInput { token: v.marks.image, rows }))
        }
    };
    let max_tokens = budget(ids.len(), common.max_tokens, None, app.ctx)?;
    let constraint = output_grammar(app, tool_mode.as_ref(), &specs, format_grammar)?;
    Ok(Prepared {
        valid: ValidRequest {
            prompt: ids,
            max_tokens,
            sampler: common.sampler,
            stop: common.stop,
            stop_at_eog: true,
            logprobs: logprobs.then_some(top_logprobs),
            constraint,
            images,
        },
        stream: common.stream,
        include_usage: common.include_usage,
        logprobs,
        in_thinking,
        reasoning_model: chat.reasoning,
        tools: tool_mode,
    })
}

/// The grammar the answer must follow, compiled (`None`: free text).
///
/// - A forced call (`tool_choice` naming a tool, or `required` with one
///   tool): its arguments, the tool's schema when it is `strict`, else any
///   JSON object.
/// - `required` with several tools, one of them `strict`: one call in the
///   model's format, each strict tool's arguments held to its schema.
/// - `auto` with a `strict` tool: free text until the model writes its
///   tool-call token, then the call as above, then free text again.
/// - Otherwise `response_format` (`json_object`, `json_schema`).
fn output_grammar(
    app: &AppState,
    tools: Option<&ToolMode>,
    specs: &[ToolSpec],
    format: Option<Grammar>,
) -> Result<Option<Constraint>, RequestError> {
    let any_strict = specs.iter().any(|t| t.strict);
    let Some(tm) = tools else {
        return format.map(|g| app.constraint(&g, None, "response_format")).transpose();
    };
    if let (Some(name), Some(_)) = (&tm.forced_name, &tm.closing) {
        // The prompt ends inside the call, just before the arguments.
        let schema = specs.iter().find(|t| &t.name == name && t.strict).and_then(|t| t.parameters.clone());
        let g = schema.map_or(Grammar::JsonObject, Grammar::JsonSchema);
        return app.constraint(&g, None, "tools").map(Some);
    }
    if !any_strict {
        return format.map(|g| app.constraint(&g, None, "response_format")).transpose();
    }
    if format.is_some() {
        return Err(RequestError::Unsupported(
            "response_format with strict tools under tool_choice \"auto\" is not supported: \
             force the tool (tool_choice) or drop \"strict\"",
        ));
    }
    // Non-strict tools (and strict ones without parameters) take any object.
    let calls: Vec<(String, Option<Value>)> =
        specs.iter().map(|t| (t.name.clone(), t.parameters.clone().filter(|_| t.strict))).collect();
    let trigger = tm.format.call_trigger();
    if tm.forced_prefix.is_some() {
        // `required`: the prompt ends with the format's opener.
        let with_trigger = tm.format.opener() != trigger;
        let g = Grammar::Lark(tm.format.call_grammar(&app.tok, &calls, with_trigger));
        return app.constraint(&g, None, "tools").map(Some);
    }
    let id = app.tok.token_to_id(trigger).ok_or(RequestError::Unsupported(
        "strict tools need the model's tool-call token, and this vocabulary has none",
    ))?;
    let g = Grammar::Lark(tm.format.call_grammar(&app.tok, &calls, false));
    app.constraint(&g, Some(id), "tools").map(Some)
}

/// A token's text as the logprobs objects show it (bytes decoded lossily).
pub fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let b = tok.token_bytes(id);
    (String::from_utf8_lossy(&b).into_owned(), b)
}

fn logprob_entry(tok: &Tokenizer, id: u32, lp: &TokenLogprob) -> Value {
    let one = |id: u32, logprob: f32| {
        let (token, bytes) = token_text(tok, id);
        json!({"token": token, "logprob": logprob, "bytes": bytes})
    };
    let mut v = one(id, lp.logprob);
    v["top_logprobs"] = Value::Array(lp.top.iter().map(|&(t, l)| one(t, l)).collect());
    v
}

/// What one engine event adds to the answer.
#[derive(Default)]
struct Delta {
    reasoning: String,
    content: String,
    logprobs: Vec<Value>,
}

/// The answer being built from engine events, streamed or not.
struct ChatRun {
    app: Arc<AppState>,
    id: String,
    created: u64,
    t0: Instant,
    parser: ReasoningParser,
    /// Watches content for tool calls (with `auto`/`required` tools).
    splitter: Option<ToolCallSplitter>,
    tools: Option<ToolMode>,
    /// Forced call: the generated arguments.
    forced_text: String,
    want_logprobs: bool,
    reasoning_model: bool,
    reasoning: String,
    content: String,
    logprobs: Vec<Value>,
    reasoning_tokens: usize,
    first_token: bool,
    tool_calls: Option<Vec<ToolCall>>,
    done: Option<Done>,
}

impl ChatRun {
    fn new(app: Arc<AppState>, prep: &Prepared, t0: Instant) -> ChatRun {
        let forced = prep.tools.as_ref().is_some_and(|t| t.forced_prefix.is_some());
        ChatRun {
            app,
            id: new_id("chatcmpl"),
            created: unix_now(),
            t0,
            parser: ReasoningParser::new(prep.in_thinking),
            splitter: prep.tools.as_ref().filter(|_| !forced).map(|t| ToolCallSplitter::new(t.format)),
            tools: prep.tools.clone(),
            forced_text: String::new(),
            want_logprobs: prep.logprobs,
            reasoning_model: prep.reasoning_model,
            reasoning: String::new(),
            content: String::new(),
            logprobs: Vec::new(),
            reasoning_tokens: 0,
            first_token: false,
            tool_calls: None,
            done: None,
        }
    }

    fn forced(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| t.forced_prefix.is_some())
    }

    fn segments(&mut self, segs: Vec<Segment>, d: &mut Delta) {
        for s in segs {
            match s {
                Segment::Reasoning(t) => d.reasoning.push_str(&t),
                Segment::Content(t) => match &mut self.splitter {
                    Some(sp) => d.content.push_str(&sp.push(&t)),
                    None => d.content.push_str(&t),
                },
            }
        }
    }

    fn token(&mut self, t: TokenEvent) -> Delta {
        if !self.first_token {
            self.first_token = true;
            self.app.metrics.observe_ttft(self.t0.elapsed());
        }
        let mut d = Delta::default();
        if let (true, Some(lp)) = (self.want_logprobs, &t.logprob) {
            d.logprobs.push(logprob_entry(&self.app.tok, t.id, lp));
        }
        if self.forced() {
            self.forced_text.push_str(&t.text);
        } else {
            let was_thinking = self.parser.in_thinking();
            let segs = self.parser.push(&t.text);
            if was_thinking || self.parser.in_thinking() {
                self.reasoning_tokens += 1;
            }
            self.segments(segs, &mut d);
        }
        self.record(&d);
        d
    }

    /// The request is over: flush what was held and parse tool calls.
    fn finish(&mut self, done: Done) -> Delta {
        let mut d = Delta::default();
        if let Some(tm) = self.tools.clone().filter(|_| self.forced()) {
            let mut text = tm.forced_prefix.clone().unwrap_or_default();
            text.push_str(&self.forced_text);
            if done.finish == FinishReason::Stop {
                text.push_str(tm.closing.as_deref().unwrap_or_default());
            }
            match tm.format.parse(&text) {
                Some(Ok((_, calls))) => self.tool_calls = Some(calls),
                // Cut short (max_tokens) or malformed: the text as content.
                _ => d.content.push_str(&self.forced_text),
            }
        } else {
            let segs = self.parser.finish();
            self.segments(segs, &mut d);
            if let (Some(sp), Some(tm)) = (&mut self.splitter, &self.tools) {
                let (rest, calls_text) = sp.finish();
                d.content.push_str(&rest);
                if let Some(ct) = calls_text {
                    match tm.format.parse(&ct) {
                        Some(Ok((_, calls))) => self.tool_calls = Some(calls),
                        _ => d.content.push_str(&ct),
                    }
                }
            }
        }
        self.record(&d);
        self.done = Some(done);
        d
    }

    fn record(&mut self, d: &Delta) {
        self.reasoning.push_str(&d.reasoning);
        self.content.push_str(&d.content);
        self.logprobs.extend(d.logprobs.iter().cloned());
    }

    fn finish_reason(&self) -> &'static str {
        if self.tool_calls.is_some() {
            return "tool_calls";
        }
        match self.done.as_ref().map(|d| d.finish) {
            Some(FinishReason::Length) => "length",
            _ => "stop",
        }
    }

    fn tool_calls_json(&self, with_index: bool) -> Option<Value> {
        let calls = self.tool_calls.as_ref()?;
        Some(Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = json!({
                        "id": format!("call_{}_{i}", self.id.trim_start_matches("chatcmpl-")),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    });
                    if with_index {
                        v["index"] = json!(i);
                    }
                    v
                })
                .collect(),
        ))
    }

    fn usage(&self) -> Value {
        let d = self.done.clone().unwrap_or(Done {
            finish: FinishReason::Stop,
            prompt_tokens: 0,
            cached_tokens: 0,
            completion_tokens: 0,
            prefill_time: Duration::ZERO,
            decode_time: Duration::ZERO,
        });
        usage_json(&d, Some(self.reasoning_tokens))
    }

    fn response(&self) -> Value {
        let mut message = json!({"role": "assistant", "content": self.content});
        if self.reasoning_model || !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if let Some(calls) = self.tool_calls_json(false) {
            if self.content.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = calls;
        }
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.app.model_id,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": if self.want_logprobs { json!({"content": self.logprobs}) } else { Value::Null },
                "finish_reason": self.finish_reason(),
            }],
            "usage": self.usage(),
            "system_fingerprint": super::completions::FINGERPRINT,
        })
    }
}

/// `usage` as DeepSeek reports it (plus OpenAI's `*_details`).
pub fn usage_json(d: &Done, reasoning_tokens: Option<usize>) -> Value {
    let mut u = json!({
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
        "prompt_cache_hit_tokens": d.cached_tokens,
        "prompt_cache_miss_tokens": d.prompt_tokens - d.cached_tokens,
        "prompt_tokens_details": {"cached_tokens": d.cached_tokens},
    });
    if let Some(r) = reasoning_tokens {
        u["completion_tokens_details"] = json!({"reasoning_tokens": r});
    }
    u
}

/// Run a request to its end and build the response.
async fn collect(mut run: ChatRun, mut events: AsyncEvents) -> Result<Value, ApiError> {
    while let Some(ev) = events.next().await {
        match ev {
            Event::Started { .. } => {}
            Event::Token(t) => {
                run.token(t);
            }
            Event::Done(d) => {
                run.finish(d);
                return Ok(run.response());
            }
            Event::Failed(m) => return Err(ApiError::Internal(m)),
        }
    }
    Err(ApiError::Unavailable("the engine stopped before the request finished".into()))
}

/// SSE chunks of a chat answer.
struct ChatChunks {
    run: ChatRun,
    include_usage: bool,
    /// Log-probabilities of tokens whose text is not out yet.
    pending_logprobs: Vec<Value>,
    over: bool,
}

impl ChatChunks {
    fn chunk(&self, delta: Value, logprobs: Option<Vec<Value>>, finish: Option<&str>) -> String {
        let r = &self.run;
        json!({
            "id": r.id,
            "object": "chat.completion.chunk",
            "created": r.created,
            "model": r.app.model_id,
            "system_fingerprint": super::completions::FINGERPRINT,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": logprobs.map(|c| json!({"content": c})),
                "finish_reason": finish,
            }],
        })
        .to_string()
    }

    fn deltas(&mut self, d: Delta, out: &mut Vec<String>) {
        self.pending_logprobs.extend(d.logprobs);
        let reasoning_model = self.run.reasoning_model;
        let mut parts = Vec::new();
        if !d.reasoning.is_empty() {
            parts.push(json!({"content": Value::Null, "reasoning_content": d.reasoning}));
        }
        if !d.content.is_empty() {
            let mut v = json!({"content": d.content});
            if reasoning_model {
                v["reasoning_content"] = Value::Null;
            }
            parts.push(v);
        }
        for p in parts {
            let lp = (self.run.want_logprobs).then(|| std::mem::take(&mut self.pending_logprobs));
            out.push(self.chunk(p, lp, None));
        }
    }

    fn error(&mut self, message: &str) -> Vec<String> {
        self.over = true;
        let e = ApiError::Internal(message.to_string());
        vec![e.body().to_string(), "[DONE]".to_string()]
    }
}

impl ChunkWriter for ChatChunks {
    fn on_event(&mut self, ev: Event) -> Vec<String> {
        let mut out = Vec::new();
        match ev {
            Event::Started { .. } => {
                let mut delta = json!({"role": "assistant", "content": ""});
                if self.run.reasoning_model {
                    delta = json!({"role": "assistant", "content": Value::Null, "reasoning_content": ""});
                }
                out.push(self.chunk(delta, None, None));
            }
            Event::Token(t) => {
                let d = self.run.token(t);
                self.deltas(d, &mut out);
            }
            Event::Done(done) => {
                let d = self.run.finish(done);
                self.deltas(d, &mut out);
                if let Some(calls) = self.run.tool_calls_json(true) {
                    out.push(self.chunk(json!({"tool_calls": calls}), None, None));
                }
                let lp = self.run.want_logprobs.then(|| std::mem::take(&mut self.pending_logprobs));
                out.push(self.chunk(json!({}), lp, Some(self.run.finish_reason())));
                if self.include_usage {
                    let r = &self.run;
                    let usage = json!({
                        "id": r.id,
                        "object": "chat.completion.chunk",
                        "created": r.created,
                        "model": r.app.model_id,
                        "system_fingerprint": super::completions::FINGERPRINT,
                        "choices": [],
                        "usage": r.usage(),
                    });
                    out.push(usage.to_string());
                }
                out.push("[DONE]".to_string());
                self.over = true;
            }
            Event::Failed(m) => return self.error(&m),
        }
        out
    }

    fn on_close(&mut self) -> Vec<String> {
        if self.over {
            Vec::new()
        } else {
            self.error("the engine stopped before the request finished")
        }
    }
}

/// The aligner's rows of every image of a request, in order. Images come
/// as data URLs (`data:image/png;base64,...`, PNG or JPEG): the server
/// fetches nothing from the network on a client's behalf.
fn image_rows(v: &Vision, urls: &[String]) -> Result<Vec<f32>, RequestError> {
    if urls.len() > MAX_IMAGES {
        return Err(RequestError::Image(format!("{} images sent; at most {MAX_IMAGES} fit one request", urls.len())));
    }
    let mut rows = Vec::new();
    for (k, url) in urls.iter().enumerate() {
        let bad = |m: String| RequestError::Image(format!("image {k}: {m}"));
        let bytes = data_url_bytes(url).map_err(bad)?;
        let img = whale_engine::vision::image::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        rows.extend(v.janus.image_features(&img).map_err(|e| bad(e.to_string()))?);
    }
    Ok(rows)
}
