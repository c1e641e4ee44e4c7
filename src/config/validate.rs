//! Value checks, in two passes: keys the chosen kinds do not read (before `resolve`, while
//! unset keys are still unset), then every value of the resolved config. Each error names
//! its key.

use std::fmt;

use anyhow::Result;

use super::{yaml_name, ClassWeight, Config, DataConfig, DataKind, Features, OptimizerKind, ScheduleKind, Task};

/// The largest whole number a count key takes (2^31 - 1): libtorch sizes are signed 64-bit,
/// so a larger `usize` would wrap to a negative size inside libtorch; no real epoch count,
/// batch size or layer width comes near this.
pub const MAX_COUNT: usize = i32::MAX as usize;

/// The most intra-op threads `training.threads` asks libtorch for.
pub const MAX_THREADS: usize = 1024;

/// The longest `name`, in bytes: it becomes part of a directory name
/// (`<name>-<timestamp>`), which Linux caps at 255 bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// How much of a user's text an error echoes: enough to recognise it.
const ECHO_CHARS: usize = 60;

/// Whole-number keys that must be > 0 (`[]` stands for any index), so that serde's type
/// errors about them say so too (`load::explain`).
pub(super) const POSITIVE_KEYS: [&str; 10] = [
    "data.samples",
    "data.features",
    "data.targets",
    "data.min_frequency",
    "model.hidden[]",
    "training.epochs",
    "training.batch_size",
    "training.checkpoint_every",
    "training.threads",
    "training.lr_schedule.step_size",
];

/// A value the schema refuses, with the dotted key it is at (so that `Config::load_text` can
/// add the line the key is written on).
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Invalid {}

/// Returns an [`Invalid`] error for `key`, its message formatted as `format!` does.
macro_rules! invalid {
    ($key:expr, $($message:tt)+) => {
        return Err(Invalid { key: ($key).to_string(), message: format!($($message)+) }.into())
    };
}

/// A user's text for an error message: quoted, and cut to [`ECHO_CHARS`] characters with
/// its length said, so that a 10 MB value does not become a 10 MB message.
pub(super) fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &text[..end], text.len()),
    }
}

/// Why a key the user never wrote is set: `torchfit train` without a config file starts from
/// the Keras example, whose data section is for a generated kind.
const FROM_EMBEDDED: &str =
    " (it comes from the embedded default config keras_example.yaml; start from your own config file)";

impl Config {
    /// Stage one and a half: keys set that the chosen kinds do not read. `inherited` says
    /// whether a key's value comes from the embedded default config rather than the user.
    pub(super) fn validate_settings(&self, inherited: &dyn Fn(&str) -> bool) -> Result<()> {
        let d = &self.data;
        let kind = yaml_name(&d.kind);
        let origin = |key: &str| if inherited(&format!("data.{key}")) { FROM_EMBEDDED } else { "" };
        let reject = |set: bool, key: &str, readers: &str| -> Result<()> {
            if set {
                invalid!(
                    format!("data.{key}"),
                    "data.{key} applies to {readers} only; this config has kind {kind}{}",
                    origin(key)
                );
            }
            Ok(())
        };
        let (generated, table) = (d.kind.is_generated(), d.kind.is_table());
        let (csv, npy) = (d.kind == DataKind::Csv, d.kind == DataKind::Npy);
        reject(!generated && d.samples.is_some(), "samples", "generated kinds")?;
        reject(!generated && d.targets.is_some(), "targets", "generated kinds")?;
        reject(!generated && d.noise.is_some(), "noise", "generated kinds")?;
        reject(generated && d.path.is_some(), "path", "kind csv, parquet or npy")?;
        reject(!table && d.target.is_some(), "target", "kind csv or parquet")?;
        reject(!csv && d.delimiter.is_some(), "delimiter", "kind csv")?;
        reject(!npy && d.x.is_some(), "x", "kind npy")?;
        reject(!npy && d.y.is_some(), "y", "kind npy")?;
        reject(npy && d.features.is_some(), "features", "kind csv, parquet and generated kinds")?;
        reject(!table && d.categorical.is_some(), "categorical", "kind csv or parquet")?;
        reject(!table && d.min_frequency.is_some(), "min_frequency", "kind csv or parquet")?;
        reject(!table && d.categorical_encoding.is_some(), "categorical_encoding", "kind csv or parquet")?;
        match &d.features {
            Some(Features::Columns(_)) if generated => {
                invalid!(
                    "data.features",
                    "data.features: kind {kind} takes a number of features, not column names{}",
                    origin("features")
                )
            }
            Some(Features::Count(_)) if table => invalid!(
                "data.features",
                "data.features: for kind {kind}, a list of column names (default: every column but the target){}",
                origin("features")
            ),
            _ => {}
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
        for (key, set, kinds) in keys {
            if set && !kinds.contains(&s.kind) {
                invalid!(
                    format!("training.lr_schedule.{key}"),
                    "training.lr_schedule.{key} does not apply to kind {}",
                    yaml_name(&s.kind)
                );
            }
        }
        Ok(())
    }

    /// Stage two, on a resolved config: value checks, each naming its key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            invalid!(
                "name",
                "name must be a non-empty file name without '/' or a leading '.', got {}",
                echo(&self.name)
            );
        }
        if self.name.len() > MAX_NAME_BYTES {
            invalid!(
                "name",
                "name must be at most {MAX_NAME_BYTES} bytes (it names the run directory), got {}",
                echo(&self.name)
            );
        }
        self.validate_data()?;
        for (i, &width) in self.model.hidden.iter().enumerate() {
            if width == 0 {
                invalid!(
                    format!("model.hidden[{i}]"),
                    "model.hidden[{i}] must be > 0, got 0 (a layer needs at least one unit)"
                );
            }
            at_most(&format!("model.hidden[{i}]"), width, MAX_COUNT)?;
        }
        if let Some(p) = self.model.dropout.filter(|p| !(0.0..1.0).contains(p)) {
            invalid!("model.dropout", "model.dropout must be in [0, 1), got {p}");
        }
        self.validate_model_kind()?;
        self.validate_logging()?;
        let t = &self.training;
        positive("training.epochs", t.epochs)?;
        positive("training.batch_size", t.batch_size)?;
        positive("training.checkpoint_every", t.checkpoint_every)?;
        at_most("training.epochs", t.epochs, MAX_COUNT)?;
        at_most("training.batch_size", t.batch_size, MAX_COUNT)?;
        at_most("training.checkpoint_every", t.checkpoint_every, MAX_COUNT)?;
        let timeout = self.distributed.timeout;
        if !(timeout.is_finite() && timeout > 0.0) {
            invalid!("distributed.timeout", "distributed.timeout must be a positive number of seconds, got {timeout}");
        }
        if let Some(threads) = t.threads {
            positive("training.threads", threads)?;
            at_most("training.threads", threads, MAX_THREADS)?;
        }
        let task = self.task();
        let loss = self.loss();
        if loss.task() != task {
            invalid!(
                "training.loss",
                "training.loss: {} is a {} loss, but the task is {}",
                yaml_name(&loss),
                yaml_name(&loss.task()),
                yaml_name(&task)
            );
        }
        let metrics = self.metrics();
        for (i, metric) in metrics.iter().enumerate() {
            if metrics[..i].contains(metric) {
                invalid!("training.metrics", "training.metrics: {} is listed more than once", metric.name());
            }
        }
        for metric in metrics {
            if metric.task() != task {
                let why = match task {
                    Task::Regression => "needs class labels, but this is a regression task (a continuous target); use mae, mse, rmse or r2, or set task: classification",
                    Task::Classification => "measures a continuous target, but this is a classification task; use accuracy, f1 or log_loss",
                };
                invalid!("training.metrics", "training.metrics: {} {why}", metric.name());
            }
        }
        if let Some(clip) = t.gradient_clip {
            if !(clip.is_finite() && clip > 0.0) {
                invalid!("training.gradient_clip", "training.gradient_clip must be > 0, got {clip}");
            }
        }
        self.validate_class_weight()?;
        self.validate_optimizer()?;
        self.validate_schedule()?;
        if let Some(es) = &t.early_stopping {
            self.check_monitor("training.early_stopping.monitor", &es.monitor)?;
            at_most("training.early_stopping.patience", es.patience, MAX_COUNT)?;
            if !(es.min_delta.is_finite() && es.min_delta >= 0.0) {
                invalid!(
                    "training.early_stopping.min_delta",
                    "training.early_stopping.min_delta must be >= 0, got {}",
                    es.min_delta
                );
            }
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<()> {
        let d = &self.data;
        let kind = yaml_name(&d.kind);
        validate_categorical(d)?;
        validate_splits(d)?;
        let task = self.task();
        if d.standardize_target && task == Task::Classification {
            invalid!(
                "data.standardize_target",
                "data.standardize_target applies to regression only; class labels are not standardised"
            );
        }
        if d.kind.is_generated() {
            validate_generated(d, task, &kind)?;
        }
        match d.kind {
            DataKind::Csv | DataKind::Parquet => validate_table_file(d, task, &kind)?,
            DataKind::Npy => match (&d.path, &d.x, &d.y) {
                (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                _ => invalid!(
                    "data",
                    "data: kind npy takes either x and y (.npy files) or path (one .npz with arrays x and y)"
                ),
            },
            _ => {}
        }
        Ok(())
    }

    /// What can be checked before the data is read; labels unknown to the data are found when
    /// the weights are computed (`ClassWeight::weights`).
    fn validate_class_weight(&self) -> Result<()> {
        let Some(class_weight) = &self.training.class_weight else { return Ok(()) };
        if self.task() != Task::Classification {
            invalid!(
                "training.class_weight",
                "training.class_weight applies to classification only, but the task is {}",
                yaml_name(&self.task())
            );
        }
        if let ClassWeight::Labels(weights) = class_weight {
            for (i, (label, weight)) in weights.iter().enumerate() {
                if !(weight.is_finite() && *weight > 0.0) {
                    invalid!(
                        "training.class_weight",
                        "training.class_weight: the weight of class {} must be > 0, got {weight}",
                        echo(label)
                    );
                }
                // `1` and `"1"` are different YAML keys but the same label.
                if weights[..i].iter().any(|(earlier, _)| earlier == label) {
                    invalid!(
                        "training.class_weight",
                        "training.class_weight: class {} is given more than once",
                        echo(label)
                    );
                }
            }
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> Result<()> {
        let o = &self.training.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            invalid!("training.optimizer.lr", "training.optimizer.lr must be > 0, got {}", o.lr);
        }
        for (key, beta) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                invalid!(format!("training.optimizer.{key}"), "training.optimizer.{key} must be in [0, 1), got {beta}");
            }
        }
        if !(o.eps().is_finite() && o.eps() > 0.0) {
            invalid!("training.optimizer.eps", "training.optimizer.eps must be > 0, got {}", o.eps());
        }
        if !(o.weight_decay().is_finite() && o.weight_decay() >= 0.0) {
            invalid!(
                "training.optimizer.weight_decay",
                "training.optimizer.weight_decay must be >= 0, got {}",
                o.weight_decay()
            );
        }
        if !(0.0..1.0).contains(&o.momentum) {
            invalid!(
                "training.optimizer.momentum",
                "training.optimizer.momentum must be in [0, 1), got {}",
                o.momentum
            );
        }
        if o.kind != OptimizerKind::Sgd && (o.momentum != 0.0 || o.nesterov) {
            invalid!(
                "training.optimizer.momentum",
                "training.optimizer.momentum and nesterov apply to sgd only; adam uses beta1"
            );
        }
        if o.nesterov && o.momentum == 0.0 {
            invalid!("training.optimizer.nesterov", "training.optimizer.nesterov needs momentum > 0");
        }
        Ok(())
    }

    fn validate_schedule(&self) -> Result<()> {
        let s = &self.training.lr_schedule;
        let key = "training.lr_schedule";
        if s.step_size == Some(0) {
            invalid!(format!("{key}.step_size"), "{key}.step_size must be > 0, got 0");
        }
        for (name, value) in [("step_size", s.step_size), ("warmup_epochs", s.warmup_epochs), ("patience", s.patience)]
        {
            at_most(&format!("{key}.{name}"), value.unwrap_or(0), MAX_COUNT)?;
        }
        for (name, value) in [("gamma", s.gamma), ("factor", s.factor)] {
            if let Some(v) = value {
                if !(v > 0.0 && v < 1.0) {
                    invalid!(format!("{key}.{name}"), "{key}.{name} must be in (0, 1), got {v}");
                }
            }
        }
        for (name, value) in [("min_lr", s.min_lr), ("min_delta", s.min_delta)] {
            if let Some(v) = value {
                if !(v.is_finite() && v >= 0.0) {
                    invalid!(format!("{key}.{name}"), "{key}.{name} must be >= 0, got {v}");
                }
            }
        }
        if let Some(min_lr) = s.min_lr {
            if min_lr >= self.training.optimizer.lr {
                invalid!(
                    format!("{key}.min_lr"),
                    "{key}.min_lr must be below training.optimizer.lr ({}), got {min_lr}",
                    self.training.optimizer.lr
                );
            }
        }
        if let Some(warmup) = s.warmup_epochs {
            if warmup >= self.training.epochs {
                invalid!(
                    format!("{key}.warmup_epochs"),
                    "{key}.warmup_epochs must be below training.epochs ({}), got {warmup}",
                    self.training.epochs
                );
            }
        }
        if let Some(monitor) = &s.monitor {
            self.check_monitor(&format!("{key}.monitor"), monitor)?;
        }
        Ok(())
    }

    fn check_monitor(&self, key: &str, monitor: &str) -> Result<()> {
        let names = self.monitorable();
        if names.iter().any(|n| n == monitor) {
            return Ok(());
        }
        let hint = if monitor.starts_with("val_") && !self.has_validation() {
            " (val_* needs data.validation_split > 0)"
        } else {
            ""
        };
        invalid!(key, "{key}: {} is not a metrics.csv column; choose one of {}{hint}", echo(monitor), names.join(", "))
    }
}

fn positive(key: &str, value: usize) -> Result<()> {
    if value == 0 {
        invalid!(key, "{key} must be > 0, got 0");
    }
    Ok(())
}

fn at_most(key: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        invalid!(key, "{key} must be at most {max}, got {value}");
    }
    Ok(())
}

fn validate_categorical(d: &DataConfig) -> Result<()> {
    if d.min_frequency == Some(0) {
        invalid!("data.min_frequency", "data.min_frequency must be > 0, got 0 (a level seen once counts at 1)");
    }
    at_most("data.min_frequency", d.min_frequency.unwrap_or(1), MAX_COUNT)?;
    if let Some(super::CategoricalEncoding::PerColumn(columns)) = &d.categorical_encoding {
        for (column, encoding) in columns {
            if let super::ColumnEncoding::Width(width) = *encoding {
                let key = format!("data.categorical_encoding.{column}");
                if width == 0 {
                    invalid!(key, "{key}: an embedding width must be > 0, got 0");
                }
                at_most(&key, width, MAX_COUNT)?;
            }
        }
    }
    Ok(())
}

fn validate_splits(d: &DataConfig) -> Result<()> {
    for (key, fraction) in [("validation_split", d.validation_split), ("test_split", d.test_split)] {
        if !(0.0..1.0).contains(&fraction) {
            invalid!(format!("data.{key}"), "data.{key} must be in [0, 1), got {fraction}");
        }
    }
    if d.validation_split + d.test_split >= 1.0 {
        invalid!(
            "data.validation_split",
            "data.validation_split + data.test_split must leave rows for training, got {} + {}",
            d.validation_split,
            d.test_split
        );
    }
    Ok(())
}

/// A generator's sizes and noise, and that it makes data for the config's task.
fn validate_generated(d: &DataConfig, task: Task, kind: &str) -> Result<()> {
    let (features, targets) = (d.feature_count(), d.targets());
    for (key, value) in [("data.samples", d.samples()), ("data.features", features), ("data.targets", targets)] {
        positive(key, value)?;
        at_most(key, value, MAX_COUNT)?;
    }
    if !(d.noise().is_finite() && d.noise() >= 0.0) {
        invalid!("data.noise", "data.noise must be >= 0, got {}", d.noise());
    }
    let generated_task = if d.kind == DataKind::Moons { Task::Classification } else { Task::Regression };
    if task != generated_task {
        invalid!(
            "data.kind",
            "data.kind {kind} makes {} data, but the task is {}",
            yaml_name(&generated_task),
            yaml_name(&task)
        );
    }
    match d.kind {
        DataKind::Friedman1 if features < 5 => {
            invalid!("data.features", "data.features must be >= 5 for friedman1, got {features}")
        }
        DataKind::Moons if features != 2 => {
            invalid!("data.features", "data.features must be 2 for moons (points in the plane), got {features}")
        }
        DataKind::Friedman1 | DataKind::Moons if targets != 1 => {
            invalid!("data.targets", "data.targets must be 1 for {kind}, got {targets}")
        }
        _ => {}
    }
    Ok(())
}

/// A CSV or Parquet source: its path, its target column(s) and its delimiter.
fn validate_table_file(d: &DataConfig, task: Task, kind: &str) -> Result<()> {
    if d.path.is_none() {
        invalid!("data.path", "data.path is required for kind {kind}");
    }
    let Some(target) = &d.target else {
        invalid!("data.target", "data.target is required for kind {kind}: the column (or list of columns) to predict")
    };
    if target.names().is_empty() || target.names().iter().any(String::is_empty) {
        invalid!("data.target", "data.target must name at least one column");
    }
    if task == Task::Classification && target.names().len() != 1 {
        invalid!("data.target", "data.target: classification takes one label column, got {}", target.names().len());
    }
    if let Some(delimiter) = &d.delimiter {
        if delimiter.len() != 1 {
            invalid!("data.delimiter", "data.delimiter must be one ASCII character, got {}", echo(delimiter));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Loss, Metric};
    use super::*;

    fn invalid(overrides: &[&str]) -> String {
        let sets: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::load(None, &sets).expect_err("is invalid").to_string()
    }

    #[test]
    fn invalid_values_in_a_file_name_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = "name: x\ntraining:\n  epochs: 3\n  metrics: [mae, mae]\nmodel:\n  hidden:\n    - 4\n    - 0\n";
        let err = |sets: &[&str]| {
            {
                std::fs::write(dir.path().join("c.yaml"), text).unwrap();
                let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
                Config::load(Some(&dir.path().join("c.yaml")), &sets)
            }
            .unwrap_err()
            .to_string()
        };
        let file = dir.path().join("c.yaml").display().to_string();
        assert_eq!(err(&[]), format!("{file}:8: model.hidden[1] must be > 0, got 0 (a layer needs at least one unit)"));
        assert_eq!(err(&["model.hidden=[4]"]), format!("{file}:4: training.metrics: mae is listed more than once"));
        // A value from --set has no line in the file.
        assert_eq!(
            err(&["model.hidden=[4]", "training.metrics=[mae, mae]"]),
            "training.metrics: mae is listed more than once"
        );
    }

    #[test]
    fn counts_are_bounded_where_libtorch_would_wrap() {
        assert_eq!(
            invalid(&["training.batch_size=18446744073709551615"]),
            "training.batch_size must be at most 2147483647, got 18446744073709551615"
        );
        assert_eq!(invalid(&["data.features=4294967296"]), "data.features must be at most 2147483647, got 4294967296");
        assert_eq!(invalid(&["training.threads=100000"]), "training.threads must be at most 1024, got 100000");
        assert!(invalid(&["training.epochs=-1"])
            .ends_with("training.epochs: invalid value: integer `-1`, expected a whole number > 0"));
        assert!(invalid(&["seed=-1"]).ends_with("expected a whole number >= 0"));
    }

    #[test]
    fn a_replaced_data_section_derives_its_own_loss_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "a,y\n1,yes\n2,no\n").unwrap();
        let data = format!("data={{kind: csv, path: {}, target: y}}", csv.display());
        let config = Config::load(None, std::slice::from_ref(&data)).unwrap();
        assert_eq!((config.task, config.training.loss), (Some(Task::Classification), Some(Loss::CrossEntropy)));
        assert_eq!(config.training.metrics, Some(vec![Metric::Accuracy]));
        // What the user sets stays.
        let config = Config::load(None, &[data, "training.metrics=[f1]".into()]).unwrap();
        assert_eq!(config.training.metrics, Some(vec![Metric::F1]));
    }
}
