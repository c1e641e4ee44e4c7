//! `torchfit predict` on files: features from a CSV, Parquet or NPY file in, predictions as CSV out.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use tch::Kind;

use super::{Prediction, Predictor};
use crate::atomic;
use crate::data::{self, ColumnMatch};

/// Predicts for every row of `input` with `model` (a model.pt or a run directory) and writes
/// CSV to `output`, or to `stdout` when no output file is given: `prediction` (or
/// `prediction_<i>`) for regression; `label` for classification, plus one `p_<label>` column
/// per class with `proba`. CSV input is read with the delimiter the model was trained with.
pub fn predict(model: &Path, input: &Path, output: Option<&Path>, proba: bool, stdout: &mut dyn Write) -> Result<()> {
    let predictor = Predictor::load(model)?;
    if proba && predictor.labels().is_none() {
        bail!("--proba needs a classification model; {} is a regression", predictor.path().display());
    }
    if let Some(array) = predictor.array() {
        let file = input.display();
        if !input.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
            bail!("{file}: {} takes {}: pass a .npy file", predictor.path().display(), super::array::describe(array));
        }
        let x = data::read_array("input", input, array)?;
        let prediction = predictor.predict_array(&x, proba).with_context(|| file.to_string())?;
        return write_csv(&to_csv(&prediction, predictor.labels())?, output, stdout);
    }
    let (categorical, free) = (predictor.categorical_names(), predictor.text_names());
    let (x, text, matched) =
        data::read_features(input, predictor.features(), &categorical, &free, predictor.delimiter())?;
    let prediction = predictor.predict(&x, &text, proba).with_context(|| input.display().to_string())?;
    let csv = to_csv(&prediction, predictor.labels())?;
    // Said only once the predictions exist, so that a failure stays one line.
    let features = predictor.features().join(", ");
    match matched {
        ColumnMatch::ByPosition => eprintln!(
            "torchfit: warning: {}: the header names none of the model's features ({features}); taking its columns in order",
            input.display()
        ),
        ColumnMatch::NoHeader => eprintln!(
            "torchfit: warning: {} has no header row; taking its columns in order as {features}",
            input.display()
        ),
        ColumnMatch::ByName | ColumnMatch::Array => {}
    }
    write_csv(&csv, output, stdout)
}

fn write_csv(csv: &[u8], output: Option<&Path>, stdout: &mut dyn Write) -> Result<()> {
    match output {
        Some(path) => atomic::write(path, csv),
        None => Ok(stdout.write_all(csv)?),
    }
}

/// The predictions as CSV text, labels in place of class indices.
fn to_csv(prediction: &Prediction, labels: Option<&[String]>) -> Result<Vec<u8>> {
    let mut out = csv::Writer::from_writer(Vec::new());
    match labels {
        Some(labels) => {
            let index = Vec::<i64>::try_from(prediction.output.flatten(0, -1))?;
            let mut header = vec!["label".to_string()];
            if prediction.proba.is_some() {
                header.extend(labels.iter().map(|l| format!("p_{l}")));
            }
            out.write_record(&header)?;
            let p = prediction.proba.as_ref().map(|p| Vec::<f32>::try_from(p.to_kind(Kind::Float).flatten(0, -1)));
            let p = p.transpose()?;
            for (row, &class) in index.iter().enumerate() {
                let label = usize::try_from(class).ok().and_then(|c| labels.get(c));
                let mut record = vec![label.cloned().unwrap_or_else(|| class.to_string())];
                if let Some(p) = &p {
                    let probabilities = p.get(row * labels.len()..(row + 1) * labels.len()).unwrap_or_default();
                    record.extend(probabilities.iter().map(f32::to_string));
                }
                out.write_record(&record)?;
            }
        }
        None => {
            let y = &prediction.output;
            let y = if y.dim() == 1 { y.unsqueeze(1) } else { y.shallow_clone() };
            let cols = y.size().get(1).copied().unwrap_or(1).max(1) as usize;
            let values = Vec::<f32>::try_from(y.to_kind(Kind::Float).flatten(0, -1))?;
            let header: Vec<String> = if cols == 1 {
                vec!["prediction".into()]
            } else {
                (0..cols).map(|i| format!("prediction_{i}")).collect()
            };
            out.write_record(&header)?;
            for row in values.chunks(cols) {
                out.write_record(row.iter().map(f32::to_string))?;
            }
        }
    }
    out.into_inner().map_err(|e| anyhow!("{e}"))
}
