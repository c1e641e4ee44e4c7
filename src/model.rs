//! The multi-layer perceptron: `Linear, act, Linear, act, ..., Linear`, with parameters
//! named as the equivalent `torch.nn.Sequential` names them (`0.weight`, `0.bias`,
//! `2.weight`, ...; activations sit at the odd indices) and laid out as PyTorch does
//! (`weight` is `[out, in]`).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{Activation, Init, ModelConfig};

pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
}

pub struct Mlp {
    pub layers: Vec<Dense>,
    pub activation: Activation,
    /// Dropout probability after each hidden activation, applied in training only.
    pub dropout: f64,
}

impl Mlp {
    /// A freshly initialised model (or one loaded from `cfg.init_from`) on `device`.
    /// Random draws come from libtorch's global CPU generator, which the caller seeds.
    pub fn new(cfg: &ModelConfig, inputs: usize, outputs: usize, device: Device) -> Result<Mlp> {
        let mut widths = vec![inputs];
        widths.extend(&cfg.hidden);
        widths.push(outputs);
        let mut layers = Vec::with_capacity(widths.len() - 1);
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
            layers.push(Dense { weight, bias });
        }
        let mut model = Mlp { layers, activation: cfg.activation, dropout: cfg.dropout };
        if let Some(path) = &cfg.init_from {
            if !path.is_file() {
                bail!("model.init_from: {}: no such file", path.display());
            }
            model.load_safetensors(path).with_context(|| format!("model.init_from: {}", path.display()))?;
        }
        Ok(model.to_trainable(device))
    }

    fn to_trainable(self, device: Device) -> Mlp {
        let leaf = |t: Tensor| t.to_device(device).detach().set_requires_grad(true);
        let layers = self.layers.into_iter().map(|d| Dense { weight: leaf(d.weight), bias: leaf(d.bias) }).collect();
        Mlp { layers, activation: self.activation, dropout: self.dropout }
    }

    /// The model's output in evaluation mode (no dropout).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_t(x, false)
    }

    /// The model's output; `train` turns dropout on. Dropout draws from libtorch's global
    /// generator, which the caller seeds.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = h.linear(&layer.weight, Some(&layer.bias));
            if i < last {
                h = activate(self.activation, &h);
                if train && self.dropout > 0.0 {
                    h = h.dropout(self.dropout, true);
                }
            }
        }
        h
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

    /// Overwrites the parameters in place with `<prefix><name>` tensors of a loaded
    /// checkpoint (the parameters stay the same leaf tensors, so an optimizer keeps them).
    pub fn restore(&self, tensors: &mut HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, p) in self.named_parameters() {
            let saved = crate::checkpoint::take(tensors, &format!("{prefix}{name}"), &p.size())?;
            tch::no_grad(|| p.shallow_clone().copy_(&saved.to_device(p.device())));
        }
        Ok(())
    }

    /// Copies of the parameters, named `<prefix><name>`, for a checkpoint.
    pub fn named_copies(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.named_parameters().into_iter().map(|(n, p)| (format!("{prefix}{n}"), p.detach().copy())).collect()
    }

    pub fn parameter_count(&self) -> i64 {
        self.parameters().iter().map(|t| t.numel() as i64).sum()
    }

    pub fn inputs(&self) -> usize {
        self.layers[0].weight.size()[1] as usize
    }

    /// Replaces every parameter with the tensor of the same name in a safetensors file. The
    /// file must hold exactly this model's names and shapes, as `load_state_dict(strict=True)`.
    pub fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("cannot read safetensors: {e}"))?;
        let mut by_name: HashMap<String, Tensor> = tensors.into_iter().collect();
        // A torchfit checkpoint holds the weights under `model.` beside its other state.
        if by_name.contains_key("state.json") {
            by_name =
                by_name.into_iter().filter_map(|(n, t)| n.strip_prefix("model.").map(|n| (n.to_string(), t))).collect();
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (suffix, slot) in [("weight", &mut layer.weight), ("bias", &mut layer.bias)] {
                let name = format!("{}.{suffix}", 2 * i);
                let Some(t) = by_name.remove(&name) else {
                    bail!("has no tensor `{name}` (expected shape {:?})", slot.size());
                };
                if t.size() != slot.size() {
                    bail!("`{name}` has shape {:?}, the model needs {:?}", t.size(), slot.size());
                }
                *slot = t.f_to_kind(Kind::Float)?;
            }
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
        assert!(m.parameters().iter().all(|p| p.requires_grad()));
        assert_eq!(m.forward(&Tensor::zeros([7, 10], (Kind::Float, Device::Cpu))).size(), vec![7, 3]);
    }

    #[test]
    fn keras_init_is_glorot_uniform_with_zero_bias() {
        let _rng = crate::testing::seed(0);
        tch::manual_seed(0);
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
        tch::manual_seed(0);
        let m = Mlp::new(&config(Init::Torch), 10, 3, Device::Cpu).unwrap();
        let bound = 1.0 / 10f64.sqrt();
        assert!(m.layers[0].weight.abs().max().double_value(&[]) <= bound);
        let b = m.layers[0].bias.abs().max().double_value(&[]);
        assert!(b > 0.0 && b <= bound);
    }

    #[test]
    fn kaiming_inits_scale_by_fan_in() {
        let _rng = crate::testing::seed(0);
        tch::manual_seed(0);
        let u = Mlp::new(&config(Init::KaimingUniform), 10, 3, Device::Cpu).unwrap();
        assert!(u.layers[0].weight.abs().max().double_value(&[]) <= (0.6f64).sqrt());
        let n =
            Mlp::new(&ModelConfig { hidden: vec![2000], ..config(Init::KaimingNormal) }, 100, 1, Device::Cpu).unwrap();
        let std = n.layers[0].weight.std(true).double_value(&[]);
        assert!((std - (2.0f64 / 100.0).sqrt()).abs() < 0.005, "{std}");
    }

    #[test]
    fn dropout_acts_in_training_only() {
        let _rng = crate::testing::seed(0);
        let m = Mlp::new(&ModelConfig { dropout: 0.5, ..config(Init::Torch) }, 10, 3, Device::Cpu).unwrap();
        let x = Tensor::ones([64, 10], (Kind::Float, Device::Cpu));
        assert!(m.forward(&x).equal(&m.forward(&x)));
        assert!(!m.forward_t(&x, true).equal(&m.forward(&x)));
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
        for (pa, pb) in a.parameters().iter().zip(b.parameters()) {
            assert!(pa.equal(pb));
        }
        let err = Mlp::new(&cfg, 11, 3, Device::Cpu).err().unwrap();
        assert!(format!("{err:#}").contains("`0.weight` has shape [20, 10], the model needs [20, 11]"), "{err:#}");
    }
}
