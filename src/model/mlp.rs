//! The multi-layer perceptron (`model.kind: mlp`): an input stage (categorical features one-hot or embedded,
//! see `input`), then `Linear, act, Linear, act, ..., Linear`, with parameters named and
//! laid out as the equivalent `torch.nn.Sequential` has them (see `dense`). Each layer kind
//! keeps its forward, backward, TorchScript and names in its own file.
//!
//! Training does not go through autograd. For an MLP the backward pass is a few matrix
//! products, and computing it directly (with libtorch's own `*_backward` kernels for the
//! activations) is several times cheaper per step than building and walking a graph. All
//! parameters live in one flat buffer, and so do their gradients, so that the optimizer is a
//! handful of tensor ops whatever the depth. `tests::manual_gradients_match_autograd` holds
//! the backward pass to autograd's answer for every activation and loss, and
//! `model.backward: autograd` trains the same network through autograd (`Graph` below).

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::dense::{views, Dense};
use super::input::{embedding_name, Input};
use super::Segment;
use super::{activation, init, mixed, trainable};
use crate::config::{Activation, Backward, Init, ModelConfig, ParamGroup, Precision};

pub struct Mlp {
    pub input: Input,
    pub layers: Vec<Dense>,
    /// Each categorical feature's embedding table (`[levels, width]`, a view into `params`
    /// after the Dense layers), `None` for one-hot features.
    pub embeddings: Vec<Option<Tensor>>,
    pub activation: Activation,
    /// Dropout probability after each hidden activation, applied in training only.
    pub dropout: f64,
    /// Every parameter, in `named_parameters` order; `layers` are views into it.
    pub params: Tensor,
    /// The gradient of the last `backward`, laid out as `params`.
    pub grads: Tensor,
    grad_layers: Vec<Dense>,
    grad_embeddings: Vec<Option<Tensor>>,
    /// With `training.precision: bf16`, the training step's bf16 weights and gradients.
    low: Option<mixed::LowPrecision>,
    /// With `model.backward: autograd`: a leaf sharing `params`' storage whose `.grad` is
    /// `grads`, through which training steps run on libtorch autograd.
    graph: Option<Tensor>,
    /// The optimizer's parameter groups (`model.freeze`: frozen ranges are in none).
    segments: Vec<Segment>,
    /// Frozen parameters' ranges of `grads`, zeroed before they are reported ready.
    frozen: Vec<(i64, i64)>,
}

/// What the hand-written backward pass needs from its forward pass.
pub struct MlpTape {
    /// Each layer's input.
    inputs: Vec<Tensor>,
    /// The level indices of the categorical features, when the input has any.
    codes: Option<Tensor>,
    /// Each hidden layer's pre-activation and activation.
    pre: Vec<Tensor>,
    post: Vec<Tensor>,
    /// Each hidden layer's dropout mask (already scaled by 1 / (1 - p)).
    masks: Vec<Option<Tensor>>,
    /// Whether the pass ran in bf16 (`mixed`), so that backward does too.
    low: bool,
}

impl Mlp {
    /// A freshly initialised model (or one loaded from `cfg.init_from`) on `device`.
    /// Random draws come from libtorch's global CPU generator, which the caller seeds.
    pub fn new(cfg: &ModelConfig, input: &Input, outputs: usize, device: Device) -> Result<Mlp> {
        input.check()?;
        if input.text.is_some() {
            anyhow::bail!("the hand-written MLP takes no text columns (an MLP with text is a generated module)");
        }
        let mut widths = vec![input.width()];
        widths.extend(&cfg.hidden);
        widths.push(outputs);
        let mut initial = Vec::with_capacity(widths.len() - 1);
        for pair in widths.windows(2) {
            initial.push(dense_init(cfg.init, pair[0] as i64, pair[1] as i64)?);
        }
        let tables = input.init()?;
        let shapes: Vec<Vec<i64>> = initial.iter().flatten().map(Tensor::size).collect();
        let table_shapes = input.table_shapes();
        let length = numel(&shapes) + table_shapes.iter().flatten().map(|[l, w]| l * w).sum::<i64>();
        let params = Tensor::f_zeros([length], (Kind::Float, device))?;
        let grads = params.zeros_like();
        let (layers, embeddings) = layout(&params, &shapes, &table_shapes);
        let (grad_layers, grad_embeddings) = layout(&grads, &shapes, &table_shapes);
        for (layer, [weight, bias]) in layers.iter().zip(&initial) {
            layer.weight.shallow_clone().copy_(weight);
            layer.bias.shallow_clone().copy_(bias);
        }
        for (view, table) in embeddings.iter().zip(&tables) {
            if let (Some(view), Some(table)) = (view, table) {
                view.shallow_clone().copy_(table);
            }
        }
        let mut model = Mlp {
            input: input.clone(),
            layers,
            embeddings,
            activation: cfg.activation,
            dropout: cfg.dropout.unwrap_or(0.0),
            params,
            grads,
            grad_layers,
            grad_embeddings,
            low: None,
            graph: None,
            segments: Vec::new(),
            frozen: Vec::new(),
        };
        model.segments = Segment::whole(model.params.numel() as i64);
        if let Some(path) = &cfg.init_from {
            let targets: Vec<(String, Tensor)> =
                model.named_parameters().into_iter().map(|(n, t)| (n, t.shallow_clone())).collect();
            init::apply(path, cfg.strict, &targets).with_context(|| format!("model.init_from: {}", path.display()))?;
        }
        Ok(model)
    }

    /// `new`, then `model.freeze`, the optimizer's parameter groups and, with
    /// `model.backward: autograd`, the autograd leaf.
    pub fn for_training(
        cfg: &ModelConfig,
        input: &Input,
        outputs: usize,
        device: Device,
        groups: &[ParamGroup],
    ) -> Result<Mlp> {
        let mut model = Mlp::new(cfg, input, outputs, device)?;
        let named = model.named_parameters();
        let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let mut ranges = Vec::with_capacity(named.len());
        let mut offset = 0;
        for (_, t) in &named {
            ranges.push((offset, t.numel() as i64));
            offset += t.numel() as i64;
        }
        let assignment = trainable::assign(&names, &cfg.freeze, groups)?;
        model.segments = trainable::segments(&ranges, &assignment);
        model.frozen = ranges.iter().zip(&assignment.frozen).filter(|(_, f)| **f).map(|(r, _)| *r).collect();
        if cfg.backward == Backward::Autograd {
            let mut leaf = model.params.detach().set_requires_grad(true);
            crate::shim::set_grad(&mut leaf, &model.grads)?;
            model.graph = Some(leaf);
        }
        Ok(model)
    }

    /// Sets the arithmetic of training steps (`forward_train_into`, `backward`); evaluation
    /// and exports stay float32 either way.
    pub fn set_precision(&mut self, precision: Precision) {
        self.low = match precision {
            Precision::Fp32 => None,
            Precision::Bf16 => {
                let shapes: Vec<Vec<i64>> = self.layers.iter().flat_map(|d| [d.weight.size(), d.bias.size()]).collect();
                Some(mixed::LowPrecision::new(&self.params, &shapes))
            }
        };
    }

    /// The model's output in evaluation mode (no dropout).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_train(x, false).0
    }

    /// The model's output and what `backward` needs, in float32; `dropout` turns dropout
    /// on. Dropout draws from libtorch's global generator, which the caller seeds.
    pub fn forward_train(&self, x: &Tensor, dropout: bool) -> (Tensor, MlpTape) {
        let output = Tensor::empty([x.size()[0], self.outputs()], (Kind::Float, self.params.device()));
        let tape = self.forward_layers(x, dropout, &output, None);
        (output, tape)
    }

    /// A training step's forward pass, in the precision `set_precision` chose, writing the
    /// (float32) output into `output` (`[batch, outputs]`, e.g. a slice of an epoch's buffer).
    pub fn forward_train_into(&self, x: &Tensor, dropout: bool, output: &Tensor) -> MlpTape {
        self.forward_layers(x, dropout, output, self.low.as_ref())
    }

    fn forward_layers(&self, x: &Tensor, dropout: bool, output: &Tensor, low: Option<&mixed::LowPrecision>) -> MlpTape {
        let last = self.layers.len() - 1;
        let layers = match low {
            Some(low) => {
                low.refresh(&self.params);
                &low.layers
            }
            None => &self.layers,
        };
        // A numeric-only input is x itself: no op is added to the models that need none.
        let (mut h, codes) = if self.input.is_numeric_only() {
            (x.shallow_clone(), None)
        } else {
            let (h0, codes) = self.input.forward(x, &self.embeddings);
            (h0, Some(codes))
        };
        if low.is_some() {
            h = h.to_kind(Kind::BFloat16);
        }
        let mut tape = MlpTape {
            inputs: Vec::new(),
            codes,
            pre: Vec::new(),
            post: Vec::new(),
            masks: Vec::new(),
            low: low.is_some(),
        };
        for (i, layer) in layers.iter().enumerate() {
            if i == last {
                if low.is_some() {
                    // The output is float32, as autocast's outputs are once they reach the loss.
                    output.shallow_clone().copy_(&layer.bias.addmm(&h, &layer.weight_t));
                } else {
                    let _ = layer.bias.addmm_out(output, &h, &layer.weight_t);
                }
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
    pub fn backward(&self, tape: &MlpTape, grad_output: &Tensor) {
        let _ = self.backward_with(tape, grad_output, |_, _| Ok(()));
    }

    /// `backward`, telling `ready(start, len)` each time a range of `grads` is final: each
    /// layer's weight and bias (contiguous in the buffer), last layer first, then the
    /// embedding tables. Data-parallel training starts summing a range across processes
    /// while the backward pass goes on through the layers before it. In bf16 the Dense
    /// gradients reach `grads` together, widened at the end, and are ready then.
    pub fn backward_with(
        &self,
        tape: &MlpTape,
        grad_output: &Tensor,
        mut ready: impl FnMut(i64, i64) -> Result<()>,
    ) -> Result<()> {
        let ranges = self.gradient_ranges();
        let low = self.low.as_ref().filter(|_| tape.low);
        let (layers, grad_layers) = match low {
            Some(low) => (&low.layers, &low.grad_layers),
            None => (&self.layers, &self.grad_layers),
        };
        let mut dz = match low {
            Some(_) => grad_output.to_kind(Kind::BFloat16),
            None => grad_output.shallow_clone(),
        };
        for i in (0..layers.len()).rev() {
            let g = &grad_layers[i];
            // dW = dz^T a_(i-1) and db = the batch sum of dz, straight into the flat buffer.
            let _ = dz.tr().mm_out(&g.weight, &tape.inputs[i]);
            let _ = dz.sum_intlist_out(&g.bias, [0i64].as_slice(), false, None::<Kind>);
            if low.is_none() {
                let (start, len) = ranges[layers.len() - 1 - i];
                ready(start, len)?;
            }
            if i == 0 {
                // dh0 only matters to embeddings; one-hot and numeric columns have no
                // parameters before them.
                if let (Some(codes), true) = (&tape.codes, self.grad_embeddings.iter().any(Option::is_some)) {
                    let dh0 = dz.mm(&layers[0].weight).to_kind(Kind::Float);
                    self.input.backward(&dh0, codes, &self.grad_embeddings);
                }
                break;
            }
            let mut da = dz.mm(&layers[i].weight);
            if let Some(mask) = &tape.masks[i - 1] {
                da = da * mask;
            }
            dz = (activation::op(self.activation).backward)(&da, &tape.pre[i - 1], &tape.post[i - 1]);
        }
        if let Some(low) = low {
            low.widen(&self.grads);
            for &(start, len) in &ranges[..layers.len()] {
                ready(start, len)?;
            }
        }
        match ranges.get(self.layers.len()) {
            Some(&(start, len)) => ready(start, len),
            None => Ok(()),
        }
    }

    /// The ranges of `grads` in the order `backward_with` finishes them: each layer's weight
    /// and bias, last layer first, then the embedding tables (when there are any).
    pub fn gradient_ranges(&self) -> Vec<(i64, i64)> {
        let sizes: Vec<i64> = self.layers.iter().map(|d| d.weight.numel() as i64 + d.bias.numel() as i64).collect();
        let dense: i64 = sizes.iter().sum();
        let mut ranges: Vec<(i64, i64)> = (0..sizes.len()).rev().map(|i| (sizes[..i].iter().sum(), sizes[i])).collect();
        let tables = self.grads.size()[0] - dense;
        if tables > 0 {
            ranges.push((dense, tables));
        }
        ranges
    }

    pub fn outputs(&self) -> i64 {
        self.layers[self.layers.len() - 1].weight.size()[0]
    }

    /// Parameters in `torch.nn.Sequential` order and naming, then the embedding tables
    /// (`embeddings.<j>.weight`): the order of `params`.
    pub fn named_parameters(&self) -> Vec<(String, &Tensor)> {
        let dense = self.layers.iter().enumerate().flat_map(|(i, d)| d.named_parameters(i));
        dense.chain(named_tables(&self.embeddings)).collect()
    }

    /// The body of a TorchScript method computing `forward` from the variable `x` (the
    /// numeric features, already preprocessed) and, when the input has categorical
    /// features, `codes` (see `Input::script_codes`), leaving the network's output in `x`.
    pub fn script(&self) -> String {
        let last = self.layers.len() - 1;
        let mut src = self.input.script();
        for i in 0..self.layers.len() {
            src += &Dense::script(i);
            if let (true, Some(expr)) = (i < last, activation::op(self.activation).script) {
                src += &format!("    x = {expr}\n");
            }
        }
        src
    }

    /// Parameters in `named_parameters` order.
    pub fn parameters(&self) -> Vec<&Tensor> {
        self.named_parameters().into_iter().map(|(_, p)| p).collect()
    }

    /// Views of a buffer laid out like `params` (an optimizer moment, say), by parameter
    /// name.
    pub fn named_views(&self, flat: &Tensor) -> Vec<(String, Tensor)> {
        let shapes: Vec<Vec<i64>> = self.layers.iter().flat_map(|d| [d.weight.size(), d.bias.size()]).collect();
        let (layers, tables) = layout(flat, &shapes, &self.input.table_shapes());
        let dense = layers.into_iter().enumerate().flat_map(|(i, d)| {
            let [(w, _), (b, _)] = d.named_parameters(i);
            [(w, d.weight.shallow_clone()), (b, d.bias.shallow_clone())]
        });
        dense.chain(named_tables(&tables).map(|(n, t)| (n, t.shallow_clone()))).collect()
    }

    /// Whether training steps run through autograd (`model.backward: autograd`).
    pub fn uses_autograd(&self) -> bool {
        self.graph.is_some()
    }
}

impl Mlp {
    /// The Dense layers' `[weight, bias]` shapes, in `params` order.
    fn dense_shapes(&self) -> Vec<Vec<i64>> {
        self.layers.iter().flat_map(|d| [d.weight.size(), d.bias.size()]).collect()
    }

    /// The training forward pass through autograd (`model.backward: autograd`): the same
    /// operations and random draws as `forward_layers`, on views of the autograd leaf.
    fn forward_graph(&self, leaf: &Tensor, x: &Tensor) -> Tensor {
        let (layers, tables) = layout(leaf, &self.dense_shapes(), &self.input.table_shapes());
        let mut h = if self.input.is_numeric_only() { x.shallow_clone() } else { self.input.forward(x, &tables).0 };
        let last = layers.len() - 1;
        for (i, layer) in layers.iter().enumerate() {
            let z = layer.bias.addmm(&h, &layer.weight_t);
            if i == last {
                return z;
            }
            let a = (activation::op(self.activation).forward)(&z);
            h = match self.dropout > 0.0 {
                true => &a * (a.empty_like().bernoulli_float_(1.0 - self.dropout) / (1.0 - self.dropout)),
                false => a,
            };
        }
        unreachable!("an Mlp has at least one layer")
    }

    /// Zeroes the frozen parameters' gradients within `start..start + len`.
    fn zero_frozen(&self, start: i64, len: i64) {
        for &(f, n) in &self.frozen {
            let (from, to) = (f.max(start), (f + n).min(start + len));
            if from < to {
                let _ = self.grads.narrow(0, from, to - from).zero_();
            }
        }
    }
}

impl super::Model for Mlp {
    fn params(&self) -> &Tensor {
        &self.params
    }

    fn parameter_count(&self) -> i64 {
        self.params.numel() as i64 - self.frozen_count()
    }

    fn grads(&self) -> &Tensor {
        &self.grads
    }

    fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn outputs(&self) -> i64 {
        Mlp::outputs(self)
    }

    fn frozen_count(&self) -> i64 {
        self.frozen.iter().map(|(_, n)| n).sum()
    }

    fn is_random(&self) -> bool {
        self.dropout > 0.0
    }

    fn set_precision(&mut self, precision: Precision) -> Result<()> {
        Mlp::set_precision(self, precision);
        Ok(())
    }

    fn forward_train(&mut self, x: &Tensor, output: &Tensor) -> Result<super::Tape> {
        let Some(leaf) = &self.graph else {
            return Ok(super::Tape::Manual(self.forward_train_into(x, true, output)));
        };
        let cuda = leaf.device().is_cuda();
        let low = self.low.is_some();
        if low {
            crate::shim::autocast_bf16(cuda, true)?;
        }
        let z = self.forward_graph(leaf, x);
        if low {
            crate::shim::autocast_bf16(cuda, false)?;
        }
        output.shallow_clone().f_copy_(&z.detach())?;
        Ok(super::Tape::Graph(z))
    }

    fn backward(
        &mut self,
        tape: super::Tape,
        grad_output: &Tensor,
        ready: &mut dyn FnMut(i64, i64) -> Result<()>,
    ) -> Result<()> {
        match tape {
            super::Tape::Manual(tape) => self.backward_with(&tape, grad_output, |start, len| {
                self.zero_frozen(start, len);
                ready(start, len)
            }),
            super::Tape::Graph(output) => {
                let _ = self.grads.zero_();
                crate::shim::backward(&output, grad_output)?;
                for (start, len) in self.gradient_ranges() {
                    self.zero_frozen(start, len);
                    ready(start, len)?;
                }
                Ok(())
            }
            super::Tape::Members(_) => anyhow::bail!("the MLP has no ensemble members"),
        }
    }

    fn gradient_ranges(&self) -> Vec<(i64, i64)> {
        Mlp::gradient_ranges(self)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(tch::no_grad(|| Mlp::forward(self, x)))
    }

    fn state_dict(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.named_parameters().into_iter().map(|(n, t)| (n, t.shallow_clone())).collect())
    }

    fn export(
        &self,
        preprocessing: &crate::data::Preprocessing,
        loss: crate::config::Loss,
    ) -> Result<crate::shim::ScriptModule> {
        let parts = super::script::MlpParts {
            input: &self.input,
            layers: &self.layers,
            embeddings: &self.embeddings,
            network: self.script(),
        };
        super::script::mlp_module(parts, preprocessing, loss)
    }

    fn as_mlp(&self) -> Option<&Mlp> {
        Some(self)
    }

    fn layers(&self, _probe: &Tensor) -> Result<Vec<super::Layer>> {
        Ok(super::summary::mlp_layers(&self.layers, &self.embeddings, self.activation, &self.frozen))
    }
}

/// Views of a buffer laid out like `params`: the Dense layers' `[weight, bias]` pairs of
/// `shapes` first (so numeric-only models keep the layout of the models before embeddings,
/// and their checkpoints), then the embedding tables of `table_shapes`.
fn layout(flat: &Tensor, shapes: &[Vec<i64>], table_shapes: &[Option<[i64; 2]>]) -> (Vec<Dense>, Vec<Option<Tensor>>) {
    let dense = numel(shapes);
    let tables = flat.narrow(0, dense, flat.size()[0] - dense);
    (views(&flat.narrow(0, 0, dense), shapes), super::input::views(&tables, table_shapes))
}

fn numel(shapes: &[Vec<i64>]) -> i64 {
    shapes.iter().map(|s| s.iter().product::<i64>()).sum()
}

/// The embedding tables under their parameter names, skipping one-hot features.
fn named_tables(tables: &[Option<Tensor>]) -> impl Iterator<Item = (String, &Tensor)> {
    tables.iter().enumerate().filter_map(|(j, t)| t.as_ref().map(|t| (embedding_name(j), t)))
}

/// `U(-limit, limit)` on the CPU, from the global generator.
fn uniform(shape: &[i64], limit: f64) -> Result<Tensor> {
    Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?.f_uniform_(-limit, limit)?)
}

/// A Dense layer's initial `[weight, bias]` on the CPU, drawn as `model.init` says (from the
/// global generator, weight first).
pub(super) fn dense_init(init: Init, fan_in: i64, fan_out: i64) -> Result<[Tensor; 2]> {
    let zeros = || Tensor::f_zeros([fan_out], (Kind::Float, Device::Cpu));
    let (weight, bias) = match init {
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
    Ok([weight, bias])
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
