//! `torchfit tokenize`: the token ids a text model takes, for the text columns of a CSV or
//! Parquet file, as an int64 `.npy` array `[rows, text columns * max_length]`: what Python
//! puts after the numeric features and categorical codes to call model.pt itself, and what
//! the ONNX export's `ids` input takes.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::Predictor;
use crate::{atomic, data};

/// Writes the ids of `input`'s text columns, for the model of `model` (a run directory or a
/// model.pt), to `output`, atomically; returns the array's shape.
pub fn tokenize(model: &Path, input: &Path, output: &Path) -> Result<[usize; 2]> {
    let predictor = Predictor::load(model)?;
    let names = predictor.text_names();
    if names.is_empty() {
        bail!("{} has no text columns (data.text) to tokenise", predictor.path().display());
    }
    let (_, text, _) = data::read_features(input, &[], &[], &names, predictor.delimiter())?;
    let ids = predictor.token_ids(&text).with_context(|| input.display().to_string())?;
    let size = ids.size();
    atomic::write_with(output, |tmp| Ok(ids.write_npy(tmp)?))?;
    Ok([size[0] as usize, size[1] as usize])
}
