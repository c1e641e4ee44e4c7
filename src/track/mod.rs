//! Where a run's progress goes besides its own directory, for the tools experiments are
//! compared in (`logging` in the config): TensorBoard event files and an MLflow tracking
//! server. The `Run` calls every tracker at the same three moments — the run starts (or
//! resumes), an epoch ends, the run ends — and a tracker's failure is a warning: a
//! dashboard that cannot be written never costs a training run.

pub mod mlflow;
mod tensorboard;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::report::{EpochRecord, History};
use crate::rundir::{RunDir, Status};

/// A run starting, or resuming.
pub struct Started<'a> {
    pub dir: &'a RunDir,
    /// The resolved config, and its text as config.yaml holds it.
    pub config: &'a Config,
    pub config_yaml: &'a str,
    /// Epochs that earlier sessions of a resumed run completed (and checkpointed); 0 for
    /// a new run. Epochs after it are trained (again) in this session.
    pub epochs_done: usize,
    /// metrics.csv's value columns: `loss`, the metrics, their `val_` twins.
    pub columns: &'a [String],
    pub world_size: usize,
    /// The device, as summary.json names it.
    pub device: &'a str,
}

/// A run ending, in any way: finished, stopped early, paused, interrupted or failed.
pub struct Ended<'a> {
    pub status: Status,
    pub dir: &'a RunDir,
    /// Every epoch the run has trained, earlier sessions included.
    pub history: &'a History,
    /// With a test split, on a run that finished: the exported model's loss and metrics.
    pub test_metrics: &'a Map<String, Value>,
    /// The files of the run directory worth keeping beside the numbers (model.pt,
    /// weights.safetensors, config.yaml, the plots), those that exist.
    pub artifacts: Vec<&'static str>,
}

/// One destination of a run's progress.
pub trait Tracker {
    /// Names the tracker in warnings (`tensorboard`, `mlflow`).
    fn name(&self) -> &'static str;
    fn start(&mut self, run: &Started) -> Result<()>;
    /// An epoch has ended; `record` is its row of metrics.csv, of `Started::columns`.
    fn epoch(&mut self, record: &EpochRecord) -> Result<()>;
    fn end(&mut self, run: &Ended) -> Result<()>;
}

/// The trackers a config asks for, called together; each one's failure becomes a warning
/// on standard error, and a tracker that failed to start is not called again.
#[derive(Default)]
pub struct Trackers {
    trackers: Vec<Box<dyn Tracker>>,
}

impl Trackers {
    /// The trackers of `config.logging` (none by default).
    pub fn new(config: &Config) -> Trackers {
        let mut trackers: Vec<Box<dyn Tracker>> = Vec::new();
        if !config.logging.tensorboard.is_off() {
            trackers.push(Box::new(tensorboard::TensorBoardTracker::new(config.logging.tensorboard.clone())));
        }
        if let Some(mlflow) = &config.logging.mlflow {
            trackers.push(Box::new(mlflow::Mlflow::new(mlflow)));
        }
        Trackers { trackers }
    }

    pub fn start(&mut self, run: &Started) {
        self.trackers.retain_mut(|tracker| match tracker.start(run) {
            Ok(()) => true,
            Err(err) => {
                warn(tracker.name(), &err);
                false
            }
        });
    }

    pub fn epoch(&mut self, record: &EpochRecord) {
        for tracker in &mut self.trackers {
            if let Err(err) = tracker.epoch(record) {
                warn(tracker.name(), &err);
            }
        }
    }

    pub fn end(&mut self, run: &Ended) {
        for tracker in &mut self.trackers {
            if let Err(err) = tracker.end(run) {
                warn(tracker.name(), &err);
            }
        }
    }
}

/// A run that had already finished was resumed: what its trackers could not deliver then
/// (a server that was down) is sent now.
pub fn deliver(config: &Config, dir: &RunDir) {
    mlflow::deliver(config, dir);
}

fn warn(name: &str, err: &anyhow::Error) {
    eprintln!("torchfit: warning: {name}: {err:#}");
}
