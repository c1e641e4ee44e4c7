//! Using a trained model: [`Predictor`] (a model.pt loaded once, then asked for many
//! predictions), `torchfit predict` on CSV and NPY files, and `torchfit evaluate` of a run on
//! new labelled data, with a classifier's confusion matrix and per-class report.

pub mod array;
mod evaluate;
mod io;
mod predictor;
mod report;
mod tokenize;

pub use array::{ArrayInput, Dtype};
pub use evaluate::{evaluate, Evaluation};
pub use io::{predict, PredictOptions};
pub use predictor::{load_module, Prediction, Predictor};
pub use report::{Confusion, Scores};
pub use tokenize::tokenize;
