//! The features of new data for prediction: a `.npy` array, or a CSV or Parquet file's
//! columns matched to the model's feature names.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::csv::header::{clip, list};
use super::csv::{column_matrix, read_csv_rows, Column, Role};
use super::npy::{check_finite, read_npy};
use super::parquet::read_parquet;
use super::{is_missing, Format, Text, TextColumn};
use crate::cell::{parse_cell, trim, Cell};
use crate::config::Missing;

/// How [`read_features`] matched an input file's columns to the model's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnMatch {
    /// By the names in the CSV header or Parquet schema (other columns, such as the target,
    /// are ignored).
    ByName,
    /// In order: the CSV header (or Parquet schema) names none of the features.
    ByPosition,
    /// In order: the CSV file has no header (its first row is numbers).
    NoHeader,
    /// In order: a `.npy` array has no names.
    Array,
}

/// New data's features, as [`read_features`] reads them.
pub struct Features {
    /// `[rows, numeric features]` float32, NaN where a value is missing.
    pub x: Tensor,
    /// The categorical and free-text columns, by name.
    pub text: Vec<TextColumn>,
    pub matched: ColumnMatch,
    /// The columns asked to be kept (`torchfit predict --keep`), in the order asked: each
    /// cell's text as the file holds it (`None` where a Parquet value is null).
    pub kept: Vec<TextColumn>,
}

/// Reads the features of new data for prediction: a `.npy` file holding a 2-D numeric array
/// (numeric features only), a Parquet file (`.parquet`, `.pq`), or a CSV file split at
/// `delimiter`. Columns are picked by the model's feature names, `numeric` then
/// `categorical`, when the header (or Parquet schema) has them all, and a header with only
/// some of them is an error naming the others; for a model without categorical features a
/// header with none of them, or a CSV file without a header, means every column is a
/// feature, in order (but those kept). Missing cells become NaN (or `None` in a text column).
/// The free-text columns `text` (`data.text`) come back with the categorical ones, by name.
pub fn read_features(
    path: &Path,
    numeric: &[String],
    categorical: &[String],
    text: &[String],
    delimiter: u8,
) -> Result<(Tensor, Vec<TextColumn>, ColumnMatch)> {
    let features = read_features_keeping(path, numeric, categorical, text, &[], delimiter)?;
    Ok((features.x, features.text, features.matched))
}

/// [`read_features`], and the columns `keep` names, in the same pass, as they are
/// ([`Role::Verbatim`]).
pub fn read_features_keeping(
    path: &Path,
    numeric: &[String],
    categorical: &[String],
    text: &[String],
    keep: &[String],
    delimiter: u8,
) -> Result<Features> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let x = read_npy_features(path, numeric, categorical, text, keep)?;
        return Ok(Features { x, text: Vec::new(), matched: ColumnMatch::Array, kept: Vec::new() });
    }
    let names: Vec<&String> = numeric.iter().chain(categorical).chain(text).collect();
    let kept = keep.iter().map(|n| (n.clone(), Role::Verbatim));
    let by_name = || -> Vec<(String, Role)> {
        let numbers = numeric.iter().map(|n| (n.clone(), Role::Number));
        let categories = categorical.iter().map(|n| (n.clone(), Role::Text));
        numbers.chain(categories).chain(text.iter().map(|n| (n.clone(), Role::FreeText))).collect()
    };
    let mut matched = ColumnMatch::ByName;
    let format = Format::of(path, delimiter);
    let mut choose = |first: &[String]| -> Result<(Vec<(String, Role)>, Option<Vec<String>>)> {
        // A set of the header's names: it may have tens of thousands.
        let header: HashSet<&String> = first.iter().collect();
        check_kept(path, first, &header, keep)?;
        let absent: Vec<&String> = names.iter().copied().filter(|n| !header.contains(n)).collect();
        if absent.is_empty() {
            return Ok((by_name().into_iter().chain(kept.clone()).collect(), None));
        }
        let all = list(names.iter().map(|n| n.as_str()));
        if absent.len() < names.len() || !categorical.is_empty() || !text.is_empty() {
            bail!("{}: no column {} (the model's features are {all})", path.display(), or_list(&absent));
        }
        let by_position = |columns: &[String]| columns.iter().map(|c| (c.clone(), Role::Number)).collect();
        let is_number = |cell: &String| matches!(parse_cell(trim(cell), false), Cell::Number(_));
        // A Parquet schema always names its columns, however they read.
        let csv = format != Format::Parquet;
        if csv && first.iter().all(|c| is_number(c) || is_missing(c)) && first.iter().any(is_number) {
            // No header: name the columns after the features they are, when they fit.
            matched = ColumnMatch::NoHeader;
            let named: Vec<String> = if first.len() == numeric.len() {
                numeric.to_vec()
            } else {
                (1..=first.len()).map(|i| format!("#{i}")).collect()
            };
            return Ok((by_position(&named), Some(named)));
        }
        matched = ColumnMatch::ByPosition;
        // The columns kept are not features.
        let features: Vec<String> = first.iter().filter(|c| !keep.contains(c)).cloned().collect();
        let wanted: Vec<(String, Role)> = by_position(&features);
        Ok((wanted.into_iter().chain(kept.clone()).collect(), None))
    };
    let mut data = match format {
        Format::Csv(delimiter) => read_csv_rows(path, delimiter, Missing::Mean, choose)?,
        Format::Parquet => read_parquet(path, Missing::Mean, |header| Ok(choose(header)?.0))?,
    };
    // The kept columns were asked for last.
    let first_kept = data.columns.len() - keep.len();
    let kept = data.names.split_off(first_kept).into_iter().zip(data.columns.split_off(first_kept));
    let kept = kept.map(|(name, column)| TextColumn { name, values: as_text(column) }).collect();
    let (mut numbers, mut text) = (Vec::new(), Vec::new());
    for (name, column) in data.names.into_iter().zip(data.columns) {
        match column {
            Column::Numbers(values) => numbers.push(values),
            Column::Text(values) => text.push(TextColumn { name, values }),
        }
    }
    Ok(Features { x: column_matrix(numbers, data.rows)?, text, matched, kept })
}

/// A column as text: a kept column is read as text ([`Role::Verbatim`]), and any other
/// comes back as its numbers' decimal text.
fn as_text(column: Column) -> Text {
    match column {
        Column::Text(values) => values,
        Column::Numbers(values) => {
            let texts: Vec<Option<String>> = values.iter().map(|v| (!v.is_nan()).then(|| v.to_string())).collect();
            Text::from_values(texts.iter().map(Option::as_deref))
        }
    }
}

/// A `.npy` file's features: numbers only, with no columns to keep.
fn read_npy_features(
    path: &Path,
    numeric: &[String],
    categorical: &[String],
    text: &[String],
    keep: &[String],
) -> Result<Tensor> {
    if !categorical.is_empty() || !text.is_empty() {
        let names: Vec<&str> = categorical.iter().chain(text).map(String::as_str).collect();
        bail!(
            "{}: a .npy array has no column names; this model takes text columns too ({}): use a CSV or Parquet file",
            path.display(),
            names.join(", ")
        );
    }
    if !keep.is_empty() {
        let keep: Vec<&String> = keep.iter().collect();
        bail!(
            "{}: a .npy array has no columns, so none to keep ({}); use a CSV or Parquet file",
            path.display(),
            or_list(&keep)
        );
    }
    let t = read_npy("input", path)?;
    if t.dim() != 2 {
        bail!("{}: expected a 2-D array [samples, features], got shape {:?}", path.display(), t.size());
    }
    let x = t.f_to_kind(Kind::Float)?;
    let name = |col: usize| match numeric.get(col) {
        Some(feature) => format!("{} (`{}`)", col + 1, clip(feature)),
        None => (col + 1).to_string(),
    };
    check_finite(&path.display().to_string(), &x, name)?;
    Ok(x)
}

/// An error for the first of `keep` (`--keep`'s columns) that `header` lacks, with the name
/// it most likely meant.
fn check_kept(path: &Path, first: &[String], header: &HashSet<&String>, keep: &[String]) -> Result<()> {
    let Some(name) = keep.iter().find(|k| !header.contains(k)) else { return Ok(()) };
    let hint = match nearest(name, first) {
        Some(near) => format!("; did you mean `{}`?", clip(near)),
        None => String::new(),
    };
    let columns = list(first.iter().map(String::as_str));
    bail!("{}: --keep: no column `{}`{hint} (columns: {columns})", path.display(), clip(name))
}

/// The name of `names` nearest `name` in edit distance, when near enough to be a slip.
fn nearest<'a>(name: &str, names: &'a [String]) -> Option<&'a String> {
    let best = crate::config::nearest(name, names)?;
    (strsim::levenshtein(name, best) <= name.chars().count().max(2) / 2 + 1).then_some(best)
}

/// `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``: column names for a message (long
/// names cut, and at most a dozen named).
pub fn or_list(names: &[&String]) -> String {
    const SHOWN: usize = 12;
    let mut quoted: Vec<String> = names.iter().take(SHOWN).map(|n| format!("`{}`", clip(n))).collect();
    if names.len() > SHOWN {
        quoted.push(format!("{} more", names.len() - SHOWN));
    }
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}
