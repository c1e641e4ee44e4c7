//! `GET /metrics` (Prometheus, through the Prometheus project's own client crate) and the
//! access log: one JSON line per request on standard error, unless `--quiet`, written by
//! its own thread (`log`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::error::json_error;
use super::log::{AccessLog, Entry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

/// The client's address, which the accept loop puts into each request's extensions.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    errors: Family<Route, Counter>,
    latency: Family<Route, Histogram>,
    batch_rows: Histogram,
    /// `None` with `--quiet`.
    log: Option<AccessLog>,
}

impl Metrics {
    pub fn new(log: Option<AccessLog>) -> Metrics {
        let mut registry = Registry::with_prefix("torchfit");
        let requests = Family::<RouteStatus, Counter>::default();
        let errors = Family::<Route, Counter>::default();
        // 50 µs to about 3 s, doubling.
        let latency =
            Family::<Route, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(5e-5, 2.0, 17)));
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_errors", "HTTP requests answered with a 4xx or 5xx status", errors.clone());
        registry.register("http_request_duration_seconds", "Time from request to response", latency.clone());
        registry.register("batch_rows", "Rows per forward pass (dynamic batching)", batch_rows.clone());
        Metrics { registry, requests, errors, latency, batch_rows, log }
    }

    pub fn observe_batch(&self, rows: usize) {
        self.batch_rows.observe(rows as f64);
    }

    /// The Prometheus (OpenMetrics) text.
    pub fn render(&self) -> Response {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}")).into_response();
        }
        let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, kind)], text).into_response()
    }
}

/// Counts, times and logs every request, and turns the plain-text errors that come from
/// below the handlers (axum's own rejections) into the JSON errors the handlers give.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let time = SystemTime::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "other".into());
    let remote = request.extensions().get::<Peer>().map(|p| p.0);
    let response = json_errors(next.run(request).await).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status();
    metrics.requests.get_or_create(&RouteStatus { route: route.clone(), status: status.as_u16() }).inc();
    let label = Route { route };
    if status.is_client_error() || status.is_server_error() {
        metrics.errors.get_or_create(&label).inc();
    }
    metrics.latency.get_or_create(&label).observe(seconds);
    if let Some(log) = &metrics.log {
        log.log(Entry { time, remote, method, path, status: status.as_u16(), seconds });
    }
    response
}

async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message = if text.is_empty() { reason } else { format!("{reason}: {text}") };
    json_error(status, &message)
}
