//! A request's body, read whole within the limits: at most `--max-body` bytes (a declared
//! length over it is refused before a byte is read), and all of it within `--read-timeout`
//! of the handler starting to read. The deadline is for the whole body, not per chunk: a
//! client sending one byte every few seconds gets its 408 on time, and cannot hold a
//! connection (or a graceful shutdown) open for longer than the read timeout.

use std::pin::Pin;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::StatusCode;

use super::error::ApiError;
use super::Limits;

/// Why a body could not be read; each kind is its own status.
#[derive(Debug)]
pub enum BodyError {
    /// Over `max` bytes: 413.
    TooLarge { max: usize },
    /// Not all there within the read timeout: 408.
    TooSlow { timeout: std::time::Duration },
    /// The connection broke or the framing was bad: 400.
    Broken(String),
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> ApiError {
        match error {
            BodyError::TooLarge { max } => {
                ApiError::client(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over the limit of {max} bytes"))
            }
            BodyError::TooSlow { timeout } => ApiError::client(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {:?} (--read-timeout)", timeout),
            ),
            BodyError::Broken(why) => ApiError::bad(format!("cannot read the body: {why}")),
        }
    }
}

/// The whole body, within `limits`.
pub async fn read_body(mut body: Body, limits: Limits) -> Result<Bytes, BodyError> {
    let max = limits.max_body;
    // hyper knows a Content-Length up front: no need to read what will be refused.
    if body.size_hint().lower() > max as u64 {
        return Err(BodyError::TooLarge { max });
    }
    let read = async {
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > max {
                    return Err(BodyError::TooLarge { max });
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .unwrap_or(Err(BodyError::TooSlow { timeout: limits.read_timeout }))
}
