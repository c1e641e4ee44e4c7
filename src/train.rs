//! The training run: one function, `train`, that reads top to bottom like a Keras `fit`, and
//! the few helpers it calls.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Reduction, Tensor};

use crate::config::{Config, Loss, Metric, TrainingConfig};
use crate::data::Dataset;
use crate::device::{device_name, libtorch_version, DeviceChoice};
use crate::export;
use crate::model::Mlp;
use crate::optim::Optimizer;
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
    pub status: &'static str,
    pub name: String,
    pub run_dir: PathBuf,
    pub device: String,
    pub seed: u64,
    pub epochs: usize,
    pub steps: i64,
    pub parameters: i64,
    pub final_metrics: serde_json::Map<String, serde_json::Value>,
    /// The training loop alone: every epoch, from the first batch to the last update.
    pub train_seconds: f64,
    /// The whole process as torchfit sees it, artifacts included.
    pub total_seconds: f64,
    pub torchfit_version: &'static str,
    pub libtorch_version: &'static str,
}

impl Summary {
    /// Two lines for the terminal: where the run went and how it ended.
    pub fn describe(&self) -> String {
        let metrics: Vec<String> = self
            .final_metrics
            .iter()
            .map(|(k, v)| format!("{k} {:.4}", v.as_f64().unwrap_or(f64::NAN)))
            .collect();
        format!(
            "run saved to {}\n{} epochs on {}: {} (train {:.2}s, total {:.2}s)",
            self.run_dir.display(),
            self.epochs,
            self.device,
            metrics.join(", "),
            self.train_seconds,
            self.total_seconds
        )
    }
}

/// Trains the model a validated config describes and writes the run directory:
/// `config.yaml`, `metrics.csv`, `loss.png`, `weights.safetensors`, `model.pt` and, last,
/// `summary.json`, whose presence marks a finished run.
pub fn train(config: &Config, options: &TrainOptions) -> Result<Summary> {
    let device = DeviceChoice::parse(&config.device)?.resolve()?;
    tch::manual_seed(config.seed as i64);
    let data = Dataset::from_config(&config.data)?.to_device(device);
    let model = Mlp::new(&config.model, data.features(), data.targets(), device)?;
    let params = model.parameters();
    let training = &config.training;
    let mut optimizer = Optimizer::new(&training.optimizer, &params);

    // Everything that can fail on the user's input has been checked: only now does a run
    // directory appear.
    let run_dir = create_run_dir(&config.name, options.run_dir.as_deref())?;
    let config_yaml = config.to_yaml()?;
    crate::atomic::write(&run_dir.join("config.yaml"), config_yaml.as_bytes())?;

    let metric_names: Vec<String> = training
        .metrics
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    let mut history = History::new(metric_names);
    let progress = Progress::new(training.epochs, options.quiet);
    let train_started = Instant::now();
    for epoch in 1..=training.epochs {
        let epoch_started = Instant::now();
        let (x, y) = epoch_order(&data, config.seed, epoch, training.shuffle);
        let (loss, metrics) = train_epoch(&model, &params, &mut optimizer, &x, &y, training);
        let record = EpochRecord {
            epoch,
            loss,
            metrics,
            lr: optimizer.lr(),
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        if !loss.is_finite() {
            progress.finish();
            bail!(
                "the loss became {loss} in epoch {epoch}; try a lower training.optimizer.lr (now {})",
                optimizer.lr()
            );
        }
        progress.epoch(&record, training.epochs, &history.metric_names);
        history.epochs.push(record);
    }
    progress.finish();
    let train_seconds = train_started.elapsed().as_secs_f64();

    history.write_csv(&run_dir.join("metrics.csv"))?;
    history.plot_loss(
        &run_dir.join("loss.png"),
        &format!("{}: model loss", config.name),
    )?;
    export::write_safetensors(&model, &run_dir.join("weights.safetensors"))?;
    export::write_torchscript(&model, &config_yaml, &run_dir.join("model.pt"))?;

    let mut final_metrics = serde_json::Map::new();
    if let Some(last) = history.last() {
        final_metrics.insert("loss".into(), last.loss.into());
        for (name, value) in history.metric_names.iter().zip(&last.metrics) {
            final_metrics.insert(name.clone(), (*value).into());
        }
    }
    let summary = Summary {
        status: "finished",
        name: config.name.clone(),
        run_dir: run_dir.clone(),
        device: device_name(device),
        seed: config.seed,
        epochs: history.epochs.len(),
        steps: optimizer.steps(),
        parameters: model.parameter_count(),
        final_metrics,
        train_seconds,
        total_seconds: options.started.elapsed().as_secs_f64(),
        torchfit_version: env!("CARGO_PKG_VERSION"),
        libtorch_version: libtorch_version(),
    };
    report::write_json(&run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The epoch's copy of the data, in the order its batches are taken. Shuffling uses a
/// ChaCha stream per (seed, epoch), so any epoch's order can be recomputed on its own.
fn epoch_order(data: &Dataset, seed: u64, epoch: usize, shuffle: bool) -> (Tensor, Tensor) {
    if !shuffle {
        return (data.x.shallow_clone(), data.y.shallow_clone());
    }
    let mut order: Vec<i64> = (0..data.len() as i64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    let index = Tensor::from_slice(&order).to_device(data.x.device());
    (
        data.x.index_select(0, &index),
        data.y.index_select(0, &index),
    )
}

/// One pass over `x`/`y` in batches of `batch_size` (the last one holds the remainder).
/// Returns the epoch loss, the batch-size-weighted mean of the batch losses, and the metrics,
/// computed like Keras's running metrics on the predictions made before each update.
fn train_epoch(
    model: &Mlp,
    params: &[&Tensor],
    optimizer: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
    training: &TrainingConfig,
) -> (f64, Vec<f64>) {
    let n = x.size()[0];
    let batch_size = training.batch_size as i64;
    // Running sums stay on the device; reading them once per epoch avoids a sync per step.
    let zeros = || Tensor::zeros([], (Kind::Float, x.device()));
    let (mut loss_sum, mut abs_sum, mut sq_sum) = (zeros(), zeros(), zeros());
    let wants = |m: &[Metric]| training.metrics.iter().any(|x| m.contains(x));
    let (want_abs, want_sq) = (wants(&[Metric::Mae]), wants(&[Metric::Mse, Metric::Rmse]));
    for start in (0..n).step_by(batch_size as usize) {
        let len = batch_size.min(n - start);
        let (xb, yb) = (x.narrow(0, start, len), y.narrow(0, start, len));
        let prediction = model.forward(&xb);
        let loss = loss_value(training.loss, &prediction, &yb);
        loss.backward();
        optimizer.step(params);
        tch::no_grad(|| {
            loss_sum += loss.detach() * len as f64;
            let error = prediction.detach() - &yb;
            if want_abs {
                abs_sum += error.abs().sum(Kind::Float);
            }
            if want_sq {
                sq_sum += error.square().sum(Kind::Float);
            }
        });
    }
    let sums =
        Vec::<f64>::try_from(Tensor::stack(&[loss_sum, abs_sum, sq_sum], 0).to_kind(Kind::Double))
            .unwrap_or_else(|_| vec![f64::NAN; 3]);
    let values = y.numel() as f64;
    let metrics = training
        .metrics
        .iter()
        .map(|m| match m {
            Metric::Mae => sums[1] / values,
            Metric::Mse => sums[2] / values,
            Metric::Rmse => (sums[2] / values).sqrt(),
            // Rejected for regression when the config is validated.
            Metric::Accuracy => f64::NAN,
        })
        .collect();
    (sums[0] / n as f64, metrics)
}

pub fn loss_value(loss: Loss, prediction: &Tensor, target: &Tensor) -> Tensor {
    match loss {
        Loss::Mse => prediction.mse_loss(target, Reduction::Mean),
        Loss::Mae => prediction.l1_loss(target, Reduction::Mean),
        Loss::Huber => prediction.huber_loss(target, Reduction::Mean, 1.0),
    }
}

/// Creates the run directory. An explicit one may exist if empty; a generated one gets a
/// numeric suffix when two runs start in the same second.
fn create_run_dir(name: &str, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let occupied = dir
            .read_dir()
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if occupied {
            bail!(
                "run directory {} already exists and is not empty; choose another --out",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create run directory {}", dir.display()))?;
        return Ok(dir.to_path_buf());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let base = PathBuf::from("runs").join(format!("{name}-{stamp}"));
    std::fs::create_dir_all("runs").context("cannot create runs/")?;
    for attempt in 1.. {
        let dir = if attempt == 1 {
            base.clone()
        } else {
            PathBuf::from(format!("{}-{attempt}", base.display()))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create run directory {}", dir.display()))
            }
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// The model's predictions for `x`, without building a graph.
pub fn predict_in_memory(model: &Mlp, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        model
            .forward(&x.to_device(model.layers[0].weight.device()))
            .to_device(Device::Cpu)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;

    fn dataset(n: usize) -> Dataset {
        tch::manual_seed(1);
        Dataset::from_config(&DataConfig {
            samples: n,
            ..DataConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn shuffling_is_a_per_epoch_permutation_fixed_by_the_seed() {
        let data = dataset(100);
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
        let data = dataset(10);
        let cfg = Config::default();
        let model = Mlp::new(&cfg.model, 10, 1, Device::Cpu).unwrap();
        let training = TrainingConfig {
            batch_size: 4,
            optimizer: crate::config::OptimizerConfig {
                kind: crate::config::OptimizerKind::Sgd,
                lr: 1e-30,
                ..Default::default()
            },
            metrics: vec![Metric::Mae, Metric::Mse, Metric::Rmse],
            ..TrainingConfig::default()
        };
        let params = model.parameters();
        let mut opt = Optimizer::new(&training.optimizer, &params);
        let (loss, metrics) = train_epoch(&model, &params, &mut opt, &data.x, &data.y, &training);
        let batch = |s: i64, l: i64| {
            loss_value(
                Loss::Mse,
                &predict_in_memory(&model, &data.x.narrow(0, s, l)),
                &data.y.narrow(0, s, l),
            )
            .double_value(&[])
        };
        let want = (batch(0, 4) * 4.0 + batch(4, 4) * 4.0 + batch(8, 2) * 2.0) / 10.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
        assert!(
            (metrics[1] - want).abs() < 1e-6,
            "mse metric {} vs {want}",
            metrics[1]
        );
        assert!((metrics[2] - want.sqrt()).abs() < 1e-6);
        let mae = (predict_in_memory(&model, &data.x) - &data.y)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((metrics[0] - mae).abs() < 1e-6);
        assert_eq!(opt.steps(), 3);
    }

    #[test]
    fn explicit_run_dir_must_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        assert_eq!(create_run_dir("x", Some(&out)).unwrap(), out);
        std::fs::write(out.join("summary.json"), "{}").unwrap();
        let err = create_run_dir("x", Some(&out)).unwrap_err().to_string();
        assert!(err.contains("already exists and is not empty"), "{err}");
    }
}
