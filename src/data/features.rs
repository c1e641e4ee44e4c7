//! The features of new data for prediction: a `.npy` array, or a CSV file's columns matched
//! to the model's feature names.

use std::path::Path;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::csv::{read_csv_rows, CsvColumns};
use super::is_missing;
use super::npy::read_npy;
use crate::config::Missing;

/// How [`read_features`] matched an input file's columns to the model's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnMatch {
    /// By the names in the CSV header (other columns, such as the target, are ignored).
    ByName,
    /// In order: the CSV header names none of the features.
    ByPosition,
    /// In order: the CSV file has no header (its first row is numbers).
    NoHeader,
    /// In order: a `.npy` array has no names.
    Array,
}

/// Reads a feature matrix for prediction: a `.npy` file holding a 2-D numeric array, or a
/// CSV file. CSV columns are picked by the model's feature `names` when the header has them
/// all, and a header with only some of them is an error naming the others; a header with
/// none of them, or no header at all, means every column is a feature, in order. Missing
/// cells become NaN.
pub fn read_features(path: &Path, names: &[String], delimiter: u8) -> Result<(Tensor, ColumnMatch)> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let t = read_npy("input", path)?;
        if t.dim() != 2 {
            bail!("{}: expected a 2-D array [samples, features], got shape {:?}", path.display(), t.size());
        }
        return Ok((t.f_to_kind(Kind::Float)?, ColumnMatch::Array));
    }
    let mut matched = ColumnMatch::ByName;
    let data = read_csv_rows(path, delimiter, Missing::Mean, |first| {
        let columns = |numeric: Vec<String>| CsvColumns { fillable: vec![true; numeric.len()], numeric, text: None };
        let absent: Vec<&String> = names.iter().filter(|n| !first.contains(n)).collect();
        if absent.is_empty() {
            return Ok((columns(names.to_vec()), None));
        }
        if absent.len() < names.len() {
            bail!("{}: no column {} (the model's features are {})", path.display(), or_list(&absent), names.join(", "));
        }
        let is_number = |cell: &String| cell.parse::<f32>().is_ok();
        if first.iter().all(|c| is_number(c) || is_missing(c)) && first.iter().any(is_number) {
            // No header: name the columns after the features they are, when they fit.
            matched = ColumnMatch::NoHeader;
            let named: Vec<String> = if first.len() == names.len() {
                names.to_vec()
            } else {
                (1..=first.len()).map(|i| format!("#{i}")).collect()
            };
            return Ok((columns(named.clone()), Some(named)));
        }
        matched = ColumnMatch::ByPosition;
        Ok((columns(first.to_vec()), None))
    })?;
    let cols = data.numeric.len() / data.rows;
    let x = Tensor::f_from_slice(&data.numeric)?.f_reshape([data.rows as i64, cols as i64])?;
    Ok((x, matched))
}

/// `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``: column names for a message.
pub fn or_list(names: &[&String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}
