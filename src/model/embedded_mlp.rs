//! `model.kind: mlp` with `model.numeric_embedding`: the MLP of the config (`model.hidden`,
//! `activation`, `init`, `dropout`: the same layers, names and initialisation as the built-in
//! MLP) behind the numeric embedding stage (`numeric`). The hand-written backward pass has no
//! room for the stage, so this network is a generated TorchScript module trained through
//! autograd (`Scripted`), as `model.kind: resnet` is:
//!
//! ```text
//! x = num_module(x).flatten(1, -1)           # [batch, numeric * d_embedding]
//! x = cat([x, categorical features], 1)      # one-hot or embeddings.<j>, as the MLP's
//! x = Linear "0", act, dropout, Linear "2", act, dropout, ..., Linear
//! ```
//!
//! Draws, from the global generator the caller seeds: the stage's, then the Dense layers',
//! then the embedding tables'. `model.backward` does not apply: it always trains through
//! autograd.

use anyhow::{Context, Result};

use super::activation;
use super::dense::{child_name, Dense};
use super::input::Input;
use super::mlp::dense_init;
use super::numeric::Stage;
use crate::config::{ModelConfig, NumericEmbedding};
use crate::data::Preprocessing;
use crate::shim::ScriptModule;

/// The TorchScript module of the MLP with numeric embedding `embedding` (when given) and the
/// text encoders of `model.text` (when the data has text), for `outputs` outputs.
pub(super) fn module(
    cfg: &ModelConfig,
    embedding: Option<&NumericEmbedding>,
    pre: &Preprocessing,
    outputs: usize,
) -> Result<ScriptModule> {
    let input = Input::for_model(pre, cfg);
    input.check()?;
    let stage = embedding.map(|e| Stage::new(e, pre)).transpose()?;
    let mut root = ScriptModule::new("__torch__.torchfit.EmbeddedMlp")?;
    let numeric_width = match &stage {
        Some(stage) => {
            stage.register(&mut root)?;
            stage.width()
        }
        None => input.numeric,
    };
    let mut widths = vec![numeric_width + input.width() - input.numeric];
    widths.extend(&cfg.hidden);
    widths.push(outputs);
    for (i, pair) in widths.windows(2).enumerate() {
        let [weight, bias] = dense_init(cfg.init, pair[0] as i64, pair[1] as i64)?;
        let mut dense = ScriptModule::new(&format!("__torch__.torchfit.Linear{}", child_name(i)))?;
        dense.register_tensor("weight", &weight, false)?;
        dense.register_tensor("bias", &bias, false)?;
        root.register_module(&child_name(i), &dense)?;
    }
    super::resnet::register_embeddings(&mut root, &input)?;
    root.define(&source(cfg, &input, stage.as_ref(), widths.len() - 1)).context("compiling the MLP's forward")?;
    root.set_training(false)?;
    Ok(root)
}

/// `forward`: the stage, the categorical features, then `layers` Dense layers with the
/// activation and dropout after each but the last.
fn source(cfg: &ModelConfig, input: &Input, stage: Option<&Stage>, layers: usize) -> String {
    let mut src = format!("def forward(self, {}) -> Tensor:\n", input.signature());
    if let Some(stage) = stage {
        src += &stage.script();
    }
    src += &input.script();
    for i in 0..layers {
        src += &Dense::script(i);
        if i + 1 < layers {
            if let Some(expr) = activation::op(cfg.activation).script {
                src += &format!("    x = {expr}\n");
            }
            if let Some(p) = cfg.dropout.filter(|p| *p > 0.0) {
                src += &format!("    x = torch.dropout(x, {p:?}, self.training)\n");
            }
        }
    }
    src + "    return x\n"
}
