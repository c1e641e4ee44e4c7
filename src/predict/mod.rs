//! Using a trained model: [`Predictor`] (a model.pt loaded once, then asked for many
//! predictions), `torchfit predict` on CSV and NPY files, and `torchfit evaluate` of a run on
//! new labelled data.

pub mod array;
mod evaluate;
mod io;
mod predictor;
mod tokenize;

pub use array::{ArrayInput, Dtype};
pub use evaluate::evaluate;
pub use io::predict;
pub use predictor::{load_module, Prediction, Predictor};
pub use tokenize::tokenize;
