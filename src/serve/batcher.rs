//! Dynamic batching, as Triton's dynamic batcher does it: one thread owns the forward
//! passes; requests queue for it, and each pass takes every request already waiting (and,
//! with a delay, those arriving within it) up to a number of rows. A batch that fails (one
//! request's rows are missing values the model cannot fill, say) is run again request by
//! request, so that each request gets its own answer or its own error.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use tch::{Kind, Tensor};
use tokio::sync::oneshot;

use crate::data::{Text, TextColumn};
use crate::predict::Predictor;

/// Rows of one request, parsed: the numeric features row by row, and each categorical
/// feature's values (in [`Predictor::categorical`] order; `None` where missing).
#[derive(Debug, Default)]
pub struct Rows {
    pub count: usize,
    /// `count * features` values, row-major; NaN where missing.
    pub numeric: Vec<f32>,
    pub text: Vec<Vec<Option<String>>>,
}

/// What the model says about a request's rows.
#[derive(Debug, Clone)]
pub enum Predicted {
    /// Regression: `targets` values per row, in the data's units.
    Values { targets: usize, values: Vec<f32> },
    /// Classification: each row's class index and its `classes` probabilities.
    Classes { index: Vec<i64>, classes: usize, proba: Vec<f32> },
}

struct Job {
    rows: Rows,
    reply: oneshot::Sender<Result<Predicted, String>>,
}

/// The queue in front of the model's thread.
#[derive(Clone)]
pub struct Batcher {
    queue: Sender<Job>,
}

/// Called with each forward pass's number of rows (for /metrics).
pub type OnBatch = Box<dyn Fn(usize) + Send>;

impl Batcher {
    /// Starts the model's thread. It ends once every `Batcher` clone is dropped and the
    /// queue is empty; join the handle to wait for in-flight requests.
    pub fn start(
        predictor: Arc<Predictor>,
        max_rows: usize,
        max_delay: Duration,
        on_batch: OnBatch,
    ) -> (Batcher, JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel();
        let worker = std::thread::spawn(move || run(&predictor, &jobs, max_rows.max(1), max_delay, &on_batch));
        (Batcher { queue }, worker)
    }

    /// Predicts for `rows` in the next batch. Errors are the request's own, one line.
    pub async fn predict(&self, rows: Rows) -> Result<Predicted, String> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { rows, reply }).map_err(|_| "the server is shutting down".to_string())?;
        answer.await.map_err(|_| "the model's thread stopped".to_string())?
    }
}

fn run(predictor: &Predictor, jobs: &Receiver<Job>, max_rows: usize, max_delay: Duration, on_batch: &OnBatch) {
    // A job that did not fit into the last batch starts the next one.
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        let deadline = Instant::now() + max_delay;
        let mut rows = first.rows.count;
        let mut batch = vec![first];
        while rows < max_rows {
            // Whatever is already queued, then (with a delay) whatever arrives in time.
            let next = match jobs.try_recv() {
                Ok(job) => Some(job),
                Err(_) => match jobs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
                },
            };
            let Some(job) = next else { break };
            if rows + job.rows.count > max_rows {
                held = Some(job);
                break;
            }
            rows += job.rows.count;
            batch.push(job);
        }
        on_batch(rows);
        answer(predictor, batch);
    }
}

/// Runs `batch` as one forward pass and hands each job its rows' part; on failure, runs
/// each job alone.
fn answer(predictor: &Predictor, batch: Vec<Job>) {
    if batch.len() > 1 {
        let parts: Vec<&Rows> = batch.iter().map(|j| &j.rows).collect();
        if let Ok(all) = forward(predictor, &parts) {
            let mut start = 0;
            for job in batch {
                let end = start + job.rows.count;
                let _ = job.reply.send(Ok(slice(&all, start, end)));
                start = end;
            }
            return;
        }
    }
    for job in batch {
        let result = forward(predictor, &[&job.rows]).map_err(|e| format!("{e:#}").replace('\n', " "));
        let _ = job.reply.send(result);
    }
}

/// One forward pass over the rows of `parts`, in order.
fn forward(predictor: &Predictor, parts: &[&Rows]) -> Result<Predicted> {
    let count: usize = parts.iter().map(|r| r.count).sum();
    let features = predictor.features().len();
    let numeric: Vec<f32> = parts.iter().flat_map(|r| r.numeric.iter().copied()).collect();
    let x = Tensor::f_from_slice(&numeric)?.f_view([count as i64, features as i64])?;
    let text: Vec<TextColumn> = predictor
        .categorical()
        .iter()
        .enumerate()
        .map(|(j, f)| TextColumn {
            name: f.name.clone(),
            values: Text::from_values(
                parts.iter().flat_map(|r| r.text.get(j).into_iter().flatten().map(|v| v.as_deref())),
            ),
        })
        .collect();
    let classifier = predictor.labels().is_some();
    let prediction = predictor.predict(&x, &text, classifier)?;
    match &prediction.proba {
        Some(proba) => {
            let index = Vec::<i64>::try_from(prediction.output.f_to_kind(Kind::Int64)?.flatten(0, -1))?;
            let classes = proba.size().get(1).copied().unwrap_or(0) as usize;
            let proba = Vec::<f32>::try_from(proba.f_to_kind(Kind::Float)?.flatten(0, -1))?;
            Ok(Predicted::Classes { index, classes, proba })
        }
        None => {
            let y = &prediction.output;
            let targets = if y.dim() == 1 { 1 } else { y.size()[1] as usize };
            let values = Vec::<f32>::try_from(y.f_to_kind(Kind::Float)?.flatten(0, -1))?;
            Ok(Predicted::Values { targets, values })
        }
    }
}

/// Rows `start..end` of a batch's prediction.
fn slice(all: &Predicted, start: usize, end: usize) -> Predicted {
    match all {
        Predicted::Values { targets, values } => {
            Predicted::Values { targets: *targets, values: values[start * targets..end * targets].to_vec() }
        }
        Predicted::Classes { index, classes, proba } => Predicted::Classes {
            index: index[start..end].to_vec(),
            classes: *classes,
            proba: proba[start * classes..end * classes].to_vec(),
        },
    }
}
