//! A small client of MLflow's REST API (mlflow/protos/service.proto, served by
//! mlflow/server/handlers.py): the handful of calls a training run needs, over plain HTTP
//! with hyper's HTTP/1 client on a current-thread tokio runtime of its own. Every request
//! has a deadline, so that a server that died or hangs costs training seconds, not the run.
//!
//! The runtime spawns no thread (addresses are resolved here, with the standard library,
//! not on tokio's blocking pool): a sweep forks its workers after its parent run was
//! created, and it forks only a process with one thread.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// How long a connection may take to open: a server on this network answers in
/// milliseconds, a dead one is given up on after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole exchange of an ordinary call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The server answered, and refused the request (4xx): sending it again would not help.
#[derive(Debug)]
pub struct Rejected {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "the server refused the request (HTTP {}): {}", self.status, self.message)
    }
}

impl std::error::Error for Rejected {}

/// An `mlflow server`, by its tracking URI (`http://host:port[/prefix]`).
pub struct Client {
    uri: String,
    /// `host:port`, the Host header.
    authority: String,
    /// The path the server is mounted under, without a trailing slash (usually empty).
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// When the caller stops waiting: a JSON call's deadline is cut to it (never below
    /// `SHORTEST`), so that a server that accepts connections and then hangs costs an epoch
    /// no more than its budget.
    deadline: Option<Instant>,
}

/// The least time a call is given, however little of the caller's budget is left.
const SHORTEST: Duration = Duration::from_millis(500);

impl Client {
    pub fn new(uri: &str) -> Result<Client> {
        let Some(rest) = uri.strip_prefix("http://") else {
            bail!("{uri}: only http:// tracking URIs are supported");
        };
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if authority.is_empty() {
            bail!("{uri}: no host");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the MLflow client's runtime")?;
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            p => format!("/{p}"),
        };
        Ok(Client { uri: uri.to_string(), authority: authority.to_string(), prefix, runtime, deadline: None })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// `REQUEST_TIMEOUT`, or less when the deadline is nearer.
    fn timeout(&self) -> Duration {
        let left = self.deadline.map_or(REQUEST_TIMEOUT, |d| d.saturating_duration_since(Instant::now()));
        left.clamp(SHORTEST, REQUEST_TIMEOUT)
    }

    /// GET `/api/2.0/mlflow/<endpoint>?<query>`, the answer's JSON.
    pub fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Result<Value> {
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", percent(v))).collect();
        let path = format!("/api/2.0/mlflow/{endpoint}?{}", query.join("&"));
        let body = self.request(Method::GET, &path, "application/json", Bytes::new(), self.timeout())?;
        parse(&body)
    }

    /// POST `/api/2.0/mlflow/<endpoint>` with a JSON body, the answer's JSON.
    pub fn post(&self, endpoint: &str, body: &Value) -> Result<Value> {
        let path = format!("/api/2.0/mlflow/{endpoint}");
        let body = Bytes::from(serde_json::to_vec(body)?);
        let answer = self.request(Method::POST, &path, "application/json", body, self.timeout())?;
        parse(&answer)
    }

    /// Uploads `bytes` as `name` under a run's artifact URI (with a deadline of its own, by
    /// the size), through the server's artifact
    /// proxy (`mlflow server`'s default, --serve-artifacts): `mlflow-artifacts:/<exp>/<run>/
    /// artifacts` is `PUT /api/2.0/mlflow-artifacts/artifacts/<exp>/<run>/artifacts/<name>`,
    /// as mlflow/store/artifact/mlflow_artifacts_repo.py resolves it.
    pub fn upload(&self, artifact_uri: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:") else {
            bail!(
                "the run's artifact location {artifact_uri} is not the server's artifact proxy \
                 (mlflow-artifacts:); start mlflow server without --no-serve-artifacts"
            );
        };
        // `mlflow-artifacts://host:port/path` names another server; its path is what counts.
        let root = root.strip_prefix("//").map_or(root, |r| r.find('/').map_or("", |at| &r[at..]));
        let path = format!("/api/2.0/mlflow-artifacts/artifacts/{}/{name}", root.trim_matches('/'));
        // A large model at a slow 10 MB/s, on top of the usual deadline.
        let timeout = REQUEST_TIMEOUT + Duration::from_secs((bytes.len() / 10_000_000) as u64);
        self.request(Method::PUT, &path, "application/octet-stream", Bytes::from(bytes), timeout)?;
        Ok(())
    }

    fn request(&self, method: Method, path: &str, content_type: &str, body: Bytes, timeout: Duration) -> Result<Bytes> {
        let url = format!("{}{}{path}", self.authority, self.prefix);
        let addrs: Vec<SocketAddr> = match self.authority.contains(':') {
            true => self.authority.to_socket_addrs(),
            false => (self.authority.as_str(), 80).to_socket_addrs(),
        }
        .with_context(|| format!("cannot resolve {}", self.authority))?
        .collect();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))?;
        let exchange = async {
            let stream = connect(&addrs).await?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            let driver = tokio::spawn(connection);
            let answer = sender.send_request(request).await?;
            let status = answer.status();
            let body = answer.into_body().collect().await?.to_bytes();
            driver.abort();
            Ok::<_, anyhow::Error>((status, body))
        };
        let (status, body) = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, exchange).await })
            .map_err(|_| anyhow!("no answer from http://{url} within {:.1} s", timeout.as_secs_f64()))?
            .with_context(|| format!("http://{url}"))?;
        if status.is_client_error() {
            return Err(Rejected { status: status.as_u16(), message: error_message(&body) }.into());
        }
        if !status.is_success() {
            bail!("http://{url}: HTTP {}: {}", status.as_u16(), error_message(&body));
        }
        Ok(body)
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<tokio::net::TcpStream> {
    let mut last = anyhow!("no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(err)) => last = anyhow!("cannot connect to {addr}: {err}"),
            Err(_) => last = anyhow!("cannot connect to {addr} within {} s", CONNECT_TIMEOUT.as_secs()),
        }
    }
    Err(last)
}

fn parse(body: &[u8]) -> Result<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| anyhow!("the server's answer is not JSON: {e}"))
}

/// MLflow's error body (`{"error_code": ..., "message": ...}`), or the start of the text.
fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.get("message").is_some() => {
            let code = v.get("error_code").and_then(Value::as_str).unwrap_or("");
            format!("{code} {}", v["message"].as_str().unwrap_or("")).trim().to_string()
        }
        _ => text.chars().take(200).collect(),
    }
}

/// A query parameter's value, percent-encoded (RFC 3986 unreserved characters kept).
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent("my exp/1+ü"), "my%20exp%2F1%2B%C3%BC");
    }

    #[test]
    fn only_http_is_spoken() {
        assert!(Client::new("https://example.com").is_err());
        let client = Client::new("http://127.0.0.1:5000/mlflow/").unwrap();
        assert_eq!((client.authority.as_str(), client.prefix.as_str()), ("127.0.0.1:5000", "/mlflow"));
    }

    #[test]
    fn a_closed_port_fails_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let started = std::time::Instant::now();
        assert!(client.get("experiments/get-by-name", &[("experiment_name", "x")]).is_err());
        assert!(started.elapsed() < CONNECT_TIMEOUT);
    }
}
