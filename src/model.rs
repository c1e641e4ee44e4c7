//! The multi-layer perceptron: `Linear, act, Linear, act, ..., Linear`, with parameters
//! named as the equivalent `torch.nn.Sequential` names them (`0.weight`, `0.bias`,
//! `2.weight`, ...; activations sit at the odd indices) and laid out as PyTorch does
//! (`weight` is `[out, in]`).
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

/// One layer's parameters: views into `Mlp::params` (or, for gradients, `Mlp::grads`).
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
    /// `weight` transposed, a view made once rather than at every step.
    weight_t: Tensor,
}

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
            let a = activate(self.activation, &z);
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
            dz = activate_backward(self.activation, &da, &tape.pre[i - 1], &tape.post[i - 1]);
        }
    }

    pub fn outputs(&self) -> i64 {
        self.layers[self.layers.len() - 1].weight.size()[0]
    }

    /// Parameters in `torch.nn.Sequential` order and naming.
    pub fn named_parameters(&self) -> Vec<(String, &Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, d)| [(format!("{}.weight", 2 * i), &d.weight), (format!("{}.bias", 2 * i), &d.bias)])
            .collect()
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

/// `[weight, bias]` views, one pair per layer, into consecutive stretches of `flat`.
fn views(flat: &Tensor, shapes: &[Vec<i64>]) -> Vec<Dense> {
    let mut offset = 0;
    let mut tensors = shapes.iter().map(|shape| {
        let n: i64 = shape.iter().product();
        let view = flat.narrow(0, offset, n).view(shape.as_slice());
        offset += n;
        view
    });
    let mut layers = Vec::new();
    while let (Some(weight), Some(bias)) = (tensors.next(), tensors.next()) {
        layers.push(Dense { weight_t: weight.tr(), weight, bias });
    }
    layers
}

/// `U(-limit, limit)` on the CPU, from the global generator.
fn uniform(shape: &[i64], limit: f64) -> Result<Tensor> {
    Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?.f_uniform_(-limit, limit)?)
}

pub fn activate(activation: Activation, x: &Tensor) -> Tensor {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => x.sigmoid(),
        Activation::Gelu => x.gelu("none"),
        Activation::LeakyRelu => x.leaky_relu(),
        Activation::Elu => x.elu(),
        Activation::Silu => x.silu(),
        Activation::Linear => x.shallow_clone(),
    }
}

/// The gradient through `activation`, from the gradient `da` of its output, its input `z`
/// and its output `a`, with the kernels autograd itself would call.
fn activate_backward(activation: Activation, da: &Tensor, z: &Tensor, a: &Tensor) -> Tensor {
    match activation {
        Activation::Relu => a.threshold_backward(da, 0.0),
        Activation::Tanh => Tensor::tanh_backward(da, a),
        Activation::Sigmoid => Tensor::sigmoid_backward(da, a),
        Activation::Gelu => z.gelu_backward(da, "none"),
        Activation::LeakyRelu => z.leaky_relu_backward(da, 0.01, false),
        Activation::Elu => Tensor::elu_backward(da, 1.0, 1.0, 1.0, false, z),
        Activation::Silu => z.silu_backward(da),
        Activation::Linear => da.shallow_clone(),
    }
}

/// The TorchScript expression that applies `activation` to the variable `x`; it must compute
/// exactly what [`activate`] does.
pub fn activation_torchscript(activation: Activation) -> Option<&'static str> {
    match activation {
        Activation::Relu => Some("torch.relu(x)"),
        Activation::Tanh => Some("torch.tanh(x)"),
        Activation::Sigmoid => Some("torch.sigmoid(x)"),
        Activation::Gelu => Some("torch.gelu(x)"),
        Activation::LeakyRelu => Some("torch.leaky_relu(x, 0.01)"),
        Activation::Elu => Some("torch.elu(x)"),
        Activation::Silu => Some("torch.silu(x)"),
        Activation::Linear => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loss;
    use crate::metrics::{loss_grad, loss_value};

    fn config(init: Init) -> ModelConfig {
        ModelConfig { hidden: vec![20, 5], activation: Activation::Relu, init, dropout: 0.0, init_from: None }
    }

    #[test]
    fn names_and_shapes_follow_torch_sequential() {
        let _rng = crate::testing::seed(0);
        let m = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
        let named: Vec<(String, Vec<i64>)> = m.named_parameters().into_iter().map(|(n, t)| (n, t.size())).collect();
        let expected = [
            ("0.weight", vec![20, 10]),
            ("0.bias", vec![20]),
            ("2.weight", vec![5, 20]),
            ("2.bias", vec![5]),
            ("4.weight", vec![3, 5]),
            ("4.bias", vec![3]),
        ];
        assert_eq!(named, expected.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
        assert_eq!(m.parameter_count(), 20 * 10 + 20 + 5 * 20 + 5 + 3 * 5 + 3);
        assert_eq!(m.forward(&Tensor::zeros([7, 10], (Kind::Float, Device::Cpu))).size(), vec![7, 3]);
        // The layers are views of the one flat buffer.
        let _ = m.params.shallow_clone().fill_(1.5);
        assert_eq!(m.layers[2].bias.double_value(&[0]), 1.5);
        let views = m.named_views(&m.params);
        assert_eq!(views[3].0, "2.bias");
        assert!(views[3].1.equal(&m.layers[1].bias));
    }

    #[test]
    fn keras_init_is_glorot_uniform_with_zero_bias() {
        let _rng = crate::testing::seed(0);
        let m = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
        let limit = (6.0f64 / 30.0).sqrt();
        let w = &m.layers[0].weight;
        assert!(w.abs().max().double_value(&[]) <= limit);
        // 200 draws from U(-l, l) reach beyond 0.8 l with near certainty.
        assert!(w.abs().max().double_value(&[]) > 0.8 * limit);
        assert_eq!(m.layers[0].bias.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn torch_init_bounds_weights_and_biases_by_fan_in() {
        let _rng = crate::testing::seed(0);
        let m = Mlp::new(&config(Init::Torch), 10, 3, Device::Cpu).unwrap();
        let bound = 1.0 / 10f64.sqrt();
        assert!(m.layers[0].weight.abs().max().double_value(&[]) <= bound);
        let b = m.layers[0].bias.abs().max().double_value(&[]);
        assert!(b > 0.0 && b <= bound);
    }

    #[test]
    fn kaiming_inits_scale_by_fan_in() {
        let _rng = crate::testing::seed(0);
        let u = Mlp::new(&config(Init::KaimingUniform), 10, 3, Device::Cpu).unwrap();
        assert!(u.layers[0].weight.abs().max().double_value(&[]) <= (0.6f64).sqrt());
        let n =
            Mlp::new(&ModelConfig { hidden: vec![2000], ..config(Init::KaimingNormal) }, 100, 1, Device::Cpu).unwrap();
        let std = n.layers[0].weight.std(true).double_value(&[]);
        assert!((std - (2.0f64 / 100.0).sqrt()).abs() < 0.005, "{std}");
    }

    #[test]
    fn dropout_acts_in_training_only_and_scales_what_it_keeps() {
        let _rng = crate::testing::seed(0);
        let m = Mlp::new(&ModelConfig { dropout: 0.5, ..config(Init::Torch) }, 10, 3, Device::Cpu).unwrap();
        let x = Tensor::ones([64, 10], (Kind::Float, Device::Cpu));
        assert!(m.forward(&x).equal(&m.forward(&x)));
        let (_, tape) = m.forward_train(&x, true);
        let mask = tape.masks[0].as_ref().unwrap();
        let kept = Vec::<f32>::try_from(mask.flatten(0, 1)).unwrap();
        assert!(kept.iter().all(|&v| v == 0.0 || v == 2.0) && kept.contains(&0.0) && kept.contains(&2.0));
    }

    /// The straightforward way: autograd through leaf copies of the same parameters.
    fn autograd_grads(m: &Mlp, x: &Tensor, y: &Tensor, loss: Loss, masks: &[Option<Tensor>]) -> Vec<Tensor> {
        let leaves: Vec<Tensor> = m.parameters().iter().map(|p| p.detach().copy().set_requires_grad(true)).collect();
        let mut h = x.shallow_clone();
        let layers = leaves.len() / 2;
        for i in 0..layers {
            h = h.linear(&leaves[2 * i], Some(&leaves[2 * i + 1]));
            if i + 1 < layers {
                h = activate(m.activation, &h);
                if let Some(mask) = &masks[i] {
                    h = h * mask;
                }
            }
        }
        Tensor::run_backward(&[loss_value(loss, &h, y)], &leaves, false, false)
    }

    #[test]
    fn manual_gradients_match_autograd() {
        let _rng = crate::testing::seed(3);
        let x = Tensor::randn([16, 6], (Kind::Float, Device::Cpu));
        let values = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
        let classes = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
        let binary = Tensor::randint(2, [16], (Kind::Int64, Device::Cpu));
        let one = Tensor::from(1.0f32);
        let cases = [
            (Loss::Mse, 2, &values),
            (Loss::Mae, 2, &values),
            (Loss::Huber, 2, &values),
            (Loss::CrossEntropy, 3, &classes),
            (Loss::Bce, 1, &binary),
        ];
        for activation in Activation::ALL {
            for (loss, outputs, y) in &cases {
                for dropout in [0.0, 0.3] {
                    let cfg =
                        ModelConfig { hidden: vec![8, 7], activation, init: Init::Torch, dropout, init_from: None };
                    let m = Mlp::new(&cfg, 6, *outputs, Device::Cpu).unwrap();
                    let (output, tape) = m.forward_train(&x, true);
                    m.backward(&tape, &loss_grad(*loss, &output, y, &one));
                    let want = autograd_grads(&m, &x, y, *loss, &tape.masks);
                    for ((name, got), want) in m.named_views(&m.grads).iter().zip(&want) {
                        let diff = (got - want).abs().max().double_value(&[]);
                        assert!(diff < 1e-5, "{activation:?} {loss:?} dropout {dropout}: {name} differs by {diff}");
                    }
                }
            }
        }
    }

    #[test]
    fn init_from_round_trips_and_rejects_mismatches() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let a = Mlp::new(&config(Init::Keras), 10, 3, Device::Cpu).unwrap();
        Tensor::write_safetensors(&a.named_parameters(), &path).unwrap();
        let cfg = ModelConfig { init_from: Some(path.clone()), ..config(Init::Torch) };
        let b = Mlp::new(&cfg, 10, 3, Device::Cpu).unwrap();
        assert!(a.params.equal(&b.params));
        let err = Mlp::new(&cfg, 11, 3, Device::Cpu).err().unwrap();
        assert!(format!("{err:#}").contains("`0.weight` has shape [20, 10], the model needs [20, 11]"), "{err:#}");
    }
}
