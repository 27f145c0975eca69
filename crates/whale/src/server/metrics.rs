//! `GET /metrics`: Prometheus metrics through the `prometheus-client` crate
//! (the Prometheus project's own Rust client), in the OpenMetrics text format
//! that Prometheus scrapes.
//!
//! Two kinds of metric:
//! - the HTTP side, recorded as requests go: requests by route and status,
//!   time to first token, and per request its queue time and its prefill and
//!   decode speeds (tokens/s);
//! - the engine side, read at each scrape from
//!   [`whale_engine::serving::engine::EngineHandle::stats`] by a collector:
//!   tokens, cache hits, queue, running requests, the prefix cache and the
//!   KV-cache usage ratio.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use whale_engine::serving::engine::{Done, EngineHandle};

use super::AppState;

/// Upper bounds of the time histograms (time to first token, queue time), in seconds.
const SECONDS_BUCKETS: [f64; 12] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Upper bounds of the speed histograms, in tokens per second.
const TPS_BUCKETS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

/// The server's metrics, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    ttft: Histogram,
    queue_time: Histogram,
    prefill_tps: Histogram,
    decode_tps: Histogram,
    panics: Counter,
}

impl Metrics {
    pub fn new(engine: EngineHandle) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register("whale_requests", "HTTP requests by route and status", requests.clone());
        let seconds = || Histogram::new(SECONDS_BUCKETS);
        let tps = || Histogram::new(TPS_BUCKETS);
        let (ttft, queue_time, prefill_tps, decode_tps) = (seconds(), seconds(), tps(), tps());
        registry.register(
            "whale_time_to_first_token_seconds",
            "Time from request to first generated token",
            ttft.clone(),
        );
        registry.register(
            "whale_queue_time_seconds",
            "Time a request waited for a slot before the engine started it",
            queue_time.clone(),
        );
        registry.register(
            "whale_prefill_tokens_per_second",
            "Per request: prompt tokens computed (not from the prefix cache) per second of prefill",
            prefill_tps.clone(),
        );
        registry.register(
            "whale_decode_tokens_per_second",
            "Per request: tokens generated after the first, per second",
            decode_tps.clone(),
        );
        let panics = Counter::default();
        registry.register(
            "whale_panics",
            "Requests whose handling panicked (bugs; the server went on)",
            panics.clone(),
        );
        registry.register_collector(Box::new(EngineCollector(engine)));
        Metrics { registry, requests, ttft, queue_time, prefill_tps, decode_tps, panics }
    }

    pub fn count_request(&self, route: &str, status: u16) {
        self.requests.get_or_create(&RouteStatus { route: route.to_string(), status }).inc();
    }

    pub fn count_panic(&self) {
        self.panics.inc();
    }

    pub fn observe_ttft(&self, d: Duration) {
        self.ttft.observe(d.as_secs_f64());
    }

    pub fn observe_queued(&self, d: Duration) {
        self.queue_time.observe(d.as_secs_f64());
    }

    /// A finished request's prefill and decode speeds.
    pub fn observe_done(&self, d: &Done) {
        let computed = d.prompt_tokens.saturating_sub(d.cached_tokens);
        if computed > 0 && !d.prefill_time.is_zero() {
            self.prefill_tps.observe(computed as f64 / d.prefill_time.as_secs_f64());
        }
        if d.completion_tokens > 1 && !d.decode_time.is_zero() {
            self.decode_tps.observe((d.completion_tokens - 1) as f64 / d.decode_time.as_secs_f64());
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("metrics: encoding failed: {e}");
        }
        out
    }
}

/// The engine's counters, read at each scrape.
struct EngineCollector(EngineHandle);

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for EngineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = self.0.stats();
        counter(&mut enc, "whale_prompt_tokens", "Prompt tokens of admitted requests", e.prompt_tokens)?;
        counter(
            &mut enc,
            "whale_prompt_cache_hit_tokens",
            "Prompt tokens whose KV came from the prefix cache",
            e.cache_hit_tokens,
        )?;
        counter(&mut enc, "whale_completion_tokens", "Tokens generated", e.generated_tokens)?;
        counter(&mut enc, "whale_engine_requests", "Requests given a slot by the engine", e.requests)?;
        counter(&mut enc, "whale_cancelled_requests", "Requests cancelled by their client", e.cancelled)?;
        counter(
            &mut enc,
            "whale_engine_panics",
            "Requests failed by a panic on the engine thread (bugs; the engine went on with the others)",
            e.panics,
        )?;
        gauge(&mut enc, "whale_queue_length", "Requests waiting for a slot", e.waiting as i64)?;
        gauge(&mut enc, "whale_running_requests", "Requests generating", e.running as i64)?;
        gauge(
            &mut enc,
            "whale_prefix_cache_sessions",
            "Finished sequences kept for prefix reuse",
            e.cached_sessions as i64,
        )?;
        gauge(&mut enc, "whale_prefix_cache_bytes", "KV-cache bytes held by the prefix cache", e.cached_bytes as i64)?;
        counter(
            &mut enc,
            "whale_spec_steps",
            "Speculative decoding: main-model passes that checked drafts of the MTP layer",
            e.spec.steps as u64,
        )?;
        counter(&mut enc, "whale_spec_draft_tokens", "Speculative decoding: tokens drafted", e.spec.drafted as u64)?;
        counter(
            &mut enc,
            "whale_spec_accepted_tokens",
            "Speculative decoding: drafted tokens the main model accepted",
            e.spec.accepted as u64,
        )?;
        gauge(
            &mut enc,
            "whale_spec_acceptance_ratio",
            "Speculative decoding: accepted over drafted tokens since start (0 before any draft)",
            e.spec.acceptance_rate(),
        )?;
        gauge(
            &mut enc,
            "whale_spec_tokens_per_step",
            "Speculative decoding: tokens one checking pass yielded on average since start (0 before any)",
            e.spec.tokens_per_step(),
        )?;
        let ratio = if e.kv_capacity_tokens == 0 { 0.0 } else { e.kv_tokens as f64 / e.kv_capacity_tokens as f64 };
        gauge(
            &mut enc,
            "whale_kv_cache_usage_ratio",
            "Tokens in the KV caches of running requests over what the running slots can hold (parallel x ctx)",
            ratio,
        )
    }
}

/// `GET /metrics`.
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let body = app.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// Middleware: count every request by route and status.
pub async fn track(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    app.metrics.count_request(&route, resp.status().as_u16());
    resp
}
