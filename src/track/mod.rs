//! Where a run's progress goes besides its own directory, for the tools experiments are
//! compared in (`logging` in the config): TensorBoard event files and an MLflow tracking
//! server. The `Run` calls every tracker at the same three moments — the run starts (or
//! resumes), an epoch ends, the run ends — and a tracker's failure is a warning: a
//! dashboard that cannot be written never costs a training run.

pub mod mlflow;
mod tensorboard;

use anyhow::{Context, Result};
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

/// The resolved config (config.yaml's text) as hyperparameters, in its order: one per leaf,
/// named by its dotted path (`training.optimizer.lr`); a list (`model.hidden`) is one leaf.
/// Absent keys (null) and empty mappings are left out.
pub fn hyperparameters(config_yaml: &str) -> Result<Vec<(String, Value)>> {
    let tree: Value = serde_yaml::from_str(config_yaml).context("cannot read config.yaml as hyperparameters")?;
    let mut leaves = Vec::new();
    walk(&tree, String::new(), &mut leaves);
    Ok(leaves)
}

fn walk(value: &Value, key: String, leaves: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (name, child) in map {
                let child_key = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                walk(child, child_key, leaves);
            }
        }
        Value::Null => {}
        leaf => leaves.push((key, leaf.clone())),
    }
}

fn warn(name: &str, err: &anyhow::Error) {
    eprintln!("torchfit: warning: {name}: {err:#}");
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_config_flattens_to_dotted_leaves_in_order() {
        let yaml = "name: iris\nmodel: {hidden: [64, 32], dropout: 0.1, act: relu}\n\
                    training: {epochs: 5, amp: false, nothing: null, empty: {}}\n";
        let want = [
            ("name", json!("iris")),
            ("model.hidden", json!([64, 32])),
            ("model.dropout", json!(0.1)),
            ("model.act", json!("relu")),
            ("training.epochs", json!(5)),
            ("training.amp", json!(false)),
        ];
        assert_eq!(super::hyperparameters(yaml).unwrap(), want.map(|(k, v)| (k.to_string(), v)));
    }
}
