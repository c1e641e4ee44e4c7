//! Using a trained model: [`Predictor`] (a model.pt loaded once, then asked for many
//! predictions), `torchfit predict` on CSV and NPY files, and `torchfit evaluate` of a run on
//! new labelled data.

mod evaluate;
mod io;
mod predictor;

pub use evaluate::evaluate;
pub use io::predict;
pub use predictor::{Prediction, Predictor};

use crate::config::Config;

/// The CSV delimiter a run was trained with: its `data.delimiter`, one ASCII character.
fn delimiter(config: &Config) -> u8 {
    config.data.delimiter.as_bytes().first().copied().unwrap_or(b',')
}
