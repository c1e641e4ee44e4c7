//! A run directory on disk, the one home of everything that reads or writes one: the names
//! of its files, its status as `summary.json` records it, creating a new one, and loading a
//! trained run back (`predict`, `evaluate`, `export`, and later `serve` and `sweep`).
//!
//! ```text
//! <run>/config.yaml          the resolved config (every default filled in)
//!       preprocessing.json   what was fitted on the training part
//!       split.json           which rows went to validation and test
//!       metrics.csv          one row per epoch
//!       loss.png             the loss curves
//!       weights.safetensors  the trained weights, torch.nn.Sequential names
//!       model.pt             TorchScript, preprocessing inside
//!       module.pt            model.kind: torchscript: the user's module as given
//!       summary.json         status and results; `running` while training
//!       model_summary.txt    layers, parameters, data and device, as the run started
//!       manifest.json        SHA-256 of the artifacts, once training has ended (manifest.rs)
//!       train.lock           held by the process that trains the run (lock.rs)
//!       checkpoint/last.safetensors, checkpoint/best.safetensors
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::{Config, ModelConfig, ModelKind};
use crate::data::Preprocessing;
use crate::model::{self, Model};

mod lock;
mod manifest;

pub use lock::{RunLock, LOCK};
pub use manifest::{sha256, MANIFEST};

pub const CONFIG: &str = "config.yaml";
pub const PREPROCESSING: &str = "preprocessing.json";
pub const SPLIT: &str = "split.json";
/// Text runs: the tokenizer of `data.text` (also inside preprocessing.json and model.pt),
/// for Python's `tokenizers.Tokenizer.from_file`.
pub const TOKENIZER: &str = "tokenizer.json";
pub const METRICS: &str = "metrics.csv";
pub const LOSS_PLOT: &str = "loss.png";
pub const WEIGHTS: &str = "weights.safetensors";
pub const MODEL: &str = "model.pt";
/// `model.kind: torchscript`: the user's module as the run started from it (`model.path`,
/// copied), which a resume and a reload build on.
pub const MODULE: &str = "module.pt";
/// Written only by `torchfit export --format onnx` without `--output`; training does not.
pub const ONNX: &str = "model.onnx";
pub const SUMMARY: &str = "summary.json";
/// What the run printed when it started: layers, parameters, data, device (`train::overview`).
pub const MODEL_SUMMARY: &str = "model_summary.txt";
pub const CHECKPOINTS: &str = "checkpoint";
pub const LAST_CHECKPOINT: &str = "checkpoint/last.safetensors";
pub const BEST_CHECKPOINT: &str = "checkpoint/best.safetensors";

/// A run's lifecycle, as `summary.json` records it: `running` from the moment training
/// starts (a resume writes it again), then one of the others when the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Finished,
    /// Early stopping ended training.
    StoppedEarly,
    /// A signal stopped training after a checkpoint; resumable.
    Interrupted,
    /// An error stopped training (summary.json's `error` says which).
    Failed,
    /// Stopped on purpose after the epoch `TrainOptions::pause_after` named, with a
    /// checkpoint, short of `training.epochs` (a sweep's ASHA rung); resumable as it is.
    Paused,
}

impl Status {
    /// The name `summary.json` uses.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Finished => "finished",
            Status::StoppedEarly => "stopped_early",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
            Status::Paused => "paused",
        }
    }

    /// Whether training ran to its end, so the run's model.pt and weights are final.
    pub fn is_done(self) -> bool {
        matches!(self, Status::Finished | Status::StoppedEarly)
    }
}

/// A run directory's path, with its files by name.
#[derive(Debug, Clone)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir(path.into())
    }

    /// Creates a new run directory and claims it (see `lock`): an explicit one may exist if
    /// empty; a generated one, `runs/<name>-<UTC timestamp>`, gets a numeric suffix when two
    /// runs start in the same second. Of two processes creating one directory, one gets it.
    pub fn create(name: &str, explicit: Option<&Path>) -> Result<(RunDir, RunLock)> {
        if let Some(dir) = explicit {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create run directory {}", dir.display()))?;
            }
            match std::fs::create_dir(dir) {
                Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir()) => {
                    return Err(e).with_context(|| format!("cannot create run directory {}", dir.display()))
                }
                _ => {}
            }
            let lock = RunLock::claim_new(dir)?;
            return Ok((RunDir::new(dir), lock));
        }
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let base = PathBuf::from("runs").join(format!("{name}-{stamp}"));
        std::fs::create_dir_all("runs").context("cannot create runs/")?;
        let mut attempt = 1;
        loop {
            let dir = if attempt == 1 { base.clone() } else { PathBuf::from(format!("{}-{attempt}", base.display())) };
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let lock = RunLock::claim_new(&dir)?;
                    return Ok((RunDir::new(dir), lock));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => attempt += 1,
                Err(e) => return Err(e).with_context(|| format!("cannot create run directory {}", dir.display())),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file of the run, by one of the names above.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The status `summary.json` records; `None` without a readable one.
    pub fn status(&self) -> Option<Status> {
        let bytes = std::fs::read(self.file(SUMMARY)).ok()?;
        let summary: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(summary.get("status")?.clone()).ok()
    }

    /// The run's resolved config.
    pub fn config(&self, overrides: &[String]) -> Result<Config> {
        Config::load_saved(&self.file(CONFIG), overrides)
    }

    pub fn preprocessing(&self) -> Result<Preprocessing> {
        let path = self.file(PREPROCESSING);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid", path.display()))
    }
}

/// The model.pt that `path` names where one is asked for: `path` itself, or a run
/// directory's own.
/// A run directory's is checked against its manifest; so is a model.pt given inside a run
/// directory that has one.
pub fn model_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if path.file_name().is_some_and(|n| n == MODEL) && parent.join(MANIFEST).is_file() {
            RunDir::new(parent).verify()?;
        }
        return Ok(path.to_path_buf());
    }
    let run = RunDir::new(path);
    let model = run.file(MODEL);
    if model.is_file() {
        run.verify()?;
        return Ok(model);
    }
    match run.status() {
        Some(status) if !status.is_done() => bail!(
            "{} has no {MODEL}: the run is {}; to use its last checkpoint, export it with \
             `torchfit export {} --weights {} --output FILE.pt`",
            path.display(),
            status.name(),
            path.display(),
            run.file(LAST_CHECKPOINT).display()
        ),
        _ => bail!("{} is a directory without a {MODEL}; pass a run directory or a {MODEL}", path.display()),
    }
}

/// A trained run, loaded back: its resolved config, its preprocessing, and its model with
/// the run's final weights, or others of the same shapes (such as a checkpoint's).
pub struct TrainedRun {
    pub dir: RunDir,
    pub config: Config,
    pub preprocessing: Preprocessing,
    pub model: Box<dyn Model>,
}

impl TrainedRun {
    /// Loads a finished run with its own weights; or any run that has a config (an
    /// interrupted one too) with `weights`, a safetensors file or checkpoint of the same
    /// names and shapes. `flag` names where `weights` came from in errors (`--weights`).
    pub fn load(dir: &Path, weights: Option<&Path>, flag: &str) -> Result<TrainedRun> {
        let dir = RunDir::new(dir);
        if dir.path().is_file() {
            // A run's model.pt given where a run is asked for: its run directory. Another
            // file (an export elsewhere) does not say which run it came from.
            if dir.path().file_name().is_none_or(|n| n != MODEL) {
                bail!("{} is a file; pass a run directory or the {MODEL} inside one", dir.path().display());
            }
            let parent = dir.path().parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return TrainedRun::load(parent, weights, flag);
        }
        if !dir.file(CONFIG).is_file() {
            bail!("{} is not a finished torchfit run (it has no {CONFIG})", dir.path().display());
        }
        let (weights, source) = match (weights, dir.status()) {
            (Some(path), _) => (path.to_path_buf(), format!("{flag} {}", path.display())),
            (None, Some(status)) if status.is_done() => (dir.file(WEIGHTS), dir.file(WEIGHTS).display().to_string()),
            (None, Some(status)) => bail!(
                "{} is not a finished torchfit run (its status is {}); to use its last checkpoint, pass {flag} {}",
                dir.path().display(),
                status.name(),
                dir.file(LAST_CHECKPOINT).display()
            ),
            (None, None) => {
                bail!("{} is not a finished torchfit run (it has no readable {SUMMARY})", dir.path().display())
            }
        };
        if !weights.is_file() {
            bail!("{source}: no such file");
        }
        dir.verify()?;
        let config = dir.config(&[])?;
        let mut preprocessing = dir.preprocessing()?;
        // An older run's preprocessing.json may lack a fill `mean` promises (evaluate and
        // the exports then fill as a run trained today does).
        preprocessing.fill_from_means(config.data.missing);
        let outputs = preprocessing.output_width(config.loss());
        // The weights replace whatever the run started from (init_from need not exist any
        // more), and the module is the run's own copy.
        let mut cfg = ModelConfig { init_from: None, freeze: Vec::new(), ..config.model.clone() };
        if cfg.kind == ModelKind::Torchscript {
            cfg.path = Some(dir.file(MODULE));
        }
        let model = model::build(&cfg, &preprocessing, outputs, Device::Cpu, None, &[])?;
        model::load_weights(&*model, &weights).with_context(|| source.clone())?;
        Ok(TrainedRun { dir, config, preprocessing, model })
    }
}
