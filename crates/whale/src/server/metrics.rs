//! `GET /metrics`: Prometheus text exposition, written by hand (a handful of
//! counters, gauges and one histogram do not need a metrics library).
//!
//! The HTTP side (requests by route and status, time to first token) is
//! counted here; the engine side (tokens, cache hits, queue) comes from
//! [`whale_engine::serving::engine::EngineHandle::stats`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Upper bounds of the time-to-first-token histogram, in seconds.
const TTFT_BUCKETS: [f64; 12] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
struct Inner {
    /// (route, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    ttft_counts: [u64; TTFT_BUCKETS.len()],
    ttft_sum: f64,
    ttft_count: u64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn count_request(&self, route: &str, status: u16) {
        self.with(|m| *m.requests.entry((route.to_string(), status)).or_default() += 1);
    }

    pub fn observe_ttft(&self, d: Duration) {
        let s = d.as_secs_f64();
        self.with(|m| {
            for (c, &b) in m.ttft_counts.iter_mut().zip(&TTFT_BUCKETS) {
                if s <= b {
                    *c += 1;
                }
            }
            m.ttft_sum += s;
            m.ttft_count += 1;
        });
    }

    fn render(&self, app: &AppState) -> String {
        let e = app.engine.stats();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "whale_prompt_tokens_total",
            "counter",
            "Prompt tokens of admitted requests.",
            e.prompt_tokens.to_string(),
        );
        metric(
            "whale_prompt_cache_hit_tokens_total",
            "counter",
            "Prompt tokens whose KV came from the prefix cache.",
            e.cache_hit_tokens.to_string(),
        );
        metric("whale_completion_tokens_total", "counter", "Tokens generated.", e.generated_tokens.to_string());
        metric(
            "whale_engine_requests_total",
            "counter",
            "Requests given a slot by the engine.",
            e.requests.to_string(),
        );
        metric(
            "whale_cancelled_requests_total",
            "counter",
            "Requests cancelled by their client.",
            e.cancelled.to_string(),
        );
        metric("whale_queue_length", "gauge", "Requests waiting for a slot.", e.waiting.to_string());
        metric("whale_running_requests", "gauge", "Requests generating.", e.running.to_string());
        metric(
            "whale_prefix_cache_sessions",
            "gauge",
            "Finished sequences kept for prefix reuse.",
            e.cached_sessions.to_string(),
        );
        metric(
            "whale_prefix_cache_bytes",
            "gauge",
            "KV-cache bytes held by the prefix cache.",
            e.cached_bytes.to_string(),
        );
        self.with(|m| {
            let _ = writeln!(out, "# HELP whale_requests_total HTTP requests by route and status.");
            let _ = writeln!(out, "# TYPE whale_requests_total counter");
            for ((route, status), n) in &m.requests {
                let _ = writeln!(out, "whale_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
            let name = "whale_time_to_first_token_seconds";
            let _ = writeln!(out, "# HELP {name} Time from request to first generated token.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (c, b) in m.ttft_counts.iter().zip(TTFT_BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.ttft_count);
            let _ = writeln!(out, "{name}_sum {}", m.ttft_sum);
            let _ = writeln!(out, "{name}_count {}", m.ttft_count);
        });
        out
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let body = app.metrics.render(&app);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Middleware: count every request by route and status.
pub async fn track(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    app.metrics.count_request(&route, resp.status().as_u16());
    resp
}
