//! What a parsed cell means for its row under the missing-value policy, and the error that
//! names a cell the file cannot be read past. The CSV readers (sequential and parallel) and
//! the Parquet reader all decide here, so that every format fails and fills alike.

use std::fmt;

use super::header::clip;
use super::{Cell, Role};
use crate::config::Missing;

/// What becomes of a row, as far as one of its cells says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::data) enum Keep {
    Row,
    /// A missing cell under `missing: drop_row`.
    Drop,
    /// A missing target or label under `missing: mean`: the row cannot be learned from or
    /// scored, so it is dropped (and counted, for a warning); features are still filled.
    Unlabelled,
}

/// Why a cell stops the reading of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A missing label under `missing: error`.
    MissingLabel,
    /// A missing cell under `missing: error`.
    Missing,
    /// Text in a column of numbers.
    NotANumber,
    /// A number that is infinite (`inf`), or too large for float32 (`1e400`): training on it
    /// gives NaN losses, predicting NaN probabilities.
    NotFinite,
}

/// Whether the row of `cell` is kept under the `missing` policy, or why the file cannot be
/// read.
pub(in crate::data) fn judge(cell: &Cell, role: Role, missing: Missing) -> Result<Keep, Problem> {
    match (cell, role) {
        (Cell::Missing, Role::Target | Role::Label) => match missing {
            Missing::DropRow => Ok(Keep::Drop),
            Missing::Mean => Ok(Keep::Unlabelled),
            Missing::Error if role == Role::Label => Err(Problem::MissingLabel),
            Missing::Error => Err(Problem::Missing),
        },
        // Free text reads a missing cell as empty; a kept column copies it as it is.
        (Cell::Missing, Role::FreeText | Role::Verbatim) => Ok(Keep::Row),
        (Cell::Missing, _) => match missing {
            Missing::DropRow => Ok(Keep::Drop),
            Missing::Mean => Ok(Keep::Row),
            Missing::Error => Err(Problem::Missing),
        },
        (Cell::Text, Role::Number | Role::Target) => Err(Problem::NotANumber),
        (Cell::Number(v), _) if !v.is_finite() => Err(Problem::NotFinite),
        _ => Ok(Keep::Row),
    }
}

/// A cell the file cannot be read past: where it is (file, row, line, column), what it
/// holds, and why. Typed, so that `torchfit evaluate` can give the hint that fits a trained
/// run rather than a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellError {
    /// `FILE: row R (line L), column `C``.
    pub place: String,
    pub problem: Problem,
    /// The cell's text, trimmed.
    pub text: String,
    pub role: Role,
    /// The target is that of a trained regression run (`evaluate`), not one a config may
    /// still change.
    pub trained_regression: bool,
}

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (place, text) = (&self.place, clip(&self.text));
        match self.problem {
            Problem::MissingLabel => {
                write!(f, "{place}: missing label; set data.missing to drop_row or mean to skip unlabelled rows")
            }
            Problem::Missing => write!(f, "{place}: missing value; set data.missing to drop_row or mean"),
            Problem::NotANumber => {
                // Text in a target column is likely a class label.
                let hint = match (self.role, self.trained_regression) {
                    (Role::Target, true) => "; the run is a regression, so its target column must hold numbers",
                    (Role::Target, false) => "; if it is a class label, set task: classification",
                    _ => "",
                };
                write!(f, "{place}: {text:?} is not a number{hint}")
            }
            Problem::NotFinite => write!(
                f,
                "{place}: {text:?} is not a finite number (infinite, or beyond float32's ±3.4e38); fix the cell, or leave it empty to have data.missing handle it"
            ),
        }
    }
}

impl std::error::Error for CellError {}
