//! The training run, read top to bottom like a Keras `fit`: load the data, build the
//! trainer, open the run directory (or resume one), run the epochs, write the artifacts.
//! The `Trainer` holds what changes while training and takes one step at a time; the `Run`
//! owns every side effect; a `dist::Group` is where processes agree.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::config::Config;
use crate::data;
use crate::dist::{Group, Launch};
use crate::export;
use crate::rundir::{self, RunDir, Status};

mod early_stopping;
mod graph;
mod overview;
mod run;
mod signals;
mod state;
mod step;
mod summary;
#[cfg(test)]
mod tests;
mod trainer;

pub use crate::exit::Interrupted;
use run::{Run, Start};
pub use summary::Summary;
use trainer::{EpochEnd, Trainer};

pub struct TrainOptions {
    /// The run directory; `None` makes `runs/<name>-<UTC timestamp>`. With `resume`, the run
    /// to continue.
    pub run_dir: Option<PathBuf>,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// Print nothing while training.
    pub quiet: bool,
    /// When the process started, for `total_seconds`.
    pub started: Instant,
    /// How this process was started: alone, or as one of several by torchrun or Slurm.
    pub launch: Launch,
    /// Stop after this epoch with a checkpoint and status `paused`, short of
    /// `training.epochs`, which stays the run's budget: schedules defined over it go on
    /// unchanged when the run is resumed (a sweep's ASHA rung). `None`: train to the end.
    pub pause_after: Option<usize>,
}

/// How `train` ended on this process.
pub enum Outcome {
    /// The run trained (on rank 0 of several, or alone): what to report.
    Trained(Summary),
    /// The run had already finished (a restart after the end, or `--resume` of a finished
    /// run): nothing to train, and not an error.
    AlreadyFinished(String),
    /// A process other than rank 0 trained its part; rank 0 reports.
    Follower,
}

/// Trains the model a validated config describes, or continues the run in
/// `options.run_dir` with `options.resume`, and writes the run directory (see `rundir`).
/// Under a launcher, this process trains its part of the run with the others.
pub fn train(config: &Config, options: &TrainOptions) -> Result<Outcome> {
    keep_freed_memory();
    let launch = &options.launch;
    let device = launch.device(config.device, config.device.resolve()?);
    tch::manual_seed(config.seed as i64);
    let data = data::load(config)?;
    let mut trainer = Trainer::new(config, &data, device)?;
    // A TorchScript error fails now rather than after the last epoch.
    export::check_script(&*trainer.model, &data.preprocessing, config.loss())?;
    trainer.set_threads(launch.local_world_size);
    trainer.plan_graphs(launch.world_size)?;
    let group = Group::join(launch, config, device)?;

    // Everything that can fail on the user's input has been checked: only now does a run
    // directory appear (or, resuming, get written to).
    let mut run = match Run::open(config, &data, &mut trainer, options, &group)? {
        Start::Train(run) => run,
        Start::Finished(message) => return Ok(Outcome::AlreadyFinished(message)),
    };
    // Every process starts from rank 0's weights (the same already, from the same seed or
    // checkpoint: this makes sure of it, as DDP does).
    group.broadcast(&mut trainer.model.params().shallow_clone())?;
    for (_, mut buffer) in trainer.model.buffers()? {
        group.broadcast(&mut buffer)?;
    }
    let outcome = fit(&mut run, &mut trainer, &group, options.pause_after).and_then(|status| match status {
        Status::Paused => run.pause(&mut trainer),
        _ => run.finish(&mut trainer, &data, status),
    });
    match outcome {
        Ok(summary) if group.is_leader() => Ok(Outcome::Trained(summary)),
        Ok(_) => Ok(Outcome::Follower),
        Err(err) => Err(run.fail(&trainer, err)),
    }
}

/// The epochs from where the trainer stands to `training.epochs`, or until early stopping,
/// or to `pause_after` (a run already there pauses at once).
fn fit(run: &mut Run, trainer: &mut Trainer, group: &Group, pause_after: Option<usize>) -> Result<Status> {
    let epochs = trainer.config.training.epochs;
    let pause = |epoch: usize| pause_after.is_some_and(|p| epoch >= p && epoch < epochs);
    if pause(trainer.epoch) && trainer.running.is_none() {
        return Ok(Status::Paused);
    }
    for epoch in trainer.epoch + 1..=epochs {
        if let EpochEnd::Interrupted(signal) = trainer.run_epoch(epoch, &run.signals, group)? {
            return Err(run.interrupt(trainer, signal));
        }
        let (improved, stop) = trainer.end_of_epoch(group)?;
        run.end_of_epoch(trainer, improved, stop)?;
        if stop {
            return Ok(Status::StoppedEarly);
        }
        if pause(epoch) {
            return Ok(Status::Paused);
        }
    }
    Ok(Status::Finished)
}

/// The config for `--resume RUN_DIR`: the run's own, with overrides that leave its data and
/// model alone (more epochs, another device, ...). The run continues from
/// `checkpoint/last.safetensors`, or from the start when it died before writing one.
pub fn resume_config(run_dir: &Path, overrides: &[String]) -> Result<Config> {
    let dir = RunDir::new(run_dir);
    if !dir.file(rundir::CONFIG).is_file() {
        bail!("{} is not a torchfit run directory (it has no {})", run_dir.display(), rundir::CONFIG);
    }
    for assignment in overrides {
        let key = assignment.split_once('=').map(|(k, _)| k.trim()).unwrap_or(assignment);
        let root = key.split('.').next().unwrap_or(key);
        if matches!(root, "data" | "model" | "task" | "seed") {
            bail!(
                "--set {key}: a resumed run keeps its data, model, task and seed; \
                 start a new run to change them (training.* and device may change)"
            );
        }
    }
    let mut config = dir.config(overrides)?;
    // A user module resumes from the run's own copy (see `rundir::MODULE`).
    if config.model.path.is_some() && dir.file(rundir::MODULE).is_file() {
        config.model.path = Some(dir.file(rundir::MODULE));
    }
    Ok(config)
}

/// Keeps the memory a training step frees for the next step. glibc's malloc hands blocks
/// above its mmap threshold, and the free top of its heap above the trim threshold, back to
/// the kernel, so every step of a large model (TabM's [batch x k, 512] activations) took them
/// back page fault by page fault (bf16 TabM epochs: docs/benchmarks.md). The same reason
/// PyTorch's CPU tuning guide recommends jemalloc or tcmalloc. A user's own
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` is left to decide.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets two of malloc's parameters; any value is valid for them
        // (glibc's largest mmap threshold is 32 MiB on 64-bit machines).
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}
