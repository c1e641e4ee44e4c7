//! torchfit: train multi-layer perceptrons on libtorch from YAML configs, with Keras's
//! semantics where it matters, and leave artifacts that PyTorch loads as they are.
//!
//! One module per concept; `train::train` is the loop that ties them together.

pub mod atomic;
pub mod config;
pub mod data;
pub mod device;
pub mod export;
pub mod model;
pub mod optim;
pub mod predict;
pub mod report;
pub mod train;
