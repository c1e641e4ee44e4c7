//! Experiment configuration: a YAML file (or the embedded Keras example) plus `--set`
//! overrides. This file is the schema: every key, what it means and its plain default
//! (`data` holds the `data:` section's, the largest).
//! Around it, one job each: `load` reads text and overrides and rewrites serde's errors to
//! name the key, its line and the nearest valid name; `resolve` owns the defaults that depend
//! on other keys and fills them in; `validate` checks values, naming the offending key;
//! `yaml` spells values as YAML does and writes the resolved config.

use serde::{Deserialize, Serialize};

mod data;
mod load;
mod locate;
mod logging;
mod model;
mod models;
mod numeric;
mod read;
mod resolve;
mod size;
mod text;
mod validate;
mod yaml;

#[cfg(test)]
mod tests;

pub use data::*;
pub use load::{nearest, nearest_name};
pub use logging::{LoggingConfig, MlflowConfig, TensorBoard, MLFLOW_TRACKING_URI};
pub use model::*;
pub use models::{kind_reads, kinds_reading, KIND_KEYS};
pub use models::{name_pattern, FtTransformerKnobs, RESNET_DEFAULTS, TABM_DEFAULTS};
pub use numeric::{NumericEmbedding, NumericEmbeddingKind, PERIODIC_DEFAULTS, PIECEWISE_LINEAR_DEFAULTS};
pub use read::{prepare as prepare_yaml, read_file, read_yaml_file, MAX_CONFIG_BYTES, MAX_NESTING};
pub use text::{
    TextEncoder, TextEncoderKind, TokenizerConfig, TokenizerKind, MAX_LENGTH, TEXT_DEFAULTS, TOKENIZER_DEFAULTS,
};
pub use validate::{Invalid, MAX_COUNT, MAX_NAME_BYTES, MAX_THREADS};
pub use yaml::{yaml_difference, yaml_name};

/// The embedded default: byte for byte `configs/keras_example.yaml`.
pub const KERAS_EXAMPLE: &str = include_str!("../../configs/keras_example.yaml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Names the run directory (`runs/<name>-<timestamp>`).
    pub name: String,
    /// Seeds data generation, splits, weight initialisation, dropout and shuffling.
    pub seed: u64,
    pub device: DeviceChoice,
    /// `regression` or `classification`; when absent, inferred from the loss, else the data
    /// (moons, or a CSV label column holding text), else regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    /// Data-parallel training, when a launcher (torchrun, Slurm's srun) starts several
    /// processes; a single process ignores it.
    pub distributed: DistributedConfig,
    /// Where progress goes besides the run directory: TensorBoard, MLflow (`logging.rs`).
    #[serde(skip_serializing_if = "LoggingConfig::is_off")]
    pub logging: LoggingConfig,
}

/// `distributed`: how the processes of a data-parallel run talk (see docs/distributed.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// `auto` (NCCL on CUDA, Gloo on CPU), `gloo` or `nccl`.
    pub backend: BackendChoice,
    /// Seconds to wait for a peer (joining, or in a collective) before failing with an
    /// error that says which; a missing or dead process never hangs the others.
    pub timeout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    Auto,
    Gloo,
    Nccl,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        // PyTorch waits 10 minutes for NCCL and 30 for Gloo; five is plenty for a peer to
        // start or finish a step, and short enough that a lost one is noticed.
        DistributedConfig { backend: BackendChoice::Auto, timeout: 300.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

/// Where a run lives: `auto` (CUDA when available), `cpu`, `cuda` (that is, `cuda:0`) or
/// `cuda:N`. Parsed once, when the config is read (`yaml` holds its spelling); `resolve`
/// (in `crate::device`) asks libtorch for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
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
    /// Classification: weight each training sample's loss by its class, as Keras's
    /// `fit(class_weight=...)`. Absent: no weighting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_weight: Option<ClassWeight>,
    /// The arithmetic of the training step's matmuls and activations (`Precision`).
    pub precision: Precision,
    /// Whether a CUDA run captures its training step in a CUDA graph (`CudaGraphs`).
    pub cuda_graphs: CudaGraphs,
}

/// `training.precision`. `bf16` is mixed precision as `torch.autocast(dtype=torch.bfloat16)`
/// does it: the matmuls and activations of the training step run in bfloat16 on bf16 copies
/// of the weights, while the weights themselves (`Mlp::params`), the gradients the optimizer
/// sees, the optimizer state, the loss and the metrics stay float32, and so do checkpoints,
/// exports and evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    Bf16,
}

/// `training.cuda_graphs`: `on` captures one whole training step in a CUDA graph and replays
/// it (an error off CUDA or where the step cannot be captured); `auto` does so where kernel
/// launches dominate a step (see `train::graph`) and the step can be captured; `off` never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CudaGraphs {
    Auto,
    On,
    Off,
}

/// `training.class_weight`. Spelled in YAML as `balanced` or a mapping `{label: weight}`
/// (`yaml` reads and writes it); the weights in force follow from the training part's
/// labels (`ClassWeight::weights`).
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeight {
    /// scikit-learn's `balanced`: n_samples / (n_classes * count of the class), counted
    /// over the training part.
    Balanced,
    /// Weights by class label, the label's text as the data holds it; classes not listed
    /// weigh 1, as in Keras. In the order written, so that messages follow the user's.
    Labels(Vec<(String, f64)>),
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
    /// Per-group learning rate and weight decay (`torch.optim` param groups); parameters
    /// in no group use the settings above.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub param_groups: Vec<ParamGroup>,
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
/// The defaults are applied in one place, [`LrSchedule::resolved`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Constant,
    Step,
    Cosine,
    ReduceOnPlateau,
}

/// A schedule as it runs: its kind's keys, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Schedule {
    Constant,
    Step { step_size: usize, gamma: f64 },
    Cosine { warmup_epochs: usize, min_lr: f64 },
    ReduceOnPlateau { monitor: String, factor: f64, patience: usize, min_delta: f64, min_lr: f64 },
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
            device: DeviceChoice::Auto,
            task: None,
            data: DataConfig::default(),
            model: ModelConfig::default(),
            training: TrainingConfig::default(),
            distributed: DistributedConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: DataKind::RandomNormal,
            samples: None,
            features: None,
            targets: None,
            noise: None,
            path: None,
            target: None,
            delimiter: None,
            x: None,
            y: None,
            missing: Missing::Error,
            validation_split: 0.0,
            test_split: 0.0,
            standardize: None,
            categorical: None,
            min_frequency: None,
            categorical_encoding: None,
            standardize_target: false,
            text: None,
            tokenizer: None,
        }
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
            class_weight: None,
            precision: Precision::Fp32,
            cuda_graphs: CudaGraphs::Auto,
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
            param_groups: Vec::new(),
        }
    }
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping { monitor: "val_loss".into(), patience: 0, min_delta: 0.0, mode: Mode::Auto, restore_best: false }
    }
}
