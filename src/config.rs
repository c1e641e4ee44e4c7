//! Experiment configuration: a YAML file (or the embedded Keras example) plus `--set`
//! overrides, read in two stages. Stage one is serde with `deny_unknown_fields`, whose errors
//! are rewritten to name the key, its line and the nearest valid name; stage two,
//! [`Config::validate`], checks values and names the offending key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// The embedded default: byte for byte `configs/keras_example.yaml`.
pub const KERAS_EXAMPLE: &str = include_str!("../configs/keras_example.yaml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Names the run directory (`runs/<name>-<timestamp>`).
    pub name: String,
    /// Seeds data generation, splits, weight initialisation, dropout and shuffling.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `regression` or `classification`; inferred from the loss (or the data) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub kind: DataKind,
    /// Rows to generate (generated kinds).
    pub samples: usize,
    /// Generated kinds: the number of features. csv: the columns to use (default: all but the
    /// target columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Generated regression kinds: the number of targets.
    pub targets: usize,
    /// Standard deviation of the Gaussian noise added by the generators.
    pub noise: f64,
    /// csv: the file. npy: one `.npz` holding arrays `x` and `y` (instead of `x` and `y`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// csv: the target column, or a list of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Columns>,
    /// csv: the field delimiter, one character.
    pub delimiter: String,
    /// npy: the features file `[samples, features]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<PathBuf>,
    /// npy: the targets file `[samples]` or `[samples, targets]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<PathBuf>,
    /// Empty cells, `NA` and `nan`: `error`, `drop_row`, or `mean` (features only; the mean of
    /// the training part).
    pub missing: Missing,
    /// Fraction of rows held out for validation, after a seeded shuffle.
    pub validation_split: f64,
    /// Fraction of rows held out for the final test, after the same shuffle.
    pub test_split: f64,
    /// Standardise each feature with the training part's mean and std (inside model.pt too).
    pub standardize: bool,
    /// Regression: standardise the targets too; predictions come back in original units.
    pub standardize_target: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// x ~ N(0, 1), y ~ N(0, 1): the Keras example; nothing to learn.
    RandomNormal,
    /// x ~ N(0, 1), y = x W + noise with W ~ N(0, 1/features) fixed by the seed.
    Linear,
    /// Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise, x ~ U(0,1)^d.
    Friedman1,
    /// Two interleaving half circles, two classes (scikit-learn's make_moons).
    Moons,
    /// A CSV file with a header row.
    Csv,
    /// `.npy` files (`x`, `y`) or one `.npz` (`path`).
    Npy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Features {
    Count(usize),
    Columns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    One(String),
    Many(Vec<String>),
}

impl Columns {
    pub fn names(&self) -> Vec<String> {
        match self {
            Columns::One(name) => vec![name.clone()],
            Columns::Many(names) => names.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    Error,
    DropRow,
    Mean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Widths of the hidden layers; the output width follows from the task and data.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub init: Init,
    /// Dropout probability after each hidden activation (training only).
    pub dropout: f64,
    /// Initial weights, a safetensors file named like `torch.nn.Sequential`'s state_dict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Gelu,
    LeakyRelu,
    Elu,
    Silu,
    Linear,
}

impl Activation {
    pub const ALL: [Activation; 8] = [
        Activation::Relu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Gelu,
        Activation::LeakyRelu,
        Activation::Elu,
        Activation::Silu,
        Activation::Linear,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Keras Dense: glorot_uniform kernels, zero biases.
    Keras,
    /// PyTorch nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    Torch,
    /// He uniform: U(-sqrt(6/fan_in), sqrt(6/fan_in)), zero biases.
    KaimingUniform,
    /// He normal: N(0, 2/fan_in), zero biases.
    KaimingNormal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    /// Defaults to `mse` for regression and `cross_entropy` for classification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    /// Defaults to `[mae]` for regression and `[accuracy]` for classification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Vec<Metric>>,
    pub optimizer: OptimizerConfig,
    pub lr_schedule: LrSchedule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// Clip the global gradient norm to this value before each update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient_clip: Option<f64>,
    /// Write `checkpoint/last.safetensors` every this many epochs (and on interruption and at
    /// the end).
    pub checkpoint_every: usize,
    /// A non-finite loss: `stop` (with an error naming epoch and step) or `skip_batch`.
    pub on_nan: OnNan,
    /// libtorch's intra-op threads; by default 1 for small models (where threads cost more
    /// in synchronisation than they save) and every core for large ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnNan {
    /// Stop, keeping the last good checkpoint.
    Stop,
    /// Skip the update of a batch whose loss is not finite (reads the loss every step).
    SkipBatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Mse,
    Mae,
    /// Huber with delta 1, as Keras's and PyTorch's defaults.
    Huber,
    /// Softmax cross-entropy over the classes.
    CrossEntropy,
    /// Sigmoid binary cross-entropy; two classes, one output.
    Bce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Mae,
    Mse,
    Rmse,
    R2,
    Accuracy,
    /// Macro-averaged F1 over the classes.
    F1,
    LogLoss,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Defaults to the semantics' own: 1e-7 for Keras, 1e-8 for PyTorch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// Defaults to 0, except adamw: 0.004 (Keras) or 0.01 (PyTorch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// SGD momentum; 0 is plain SGD.
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    pub semantics: Semantics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantics {
    /// Keras: eps outside the bias correction, decoupled weight decay.
    Keras,
    /// PyTorch: eps added to the bias-corrected sqrt(v), L2 weight decay in the gradient
    /// (decoupled for adamw).
    Torch,
}

/// The learning rate per epoch. Each kind reads only its own keys; the others must be unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// step: epochs between decays (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_size: Option<usize>,
    /// step: the decay factor (default 0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// cosine: epochs of linear warm-up from lr/warmup to lr (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<usize>,
    /// cosine, reduce_on_plateau: the floor (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_lr: Option<f64>,
    /// reduce_on_plateau: the quantity watched (default val_loss, or loss without validation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// reduce_on_plateau: the factor applied on a plateau (default 0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// reduce_on_plateau: epochs without improvement before reducing (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// reduce_on_plateau: the least change that counts as improvement (default 1e-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_delta: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Step,
    Cosine,
    ReduceOnPlateau,
}

/// Keras's EarlyStopping, with Keras's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// A metrics.csv column: `loss`, `val_loss`, `val_accuracy`, ...
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The least change that counts as improvement.
    pub min_delta: f64,
    pub mode: Mode,
    /// Restore (and export) the best epoch's weights when training ends.
    pub restore_best: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `max` for accuracy, f1 and r2; `min` otherwise.
    Auto,
    Min,
    Max,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "run".into(),
            seed: 42,
            device: "auto".into(),
            task: None,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            training: TrainingConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::RandomNormal,
            samples: 1000,
            features: None,
            targets: 1,
            noise: 0.1,
            path: None,
            target: None,
            delimiter: ",".into(),
            x: None,
            y: None,
            missing: Missing::Error,
            validation_split: 0.0,
            test_split: 0.0,
            standardize: false,
            standardize_target: false,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { hidden: vec![10], activation: Activation::Relu, init: Init::Keras, dropout: 0.0, init_from: None }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 100,
            batch_size: 32,
            shuffle: true,
            loss: None,
            metrics: None,
            optimizer: OptimizerConfig::default(),
            lr_schedule: LrSchedule::default(),
            early_stopping: None,
            gradient_clip: None,
            checkpoint_every: 1,
            on_nan: OnNan::Stop,
            threads: None,
        }
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: None,
            weight_decay: None,
            momentum: 0.0,
            nesterov: false,
            semantics: Semantics::Keras,
        }
    }
}

impl Default for LrSchedule {
    fn default() -> Self {
        LrSchedule {
            kind: ScheduleKind::Constant,
            step_size: None,
            gamma: None,
            warmup_epochs: None,
            min_lr: None,
            monitor: None,
            factor: None,
            patience: None,
            min_delta: None,
        }
    }
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping { monitor: "val_loss".into(), patience: 0, min_delta: 0.0, mode: Mode::Auto, restore_best: false }
    }
}

impl OptimizerConfig {
    /// The epsilon in force: the configured one, else the semantics' default.
    pub fn eps(&self) -> f64 {
        self.eps.unwrap_or(match self.semantics {
            Semantics::Keras => 1e-7,
            Semantics::Torch => 1e-8,
        })
    }

    /// The weight decay in force: the configured one, else the kind's default.
    pub fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(match (self.kind, self.semantics) {
            (OptimizerKind::Adamw, Semantics::Keras) => 0.004,
            (OptimizerKind::Adamw, Semantics::Torch) => 0.01,
            _ => 0.0,
        })
    }
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Mae => "mae",
            Metric::Mse => "mse",
            Metric::Rmse => "rmse",
            Metric::R2 => "r2",
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::LogLoss => "log_loss",
        }
    }

    pub fn task(self) -> Task {
        match self {
            Metric::Mae | Metric::Mse | Metric::Rmse | Metric::R2 => Task::Regression,
            Metric::Accuracy | Metric::F1 | Metric::LogLoss => Task::Classification,
        }
    }

    /// Whether larger values are better (for early stopping's `mode: auto`).
    pub fn higher_is_better(name: &str) -> bool {
        let base = name.strip_prefix("val_").unwrap_or(name);
        matches!(base, "accuracy" | "f1" | "r2")
    }
}

impl Loss {
    pub fn task(self) -> Task {
        match self {
            Loss::Mse | Loss::Mae | Loss::Huber => Task::Regression,
            Loss::CrossEntropy | Loss::Bce => Task::Classification,
        }
    }
}

impl DataKind {
    fn is_generated(self) -> bool {
        !matches!(self, DataKind::Csv | DataKind::Npy)
    }
}

impl Config {
    /// Reads `path` (or the embedded Keras example when `None`), applies `--set KEY=VALUE`
    /// overrides, and validates the result. Every error names the file and the key.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let (source, text) = match path {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                (p.display().to_string(), text)
            }
            None => ("embedded keras_example.yaml".to_string(), KERAS_EXAMPLE.to_string()),
        };
        let mut config = Config::parse(&text, &source, overrides)?;
        config.validate_settings()?;
        config.resolve();
        config.validate()?;
        Ok(config)
    }

    /// Stage one: YAML text plus overrides into a `Config`, without value checks.
    pub fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Config> {
        if text.trim().is_empty() {
            bail!("{source}: the config file is empty");
        }
        let mut tree: Value =
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: YAML syntax error: {e}"))?;
        if !tree.is_mapping() {
            bail!("{source}: expected a mapping of keys (name, data, model, training, ...) at the top level");
        }
        if overrides.is_empty() {
            // Deserialising the text itself, not the tree, keeps line and column in errors.
            let de = serde_yaml::Deserializer::from_str(text);
            return serde_path_to_error::deserialize(de).map_err(|e| anyhow::anyhow!("{source}: {}", explain(&e)));
        }
        for assignment in overrides {
            apply_override(&mut tree, assignment)?;
        }
        serde_path_to_error::deserialize(tree).map_err(|e| anyhow::anyhow!("{source} with --set: {}", explain(&e)))
    }

    /// The task in force: explicit, else implied by the loss or the data (moons), else
    /// regression. Metrics do not decide it: asking for accuracy on a continuous target is
    /// a mistake to report, not a classification.
    pub fn task(&self) -> Task {
        let from_data = (self.data.kind == DataKind::Moons).then_some(Task::Classification);
        self.task.or(self.training.loss.map(Loss::task)).or(from_data).unwrap_or(Task::Regression)
    }

    /// The loss in force: explicit, else `mse` (regression) or `cross_entropy`.
    pub fn loss(&self) -> Loss {
        self.training.loss.unwrap_or(match self.task() {
            Task::Regression => Loss::Mse,
            Task::Classification => Loss::CrossEntropy,
        })
    }

    /// The metrics in force: explicit, else `[mae]` (regression) or `[accuracy]`.
    pub fn metrics(&self) -> Vec<Metric> {
        self.training.metrics.clone().unwrap_or_else(|| match self.task() {
            Task::Regression => vec![Metric::Mae],
            Task::Classification => vec![Metric::Accuracy],
        })
    }

    /// Whether a validation part exists, so `val_*` columns do.
    pub fn has_validation(&self) -> bool {
        self.data.validation_split > 0.0
    }

    /// Fills every default that depends on other keys, so that the resolved YAML says
    /// exactly what ran. Relative paths become absolute, so a run directory's config still
    /// works from elsewhere.
    pub fn resolve(&mut self) {
        self.task = Some(self.task());
        self.training.loss = Some(self.loss());
        self.training.metrics = Some(self.metrics());
        let o = &mut self.training.optimizer;
        o.eps = Some(o.eps());
        o.weight_decay = Some(o.weight_decay());
        let d = &mut self.data;
        if d.kind.is_generated() && d.features.is_none() {
            let count = if d.kind == DataKind::Moons { 2 } else { 10 };
            d.features = Some(Features::Count(count));
        }
        for path in [&mut d.path, &mut d.x, &mut d.y, &mut self.model.init_from].into_iter().flatten() {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
        let has_validation = self.data.validation_split > 0.0;
        let s = &mut self.training.lr_schedule;
        match s.kind {
            ScheduleKind::Constant => {}
            ScheduleKind::Step => {
                s.step_size.get_or_insert(10);
                s.gamma.get_or_insert(0.1);
            }
            ScheduleKind::Cosine => {
                s.warmup_epochs.get_or_insert(0);
                s.min_lr.get_or_insert(0.0);
            }
            ScheduleKind::ReduceOnPlateau => {
                s.monitor.get_or_insert_with(|| if has_validation { "val_loss" } else { "loss" }.into());
                s.factor.get_or_insert(0.1);
                s.patience.get_or_insert(10);
                s.min_delta.get_or_insert(1e-4);
                s.min_lr.get_or_insert(0.0);
            }
        }
    }

    /// Checks made before `resolve`: keys set that the chosen kinds do not read.
    fn validate_settings(&self) -> Result<()> {
        let d = &self.data;
        let set = |present: bool, key: &str, kinds: &str| -> Result<()> {
            if present {
                bail!("data.{key} applies to kind {kinds} only; this config has kind {}", kind_name(d.kind));
            }
            Ok(())
        };
        if d.kind.is_generated() {
            set(d.path.is_some(), "path", "csv or npy")?;
            set(d.target.is_some(), "target", "csv")?;
            set(d.x.is_some(), "x", "npy")?;
            set(d.y.is_some(), "y", "npy")?;
        }
        if d.kind == DataKind::Npy {
            set(d.target.is_some(), "target", "csv")?;
        }
        let s = &self.training.lr_schedule;
        let keys: [(&str, bool, &[ScheduleKind]); 8] = [
            ("step_size", s.step_size.is_some(), &[ScheduleKind::Step]),
            ("gamma", s.gamma.is_some(), &[ScheduleKind::Step]),
            ("warmup_epochs", s.warmup_epochs.is_some(), &[ScheduleKind::Cosine]),
            ("min_lr", s.min_lr.is_some(), &[ScheduleKind::Cosine, ScheduleKind::ReduceOnPlateau]),
            ("monitor", s.monitor.is_some(), &[ScheduleKind::ReduceOnPlateau]),
            ("factor", s.factor.is_some(), &[ScheduleKind::ReduceOnPlateau]),
            ("patience", s.patience.is_some(), &[ScheduleKind::ReduceOnPlateau]),
            ("min_delta", s.min_delta.is_some(), &[ScheduleKind::ReduceOnPlateau]),
        ];
        for (key, present, kinds) in keys {
            if present && !kinds.contains(&s.kind) {
                bail!("training.lr_schedule.{key} does not apply to kind {:?}", s.kind);
            }
        }
        Ok(())
    }

    /// Stage two, on a resolved config: value checks, each naming its key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name must be a non-empty file name without '/' or a leading '.', got {:?}", self.name);
        }
        crate::device::DeviceChoice::parse(&self.device)?;
        self.validate_data()?;
        for (i, &width) in self.model.hidden.iter().enumerate() {
            if width == 0 {
                bail!("model.hidden[{i}] must be > 0, got 0 (a layer needs at least one unit)");
            }
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            bail!("model.dropout must be in [0, 1), got {}", self.model.dropout);
        }
        let t = &self.training;
        positive("training.epochs", t.epochs)?;
        positive("training.batch_size", t.batch_size)?;
        positive("training.checkpoint_every", t.checkpoint_every)?;
        if let Some(threads) = t.threads {
            positive("training.threads", threads)?;
        }
        let task = self.task();
        if self.loss().task() != task {
            bail!(
                "training.loss: {} is a {} loss, but the task is {}",
                loss_name(self.loss()),
                task_name(self.loss().task()),
                task_name(task)
            );
        }
        for metric in self.metrics() {
            if metric.task() != task {
                let why = match task {
                    Task::Regression => "needs class labels, but this is a regression task (a continuous target); use mae, mse, rmse or r2, or set task: classification",
                    Task::Classification => "measures a continuous target, but this is a classification task; use accuracy, f1 or log_loss",
                };
                bail!("training.metrics: {} {why}", metric.name());
            }
        }
        if let Some(clip) = t.gradient_clip {
            if !(clip.is_finite() && clip > 0.0) {
                bail!("training.gradient_clip must be > 0, got {clip}");
            }
        }
        self.validate_optimizer()?;
        self.validate_schedule()?;
        if let Some(es) = &t.early_stopping {
            self.check_monitor("training.early_stopping.monitor", &es.monitor)?;
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                bail!("training.early_stopping.min_delta must be >= 0, got {}", es.min_delta);
            }
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        let kind = kind_name(d.kind);
        if !(d.noise.is_finite() && d.noise >= 0.0) {
            bail!("data.noise must be >= 0, got {}", d.noise);
        }
        for (key, fraction) in [("validation_split", d.validation_split), ("test_split", d.test_split)] {
            if !(0.0..1.0).contains(&fraction) {
                bail!("data.{key} must be in [0, 1), got {fraction}");
            }
        }
        if d.validation_split + d.test_split >= 1.0 {
            bail!(
                "data.validation_split + data.test_split must leave rows for training, got {} + {}",
                d.validation_split,
                d.test_split
            );
        }
        let task = self.task();
        if d.standardize_target && task == Task::Classification {
            bail!("data.standardize_target applies to regression only; class labels are not standardised");
        }
        if d.kind.is_generated() {
            positive("data.samples", d.samples)?;
            let features = match &d.features {
                Some(Features::Count(n)) => *n,
                Some(Features::Columns(_)) => {
                    bail!("data.features: kind {kind} takes a number of features, not column names")
                }
                None => 10,
            };
            positive("data.features", features)?;
            positive("data.targets", d.targets)?;
            let generated_task = if d.kind == DataKind::Moons { Task::Classification } else { Task::Regression };
            if task != generated_task {
                bail!("data.kind {kind} makes {} data, but the task is {}", task_name(generated_task), task_name(task));
            }
            match d.kind {
                DataKind::Friedman1 if features < 5 => {
                    bail!("data.features must be >= 5 for friedman1, got {features}")
                }
                DataKind::Moons if features != 2 => {
                    bail!("data.features must be 2 for moons (points in the plane), got {features}")
                }
                DataKind::Friedman1 | DataKind::Moons if d.targets != 1 => {
                    bail!("data.targets must be 1 for {kind}, got {}", d.targets)
                }
                _ => {}
            }
        }
        match d.kind {
            DataKind::Csv => {
                if d.path.is_none() {
                    bail!("data.path is required for kind csv");
                }
                let Some(target) = &d.target else {
                    bail!("data.target is required for kind csv: the column (or list of columns) to predict")
                };
                if target.names().is_empty() || target.names().iter().any(String::is_empty) {
                    bail!("data.target must name at least one column");
                }
                if task == Task::Classification && target.names().len() != 1 {
                    bail!("data.target: classification takes one label column, got {}", target.names().len());
                }
                if let Some(Features::Count(_)) = d.features {
                    bail!("data.features: for kind csv, a list of column names (default: every column but the target)");
                }
                if d.delimiter.len() != 1 {
                    bail!("data.delimiter must be one ASCII character, got {:?}", d.delimiter);
                }
            }
            DataKind::Npy => match (&d.path, &d.x, &d.y) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => bail!("data: kind npy takes either x and y (.npy files) or path (one .npz with arrays x and y)"),
            },
            _ => {}
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<()> {
        let o = &self.training.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            bail!("training.optimizer.lr must be > 0, got {}", o.lr);
        }
        for (key, beta) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                bail!("training.optimizer.{key} must be in [0, 1), got {beta}");
            }
        }
        if !(o.eps().is_finite() && o.eps() > 0.0) {
            bail!("training.optimizer.eps must be > 0, got {}", o.eps());
        }
        if !(o.weight_decay().is_finite() && o.weight_decay() >= 0.0) {
            bail!("training.optimizer.weight_decay must be >= 0, got {}", o.weight_decay());
        }
        if !(0.0..1.0).contains(&o.momentum) {
            bail!("training.optimizer.momentum must be in [0, 1), got {}", o.momentum);
        }
        if o.kind != OptimizerKind::Sgd && (o.momentum != 0.0 || o.nesterov) {
            bail!("training.optimizer.momentum and nesterov apply to sgd only; adam uses beta1");
        }
        if o.nesterov && o.momentum == 0.0 {
            bail!("training.optimizer.nesterov needs momentum > 0");
        }
        Ok(())
    }

    fn validate_schedule(&self) -> Result<()> {
        let s = &self.training.lr_schedule;
        let key = "training.lr_schedule";
        if s.step_size == Some(0) {
            bail!("{key}.step_size must be > 0, got 0");
        }
        for (name, value) in [("gamma", s.gamma), ("factor", s.factor)] {
            if let Some(v) = value {
                if !(v > 0.0 && v < 1.0) {
                    bail!("{key}.{name} must be in (0, 1), got {v}");
                }
            }
        }
        for (name, value) in [("min_lr", s.min_lr), ("min_delta", s.min_delta)] {
            if let Some(v) = value {
                if !(v.is_finite() && v >= 0.0) {
                    bail!("{key}.{name} must be >= 0, got {v}");
                }
            }
        }
        if let Some(min_lr) = s.min_lr {
            if min_lr >= self.training.optimizer.lr {
                bail!(
                    "{key}.min_lr must be below training.optimizer.lr ({}), got {min_lr}",
                    self.training.optimizer.lr
                );
            }
        }
        if let Some(warmup) = s.warmup_epochs {
            if warmup >= self.training.epochs {
                bail!("{key}.warmup_epochs must be below training.epochs ({}), got {warmup}", self.training.epochs);
            }
        }
        if let Some(monitor) = &s.monitor {
            self.check_monitor(&format!("{key}.monitor"), monitor)?;
        }
        Ok(())
    }

    /// The columns of metrics.csv that a monitor may watch.
    pub fn monitorable(&self) -> Vec<String> {
        let mut names = vec!["loss".to_string()];
        names.extend(self.metrics().iter().map(|m| m.name().to_string()));
        if self.has_validation() {
            let val: Vec<String> = names.iter().map(|n| format!("val_{n}")).collect();
            names.extend(val);
        }
        names
    }

    fn check_monitor(&self, key: &str, monitor: &str) -> Result<()> {
        let names = self.monitorable();
        if names.iter().any(|n| n == monitor) {
            return Ok(());
        }
        let hint = if monitor.starts_with("val_") && !self.has_validation() {
            " (val_* needs data.validation_split > 0)".to_string()
        } else {
            String::new()
        };
        bail!("{key}: {monitor:?} is not a metrics.csv column; choose one of {}{hint}", names.join(", "))
    }

    /// The resolved config as YAML, every default filled in.
    pub fn to_yaml(&self) -> Result<String> {
        let mut resolved = self.clone();
        resolved.resolve();
        Ok(serde_yaml::to_string(&resolved)?)
    }
}

/// A value as the user writes it in YAML (`cosine`, `adam`), for messages.
pub fn yaml_name<T: Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn kind_name(kind: DataKind) -> String {
    serde_yaml::to_string(&kind).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn loss_name(loss: Loss) -> String {
    serde_yaml::to_string(&loss).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn task_name(task: Task) -> &'static str {
    match task {
        Task::Regression => "regression",
        Task::Classification => "classification",
    }
}

fn positive(key: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("{key} must be > 0, got 0");
    }
    Ok(())
}

/// Applies one `KEY=VALUE` (dotted key, YAML value) to the config tree. Unknown keys are
/// left for deserialisation to reject, so that they are reported like any other.
fn apply_override(tree: &mut Value, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .with_context(|| format!("--set {assignment}: expected KEY=VALUE, e.g. training.epochs=5"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {assignment}: the key must be a dotted path such as training.optimizer.lr");
    }
    let value: Value = serde_yaml::from_str(raw)
        .map_err(|e| anyhow::anyhow!("--set {key}: the value {raw:?} is not valid YAML: {e}"))?;
    let mut node = tree;
    let segments: Vec<&str> = key.split('.').collect();
    for (depth, segment) in segments.iter().enumerate() {
        let Value::Mapping(map) = node else {
            bail!("--set {key}: {} is not a section, it holds a value", segments[..depth].join("."));
        };
        let slot = Value::String((*segment).to_string());
        if depth + 1 == segments.len() {
            map.insert(slot, value);
            return Ok(());
        }
        node = map.entry(slot).or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Rewrites a serde error as `key: problem at line L column C`, naming the nearest valid key
/// or value when the problem is an unknown one.
fn explain(err: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = err.inner();
    let at = inner.location().map(|l| format!(" at line {} column {}", l.line(), l.column())).unwrap_or_default();
    // serde_yaml puts the enclosing path in front and the location at the end; both are
    // reported by us instead.
    let mut message = inner.to_string();
    if let Some(stripped) = message.strip_suffix(&at) {
        message = stripped.to_string();
    }
    let parent = path.rsplit_once('.').map(|(p, _)| p.to_string()).unwrap_or_default();
    for prefix in [&path, &parent] {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
    }
    let suggestion = nearest(&message);
    if message.starts_with("unknown field") {
        let suggestion = suggestion
            .map(|s| if parent.is_empty() { s } else { format!("{parent}.{s}") })
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return format!("unknown key `{path}`{at}{suggestion}");
    }
    if let (true, Some(s)) = (message.starts_with("unknown variant"), suggestion) {
        let bad = backticked(&message).into_iter().next().unwrap_or_default();
        return format!("{path}: unknown value `{bad}`{at}; did you mean `{s}`? ({message})");
    }
    if message.contains("untagged enum Features") {
        message = "expected a number of features or a list of column names".into();
    } else if message.contains("untagged enum Columns") {
        message = "expected a column name or a list of column names".into();
    }
    // "expected struct TrainingConfig" names a Rust type; the user wrote YAML.
    if let Some(i) = message.find("expected struct ") {
        message = format!("{}expected a mapping of keys", &message[..i]);
    }
    if path.is_empty() {
        format!("{message}{at}")
    } else {
        format!("{path}: {message}{at}")
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" messages: the expected name
/// closest to `x`.
fn nearest(message: &str) -> Option<String> {
    let names = backticked(message);
    let (bad, expected) = names.split_first()?;
    expected.iter().min_by_key(|candidate| strsim::levenshtein(bad, candidate)).cloned()
}

fn backticked(message: &str) -> Vec<String> {
    message.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "t.yaml", &[])
    }

    fn parse_err(text: &str) -> String {
        parse(text).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("accepted: {text}"))
    }

    fn invalid(overrides: &[&str]) -> String {
        let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(None, &sets).expect_err("is invalid").to_string()
    }

    #[test]
    fn embedded_default_is_the_keras_example() {
        let cfg = Config::load(None, &[]).unwrap();
        assert_eq!(cfg.name, "keras_example");
        assert_eq!(cfg.data.samples, 1000);
        assert_eq!(cfg.model.hidden, vec![10]);
        assert_eq!(cfg.training.batch_size, 32);
        assert_eq!(cfg.training.optimizer.eps(), 1e-7);
        assert_eq!(cfg.training.optimizer.semantics, Semantics::Keras);
        let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/keras_example.yaml")).unwrap();
        assert_eq!(file, KERAS_EXAMPLE);
    }

    #[test]
    fn omitted_keys_take_defaults() {
        let cfg = parse("name: tiny\n").unwrap();
        assert_eq!(cfg.training.epochs, 100);
        assert_eq!(cfg.training.optimizer.kind, OptimizerKind::Adam);
        let torch = parse("training: {optimizer: {semantics: torch}}\n").unwrap();
        assert_eq!(torch.training.optimizer.eps(), 1e-8);
    }

    #[test]
    fn overrides_set_nested_keys_as_yaml() {
        let sets = ["training.epochs=5".to_string(), "model.hidden=[4, 3]".to_string()];
        let cfg = Config::parse(KERAS_EXAMPLE, "k.yaml", &sets).unwrap();
        assert_eq!(cfg.training.epochs, 5);
        assert_eq!(cfg.model.hidden, vec![4, 3]);
    }

    #[test]
    fn unknown_override_key_names_nearest() {
        let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epoch=5".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown key `training.epoch`"), "{err}");
        assert!(err.contains("did you mean `training.epochs`?"), "{err}");
    }

    #[test]
    fn override_without_equals_is_rejected() {
        let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epochs".into()]).unwrap_err().to_string();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_names_key_line_and_nearest() {
        let err = parse_err("name: x\ntraining:\n  batchsize: 3\n");
        assert!(err.starts_with("t.yaml: unknown key `training.batchsize` at line 3 column 3"), "{err}");
        assert!(err.ends_with("did you mean `training.batch_size`?"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse_err("training:\n  epochs: ten\n");
        assert!(err.contains("training.epochs: invalid type: string \"ten\""), "{err}");
        assert!(err.contains("line 2 column 11"), "{err}");
    }

    #[test]
    fn unknown_value_names_nearest_variant() {
        let err = parse_err("model:\n  activation: relux\n");
        assert!(err.contains("model.activation: unknown value `relux`"), "{err}");
        assert!(err.contains("did you mean `relu`?"), "{err}");
    }

    #[test]
    fn syntax_error_reports_line_and_column() {
        let err = parse_err("name: x\ntraining: [1, 2\n");
        assert!(err.contains("YAML syntax error"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn empty_file_is_rejected() {
        assert!(parse_err("  \n").contains("empty"));
    }

    #[test]
    fn invalid_values_name_their_key() {
        assert_eq!(invalid(&["training.epochs=0"]), "training.epochs must be > 0, got 0");
        assert_eq!(invalid(&["training.batch_size=0"]), "training.batch_size must be > 0, got 0");
        assert!(invalid(&["training.optimizer.lr=0"]).starts_with("training.optimizer.lr must be > 0"));
        assert!(invalid(&["training.optimizer.lr=-1e-3"]).starts_with("training.optimizer.lr must be > 0"));
        assert!(invalid(&["model.hidden=[10, 0]"]).starts_with("model.hidden[1] must be > 0"));
        assert!(invalid(&["training.optimizer.beta2=1.0"]).starts_with("training.optimizer.beta2 must be in [0, 1)"));
        assert!(invalid(&["device=gpu"]).contains("device"));
    }

    #[test]
    fn accuracy_on_regression_is_rejected_with_reason() {
        let err = invalid(&["training.metrics=[mae, accuracy]"]);
        assert!(err.starts_with("training.metrics: accuracy needs class labels"), "{err}");
        assert!(err.contains("regression"), "{err}");
    }

    #[test]
    fn task_follows_loss_or_data() {
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Config::parse("name: t\n", "t.yaml", &sets).unwrap()
        };
        assert_eq!(load(&[]).task(), Task::Regression);
        assert_eq!(load(&["training.loss=bce"]).task(), Task::Classification);
        assert_eq!(load(&["training.metrics=[f1]"]).task(), Task::Regression, "metrics do not decide the task");
        let moons = load(&["data.kind=moons"]);
        assert_eq!(
            (moons.task(), moons.loss(), moons.metrics()),
            (Task::Classification, Loss::CrossEntropy, vec![Metric::Accuracy])
        );
    }

    #[test]
    fn keys_for_other_kinds_are_rejected() {
        assert!(invalid(&["training.lr_schedule.gamma=0.5"])
            .contains("training.lr_schedule.gamma does not apply to kind Constant"));
        assert!(invalid(&["data.path=x.csv"]).contains("data.path applies to kind csv or npy only"));
        assert!(invalid(&["data.kind=csv", "data.path=x.csv"]).contains("data.target is required for kind csv"));
        assert!(
            invalid(&["data.kind=moons", "training.loss=mse"]).contains("data.kind moons makes classification data")
        );
        assert!(invalid(&["data.validation_split=0.5", "data.test_split=0.5"]).contains("must leave rows for training"));
        assert!(invalid(&["data.features=[a, b]"]).contains("takes a number of features, not column names"));
    }

    #[test]
    fn monitors_must_be_metrics_columns() {
        let err = invalid(&["training.early_stopping={monitor: val_loss}"]);
        assert!(
            err.contains("\"val_loss\" is not a metrics.csv column") && err.contains("needs data.validation_split > 0"),
            "{err}"
        );
        let ok = Config::load(
            None,
            &["data.validation_split=0.2".into(), "training.early_stopping={monitor: val_mae, patience: 3}".into()],
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn resolved_yaml_round_trips() {
        // Without an explicit eps, the resolved file carries the semantics' default.
        let mut cfg = parse("name: x\ntraining: {optimizer: {semantics: torch, kind: adamw}}\n").unwrap();
        let yaml = cfg.to_yaml().unwrap();
        cfg.resolve();
        let again = parse(&yaml).unwrap();
        assert_eq!(again, cfg);
        assert_eq!(again.training.optimizer.eps, Some(1e-8));
        assert_eq!(again.training.optimizer.weight_decay, Some(0.01));
        assert_eq!(again.data.features, Some(Features::Count(10)));
    }
}
