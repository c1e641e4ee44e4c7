//! A request's rows, checked against the model before they may join a batch. [`Rows::new`]
//! is the only way to make them, and it holds every request to what a batch relies on:
//! exactly `count * features` numeric values and `count` values per categorical column (so
//! that rows cannot shift from one request into another when a batch is split back), no
//! infinities, and no missing value that the model cannot fill. After it, the forward pass
//! has nothing left to refuse, and any failure there is the server's own (a 500).

use anyhow::{bail, Result};

use crate::config::Missing;
use crate::predict::Predictor;

/// Rows of one request: the numeric features row by row, and each categorical feature's
/// values (in [`Predictor::categorical`] order; `None` where missing).
#[derive(Debug)]
pub struct Rows {
    count: usize,
    /// `count * features` values, row-major; NaN where missing.
    numeric: Vec<f32>,
    text: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// Checks a request's rows against the model; the error is the client's, one line.
    pub fn new(predictor: &Predictor, count: usize, numeric: Vec<f32>, text: Vec<Vec<Option<String>>>) -> Result<Rows> {
        let features = predictor.features();
        let categorical = predictor.categorical();
        if count == 0 {
            bail!("the batch is empty: send at least one row");
        }
        if count.checked_mul(features.len()) != Some(numeric.len()) {
            bail!("{} numeric values are not {count} rows of {} features", numeric.len(), features.len());
        }
        if text.len() != categorical.len() {
            bail!("{} categorical columns were given, but the model takes {}", text.len(), categorical.len());
        }
        for (column, feature) in text.iter().zip(categorical) {
            if column.len() != count {
                bail!("categorical column `{}` has {} values, but there are {count} rows", feature.name, column.len());
            }
        }
        let fills = predictor.config().data.missing == Missing::Mean;
        for (k, v) in numeric.iter().enumerate() {
            let (row, column) = (k / features.len() + 1, &features[k % features.len()]);
            if v.is_infinite() {
                bail!(
                    "row {row} column `{column}` is infinite (out of float32 range?); only finite values are accepted"
                );
            }
            if v.is_nan() && !fills {
                bail!(
                    "row {row} column `{column}` is missing, and the model fills missing values only when trained with data.missing: mean"
                );
            }
        }
        Ok(Rows { count, numeric, text })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn numeric(&self) -> &[f32] {
        &self.numeric
    }

    /// Categorical column `j`'s values.
    pub fn text(&self, j: usize) -> &[Option<String>] {
        self.text.get(j).map_or(&[], Vec::as_slice)
    }
}
