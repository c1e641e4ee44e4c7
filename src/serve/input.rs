//! A request's rows, checked against the model before they may join a batch. [`Rows::new`]
//! is the only way to make them, and it holds every request to what a batch relies on:
//! exactly `count * features` numeric values and `count` values per categorical column (so
//! that rows cannot shift from one request into another when a batch is split back), no
//! infinities, and no missing value that the model cannot fill. After it, the forward pass
//! has nothing left to refuse, and any failure there is the server's own (a 500).
//! An array model's rows ([`Rows::array`]) are whole samples of its input shape, in its
//! element type.

use anyhow::{bail, Result};

use crate::predict::array::{describe, sample_len};
use crate::predict::{Dtype, Predictor};

/// Rows of one request: the numeric features row by row, and each categorical feature's
/// values (in [`Predictor::categorical`] order; `None` where missing). For an array model,
/// its samples, flattened.
#[derive(Debug)]
pub struct Rows {
    count: usize,
    /// `count * features` values, row-major; NaN where missing. A float32 array model's
    /// samples, row-major.
    numeric: Vec<f32>,
    /// An int64 array model's samples, row-major.
    ints: Vec<i64>,
    text: Vec<Vec<Option<String>>>,
}

/// The values of an array model's samples, as a request gave them.
#[derive(Debug)]
pub enum ArrayValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Rows {
    /// Checks a request's rows against the model; the error is the client's, one line.
    pub fn new(predictor: &Predictor, count: usize, numeric: Vec<f32>, text: Vec<Vec<Option<String>>>) -> Result<Rows> {
        let features = predictor.features();
        let categorical = predictor.text_inputs();
        if let Some(array) = predictor.array() {
            bail!("the model takes {}, not rows of features", describe(array));
        }
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
                bail!("text column `{feature}` has {} values, but there are {count} rows", column.len());
            }
        }
        let no_fill = predictor.no_fill();
        for (k, v) in numeric.iter().enumerate() {
            let (row, column) = (k / features.len() + 1, &features[k % features.len()]);
            if v.is_infinite() {
                bail!(
                    "row {row} column `{column}` is infinite (out of float32 range?); only finite values are accepted"
                );
            }
            if let Some(why) = no_fill.filter(|_| v.is_nan()) {
                bail!("row {row} column `{column}` is missing, and the model {why}");
            }
        }
        Ok(Rows { count, numeric, ints: Vec::new(), text })
    }

    /// Checks an array model's samples: `count` of them, each of the model's input shape, in
    /// its element type, floats finite.
    pub fn array(predictor: &Predictor, count: usize, values: ArrayValues) -> Result<Rows> {
        let Some(array) = predictor.array() else {
            bail!("the model takes rows of features, not arrays");
        };
        if count == 0 {
            bail!("the batch is empty: send at least one sample");
        }
        let (len, dtype) = match &values {
            ArrayValues::F32(v) => (v.len(), Dtype::Float32),
            ArrayValues::I64(v) => (v.len(), Dtype::Int64),
        };
        if dtype != array.dtype {
            bail!("{} values were given, but the model takes {}", dtype.name(), describe(array));
        }
        if count.checked_mul(sample_len(array)) != Some(len) {
            bail!("{len} values are not {count} samples of shape {:?} ({})", array.shape, describe(array));
        }
        Ok(match values {
            ArrayValues::F32(numeric) => {
                if let Some(k) = numeric.iter().position(|v| !v.is_finite()) {
                    bail!(
                        "sample {} has a value that is NaN or infinite; only finite values are accepted",
                        k / sample_len(array) + 1
                    );
                }
                Rows { count, numeric, ints: Vec::new(), text: Vec::new() }
            }
            ArrayValues::I64(ints) => Rows { count, numeric: Vec::new(), ints, text: Vec::new() },
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn numeric(&self) -> &[f32] {
        &self.numeric
    }

    /// An int64 array model's samples.
    pub fn ints(&self) -> &[i64] {
        &self.ints
    }

    /// Categorical column `j`'s values.
    pub fn text(&self, j: usize) -> &[Option<String>] {
        self.text.get(j).map_or(&[], Vec::as_slice)
    }
}
