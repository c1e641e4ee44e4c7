//! The `Run`: every side effect of training. It owns the run directory (what is written
//! when, status `running` then how it ended), the checkpoint writer, progress on the
//! terminal and the signal flags, so that the `Trainer` only trains.

use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::signals::{Signal, Signals};
use super::summary::Summary;
use super::trainer::Trainer;
use super::{Interrupted, TrainOptions};
use crate::checkpoint;
use crate::config::Config;
use crate::data::Prepared;
use crate::report::{self, Progress};
use crate::rundir::{self, RunDir, Status};
use crate::{atomic, export};

pub struct Run {
    pub dir: RunDir,
    pub signals: Signals,
    writer: checkpoint::Writer,
    progress: Progress,
    /// When this process started, for `total_seconds`.
    started: Instant,
    config_yaml: String,
}

impl Run {
    /// Opens the run directory for training: a new one, or, resuming, the run's own after
    /// the trainer is restored from its last checkpoint and found able to go on. Writes the
    /// config, preprocessing and split, and `summary.json` with status `running`.
    pub fn open(config: &Config, data: &Prepared, trainer: &mut Trainer, options: &TrainOptions) -> Result<Run> {
        let dir = match (&options.run_dir, options.resume) {
            (Some(dir), true) => {
                let dir = RunDir::new(dir);
                // A run that died before its first checkpoint starts over, which ends where
                // it would have: data and initial weights follow from the seed.
                let last = dir.file(rundir::LAST_CHECKPOINT);
                if last.exists() {
                    trainer.restore(&last)?;
                }
                check_resumable(&dir, trainer, config)?;
                dir
            }
            _ => RunDir::create(&config.name, options.run_dir.as_deref())?,
        };
        let config_yaml = config.to_yaml()?;
        atomic::write(&dir.file(rundir::CONFIG), config_yaml.as_bytes())?;
        report::write_json(&dir.file(rundir::PREPROCESSING), &data.preprocessing)?;
        report::write_json(&dir.file(rundir::SPLIT), &data.split)?;
        let checkpoints = dir.file(rundir::CHECKPOINTS);
        std::fs::create_dir_all(&checkpoints).with_context(|| format!("cannot create {}", checkpoints.display()))?;
        let progress = Progress::new(config.training.epochs, trainer.epoch, options.quiet);
        let run = Run {
            dir,
            signals: Signals::install()?,
            writer: checkpoint::Writer::new(),
            progress,
            started: options.started,
            config_yaml,
        };
        run.write_summary(&run.summary(trainer, Status::Running))?;
        Ok(run)
    }

    /// After an epoch: its progress line, and the checkpoints due (`best` when early
    /// stopping's monitor improved; `last` every `checkpoint_every` epochs, at the end, and
    /// when stopping early).
    pub fn end_of_epoch(&mut self, trainer: &mut Trainer, improved: bool, stop: bool) -> Result<()> {
        let training = &trainer.config.training;
        if let Some(record) = trainer.history.last() {
            self.progress.epoch(record, training.epochs, &trainer.history.columns);
        }
        if improved {
            let best = self.dir.file(rundir::BEST_CHECKPOINT);
            self.writer.submit(&best, trainer.checkpoint_job(&best, None, self.total_seconds(trainer)))?;
        }
        let epoch = trainer.epoch;
        if stop || epoch % training.checkpoint_every == 0 || epoch == training.epochs {
            let last = self.dir.file(rundir::LAST_CHECKPOINT);
            let csv = Some(self.dir.file(rundir::METRICS));
            self.writer.submit(&last, trainer.checkpoint_job(&last, csv, self.total_seconds(trainer)))?;
            trainer.checkpointed = Some(epoch);
        }
        Ok(())
    }

    /// Training was stopped by a signal: checkpoints the epoch in progress and records the
    /// run as interrupted. Returns the error that tells how to resume.
    pub fn interrupt(&mut self, trainer: &Trainer, signal: Signal) -> anyhow::Error {
        self.progress.abandon();
        let last = self.dir.file(rundir::LAST_CHECKPOINT);
        let saved = self
            .writer
            .finish()
            .and_then(|()| trainer.checkpoint_job(&last, None, self.total_seconds(trainer))())
            .and_then(|()| self.write_report(trainer, &self.summary(trainer, Status::Interrupted)));
        if let Err(err) = saved {
            return err;
        }
        let (step, steps) = trainer.position();
        Interrupted {
            exit_code: signal.exit_code(),
            message: format!(
                "interrupted by {} in epoch {} after step {step} of {steps}; saved {}; resume with: torchfit train --resume {}",
                signal.name(),
                trainer.epoch + 1,
                last.display(),
                self.dir.path().display()
            ),
        }
        .into()
    }

    /// Training failed with `err`: records the run as failed (an interruption is already
    /// recorded) and returns `err`, noting anything that could not be written beside it.
    pub fn fail(&mut self, trainer: &Trainer, err: anyhow::Error) -> anyhow::Error {
        if err.is::<Interrupted>() {
            return err;
        }
        self.progress.abandon();
        let err = note(err, "a checkpoint", self.writer.finish());
        let mut summary = self.summary(trainer, Status::Failed);
        summary.error = Some(format!("{err:#}"));
        note(err, "summary.json", self.write_report(trainer, &summary))
    }

    /// Training ended with `status`: the best weights restored (with `restore_best`), test
    /// metrics, the loss plot, weights.safetensors, model.pt, and last, summary.json.
    pub fn finish(&mut self, trainer: &mut Trainer, data: &Prepared, status: Status) -> Result<Summary> {
        self.progress.abandon();
        // Waiting for the last checkpoint to reach the disk is not training: earlier writes
        // overlapped with it.
        self.writer.finish()?;
        trainer.restore_best();
        let config = trainer.config;
        let test_metrics = match &data.test {
            Some(test) => trainer.metrics_on(&test.to_device(trainer.device))?,
            None => serde_json::Map::new(),
        };
        let title = format!("{}: model loss", config.name);
        trainer.history.plot_loss(&self.dir.file(rundir::LOSS_PLOT), &title, trainer.best_epoch())?;
        export::write_safetensors(&trainer.model, &self.dir.file(rundir::WEIGHTS))?;
        let model_pt = self.dir.file(rundir::MODEL);
        export::write_torchscript(&trainer.model, trainer.pre, config.loss(), &self.config_yaml, &model_pt)?;
        let mut summary = self.summary(trainer, status);
        summary.test_metrics = test_metrics;
        self.write_report(trainer, &summary)?;
        Ok(summary)
    }

    fn total_seconds(&self, trainer: &Trainer) -> f64 {
        trainer.earlier_seconds + self.started.elapsed().as_secs_f64()
    }

    fn summary(&self, trainer: &Trainer, status: Status) -> Summary {
        Summary::new(trainer, trainer.config, status, self.dir.path().to_path_buf(), self.total_seconds(trainer))
    }

    fn write_summary(&self, summary: &Summary) -> Result<()> {
        report::write_json(&self.dir.file(rundir::SUMMARY), summary)
    }

    /// `metrics.csv` and `summary.json`, the latter last.
    fn write_report(&self, trainer: &Trainer, summary: &Summary) -> Result<()> {
        trainer.history.write_csv(&self.dir.file(rundir::METRICS))?;
        self.write_summary(summary)
    }
}

/// Whether the run restored into `trainer` can train on to `config`'s epochs.
fn check_resumable(dir: &RunDir, trainer: &Trainer, config: &Config) -> Result<()> {
    let path = dir.path().display();
    if dir.status() == Some(Status::StoppedEarly) {
        bail!("{path} stopped early at epoch {}; there is nothing to resume", trainer.epoch);
    }
    let epochs = config.training.epochs;
    if trainer.running.is_some() && epochs <= trainer.epoch {
        bail!(
            "{path} was interrupted in epoch {}, beyond training.epochs ({epochs}); pass --set training.epochs=N with N > {}",
            trainer.epoch + 1,
            trainer.epoch
        );
    }
    if trainer.epoch > epochs {
        bail!(
            "{path} has already trained {} epochs, more than training.epochs ({epochs}); pass --set training.epochs=N with N > {}",
            trainer.epoch,
            trainer.epoch
        );
    }
    // A run that failed after its last epoch (writing the plot or model.pt, say) resumes
    // to write its artifacts again.
    if trainer.epoch == epochs && trainer.running.is_none() && dir.status() != Some(Status::Failed) {
        bail!("{path} has already trained all {epochs} epochs; pass --set training.epochs=N with N > {epochs}");
    }
    Ok(())
}

/// Returns `err`, noting a failure to write `what` beside it (the original error matters
/// more).
fn note(err: anyhow::Error, what: &str, written: Result<()>) -> anyhow::Error {
    match written {
        Ok(()) => err,
        Err(write_err) => anyhow::anyhow!("{err:#} (and {what} could not be written: {write_err:#})"),
    }
}

