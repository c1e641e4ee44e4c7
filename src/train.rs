//! The training run: one function, `train`, that reads top to bottom like a Keras `fit`, and
//! the few helpers it calls.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Tensor};

use crate::atomic;
use crate::config::{Config, EarlyStopping, Loss, Task, TrainingConfig};
use crate::data::{self, Part, Preprocessing};
use crate::device::{device_name, libtorch_version, DeviceChoice};
use crate::export;
use crate::metrics::{loss_value, Accumulator, Plateau};
use crate::model::Mlp;
use crate::optim::{clip_grad_norm, LrScheduler, Optimizer};
use crate::report::{self, EpochRecord, History, Progress};

pub struct TrainOptions {
    /// The run directory; `None` makes `runs/<name>-<UTC timestamp>`.
    pub run_dir: Option<PathBuf>,
    /// Print nothing while training.
    pub quiet: bool,
    /// When the process started, for `total_seconds`.
    pub started: Instant,
}

/// What a finished run reports; also written as `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `finished`, or `stopped_early` when early stopping ended training.
    pub status: &'static str,
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
    /// The training loop alone: every epoch, with its validation pass.
    pub train_seconds: f64,
    /// The whole process as torchfit sees it, artifacts included.
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

/// Trains the model a validated config describes and writes the run directory:
/// `config.yaml`, `preprocessing.json`, `split.json`, `metrics.csv`, `loss.png`,
/// `weights.safetensors`, `model.pt` and, last, `summary.json`, whose presence marks a
/// finished run.
pub fn train(config: &Config, options: &TrainOptions) -> Result<Summary> {
    let device = DeviceChoice::parse(&config.device)?.resolve()?;
    tch::manual_seed(config.seed as i64);
    let data = data::load(config)?;
    let pre = &data.preprocessing;
    let train = data.train.to_device(device);
    let validation = data.validation.as_ref().map(|p| p.to_device(device));
    let (loss, metrics) = (config.loss(), config.metrics());
    let outputs = output_width(loss, pre);
    let model = Mlp::new(&config.model, pre.feature_names.len(), outputs, device)?;
    let params = model.parameters();
    let training = &config.training;
    let mut optimizer = Optimizer::new(&training.optimizer, &params);
    let mut schedule = LrScheduler::new(&training.lr_schedule, training.optimizer.lr, training.epochs);
    let mut stopper = training.early_stopping.clone().map(EarlyStopper::new);

    // Everything that can fail on the user's input has been checked: only now does a run
    // directory appear.
    let run_dir = create_run_dir(&config.name, options.run_dir.as_deref())?;
    let config_yaml = config.to_yaml()?;
    atomic::write(&run_dir.join("config.yaml"), config_yaml.as_bytes())?;
    report::write_json(&run_dir.join("preprocessing.json"), pre)?;
    report::write_json(&run_dir.join("split.json"), &data.split)?;

    let mut history = History::new(config.monitorable());
    let progress = Progress::new(training.epochs, options.quiet);
    let mut status = "finished";
    let train_started = Instant::now();
    for epoch in 1..=training.epochs {
        let epoch_started = Instant::now();
        optimizer.set_lr(schedule.lr(epoch));
        let (x, y) = epoch_order(&train, config.seed, epoch, training.shuffle);
        let mut running = accumulator(config, pre, outputs, device);
        train_epoch(&model, &params, &mut optimizer, &x, &y, training, loss, &mut running);
        let (train_loss, train_metrics) = running.finish();
        let mut values = vec![train_loss];
        values.extend(train_metrics);
        if let Some(part) = &validation {
            let (val_loss, val_metrics) = evaluate(&model, part, config, pre);
            values.push(val_loss);
            values.extend(val_metrics);
        }
        if !train_loss.is_finite() {
            progress.finish();
            bail!(
                "the loss became {train_loss} in epoch {epoch}; try a lower training.optimizer.lr (now {}) \
                 or training.gradient_clip",
                optimizer.lr()
            );
        }
        let record = EpochRecord { epoch, values, lr: optimizer.lr(), seconds: epoch_started.elapsed().as_secs_f64() };
        progress.epoch(&record, training.epochs, &history.columns);
        history.epochs.push(record);
        if let Some(monitor) = schedule.monitor().map(str::to_string) {
            schedule.observe(history.value(&monitor));
        }
        if let Some(stopper) = &mut stopper {
            if stopper.should_stop(epoch, history.value(&stopper.cfg.monitor), &model) {
                status = "stopped_early";
                break;
            }
        }
    }
    progress.finish();
    let train_seconds = train_started.elapsed().as_secs_f64();
    if let Some(stopper) = &stopper {
        stopper.restore(&model);
    }

    let mut test_metrics = serde_json::Map::new();
    if let Some(test) = &data.test {
        let (test_loss, values) = evaluate(&model, &test.to_device(device), config, pre);
        test_metrics.insert("loss".into(), test_loss.into());
        for (metric, value) in metrics.iter().zip(values) {
            test_metrics.insert(metric.name().into(), value.into());
        }
    }
    history.write_csv(&run_dir.join("metrics.csv"))?;
    history.plot_loss(&run_dir.join("loss.png"), &format!("{}: model loss", config.name))?;
    export::write_safetensors(&model, &run_dir.join("weights.safetensors"))?;
    export::write_torchscript(&model, pre, loss, &config_yaml, &run_dir.join("model.pt"))?;

    let mut final_metrics = serde_json::Map::new();
    if let Some(last) = history.last() {
        for (name, value) in history.columns.iter().zip(&last.values) {
            final_metrics.insert(name.clone(), (*value).into());
        }
    }
    let summary = Summary {
        status,
        name: config.name.clone(),
        run_dir: run_dir.clone(),
        device: device_name(device),
        seed: config.seed,
        task: match config.task() {
            Task::Regression => "regression",
            Task::Classification => "classification",
        },
        epochs: history.epochs.len(),
        steps: optimizer.steps(),
        parameters: model.parameter_count(),
        final_metrics,
        best_epoch: stopper.as_ref().map(|s| s.best_epoch),
        test_metrics,
        train_seconds,
        total_seconds: options.started.elapsed().as_secs_f64(),
        torchfit_version: env!("CARGO_PKG_VERSION"),
        libtorch_version: libtorch_version(),
    };
    report::write_json(&run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The network's output width: one per regression target, one per class for
/// cross-entropy, a single logit for bce.
pub fn output_width(loss: Loss, pre: &Preprocessing) -> usize {
    match (loss, pre.classes()) {
        (Loss::Bce, _) => 1,
        (_, Some(classes)) => classes,
        (_, None) => pre.target_mean.len(),
    }
}

/// Keras's EarlyStopping: stop after `patience` epochs without improvement of the monitor,
/// optionally keeping a copy of the best epoch's weights to restore.
struct EarlyStopper {
    cfg: EarlyStopping,
    plateau: Plateau,
    best_epoch: usize,
    best_weights: Option<Vec<Tensor>>,
}

impl EarlyStopper {
    fn new(cfg: EarlyStopping) -> EarlyStopper {
        let plateau = Plateau::new(&cfg.monitor, cfg.mode, cfg.min_delta);
        EarlyStopper { cfg, plateau, best_epoch: 0, best_weights: None }
    }

    /// Keras counts epochs without improvement and stops once the count reaches `patience`
    /// (so patience 0 stops at the first epoch that does not improve).
    fn should_stop(&mut self, epoch: usize, value: f64, model: &Mlp) -> bool {
        if self.plateau.observe(value) {
            self.best_epoch = epoch;
            if self.cfg.restore_best {
                self.best_weights = Some(model.parameters().iter().map(|p| p.detach().copy()).collect());
            }
            return false;
        }
        self.plateau.wait >= self.cfg.patience.max(1)
    }

    fn restore(&self, model: &Mlp) {
        if let Some(best) = &self.best_weights {
            tch::no_grad(|| {
                for (p, b) in model.parameters().into_iter().zip(best) {
                    p.shallow_clone().copy_(b);
                }
            });
        }
    }
}

fn accumulator(config: &Config, pre: &Preprocessing, outputs: usize, device: Device) -> Accumulator {
    let scaled = pre.target_std.iter().any(|&s| s != 1.0) || pre.target_mean.iter().any(|&m| m != 0.0);
    let scale = scaled.then(|| {
        (Tensor::from_slice(&pre.target_std).to_device(device), Tensor::from_slice(&pre.target_mean).to_device(device))
    });
    Accumulator::new(config.loss(), &config.metrics(), outputs as i64, pre.classes(), scale, device)
}

/// The loss and metrics of `model` on `part`, without building a graph, in chunks that
/// bound memory on large parts.
pub fn evaluate(model: &Mlp, part: &Part, config: &Config, pre: &Preprocessing) -> (f64, Vec<f64>) {
    const CHUNK: i64 = 8192;
    let mut acc = accumulator(config, pre, model.outputs() as usize, part.x.device());
    tch::no_grad(|| {
        let n = part.len() as i64;
        for start in (0..n).step_by(CHUNK as usize) {
            let len = CHUNK.min(n - start);
            let (x, y) = (part.x.narrow(0, start, len), part.y.narrow(0, start, len));
            let output = model.forward(&x);
            let loss = loss_value(config.loss(), &output, &y);
            acc.add(&output, &y, &loss);
        }
    });
    acc.finish()
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

/// One pass over `x`/`y` in batches of `batch_size` (the last one holds the remainder),
/// feeding `running` the predictions made before each update, as Keras's running metrics.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    model: &Mlp,
    params: &[&Tensor],
    optimizer: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
    training: &TrainingConfig,
    loss: Loss,
    running: &mut Accumulator,
) {
    let n = x.size()[0];
    let batch_size = training.batch_size as i64;
    for start in (0..n).step_by(batch_size as usize) {
        let len = batch_size.min(n - start);
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let output = model.forward_t(&xb, true);
        let batch_loss = loss_value(loss, &output, &yb);
        batch_loss.backward();
        if let Some(max_norm) = training.gradient_clip {
            clip_grad_norm(params, max_norm);
        }
        optimizer.step(params);
        tch::no_grad(|| running.add(&output.detach(), &yb, &batch_loss.detach()));
    }
}

/// Creates the run directory. An explicit one may exist if empty; a generated one gets a
/// numeric suffix when two runs start in the same second.
fn create_run_dir(name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let occupied = dir.read_dir().map(|mut entries| entries.next().is_some()).unwrap_or(false);
        if occupied {
            bail!("run directory {} already exists and is not empty; choose another --out", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
        return Ok(dir.to_path_buf());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = PathBuf::from("runs").join(format!("{name}-{stamp}"));
    std::fs::create_dir_all("runs").context("cannot create runs/")?;
    for attempt in 1.. {
        let dir = if attempt == 1 { base.clone() } else { PathBuf::from(format!("{}-{attempt}", base.display())) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create run directory {}", dir.display())),
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// The model's predictions for `x`, without building a graph.
pub fn predict_in_memory(model: &Mlp, x: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward(&x.to_device(model.layers[0].weight.device())).to_device(Device::Cpu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Metric, OptimizerConfig, OptimizerKind};
    use tch::Kind;

    fn part(n: usize) -> (Config, Part) {
        let mut config = Config::load(None, &[format!("data.samples={n}")]).unwrap();
        config.resolve();
        tch::manual_seed(1);
        (config.clone(), data::load(&config).unwrap().train)
    }

    #[test]
    fn shuffling_is_a_per_epoch_permutation_fixed_by_the_seed() {
        let _rng = crate::testing::seed(0);
        let (_, data) = part(100);
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
        let _rng = crate::testing::seed(0);
        // lr tiny: the model barely moves, so the epoch loss must equal the loss of the
        // batches it saw, weighted by their sizes (10 = 4 + 4 + 2).
        let (mut config, data) = part(10);
        config.training.batch_size = 4;
        config.training.optimizer = OptimizerConfig { kind: OptimizerKind::Sgd, lr: 1e-30, ..Default::default() };
        config.training.metrics = Some(vec![Metric::Mae, Metric::Mse, Metric::Rmse]);
        let model = Mlp::new(&config.model, 10, 1, Device::Cpu).unwrap();
        let params = model.parameters();
        let mut opt = Optimizer::new(&config.training.optimizer, &params);
        let mut running = Accumulator::new(Loss::Mse, &config.metrics(), 1, None, None, Device::Cpu);
        train_epoch(&model, &params, &mut opt, &data.x, &data.y, &config.training, Loss::Mse, &mut running);
        let (loss, metrics) = running.finish();
        let batch = |s: i64, l: i64| {
            loss_value(Loss::Mse, &predict_in_memory(&model, &data.x.narrow(0, s, l)), &data.y.narrow(0, s, l))
                .double_value(&[])
        };
        let want = (batch(0, 4) * 4.0 + batch(4, 4) * 4.0 + batch(8, 2) * 2.0) / 10.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        assert!((metrics[1] - want).abs() < 1e-6, "mse metric {} vs {want}", metrics[1]);
        assert!((metrics[2] - want.sqrt()).abs() < 1e-6);
        let mae = (predict_in_memory(&model, &data.x) - &data.y).abs().mean(Kind::Float).double_value(&[]);
        assert!((metrics[0] - mae).abs() < 1e-6);
        assert_eq!(opt.steps(), 3);
    }

    #[test]
    fn early_stopping_waits_patience_epochs_and_restores_the_best() {
        let _rng = crate::testing::seed(0);
        let (config, _) = part(10);
        let model = Mlp::new(&config.model, 10, 1, Device::Cpu).unwrap();
        let cfg = EarlyStopping { monitor: "loss".into(), patience: 2, restore_best: true, ..Default::default() };
        let mut stopper = EarlyStopper::new(cfg);
        let best = model.layers[0].weight.copy();
        assert!(!stopper.should_stop(1, 1.0, &model));
        tch::no_grad(|| {
            let _ = model.layers[0].weight.shallow_clone().fill_(7.0);
        });
        assert!(!stopper.should_stop(2, 1.5, &model));
        assert!(stopper.should_stop(3, 1.2, &model), "two epochs without improvement");
        stopper.restore(&model);
        assert!(model.layers[0].weight.equal(&best));
        assert_eq!(stopper.best_epoch, 1);
        let mut eager = EarlyStopper::new(EarlyStopping { monitor: "loss".into(), ..Default::default() });
        assert!(!eager.should_stop(1, 1.0, &model));
        assert!(eager.should_stop(2, 1.0, &model), "patience 0 stops at the first non-improvement");
    }

    #[test]
    fn explicit_run_dir_must_be_empty() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        assert_eq!(create_run_dir("x", Some(&out)).unwrap(), out);
        std::fs::write(out.join("summary.json"), "{}").unwrap();
        let err = create_run_dir("x", Some(&out)).unwrap_err().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
    }
}
