//! What a router in front of several `whale serve` workers asks of each one,
//! beside the OpenAI routes and `/health`: the endpoints the SGLang Model
//! Gateway (`sglang-router`, `smg`) calls on an SGLang worker.
//!
//! - `GET /server_info` (and `/get_server_info`): the served model's name and
//!   the worker's limits. No `model_path`: from that the gateway would try to
//!   fetch a tokenizer from the Hugging Face hub, which it does not need for
//!   an OpenAI-compatible worker.
//! - `GET /model_info` (and `/get_model_info`): architecture and type.
//! - `GET /get_load`: requests running and waiting and the tokens in the
//!   running KV caches, for its `power_of_two` policy.
//! - `POST /flush_cache`: empty the prefix cache.
//! - `GET /health_generate`: generate one token, to show the model runs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use whale_engine::serving::engine::{Event, ValidRequest};
use whale_engine::serving::sampler::SamplerConfig;

use super::errors::ApiError;
use super::sse::AsyncEvents;
use super::AppState;

/// `GET /server_info`.
pub async fn server_info(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let cfg = app.engine.config();
    Json(json!({
        "served_model_name": app.model_id,
        "engine": "whale",
        "version": env!("CARGO_PKG_VERSION"),
        "context_length": app.ctx,
        "max_running_requests": cfg.parallel,
        "max_queued_requests": cfg.max_queue,
        "max_total_tokens": cfg.parallel * cfg.ctx,
    }))
}

/// `GET /model_info`.
pub async fn model_info(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({
        "model_type": app.architecture,
        "architectures": [app.architecture],
        "is_generation": true,
    }))
}

/// `GET /get_load`: one entry, as an SGLang worker without data parallelism.
pub async fn load(State(app): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let s = app.engine.stats();
    Json(json!([{
        "dp_rank": 0,
        "num_reqs": s.running + s.waiting,
        "num_waiting_reqs": s.waiting,
        "num_tokens": s.kv_tokens,
    }]))
}

/// `POST /flush_cache`: drop the finished sessions kept for prefix reuse.
pub async fn flush_cache(State(app): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stopped = || ApiError::Unavailable("the engine has stopped".into());
    if !app.engine.flush_cache(move |n| {
        let _ = tx.send(n);
    }) {
        return Err(stopped());
    }
    let flushed = rx.await.map_err(|_| stopped())?;
    Ok(Json(json!({"status": "ok", "flushed_sessions": flushed})))
}

/// How long `/health_generate` waits for its one token.
const HEALTH_GENERATE_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /health_generate`: 200 once a one-token request has gone through the
/// queue and the model, 503 if it cannot within a minute.
pub async fn health_generate(State(app): State<Arc<AppState>>) -> Response {
    let prompt = vec![app.tok.bos_id().unwrap_or(0)];
    let req = ValidRequest {
        prompt,
        max_tokens: 1,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
        stop_at_eog: false,
        logprobs: None,
        constraint: None,
        images: None,
    };
    let mut events = match AsyncEvents::submit(&app.engine, app.metrics.clone(), req) {
        Ok(e) => e,
        Err(e) => return ApiError::Unavailable(format!("cannot generate: {e}")).into_response(),
    };
    let outcome = tokio::time::timeout(HEALTH_GENERATE_TIMEOUT, async {
        while let Some(ev) = events.next().await {
            match ev {
                Event::Done(_) => return Ok(()),
                Event::Failed(m) => return Err(m),
                _ => {}
            }
        }
        Err("the engine stopped".to_string())
    })
    .await;
    match outcome {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Ok(Err(m)) => ApiError::Unavailable(format!("generation failed: {m}")).into_response(),
        Err(_) => ApiError::Unavailable(format!("no token within {HEALTH_GENERATE_TIMEOUT:?}")).into_response(),
    }
}
