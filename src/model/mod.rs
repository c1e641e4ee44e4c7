//! The multi-layer perceptron: `Linear, act, Linear, act, ..., Linear`, with parameters
//! named and laid out as the equivalent `torch.nn.Sequential` has them (see `dense`). Each
//! layer kind keeps its forward, backward, TorchScript and names in its own file.
//!
//! Training does not go through autograd. For an MLP the backward pass is a few matrix
//! products, and computing it directly (with libtorch's own `*_backward` kernels for the
//! activations) is several times cheaper per step than building and walking a graph. All
//! parameters live in one flat buffer, and so do their gradients, so that the optimizer is a
//! handful of tensor ops whatever the depth. `tests::manual_gradients_match_autograd` holds
//! the backward pass to autograd's answer for every activation and loss.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{Activation, Init, ModelConfig};

mod activation;
mod dense;
pub use dense::{child_name, Dense};
use dense::views;

pub struct Mlp {
    pub layers: Vec<Dense>,
    pub activation: Activation,
    /// Dropout probability after each hidden activation, applied in training only.
    pub dropout: f64,
    /// Every parameter, in `named_parameters` order; `layers` are views into it.
    pub params: Tensor,
    /// The gradient of the last `backward`, laid out as `params`.
    pub grads: Tensor,
    grad_layers: Vec<Dense>,
}

/// What a training forward pass keeps for the backward pass.
pub struct Tape {
    /// Each layer's input.
    inputs: Vec<Tensor>,
    /// Each hidden layer's pre-activation and activation.
    pre: Vec<Tensor>,
    post: Vec<Tensor>,
    /// Each hidden layer's dropout mask (already scaled by 1 / (1 - p)).
    masks: Vec<Option<Tensor>>,
}

impl Mlp {
    /// A freshly initialised model (or one loaded from `cfg.init_from`) on `device`.
    /// Random draws come from libtorch's global CPU generator, which the caller seeds.
    pub fn new(cfg: &ModelConfig, inputs: usize, outputs: usize, device: Device) -> Result<Mlp> {
        let mut widths = vec![inputs];
        widths.extend(&cfg.hidden);
        widths.push(outputs);
        let mut initial = Vec::with_capacity(widths.len() - 1);
        for pair in widths.windows(2) {
            let (fan_in, fan_out) = (pair[0] as i64, pair[1] as i64);
            let zeros = || Tensor::f_zeros([fan_out], (Kind::Float, Device::Cpu));
            let (weight, bias) = match cfg.init {
                Init::Keras => {
                    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
                    (uniform(&[fan_out, fan_in], limit)?, zeros()?)
                }
                Init::Torch => {
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    (uniform(&[fan_out, fan_in], bound)?, uniform(&[fan_out], bound)?)
                }
                Init::KaimingUniform => (uniform(&[fan_out, fan_in], (6.0 / fan_in as f64).sqrt())?, zeros()?),
                Init::KaimingNormal => {
                    let std = (2.0 / fan_in as f64).sqrt();
                    (Tensor::f_randn([fan_out, fan_in], (Kind::Float, Device::Cpu))? * std, zeros()?)
                }
            };
            initial.push([weight, bias]);
        }
        let shapes: Vec<Vec<i64>> = initial.iter().flatten().map(Tensor::size).collect();
        let params =
            Tensor::f_zeros([shapes.iter().map(|s| s.iter().product::<i64>()).sum::<i64>()], (Kind::Float, device))?;
        let grads = params.zeros_like();
        let (layers, grad_layers) = (views(&params, &shapes), views(&grads, &shapes));
        for (layer, [weight, bias]) in layers.iter().zip(&initial) {
            layer.weight.shallow_clone().copy_(weight);
            layer.bias.shallow_clone().copy_(bias);
        }
        let mut model = Mlp { layers, activation: cfg.activation, dropout: cfg.dropout, params, grads, grad_layers };
        if let Some(path) = &cfg.init_from {
            if !path.is_file() {
                bail!("model.init_from: {}: no such file", path.display());
            }
            model.load_safetensors(path).with_context(|| format!("model.init_from: {}", path.display()))?;
        }
        Ok(model)
    }

    /// The model's output in evaluation mode (no dropout).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_train(x, false).0
    }

    /// The model's output and what `backward` needs; `dropout` turns dropout on. Dropout
    /// draws from libtorch's global generator, which the caller seeds.
    pub fn forward_train(&self, x: &Tensor, dropout: bool) -> (Tensor, Tape) {
        let output = Tensor::empty([x.size()[0], self.outputs()], (Kind::Float, self.params.device()));
        let tape = self.forward_train_into(x, dropout, &output);
        (output, tape)
    }

    /// `forward_train`, writing the output into `output` (`[batch, outputs]`, e.g. a slice of
    /// an epoch's buffer).
    pub fn forward_train_into(&self, x: &Tensor, dropout: bool, output: &Tensor) -> Tape {
        let last = self.layers.len() - 1;
        let mut tape = Tape { inputs: Vec::new(), pre: Vec::new(), post: Vec::new(), masks: Vec::new() };
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i == last {
                let _ = layer.bias.addmm_out(output, &h, &layer.weight_t);
                tape.inputs.push(h);
                return tape;
            }
            let z = layer.bias.addmm(&h, &layer.weight_t);
            tape.inputs.push(h);
            let a = (activation::op(self.activation).forward)(&z);
            let mask = (dropout && self.dropout > 0.0)
                .then(|| a.empty_like().bernoulli_float_(1.0 - self.dropout) / (1.0 - self.dropout));
            h = match &mask {
                Some(mask) => &a * mask,
                None => a.shallow_clone(),
            };
            tape.pre.push(z);
            tape.post.push(a);
            tape.masks.push(mask);
        }
        unreachable!("an Mlp has at least one layer")
    }

    /// Writes into `grads` the gradient of the loss with respect to every parameter, given
    /// the forward pass's tape and the gradient of the loss with respect to the output.
    pub fn backward(&self, tape: &Tape, grad_output: &Tensor) {
        let mut dz = grad_output.shallow_clone();
        for i in (0..self.layers.len()).rev() {
            let g = &self.grad_layers[i];
            // dW = dz^T a_(i-1) and db = the batch sum of dz, straight into the flat buffer.
            let _ = dz.tr().mm_out(&g.weight, &tape.inputs[i]);
            let _ = dz.sum_intlist_out(&g.bias, [0i64].as_slice(), false, None::<Kind>);
            if i == 0 {
                break;
            }
            let mut da = dz.mm(&self.layers[i].weight);
            if let Some(mask) = &tape.masks[i - 1] {
                da = da * mask;
            }
            dz = (activation::op(self.activation).backward)(&da, &tape.pre[i - 1], &tape.post[i - 1]);
        }
    }

    pub fn outputs(&self) -> i64 {
        self.layers[self.layers.len() - 1].weight.size()[0]
    }

    /// Parameters in `torch.nn.Sequential` order and naming.
    pub fn named_parameters(&self) -> Vec<(String, &Tensor)> {
        self.layers.iter().enumerate().flat_map(|(i, d)| d.named_parameters(i)).collect()
    }

    /// The body of a TorchScript method computing `forward` from the variable `x` (already
    /// preprocessed), leaving the network's output in `x`.
    pub fn script(&self) -> String {
        let last = self.layers.len() - 1;
        let mut src = String::new();
        for i in 0..self.layers.len() {
            src += &Dense::script(i);
            if let (true, Some(expr)) = (i < last, activation::op(self.activation).script) {
                src += &format!("    x = {expr}\n");
            }
        }
        src
    }

    pub fn parameters(&self) -> Vec<&Tensor> {
        self.layers.iter().flat_map(|d| [&d.weight, &d.bias]).collect()
    }

    /// Views of a buffer laid out like `params` (an optimizer moment, say), by parameter
    /// name.
    pub fn named_views(&self, flat: &Tensor) -> Vec<(String, Tensor)> {
        let shapes: Vec<Vec<i64>> = self.parameters().iter().map(|p| p.size()).collect();
        let names = self.named_parameters().into_iter().map(|(n, _)| n);
        names.zip(views(flat, &shapes).into_iter().flat_map(|d| [d.weight, d.bias])).collect()
    }

    /// Overwrites the parameters in place with `<prefix><name>` tensors of a loaded
    /// checkpoint.
    pub fn restore(&self, tensors: &mut HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, p) in self.named_parameters() {
            let saved = crate::checkpoint::take(tensors, &format!("{prefix}{name}"), &p.size())?;
            p.shallow_clone().copy_(&saved.to_device(p.device()));
        }
        Ok(())
    }

    pub fn parameter_count(&self) -> i64 {
        self.params.numel() as i64
    }

    /// Replaces every parameter with the tensor of the same name in a safetensors file (or
    /// a torchfit checkpoint, whose weights are stored under `model.`). The file must hold
    /// exactly this model's names and shapes, as `load_state_dict(strict=True)`.
    pub fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("cannot read safetensors: {e}"))?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        if by_name.contains_key("state.json") {
            by_name =
                by_name.into_iter().filter_map(|(n, t)| n.strip_prefix("model.").map(|n| (n.to_string(), t))).collect();
        }
        for (name, slot) in self.named_parameters() {
            let Some(t) = by_name.remove(&name) else {
                bail!("has no tensor `{name}` (expected shape {:?})", slot.size());
            };
            if t.size() != slot.size() {
                bail!("`{name}` has shape {:?}, the model needs {:?}", t.size(), slot.size());
            }
            slot.shallow_clone().copy_(&t.f_to_kind(Kind::Float)?);
        }
        if let Some(extra) = by_name.keys().min() {
            bail!("has a tensor `{extra}` that this model does not have");
        }
        Ok(())
    }
}

/// `U(-limit, limit)` on the CPU, from the global generator.
fn uniform(shape: &[i64], limit: f64) -> Result<Tensor> {
    Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?.f_uniform_(-limit, limit)?)
}

#[cfg(test)]
mod tests;
