//! `torchfit train FILE --target COLUMN`: a table without a config file. The config is
//! `configs/table.yaml` (the recommended default for a new table, docs/tables.md) with the
//! file, the target, the task and the task's loss and metrics filled in as `--set`s, which the
//! user's own `--set`s follow (and so override). Whether the task is classification is read
//! from the target column unless `--task` says.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Result};

use crate::config::{Config, Missing, Task};
use crate::data::{clip, delimiter_hint, list_names, Column, Format, Role};

/// The recommended default for a new table, as a config a user can copy and edit.
pub const TEMPLATE: &str = include_str!("../configs/table.yaml");

/// Where the template's text comes from, for errors about the user's `--set`s.
const SOURCE: &str = "configs/table.yaml (the table shortcut's config)";

/// A numeric target with at most this many distinct whole values is taken as class labels.
const MAX_INTEGER_CLASSES: usize = 10;

/// Whether `path` names a table file (by its extension) rather than a config file.
pub fn is_table(path: &Path) -> bool {
    let tables = ["csv", "tsv", "parquet", "pq"];
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| tables.iter().any(|t| e.eq_ignore_ascii_case(t)))
}

/// The config the shortcut trains on `path`, predicting `target`, and a line saying what it
/// decided (the task and why), for the user to see before training starts.
pub fn config(path: &Path, target: &str, task: Option<Task>, overrides: &[String]) -> Result<(Config, String)> {
    let format = match path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
        true => Format::Csv(b'\t'),
        false => Format::of(path, b','),
    };
    let (task, why) = match task {
        Some(task) => (task, "as --task says".to_string()),
        None => infer_task(path, format, target)?,
    };
    let mut sets = vec![
        format!("name={}", yaml_string(&path.file_stem().unwrap_or_default().to_string_lossy())),
        format!("data.kind={}", format.kind()),
        format!("data.path={}", yaml_string(&path.to_string_lossy())),
        format!("data.target={}", yaml_string(target)),
    ];
    if format == Format::Csv(b'\t') {
        sets.push("data.delimiter=\"\\t\"".into());
    }
    sets.extend(
        match task {
            Task::Classification => {
                ["task=classification", "training.loss=cross_entropy", "training.metrics=[accuracy, f1, log_loss]"]
            }
            Task::Regression => ["task=regression", "training.loss=mse", "training.metrics=[mae, rmse, r2]"],
        }
        .map(String::from),
    );
    if task == Task::Regression {
        sets.push("data.standardize_target=true".into());
    }
    sets.extend(overrides.iter().cloned());
    let config = Config::load_text(TEMPLATE, SOURCE, &sets, false)?;
    let task_name = match task {
        Task::Classification => "classification",
        Task::Regression => "regression",
    };
    let note = format!("{}: {task_name} of `{}` ({why}), with configs/table.yaml", path.display(), clip(target));
    Ok((config, note))
}

/// Classification when the target holds text or booleans, or only a few whole numbers;
/// regression otherwise. The reason comes with the answer.
fn infer_task(path: &Path, format: Format, target: &str) -> Result<(Task, String)> {
    crate::data::check_file("FILE", path)?;
    let file = path.display();
    let data = format.read(path, Missing::Mean, |header| {
        if !header.iter().any(|h| h == target) {
            let hint = match format {
                Format::Csv(delimiter) => delimiter_hint(header, delimiter),
                Format::Parquet => String::new(),
            };
            bail!(
                "--target: no column `{}` in {file} (columns: {}){hint}",
                clip(target),
                list_names(header.iter().map(String::as_str))
            );
        }
        Ok(vec![(target.to_string(), Role::Auto)])
    })?;
    let Some(column) = data.columns.first() else { bail!("--target: {file} has no column `{}`", clip(target)) };
    let (task, why) = match column {
        Column::Text(text) => (Task::Classification, format!("{} distinct text values", text.distinct().len())),
        Column::Numbers(numbers) => {
            let mut distinct = BTreeSet::new();
            let mut whole = true;
            for v in numbers.iter().filter(|v| !v.is_nan()) {
                whole &= v.fract() == 0.0;
                if distinct.len() <= MAX_INTEGER_CLASSES {
                    distinct.insert(v.to_bits());
                }
            }
            match whole && !distinct.is_empty() && distinct.len() <= MAX_INTEGER_CLASSES {
                true => (
                    Task::Classification,
                    format!("{} distinct whole numbers; --task regression to predict it as a number", distinct.len()),
                ),
                false => (Task::Regression, "numbers; --task classification to predict classes".to_string()),
            }
        }
    };
    if data.rows == 0 || matches!(column, Column::Numbers(n) if n.iter().all(f32::is_nan)) {
        bail!("--target: column `{}` of {file} has no values", clip(target));
    }
    Ok((task, why))
}

/// `text` as a YAML scalar that stays a string (a file name like `2024.csv`, `yes`).
fn yaml_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
