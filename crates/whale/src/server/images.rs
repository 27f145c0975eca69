//! `POST /images/generations` (OpenAI's images API) with Janus-Pro.
//!
//! Image generation does not share the text engine's batches: a request is
//! 576 steps of a batch of two (the prompt and its unconditional twin) and
//! then the VQ decoder. One image thread owns a second view of the model
//! (the same file pages) and takes jobs from a short queue; a full queue
//! answers 429. A client that goes away stops its job at the next step.
//!
//! The request: `prompt` (required), `n` (1 to [`MAX_N`]), `size` (only
//! `384x384`, or `auto`), `response_format` (only `b64_json`: whale keeps
//! no files to link to), `output_format` (only `png`); whale's own
//! `cfg` (guidance, default 5), `temperature` (default 1) and `seed`. Other
//! OpenAI fields (`model`, `quality`, `style`, `user`, …) are accepted and
//! ignored.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use whale_engine::vision::image::{encode_png, to_rgb8};
use whale_engine::vision::janus::CFG_RANGE;

use super::errors::{ApiError, RequestError};
use super::{body_error, unix_now, AppState};
use crate::commands::imagine::prompt_pair;
use crate::commands::vision::Vision;

/// Most images one request asks for.
pub const MAX_N: i64 = 4;
/// Requests waiting for the image thread beyond the one running.
const QUEUE: usize = 4;

#[derive(Deserialize, Debug)]
struct ImageRequest {
    prompt: Option<Value>,
    n: Option<i64>,
    size: Option<String>,
    response_format: Option<String>,
    output_format: Option<String>,
    cfg: Option<f64>,
    temperature: Option<f64>,
    seed: Option<u64>,
}

struct Job {
    prompt: String,
    n: usize,
    cfg: f32,
    temperature: f32,
    seed: u64,
    reply: tokio::sync::oneshot::Sender<Result<Vec<String>, ApiError>>,
}

/// The image thread's queue.
pub struct ImageWorker {
    tx: SyncSender<Job>,
    size: usize,
}

impl ImageWorker {
    /// Start the image thread on a loaded Janus model.
    pub fn start(v: Arc<Vision>) -> ImageWorker {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let size = v.janus.image_size();
        let spawned = std::thread::Builder::new().name("whale-images".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                let out = make_images(&v, &job);
                let _ = job.reply.send(out);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the image thread: {e}");
        }
        ImageWorker { tx, size }
    }
}

/// One job: `n` PNGs, base64, or why not.
fn make_images(v: &Vision, job: &Job) -> Result<Vec<String>, ApiError> {
    let failed = |e: &dyn std::fmt::Display| ApiError::Internal(e.to_string());
    let (prompt, uncond) = prompt_pair(v, &job.prompt).map_err(|e| ApiError::Internal(format!("{e:#}")))?;
    if prompt.len() + v.janus.image_codes() > v.ctx {
        return Err(rule(
            format!(
                "the prompt is too long: {} tokens and {} image tokens exceed the context of {}",
                prompt.len(),
                v.janus.image_codes(),
                v.ctx
            ),
            "prompt",
        ));
    }
    let size = v.janus.image_size();
    let mut out = Vec::with_capacity(job.n);
    for k in 0..job.n {
        let seed = job.seed.wrapping_add(k as u64);
        let codes = v
            .janus
            .generate_codes(&prompt, &uncond, job.cfg, job.temperature, seed, |_, _| !job.reply.is_closed())
            .map_err(|e| failed(&e))?;
        if job.reply.is_closed() {
            return Err(ApiError::Unavailable("the client went away".into()));
        }
        let px = v.janus.decode_codes(&codes, |_, _| {}).map_err(|e| failed(&e))?;
        let png = encode_png(&to_rgb8(&px, size, size)).map_err(|e| failed(&e))?;
        out.push(base64::engine::general_purpose::STANDARD.encode(png));
    }
    Ok(out)
}

fn rule(message: impl Into<String>, path: &str) -> ApiError {
    ApiError::Request(RequestError::Field { path: path.into(), message: message.into() })
}

/// Check a request against the rules; the job's settings.
fn validate(r: ImageRequest, size: usize) -> Result<(String, usize, f32, f32, u64), ApiError> {
    let prompt = match r.prompt {
        Some(Value::String(p)) if !p.trim().is_empty() => p,
        Some(Value::String(_)) => return Err(rule("the prompt is empty", "prompt")),
        Some(_) => return Err(rule("must be a string", "prompt")),
        None => return Err(rule("is required: what to draw", "prompt")),
    };
    let n = r.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(rule(format!("must be between 1 and {MAX_N}, got {n}"), "n"));
    }
    let square = format!("{size}x{size}");
    match r.size.as_deref() {
        None | Some("auto") => {}
        Some(s) if s == square => {}
        Some(s) => return Err(rule(format!("{s:?} is not supported: this model draws {square} only"), "size")),
    }
    match r.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some(f) => {
            return Err(rule(
                format!("{f:?} is not supported: whale keeps no files to link to; use \"b64_json\""),
                "response_format",
            ))
        }
    }
    match r.output_format.as_deref() {
        None | Some("png") => {}
        Some(f) => return Err(rule(format!("{f:?} is not supported; use \"png\""), "output_format")),
    }
    let cfg = r.cfg.unwrap_or(5.0) as f32;
    if !CFG_RANGE.contains(&cfg) {
        return Err(rule(
            format!(
                "must be between {} and {} (1 is no guidance; 5 is usual), got {cfg}",
                CFG_RANGE.start(),
                CFG_RANGE.end()
            ),
            "cfg",
        ));
    }
    let temperature = r.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(rule(format!("must be between 0 and 2, got {temperature}"), "temperature"));
    }
    let seed = r.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    Ok((prompt, n as usize, cfg, temperature as f32, seed))
}

pub async fn generations(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|r| body_error(r, app.max_body_bytes))?;
    let Some(worker) = app.images.as_ref() else {
        return Err(ApiError::Request(RequestError::Unsupported(
            "this model cannot generate images: serve a Janus-Pro model for /images/generations",
        )));
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
        return Err(RequestError::Body("the body must be a JSON object".into()).into());
    }
    let r: ImageRequest = serde_json::from_slice(&body).map_err(|e| RequestError::Body(e.to_string()))?;
    let (prompt, n, cfg, temperature, seed) = validate(r, worker.size)?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    match worker.tx.try_send(Job { prompt, n, cfg, temperature, seed, reply }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Err(ApiError::Busy(format!("{QUEUE} image requests are already waiting; try again later")))
        }
        Err(TrySendError::Disconnected(_)) => return Err(ApiError::Unavailable("the image thread stopped".into())),
    }
    let images = rx.await.map_err(|_| ApiError::Unavailable("the image thread stopped".into()))??;
    let data: Vec<Value> = images.into_iter().map(|b| json!({"b64_json": b, "revised_prompt": null})).collect();
    Ok(Json(
        json!({"created": unix_now(), "data": data, "output_format": "png", "size": format!("{0}x{0}", worker.size)}),
    ))
}
