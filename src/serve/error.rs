//! The server's errors, as axum's error-handling example shapes them: an enum that knows
//! whose fault a failure is. The client's mistakes are a 4xx with one line saying what was
//! wrong with the request; the server's own failures (libtorch, a broken invariant) are a
//! 500 with a generic message, their detail written in full to the server's standard error
//! only, so that no library path, address or C++ backtrace reaches a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub enum ApiError {
    /// The request's fault: a 4xx status and one line naming the problem.
    Client { status: StatusCode, message: String },
    /// The server is shutting down and takes no new work: 503.
    Unavailable,
    /// The server's fault: a 500; the detail is logged, never sent.
    Internal(anyhow::Error),
}

/// What a client is told of an internal error.
pub const INTERNAL: &str = "internal error: the server could not answer this request (the server's log has the detail)";

impl ApiError {
    /// A 400 naming what was wrong; an error's causes are joined on one line.
    pub fn bad(message: impl std::fmt::Display) -> ApiError {
        ApiError::client(StatusCode::BAD_REQUEST, message)
    }

    pub fn client(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
        ApiError::Client { status, message: one_line(&format!("{message:#}")) }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
        ApiError::Internal(error.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Client { message, .. } => message,
            ApiError::Unavailable => "the server is shutting down",
            ApiError::Internal(_) => INTERNAL,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(error) = &self {
            // Rare, and the detail matters more than the speed: straight to standard error.
            eprintln!("torchfit: internal error answering a request: {error:#}");
        }
        json_error(self.status(), self.message())
    }
}

/// `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, serde_json::json!({ "error": message }).to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Newlines and runs of spaces folded, and cut to a readable length: a client's message is
/// one line, whatever it quotes.
fn one_line(text: &str) -> String {
    const MAX: usize = 500;
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_libtorch_failure_is_a_500_without_its_backtrace() {
        // A real libtorch error: 3 values viewed as 2 x 2. Its text carries the C++ frames.
        let error = tch::Tensor::from_slice(&[1f32, 2.0, 3.0]).f_view([2, 2]).unwrap_err();
        assert!(error.to_string().len() > 40, "{error}");
        let (status, json) = body(ApiError::internal(error).into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json["error"], INTERNAL);
    }

    #[tokio::test]
    async fn client_errors_are_one_line_of_bounded_length() {
        let error = ApiError::bad(format!("line one\nline two {}", "x".repeat(5000)));
        let (status, json) = body(error.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let message = json["error"].as_str().unwrap();
        assert!(message.starts_with("line one line two x"), "{message}");
        assert!(message.len() < 600 && !message.contains('\n'), "{message}");
        assert_eq!(body(ApiError::Unavailable.into_response()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
