//! CSV files: streamed through the csv crate into one f32 buffer, keeping only the columns
//! asked for; errors name the file, the row, the line and the column.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::Tensor;

use super::{is_missing, Table, Target};
use crate::config::{DataConfig, Features, Missing, Task};

/// The columns a CSV reader is asked for.
pub struct CsvColumns {
    /// Numeric columns, read as f32 (missing: NaN when `missing: mean` allows it).
    pub numeric: Vec<String>,
    /// Which numeric columns may hold missing values under `missing: mean` (features may;
    /// targets may not).
    pub fillable: Vec<bool>,
    /// One column read as text (class labels).
    pub text: Option<String>,
}

pub struct CsvData {
    pub header: Vec<String>,
    /// Row-major values of the numeric columns.
    pub numeric: Vec<f32>,
    pub text: Vec<String>,
    pub rows: usize,
}

/// Streams a CSV file with a header row, keeping only the requested columns; `choose` picks
/// them once the header is known. Errors name the file, the row and the column.
pub fn read_csv(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<CsvColumns>,
) -> Result<CsvData> {
    read_csv_rows(path, delimiter, missing, |first| Ok((choose(first)?, None)))
}

/// [`read_csv`], where `choose` sees the first row and may decide that it is data rather than
/// a header: it then returns names for the columns (for lookups and messages).
pub(super) fn read_csv_rows(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<(CsvColumns, Option<Vec<String>>)>,
) -> Result<CsvData> {
    let file = path.display();
    // No header as far as the csv crate knows: records() then yields the first row too,
    // and we skip it when it is the header.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_path(path)
        .with_context(|| format!("cannot read {file}"))?;
    let first: Vec<String> = reader
        .headers()
        .with_context(|| format!("{file}: cannot read the header row"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if first.iter().all(String::is_empty) {
        bail!("{file}: the file is empty; expected a header row, then one row per sample");
    }
    let (wanted, names) = choose(&first)?;
    let first_is_data = names.is_some();
    let header = names.unwrap_or(first);
    let position = |name: &String| -> Result<usize> {
        let mut at = header.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| i);
        match (at.next(), at.next()) {
            (Some(i), None) => Ok(i),
            (Some(_), Some(_)) => bail!("{file}: the header has more than one column `{name}`"),
            (None, _) => bail!("{file}: no column `{name}` (columns: {})", header.join(", ")),
        }
    };
    let numeric: Vec<usize> = wanted.numeric.iter().map(position).collect::<Result<_>>()?;
    let text = wanted.text.as_ref().map(position).transpose()?;
    let (mut values, mut labels, mut rows) = (Vec::new(), Vec::new(), 0usize);
    let mut row_values = Vec::with_capacity(numeric.len());
    let records = reader.records().skip(usize::from(!first_is_data));
    for (i, record) in records.enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| anyhow!("{file}: row {row}: {}", csv_error(&e)))?;
        let start = record.position().map_or(0, |p| p.byte());
        // Only errors need the line, so it is counted only for them.
        let at = |col: usize| format!("{file}: row {row} (line {}), column `{}`", line_at(path, start), header[col]);
        let mut drop = false;
        row_values.clear();
        for (&col, &fillable) in numeric.iter().zip(&wanted.fillable) {
            let cell = record.get(col).unwrap_or("");
            if is_missing(cell) {
                match missing {
                    Missing::DropRow => drop = true,
                    Missing::Mean if fillable => row_values.push(f32::NAN),
                    Missing::Mean => bail!(
                        "{}: missing value; data.missing: mean fills features only, use drop_row for targets",
                        at(col)
                    ),
                    Missing::Error => bail!("{}: missing value; set data.missing to drop_row or mean", at(col)),
                }
                continue;
            }
            // Only target columns are unfillable; text there is likely a class label.
            let hint = if fillable { "" } else { "; if it is a class label, set task: classification" };
            let value: f32 = cell.trim().parse().map_err(|_| anyhow!("{}: {cell:?} is not a number{hint}", at(col)))?;
            row_values.push(value);
        }
        let label = match text {
            Some(col) => {
                let cell = record.get(col).unwrap_or("").trim();
                if is_missing(cell) {
                    match missing {
                        Missing::DropRow => drop = true,
                        _ => bail!("{}: missing label; set data.missing: drop_row to skip such rows", at(col)),
                    }
                }
                Some(cell.to_string())
            }
            None => None,
        };
        if drop {
            continue;
        }
        values.extend_from_slice(&row_values);
        labels.extend(label);
        rows += 1;
    }
    if rows == 0 {
        bail!("{file}: no data rows after the header");
    }
    Ok(CsvData { header, numeric: values, text: labels, rows })
}

/// The line on which the CSV record that the reader began at byte `start` begins. The
/// reader's own `Position::line` is where it stood at `start`, which is before the LF of a
/// CRLF line end (csv counts that LF only as it reads the next record) and before any blank
/// lines it skips; so count the file's newlines, and those skipped, here.
fn line_at(path: &Path, start: u64) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let (mut line, mut offset) = (1, 0u64);
    let mut chunk = [0u8; 1 << 16];
    while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut chunk) {
        for &byte in &chunk[..n] {
            if offset >= start && byte != b'\n' && byte != b'\r' {
                return line;
            }
            line += u64::from(byte == b'\n');
            offset += 1;
        }
    }
    line
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text".to_string(),
        _ => e.to_string(),
    }
}

pub(super) fn read_csv_table(d: &DataConfig, task: Task) -> Result<Table> {
    let path = d.path.as_deref().context("data.path is required for kind csv")?;
    if !path.is_file() {
        bail!("data.path: {}: no such file", path.display());
    }
    let targets = d.target.as_ref().map(|t| t.names()).unwrap_or_default();
    let labelled = read_labelled_csv(path, d.delimiter(), d.missing, task, &targets, |header| {
        for target in &targets {
            if !header.contains(target) {
                bail!("data.target: no column `{target}` in {} (columns: {})", path.display(), header.join(", "));
            }
        }
        let features: Vec<String> = match &d.features {
            Some(Features::Columns(names)) => {
                if let Some(t) = names.iter().find(|n| targets.contains(n)) {
                    bail!("data.features: `{t}` is also the target");
                }
                names.clone()
            }
            _ => header.iter().filter(|h| !targets.contains(h)).cloned().collect(),
        };
        if features.is_empty() {
            bail!("data.features: {} has no columns besides the target", path.display());
        }
        Ok(features)
    })?;
    let y = match labelled.values {
        Some(values) => Target::Values(values),
        None => classes_from_labels(&labelled.labels),
    };
    Ok(Table { x: labelled.x, y, feature_names: labelled.feature_names, target_names: targets })
}

/// A CSV file's features and targets, as read by [`read_labelled_csv`].
pub struct LabelledCsv {
    pub feature_names: Vec<String>,
    /// `[rows, features]`, missing values as NaN (with `missing: mean`).
    pub x: Tensor,
    /// Regression: the target columns, `[rows, targets]`.
    pub values: Option<Tensor>,
    /// Classification: the label column's strings.
    pub labels: Vec<String>,
}

/// Reads the feature columns that `features` picks from the header, and the `targets`
/// columns: numbers for regression, one label column for classification.
pub fn read_labelled_csv(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    task: Task,
    targets: &[String],
    features: impl FnOnce(&[String]) -> Result<Vec<String>>,
) -> Result<LabelledCsv> {
    let mut feature_names = Vec::new();
    let data = read_csv(path, delimiter, missing, |header| {
        feature_names = features(header)?;
        let mut numeric = feature_names.clone();
        let mut fillable = vec![true; numeric.len()];
        let text = match task {
            Task::Classification => targets.first().cloned(),
            Task::Regression => {
                numeric.extend(targets.iter().cloned());
                fillable.extend(targets.iter().map(|_| false));
                None
            }
        };
        Ok(CsvColumns { numeric, fillable, text })
    })?;
    let width = (data.numeric.len() / data.rows) as i64;
    let all = Tensor::f_from_slice(&data.numeric)?.f_reshape([data.rows as i64, width])?;
    let f = feature_names.len() as i64;
    let values = (task == Task::Regression).then(|| all.narrow(1, f, width - f).contiguous());
    Ok(LabelledCsv { x: all.narrow(1, 0, f).contiguous(), values, labels: data.text, feature_names })
}

/// Maps label strings to class indices; labels sort numerically when they are all integers.
pub fn classes_from_labels(values: &[String]) -> Target {
    let distinct: BTreeSet<&String> = values.iter().collect();
    let mut labels: Vec<String> = distinct.into_iter().cloned().collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    let index: Vec<i64> = values.iter().map(|v| labels.iter().position(|l| l == v).unwrap_or(0) as i64).collect();
    Target::Classes { index: Tensor::from_slice(&index), labels }
}
