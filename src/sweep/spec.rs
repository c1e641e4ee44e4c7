//! The sweep file: what to search, how, and by which metric. Read with
//! `deny_unknown_fields` like a train config, then checked as a whole before any trial
//! runs: every parameter path is a config key, every grid value and every sampled trial is
//! a valid config, the metric is a metrics.csv column of every trial.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use super::asha::{Asha, Mode};
use super::kinds;
use super::space::{self, Distribution, Method, Space, Trial};
use crate::config::{self, Config, Metric, ModelKind};

/// The most trials a sweep may have: every worker lists them all (and checks each one's
/// config) before it starts, so a count beyond this would take hours or exhaust memory
/// before the first trial ran.
pub const MAX_TRIALS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A config file that every trial starts from (`--set` applies to it); or `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<std::path::PathBuf>,
    /// The config inline, instead of `base`. The resolved sweep.yaml always holds it here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Mapping>,
    /// `--set KEY=VALUE` overrides of the base, applied before each trial's parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    pub method: Method,
    /// random: how many trials to sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<usize>,
    /// random: seeds the sampling (not the trials, which keep the config's `seed`).
    #[serde(default)]
    pub seed: u64,
    /// Dotted config keys, each with `values` or a `distribution`, in the order written.
    pub parameters: Mapping,
    /// A metrics.csv column; default `val_loss` with a validation split, else `loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// `min` or `max`; default from the metric, as early stopping's `mode: auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_termination: Option<EarlyTermination>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum EarlyTermination {
    /// Asynchronous successive halving (Li et al., MLSys 2020).
    Asha { min_epochs: usize, reduction_factor: usize },
}

/// A sweep file, read and checked: the spec with its base config inline, the parameters
/// parsed, and the base config's text (for every trial's `Config::load_text`).
#[derive(Debug, Clone)]
pub struct Sweep {
    pub spec: Spec,
    pub parameters: Vec<(String, Space)>,
    pub metric: String,
    pub mode: Mode,
    /// The base config's `training.epochs`: every trial's budget (ASHA's last rung).
    pub epochs: usize,
    base_text: String,
    base_source: String,
    base_tree: Mapping,
}

impl Sweep {
    /// Reads a sweep file; `set` are the command's `--set` overrides of the base config.
    pub fn load(path: &Path, set: &[String]) -> Result<Sweep> {
        let source = path.display().to_string();
        let text = config::read_yaml_file(path, "sweep file")?;
        let mut spec = parse(&text, &source)?;
        spec.set.extend(set.iter().cloned());
        let (base_text, base_source) = match (&spec.base, &spec.config) {
            (Some(_), Some(_)) => bail!("{source}: set base (a config file) or config (inline), not both"),
            (None, None) => bail!("{source}: base: missing; name the config file every trial starts from (or write it inline under config:)"),
            (Some(base), None) => {
                let text = config::read_file(base).with_context(|| format!("{source}: base"))?;
                (text, base.display().to_string())
            }
            (None, Some(config)) => (serde_yaml::to_string(config)?, format!("{source} config")),
        };
        // sweep.yaml carries the base inline, so that the sweep directory holds all it needs
        // (a Slurm worker on another node, a later continuation) and a changed base file is
        // noticed rather than silently mixed into one table.
        let tree: Value = serde_yaml::from_str(config::prepare_yaml(&base_text, &base_source)?)
            .map_err(|e| anyhow!("{base_source}: YAML syntax error: {e}"))?;
        spec.config = match tree {
            Value::Mapping(m) => Some(m),
            _ => bail!("{base_source}: expected a mapping of config keys"),
        };
        spec.base = None;
        Sweep::check(spec, base_text, base_source, &source)
    }

    /// The resolved sweep a sweep directory's `sweep.yaml` holds.
    pub fn load_resolved(path: &Path) -> Result<Sweep> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
        let spec = parse(&text, &source)?;
        let config = spec.config.clone().with_context(|| format!("{source}: config: missing"))?;
        let base_text = serde_yaml::to_string(&config)?;
        Sweep::check(spec, base_text, format!("{source} config"), &source)
    }

    fn check(mut spec: Spec, base_text: String, base_source: String, source: &str) -> Result<Sweep> {
        let base = Config::load_text(&base_text, &base_source, &spec.set, false)?;
        let parameters = parameters(&spec, source)?;
        count(&spec, &parameters, source)?;
        match (spec.method, spec.trials) {
            (Method::Grid, Some(_)) => {
                bail!("{source}: trials: only method random samples a number of trials; a grid runs every combination")
            }
            (Method::Random, None) => {
                bail!("{source}: trials: missing; method random needs the number of trials to sample")
            }
            (Method::Random, Some(0)) => bail!("{source}: trials must be > 0, got 0"),
            _ => {}
        }
        let metric = spec.metric.clone().unwrap_or_else(|| {
            if base.monitorable().iter().any(|m| m == "val_loss") { "val_loss" } else { "loss" }.to_string()
        });
        let mode = spec.mode.unwrap_or(if Metric::higher_is_better(&metric) { Mode::Max } else { Mode::Min });
        if let Some(EarlyTermination::Asha { min_epochs, reduction_factor }) = &spec.early_termination {
            if *min_epochs == 0 {
                bail!("{source}: early_termination.min_epochs must be > 0, got 0");
            }
            if *reduction_factor < 2 {
                bail!("{source}: early_termination.reduction_factor must be >= 2, got {reduction_factor}");
            }
            if let Some((name, _)) = parameters.iter().find(|(name, _)| name == "training.epochs" || name == "training")
            {
                bail!("{source}: parameters.{name}: with early_termination, training.epochs is every trial's budget and cannot be searched");
            }
            if *min_epochs >= base.training.epochs {
                bail!(
                    "{source}: early_termination.min_epochs ({min_epochs}) must be below training.epochs ({}), the full budget",
                    base.training.epochs
                );
            }
        }
        spec.metric = Some(metric.clone());
        spec.mode = Some(mode);
        let epochs = base.training.epochs;
        let base_tree = spec.config.clone().unwrap_or_default();
        let sweep = Sweep { spec, parameters, metric, mode, epochs, base_text, base_source, base_tree };
        let trials = sweep.trials();
        sweep.check_values(&trials, source)?;
        // Every trial is a valid config with the metric among its columns, or nothing runs.
        for trial in &trials {
            let config = sweep.trial_config(trial).map_err(|e| anyhow!("{source}: trial {}: {e:#}", trial.name()))?;
            if !config.monitorable().contains(&sweep.metric) {
                bail!(
                    "{source}: metric: {:?} is not a metrics.csv column of trial {}; choose one of {}",
                    sweep.metric,
                    trial.name(),
                    config.monitorable().join(", ")
                );
            }
        }
        Ok(sweep)
    }

    /// Checks each parameter on its own, so that an error names the value rather than a
    /// trial: some model kind of the sweep's trials reads its key, and each value (or a
    /// range's ends) is valid there, under such a kind.
    fn check_values(&self, trials: &[Trial], source: &str) -> Result<()> {
        let mut kinds: Vec<ModelKind> = Vec::new();
        for kind in trials.iter().filter_map(|t| self.kind(&t.values)) {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        let names = |kinds: &[ModelKind]| kinds.iter().map(config::yaml_name).collect::<Vec<_>>().join(", ");
        for (name, space) in &self.parameters {
            let reader = kinds.iter().copied().find(|&kind| config::kind_reads(kind, name));
            if let (None, Some(readers), false) = (reader, config::kinds_reading(name), kinds.is_empty()) {
                bail!(
                    "{source}: parameters.{name}: no trial reads it: {name} applies to model.kind {}, and this sweep's trials are of kind {}",
                    names(readers),
                    names(&kinds)
                );
            }
            let values = match space {
                Space::Values { values } => values.clone(),
                Space::Distribution { distribution, min, max } => {
                    vec![space::number(*distribution, *min), space::number(*distribution, *max)]
                }
            };
            for value in values {
                let mut assigned = vec![(name.clone(), value.clone())];
                // A key of some kinds is checked under one of them (the base may be another).
                if let Some(kind) =
                    reader.filter(|_| !self.kind(&assigned).is_some_and(|k| config::kind_reads(k, name)))
                {
                    assigned.insert(0, ("model.kind".to_string(), Value::from(config::yaml_name(&kind))));
                }
                self.config_of(&assigned)
                    .map_err(|e| anyhow!("{source}: parameters.{name}: value {}: {e:#}", space::show(&value)))?;
            }
        }
        Ok(())
    }

    /// A trial's config: the base, the `--set` overrides, then the trial's parameters.
    pub fn trial_config(&self, trial: &Trial) -> Result<Config> {
        self.config_of(&trial.values)
    }

    /// The base with the `--set` overrides and `values` applied, less the `model` keys of the
    /// base and of `--set` that its model kind does not read (a trial that switches kind).
    fn config_of(&self, values: &[(String, Value)]) -> Result<Config> {
        let base = self.base();
        let kind = self.kind(values);
        let stripped = kind.and_then(|kind| kinds::strip_base(base, kind));
        let text = match stripped {
            Some(base) => Cow::Owned(serde_yaml::to_string(&base)?),
            None => Cow::Borrowed(&self.base_text),
        };
        let mut overrides: Vec<String> = match kind {
            Some(kind) => self.spec.set.iter().filter_map(|s| kinds::strip_set(s, kind)).collect(),
            None => self.spec.set.clone(),
        };
        overrides.extend(values.iter().map(|(key, value)| space::assignment(key, value)));
        Config::load_text(&text, &self.base_source, &overrides, false)
    }

    /// The base config with the `--set` overrides (what every trial starts from).
    pub fn base_config(&self) -> Result<Config> {
        Config::load_text(&self.base_text, &self.base_source, &self.spec.set, false)
    }

    /// The base config's tree (sweep.yaml's `config`, which both loads fill in).
    fn base(&self) -> &Mapping {
        &self.base_tree
    }

    /// The model kind of a trial with these parameter values (see `kinds::kind_of`).
    fn kind(&self, values: &[(String, Value)]) -> Option<ModelKind> {
        kinds::kind_of(self.base(), &self.spec.set, values)
    }

    /// `values` less the parameters their trial's model kind does not read.
    fn applicable(&self, mut values: Vec<(String, Value)>) -> Vec<(String, Value)> {
        if let Some(kind) = self.kind(&values) {
            values.retain(|(name, _)| config::kind_reads(kind, name));
        }
        values
    }

    /// The resolved sweep file, as sweep.yaml holds it.
    pub fn to_yaml(&self) -> Result<String> {
        Ok(serde_yaml::to_string(&self.spec)?)
    }

    /// ASHA's rungs, when the sweep stops trials early.
    pub fn asha(&self) -> Option<Asha> {
        self.spec.early_termination.as_ref().map(|EarlyTermination::Asha { min_epochs, reduction_factor }| Asha {
            min_epochs: *min_epochs,
            reduction_factor: *reduction_factor,
            epochs: self.epochs,
        })
    }

    /// The trials: every combination of the values (grid), or `trials` draws (random), each
    /// without the parameters its model kind does not read. Grid combinations that are then
    /// the same are one trial (the first); random draws stay as drawn.
    pub fn trials(&self) -> Vec<Trial> {
        let values = match self.spec.method {
            Method::Grid => space::grid(&self.parameters),
            Method::Random => space::random(&self.parameters, self.spec.trials.unwrap_or(0), self.spec.seed),
        };
        let mut seen = HashSet::new();
        let values = values.into_iter().map(|values| self.applicable(values)).filter(|values| {
            let assignments: Vec<String> = values.iter().map(|(k, v)| space::assignment(k, v)).collect();
            self.spec.method == Method::Random || seen.insert(assignments)
        });
        let trial = |(index, values)| {
            let mut trial = Trial { index, values, cost: 0.0 };
            // Configs were checked when the sweep was loaded; one that fails now goes last.
            trial.cost = self.trial_config(&trial).map(|config| space::cost(&config)).unwrap_or(0.0);
            trial
        };
        values.enumerate().map(trial).collect()
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"): the
/// expected name closest to `x`, as a config's unknown key gets.
fn did_you_mean(message: &str) -> String {
    // serde_yaml may put the key's path in front.
    let Some(at) = message.find("unknown field").or_else(|| message.find("unknown variant")) else {
        return String::new();
    };
    let message = &message[at..];
    let Some(bad) = message.split('`').nth(1) else { return String::new() };
    match config::nearest_name(message) {
        Some(name) if strsim::levenshtein(bad, &name) <= bad.len().max(2) / 2 + 1 => {
            format!("; did you mean `{name}`?")
        }
        _ => String::new(),
    }
}

/// Refuses a sweep of more than MAX_TRIALS trials before any is listed (a grid's count is
/// the product of its value counts, which may overflow).
fn count(spec: &Spec, parameters: &[(String, Space)], source: &str) -> Result<()> {
    match spec.method {
        Method::Random => match spec.trials {
            Some(n) if n > MAX_TRIALS => {
                bail!("{source}: trials: {n} trials, more than the limit of {MAX_TRIALS}; sample fewer")
            }
            _ => Ok(()),
        },
        Method::Grid => {
            let counts: Vec<usize> = parameters
                .iter()
                .map(|(_, space)| match space {
                    Space::Values { values } => values.len(),
                    Space::Distribution { .. } => 1,
                })
                .collect();
            let product = counts.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n));
            let shown = counts.iter().map(usize::to_string).collect::<Vec<_>>().join(" x ");
            match product {
                Some(n) if n <= MAX_TRIALS => Ok(()),
                Some(n) => bail!(
                    "{source}: parameters: the grid has {n} combinations ({shown}), more than the limit of {MAX_TRIALS}; \
                     use fewer values or method: random"
                ),
                None => bail!(
                    "{source}: parameters: the grid has more combinations ({shown}) than can be counted, \
                     more than the limit of {MAX_TRIALS}; use fewer values or method: random"
                ),
            }
        }
    }
}

fn parse(text: &str, source: &str) -> Result<Spec> {
    let text = config::prepare_yaml(text, source)?;
    if text.trim().is_empty() {
        bail!("{source}: the sweep file is empty");
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = format!("{}{}", e.inner(), did_you_mean(&e.inner().to_string()));
        if path == "." || inner.starts_with(&path) {
            anyhow!("{source}: {inner}")
        } else {
            anyhow!("{source}: {path}: {inner}")
        }
    })
}

/// The parameters in the order written, each checked on its own: its key is a config key
/// and its values or range are valid there.
fn parameters(spec: &Spec, source: &str) -> Result<Vec<(String, Space)>> {
    if spec.parameters.is_empty() {
        bail!("{source}: parameters: empty; name at least one config key to search");
    }
    let mut out = Vec::new();
    for (key, raw) in &spec.parameters {
        let Some(name) = key.as_str() else {
            bail!("{source}: parameters: every key must be a dotted config key such as training.optimizer.lr")
        };
        let at = format!("{source}: parameters.{name}");
        let space: Space = serde_yaml::from_value(raw.clone()).map_err(|_| {
            anyhow!("{at}: expected {{values: [...]}} or {{distribution: uniform | log_uniform | int_uniform, min: A, max: B}}")
        })?;
        match &space {
            Space::Values { values } if values.is_empty() => bail!("{at}: values: empty"),
            Space::Values { .. } => {}
            Space::Distribution { .. } if spec.method == Method::Grid => {
                bail!("{at}: a distribution needs method: random (a grid takes values: [...])")
            }
            Space::Distribution { distribution, min, max } => {
                if !(min < max) || !min.is_finite() || !max.is_finite() {
                    bail!("{at}: min ({min}) must be below max ({max})");
                }
                if *distribution == Distribution::LogUniform && *min <= 0.0 {
                    bail!("{at}: log_uniform needs min > 0, got {min}");
                }
                if *distribution == Distribution::IntUniform && (min.fract() != 0.0 || max.fract() != 0.0) {
                    bail!("{at}: int_uniform needs whole numbers for min and max, got {min} and {max}");
                }
            }
        }
        out.push((name.to_string(), space));
    }
    Ok(out)
}
