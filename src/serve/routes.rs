//! The HTTP routes: the Open Inference Protocol's (KServe V2) health, metadata and infer
//! endpoints, the plain `POST /predict`, and `GET /metrics`. Every error is a JSON object
//! `{"error": "..."}` (`error::ApiError`): a 4xx naming the client's mistake, or a 500 that
//! says no more than that. A request is parsed and checked in full before it is queued for
//! the model (`input::Rows`), so that what reaches the batch is the model's to answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use serde_json::{json, Value};

use super::batcher::{Batcher, Predicted};
use super::body::read_body;
use super::error::ApiError;
use super::metrics::{self, Metrics};
use super::{rows, v2, Limits};
use crate::data::clip;
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

fn json_response(value: &Value) -> Response {
    let mut response = value.to_string().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn router(app: Arc<App>) -> Router {
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
        .fallback(|| async { ApiError::client(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
        // The handlers read bodies themselves, within --max-body and --read-timeout
        // (`body::read_body`).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(metrics, metrics::track))
}

/// A 405 that says which method the route takes (axum adds the Allow header).
async fn method_not_allowed(method: Method, route: MatchedPath) -> ApiError {
    let route = route.as_str();
    let allowed = if route == "/predict" || route.ends_with("/infer") { "POST" } else { "GET" };
    ApiError::client(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed: {method} {route}; use {allowed}"))
}

async fn server_metadata() -> Response {
    json_response(
        &json!({"name": "torchfit", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

/// The model's name and version, checked: an unknown one is a 404 naming the right one.
fn check_model(app: &App, name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != app.name {
        return Err(ApiError::client(
            StatusCode::NOT_FOUND,
            format!("unknown model `{}`; this server serves `{}`", clip(name), app.name),
        ));
    }
    match version {
        Some(v) if v != "1" => Err(ApiError::client(
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no version `{}` (it has version 1)", clip(v)),
        )),
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
    let asked = request.outputs(&app.predictor).map_err(ApiError::bad)?;
    let predicted = app.batcher.predict(rows).await?;
    let (header, binary) =
        v2::response(&app.name, &request, &asked, &app.predictor, &predicted).map_err(ApiError::internal)?;
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
    let predicted = app.batcher.predict(rows).await?;
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
