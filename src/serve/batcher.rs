//! Dynamic batching, as Triton's dynamic batcher does it: one thread owns the forward
//! passes; requests queue for it, and each pass takes every request already waiting (and,
//! with a delay, those arriving within it) up to a number of rows.
//!
//! Only checked [`Rows`] can be queued, so a batch splits back by construction: each job
//! carries its row count, the forward pass must answer exactly the sum of them, and each
//! job's range of the answer is checked before it is sent. Any failure here is the server's
//! own (a 500): a batch that fails is rerun job by job, so that one bad pass cannot take
//! other requests' answers with it.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::input::Rows;
use crate::data::{Text, TextColumn};
use crate::predict::{Dtype, Prediction, Predictor};

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
    reply: oneshot::Sender<Result<Predicted, ApiError>>,
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

    /// Predicts for `rows` in the next batch.
    pub async fn predict(&self, rows: Rows) -> Result<Predicted, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { rows, reply }).map_err(|_| ApiError::Unavailable)?;
        answer.await.map_err(|_| ApiError::internal(anyhow!("the model's thread stopped without answering")))?
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
        let mut rows = first.rows.count();
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
            if rows + job.rows.count() > max_rows {
                held = Some(job);
                break;
            }
            rows += job.rows.count();
            batch.push(job);
        }
        on_batch(rows);
        answer(predictor, batch);
    }
}

/// Runs `batch` as one forward pass and hands each job its rows' part; should the pass or
/// the split fail, runs each job alone.
fn answer(predictor: &Predictor, batch: Vec<Job>) {
    if batch.len() > 1 {
        let parts: Vec<&Rows> = batch.iter().map(|j| &j.rows).collect();
        let counts: Vec<usize> = parts.iter().map(|r| r.count()).collect();
        let split = forward(predictor, &parts).and_then(|all| split(&all, &counts));
        match split {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
                return;
            }
            Err(e) => eprintln!("torchfit: a batch of {} requests failed, running them one by one: {e:#}", parts.len()),
        }
    }
    for job in batch {
        let result = forward(predictor, &[&job.rows]).map_err(ApiError::Internal);
        let _ = job.reply.send(result);
    }
}

/// One forward pass over the rows of `parts`, in order; its answer has exactly their rows.
fn forward(predictor: &Predictor, parts: &[&Rows]) -> Result<Predicted> {
    let count: usize = parts.iter().map(|r| r.count()).sum();
    let classifier = predictor.labels().is_some();
    let prediction = match predictor.array() {
        Some(array) => {
            let x = match array.dtype {
                Dtype::Float32 => {
                    Tensor::f_from_slice(&parts.iter().flat_map(|r| r.numeric().iter().copied()).collect::<Vec<f32>>())?
                }
                Dtype::Int64 => {
                    Tensor::f_from_slice(&parts.iter().flat_map(|r| r.ints().iter().copied()).collect::<Vec<i64>>())?
                }
            };
            let shape: Vec<i64> = std::iter::once(count as i64).chain(array.shape.iter().copied()).collect();
            predictor.predict_array(&x.f_view(shape.as_slice())?, classifier)?
        }
        None => table_forward(predictor, parts, count, classifier)?,
    };
    let predicted = match &prediction.proba {
        Some(proba) => {
            let index = Vec::<i64>::try_from(prediction.output.f_to_kind(Kind::Int64)?.flatten(0, -1))?;
            let classes = proba.size().get(1).copied().unwrap_or(0) as usize;
            let proba = Vec::<f32>::try_from(proba.f_to_kind(Kind::Float)?.flatten(0, -1))?;
            Predicted::Classes { index, classes, proba }
        }
        None => {
            let y = &prediction.output;
            let targets = if y.dim() == 1 { 1 } else { y.size()[1] as usize };
            let values = Vec::<f32>::try_from(y.f_to_kind(Kind::Float)?.flatten(0, -1))?;
            Predicted::Values { targets, values }
        }
    };
    if predicted.rows() != Some(count) {
        bail!("the model answered {:?} rows for {count}", predicted.rows());
    }
    Ok(predicted)
}

/// The forward pass of a table's model over `count` rows of `parts`.
fn table_forward(predictor: &Predictor, parts: &[&Rows], count: usize, proba: bool) -> Result<Prediction> {
    let features = predictor.features().len();
    let numeric: Vec<f32> = parts.iter().flat_map(|r| r.numeric().iter().copied()).collect();
    let x = Tensor::f_from_slice(&numeric)?.f_view([count as i64, features as i64])?;
    let text: Vec<TextColumn> = predictor
        .text_inputs()
        .iter()
        .enumerate()
        .map(|(j, name)| TextColumn {
            name: name.clone(),
            values: Text::from_values(parts.iter().flat_map(|r| r.text(j).iter().map(|v| v.as_deref()))),
        })
        .collect();
    predictor.predict(&x, &text, proba)
}

impl Predicted {
    /// How many rows this answers; `None` when its parts disagree.
    pub fn rows(&self) -> Option<usize> {
        match self {
            Predicted::Values { targets, values } => {
                (*targets > 0 && values.len() % targets == 0).then(|| values.len() / targets)
            }
            Predicted::Classes { index, classes, proba } => {
                (index.len().checked_mul(*classes) == Some(proba.len())).then_some(index.len())
            }
        }
    }
}

/// Each part's rows (`counts`) of a batch's answer, in order; an answer of any other size
/// is an error.
fn split(all: &Predicted, counts: &[usize]) -> Result<Vec<Predicted>> {
    let total: usize = counts.iter().sum();
    if all.rows() != Some(total) {
        bail!("the batch's answer has {:?} rows, its requests {total}", all.rows());
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(counts.len());
    for count in counts {
        let end = start + count;
        out.push(slice(all, start, end).ok_or_else(|| anyhow!("rows {start}..{end} are not in the batch's answer"))?);
        start = end;
    }
    Ok(out)
}

/// Rows `start..end` of a batch's answer, if it has them.
fn slice(all: &Predicted, start: usize, end: usize) -> Option<Predicted> {
    Some(match all {
        Predicted::Values { targets, values } => Predicted::Values {
            targets: *targets,
            values: values.get(start.checked_mul(*targets)?..end.checked_mul(*targets)?)?.to_vec(),
        },
        Predicted::Classes { index, classes, proba } => Predicted::Classes {
            index: index.get(start..end)?.to_vec(),
            classes: *classes,
            proba: proba.get(start.checked_mul(*classes)?..end.checked_mul(*classes)?)?.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(v: &Predicted) -> Vec<f32> {
        match v {
            Predicted::Values { values, .. } => values.clone(),
            Predicted::Classes { proba, .. } => proba.clone(),
        }
    }

    #[test]
    fn a_batch_splits_back_into_each_request_s_own_rows() {
        let all = Predicted::Values { targets: 2, values: (0..12).map(|v| v as f32).collect() };
        let parts = split(&all, &[1, 3, 2]).unwrap();
        let got: Vec<Vec<f32>> = parts.iter().map(values).collect();
        assert_eq!(got, [vec![0., 1.], vec![2., 3., 4., 5., 6., 7.], vec![8., 9., 10., 11.]]);
        let classes =
            Predicted::Classes { index: vec![1, 0, 1], classes: 2, proba: vec![0.2, 0.8, 0.9, 0.1, 0.3, 0.7] };
        let parts = split(&classes, &[2, 1]).unwrap();
        assert!(matches!(&parts[1], Predicted::Classes { index, .. } if index == &[1]));
        assert_eq!(values(&parts[1]), [0.3, 0.7]);
    }

    #[test]
    fn an_answer_of_the_wrong_size_is_refused_rather_than_shifted() {
        let all = Predicted::Values { targets: 1, values: vec![1.0; 5] };
        assert!(split(&all, &[2, 2]).is_err());
        assert!(split(&all, &[3, 3]).is_err());
        let ragged = Predicted::Classes { index: vec![0, 1], classes: 2, proba: vec![0.5; 3] };
        assert_eq!(ragged.rows(), None);
        assert!(split(&ragged, &[1, 1]).is_err());
        assert!(slice(&all, 4, 6).is_none());
    }
}
