//! The `Run`: every side effect of training. It owns the run directory (what is written
//! when, status `running` then how it ended), the checkpoint writer, progress on the
//! terminal and the signal flags, so that the `Trainer` only trains. Of several processes,
//! rank 0 alone writes; the others get what they need from it through the group.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::overview;
use super::signals::{Signal, Signals};
use super::summary::Summary;
use super::trainer::Trainer;
use super::TrainOptions;
use crate::checkpoint;
use crate::config::yaml_difference;
use crate::config::Config;
use crate::data::Prepared;
use crate::dist::Group;
use crate::exit::Interrupted;
use crate::report::{self, Marks, Progress};
use crate::rundir::{self, RunDir, RunLock, Status};
use crate::track::{self, Trackers};
use crate::{atomic, export};

pub struct Run {
    pub dir: RunDir,
    pub signals: Signals,
    writer: checkpoint::Writer,
    progress: Progress,
    /// When this process started, for `total_seconds`.
    started: Instant,
    config_yaml: String,
    /// Rank 0 or a single process: the one that writes and reports.
    leader: bool,
    world_size: usize,
    backend: Option<&'static str>,
    /// Rank 0's lock on the run directory, held while this process trains it.
    _lock: Option<RunLock>,
    /// TensorBoard, MLflow: rank 0's alone.
    trackers: Trackers,
    /// `finish` tried to draw loss.png: a failure after it does not try again (its error
    /// would be said twice).
    plot_tried: bool,
}

/// What `Run::open` found: a run to train, or one that had already finished (this message).
pub enum Start {
    Train(Run),
    Finished(String),
}

/// Where rank 0 found the run: what the other processes need to start alike.
#[derive(serde::Serialize, serde::Deserialize)]
struct Handover {
    run_dir: PathBuf,
    /// The run had already finished: this message, and nothing to train.
    finished: Option<String>,
    /// Rank 0 could not open the run: its error.
    error: Option<String>,
    /// The trainer was restored from a checkpoint, whose bytes follow under `checkpoint`.
    restored: bool,
}

impl Run {
    /// Opens the run directory for training: a new one, or, resuming (`--resume`, or a
    /// launcher's restart finding its run), the run's own after the trainer is restored
    /// from its last checkpoint and found able to go on. Writes the config, preprocessing
    /// and split, and `summary.json` with status `running`. The other processes of a distributed run restore from
    /// rank 0's checkpoint, which it hands them, so they need no shared disk.
    pub fn open(
        config: &Config,
        data: &Prepared,
        trainer: &mut Trainer,
        options: &TrainOptions,
        group: &Group,
    ) -> Result<Start> {
        let (dir, lock) = if group.is_leader() {
            let opened = open_dir(config, trainer, options);
            if group.world_size > 1 {
                share_opened(group, &opened)?;
            }
            let (dir, finished, lock) = opened?;
            if let Some(finished) = finished {
                track::deliver(config, &dir);
                return Ok(Start::Finished(finished));
            }
            (dir, Some(lock))
        } else {
            let opened: Handover = serde_json::from_slice(&group.share("open", None)?)?;
            if let Some(error) = opened.error {
                bail!("rank 0 could not open the run: {error}");
            }
            if let Some(finished) = opened.finished {
                return Ok(Start::Finished(finished));
            }
            if opened.restored {
                let bytes = group.share("checkpoint", None)?;
                let copy =
                    tempfile::NamedTempFile::new().context("cannot make a temporary file for rank 0's checkpoint")?;
                std::fs::write(copy.path(), bytes).context("cannot write rank 0's checkpoint to a temporary file")?;
                trainer.restore(copy.path())?;
            }
            (RunDir::new(opened.run_dir), None)
        };
        let signals = Signals::install(group.is_leader().then(|| dir.clone()))?;
        let mut run = Run {
            dir,
            signals,
            writer: checkpoint::Writer::new(),
            progress: Progress::new(config.training.epochs, trainer.epoch, options.quiet || !group.is_leader()),
            started: options.started,
            config_yaml: config.to_yaml()?,
            leader: group.is_leader(),
            world_size: group.world_size,
            backend: group.backend(),
            _lock: lock,
            trackers: Trackers::default(),
            plot_tried: false,
        };
        if let (true, false, Some(line)) = (run.leader, options.quiet, trainer.model_line()) {
            println!("{line}");
        }
        if run.leader {
            let dir = &run.dir;
            // Until it ends again, the run's files change: a manifest would be stale.
            dir.remove_manifest()?;
            run.write_overview(trainer, data, options.quiet)?;
            atomic::write(&dir.file(rundir::CONFIG), run.config_yaml.as_bytes())?;
            copy_module(config, dir)?;
            report::write_json(&dir.file(rundir::PREPROCESSING), &data.preprocessing)?;
            if let Some(text) = &data.preprocessing.text {
                atomic::write(&dir.file(rundir::TOKENIZER), text.tokenizer_json()?.as_bytes())?;
            }
            report::write_json(&dir.file(rundir::SPLIT), &data.split)?;
            let checkpoints = dir.file(rundir::CHECKPOINTS);
            std::fs::create_dir_all(&checkpoints)
                .with_context(|| format!("cannot create {}", checkpoints.display()))?;
            let summary = run.summary(trainer, Status::Running);
            run.write_summary(&summary)?;
            run.trackers = Trackers::new(config);
            run.trackers.start(&track::Started {
                dir: &run.dir,
                config,
                config_yaml: &run.config_yaml,
                epochs_done: trainer.epoch,
                columns: &trainer.history.columns,
                world_size: run.world_size,
                device: &summary.device,
            });
        }
        Ok(Start::Train(run))
    }

    /// After an epoch: its progress line, and the checkpoints due (`best` when early
    /// stopping's monitor improved; `last` every `checkpoint_every` epochs, at the end, and
    /// when stopping early).
    pub fn end_of_epoch(&mut self, trainer: &mut Trainer, improved: bool, stop: bool) -> Result<()> {
        if !self.leader {
            return Ok(());
        }
        let training = &trainer.config.training;
        if let Some(record) = trainer.history.last() {
            self.progress.epoch(record, training.epochs, &trainer.history.columns);
            self.trackers.epoch(record);
        }
        if improved {
            let best = self.dir.file(rundir::BEST_CHECKPOINT);
            self.writer.submit(&best, trainer.checkpoint_job(&best, None, self.total_seconds(trainer))?)?;
        }
        let epoch = trainer.epoch;
        if stop || epoch % training.checkpoint_every == 0 || epoch == training.epochs {
            let last = self.dir.file(rundir::LAST_CHECKPOINT);
            let csv = Some(self.dir.file(rundir::METRICS));
            self.writer.submit(&last, trainer.checkpoint_job(&last, csv, self.total_seconds(trainer))?)?;
            trainer.checkpointed = Some(epoch);
        }
        Ok(())
    }

    /// Training paused (`TrainOptions::pause_after`): the last checkpoint holds this epoch,
    /// and summary.json says `paused`. No model.pt: the run is not done.
    pub fn pause(&mut self, trainer: &mut Trainer) -> Result<Summary> {
        self.progress.abandon();
        let summary = self.summary(trainer, Status::Paused);
        if !self.leader {
            return self.writer.finish().map(|()| summary);
        }
        if trainer.checkpointed != Some(trainer.epoch) {
            let last = self.dir.file(rundir::LAST_CHECKPOINT);
            self.writer.submit(&last, trainer.checkpoint_job(&last, None, self.total_seconds(trainer))?)?;
            trainer.checkpointed = Some(trainer.epoch);
        }
        self.writer.finish()?;
        self.plot_or_warn(trainer, Status::Paused);
        self.write_report(trainer, &summary)?;
        Ok(summary)
    }

    /// Training was stopped by a signal: checkpoints the epoch in progress and records the
    /// run as interrupted. Returns the error that tells how to resume.
    pub fn interrupt(&mut self, trainer: &Trainer, signal: Signal) -> anyhow::Error {
        self.progress.abandon();
        let last = self.dir.file(rundir::LAST_CHECKPOINT);
        if self.leader {
            let summary = self.summary(trainer, Status::Interrupted);
            let saved = self
                .writer
                .finish()
                .and_then(|()| trainer.checkpoint_job(&last, None, self.total_seconds(trainer))?())
                .and_then(|()| {
                    self.plot_or_warn(trainer, Status::Interrupted);
                    self.write_report(trainer, &summary)
                });
            if let Err(err) = saved {
                return err;
            }
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
        if err.is::<Interrupted>() || !self.leader {
            return err;
        }
        self.progress.abandon();
        let mut err = note(err, "a checkpoint", self.writer.finish());
        if !self.plot_tried {
            err = note(err, rundir::LOSS_PLOT, self.plot(trainer, Status::Failed));
        }
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
        trainer.restore_best()?;
        if !self.leader {
            return Ok(self.summary(trainer, status));
        }
        let config = trainer.config;
        let test_metrics = match &data.test {
            Some(test) => trainer.metrics_on(&test.to_device(trainer.device))?,
            None => serde_json::Map::new(),
        };
        self.plot_tried = true;
        self.plot(trainer, status)?;
        export::write_safetensors(&*trainer.model, &self.dir.file(rundir::WEIGHTS))?;
        let model_pt = self.dir.file(rundir::MODEL);
        export::write_torchscript(&*trainer.model, trainer.pre, config.loss(), &self.config_yaml, &model_pt)?;
        // Every artifact is written; summary.json, last, says the run ended.
        self.dir.write_manifest()?;
        let mut summary = self.summary(trainer, status);
        summary.test_metrics = test_metrics;
        self.write_report(trainer, &summary)?;
        Ok(summary)
    }

    /// The run's summary (`overview`), on standard error unless quiet, and in
    /// `model_summary.txt`; a model whose layers cannot be listed is a warning, not a reason
    /// to stop.
    fn write_overview(&self, trainer: &Trainer, data: &Prepared, quiet: bool) -> Result<()> {
        let mut text = overview::overview(trainer, data, self.world_size).unwrap_or_else(|err| {
            eprintln!("torchfit: warning: the model summary could not list the layers: {err:#}");
            String::new()
        });
        text += &overview::resumed_at(trainer).unwrap_or_default();
        if !quiet {
            eprint!("{text}");
        }
        atomic::write(&self.dir.file(rundir::MODEL_SUMMARY), text.as_bytes())
    }

    /// `loss.png`, once there is an epoch to draw: the loss and metric curves, the best
    /// epoch of early stopping, and where a run that did not train all its epochs stopped.
    /// A run that did not finish may have no finite loss to draw (one that failed on NaN
    /// from its first epoch): it gets no plot, without a word.
    fn plot(&self, trainer: &Trainer, status: Status) -> Result<()> {
        let history = &trainer.history;
        if history.epochs.is_empty() || (!status.is_done() && !history.has_finite("loss")) {
            return Ok(());
        }
        let stopped = match status {
            Status::StoppedEarly => Some("stopped early"),
            Status::Paused => Some("paused"),
            Status::Interrupted => Some("interrupted"),
            Status::Failed => Some("failed"),
            Status::Running | Status::Finished => None,
        };
        let marks = Marks { best_epoch: trainer.best_epoch(), stopped };
        history.plot(&self.dir.file(rundir::LOSS_PLOT), &trainer.config.name, &marks)
    }

    /// `plot` for a run that stops short: its failure is a warning, since the run's
    /// checkpoint and summary matter more than its picture.
    fn plot_or_warn(&self, trainer: &Trainer, status: Status) {
        if let Err(err) = self.plot(trainer, status) {
            eprintln!("torchfit: warning: {}: {err:#}", self.dir.file(rundir::LOSS_PLOT).display());
        }
    }

    fn total_seconds(&self, trainer: &Trainer) -> f64 {
        trainer.earlier_seconds + self.started.elapsed().as_secs_f64()
    }

    fn summary(&self, trainer: &Trainer, status: Status) -> Summary {
        let mut summary =
            Summary::new(trainer, trainer.config, status, self.dir.path().to_path_buf(), self.total_seconds(trainer));
        summary.world_size = self.world_size;
        summary.backend = self.backend.unwrap_or("none");
        summary
    }

    fn write_summary(&self, summary: &Summary) -> Result<()> {
        // A second signal's exit waits for this write, and then writes no other.
        let _held = self.signals.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        report::write_json(&self.dir.file(rundir::SUMMARY), summary)
    }

    /// `metrics.csv` and `summary.json`, the latter last; then the trackers hear how the
    /// run ended.
    fn write_report(&mut self, trainer: &Trainer, summary: &Summary) -> Result<()> {
        trainer.history.write_csv(&self.dir.file(rundir::METRICS))?;
        self.write_summary(summary)?;
        self.trackers.end(&track::Ended {
            status: summary.status,
            dir: &self.dir,
            history: &trainer.history,
            test_metrics: &summary.test_metrics,
            artifacts: ARTIFACTS.into_iter().filter(|name| self.dir.file(name).is_file()).collect(),
        });
        Ok(())
    }
}

/// The files of a run that trackers keep beside its numbers, when they exist.
const ARTIFACTS: [&str; 5] = [rundir::CONFIG, rundir::LOSS_PLOT, rundir::MODEL, rundir::WEIGHTS, rundir::METRICS];

/// What rank 0's `open_dir` found: the run directory, the message that it had already
/// finished (if it had), and the lock on it.
type Opened = (RunDir, Option<String>, RunLock);

/// Rank 0's part of `open`: the run directory, created or found (with the trainer restored
/// from its last checkpoint), or the message that the run had already finished.
fn open_dir(config: &Config, trainer: &mut Trainer, options: &TrainOptions) -> Result<Opened> {
    let launch = &options.launch;
    if let (Some(dir), true) = (&options.run_dir, options.resume) {
        return resume(RunDir::new(dir), config, trainer);
    }
    // Under a launcher, the default directory is named by the launch's id, which a restart
    // keeps, so that the restarted command finds the run it continues.
    let id_dir = || launch.run_id.as_ref().map(|id| PathBuf::from("runs").join(format!("{}-{id}", config.name)));
    let explicit = options.run_dir.clone().or_else(id_dir);
    if let Some(dir) = explicit.as_deref().filter(|dir| launch.is_restart() && dir.join(rundir::CONFIG).is_file()) {
        let dir = RunDir::new(dir);
        let (ours, saved) = (config.to_yaml()?, dir.config(&[])?.to_yaml()?);
        if ours != saved {
            let (key, now, before) = yaml_difference(&ours, &saved);
            bail!(
                "restart {}: {} holds a run whose {key} was {before}, and the config now says {now}; \
                 a restarted run keeps its config",
                launch.restart,
                dir.path().display()
            );
        }
        return resume(dir, config, trainer);
    }
    let (dir, lock) = RunDir::create(&config.name, explicit.as_deref())?;
    Ok((dir, None, lock))
}

/// Locks the run (refusing when another process trains it), checks a run that ended
/// against its manifest, and restores `trainer` from the last checkpoint. A run that died
/// before its first checkpoint starts over (and says so), which ends where it would have:
/// data and initial weights follow from the seed. One whose status says a checkpoint was
/// written, but that has none, cannot go on.
fn resume(dir: RunDir, config: &Config, trainer: &mut Trainer) -> Result<Opened> {
    let lock = RunLock::acquire(dir.path())?;
    let status = dir.status();
    let last = dir.file(rundir::LAST_CHECKPOINT);
    if let Some(status) = status.filter(|s| !last.exists() && !matches!(s, Status::Running | Status::Failed)) {
        bail!(
            "{} is missing: the run is {} and cannot continue without it (its epochs would be trained again from the start); \
             restore the file, or start a new run",
            last.display(),
            status.name()
        );
    }
    if status.is_some_and(Status::is_done) {
        dir.verify()?;
    }
    if last.exists() {
        trainer.restore(&last)?;
    } else {
        eprintln!(
            "torchfit: {} has no {} (it stopped before its first checkpoint): training starts over from epoch 1",
            dir.path().display(),
            rundir::LAST_CHECKPOINT
        );
    }
    let finished = check_resumable(&dir, trainer, config)?;
    Ok((dir, finished, lock))
}

/// Hands the other processes where rank 0 found the run (or why it could not), and the
/// checkpoint it restored from.
fn share_opened(group: &Group, opened: &Result<Opened>) -> Result<()> {
    let message = match opened {
        Ok((dir, finished, _)) => Handover {
            run_dir: dir.path().to_path_buf(),
            finished: finished.clone(),
            error: None,
            restored: finished.is_none() && dir.file(rundir::LAST_CHECKPOINT).exists(),
        },
        Err(err) => {
            Handover { run_dir: PathBuf::new(), finished: None, error: Some(format!("{err:#}")), restored: false }
        }
    };
    group.share("open", Some(serde_json::to_vec(&message)?))?;
    if let (true, Ok((dir, _, _))) = (message.restored, opened) {
        group.share("checkpoint", Some(read(&dir.file(rundir::LAST_CHECKPOINT))?))?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Whether the run restored into `trainer` can train on to `config`'s epochs: `Some`
/// message when it had already finished, an error when it cannot go on.
fn check_resumable(dir: &RunDir, trainer: &mut Trainer, config: &Config) -> Result<Option<String>> {
    let path = dir.path().display();
    if dir.status() == Some(Status::StoppedEarly) {
        return continue_stopped(dir, trainer, config);
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
    // A run that finished is done: a launcher that runs the command again (a restart, a
    // requeue) must not see an error. One whose checkpoint holds its last epoch but that did
    // not finish (killed or failed while writing the plot or model.pt: summary.json says
    // `finished` only after every artifact) resumes to write its artifacts.
    if trainer.epoch == epochs && trainer.running.is_none() && dir.status() == Some(Status::Finished) {
        return Ok(Some(format!(
            "{path} has already trained all {epochs} epochs; nothing to do (pass --set training.epochs=N with N > {epochs} to train further)"
        )));
    }
    Ok(None)
}

/// A run that early stopping ended trains on when the resume changes its training settings
/// (more epochs, more patience, early stopping off, ...) and leaves epochs to train: as when
/// Keras's `fit` is called again, from the last epoch's state, early stopping counts its
/// patience afresh (its best value and weights stay). With the settings unchanged the run
/// is done, as a finished one is; changed without room for another epoch, an error.
fn continue_stopped(dir: &RunDir, trainer: &mut Trainer, config: &Config) -> Result<Option<String>> {
    let (path, epoch, epochs) = (dir.path().display(), trainer.epoch, config.training.epochs);
    let more = format!("--set training.epochs=N with N > {epoch}");
    if dir.config(&[])?.training == config.training {
        return Ok(Some(format!(
            "{path} stopped early at epoch {epoch}; there is nothing to resume \
             (to train it further, pass {more}, or change training.early_stopping)"
        )));
    }
    if epochs <= epoch {
        bail!(
            "{path} stopped early at epoch {epoch}, and training.epochs is {epochs}: to train it further, pass {more}"
        );
    }
    if let Some(stopper) = &mut trainer.stopper {
        stopper.plateau.wait = 0;
    }
    Ok(None)
}

/// Returns `err`, noting a failure to write `what` beside it (the original error matters
/// more).
fn note(err: anyhow::Error, what: &str, written: Result<()>) -> anyhow::Error {
    match written {
        Ok(()) => err,
        Err(write_err) => anyhow::anyhow!("{err:#} (and {what} could not be written: {write_err:#})"),
    }
}

/// Keeps the user's module as the run started from it (`rundir::MODULE`): a resume and a
/// reload build on the run's copy, whatever happens to `model.path` afterwards.
fn copy_module(config: &Config, dir: &RunDir) -> Result<()> {
    let (Some(path), copy) = (&config.model.path, dir.file(rundir::MODULE)) else { return Ok(()) };
    if copy.is_file() && path.canonicalize().ok() == copy.canonicalize().ok() {
        return Ok(());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read model.path {}", path.display()))?;
    atomic::write(&copy, &bytes)
}
