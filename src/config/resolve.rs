//! The values in force: what a key left unset means, decided here once. `Config::resolve`
//! writes them into the config, so that the saved `config.yaml` says exactly what ran.

use anyhow::{bail, Result};

use super::{
    ClassWeight, Config, DataConfig, DataKind, Features, Loss, LrSchedule, Metric, OptimizerConfig, OptimizerKind,
    Schedule, ScheduleKind, Semantics, Task,
};

/// csv: the field delimiter when none is set.
const DEFAULT_DELIMITER: char = ',';

impl OptimizerConfig {
    /// The epsilon in force: the configured one, else the semantics' default.
    pub(crate) fn eps(&self) -> f64 {
        self.eps.unwrap_or(match self.semantics {
            Semantics::Keras => 1e-7,
            Semantics::Torch => 1e-8,
        })
    }

    /// The weight decay in force: the configured one, else the kind's default.
    pub(crate) fn weight_decay(&self) -> f64 {
        self.weight_decay.unwrap_or(match (self.kind, self.semantics) {
            (OptimizerKind::Adamw, Semantics::Keras) => 0.004,
            (OptimizerKind::Adamw, Semantics::Torch) => 0.01,
            _ => 0.0,
        })
    }
}

impl DataConfig {
    /// Generated kinds: the number of rows in force.
    pub(crate) fn samples(&self) -> usize {
        self.samples.unwrap_or(1000)
    }

    /// Generated kinds: the number of features in force.
    pub(crate) fn feature_count(&self) -> usize {
        match self.features {
            Some(Features::Count(count)) => count,
            _ if self.kind == DataKind::Moons => 2,
            _ => 10,
        }
    }

    /// Generated kinds: the number of targets in force.
    pub(crate) fn targets(&self) -> usize {
        self.targets.unwrap_or(1)
    }

    /// Generated kinds: the noise's standard deviation in force.
    pub(crate) fn noise(&self) -> f64 {
        self.noise.unwrap_or(0.1)
    }

    /// csv: the delimiter in force, as the byte the reader takes; validation has checked
    /// that a configured one is a single ASCII character.
    pub(crate) fn delimiter(&self) -> u8 {
        let default = DEFAULT_DELIMITER as u8;
        self.delimiter.as_deref().map_or(default, |d| d.bytes().next().unwrap_or(default))
    }
}

impl DataKind {
    pub(super) fn is_generated(self) -> bool {
        !matches!(self, DataKind::Csv | DataKind::Parquet | DataKind::Npy)
    }

    /// A file of named columns (csv, parquet): the kinds that take `target`, `features` as
    /// names, and the categorical keys.
    pub(super) fn is_table(self) -> bool {
        matches!(self, DataKind::Csv | DataKind::Parquet)
    }
}

impl Metric {
    pub(crate) fn name(self) -> &'static str {
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

    pub(crate) fn task(self) -> Task {
        match self {
            Metric::Mae | Metric::Mse | Metric::Rmse | Metric::R2 => Task::Regression,
            Metric::Accuracy | Metric::F1 | Metric::LogLoss => Task::Classification,
        }
    }

    /// Whether larger values are better (for early stopping's `mode: auto`).
    pub(crate) fn higher_is_better(name: &str) -> bool {
        let base = name.strip_prefix("val_").unwrap_or(name);
        matches!(base, "accuracy" | "f1" | "r2")
    }
}

impl Loss {
    pub(crate) fn task(self) -> Task {
        match self {
            Loss::Mse | Loss::Mae | Loss::Huber => Task::Regression,
            Loss::CrossEntropy | Loss::Bce => Task::Classification,
        }
    }
}

impl ClassWeight {
    /// The weight of each class, in class-index order: `labels` are the classes' text and
    /// `counts` their rows in the training part. A label the data does not have is an error
    /// naming it: a typo would otherwise weigh nothing, silently.
    pub(crate) fn weights(&self, labels: &[String], counts: &[usize]) -> Result<Vec<f64>> {
        match self {
            ClassWeight::Balanced => {
                // scikit-learn's compute_class_weight("balanced"). Every class has training
                // rows (the data loader checks), so no count is 0.
                let samples = counts.iter().sum::<usize>() as f64;
                let classes = labels.len() as f64;
                Ok(counts.iter().map(|&count| samples / (classes * count.max(1) as f64)).collect())
            }
            ClassWeight::Labels(given) => {
                if let Some((label, _)) = given.iter().find(|(label, _)| !labels.contains(label)) {
                    bail!("training.class_weight: no class {label:?} in the data (classes: {})", labels.join(", "));
                }
                let weight = |class: &String| given.iter().find(|(label, _)| label == class).map_or(1.0, |(_, w)| *w);
                Ok(labels.iter().map(weight).collect())
            }
        }
    }
}

impl LrSchedule {
    /// The schedule in force: the keys set, else their defaults. The plateau monitor
    /// defaults to `val_loss` when there is a validation part, else `loss`.
    pub(crate) fn resolved(&self, has_validation: bool) -> Schedule {
        let monitor = if has_validation { "val_loss" } else { "loss" };
        match self.kind {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Step => {
                Schedule::Step { step_size: self.step_size.unwrap_or(10), gamma: self.gamma.unwrap_or(0.1) }
            }
            ScheduleKind::Cosine => {
                Schedule::Cosine { warmup_epochs: self.warmup_epochs.unwrap_or(0), min_lr: self.min_lr.unwrap_or(0.0) }
            }
            ScheduleKind::ReduceOnPlateau => Schedule::ReduceOnPlateau {
                monitor: self.monitor.clone().unwrap_or_else(|| monitor.into()),
                factor: self.factor.unwrap_or(0.1),
                patience: self.patience.unwrap_or(10),
                min_delta: self.min_delta.unwrap_or(1e-4),
                min_lr: self.min_lr.unwrap_or(0.0),
            },
        }
    }
}

impl From<Schedule> for LrSchedule {
    fn from(schedule: Schedule) -> LrSchedule {
        let kind = match schedule {
            Schedule::Constant => ScheduleKind::Constant,
            Schedule::Step { .. } => ScheduleKind::Step,
            Schedule::Cosine { .. } => ScheduleKind::Cosine,
            Schedule::ReduceOnPlateau { .. } => ScheduleKind::ReduceOnPlateau,
        };
        let mut keys = LrSchedule { kind, ..LrSchedule::default() };
        match schedule {
            Schedule::Constant => {}
            Schedule::Step { step_size, gamma } => (keys.step_size, keys.gamma) = (Some(step_size), Some(gamma)),
            Schedule::Cosine { warmup_epochs, min_lr } => {
                (keys.warmup_epochs, keys.min_lr) = (Some(warmup_epochs), Some(min_lr))
            }
            Schedule::ReduceOnPlateau { monitor, factor, patience, min_delta, min_lr } => {
                keys.monitor = Some(monitor);
                keys.factor = Some(factor);
                keys.patience = Some(patience);
                keys.min_delta = Some(min_delta);
                keys.min_lr = Some(min_lr);
            }
        }
        keys
    }
}

impl Config {
    /// The task in force: explicit, else implied by the loss or the data (moons), else
    /// regression. Metrics do not decide it: asking for accuracy on a continuous target is
    /// a mistake to report, not a classification. (A CSV label column of text sets `task`
    /// when the config is loaded.)
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
    pub(super) fn has_validation(&self) -> bool {
        self.data.validation_split > 0.0
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

    /// Fills every default that the chosen kinds read, so that the resolved YAML says
    /// exactly what ran; keys the kinds do not read stay unset. Relative paths become
    /// absolute, so a run directory's config still works from elsewhere.
    pub fn resolve(&mut self) {
        let m = &mut self.model;
        match m.kind {
            super::ModelKind::Mlp => {
                m.dropout.get_or_insert(0.0);
            }
            super::ModelKind::Resnet => {
                let (n_blocks, d_block, multiplier, dropout1, dropout2) = super::models::RESNET_DEFAULTS;
                m.n_blocks.get_or_insert(n_blocks);
                m.d_block.get_or_insert(d_block);
                m.d_hidden_multiplier.get_or_insert(multiplier);
                m.dropout1.get_or_insert(dropout1);
                m.dropout2.get_or_insert(dropout2);
            }
            super::ModelKind::Tabm => {
                // With numeric embeddings TabM.make's n_blocks default is 2: see model::tabm.
                let (k, n_blocks, d_block, dropout) = super::models::TABM_DEFAULTS;
                m.k.get_or_insert(k);
                m.n_blocks.get_or_insert(if m.numeric_embedding.is_some() { 2 } else { n_blocks });
                m.d_block.get_or_insert(d_block);
                m.dropout.get_or_insert(dropout);
                m.arch_type.get_or_insert(super::TabmArch::Tabm);
            }
            super::ModelKind::FtTransformer => {
                let k = super::FtTransformerKnobs::of(m);
                (m.n_blocks, m.d_block, m.attention_n_heads) =
                    (Some(k.n_blocks), Some(k.d_block), Some(k.attention_n_heads));
                (m.attention_dropout, m.ffn_dropout) = (Some(k.attention_dropout), Some(k.ffn_dropout));
                m.ffn_d_hidden_multiplier = Some(k.ffn_d_hidden_multiplier);
                m.residual_dropout = Some(k.residual_dropout);
            }
            super::ModelKind::Torchscript => {}
        }
        if let Some(e) = &mut m.numeric_embedding {
            e.resolve();
        }
        if self.data.text.as_ref().is_some_and(|t| !t.is_empty()) {
            self.data.tokenizer.get_or_insert_with(Default::default).resolve();
            if self.model.kind != super::ModelKind::Torchscript {
                self.model.text.get_or_insert_with(super::TextEncoder::default_for_text).resolve();
            }
        }
        self.task = Some(self.task());
        self.training.loss = Some(self.loss());
        self.training.metrics = Some(self.metrics());
        let o = &mut self.training.optimizer;
        o.eps = Some(o.eps());
        o.weight_decay = Some(o.weight_decay());
        let d = &mut self.data;
        if d.kind.is_generated() {
            d.samples = Some(d.samples());
            // A list of columns on a generated kind is an error for `validate` to report.
            d.features.get_or_insert(Features::Count(d.feature_count()));
            d.targets = Some(d.targets());
            d.noise = Some(d.noise());
        }
        if d.kind == DataKind::Csv {
            d.delimiter.get_or_insert_with(|| DEFAULT_DELIMITER.to_string());
        }
        if d.kind.is_table() {
            d.min_frequency.get_or_insert(1);
        }
        // Real tables mix units (grams beside millimetres): file data is standardised unless
        // told otherwise; generated data keeps the Keras example as it was. kind npy decides
        // when the file is read: a table is standardised, an array (images, token ids) goes
        // to the model as stored.
        if d.kind != DataKind::Npy {
            d.standardize.get_or_insert(!d.kind.is_generated());
        }
        let tokenizer = d.tokenizer.as_mut().map(|t| &mut t.path);
        let files = [Some(&mut d.path), Some(&mut d.x), Some(&mut d.y), tokenizer];
        let model_files = [&mut self.model.init_from, &mut self.model.path];
        for path in files.into_iter().flatten().chain(model_files).flatten() {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
        let has_validation = self.has_validation();
        let schedule = &mut self.training.lr_schedule;
        *schedule = schedule.resolved(has_validation).into();
    }
}
