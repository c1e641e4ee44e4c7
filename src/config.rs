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
    /// Seeds data generation, weight initialisation and shuffling.
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub kind: DataKind,
    pub samples: usize,
    pub features: usize,
    pub targets: usize,
    /// Standard deviation of the noise added to a `linear` target.
    pub noise: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// x ~ N(0, 1), y ~ N(0, 1): the Keras example; nothing to learn.
    RandomNormal,
    /// x ~ N(0, 1), y = x W + noise with W ~ N(0, 1/features) fixed by the seed.
    Linear,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Widths of the hidden layers; the output width is `data.targets`.
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub init: Init,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Keras Dense: glorot_uniform kernels, zero biases.
    Keras,
    /// PyTorch nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    Torch,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub shuffle: bool,
    pub loss: Loss,
    pub metrics: Vec<Metric>,
    pub optimizer: OptimizerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Mse,
    Mae,
    /// Huber with delta 1, as Keras's and PyTorch's defaults.
    Huber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Mae,
    Mse,
    Rmse,
    /// Only meaningful for classification; rejected on a regression task.
    Accuracy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Defaults to the semantics' own: 1e-7 for Keras, 1e-8 for PyTorch.
    pub eps: Option<f64>,
    pub weight_decay: f64,
    /// SGD momentum; 0 is plain SGD.
    pub momentum: f64,
    pub semantics: Semantics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Semantics {
    /// Keras: eps outside the bias correction, decoupled weight decay.
    Keras,
    /// PyTorch: eps added to the bias-corrected sqrt(v), L2 weight decay in the gradient.
    Torch,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "run".into(),
            seed: 42,
            device: "auto".into(),
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
            features: 10,
            targets: 1,
            noise: 0.1,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: vec![10],
            activation: Activation::Relu,
            init: Init::Keras,
            init_from: None,
        }
    }
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 100,
            batch_size: 32,
            shuffle: true,
            loss: Loss::Mse,
            metrics: vec![Metric::Mae],
            optimizer: OptimizerConfig::default(),
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
            weight_decay: 0.0,
            momentum: 0.0,
            semantics: Semantics::Keras,
        }
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
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Mae => "mae",
            Metric::Mse => "mse",
            Metric::Rmse => "rmse",
            Metric::Accuracy => "accuracy",
        }
    }
}

impl Config {
    /// Reads `path` (or the embedded Keras example when `None`), applies `--set KEY=VALUE`
    /// overrides, and validates the result. Every error names the file and the key.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                (p.display().to_string(), text)
            }
            None => (
                "embedded keras_example.yaml".to_string(),
                KERAS_EXAMPLE.to_string(),
            ),
        };
        let config = Config::parse(&text, &source, overrides)?;
        config.validate()?;
        Ok(config)
    }

    /// Stage one: YAML text plus overrides into a `Config`, without value checks.
    pub fn parse(text: &str, source: &str, overrides: &[String]) -> Result<Config> {
        if text.trim().is_empty() {
            bail!("{source}: the config file is empty");
        }
        let mut tree: Value = serde_yaml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{source}: YAML syntax error: {e}"))?;
        if !tree.is_mapping() {
            bail!("{source}: expected a mapping of keys (name, data, model, training, ...) at the top level");
        }
        if overrides.is_empty() {
            // Deserialising the text itself, not the tree, keeps line and column in errors.
            let de = serde_yaml::Deserializer::from_str(text);
            return serde_path_to_error::deserialize(de)
                .map_err(|e| anyhow::anyhow!("{source}: {}", explain(&e)));
        }
        for assignment in overrides {
            apply_override(&mut tree, assignment)?;
        }
        serde_path_to_error::deserialize(tree)
            .map_err(|e| anyhow::anyhow!("{source} with --set: {}", explain(&e)))
    }

    /// Stage two: value checks, each naming its key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!(
                "name must be a non-empty file name without '/' or a leading '.', got {:?}",
                self.name
            );
        }
        crate::device::DeviceChoice::parse(&self.device)?;
        let d = &self.data;
        positive("data.samples", d.samples)?;
        positive("data.features", d.features)?;
        positive("data.targets", d.targets)?;
        if !(d.noise.is_finite() && d.noise >= 0.0) {
            bail!("data.noise must be >= 0, got {}", d.noise);
        }
        for (i, &width) in self.model.hidden.iter().enumerate() {
            if width == 0 {
                bail!("model.hidden[{i}] must be > 0, got 0 (a layer needs at least one unit)");
            }
        }
        let t = &self.training;
        positive("training.epochs", t.epochs)?;
        positive("training.batch_size", t.batch_size)?;
        if t.metrics.contains(&Metric::Accuracy) {
            bail!(
                "training.metrics: accuracy needs class labels, but this is a regression task \
                 (loss {:?} on a continuous target); use mae, mse or rmse",
                t.loss
            );
        }
        let o = &t.optimizer;
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
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            bail!(
                "training.optimizer.weight_decay must be >= 0, got {}",
                o.weight_decay
            );
        }
        if !(0.0..1.0).contains(&o.momentum) {
            bail!(
                "training.optimizer.momentum must be in [0, 1), got {}",
                o.momentum
            );
        }
        if o.kind == OptimizerKind::Adam && o.momentum != 0.0 {
            bail!("training.optimizer.momentum applies to sgd only; adam uses beta1");
        }
        Ok(())
    }

    /// The resolved config as YAML, every default filled in.
    pub fn to_yaml(&self) -> Result<String> {
        let mut resolved = self.clone();
        resolved.training.optimizer.eps = Some(self.training.optimizer.eps());
        Ok(serde_yaml::to_string(&resolved)?)
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
    let (key, raw) = assignment.split_once('=').with_context(|| {
        format!("--set {assignment}: expected KEY=VALUE, e.g. training.epochs=5")
    })?;
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
            bail!(
                "--set {key}: {} is not a section, it holds a value",
                segments[..depth].join(".")
            );
        };
        let slot = Value::String((*segment).to_string());
        if depth + 1 == segments.len() {
            map.insert(slot, value);
            return Ok(());
        }
        node = map
            .entry(slot)
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Rewrites a serde error as `key: problem at line L column C`, naming the nearest valid key
/// or value when the problem is an unknown one.
fn explain(err: &serde_path_to_error::Error<serde_yaml::Error>) -> String {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = err.inner();
    let at = inner
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    // serde_yaml puts the enclosing path in front and the location at the end; both are
    // reported by us instead.
    let mut message = inner.to_string();
    if let Some(stripped) = message.strip_suffix(&at) {
        message = stripped.to_string();
    }
    let parent = path
        .rsplit_once('.')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    for prefix in [&path, &parent] {
        if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
            message = rest.to_string();
            break;
        }
    }
    let suggestion = nearest(&message);
    if message.starts_with("unknown field") {
        let suggestion = suggestion
            .map(|s| {
                if parent.is_empty() {
                    s
                } else {
                    format!("{parent}.{s}")
                }
            })
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return format!("unknown key `{path}`{at}{suggestion}");
    }
    if let (true, Some(s)) = (message.starts_with("unknown variant"), suggestion) {
        let bad = backticked(&message).into_iter().next().unwrap_or_default();
        return format!("{path}: unknown value `{bad}`{at}; did you mean `{s}`? ({message})");
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
    expected
        .iter()
        .min_by_key(|candidate| strsim::levenshtein(bad, candidate))
        .cloned()
}

fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "t.yaml", &[])
    }

    fn parse_err(text: &str) -> String {
        parse(text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("accepted: {text}"))
    }

    fn invalid(overrides: &[&str]) -> String {
        let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = Config::parse(KERAS_EXAMPLE, "k.yaml", &sets).expect("parses");
        cfg.validate().expect_err("validates").to_string()
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
        let file = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/keras_example.yaml"
        ))
        .unwrap();
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
        let sets = [
            "training.epochs=5".to_string(),
            "model.hidden=[4, 3]".to_string(),
        ];
        let cfg = Config::parse(KERAS_EXAMPLE, "k.yaml", &sets).unwrap();
        assert_eq!(cfg.training.epochs, 5);
        assert_eq!(cfg.model.hidden, vec![4, 3]);
    }

    #[test]
    fn unknown_override_key_names_nearest() {
        let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epoch=5".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `training.epoch`"), "{err}");
        assert!(err.contains("did you mean `training.epochs`?"), "{err}");
    }

    #[test]
    fn override_without_equals_is_rejected() {
        let err = Config::parse(KERAS_EXAMPLE, "k.yaml", &["training.epochs".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected KEY=VALUE"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_names_key_line_and_nearest() {
        let err = parse_err("name: x\ntraining:\n  batchsize: 3\n");
        assert!(
            err.starts_with("t.yaml: unknown key `training.batchsize` at line 3 column 3"),
            "{err}"
        );
        assert!(
            err.ends_with("did you mean `training.batch_size`?"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let err = parse_err("training:\n  epochs: ten\n");
        assert!(
            err.contains("training.epochs: invalid type: string \"ten\""),
            "{err}"
        );
        assert!(err.contains("line 2 column 11"), "{err}");
    }

    #[test]
    fn unknown_value_names_nearest_variant() {
        let err = parse_err("model:\n  activation: relux\n");
        assert!(
            err.contains("model.activation: unknown value `relux`"),
            "{err}"
        );
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
        assert_eq!(
            invalid(&["training.epochs=0"]),
            "training.epochs must be > 0, got 0"
        );
        assert_eq!(
            invalid(&["training.batch_size=0"]),
            "training.batch_size must be > 0, got 0"
        );
        assert!(
            invalid(&["training.optimizer.lr=0"]).starts_with("training.optimizer.lr must be > 0")
        );
        assert!(invalid(&["training.optimizer.lr=-1e-3"])
            .starts_with("training.optimizer.lr must be > 0"));
        assert!(invalid(&["model.hidden=[10, 0]"]).starts_with("model.hidden[1] must be > 0"));
        assert!(invalid(&["training.optimizer.beta2=1.0"])
            .starts_with("training.optimizer.beta2 must be in [0, 1)"));
        assert!(invalid(&["device=gpu"]).contains("device"));
    }

    #[test]
    fn accuracy_on_regression_is_rejected_with_reason() {
        let err = invalid(&["training.metrics=[mae, accuracy]"]);
        assert!(
            err.starts_with("training.metrics: accuracy needs class labels"),
            "{err}"
        );
        assert!(err.contains("regression"), "{err}");
    }

    #[test]
    fn resolved_yaml_round_trips() {
        // Without an explicit eps, the resolved file carries the semantics' default.
        let cfg = parse("name: x\ntraining: {optimizer: {semantics: torch}}\n").unwrap();
        let yaml = cfg.to_yaml().unwrap();
        let mut expected = cfg.clone();
        expected.training.optimizer.eps = Some(1e-8);
        assert_eq!(parse(&yaml).unwrap(), expected);
    }
}
