//! The HTTP routes: the Open Inference Protocol's (KServe V2) health, metadata and infer
//! endpoints, the plain `POST /predict`, and `GET /metrics`. Every error is a JSON object
//! `{"error": "..."}` naming the problem, with a 4xx status for the client's mistakes.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use serde_json::{json, Value};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::batcher::{Batcher, Predicted};
use super::metrics::{self, Metrics};
use super::{rows, v2, Limits};
use crate::predict::Predictor;

pub struct App {
    pub name: String,
    pub predictor: Arc<Predictor>,
    pub batcher: Batcher,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// Regression: the number of targets (what `predictions` holds per row).
    pub targets: usize,
}

/// An error answer: its status and one line for `{"error": ...}`.
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl std::fmt::Display) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, format!("{message:#}").replace('\n', " "))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, json!({ "error": self.1 }).to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

fn json_response(value: &Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn router(app: Arc<App>) -> Router {
    let limits = app.limits;
    let metrics = app.metrics.clone();
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { json_response(&json!({"live": true})) }))
        .route("/v2/health/ready", get(|| async { json_response(&json!({"ready": true})) }))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/predict", post(predict))
        .route("/metrics", get(|State(app): State<Arc<App>>| async move { app.metrics.render() }))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here".into())
        })
        .with_state(app)
        // tower-http refuses a body over the limit by its Content-Length at once (413), and
        // one that trickles in too slowly (408); the handlers read what is left within both.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(RequestBodyTimeoutLayer::new(limits.read_timeout))
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

async fn server_metadata() -> Response {
    json_response(
        &json!({"name": "torchfit", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// The model's name and version, checked: an unknown one is a 404 naming the right one.
fn check_model(app: &App, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != app.name {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown model `{name}`; this server serves `{}`", app.name),
        ));
    }
    match version {
        Some(v) if v != "1" => {
            Err(ApiError(StatusCode::NOT_FOUND, format!("model `{name}` has no version `{v}` (it has version 1)")))
        }
        _ => Ok(()),
    }
}

async fn model_metadata(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    check_model(&app, &name, None)?;
    Ok(json_response(&v2::metadata(&app.name, &app.predictor, app.targets)))
}

async fn model_metadata_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_model(&app, &name, Some(&version))?;
    Ok(json_response(&v2::metadata(&app.name, &app.predictor, app.targets)))
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    check_model(&app, &name, None)?;
    Ok(json_response(&json!({"name": name, "ready": true})))
}

async fn model_ready_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_model(&app, &name, Some(&version))?;
    Ok(json_response(&json!({"name": name, "ready": true})))
}

/// The whole body, within the limits: over the size limit is a 413, too slow a 408.
async fn read_body(body: Body, limits: Limits) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limits.max_body).await.map_err(|e| {
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        let text: Vec<String> = chain.map(|e| e.to_string()).collect();
        let text = text.join(": ");
        if text.contains("length limit") {
            ApiError(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over the limit of {} bytes", limits.max_body))
        } else if text.to_lowercase().contains("timed out") || text.to_lowercase().contains("timeout") {
            ApiError(StatusCode::REQUEST_TIMEOUT, format!("the body did not arrive within {:?}", limits.read_timeout))
        } else {
            ApiError::bad(format!("cannot read the body: {text}"))
        }
    })
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_model(&app, &name, None)?;
    run_infer(&app, &headers, body).await
}

async fn infer_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_model(&app, &name, Some(&version))?;
    run_infer(&app, &headers, body).await
}

async fn run_infer(app: &App, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, app.limits).await?;
    let header_length = match headers.get("inference-header-content-length") {
        Some(value) => Some(value.to_str().map_err(|_| ApiError::bad("Inference-Header-Content-Length is not text"))?),
        None => None,
    };
    let request = v2::Request::parse(&body, header_length).map_err(ApiError::bad)?;
    let rows = request.rows(&app.predictor).map_err(ApiError::bad)?;
    let predicted = app.batcher.predict(rows).await.map_err(ApiError::bad)?;
    let (header, binary) = v2::response(&app.name, &request, &app.predictor, &predicted).map_err(ApiError::bad)?;
    if binary.is_empty() {
        return Ok(json_response(&header));
    }
    let mut bytes = header.to_string().into_bytes();
    let length = bytes.len();
    bytes.extend(binary);
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert("inference-header-content-length", HeaderValue::from(length));
    Ok(response)
}

async fn predict(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, app.limits).await?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("the body is not valid JSON: {e}")))?;
    let rows = rows::parse(&body, &app.predictor).map_err(ApiError::bad)?;
    let predicted = app.batcher.predict(rows).await.map_err(ApiError::bad)?;
    Ok(json_response(&match predicted {
        Predicted::Values { targets, values } if targets == 1 => json!({ "predictions": v2::floats(&values) }),
        Predicted::Values { targets, values } => {
            json!({ "predictions": values.chunks(targets.max(1)).map(v2::floats).collect::<Vec<_>>() })
        }
        Predicted::Classes { index, classes, proba } => {
            let labels = app.predictor.labels().unwrap_or_default();
            let names: Vec<String> = index.iter().map(|&c| v2::label(labels, c)).collect();
            json!({
                "predictions": index,
                "labels": names,
                "probabilities": proba.chunks(classes.max(1)).map(v2::floats).collect::<Vec<_>>(),
            })
        }
    }))
}
