//! `whale serve`: an HTTP server with DeepSeek's API (and OpenAI's `/v1`
//! paths) over the engine.
//!
//! A request reads top to bottom: route (this file) → authentication
//! ([`auth`]) → parse and validate (`request.rs`, one error per rule in
//! `errors.rs`) → render the chat template and tokenize (on a blocking thread)
//! → [`EngineHandle::submit`] → events → JSON or SSE chunks (`chat.rs`,
//! `completions.rs`, `sse.rs`). The engine thread owns the model; the async
//! side never touches it.

mod chat;
mod completions;
pub mod errors;
mod images;
mod metrics;
mod models;
pub mod request;
mod sse;
mod worker;

use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use whale_engine::serving::engine::{EngineConfig, EngineHandle};
use whale_engine::text::chat_template::ChatTemplate;
use whale_engine::text::constraint::{Constraint, ConstraintEnv, Grammar};
use whale_engine::text::tokenizer::Tokenizer;
use whale_engine::text::tool_calls::ToolFormat;

use crate::commands::ModelArgs;
use errors::{ApiError, RequestError};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// GGUF file, Hugging Face folder, or catalog name.
    pub model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require "Authorization: Bearer KEY" on every route but /health.
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read the API key from a file (its first line).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Most requests generating at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Most requests waiting for a slot; beyond, requests get 429.
    #[arg(long, default_value_t = 32)]
    pub max_queue: usize,
    /// Memory for the prefix cache (KV of finished requests), in MiB.
    #[arg(long, default_value_t = 1024)]
    pub cache_mb: usize,
    /// Use this Jinja chat template instead of the model's own.
    #[arg(long)]
    pub chat_template_file: Option<PathBuf>,
    /// The model id that /models reports (default: from the model's name).
    #[arg(long)]
    pub alias: Option<String>,
    /// While a streamed request waits, send an SSE comment this often (ms).
    #[arg(long, default_value_t = 5000)]
    pub keep_alive_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Time a client has to send the whole request body (ms); a slower one
    /// gets 408 and its connection is closed.
    #[arg(long, default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Speculative decoding with the model's multi-token-prediction layer
    /// (DeepSeek-V3/R1's MTP): `mtp:K` drafts K tokens a step (1 to 8; `mtp`
    /// is mtp:1) and the main model checks them for every running request in
    /// one batched pass; `none` decodes one token at a time. Outputs follow
    /// the same distribution either way (greedy ones are identical). Default:
    /// mtp:1 where the model has the layer. Requests with a grammar
    /// (response_format, strict tools) decode without drafts.
    #[arg(long, default_value = "auto")]
    pub spec: crate::commands::Spec,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

/// What the chat endpoint needs to know about the template.
pub struct ChatSetup {
    pub template: ChatTemplate,
    /// How the model writes tool calls, if the template says.
    pub tool_format: Option<ToolFormat>,
    /// Whether the template renders the `tools` list itself.
    pub renders_tools: bool,
    /// A reasoning model (its template knows `</think>`): answers carry
    /// `reasoning_content`.
    pub reasoning: bool,
}

/// The fill-in-the-middle tokens: prefix, suffix and middle markers.
#[derive(Clone, Copy, Debug)]
pub struct Fim {
    pub prefix: u32,
    pub suffix: u32,
    pub middle: u32,
}

/// Known FIM token spellings (prefix, suffix, middle), in prefix-suffix-middle order.
const FIM_TOKENS: [[&str; 3]; 3] = [
    ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"], // Qwen2.5-Coder
    ["<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"], // DeepSeek
    ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],       // StarCoder family
];

impl Fim {
    fn detect(tok: &Tokenizer) -> Option<Fim> {
        FIM_TOKENS.iter().find_map(|[p, s, m]| {
            Some(Fim { prefix: tok.token_to_id(p)?, suffix: tok.token_to_id(s)?, middle: tok.token_to_id(m)? })
        })
    }
}

/// Shared by every handler.
pub struct AppState {
    pub engine: EngineHandle,
    pub tok: Arc<Tokenizer>,
    pub chat: Option<ChatSetup>,
    pub fim: Option<Fim>,
    pub model_id: String,
    /// The architecture's name as GGUF writes it (`llama`, `qwen2`, `deepseek2`).
    pub architecture: String,
    /// Unix time the server started (the model's `created`).
    pub created: u64,
    pub api_key: Option<String>,
    pub metrics: Arc<metrics::Metrics>,
    pub keep_alive: Duration,
    /// Tokens per sequence.
    pub ctx: usize,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// The vocabulary as the grammar library sees it, built on the first
    /// request with a grammar (JSON mode, a schema, strict tools).
    pub constraints: OnceLock<Result<ConstraintEnv, String>>,
    /// Image generation, when the model is Janus-Pro.
    pub images: Option<images::ImageWorker>,
    /// The model's image paths, when it is Janus-Pro.
    pub vision: Option<Arc<crate::commands::vision::Vision>>,
}

impl AppState {
    /// Compile `grammar` for a request (on a blocking thread: a schema
    /// compiles in about a millisecond, and llguidance bounds the work).
    pub fn constraint(
        &self,
        grammar: &Grammar,
        trigger: Option<u32>,
        param: &'static str,
    ) -> Result<Constraint, RequestError> {
        let env = self.constraints.get_or_init(|| ConstraintEnv::new(&self.tok).map_err(|e| e.to_string()));
        let env = env.as_ref().map_err(|e| RequestError::Grammar { param, message: e.clone() })?;
        env.compile(grammar, trigger).map_err(|e| RequestError::Grammar { param, message: e.to_string() })
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A fresh id like `chatcmpl-18c3f0a2b4e1-7`.
pub fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{nanos:x}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn model_id(spec: &str) -> String {
    let p = std::path::Path::new(spec);
    if p.exists() {
        let name = p.file_name().map_or(spec.into(), |n| n.to_string_lossy().into_owned());
        name.strip_suffix(".gguf").unwrap_or(&name).to_string()
    } else {
        spec.to_string()
    }
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.parallel >= 1 && a.parallel <= 256, "--parallel must be between 1 and 256, got {}", a.parallel);
    anyhow::ensure!(a.keep_alive_ms >= 1, "--keep-alive-ms must be at least 1");
    anyhow::ensure!(a.body_timeout_ms >= 1, "--body-timeout-ms must be at least 1");
    let api_key = match (&a.api_key, &a.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading --api-key-file {}", f.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string())
        }
        (None, None) => None,
    };
    if api_key.as_deref() == Some("") {
        anyhow::bail!("the API key is empty");
    }
    let template_src = match &a.chat_template_file {
        Some(f) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("reading --chat-template-file {}", f.display()))?)
        }
        None => None,
    };
    let (m, ctx) = a.model_args.load(&a.model)?;
    let path = crate::pull::resolve_model(&a.model)?;
    let vision = if path.is_dir() && whale_engine::vision::janus::Janus::is_janus(&path) {
        Some(Arc::new(crate::commands::vision::Vision::load(&a.model, &a.model_args)?))
    } else {
        None
    };
    let images = vision.clone().map(images::ImageWorker::start);
    let tok = Arc::new(m.tokenizer);
    let template_src = template_src.or_else(|| tok.chat_template().map(str::to_string));
    let chat = match template_src {
        Some(src) => Some(ChatSetup {
            template: ChatTemplate::new(&src).context("compiling the chat template")?,
            tool_format: ToolFormat::detect(&src),
            renders_tools: mentions_variable(&src, "tools"),
            reasoning: src.contains("</think>"),
        }),
        None => None,
    };
    let fim = Fim::detect(&tok);
    let architecture = m.model.info().architecture.name().to_string();
    let spec_drafts = a.spec.drafts(m.model.drafter().is_some())?.unwrap_or(0);
    if spec_drafts > 0 {
        tracing::info!(
            "speculative decoding: the MTP layer drafts {spec_drafts} token(s) a step (--spec none turns it off)"
        );
    }
    let config =
        EngineConfig { parallel: a.parallel, max_queue: a.max_queue, ctx, cache_bytes: a.cache_mb << 20, spec_drafts };
    let engine = EngineHandle::start(m.model, tok.clone(), config);
    let metrics = Arc::new(metrics::Metrics::new(engine.clone()));
    let state = Arc::new(AppState {
        engine,
        tok,
        chat,
        fim,
        model_id: a.alias.clone().unwrap_or_else(|| model_id(&a.model)),
        architecture,
        created: unix_now(),
        api_key,
        metrics,
        keep_alive: Duration::from_millis(a.keep_alive_ms),
        ctx,
        max_body_bytes: a.max_body_bytes,
        body_timeout: Duration::from_millis(a.body_timeout_ms),
        constraints: OnceLock::new(),
        images,
        vision,
    });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "whale serve: {} on http://{addr} (context {ctx} tokens, {} parallel, queue {}{})",
            state.model_id,
            a.parallel,
            a.max_queue,
            if state.api_key.is_some() { ", API key required" } else { "" }
        );
        // On a signal, stop accepting and let running requests finish, for
        // at most SHUTDOWN_GRACE (a stream may not end by itself).
        let stopping = Arc::new(tokio::sync::Notify::new());
        let signalled = stopping.clone();
        let serve = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
            shutdown_signal().await;
            signalled.notify_one();
        });
        tokio::select! {
            r = serve.into_future() => r?,
            _ = async {
                stopping.notified().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => eprintln!("whale serve: requests still running after {SHUTDOWN_GRACE:?}; stopping anyway"),
        }
        anyhow::Ok(())
    })
}

/// How long running requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Whether `src` uses the variable `name` (as a whole word: `tools`, not `tool_calls`).
fn mentions_variable(src: &str, name: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    src.match_indices(name).any(|(i, _)| {
        let before = src[..i].chars().next_back();
        let after = src[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Every route, with DeepSeek's paths and the OpenAI-style `/v1` aliases.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let mut r = Router::new();
    for base in ["", "/v1"] {
        r = r
            .route(&format!("{base}/chat/completions"), post(chat::chat_completions))
            .route(&format!("{base}/beta/chat/completions"), post(chat::chat_completions))
            .route(&format!("{base}/completions"), post(completions::completions))
            .route(&format!("{base}/beta/completions"), post(completions::completions))
            .route(&format!("{base}/images/generations"), post(images::generations))
            .route(&format!("{base}/models"), get(models::list))
            .route(&format!("{base}/models/{{id}}"), get(models::one))
            .route(&format!("{base}/health"), get(health));
    }
    // What a router in front of several workers calls (see worker.rs).
    r = r
        .route("/server_info", get(worker::server_info))
        .route("/get_server_info", get(worker::server_info))
        .route("/model_info", get(worker::model_info))
        .route("/get_model_info", get(worker::model_info))
        .route("/get_load", get(worker::load))
        .route("/flush_cache", post(worker::flush_cache))
        .route("/health_generate", get(worker::health_generate));
    r.route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), read_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), announced_size))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `GET /health`: 200 while the engine takes requests.
async fn health(State(app): State<Arc<AppState>>) -> Response {
    let s = app.engine.stats();
    Json(serde_json::json!({"status": "ok", "running": s.running, "waiting": s.waiting})).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound { method: method.to_string(), path: uri.path().to_string() }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed { method: method.to_string(), path: uri.path().to_string() }
}

/// A body whose `Content-Length` is over the limit gets its 413 before it
/// is sent (a client that waits for `100 Continue` sends none of it).
async fn announced_size(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > app.max_body_bytes as u64) {
        return ApiError::TooLarge(app.max_body_bytes).into_response();
    }
    next.run(req).await
}

/// Read the whole body (after authentication) within the size limit and
/// `--body-timeout-ms`: a client that sends it too slowly gets 408 and the
/// connection is closed, instead of holding a task and a connection open.
async fn read_body(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    // Only a POST has a body to read, and not on the routes open without the
    // API key (an unauthenticated client must not make the server hold one).
    if req.method() != Method::POST || is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(app.body_timeout, axum::body::to_bytes(body, app.max_body_bytes)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let inner = e.into_inner();
            return if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                ApiError::TooLarge(app.max_body_bytes).into_response()
            } else {
                ApiError::from(errors::RequestError::Body(format!("the body could not be read: {inner}")))
                    .into_response()
            };
        }
        Err(_) => {
            let mut resp = ApiError::BodyTimeout(app.body_timeout).into_response();
            resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return resp;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// The routes open without the API key.
fn is_open(path: &str) -> bool {
    matches!(path, "/health" | "/v1/health")
}

/// Require the API key (when one is set) everywhere but `/health`.
async fn auth(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let open = is_open(req.uri().path());
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !open && !given.is_some_and(|g| same_key(g.as_bytes(), key.as_bytes())) {
            let mut resp = ApiError::Unauthorized.into_response();
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(req).await
}

/// Compare keys in time independent of where they differ (`subtle`'s
/// constant-time comparison; only the length can be learnt).
fn same_key(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The start of every generation route: parse the body (read within the
/// size limit) as `R` and run `prepare` (templates, tokenization,
/// validation), both on a blocking thread so the async workers stay free:
/// an 8 MiB body takes milliseconds to parse.
pub async fn parse_and_prepare<R, P>(
    app: &Arc<AppState>,
    body: Result<axum::body::Bytes, BytesRejection>,
    prepare: fn(&AppState, R) -> Result<P, ApiError>,
) -> Result<P, ApiError>
where
    R: serde::de::DeserializeOwned + request::HasCommon + Send + 'static,
    P: Send + 'static,
{
    let body = body.map_err(|r| body_error(r, app.max_body_bytes))?;
    let app = app.clone();
    let metrics = app.metrics.clone();
    tokio::task::spawn_blocking(move || prepare(&app, request::parse_body::<R>(&body)?)).await.map_err(|e| {
        // A panic is a bug: logged with its message, never shown to the client.
        tracing::error!("request preparation failed: {e}");
        metrics.count_panic();
        ApiError::Internal("internal error".into())
    })?
}

/// A body the extractor refused: too large (413) or unreadable (400).
pub fn body_error(r: BytesRejection, limit: usize) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        errors::RequestError::Body(r.body_text()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_tools_variable() {
        assert!(mentions_variable("{%- if tools %}", "tools"));
        assert!(mentions_variable("{{ tools|tojson }}", "tools"));
        assert!(!mentions_variable("{% for t in message['tool_calls'] %}{{ ns.is_tools_x }}", "tools"));
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(same_key(b"secret", b"secret"));
        assert!(!same_key(b"secret", b"secreT"));
        assert!(!same_key(b"secret", b"secret2"));
    }
}
