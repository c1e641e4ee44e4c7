//! `torchfit serve`: a model.pt behind HTTP. The Open Inference Protocol (KServe V2, as
//! Triton, KServe and Seldon speak it) over REST, a plain `POST /predict` for curl, and
//! `GET /metrics`; concurrent requests are batched into one forward pass (`batcher`).
//!
//! The server is axum's router on hyper's HTTP/1 connections, accepted by our own loop so
//! that two things stay in our hands: the time a client may take to send its request head
//! (a client that connects and sends nothing, slowloris-style, is cut off without holding
//! anyone else up), the number of connections served at once (`--max-connections`: past
//! it, new connections wait in the listen queue until one ends), and graceful shutdown (on
//! SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit 0).

mod batcher;
mod body;
mod error;
mod input;
mod log;
mod metrics;
mod routes;
mod rows;
#[cfg(test)]
mod tests;
mod v2;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use hyper_util::rt::{TokioIo, TokioTimer};
use tch::Tensor;
use tower::Service;

use crate::config::DeviceChoice;
use crate::data::{Text, TextColumn};
use crate::device::device_name;
use crate::predict::Predictor;
use batcher::Batcher;
use log::AccessLog;
use metrics::{Metrics, Peer};
use routes::App;

/// What `torchfit serve` was asked for.
pub struct Options {
    /// A run directory or a model.pt.
    pub model: PathBuf,
    pub host: String,
    pub port: u16,
    /// The model's name in V2 URLs [default: the run's config `name`].
    pub name: Option<String>,
    /// Where the model runs.
    pub device: DeviceChoice,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub limits: Limits,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    pub quiet: bool,
}

/// What one request may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of body.
    pub max_body: usize,
    /// To send the request head, and then the body.
    pub read_timeout: Duration,
}

/// How long shutdown waits for the requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Loads the model, then serves it until SIGTERM or SIGINT.
pub fn serve(options: Options) -> Result<()> {
    let device = options.device.resolve().context("--device")?;
    let predictor = Arc::new(Predictor::load_on(&options.model, device)?);
    let (log, writer) = if options.quiet {
        (None, None)
    } else {
        let (log, writer) = AccessLog::start(Box::new(std::io::stderr()));
        (Some(log), Some(writer))
    };
    let (app, worker) = app(predictor, &options, log)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the server's runtime")?;
    let served = runtime.block_on(run(app, &options));
    // Every request has had its answer; the model's thread ends once its queue is empty
    // and the router (holding the queue) is gone; the access log's writer once the last
    // line is out.
    drop(runtime);
    worker.join().map_err(|_| anyhow!("the model's thread panicked"))?;
    if let Some(writer) = writer {
        writer.finish();
    }
    served
}

/// The server's state over a loaded model, and the model's thread (which ends once the
/// state is dropped).
fn app(predictor: Arc<Predictor>, options: &Options, log: Option<AccessLog>) -> Result<(Arc<App>, JoinHandle<()>)> {
    let targets = probe(&predictor)?;
    let name = options.name.clone().unwrap_or_else(|| predictor.config().name.clone());
    let metrics = Arc::new(Metrics::new(log));
    let observer = metrics.clone();
    let (batcher, worker) = Batcher::start(
        predictor.clone(),
        options.max_batch,
        options.max_delay,
        Box::new(move |rows| observer.observe_batch(rows)),
    );
    Ok((Arc::new(App { name, predictor, batcher, metrics, limits: options.limits, targets }), worker))
}

/// One forward pass on a row of zeros (and missing categorical values) before serving: the
/// first pass is the slow one, and it tells how many targets a regression predicts.
fn probe(predictor: &Predictor) -> Result<usize> {
    let output = match predictor.array() {
        // Zeros are a valid sample of any array model, token ids included.
        Some(array) => {
            let shape: Vec<i64> = std::iter::once(1).chain(array.shape.iter().copied()).collect();
            let x = Tensor::zeros(shape.as_slice(), (array.dtype.kind(), tch::Device::Cpu));
            predictor.predict_array(&x, false).context("a trial prediction failed")?.output
        }
        None => probe_table(predictor)?,
    };
    Ok(if output.dim() == 2 { output.size()[1] as usize } else { 1 })
}

fn probe_table(predictor: &Predictor) -> Result<Tensor> {
    let x = Tensor::zeros([1, predictor.features().len() as i64], (tch::Kind::Float, tch::Device::Cpu));
    let text: Vec<TextColumn> = predictor
        .text_inputs()
        .iter()
        .map(|name| TextColumn { name: name.clone(), values: Text::from_values([None]) })
        .collect();
    Ok(predictor.predict(&x, &text, false).context("a trial prediction failed")?.output)
}

async fn run(app: Arc<App>, options: &Options) -> Result<()> {
    let address = format!("{}:{}", options.host, options.port);
    let listener =
        tokio::net::TcpListener::bind(&address).await.with_context(|| format!("cannot listen on {address}"))?;
    let bound = listener.local_addr()?;
    let name = app.name.clone();
    eprintln!(
        "torchfit: serving `{name}` ({} on {}) on http://{bound} (V2: /v2/models/{name}/infer; /predict; /metrics)",
        app.predictor.path().display(),
        device_name(app.predictor.device())
    );
    let router = routes::router(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(options.limits.read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(shutdown_signal());
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    loop {
        // A free slot first: past --max-connections, clients wait in the listen queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.context("the connection slots closed")?,
            signal = &mut stop => {
                signal?;
                break;
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                // Out of file descriptors and the like: the next accept may succeed.
                Err(e) => {
                    eprintln!("torchfit: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            signal = &mut stop => {
                signal?;
                break;
            }
        };
        // Small answers should leave at once, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(Peer(peer));
            router.clone().call(request.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    eprintln!("torchfit: stopping: finishing the requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(DRAIN) => eprintln!("torchfit: gave up waiting for requests after {DRAIN:?}"),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        interrupted = tokio::signal::ctrl_c() => interrupted?,
    }
    Ok(())
}
