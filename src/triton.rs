//! `torchfit export RUN --format triton --output REPO`: a Triton model repository that
//! Triton's PyTorch (libtorch) backend serves as it is:
//!
//! ```text
//! REPO/<name>/config.pbtxt   backend pytorch, max_batch_size, dynamic batching,
//!                            INPUT__0 and OUTPUT__0 with their data types and dims
//! REPO/<name>/1/model.pt     the run's model.pt
//! ```
//!
//! Triton calls the module's `forward`: `INPUT__0` is the model's encoded input, FP32
//! `[batch, numeric features + categorical features]` (the categorical ones as level codes,
//! see docs/serving.md), and `OUTPUT__0` is what `forward` returns: regression values in the
//! data's units (FP32 `[batch, targets]`), or class indices (INT64 `[batch]`, presented as
//! `[batch, 1]` through `reshape`, since Triton's batched dims cannot be empty). A model
//! trained on arrays takes its samples as `INPUT__0`: `[batch, ...per-sample dims]`, FP32 or
//! INT64 as model.pt's input.json records.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::atomic;
use crate::export::{self, Format};
use crate::predict::{Dtype, Predictor};
use crate::rundir;

/// The largest batch Triton's dynamic batcher may form.
pub const MAX_BATCH: usize = 1024;

/// Writes the repository for `run` (with `weights` instead of its own, if given) under
/// `repo`; returns the model's folder.
pub fn export_repository(run: &Path, weights: Option<&Path>, repo: &Path) -> Result<PathBuf> {
    let source = rundir::model_file(run)?;
    let predictor = Predictor::load(&source)?;
    let name = predictor.config().name.clone();
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        bail!("the run's name {name:?} cannot be a Triton model folder name");
    }
    let folder = repo.join(&name);
    let model = folder.join("1").join(rundir::MODEL);
    std::fs::create_dir_all(folder.join("1"))
        .with_context(|| format!("cannot create {}", folder.join("1").display()))?;
    match weights {
        Some(_) => {
            export::export_run(run, Some(Format::Torchscript), weights, Some(&model))?;
        }
        None => {
            let bytes = std::fs::read(&source).with_context(|| format!("cannot read {}", source.display()))?;
            atomic::write(&model, &bytes)?;
        }
    }
    let input = Input::of(&predictor);
    let output = output_of(&model, &input)?;
    atomic::write(&folder.join("config.pbtxt"), config(&name, &input, output).as_bytes())?;
    Ok(folder)
}

/// `INPUT__0`: its element type and the dims after the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub dtype: Dtype,
    pub dims: Vec<i64>,
}

impl Input {
    /// A table's model takes its encoded features as FP32; an array model its samples as
    /// it was trained on them (input.json).
    pub fn of(predictor: &Predictor) -> Input {
        match predictor.array() {
            Some(array) => Input { dtype: array.dtype, dims: array.shape.clone() },
            None => Input { dtype: Dtype::Float32, dims: vec![predictor.encoded_width() as i64] },
        }
    }
}

/// What `forward` returns for a batch: its element type and the dims after the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Values(usize),
    Classes,
}

/// Runs `forward` on two samples of zeros (level 0 for categorical features, token 0 for
/// token ids) to see what it returns, rather than assume it.
fn output_of(model: &Path, input: &Input) -> Result<Output> {
    let module = crate::predict::load_module(model, tch::Device::Cpu)?;
    let shape: Vec<i64> = std::iter::once(2).chain(input.dims.iter().copied()).collect();
    let x = Tensor::zeros(shape.as_slice(), (input.dtype.kind(), tch::Device::Cpu));
    let y = tch::no_grad(|| module.forward_ts(&[x])).with_context(|| format!("{}: forward failed", model.display()))?;
    match (y.kind(), y.size().as_slice()) {
        (Kind::Int64, [2]) => Ok(Output::Classes),
        (Kind::Float, [2, targets]) => Ok(Output::Values(*targets as usize)),
        (kind, shape) => {
            bail!("{}: forward returned {kind:?} {shape:?}, not a torchfit model's output", model.display())
        }
    }
}

/// The config.pbtxt text (protobuf text format of Triton's `ModelConfig`).
pub fn config(name: &str, input: &Input, output: Output) -> String {
    let output = match output {
        Output::Values(targets) => format!("    data_type: TYPE_FP32\n    dims: [ {targets} ]\n"),
        Output::Classes => "    data_type: TYPE_INT64\n    dims: [ 1 ]\n    reshape: { shape: [ ] }\n".to_string(),
    };
    let data_type = match input.dtype {
        Dtype::Float32 => "TYPE_FP32",
        Dtype::Int64 => "TYPE_INT64",
    };
    // Triton's batched dims cannot be empty: a scalar sample is presented as [1].
    let dims = match input.dims.as_slice() {
        [] => "[ 1 ]\n    reshape: { shape: [ ] }".to_string(),
        dims => format!("[ {} ]", dims.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")),
    };
    let what = if input.dtype == Dtype::Float32 && input.dims.len() == 1 {
        "the encoded features (numeric, then categorical level codes), or an array model's samples"
    } else {
        "the model's samples, as it was trained on them"
    };
    format!(
        concat!(
            "# Written by torchfit {version}. INPUT__0: {what};\n",
            "# OUTPUT__0: model.pt's forward (values in the data's units, or class indices).\n",
            "name: {name:?}\n",
            "backend: \"pytorch\"\n",
            "max_batch_size: {max_batch}\n",
            "input [\n  {{\n    name: \"INPUT__0\"\n    data_type: {data_type}\n    dims: {dims}\n  }}\n]\n",
            "output [\n  {{\n    name: \"OUTPUT__0\"\n{output}  }}\n]\n",
            "dynamic_batching {{ }}\n",
        ),
        version = env!("CARGO_PKG_VERSION"),
        what = what,
        name = name,
        max_batch = MAX_BATCH,
        data_type = data_type,
        dims = dims,
        output = output,
    )
}
