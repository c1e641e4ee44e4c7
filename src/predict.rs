//! `torchfit predict`: runs an exported `model.pt` on a CSV or `.npy` file of features.

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use tch::{CModule, Kind, Tensor};

use crate::{atomic, data, export};

/// Predicts for every row of `input` and writes CSV (`prediction` or `prediction_<i>`
/// columns) to `output`, or to `stdout` when no output file is given.
pub fn predict(
    model_path: &Path,
    input: &Path,
    output: Option<&Path>,
    stdout: &mut dyn Write,
) -> Result<()> {
    export::ensure_archive(model_path)?;
    let module = CModule::load(model_path).map_err(|e| {
        anyhow!(
            "{}: cannot load as TorchScript: {}",
            model_path.display(),
            first_line(&e.to_string())
        )
    })?;
    let x = data::read_matrix(input)?;
    if let Some(expected) = export::expected_inputs(&module)? {
        let got = x.size()[1] as usize;
        if got != expected {
            bail!(
                "{}: has {got} feature column(s), but {} expects {expected}",
                input.display(),
                model_path.display()
            );
        }
    }
    let y = tch::no_grad(|| module.forward_ts(&[&x])).map_err(|e| {
        anyhow!(
            "{}: forward failed: {}",
            model_path.display(),
            first_line(&e.to_string())
        )
    })?;
    let csv = predictions_csv(&y)?;
    match output {
        Some(path) => atomic::write(path, &csv),
        None => Ok(stdout.write_all(&csv)?),
    }
}

fn predictions_csv(y: &Tensor) -> Result<Vec<u8>> {
    let y = if y.dim() == 1 {
        y.unsqueeze(1)
    } else {
        y.shallow_clone()
    };
    let (rows, cols) = (y.size()[0] as usize, y.size()[1] as usize);
    let values = Vec::<f32>::try_from(y.to_kind(Kind::Float).flatten(0, -1))?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let header: Vec<String> = if cols == 1 {
        vec!["prediction".into()]
    } else {
        (0..cols).map(|i| format!("prediction_{i}")).collect()
    };
    out.write_record(&header)?;
    for r in 0..rows {
        out.write_record(values[r * cols..(r + 1) * cols].iter().map(f32::to_string))?;
    }
    out.into_inner().map_err(|e| anyhow!("{e}"))
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim()
}
