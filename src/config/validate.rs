//! Value checks, in two passes: keys the chosen kinds do not read (before `resolve`, while
//! unset keys are still unset), then every value of the resolved config. Each error names
//! its key.

use anyhow::{bail, Result};

use super::{yaml_name, ClassWeight, Config, DataKind, Features, OptimizerKind, ScheduleKind, Task};

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
                bail!("data.{key} applies to {readers} only; this config has kind {kind}{}", origin(key));
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
                bail!("data.features: kind {kind} takes a number of features, not column names{}", origin("features"))
            }
            Some(Features::Count(_)) if table => bail!(
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
                bail!("training.lr_schedule.{key} does not apply to kind {}", yaml_name(&s.kind));
            }
        }
        Ok(())
    }

    /// Stage two, on a resolved config: value checks, each naming its key.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("name must be a non-empty file name without '/' or a leading '.', got {:?}", self.name);
        }
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
        let timeout = self.distributed.timeout;
        if !(timeout.is_finite() && timeout > 0.0) {
            bail!("distributed.timeout must be a positive number of seconds, got {timeout}");
        }
        if let Some(threads) = t.threads {
            positive("training.threads", threads)?;
        }
        let task = self.task();
        let loss = self.loss();
        if loss.task() != task {
            bail!(
                "training.loss: {} is a {} loss, but the task is {}",
                yaml_name(&loss),
                yaml_name(&loss.task()),
                yaml_name(&task)
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
        self.validate_class_weight()?;
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
        let kind = yaml_name(&d.kind);
        if d.min_frequency == Some(0) {
            bail!("data.min_frequency must be >= 1, got 0 (a level seen once counts at 1)");
        }
        if let Some(super::CategoricalEncoding::PerColumn(columns)) = &d.categorical_encoding {
            if let Some((column, _)) = columns.iter().find(|(_, e)| **e == super::ColumnEncoding::Width(0)) {
                bail!("data.categorical_encoding.{column}: an embedding width must be > 0, got 0");
            }
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
            positive("data.samples", d.samples())?;
            let (features, targets) = (d.feature_count(), d.targets());
            positive("data.features", features)?;
            positive("data.targets", targets)?;
            if !(d.noise().is_finite() && d.noise() >= 0.0) {
                bail!("data.noise must be >= 0, got {}", d.noise());
            }
            let generated_task = if d.kind == DataKind::Moons { Task::Classification } else { Task::Regression };
            if task != generated_task {
                bail!(
                    "data.kind {kind} makes {} data, but the task is {}",
                    yaml_name(&generated_task),
                    yaml_name(&task)
                );
            }
            match d.kind {
                DataKind::Friedman1 if features < 5 => {
                    bail!("data.features must be >= 5 for friedman1, got {features}")
                }
                DataKind::Moons if features != 2 => {
                    bail!("data.features must be 2 for moons (points in the plane), got {features}")
                }
                DataKind::Friedman1 | DataKind::Moons if targets != 1 => {
                    bail!("data.targets must be 1 for {kind}, got {targets}")
                }
                _ => {}
            }
        }
        match d.kind {
            DataKind::Csv | DataKind::Parquet => {
                if d.path.is_none() {
                    bail!("data.path is required for kind {kind}");
                }
                let Some(target) = &d.target else {
                    bail!("data.target is required for kind {kind}: the column (or list of columns) to predict")
                };
                if target.names().is_empty() || target.names().iter().any(String::is_empty) {
                    bail!("data.target must name at least one column");
                }
                if task == Task::Classification && target.names().len() != 1 {
                    bail!("data.target: classification takes one label column, got {}", target.names().len());
                }
                if let Some(delimiter) = &d.delimiter {
                    if delimiter.len() != 1 {
                        bail!("data.delimiter must be one ASCII character, got {delimiter:?}");
                    }
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

    /// What can be checked before the data is read; labels unknown to the data are found when
    /// the weights are computed (`ClassWeight::weights`).
    fn validate_class_weight(&self) -> Result<()> {
        let Some(class_weight) = &self.training.class_weight else { return Ok(()) };
        if self.task() != Task::Classification {
            bail!("training.class_weight applies to classification only, but the task is {}", yaml_name(&self.task()));
        }
        if let ClassWeight::Labels(weights) = class_weight {
            for (i, (label, weight)) in weights.iter().enumerate() {
                if !(weight.is_finite() && *weight > 0.0) {
                    bail!("training.class_weight: the weight of class {label:?} must be > 0, got {weight}");
                }
                // `1` and `"1"` are different YAML keys but the same label.
                if weights[..i].iter().any(|(earlier, _)| earlier == label) {
                    bail!("training.class_weight: class {label:?} is given more than once");
                }
            }
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
        bail!("{key}: {monitor:?} is not a metrics.csv column; choose one of {}{hint}", names.join(", "))
    }
}

fn positive(key: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("{key} must be > 0, got 0");
    }
    Ok(())
}
