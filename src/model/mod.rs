//! The model interface that training, checkpoints, early stopping, data-parallel training,
//! evaluation and export go through, and its implementations:
//!
//! - `Mlp` (`mlp.rs`): the built-in multi-layer perceptron, whose backward pass is written by
//!   hand (several times cheaper per step than building and walking an autograd graph for a
//!   small MLP); `model.backward: autograd` trains the same network through libtorch
//!   autograd instead, which `tests` hold to the hand-written pass.
//! - `Scripted` (`scripted.rs`): a TorchScript module trained through libtorch autograd: a
//!   user's (`model.kind: torchscript`), or one torchfit builds (`model.kind: resnet`,
//!   `resnet.rs`; the MLP with `model.numeric_embedding`, `embedded_mlp.rs` and `numeric.rs`;
//!   `model.kind: tabm`, `tabm.rs`, an ensemble of k members whose training forward returns
//!   each member's output: `Tape::Members`; `model.kind: ft_transformer`, `ft_transformer.rs`).
//!
//! Whatever the model, its trainable parameters live in one flat buffer (`params`) and their
//! gradients in another laid out alike (`grads`): an autograd model's parameters are views
//! into the first and its `.grad`s views into the second, as DDP's `gradient_as_bucket_view`
//! does. So the optimizer is a few fused ops per parameter group, clipping one norm, and the
//! data-parallel gradient sum works on ranges of one buffer.

use std::collections::HashMap;

use anyhow::Result;
use tch::{Device, Tensor};

use crate::config::{Loss, ModelConfig, ModelKind, Precision};
use crate::data::Preprocessing;
use crate::shim::ScriptModule;

mod activation;
mod dense;
mod embedded_mlp;
mod ft_transformer;
mod init;
mod input;
mod layers;
mod mixed;
mod mlp;
mod numeric;
mod ready;
mod resnet;
mod script;
mod scripted;
mod summary;
mod tabm;
mod text;
mod trainable;

pub use dense::{child_name, Dense};
pub use input::{embedding_name, Categorical, Input, EMBEDDINGS};
pub use mlp::{Mlp, MlpTape};
pub use script::{script_source, USER_MODULE};
pub use scripted::Scripted;
pub use summary::{table as layer_table, Layer};
pub use tabm::Combine;
pub use text::{TextInput, NGRAM_PRIME};

/// A range of a model's flat parameter buffer that one optimizer parameter group updates:
/// `group` indexes `training.optimizer.param_groups`, `None` for the optimizer's own
/// settings. Frozen parameters are in no segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: i64,
    pub len: i64,
    pub group: Option<usize>,
}

impl Segment {
    /// The one segment of a buffer of `len` elements that trains whole with one setting.
    pub fn whole(len: i64) -> Vec<Segment> {
        vec![Segment { start: 0, len, group: None }]
    }
}

/// What a training forward pass keeps for the backward pass.
pub enum Tape {
    /// The hand-written backward pass's record (`Mlp`).
    Manual(MlpTape),
    /// An autograd graph, from the output (before it was copied out) back to the parameters.
    Graph(Tensor),
    /// An ensemble's autograd graph from its k members' outputs `[batch, k, outputs]`: the
    /// loss is the mean of the members' losses, each against the batch's targets (the
    /// output written by `forward_train` is their combined prediction).
    Members(Tensor),
}

/// A model torchfit trains: see the module's documentation.
pub trait Model {
    /// The trainable parameters, one flat float32 buffer (optimizer, clipping, broadcast).
    fn params(&self) -> &Tensor;
    /// Their gradients, laid out as `params`, written by `backward`.
    fn grads(&self) -> &Tensor;
    /// How `params` splits into optimizer parameter groups (frozen parameters in none).
    fn segments(&self) -> &[Segment];
    /// The output width.
    fn outputs(&self) -> i64;
    /// Trainable parameters (elements of `params`).
    fn parameter_count(&self) -> i64 {
        self.params().numel() as i64
    }
    /// Parameters that `model.freeze` keeps as they are (elements).
    fn frozen_count(&self) -> i64;
    /// Whether a training forward pass draws random numbers (dropout), so that each step is
    /// seeded and a resumed run draws what an uninterrupted one would.
    fn is_random(&self) -> bool;
    /// Sets the arithmetic of training steps (`training.precision`); evaluation and exports
    /// stay float32.
    fn set_precision(&mut self, precision: Precision) -> Result<()>;
    /// A training-mode forward pass (dropout on, batch statistics), writing the float32
    /// output into `output` (`[batch, outputs]`).
    fn forward_train(&mut self, x: &Tensor, output: &Tensor) -> Result<Tape>;
    /// Writes into `grads` the gradient of the loss given its gradient with respect to the
    /// output, telling `ready(start, len)` each time a range of `grads` is final.
    fn backward(
        &mut self,
        tape: Tape,
        grad_output: &Tensor,
        ready: &mut dyn FnMut(i64, i64) -> Result<()>,
    ) -> Result<()>;
    /// The ranges of `grads`, in the order `backward` finishes them.
    fn gradient_ranges(&self) -> Vec<(i64, i64)>;
    /// The output in evaluation mode, without a graph.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Every parameter (frozen ones too) and buffer under its state_dict name, sharing the
    /// model's tensors.
    fn state_dict(&self) -> Result<Vec<(String, Tensor)>>;
    /// The buffers alone (BatchNorm's running statistics, ...): what changes in training
    /// besides `params`.
    fn buffers(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Overwrites every state_dict tensor in place with `<prefix><name>` of a loaded
    /// checkpoint.
    fn restore(&self, tensors: &mut HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        tch::no_grad(|| {
            for (name, t) in self.state_dict()? {
                let saved = crate::checkpoint::take(tensors, &format!("{prefix}{name}"), &t.size())?;
                t.shallow_clone().f_copy_(&saved.to_device(t.device()))?;
            }
            Ok(())
        })
    }
    /// The TorchScript module `model.pt` holds: raw features in, predictions out (see
    /// `export`), with the preprocessing inside.
    fn export(&self, preprocessing: &Preprocessing, loss: Loss) -> Result<ScriptModule>;
    /// The built-in MLP, for what only it supports (ONNX export).
    fn as_mlp(&self) -> Option<&Mlp> {
        None
    }
    /// The model's layers for the run's summary, their output shapes from a forward pass on
    /// `probe` (a few input rows) where the model can tell them.
    fn layers(&self, probe: &Tensor) -> Result<Vec<Layer>>;
}

/// The model a config describes, freshly initialised (or from `model.init_from`), on
/// `device`. `probe` is a few rows of training input, on which a user module's forward is
/// checked before training starts.
pub fn build(
    cfg: &ModelConfig,
    preprocessing: &Preprocessing,
    outputs: usize,
    device: Device,
    probe: Option<&Tensor>,
    groups: &[crate::config::ParamGroup],
) -> Result<Box<dyn Model>> {
    let input = Input::for_model(preprocessing, cfg);
    // Every kind but the plain MLP and a user's module is a TorchScript module torchfit
    // generates, trained through autograd; so is the MLP with a stage its hand-written
    // backward pass has no room for (numeric embeddings, text encoders).
    let module = match cfg.kind {
        ModelKind::Mlp => match (&cfg.numeric_embedding, &input.text) {
            (None, None) => return Ok(Box::new(Mlp::for_training(cfg, &input, outputs, device, groups)?)),
            (embedding, _) => embedded_mlp::module(cfg, embedding.as_ref(), preprocessing, outputs)?,
        },
        ModelKind::Torchscript => {
            let path = cfg.path.as_deref().unwrap_or(std::path::Path::new(""));
            return Ok(Box::new(Scripted::new(path, cfg, preprocessing, outputs, device, probe, groups)?));
        }
        ModelKind::Resnet => resnet::module(cfg, &input, outputs)?,
        ModelKind::Tabm => {
            let combine = tabm::Combine::of(preprocessing, outputs);
            let stage = cfg.numeric_embedding.as_ref().map(|e| numeric::Stage::new(e, preprocessing)).transpose()?;
            tabm::module(cfg, &input, stage.as_ref(), outputs, combine)?
        }
        ModelKind::FtTransformer => {
            // The executor's autodiff subgraphs cost this network about 12% a training step
            // on the CPU over recording its ops as eager PyTorch does (measured, one thread).
            crate::shim::set_graph_executor_optimize(false);
            ft_transformer::module(cfg, &input, outputs)?
        }
    };
    let label = format!("model.kind: {}", crate::config::yaml_name(&cfg.kind));
    let scripted = Scripted::from_module(module, label, cfg, preprocessing, outputs, device, probe, groups)?;
    Ok(match cfg.kind {
        ModelKind::Tabm => Box::new(scripted.with_members()),
        _ => Box::new(scripted),
    })
}

/// Replaces every state_dict tensor of `model` with the one of the same name in a
/// safetensors file, a torchfit checkpoint or a TorchScript file, which must hold exactly the
/// model's names and shapes (as `load_state_dict(strict=True)`).
pub fn load_weights(model: &dyn Model, path: &std::path::Path) -> Result<()> {
    init::apply(path, true, &model.state_dict()?)
}
