//! `summary.json`: how a run stands or ended, written when training starts (`running`) and
//! again when it stops; and its few lines on the terminal.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::trainer::Trainer;
use crate::config::{yaml_name, Config};
use crate::device::{device_name, libtorch_version};
use crate::report::History;
use crate::rundir::Status;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub name: String,
    pub run_dir: PathBuf,
    pub device: String,
    pub seed: u64,
    pub task: String,
    pub epochs: usize,
    pub steps: i64,
    pub parameters: i64,
    /// The last epoch's metrics.csv values.
    pub final_metrics: Map<String, Value>,
    /// With early stopping: the best epoch, whose weights were exported if `restore_best`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// With early stopping: the best epoch's metrics.csv values.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub best_metrics: Map<String, Value>,
    /// With a test split: the exported model's loss and metrics on the test part.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub test_metrics: Map<String, Value>,
    /// `training.class_weight`: the weight of each class's training loss, by label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<Map<String, Value>>,
    /// `on_nan: skip_batch`: batches whose update was skipped.
    pub skipped_batches: usize,
    /// libtorch's intra-op threads during training.
    pub threads: usize,
    /// `training.precision` (`fp32`, `bf16`).
    pub precision: String,
    /// Whether training steps were replayed from a CUDA graph (`training.cuda_graphs`).
    pub cuda_graphs: bool,
    /// The training loop alone, over every session of a resumed run: the sum of
    /// metrics.csv's `seconds`, each epoch with its validation pass.
    pub train_seconds: f64,
    /// Wall time of every session of the run (for a resumed run, the earlier sessions up
    /// to their last checkpoint), data loading and artifacts included.
    pub total_seconds: f64,
    /// The processes that trained the run together (1 for a single process), and how they
    /// talked (`gloo`, `nccl`, or `none`).
    pub world_size: usize,
    pub backend: &'static str,
    pub torchfit_version: &'static str,
    pub libtorch_version: &'static str,
}

impl Summary {
    pub fn new(trainer: &Trainer, config: &Config, status: Status, run_dir: PathBuf, total_seconds: f64) -> Summary {
        let history = &trainer.history;
        let best_epoch = trainer.best_epoch();
        Summary {
            status,
            error: None,
            name: config.name.clone(),
            run_dir,
            device: device_name(trainer.device),
            seed: config.seed,
            task: yaml_name(&config.task()),
            epochs: history.epochs.len(),
            steps: trainer.optimizer.steps(),
            parameters: trainer.model.parameter_count(),
            final_metrics: row(history, history.epochs.len()),
            best_epoch,
            best_metrics: best_epoch.map(|epoch| row(history, epoch)).unwrap_or_default(),
            test_metrics: Map::new(),
            class_weights: class_weights(trainer),
            skipped_batches: trainer.skipped_batches,
            threads: trainer.threads(),
            precision: yaml_name(&config.training.precision),
            cuda_graphs: trainer.cuda_graphs(),
            train_seconds: trainer.train_seconds,
            total_seconds,
            world_size: 1,
            backend: "none",
            torchfit_version: env!("CARGO_PKG_VERSION"),
            libtorch_version: libtorch_version(),
        }
    }

    /// A few lines for the terminal: where the run went and how it ended.
    pub fn describe(&self) -> String {
        let show = |m: &Map<String, Value>| {
            m.iter().map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", ")
        };
        let stopped = match (self.status, self.best_epoch) {
            (Status::StoppedEarly, Some(best)) => {
                format!(" (stopped early; best epoch {best}: {})", show(&self.best_metrics))
            }
            _ => String::new(),
        };
        let mut text = format!(
            "run saved to {}\n{} epochs on {}{}: {}{stopped} (train {:.2}s, total {:.2}s)",
            self.run_dir.display(),
            self.epochs,
            self.device,
            match (self.precision.as_str(), self.cuda_graphs) {
                ("fp32", false) => String::new(),
                (precision, graphs) => format!(" ({precision}{})", if graphs { ", CUDA graphs" } else { "" }),
            },
            show(&self.final_metrics),
            self.train_seconds,
            self.total_seconds
        );
        if !self.test_metrics.is_empty() {
            text += &format!("\ntest: {}", show(&self.test_metrics));
        }
        text
    }
}

/// The class weights in force by label, in class order.
fn class_weights(trainer: &Trainer) -> Option<Map<String, Value>> {
    let (weights, labels) = (trainer.class_weights.as_ref()?, trainer.pre.labels.as_ref()?);
    Some(labels.iter().cloned().zip(weights.iter().map(|&w| w.into())).collect())
}

/// Epoch `epoch`'s (1-based) metrics.csv values by column.
fn row(history: &History, epoch: usize) -> Map<String, Value> {
    let record = epoch.checked_sub(1).and_then(|i| history.epochs.get(i));
    record
        .map(|r| history.columns.iter().cloned().zip(r.values.iter().map(|&v| v.into())).collect())
        .unwrap_or_default()
}
