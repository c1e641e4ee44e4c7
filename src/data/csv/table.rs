//! A labelled table file (CSV or Parquet): its features and targets, as training and
//! `torchfit evaluate` read them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::header::{clip, delimiter_hint, list};
use super::{classes_from_text, column_matrix, column_matrix_spare, Column, Role};
use crate::config::{DataConfig, Features, Missing, Task};
use crate::data::text::Text;
use crate::data::{paths, Format, Table, Target, TextColumn};

/// The table of kind csv or parquet that `d` names, read in `format`: the target columns, and
/// as features the columns `data.features` lists (default: all the others), those in
/// `data.categorical` as text.
pub(in crate::data) fn read_table(d: &DataConfig, task: Task, format: Format) -> Result<Table> {
    let path = d.path.as_deref().with_context(|| format!("data.path is required for kind {}", format.kind()))?;
    paths::check_file("data.path", path)?;
    let targets = d.target.as_ref().map(|t| t.names()).unwrap_or_default();
    let forced_list = d.categorical.clone().unwrap_or_default();
    let forced: HashSet<&String> = forced_list.iter().collect();
    let free_list = d.text.clone().unwrap_or_default();
    let free: HashSet<&String> = free_list.iter().collect();
    let file = path.display();
    let labelled = read_labelled_csv(path, format, d.missing, task, &targets, |header| {
        // Sets of names: a header may have tens of thousands of columns.
        let columns: HashSet<&String> = header.iter().collect();
        let target_set: HashSet<&String> = targets.iter().collect();
        for target in &targets {
            if !columns.contains(target) {
                let hint = match format {
                    Format::Csv(delimiter) => delimiter_hint(header, delimiter),
                    Format::Parquet => String::new(),
                };
                bail!(
                    "data.target: no column `{}` in {file} (columns: {}){hint}",
                    clip(target),
                    list(header.iter().map(String::as_str))
                );
            }
        }
        let features: Vec<String> = match &d.features {
            Some(Features::Columns(names)) => {
                if let Some(t) = names.iter().find(|n| target_set.contains(n)) {
                    bail!("data.features: `{}` is also the target", clip(t));
                }
                names.clone()
            }
            _ => header.iter().filter(|h| !target_set.contains(h)).cloned().collect(),
        };
        if features.is_empty() {
            bail!("data.features: {file} has no columns besides the target");
        }
        let feature_set: HashSet<&String> = features.iter().collect();
        if let Some(unknown) = forced_list.iter().find(|c| !feature_set.contains(c)) {
            let why = if columns.contains(unknown) { "is not a feature" } else { "is not a column" };
            bail!(
                "data.categorical: `{}` {why} of {file} (features: {})",
                clip(unknown),
                list(features.iter().map(String::as_str))
            );
        }
        if let Some(unknown) = free_list.iter().find(|c| !feature_set.contains(c)) {
            let why = if columns.contains(unknown) { "is not a feature" } else { "is not a column" };
            bail!(
                "data.text: `{}` {why} of {file} (features: {})",
                clip(unknown),
                list(features.iter().map(String::as_str))
            );
        }
        Ok(features
            .into_iter()
            .map(|f| {
                let role = match (forced.contains(&f), free.contains(&f)) {
                    (_, true) => Role::FreeText,
                    (true, false) => Role::Text,
                    (false, false) => Role::Auto,
                };
                (f, role)
            })
            .collect())
    })?;
    if labelled.unlabelled > 0 {
        eprintln!(
            "torchfit: warning: {file}: dropped {} row(s) without a target value (data.missing: mean fills features only)",
            labelled.unlabelled
        );
    }
    let y = match labelled.values {
        Some(values) => Target::Values(values),
        None => classes_from_text(&labelled.labels),
    };
    Ok(Table {
        x: labelled.x,
        categorical: labelled.categorical,
        text: labelled.text,
        y,
        feature_names: labelled.feature_names,
        target_names: targets,
        input: None,
    })
}

/// A table file's features and targets, as read by [`read_labelled_csv`].
pub struct LabelledCsv {
    /// The numeric features' names, the columns of `x`.
    pub feature_names: Vec<String>,
    /// `[rows, numeric features]`, missing values as NaN (with `missing: mean`).
    pub x: Tensor,
    /// The categorical features, as read.
    pub categorical: Vec<TextColumn>,
    /// The free-text features (read with [`Role::FreeText`]), as read.
    pub text: Vec<TextColumn>,
    /// Regression: the target columns, `[rows, targets]`.
    pub values: Option<Tensor>,
    /// Classification: the label column (empty for regression).
    pub labels: Text,
    /// Rows dropped for a missing target under `missing: mean`.
    pub unlabelled: usize,
}

/// Reads the feature columns that `features` picks from the header (each with how to read
/// it), and the `targets` columns: numbers for regression, one label column for
/// classification. The file is CSV or Parquet, as `format` says.
pub fn read_labelled_csv(
    path: &Path,
    format: Format,
    missing: Missing,
    task: Task,
    targets: &[String],
    features: impl FnOnce(&[String]) -> Result<Vec<(String, Role)>>,
) -> Result<LabelledCsv> {
    let mut free = HashSet::new();
    let data = format.read(path, missing, |header| {
        let mut wanted = features(header)?;
        free = wanted.iter().filter(|(_, role)| *role == Role::FreeText).map(|(name, _)| name.clone()).collect();
        let role = if task == Task::Classification { Role::Label } else { Role::Target };
        wanted.extend(targets.iter().map(|t| (t.clone(), role)));
        Ok(wanted)
    })?;
    let rows = data.rows;
    // In the order asked for: the features, then the targets.
    let mut names = data.names;
    names.truncate(names.len() - targets.len());
    let mut columns = data.columns;
    let target_columns = columns.split_off(names.len());
    let (mut feature_names, mut numeric, mut categorical, mut text) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (name, column) in names.into_iter().zip(columns) {
        match column {
            Column::Numbers(values) => {
                feature_names.push(name);
                numeric.push(values);
            }
            Column::Text(values) if free.contains(&name) => text.push(TextColumn { name, values }),
            Column::Text(values) => categorical.push(TextColumn { name, values }),
        }
    }
    // A column to spare per text feature: the codes go there in training.
    let x = column_matrix_spare(numeric, rows, categorical.len())?;
    let (mut values, mut labels) = (Vec::new(), Text::default());
    for column in target_columns {
        match column {
            Column::Numbers(v) => values.push(v),
            // A label is never missing (an error, or the row dropped); were one, it would
            // be the empty label.
            Column::Text(v) => labels = v.fill_missing(""),
        }
    }
    let values = (task == Task::Regression).then(|| column_matrix(values, rows)).transpose()?;
    Ok(LabelledCsv { feature_names, x, categorical, text, values, labels, unlabelled: data.unlabelled })
}
