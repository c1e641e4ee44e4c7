//! Saving a `Trainer` whole into a checkpoint and putting it back: tensors (weights,
//! optimizer moments, the epoch in progress, the best weights, the history) plus a JSON
//! `CheckpointState` for the rest.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::trainer::{Running, Trainer};
use crate::checkpoint;
use crate::config::{yaml_name, OptimizerKind};
use crate::metrics::PlateauState;
use crate::optim::ScheduleState;
use crate::report::EpochRecord;

/// What a checkpoint holds besides tensors.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointState {
    format: u32,
    /// Epochs completed.
    epoch: usize,
    /// Batches done of the next epoch (an interruption mid-epoch); 0 at an epoch boundary.
    step_in_epoch: usize,
    /// Steps of that epoch skipped by `on_nan: skip_batch`.
    skipped_steps: Vec<usize>,
    epoch_seconds: f64,
    /// The optimizer whose state the checkpoint holds.
    optimizer: OptimizerKind,
    optimizer_steps: i64,
    schedule: ScheduleState,
    early_stopping: Option<StopperState>,
    train_seconds: f64,
    /// The wall time of every session up to this checkpoint (absent in older checkpoints).
    #[serde(default)]
    total_seconds: f64,
    skipped_batches: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct StopperState {
    plateau: PlateauState,
    best_epoch: usize,
}

impl Trainer<'_> {
    /// A write of the trainer's whole state to `path` (and of the history to `csv`) that
    /// owns copies of everything, so it can run while training goes on. `total_seconds` is
    /// the run's wall time so far, every session included.
    pub fn checkpoint_job(&self, path: &Path, csv: Option<PathBuf>, total_seconds: f64) -> Result<checkpoint::Job> {
        let snapshot = |t: &Tensor| t.detach().to_device(Device::Cpu).copy();
        let (optimizer_steps, optimizer) = self.optimizer.state();
        let mut tensors: Vec<(String, Tensor)> = optimizer.iter().map(|(n, t)| (n.clone(), snapshot(t))).collect();
        tensors.extend(self.model.state_dict()?.iter().map(|(n, t)| (format!("model.{n}"), snapshot(t))));
        let skipped_steps = self.running.as_ref().map(|r| r.skipped.clone()).unwrap_or_default();
        let (step_in_epoch, epoch_seconds) = match &self.running {
            Some(running) => {
                let done: i64 = self.batch_sizes()[..running.step].iter().sum();
                tensors.push(("running.outputs".into(), snapshot(&running.outputs.narrow(0, 0, done))));
                (running.step, running.seconds)
            }
            None => (0, 0.0),
        };
        if let Some(stopper) = &self.stopper {
            if let Some(best) = &stopper.best_params {
                tensors.push(("early_stopping.best_params".into(), snapshot(best)));
            }
            for (name, t) in &stopper.best_buffers {
                tensors.push((format!("early_stopping.best_buffer.{name}"), snapshot(t)));
            }
        }
        tensors.push(("history".into(), self.history_tensor()));
        let state = CheckpointState {
            format: 1,
            epoch: self.epoch,
            step_in_epoch,
            skipped_steps,
            epoch_seconds,
            optimizer: self.config.training.optimizer.kind,
            optimizer_steps,
            schedule: self.schedule.state(),
            early_stopping: self
                .stopper
                .as_ref()
                .map(|s| StopperState { plateau: s.plateau.state(), best_epoch: s.best_epoch }),
            train_seconds: self.train_seconds,
            total_seconds,
            skipped_batches: self.skipped_batches,
        };
        let (path, history) = (path.to_path_buf(), csv.map(|csv| (csv, self.history.clone())));
        Ok(Box::new(move || {
            checkpoint::save(&path, &state, &tensors)?;
            match history {
                Some((csv, history)) => history.write_csv(&csv),
                None => Ok(()),
            }
        }))
    }

    /// Puts the trainer where a checkpoint left its run.
    pub fn restore(&mut self, path: &Path) -> Result<()> {
        let (state, mut tensors): (CheckpointState, _) = checkpoint::load(path)?;
        let mut restore = |trainer: &mut Trainer| -> Result<()> {
            if state.format != 1 {
                bail!("format {} is not one this torchfit reads", state.format);
            }
            let kind = trainer.config.training.optimizer.kind;
            if state.optimizer != kind {
                bail!(
                    "it holds {} state, and training.optimizer.kind is {}; a resumed run keeps its optimizer",
                    yaml_name(&state.optimizer),
                    yaml_name(&kind)
                );
            }
            trainer.model.restore(&mut tensors, "model.")?;
            trainer.optimizer.restore(state.optimizer_steps, &mut tensors)?;
            trainer.schedule.restore(&state.schedule);
            if let (Some(stopper), Some(saved)) = (&mut trainer.stopper, &state.early_stopping) {
                stopper.plateau.restore(&saved.plateau);
                stopper.best_epoch = saved.best_epoch;
                if stopper.cfg.restore_best && saved.best_epoch > 0 {
                    let shape = trainer.model.params().size();
                    let best = checkpoint::take(&mut tensors, "early_stopping.best_params", &shape)?;
                    stopper.best_params = Some(best.to_device(trainer.device));
                    stopper.best_buffers = Vec::new();
                    for (name, t) in trainer.model.buffers()? {
                        let saved =
                            checkpoint::take(&mut tensors, &format!("early_stopping.best_buffer.{name}"), &t.size())?;
                        stopper.best_buffers.push((name, saved.to_device(trainer.device)));
                    }
                }
            }
            let columns = trainer.history.columns.len() as i64 + 2;
            let history = checkpoint::take(&mut tensors, "history", &[state.epoch as i64, columns])?;
            trainer.history.epochs = history_rows(&history)?;
            trainer.epoch = state.epoch;
            trainer.checkpointed = Some(state.epoch);
            trainer.train_seconds = state.train_seconds;
            trainer.earlier_seconds = state.total_seconds.max(state.train_seconds);
            trainer.skipped_batches = state.skipped_batches;
            if state.step_in_epoch > 0 {
                let done: i64 = trainer.batch_sizes()[..state.step_in_epoch].iter().sum();
                let rows = trainer.train.len() as i64;
                let outputs = Tensor::f_zeros([rows, trainer.outputs as i64], (Kind::Float, trainer.device))?;
                let saved = checkpoint::take(&mut tensors, "running.outputs", &[done, trainer.outputs as i64])?;
                outputs.narrow(0, 0, done).copy_(&saved.to_device(trainer.device));
                trainer.running = Some(Running {
                    step: state.step_in_epoch,
                    outputs,
                    skipped: state.skipped_steps.clone(),
                    seconds: state.epoch_seconds,
                    // A checkpoint holds the rows of every process.
                    summed_rows: done,
                });
            }
            Ok(())
        };
        restore(self).with_context(|| format!("{} does not fit this run", path.display()))
    }

    /// The history as a `[epochs, columns + 2]` float64 tensor: the values, lr, seconds.
    fn history_tensor(&self) -> Tensor {
        let width = self.history.columns.len() + 2;
        let flat: Vec<f64> =
            self.history.epochs.iter().flat_map(|r| r.values.iter().copied().chain([r.lr, r.seconds])).collect();
        Tensor::from_slice(&flat).reshape([self.history.epochs.len() as i64, width as i64])
    }
}

fn history_rows(history: &Tensor) -> Result<Vec<EpochRecord>> {
    let width = history.size()[1] as usize;
    let flat = Vec::<f64>::try_from(history.to_kind(Kind::Double).flatten(0, -1))?;
    Ok(flat
        .chunks(width.max(1))
        .enumerate()
        .map(|(i, row)| EpochRecord {
            epoch: i + 1,
            values: row[..width - 2].to_vec(),
            lr: row[width - 2],
            seconds: row[width - 1],
        })
        .collect())
}
