//! `torchfit predict` on files: features from a CSV, Parquet or NPY file in, predictions as CSV out.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::Kind;

use super::{Prediction, Predictor};
use crate::atomic;
use crate::data::{self, ColumnMatch, Features, TextColumn};

/// What `torchfit predict` is asked for besides the model and its input.
#[derive(Debug, Clone, Copy, Default)]
pub struct PredictOptions<'a> {
    /// Write the predictions here rather than to standard output.
    pub output: Option<&'a Path>,
    /// Classification: each class's probability too.
    pub proba: bool,
    /// Input columns copied into the output (an id, say), first and in this order.
    pub keep: &'a [String],
}

/// Predicts for every row of `input` with `model` (a model.pt or a run directory) and writes
/// CSV to `options.output`, or to `stdout` when no output file is given: the kept columns
/// first (`options.keep`, as the input holds them), then `prediction` (or `prediction_<i>`)
/// for regression; `label` for classification, plus one `p_<label>` column per class with
/// `proba`. CSV input is read with the delimiter the model was trained with.
pub fn predict(model: &Path, input: &Path, options: &PredictOptions, stdout: &mut dyn Write) -> Result<()> {
    let predictor = Predictor::load(model)?;
    if options.proba && predictor.labels().is_none() {
        bail!("--proba needs a classification model; {} is a regression", predictor.path().display());
    }
    let file = input.display();
    if let Some(array) = predictor.array() {
        if !input.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            bail!("{file}: {} takes {}: pass a .npy file", predictor.path().display(), super::array::describe(array));
        }
        if !options.keep.is_empty() {
            bail!("{file}: --keep copies columns of a table, and a .npy array has none");
        }
        let x = data::read_array("input", input, array)?;
        let prediction = predictor.predict_array(&x, options.proba).with_context(|| file.to_string())?;
        return write_csv(&to_csv(&prediction, predictor.labels(), &[])?, options.output, stdout);
    }
    let (categorical, free) = (predictor.categorical_names(), predictor.text_names());
    let features = predictor.features();
    let Features { x, text, matched, kept } =
        data::read_features_keeping(input, features, &categorical, &free, options.keep, predictor.delimiter())?;
    let prediction = predictor.predict(&x, &text, options.proba).with_context(|| file.to_string())?;
    let csv = to_csv(&prediction, predictor.labels(), &kept)?;
    // Said only once the predictions exist, so that a failure stays one line.
    let features = features.join(", ");
    match matched {
        ColumnMatch::ByPosition => eprintln!(
            "torchfit: warning: {file}: the header names none of the model's features ({features}); taking its columns in order"
        ),
        ColumnMatch::NoHeader => {
            eprintln!("torchfit: warning: {file} has no header row; taking its columns in order as {features}")
        }
        ColumnMatch::ByName | ColumnMatch::Array => {}
    }
    write_csv(&csv, options.output, stdout)
}

fn write_csv(csv: &[u8], output: Option<&Path>, stdout: &mut dyn Write) -> Result<()> {
    match output {
        Some(path) => atomic::write(path, csv),
        None => Ok(stdout.write_all(csv)?),
    }
}

/// The predictions as CSV text, labels in place of class indices, after the `kept` columns
/// (their text as read, quoted where CSV needs it; a null empty). Rows are written one at a
/// time into one record: no second copy of the table.
fn to_csv(prediction: &Prediction, labels: Option<&[String]>, kept: &[TextColumn]) -> Result<Vec<u8>> {
    let columns = Columns::of(prediction, labels)?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = columns.header();
    out.write_record(kept.iter().map(|c| c.name.as_str()).chain(header.iter().map(String::as_str)))?;
    let mut record = csv::StringRecord::new();
    for row in 0..columns.rows() {
        record.clear();
        for column in kept {
            record.push_field(column.values.get(row).unwrap_or(""));
        }
        columns.push_row(row, &mut record);
        out.write_record(&record)?;
    }
    out.into_inner().map_err(|e| anyhow!("{e}"))
}

/// The prediction columns' values, read off the tensors once.
enum Columns<'a> {
    /// Classification: each row's class index and, if asked, its `[classes]` probabilities.
    Classes { index: Vec<i64>, proba: Option<Vec<f32>>, labels: &'a [String] },
    /// Regression: `cols` values a row.
    Values { values: Vec<f32>, cols: usize },
}

impl<'a> Columns<'a> {
    fn of(prediction: &Prediction, labels: Option<&'a [String]>) -> Result<Columns<'a>> {
        if let Some(labels) = labels {
            let index = Vec::<i64>::try_from(prediction.output.flatten(0, -1))?;
            let proba = prediction.proba.as_ref().map(|p| Vec::<f32>::try_from(p.to_kind(Kind::Float).flatten(0, -1)));
            return Ok(Columns::Classes { index, proba: proba.transpose()?, labels });
        }
        let y = &prediction.output;
        let y = if y.dim() == 1 { y.unsqueeze(1) } else { y.shallow_clone() };
        let cols = y.size().get(1).copied().unwrap_or(1).max(1) as usize;
        Ok(Columns::Values { values: Vec::<f32>::try_from(y.to_kind(Kind::Float).flatten(0, -1))?, cols })
    }

    /// `label` (and `p_<label>` per class), or `prediction` (`prediction_<i>` per target).
    fn header(&self) -> Vec<String> {
        match self {
            Columns::Classes { proba, labels, .. } => {
                let p = labels.iter().map(|l| format!("p_{l}")).filter(|_| proba.is_some());
                std::iter::once("label".to_string()).chain(p).collect()
            }
            Columns::Values { cols: 1, .. } => vec!["prediction".into()],
            Columns::Values { cols, .. } => (0..*cols).map(|i| format!("prediction_{i}")).collect(),
        }
    }

    fn rows(&self) -> usize {
        match self {
            Columns::Classes { index, .. } => index.len(),
            Columns::Values { values, cols } => values.len() / cols,
        }
    }

    /// Appends row `row`'s cells to `record`.
    fn push_row(&self, row: usize, record: &mut csv::StringRecord) {
        match self {
            Columns::Classes { index, proba, labels } => {
                let class = index[row];
                match usize::try_from(class).ok().and_then(|c| labels.get(c)) {
                    Some(label) => record.push_field(label),
                    None => record.push_field(&class.to_string()),
                }
                if let Some(p) = proba {
                    let probabilities = p.get(row * labels.len()..(row + 1) * labels.len()).unwrap_or_default();
                    probabilities.iter().for_each(|p| record.push_field(&p.to_string()));
                }
            }
            Columns::Values { values, cols } => {
                values[row * cols..(row + 1) * cols].iter().for_each(|v| record.push_field(&v.to_string()));
            }
        }
    }
}
