//! `torchfit evaluate`: a run's loss and metrics on new labelled data, and a classifier's
//! confusion matrix.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::report::Confusion;
use crate::config::Task;
use crate::data::{self, or_list, CellError, Part, Role};
use crate::metrics;
use crate::rundir::TrainedRun;

/// What `torchfit evaluate` reports.
pub struct Evaluation {
    /// The loss, then the run's metrics, by name.
    pub metrics: Vec<(String, f64)>,
    /// A classifier's confusion matrix over every class the model knows; `None` for a
    /// regression.
    pub confusion: Option<Confusion>,
}

/// The loss and metrics (and a classifier's confusion matrix) of a run's model on a labelled
/// CSV file (read with the run's delimiter) or Parquet file (`.parquet`, `.pq`), preprocessed
/// as in training. `run` is a run directory or its model.pt; `weights` replace the run's own
/// (a checkpoint's, say: an unfinished run has no others); `target` names the label column
/// when it differs from training's.
pub fn evaluate(run: &Path, data_path: &Path, weights: Option<&Path>, target: Option<&str>) -> Result<Evaluation> {
    let TrainedRun { config, preprocessing: pre, model, .. } = TrainedRun::load(run, weights, "--weights")?;
    if let Some(input) = &pre.input {
        bail!(
            "{}: the run was trained on {}, and torchfit evaluate reads labelled tables (CSV or Parquet); \
             for arrays, run `torchfit predict {} X.npy` and compare with the labels",
            run.display(),
            super::array::describe(input),
            run.display()
        );
    }
    let targets = match target {
        Some(t) => vec![t.to_string()],
        None => pre.target_names.clone(),
    };
    let file = data_path.display();
    // Missing cells are treated as in training: an error, a dropped row, or the training mean.
    let format = data::Format::of(data_path, config.data.delimiter());
    let task = config.task();
    let read = data::read_labelled_csv(data_path, format, config.data.missing, task, &targets, |header| {
        let categorical: Vec<String> = pre.categorical.iter().map(|c| c.name.clone()).collect();
        let free: Vec<String> = pre.text.as_ref().map_or(Vec::new(), |t| t.columns.clone());
        let all: Vec<String> = pre.feature_names.iter().chain(&categorical).chain(&free).cloned().collect();
        let features = absent(&all, header);
        if !features.is_empty() {
            let hint = match format {
                data::Format::Csv(delimiter) => data::delimiter_hint(header, delimiter),
                data::Format::Parquet => String::new(),
            };
            let all = data::list_names(all.iter().map(String::as_str));
            bail!("{file}: no column {} (the run's features are {all}){hint}", or_list(&features));
        }
        let labels = absent(&targets, header);
        if !labels.is_empty() {
            let hint = if target.is_some() { "" } else { "; use --target to name another label column" };
            bail!("{file}: no column {} for the target{hint}", or_list(&labels));
        }
        let numbers = pre.feature_names.iter().map(|n| (n.clone(), Role::Number));
        let categories = categorical.into_iter().map(|n| (n, Role::Text));
        Ok(numbers.chain(categories).chain(free.into_iter().map(|n| (n, Role::FreeText))).collect())
    });
    // The run's task is settled: text in its target column is no class label to switch to.
    let table = read.map_err(|e| match e.downcast::<CellError>() {
        Ok(cell) => CellError { trained_regression: task == Task::Regression, ..cell }.into(),
        Err(e) => e,
    })?;
    if table.unlabelled > 0 {
        eprintln!(
            "torchfit: warning: {file}: {} row(s) without a target value left out (data.missing: mean fills features only)",
            table.unlabelled
        );
    }
    let x = pre.encode(&table.x, &table.categorical, &table.text).with_context(|| file.to_string())?;
    let y = match &table.values {
        Some(values) if values.size()[1] != pre.target_mean.len() as i64 => {
            bail!("--target: the run predicts {} target(s), got {}", pre.target_mean.len(), values.size()[1])
        }
        Some(values) => pre.scale_targets(values),
        None => pre.encode_labels(&table.labels).with_context(|| file.to_string())?,
    };
    let (loss, metrics, counts) = metrics::evaluate_with_confusion(&*model, &Part { x, y }, &config, &pre)?;
    // Every class the model knows, in its order, whether the file has it or not.
    let confusion = pre.labels.clone().zip(counts).map(|(labels, counts)| Confusion::from_counts(labels, &counts));
    let mut out = vec![("loss".to_string(), loss)];
    out.extend(config.metrics().iter().map(|m| m.name().to_string()).zip(metrics));
    Ok(Evaluation { metrics: out, confusion })
}

/// Those of `names` that `header` lacks.
fn absent<'a>(names: &'a [String], header: &[String]) -> Vec<&'a String> {
    // A set: a header may have tens of thousands of names.
    let header: HashSet<&String> = header.iter().collect();
    names.iter().filter(|n| !header.contains(n)).collect()
}

impl Evaluation {
    /// `name value` a line (six decimals), then for a classifier the confusion matrix and
    /// the per-class report, each after a blank line.
    pub fn text(&self) -> String {
        let mut out: String = self.metrics.iter().map(|(name, value)| format!("{name} {value:.6}\n")).collect();
        if let Some(confusion) = &self.confusion {
            out += &format!("\n{}\n{}", confusion.matrix_text(), confusion.report_text());
        }
        out
    }

    /// `{"metrics": {name: value}}`, and for a classifier `confusion_matrix` (`labels`,
    /// `matrix`) and `classification_report` (scikit-learn's `output_dict=True` keys).
    pub fn json(&self) -> serde_json::Value {
        let metrics: serde_json::Map<String, serde_json::Value> =
            self.metrics.iter().map(|(name, value)| (name.clone(), serde_json::json!(value))).collect();
        let mut out = serde_json::json!({ "metrics": metrics });
        if let Some(confusion) = &self.confusion {
            out["confusion_matrix"] = confusion.matrix_json();
            out["classification_report"] = confusion.report_json();
        }
        out
    }
}
