//! The training run: `train` reads top to bottom like a Keras `fit`: set up, (resume,) run
//! the epochs, export. The `Trainer` it drives holds everything that changes while training,
//! so that a checkpoint can save all of it and a resumed run continues bit for bit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::atomic;
use crate::checkpoint;
use crate::config::{yaml_name, Config, EarlyStopping, OnNan, OptimizerKind, Task};
use crate::data::{self, Part, Preprocessing};
use crate::device::{device_name, libtorch_version};
use crate::export;
use crate::metrics::{self, loss_grad, loss_value, sample_losses, Accumulator, Plateau, PlateauState};
use crate::model::Mlp;
use crate::optim::{clip_grad_norm, LrScheduler, Optimizer, ScheduleState};
use crate::report::{self, EpochRecord, History, Progress};
use crate::rundir::{RunDir, Status};

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
}

/// What a run reports; also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `finished`, `stopped_early` (early stopping ended training), `interrupted` (a signal;
    /// resumable) or `failed` (see `error`).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub name: String,
    pub run_dir: PathBuf,
    pub device: String,
    pub seed: u64,
    pub task: &'static str,
    pub epochs: usize,
    pub steps: i64,
    pub parameters: i64,
    /// The last epoch's metrics.csv values.
    pub final_metrics: serde_json::Map<String, serde_json::Value>,
    /// With early stopping: the best epoch, whose weights were exported if `restore_best`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// With a test split: the exported model's loss and metrics on the test part.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub test_metrics: serde_json::Map<String, serde_json::Value>,
    /// `on_nan: skip_batch`: batches whose update was skipped.
    pub skipped_batches: usize,
    /// libtorch's intra-op threads during training.
    pub threads: usize,
    /// The training loop alone (every epoch, with its validation pass), over all sessions
    /// of a resumed run.
    pub train_seconds: f64,
    /// This process as torchfit sees it, artifacts included.
    pub total_seconds: f64,
    pub torchfit_version: &'static str,
    pub libtorch_version: &'static str,
}

impl Summary {
    /// A few lines for the terminal: where the run went and how it ended.
    pub fn describe(&self) -> String {
        let show = |m: &serde_json::Map<String, serde_json::Value>| {
            m.iter().map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(", ")
        };
        let stopped = match (self.status, self.best_epoch) {
            ("stopped_early", Some(best)) => format!(" (stopped early; best epoch {best})"),
            _ => String::new(),
        };
        let mut text = format!(
            "run saved to {}\n{} epochs on {}{stopped}: {} (train {:.2}s, total {:.2}s)",
            self.run_dir.display(),
            self.epochs,
            self.device,
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

/// Training stopped by SIGINT or SIGTERM after a checkpoint; `main` exits with `exit_code`.
#[derive(Debug)]
pub struct Interrupted {
    pub exit_code: u8,
    pub message: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

/// Trains the model a validated config describes, or continues the run in
/// `options.run_dir` with `options.resume`, and writes the run directory: `config.yaml`,
/// `preprocessing.json`, `split.json`, `checkpoint/`, `metrics.csv`, `loss.png`,
/// `weights.safetensors`, `model.pt` and, last, `summary.json`.
pub fn train(config: &Config, options: &TrainOptions) -> Result<Summary> {
    let device = config.device.resolve()?;
    tch::manual_seed(config.seed as i64);
    let data = data::load(config)?;
    let mut trainer = Trainer::new(config, &data, device)?;
    tch::set_num_threads(trainer.threads() as i32);

    // Everything that can fail on the user's input has been checked: only now does a run
    // directory appear (or, resuming, get written to).
    let run_dir = match (&options.run_dir, options.resume) {
        (Some(dir), true) => {
            // A run that died before its first checkpoint starts over, which ends where it
            // would have: data and initial weights follow from the seed.
            let last = dir.join("checkpoint/last.safetensors");
            if last.exists() {
                trainer.restore(&last)?;
            }
            check_resumable(dir, &trainer, config)?;
            dir.clone()
        }
        _ => RunDir::create(&config.name, options.run_dir.as_deref())?.path().to_path_buf(),
    };
    let config_yaml = config.to_yaml()?;
    atomic::write(&run_dir.join("config.yaml"), config_yaml.as_bytes())?;
    report::write_json(&run_dir.join("preprocessing.json"), &data.preprocessing)?;
    report::write_json(&run_dir.join("split.json"), &data.split)?;
    let checkpoints = run_dir.join("checkpoint");
    std::fs::create_dir_all(&checkpoints).with_context(|| format!("cannot create {}", checkpoints.display()))?;

    let signals = Signals::install()?;
    let mut writer = checkpoint::Writer::new();
    let progress = Progress::new(config.training.epochs, options.quiet);
    let mut status = "finished";
    let session = Instant::now();
    let first_epoch = trainer.epoch + 1;
    for epoch in first_epoch..=config.training.epochs {
        let outcome = match trainer.run_epoch(epoch, &signals) {
            Ok(outcome) => outcome,
            Err(err) => {
                progress.finish();
                let err = fail(err, "a checkpoint", writer.finish());
                trainer.train_seconds += session.elapsed().as_secs_f64();
                let summary = trainer.summary("failed", &run_dir, options, Some(format!("{err:#}")));
                return Err(fail(err, "summary.json", trainer.write_report(&run_dir, &summary)));
            }
        };
        if let EpochEnd::Interrupted(signal) = outcome {
            progress.finish();
            writer.finish()?;
            trainer.train_seconds += session.elapsed().as_secs_f64();
            let path = checkpoints.join("last.safetensors");
            trainer.save_checkpoint(&path)?;
            trainer.write_report(&run_dir, &trainer.summary("interrupted", &run_dir, options, None))?;
            let (step, steps) = trainer.position();
            return Err(Interrupted {
                exit_code: signal.exit_code(),
                message: format!(
                    "interrupted by {} in epoch {epoch} after step {step} of {steps}; saved {}; resume with: torchfit train --resume {}",
                    signal.name(),
                    path.display(),
                    run_dir.display()
                ),
            }
            .into());
        }
        if let Some(record) = trainer.history.last() {
            progress.epoch(record, config.training.epochs, &trainer.history.columns);
        }
        let stop = trainer.end_of_epoch(epoch, &checkpoints, &mut writer)?;
        if stop || epoch % config.training.checkpoint_every == 0 || epoch == config.training.epochs {
            let last = checkpoints.join("last.safetensors");
            writer.submit(&last, trainer.checkpoint_job(&last, Some(run_dir.join("metrics.csv"))))?;
        }
        if stop {
            status = "stopped_early";
            break;
        }
    }
    progress.finish();
    // The training loop ends here; waiting for the last checkpoint to reach the disk is not
    // training (earlier writes overlapped with it).
    trainer.train_seconds += session.elapsed().as_secs_f64();
    writer.finish()?;
    trainer.restore_best();

    let test_metrics = match &data.test {
        Some(test) => trainer.test_metrics(&test.to_device(device))?,
        None => serde_json::Map::new(),
    };
    trainer.history.plot_loss(&run_dir.join("loss.png"), &format!("{}: model loss", config.name))?;
    export::write_safetensors(&trainer.model, &run_dir.join("weights.safetensors"))?;
    export::write_torchscript(
        &trainer.model,
        &data.preprocessing,
        config.loss(),
        &config_yaml,
        &run_dir.join("model.pt"),
    )?;
    let mut summary = trainer.summary(status, &run_dir, options, None);
    summary.test_metrics = test_metrics;
    trainer.write_report(&run_dir, &summary)?;
    Ok(summary)
}

/// The config for `--resume RUN_DIR`: the run's own, with overrides that leave its data and
/// model alone (more epochs, another device, ...). The run continues from
/// `checkpoint/last.safetensors`, or from the start when it died before writing one.
pub fn resume_config(run_dir: &Path, overrides: &[String]) -> Result<Config> {
    if !run_dir.join("config.yaml").is_file() {
        bail!("{} is not a torchfit run directory (it has no config.yaml)", run_dir.display());
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
    Config::load(Some(&run_dir.join("config.yaml")), overrides)
}

fn check_resumable(run_dir: &Path, trainer: &Trainer, config: &Config) -> Result<()> {
    if RunDir::new(run_dir).status() == Some(Status::StoppedEarly) {
        bail!("{} stopped early at epoch {}; there is nothing to resume", run_dir.display(), trainer.epoch);
    }
    if trainer.epoch >= config.training.epochs && trainer.running.is_none() {
        bail!(
            "{} has already trained all {} epochs; pass --set training.epochs=N with N > {} to train further",
            run_dir.display(),
            config.training.epochs,
            trainer.epoch
        );
    }
    Ok(())
}

/// Returns `err`, noting a failure to write `what` beside it (the original error matters
/// more).
fn fail(err: anyhow::Error, what: &str, written: Result<()>) -> anyhow::Error {
    match written {
        Ok(()) => err,
        Err(write_err) => anyhow::anyhow!("{err:#} (and {what} could not be written: {write_err:#})"),
    }
}

/// How an epoch ended.
enum EpochEnd {
    Done,
    Interrupted(Signal),
}

#[derive(Clone, Copy)]
enum Signal {
    Int,
    Term,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// 128 + the signal number, as shells report a process killed by it.
    fn exit_code(self) -> u8 {
        match self {
            Signal::Int => 130,
            Signal::Term => 143,
        }
    }
}

/// SIGINT and SIGTERM: the first sets a flag the training loop checks after every step; a
/// second exits at once (the last checkpoint stays valid, as every write is atomic).
struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        // Registered first, the conditional shutdown sees the flag as it was before this
        // signal: unset the first time, set the second.
        flag::register_conditional_shutdown(SIGINT, 130, int.clone())?;
        flag::register(SIGINT, int.clone())?;
        flag::register_conditional_shutdown(SIGTERM, 143, term.clone())?;
        flag::register(SIGTERM, term.clone())?;
        Ok(Signals { int, term })
    }

    fn received(&self) -> Option<Signal> {
        if self.int.load(Ordering::Relaxed) {
            Some(Signal::Int)
        } else if self.term.load(Ordering::Relaxed) {
            Some(Signal::Term)
        } else {
            None
        }
    }
}

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
    skipped_batches: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct StopperState {
    plateau: PlateauState,
    best_epoch: usize,
}

/// An epoch in progress, kept across an interruption: the steps done, and the outputs they
/// made, written into one buffer of the epoch's size (the targets are the epoch's permuted
/// copy itself). The epoch's loss and metrics are computed from them at its end, in one
/// pass, as Keras's running metrics would have counted them. One buffer rather than a
/// tensor per step also keeps the allocator from fragmenting around small live tensors.
struct Running {
    step: usize,
    outputs: Tensor,
    /// Steps skipped by `on_nan: skip_batch`, left out of the loss and metrics.
    skipped: Vec<usize>,
    seconds: f64,
}

/// Below this many batch x parameter multiply-adds per step, one thread is fastest: the
/// Keras example (32 x 121) runs several times slower on two threads than on one, while a
/// 1024 x 1.3M step gains from every core.
const SMALL_STEP_WORK: i64 = 1 << 20;

/// Everything that changes while a run trains.
struct Trainer<'a> {
    config: &'a Config,
    pre: &'a Preprocessing,
    device: Device,
    train: Part,
    validation: Option<Part>,
    model: Mlp,
    outputs: usize,
    optimizer: Optimizer,
    schedule: LrScheduler,
    stopper: Option<EarlyStopper>,
    history: History,
    /// Epochs completed.
    epoch: usize,
    running: Option<Running>,
    train_seconds: f64,
    skipped_batches: usize,
}

impl<'a> Trainer<'a> {
    fn new(config: &'a Config, data: &'a data::Prepared, device: Device) -> Result<Trainer<'a>> {
        let pre = &data.preprocessing;
        let outputs = pre.output_width(config.loss());
        let model = Mlp::new(&config.model, pre.feature_names.len(), outputs, device)?;
        let training = &config.training;
        let optimizer = Optimizer::new(&training.optimizer, &model.params);
        Ok(Trainer {
            config,
            pre,
            device,
            train: data.train.to_device(device),
            validation: data.validation.as_ref().map(|p| p.to_device(device)),
            model,
            outputs,
            optimizer,
            schedule: LrScheduler::new(&training.lr_schedule, training.optimizer.lr, training.epochs),
            stopper: training.early_stopping.clone().map(EarlyStopper::new),
            history: History::new(config.monitorable()),
            epoch: 0,
            running: None,
            train_seconds: 0.0,
            skipped_batches: 0,
        })
    }

    /// `training.threads`, or: one thread when a step's work (batch x parameters) is small
    /// enough that splitting it costs more than it saves, else every core.
    fn threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let work = self.config.training.batch_size as i64 * self.model.parameter_count();
        self.config.training.threads.unwrap_or(if work < SMALL_STEP_WORK { 1 } else { cores })
    }

    fn batch_sizes(&self) -> Vec<i64> {
        let (n, batch) = (self.train.len() as i64, self.config.training.batch_size as i64);
        (0..n).step_by(batch as usize).map(|start| batch.min(n - start)).collect()
    }

    /// (steps done, steps in all) of the epoch in progress.
    fn position(&self) -> (usize, usize) {
        (self.running.as_ref().map(|r| r.step).unwrap_or(0), self.batch_sizes().len())
    }

    /// Trains epoch `epoch` (1-based) from where it stands, in batches of `batch_size` (the
    /// last holds the remainder), and records its metrics.csv row. Returns early, keeping
    /// the epoch's progress, when a signal arrives.
    fn run_epoch(&mut self, epoch: usize, signals: &Signals) -> Result<EpochEnd> {
        let started = Instant::now();
        let training = &self.config.training;
        let loss = self.config.loss();
        let sizes = self.batch_sizes();
        let one = Tensor::from(1.0f32).to_device(self.device);
        let rows = self.train.len() as i64;
        let Running { step: first_step, outputs, mut skipped, seconds } = match self.running.take() {
            Some(running) => running,
            None => {
                let outputs = Tensor::f_empty([rows, self.outputs as i64], (Kind::Float, self.device))?;
                Running { step: 0, outputs, skipped: Vec::new(), seconds: 0.0 }
            }
        };
        self.optimizer.set_lr(self.schedule.lr(epoch));
        let (x, y) = epoch_order(&self.train, self.config.seed, epoch, training.shuffle);
        let batch = training.batch_size as i64;
        for (step, (xb, yb)) in x.split(batch, 0).into_iter().zip(y.split(batch, 0)).enumerate().skip(first_step) {
            if self.model.dropout > 0.0 {
                // Dropout's draws depend on (seed, epoch, step) alone, so a run resumed
                // mid-epoch draws what an uninterrupted one would.
                tch::manual_seed(step_seed(self.config.seed, epoch, step));
            }
            let output = outputs.narrow(0, step as i64 * batch, sizes[step]);
            let tape = self.model.forward_train_into(&xb, true, &output);
            let skip =
                training.on_nan == OnNan::SkipBatch && !loss_value(loss, &output, &yb).double_value(&[]).is_finite();
            if skip {
                self.skipped_batches += 1;
                skipped.push(step);
            } else {
                self.model.backward(&tape, &loss_grad(loss, &output, &yb, &one));
                if let Some(max_norm) = training.gradient_clip {
                    clip_grad_norm(&mut self.model.grads, max_norm);
                }
                self.optimizer.step(&mut self.model.params, &self.model.grads)?;
            }
            if let Some(signal) = signals.received() {
                let seconds = seconds + started.elapsed().as_secs_f64();
                self.running = Some(Running { step: step + 1, outputs, skipped, seconds });
                return Ok(EpochEnd::Interrupted(signal));
            }
        }
        if skipped.len() == sizes.len() {
            bail!(
                "every batch of epoch {epoch} had a non-finite loss and was skipped (training.on_nan: skip_batch); \
                 try a lower training.optimizer.lr (now {}) or training.gradient_clip",
                self.optimizer.lr()
            );
        }
        let (outputs, targets) = if skipped.is_empty() {
            (outputs, y)
        } else {
            let kept: Vec<i64> = (0..sizes.len())
                .filter(|step| !skipped.contains(step))
                .flat_map(|step| (step as i64 * batch)..(step as i64 * batch + sizes[step]))
                .collect();
            let kept = Tensor::from_slice(&kept).to_device(self.device);
            (outputs.index_select(0, &kept), y.index_select(0, &kept))
        };
        let mut accumulator = self.accumulator();
        accumulator.add(&outputs, &targets, &loss_value(loss, &outputs, &targets));
        let (train_loss, train_metrics) = accumulator.finish()?;
        if !train_loss.is_finite() {
            let bad = Vec::<bool>::try_from(sample_losses(loss, &outputs, &targets).isfinite().logical_not())?;
            let at = bad.iter().position(|&b| b).map(|sample| {
                let step = sample as i64 / batch;
                format!(" at step {} of {}", step + 1, sizes.len())
            });
            bail!(
                "the loss became {train_loss} in epoch {epoch}{}; checkpoint/last.safetensors keeps epoch {}. \
                 Try a lower training.optimizer.lr (now {}), training.gradient_clip, or training.on_nan: skip_batch",
                at.unwrap_or_default(),
                self.epoch,
                self.optimizer.lr()
            );
        }
        let mut values = vec![train_loss];
        values.extend(train_metrics);
        if let Some(part) = &self.validation {
            let (val_loss, val_metrics) = metrics::evaluate(&self.model, part, self.config, self.pre)?;
            values.push(val_loss);
            values.extend(val_metrics);
        }
        let seconds = seconds + started.elapsed().as_secs_f64();
        self.history.epochs.push(EpochRecord { epoch, values, lr: self.optimizer.lr(), seconds });
        self.epoch = epoch;
        Ok(EpochEnd::Done)
    }

    /// Feeds the epoch's monitors; writes `checkpoint/best` when early stopping's monitor
    /// improves. Returns whether early stopping ends training.
    fn end_of_epoch(&mut self, epoch: usize, checkpoints: &Path, writer: &mut checkpoint::Writer) -> Result<bool> {
        if let Some(monitor) = self.schedule.monitor().map(str::to_string) {
            self.schedule.observe(self.history.value(&monitor));
        }
        let Some(stopper) = &mut self.stopper else { return Ok(false) };
        let value = self.history.value(&stopper.cfg.monitor);
        let (improved, stop) = stopper.observe(epoch, value, &self.model);
        if improved {
            let best = checkpoints.join("best.safetensors");
            writer.submit(&best, self.checkpoint_job(&best, None))?;
        }
        Ok(stop)
    }

    fn restore_best(&self) {
        if let Some(stopper) = &self.stopper {
            stopper.restore(&self.model);
        }
    }

    fn accumulator(&self) -> Accumulator {
        metrics::accumulator(self.config, self.pre, self.outputs, self.device)
    }

    fn test_metrics(&self, test: &Part) -> Result<serde_json::Map<String, serde_json::Value>> {
        let (test_loss, values) = metrics::evaluate(&self.model, test, self.config, self.pre)?;
        let mut metrics = serde_json::Map::new();
        metrics.insert("loss".into(), test_loss.into());
        for (metric, value) in self.config.metrics().iter().zip(values) {
            metrics.insert(metric.name().into(), value.into());
        }
        Ok(metrics)
    }

    fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.checkpoint_job(path, None)()
    }

    /// A write of the trainer's whole state to `path` (and of the history to `csv`) that
    /// owns copies of everything, so it can run while training goes on.
    fn checkpoint_job(&self, path: &Path, csv: Option<PathBuf>) -> checkpoint::Job {
        let snapshot = |t: &Tensor| t.detach().to_device(Device::Cpu).copy();
        let (optimizer_steps, optimizer) = self.optimizer.state();
        let mut tensors: Vec<(String, Tensor)> = optimizer.iter().map(|(n, t)| (n.clone(), snapshot(t))).collect();
        tensors.extend(self.model.named_parameters().into_iter().map(|(n, p)| (format!("model.{n}"), snapshot(p))));
        let skipped_steps = self.running.as_ref().map(|r| r.skipped.clone()).unwrap_or_default();
        let (step_in_epoch, epoch_seconds) = match &self.running {
            Some(running) => {
                let done: i64 = self.batch_sizes()[..running.step].iter().sum();
                tensors.push(("running.outputs".into(), snapshot(&running.outputs.narrow(0, 0, done))));
                (running.step, running.seconds)
            }
            None => (0, 0.0),
        };
        if let Some(best) = self.stopper.as_ref().and_then(|s| s.best_params.as_ref()) {
            tensors.push(("early_stopping.best_params".into(), snapshot(best)));
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
            skipped_batches: self.skipped_batches,
        };
        let (path, history) = (path.to_path_buf(), csv.map(|csv| (csv, self.history.clone())));
        Box::new(move || {
            checkpoint::save(&path, &state, &tensors)?;
            match history {
                Some((csv, history)) => history.write_csv(&csv),
                None => Ok(()),
            }
        })
    }

    /// Puts the trainer where a checkpoint left its run.
    fn restore(&mut self, path: &Path) -> Result<()> {
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
                    let shape = trainer.model.params.size();
                    let best = checkpoint::take(&mut tensors, "early_stopping.best_params", &shape)?;
                    stopper.best_params = Some(best.to_device(trainer.device));
                }
            }
            let columns = trainer.history.columns.len() as i64 + 2;
            let history = checkpoint::take(&mut tensors, "history", &[state.epoch as i64, columns])?;
            trainer.history.epochs = history_rows(&history)?;
            trainer.epoch = state.epoch;
            trainer.train_seconds = state.train_seconds;
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

    fn summary(&self, status: &'static str, run_dir: &Path, options: &TrainOptions, error: Option<String>) -> Summary {
        let mut final_metrics = serde_json::Map::new();
        if let Some(last) = self.history.last() {
            for (name, value) in self.history.columns.iter().zip(&last.values) {
                final_metrics.insert(name.clone(), (*value).into());
            }
        }
        Summary {
            status,
            error,
            name: self.config.name.clone(),
            run_dir: run_dir.to_path_buf(),
            device: device_name(self.device),
            seed: self.config.seed,
            task: match self.config.task() {
                Task::Regression => "regression",
                Task::Classification => "classification",
            },
            epochs: self.history.epochs.len(),
            steps: self.optimizer.steps(),
            parameters: self.model.parameter_count(),
            final_metrics,
            best_epoch: self.stopper.as_ref().map(|s| s.best_epoch),
            test_metrics: serde_json::Map::new(),
            skipped_batches: self.skipped_batches,
            threads: self.threads(),
            train_seconds: self.train_seconds,
            total_seconds: options.started.elapsed().as_secs_f64(),
            torchfit_version: env!("CARGO_PKG_VERSION"),
            libtorch_version: libtorch_version(),
        }
    }

    /// `metrics.csv` and `summary.json`, the latter last.
    fn write_report(&self, run_dir: &Path, summary: &Summary) -> Result<()> {
        self.history.write_csv(&run_dir.join("metrics.csv"))?;
        report::write_json(&run_dir.join("summary.json"), summary)
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

/// A seed for one training step, mixing the run's seed, the epoch and the step.
fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((epoch as u64) << 32) ^ step as u64);
    (rand::RngCore::next_u64(&mut rng) >> 1) as i64
}

/// Keras's EarlyStopping: stop after `patience` epochs without improvement of the monitor,
/// optionally keeping a copy of the best epoch's weights to restore.
struct EarlyStopper {
    cfg: EarlyStopping,
    plateau: Plateau,
    best_epoch: usize,
    /// A copy of `Mlp::params` at the best epoch, with `restore_best`.
    best_params: Option<Tensor>,
}

impl EarlyStopper {
    fn new(cfg: EarlyStopping) -> EarlyStopper {
        let plateau = Plateau::new(&cfg.monitor, cfg.mode, cfg.min_delta);
        EarlyStopper { cfg, plateau, best_epoch: 0, best_params: None }
    }

    /// Records the epoch's value: (whether it improved, whether to stop). Keras counts
    /// epochs without improvement and stops once the count reaches `patience` (so patience 0
    /// stops at the first epoch that does not improve).
    fn observe(&mut self, epoch: usize, value: f64, model: &Mlp) -> (bool, bool) {
        if self.plateau.observe(value) {
            self.best_epoch = epoch;
            if self.cfg.restore_best {
                self.best_params = Some(model.params.copy());
            }
            return (true, false);
        }
        (false, self.plateau.wait >= self.cfg.patience.max(1))
    }

    fn restore(&self, model: &Mlp) {
        if let Some(best) = &self.best_params {
            model.params.shallow_clone().copy_(best);
        }
    }
}

/// The epoch's copy of the training part, in the order its batches are taken. Shuffling
/// uses a ChaCha stream per (seed, epoch), so any epoch's order can be recomputed on its own.
fn epoch_order(part: &Part, seed: u64, epoch: usize, shuffle: bool) -> (Tensor, Tensor) {
    if !shuffle {
        return (part.x.shallow_clone(), part.y.shallow_clone());
    }
    let mut order: Vec<i64> = (0..part.len() as i64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    let index = Tensor::from_slice(&order).to_device(part.x.device());
    (part.x.index_select(0, &index), part.y.index_select(0, &index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loss, Metric, OptimizerConfig, OptimizerKind};

    fn config(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(None, &sets).unwrap()
    }

    fn unsignalled() -> Signals {
        Signals { int: Arc::new(AtomicBool::new(false)), term: Arc::new(AtomicBool::new(false)) }
    }

    #[test]
    fn shuffling_is_a_per_epoch_permutation_fixed_by_the_seed() {
        let _rng = crate::testing::seed(1);
        let data = data::load(&config(&["data.samples=100"])).unwrap().train;
        let (x1, _) = epoch_order(&data, 5, 1, true);
        let (x1_again, _) = epoch_order(&data, 5, 1, true);
        let (x2, _) = epoch_order(&data, 5, 2, true);
        assert!(x1.equal(&x1_again));
        assert!(!x1.equal(&x2));
        // Same rows, another order.
        let sorted = |t: &Tensor| t.sum_dim_intlist(1, false, Kind::Float).sort(0, false).0;
        assert!(sorted(&x1).allclose(&sorted(&data.x), 1e-6, 1e-6, false));
        let (unshuffled, _) = epoch_order(&data, 5, 1, false);
        assert!(unshuffled.equal(&data.x));
    }

    #[test]
    fn epoch_loss_is_the_batch_size_weighted_mean() {
        // lr tiny: the model barely moves, so the epoch loss must equal the loss of the
        // batches it saw, weighted by their sizes (10 = 4 + 4 + 2).
        let _rng = crate::testing::seed(1);
        let mut config = config(&["data.samples=10", "training.batch_size=4", "training.shuffle=false"]);
        config.training.optimizer = OptimizerConfig { kind: OptimizerKind::Sgd, lr: 1e-30, ..Default::default() };
        config.training.metrics = Some(vec![Metric::Mae, Metric::Mse, Metric::Rmse]);
        let data = data::load(&config).unwrap();
        let mut trainer = Trainer::new(&config, &data, Device::Cpu).unwrap();
        assert!(matches!(trainer.run_epoch(1, &unsignalled()).unwrap(), EpochEnd::Done));
        let values = &trainer.history.epochs[0].values;
        let (x, y) = (&data.train.x, &data.train.y);
        let batch = |s: i64, l: i64| {
            loss_value(Loss::Mse, &trainer.model.forward(&x.narrow(0, s, l)), &y.narrow(0, s, l)).double_value(&[])
        };
        let want = (batch(0, 4) * 4.0 + batch(4, 4) * 4.0 + batch(8, 2) * 2.0) / 10.0;
        assert!((values[0] - want).abs() < 1e-6, "{} vs {want}", values[0]);
        assert!((values[2] - want).abs() < 1e-6, "mse metric {} vs {want}", values[2]);
        assert!((values[3] - want.sqrt()).abs() < 1e-6);
        let mae = (trainer.model.forward(x) - y).abs().mean(Kind::Float).double_value(&[]);
        assert!((values[1] - mae).abs() < 1e-6);
        assert_eq!(trainer.optimizer.steps(), 3);
    }

    /// The loop a PyTorch user would write: autograd through per-parameter leaves, Keras's
    /// Adam written out per tensor. Returns the epoch losses.
    fn straightforward_losses(config: &Config, data: &data::Prepared, epochs: usize) -> Vec<f64> {
        tch::manual_seed(5);
        let model = Mlp::new(&config.model, 10, 1, Device::Cpu).unwrap();
        let params: Vec<Tensor> =
            model.parameters().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
        let o = &config.training.optimizer;
        let (mut m, mut v): (Vec<Tensor>, Vec<Tensor>) =
            params.iter().map(|p| (p.zeros_like(), p.zeros_like())).unzip();
        let mut t = 0;
        let mut losses = Vec::new();
        for epoch in 1..=epochs {
            let (x, y) = epoch_order(&data.train, config.seed, epoch, true);
            let (mut total, n) = (0.0, x.size()[0]);
            for start in (0..n).step_by(config.training.batch_size) {
                let len = (config.training.batch_size as i64).min(n - start);
                let mut h = x.narrow(0, start, len);
                for i in 0..params.len() / 2 {
                    h = h.linear(&params[2 * i], Some(&params[2 * i + 1]));
                    if i + 1 < params.len() / 2 {
                        h = h.relu();
                    }
                }
                let loss = h.mse_loss(&y.narrow(0, start, len), tch::Reduction::Mean);
                total += loss.double_value(&[]) * len as f64;
                let grads = Tensor::run_backward(&[&loss], &params, false, false);
                t += 1;
                tch::no_grad(|| {
                    for (i, (p, g)) in params.iter().zip(&grads).enumerate() {
                        m[i] = &m[i] * o.beta1 + g * (1.0 - o.beta1);
                        v[i] = &v[i] * o.beta2 + g.square() * (1.0 - o.beta2);
                        let alpha = o.lr * (1.0 - o.beta2.powi(t)).sqrt() / (1.0 - o.beta1.powi(t));
                        let _ = p.shallow_clone().g_sub_(&(&m[i] * alpha / (v[i].sqrt() + o.eps())));
                    }
                });
            }
            losses.push(total / n as f64);
        }
        losses
    }

    #[test]
    fn the_optimised_path_matches_the_straightforward_loop() {
        let _rng = crate::testing::seed(2);
        let config = config(&["data.samples=300", "data.kind=linear", "training.epochs=3", "model.hidden=[16, 8]"]);
        let data = data::load(&config).unwrap();
        let want = straightforward_losses(&config, &data, 3);
        tch::manual_seed(5);
        let mut trainer = Trainer::new(&config, &data, Device::Cpu).unwrap();
        for epoch in 1..=3 {
            trainer.run_epoch(epoch, &unsignalled()).unwrap();
        }
        let got: Vec<f64> = trainer.history.epochs.iter().map(|r| r.values[0]).collect();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * w.abs(), "epoch losses {got:?} vs straightforward {want:?}");
        }
        assert!(want[2] < want[0], "the reference learns: {want:?}");
    }

    #[test]
    fn a_checkpoint_mid_epoch_resumes_to_the_same_numbers() {
        let _rng = crate::testing::seed(0);
        let config = config(&["data.samples=100", "training.epochs=2", "model.dropout=0.2"]);
        let data = data::load(&config).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.safetensors");

        tch::manual_seed(5);
        let mut straight = Trainer::new(&config, &data, Device::Cpu).unwrap();
        for epoch in 1..=2 {
            straight.run_epoch(epoch, &unsignalled()).unwrap();
        }

        tch::manual_seed(5);
        let mut first = Trainer::new(&config, &data, Device::Cpu).unwrap();
        first.run_epoch(1, &unsignalled()).unwrap();
        let signals = unsignalled();
        signals.int.store(true, Ordering::Relaxed);
        assert!(matches!(first.run_epoch(2, &signals).unwrap(), EpochEnd::Interrupted(Signal::Int)));
        assert_eq!(first.position(), (1, 4));
        first.save_checkpoint(&path).unwrap();

        // A fresh trainer (other initial weights) restored from the checkpoint.
        tch::manual_seed(99);
        let mut resumed = Trainer::new(&config, &data, Device::Cpu).unwrap();
        resumed.restore(&path).unwrap();
        assert_eq!((resumed.epoch, resumed.position()), (1, (1, 4)));
        resumed.run_epoch(2, &unsignalled()).unwrap();
        assert!(straight.model.params.equal(&resumed.model.params), "weights differ");
        let rows = |t: &Trainer| t.history.epochs.iter().map(|r| r.values.clone()).collect::<Vec<_>>();
        assert_eq!(rows(&straight), rows(&resumed));
        assert_eq!(straight.optimizer.steps(), resumed.optimizer.steps());
    }

    #[test]
    fn early_stopping_waits_patience_epochs_and_restores_the_best() {
        let _rng = crate::testing::seed(0);
        let config = config(&[]);
        let model = Mlp::new(&config.model, 10, 1, Device::Cpu).unwrap();
        let cfg = EarlyStopping { monitor: "loss".into(), patience: 2, restore_best: true, ..Default::default() };
        let mut stopper = EarlyStopper::new(cfg);
        let best = model.layers[0].weight.copy();
        assert_eq!(stopper.observe(1, 1.0, &model), (true, false));
        let _ = model.layers[0].weight.shallow_clone().fill_(7.0);
        assert_eq!(stopper.observe(2, 1.5, &model), (false, false));
        assert_eq!(stopper.observe(3, 1.2, &model), (false, true), "two epochs without improvement");
        stopper.restore(&model);
        assert!(model.layers[0].weight.equal(&best));
        assert_eq!(stopper.best_epoch, 1);
        let mut eager = EarlyStopper::new(EarlyStopping { monitor: "loss".into(), ..Default::default() });
        assert_eq!(eager.observe(1, 1.0, &model), (true, false));
        assert_eq!(eager.observe(2, 1.0, &model), (false, true), "patience 0 stops at the first non-improvement");
    }

    #[test]
    fn explicit_run_dir_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        assert_eq!(RunDir::create("x", Some(&out)).unwrap().path(), out);
        std::fs::write(out.join("summary.json"), "{}").unwrap();
        let err = RunDir::create("x", Some(&out)).unwrap_err().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
    }

    #[test]
    fn resume_refuses_changes_to_data_and_model() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoint")).unwrap();
        std::fs::write(dir.path().join("config.yaml"), crate::config::KERAS_EXAMPLE).unwrap();
        std::fs::write(dir.path().join("checkpoint/last.safetensors"), b"").unwrap();
        let err = resume_config(dir.path(), &["model.hidden=[3]".into()]).unwrap_err().to_string();
        assert!(err.contains("--set model.hidden: a resumed run keeps its data, model, task and seed"), "{err}");
        assert!(resume_config(dir.path(), &["seed=3".into()]).is_err());
        let more = resume_config(dir.path(), &["training.epochs=200".into()]).unwrap();
        assert_eq!(more.training.epochs, 200);
        let err = resume_config(&dir.path().join("nope"), &[]).unwrap_err().to_string();
        assert!(err.contains("is not a torchfit run directory"), "{err}");
    }
}
