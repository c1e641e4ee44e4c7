//! `model.kind: resnet`: the residual MLP of "Revisiting Deep Learning Models for Tabular
//! Data" (Gorishniy et al., NeurIPS 2021), exactly as `rtdl_revisiting_models.ResNet` computes
//! it, with its parameter and buffer names:
//!
//! ```text
//! x = input_projection(x)                       # Linear(d_in, d_block)
//! for block in blocks:                          # n_blocks times
//!     x = x + dropout2(linear2(dropout1(relu(linear1(normalization(x))))))
//! x = output.linear(relu(output.normalization(x)))
//! ```
//!
//! with BatchNorm1d normalizations and `d_hidden = int(d_block * d_hidden_multiplier)`.
//! torchfit's input stage comes first (categorical features one-hot or embedded, as for the
//! MLP). The network is built here as a TorchScript module (parameters initialised as
//! PyTorch initialises them, from the global generator the caller seeds) and trained as a
//! user module is, through autograd (`Scripted`): model.pt, predict, serve, resume and
//! data-parallel training need nothing of their own.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::input::{Input, EMBEDDINGS};
use super::layers::linear;
use crate::config::{ModelConfig, RESNET_DEFAULTS};
use crate::shim::ScriptModule;

/// The TorchScript module of a ResNet for `input` with `outputs` outputs.
pub(super) fn module(cfg: &ModelConfig, input: &Input, outputs: usize) -> Result<ScriptModule> {
    let (n_blocks, d_block, multiplier, dropout1, dropout2) = RESNET_DEFAULTS;
    let n_blocks = cfg.n_blocks.unwrap_or(n_blocks);
    let d_block = cfg.d_block.unwrap_or(d_block) as i64;
    let d_hidden = (d_block as f64 * cfg.d_hidden_multiplier.unwrap_or(multiplier)).floor().max(1.0) as i64;
    let (dropout1, dropout2) = (cfg.dropout1.unwrap_or(dropout1), cfg.dropout2.unwrap_or(dropout2));
    let mut root = ScriptModule::new("__torch__.torchfit.ResNet")?;
    // Parameters in the order nn.Module's constructors draw them.
    root.register_module("input_projection", &linear("InputProjection", input.width() as i64, d_block)?)?;
    let mut blocks = ScriptModule::new("__torch__.torchfit.Blocks")?;
    for i in 0..n_blocks {
        let mut block = ScriptModule::new(&format!("__torch__.torchfit.Block{i}"))?;
        block.register_module("normalization", &batch_norm(&format!("Block{i}Norm"), d_block)?)?;
        block.register_module("linear1", &linear(&format!("Block{i}Linear1"), d_block, d_hidden)?)?;
        block.register_module("linear2", &linear(&format!("Block{i}Linear2"), d_hidden, d_block)?)?;
        blocks.register_module(&i.to_string(), &block)?;
    }
    root.register_module("blocks", &blocks)?;
    let mut output = ScriptModule::new("__torch__.torchfit.Output")?;
    output.register_module("normalization", &batch_norm("OutputNorm", d_block)?)?;
    output.register_module("linear", &linear("OutputLinear", d_block, outputs as i64)?)?;
    root.register_module("output", &output)?;
    register_embeddings(&mut root, input)?;
    root.define(&source(input, n_blocks, dropout1, dropout2)).context("compiling the ResNet's forward")?;
    root.set_training(false)?;
    Ok(root)
}

/// `forward`: torchfit's input stage, then the network above.
fn source(input: &Input, n_blocks: usize, dropout1: f64, dropout2: f64) -> String {
    let mut src = format!("def forward(self, {}) -> Tensor:\n", input.signature());
    src += &input.script();
    src += "    x = torch.linear(x, self.input_projection.weight, self.input_projection.bias)\n";
    for i in 0..n_blocks {
        src += &format!("    block = getattr(self.blocks, \"{i}\")\n");
        src += &norm("block.normalization", "x", "h");
        src += "    h = torch.relu(torch.linear(h, block.linear1.weight, block.linear1.bias))\n";
        src += &format!("    h = torch.dropout(h, {dropout1:?}, self.training)\n");
        src += "    h = torch.linear(h, block.linear2.weight, block.linear2.bias)\n";
        src += &format!("    x = x + torch.dropout(h, {dropout2:?}, self.training)\n");
    }
    src += &norm("self.output.normalization", "x", "x");
    src += "    return torch.linear(torch.relu(x), self.output.linear.weight, self.output.linear.bias)\n";
    src
}

/// BatchNorm1d of module `m` from `x` into `out`, as nn.BatchNorm1d computes it (momentum
/// 0.1, eps 1e-5, `num_batches_tracked` counted in training).
fn norm(m: &str, x: &str, out: &str) -> String {
    format!(
        "    if self.training:\n        {m}.num_batches_tracked.add_(1)\n    \
         {out} = torch.batch_norm({x}, {m}.weight, {m}.bias, {m}.running_mean, {m}.running_var, self.training, 0.1, 1e-05, False)\n"
    )
}

/// nn.BatchNorm1d(width): weight 1, bias 0, running statistics 0 and 1, no batches yet.
fn batch_norm(class: &str, width: i64) -> Result<ScriptModule> {
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    let float = (Kind::Float, Device::Cpu);
    m.register_tensor("weight", &Tensor::f_ones([width], float)?, false)?;
    m.register_tensor("bias", &Tensor::f_zeros([width], float)?, false)?;
    m.register_tensor("running_mean", &Tensor::f_zeros([width], float)?, true)?;
    m.register_tensor("running_var", &Tensor::f_ones([width], float)?, true)?;
    m.register_tensor("num_batches_tracked", &Tensor::f_zeros([], (Kind::Int64, Device::Cpu))?, true)?;
    Ok(m)
}

/// The categorical features' embedding tables, as the MLP names them (`embeddings.<j>.weight`,
/// N(0, 1) as nn.Embedding draws them), drawn after the network's parameters, then the text
/// encoders (`text`).
pub(super) fn register_embeddings(root: &mut ScriptModule, input: &Input) -> Result<()> {
    register_tables(root, input)?;
    match &input.text {
        Some(text) => text.register(root),
        None => Ok(()),
    }
}

fn register_tables(root: &mut ScriptModule, input: &Input) -> Result<()> {
    let tables: Vec<(usize, [i64; 2])> =
        input.table_shapes().into_iter().enumerate().filter_map(|(j, s)| s.map(|s| (j, s))).collect();
    if tables.is_empty() {
        return Ok(());
    }
    let mut embeddings = ScriptModule::new("__torch__.torchfit.Embeddings")?;
    for (j, shape) in tables {
        let mut embedding = ScriptModule::new(&format!("__torch__.torchfit.Embedding{j}"))?;
        embedding.register_tensor("weight", &Tensor::f_randn(shape, (Kind::Float, Device::Cpu))?, false)?;
        embeddings.register_module(&j.to_string(), &embedding)?;
    }
    root.register_module(EMBEDDINGS, &embeddings)
}
