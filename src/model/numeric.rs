//! `model.numeric_embedding`: the numeric features' embeddings of `rtdl_num_embeddings`
//! (0.0.12), as a generated TorchScript piece for the built-in scripted models (the MLP with
//! an embedding, TabM). The stage is a child module `num_module` holding the package's
//! parameters and buffers under the package's names, and TorchScript lines that turn the
//! preprocessed numeric features `x` (`[batch, numeric]`) into `[batch, numeric *
//! d_embedding]` (`x.flatten(1, -1)` of the package's `[batch, numeric, d_embedding]`):
//!
//! - `piecewise_linear`: `PiecewiseLinearEmbeddings(bins, d_embedding, activation=...,
//!   version="B")`: `num_module.linear0.{weight,bias}` (a `LinearEmbeddings`), the encoding's
//!   buffers `num_module.impl.{weight,bias}` (and `single_bin_mask`, `mask` when the package
//!   has them), and `num_module.linear.weight` (an `_NLinear` without bias, zero at first so
//!   that the stage starts as a linear embedding).
//! - `periodic`: `PeriodicEmbeddings(n, d_embedding, n_frequencies=..., frequency_init_scale=
//!   ..., activation=..., lite=...)`: `num_module.periodic.weight` (truncated normal), then
//!   `num_module.linear.{weight,bias}` (an `_NLinear`, or with `lite` an `nn.Linear`).
//!
//! The bins come from the run's preprocessing (`Preprocessing::numeric_bins`, fitted on the
//! training part by `data::bins`), never refitted here. Parameters are drawn in the order the
//! package's constructors draw them, from the global generator the caller seeds.
//!
//! For a model kind: `Stage::new` builds the stage, `Stage::widths` says what each numeric
//! feature becomes (`d_embedding` columns, in feature order), `Stage::register` adds
//! `num_module` to the model's root module and `Stage::script` gives the forward's lines.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{NumericEmbedding, NumericEmbeddingKind};
use crate::data::Preprocessing;
use crate::shim::ScriptModule;

/// The child module's name, as `tabm.TabM` names its numeric embedding.
pub const NUM_MODULE: &str = "num_module";

/// The numeric embedding stage of a model: see the module's documentation.
pub struct Stage {
    module: ScriptModule,
    source: String,
    numeric: usize,
    d_embedding: usize,
}

const FLOAT: (Kind, Device) = (Kind::Float, Device::Cpu);

impl Stage {
    /// The stage `embedding` describes for the run's numeric features, its parameters freshly
    /// drawn. Fails on a run without numeric features, or without bins for piecewise_linear.
    pub fn new(embedding: &NumericEmbedding, pre: &Preprocessing) -> Result<Stage> {
        let numeric = pre.feature_names.len();
        if numeric == 0 {
            bail!("model.numeric_embedding needs numeric features; the data has none");
        }
        let d = embedding.width();
        let (module, source) = match embedding.kind {
            NumericEmbeddingKind::PiecewiseLinear => {
                let Some(bins) = pre.numeric_bins.as_ref().filter(|b| b.len() == numeric) else {
                    bail!("model.numeric_embedding: piecewise_linear needs the bins of the {numeric} numeric features in the run's preprocessing");
                };
                piecewise_linear(bins, d, embedding.activation.unwrap_or(false))?
            }
            NumericEmbeddingKind::Periodic => periodic(embedding, numeric, d)?,
        };
        Ok(Stage { module, source, numeric, d_embedding: d })
    }

    /// The width each numeric feature takes in the stage's output, in feature order.
    pub fn widths(&self) -> Vec<usize> {
        vec![self.d_embedding; self.numeric]
    }

    /// The stage's output width: `numeric * d_embedding`.
    pub fn width(&self) -> usize {
        self.numeric * self.d_embedding
    }

    /// Adds the stage's parameters and buffers to `root` as its child `num_module`.
    pub fn register(&self, root: &mut ScriptModule) -> Result<()> {
        root.register_module(NUM_MODULE, &self.module)
    }

    /// TorchScript lines (inside a method of the root module) replacing the preprocessed
    /// numeric features `x` (`[batch, numeric]`) with their embeddings, flattened:
    /// `[batch, numeric * d_embedding]`.
    pub fn script(&self) -> String {
        self.source.clone()
    }
}

/// `U(-bound, bound)` of `shape`, as `nn.init.uniform_` draws it.
fn uniform(shape: &[i64], bound: f64) -> Result<Tensor> {
    Ok(Tensor::f_empty(shape, FLOAT)?.f_uniform_(-bound, bound)?)
}

fn child(class: &str, tensors: &[(&str, &Tensor, bool)]) -> Result<ScriptModule> {
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    for (name, t, buffer) in tensors {
        m.register_tensor(name, t, *buffer)?;
    }
    Ok(m)
}

/// `PiecewiseLinearEmbeddings(bins, d, activation=activation, version="B")`.
fn piecewise_linear(bins: &[Vec<f32>], d: usize, activation: bool) -> Result<(ScriptModule, String)> {
    let (n, d) = (bins.len() as i64, d as i64);
    if let Some(j) = bins.iter().position(|b| b.len() < 2 || b.windows(2).any(|w| w[0] >= w[1])) {
        bail!("the bins of numeric feature {j} are not at least two increasing edges");
    }
    // LinearEmbeddings(n, d): weight, then bias, U(-1/sqrt(d), 1/sqrt(d)).
    let bound = 1.0 / (d as f64).sqrt();
    let (w0, b0) = (uniform(&[n, d], bound)?, uniform(&[n, d], bound)?);
    let encoding = Encoding::of(bins)?;
    // _NLinear(n, max_n_bins, d, bias=False) draws its weight, which version B then zeroes.
    let linear = uniform(&[n, encoding.max_n_bins, d], 1.0 / (encoding.max_n_bins as f64).sqrt())?.f_zero_()?;

    let mut root = ScriptModule::new("__torch__.torchfit.PiecewiseLinearEmbeddings")?;
    root.register_module("linear0", &child("NumLinear0", &[("weight", &w0, false), ("bias", &b0, false)])?)?;
    let mut buffers = vec![("weight", &encoding.weight, true), ("bias", &encoding.bias, true)];
    if let Some(single) = &encoding.single_bin_mask {
        buffers.push(("single_bin_mask", single, true));
    }
    if let Some(mask) = &encoding.mask {
        buffers.push(("mask", mask, true));
    }
    root.register_module("impl", &child("NumImpl", &buffers)?)?;
    root.register_module("linear", &child("NumLinear", &[("weight", &linear, false)])?)?;

    let m = format!("self.{NUM_MODULE}");
    let mut src = format!("    x_linear = torch.addcmul({m}.linear0.bias, {m}.linear0.weight, x.unsqueeze(-1))\n");
    src += &format!("    e = torch.addcmul({m}.impl.bias, {m}.impl.weight, x.unsqueeze(-1))\n");
    if encoding.max_n_bins > 1 {
        // The last component is not clamped from above; for a feature of one bin, not at all.
        let last = match encoding.single_bin_mask {
            None => "e[:, :, -1:].clamp_min(0.0)".to_string(),
            Some(_) => format!(
                "torch.where({m}.impl.single_bin_mask.unsqueeze(-1), e[:, :, -1:], e[:, :, -1:].clamp_min(0.0))"
            ),
        };
        src += &format!("    e = torch.cat([e[:, :, :1].clamp_max(1.0), e[:, :, 1:-1].clamp(0.0, 1.0), {last}], -1)\n");
    }
    src += &format!("    e = torch.matmul(e.transpose(0, 1), {m}.linear.weight).transpose(0, 1)\n");
    if activation {
        src += "    e = torch.relu(e)\n";
    }
    src += "    x = (x_linear + e).flatten(1, -1)\n";
    Ok((root, src))
}

/// `_PiecewiseLinearEncodingImpl(bins)`'s buffers: per feature, the linear map whose clamp is
/// the encoding, with the last bin's component aligned at the end (`max_n_bins` wide).
struct Encoding {
    max_n_bins: i64,
    weight: Tensor,
    bias: Tensor,
    /// The features with a single bin, when there are any.
    single_bin_mask: Option<Tensor>,
    /// The components in use, when features have different numbers of bins.
    mask: Option<Tensor>,
}

impl Encoding {
    fn of(bins: &[Vec<f32>]) -> Result<Encoding> {
        let n_bins: Vec<i64> = bins.iter().map(|b| b.len() as i64 - 1).collect();
        let max = n_bins.iter().copied().max().unwrap_or(1);
        let n = bins.len() as i64;
        let (weight, bias) = (Tensor::f_zeros([n, max], FLOAT)?, Tensor::f_zeros([n, max], FLOAT)?);
        for (i, edges) in bins.iter().enumerate() {
            // The package's float32 arithmetic: w = 1 / width, b = -left / width.
            let edges = Tensor::from_slice(edges);
            let k = n_bins[i];
            let width = edges.f_diff(1, 0, None::<Tensor>, None::<Tensor>)?;
            let w = width.f_reciprocal()?;
            let b = edges.f_narrow(0, 0, k)?.f_neg()?.f_div(&width)?;
            let (row_w, row_b) = (weight.f_select(0, i as i64)?, bias.f_select(0, i as i64)?);
            row_w.f_narrow(0, max - 1, 1)?.f_copy_(&w.f_narrow(0, k - 1, 1)?)?;
            row_b.f_narrow(0, max - 1, 1)?.f_copy_(&b.f_narrow(0, k - 1, 1)?)?;
            row_w.f_narrow(0, 0, k - 1)?.f_copy_(&w.f_narrow(0, 0, k - 1)?)?;
            row_b.f_narrow(0, 0, k - 1)?.f_copy_(&b.f_narrow(0, 0, k - 1)?)?;
        }
        let single: Vec<bool> = n_bins.iter().map(|&k| k == 1).collect();
        let single_bin_mask = single.iter().any(|&s| s).then(|| Tensor::from_slice(&single));
        let mask = n_bins.iter().any(|&k| k != n_bins[0]).then(|| {
            let rows: Vec<bool> =
                n_bins.iter().flat_map(|&k| (0..max).map(move |c| c < k - 1 || c == max - 1)).collect();
            Tensor::from_slice(&rows).view([n, max])
        });
        Ok(Encoding { max_n_bins: max, weight, bias, single_bin_mask, mask })
    }
}

/// `PeriodicEmbeddings(n, d, n_frequencies=k, frequency_init_scale=sigma, activation=...,
/// lite=...)`.
fn periodic(e: &NumericEmbedding, n: usize, d: usize) -> Result<(ScriptModule, String)> {
    let (k, sigma, _, lite, activation) = crate::config::PERIODIC_DEFAULTS;
    let k = e.n_frequencies.unwrap_or(k) as i64;
    let sigma = e.frequency_init_scale.unwrap_or(sigma);
    let (lite, activation) = (e.lite.unwrap_or(lite), e.activation.unwrap_or(activation));
    let (n, d) = (n as i64, d as i64);
    let frequencies = trunc_normal(&[n, k], sigma, 3.0 * sigma)?;
    // _NLinear(n, 2k, d) or nn.Linear(2k, d): weight, then bias, U(-1/sqrt(2k), 1/sqrt(2k)).
    let bound = 1.0 / ((2 * k) as f64).sqrt();
    let (weight, bias) = match lite {
        false => (uniform(&[n, 2 * k, d], bound)?, uniform(&[n, d], bound)?),
        true => (uniform(&[d, 2 * k], bound)?, uniform(&[d], bound)?),
    };
    let mut root = ScriptModule::new("__torch__.torchfit.PeriodicEmbeddings")?;
    root.register_module("periodic", &child("NumPeriodic", &[("weight", &frequencies, false)])?)?;
    root.register_module("linear", &child("NumLinear", &[("weight", &weight, false), ("bias", &bias, false)])?)?;

    let m = format!("self.{NUM_MODULE}");
    // `2 * math.pi * weight * x[..., None]`: Python folds 2 * pi into one float first.
    let mut src = format!("    e = {:?} * {m}.periodic.weight * x.unsqueeze(-1)\n", 2.0 * std::f64::consts::PI);
    src += "    e = torch.cat([torch.cos(e), torch.sin(e)], -1)\n";
    src += &match lite {
        false => {
            format!("    e = torch.matmul(e.transpose(0, 1), {m}.linear.weight).transpose(0, 1) + {m}.linear.bias\n")
        }
        true => format!("    e = torch.linear(e, {m}.linear.weight, {m}.linear.bias)\n"),
    };
    if activation {
        src += "    e = torch.relu(e)\n";
    }
    src += "    x = e.flatten(1, -1)\n";
    Ok((root, src))
}

/// `nn.init.trunc_normal_(t, 0, std, a=-bound, b=bound)`, as PyTorch computes it: uniform
/// draws between the bounds' normal CDFs (mapped to [-1, 1]), through erfinv, scaled, clamped.
fn trunc_normal(shape: &[i64], std: f64, bound: f64) -> Result<Tensor> {
    let cdf = |v: f64| (1.0 + Tensor::from(v / std::f64::consts::SQRT_2).erf().double_value(&[])) / 2.0;
    let (l, u) = (cdf(-bound / std), cdf(bound / std));
    let mut t = Tensor::f_empty(shape, FLOAT)?.f_uniform_(2.0 * l - 1.0, 2.0 * u - 1.0)?;
    let _ = t.f_erfinv_()?;
    let _ = t.f_mul_scalar_(std * std::f64::consts::SQRT_2)?;
    let _ = t.f_clamp_(-bound, bound)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_aligns_the_last_bin_and_masks_the_padding() {
        let bins = vec![vec![0.0, 1.0, 2.0, 4.0], vec![-1.0, 1.0]];
        let e = Encoding::of(&bins).unwrap();
        assert_eq!(e.max_n_bins, 3);
        let w = Vec::<f32>::try_from(e.weight.flatten(0, -1)).unwrap();
        let b = Vec::<f32>::try_from(e.bias.flatten(0, -1)).unwrap();
        assert_eq!(w, [1.0, 1.0, 0.5, 0.0, 0.0, 0.5]);
        assert_eq!(b, [0.0, -1.0, -1.0, 0.0, 0.0, 0.5]);
        let single = Vec::<bool>::try_from(e.single_bin_mask.unwrap()).unwrap();
        assert_eq!(single, [false, true]);
        let mask = Vec::<bool>::try_from(e.mask.unwrap().flatten(0, -1)).unwrap();
        assert_eq!(mask, [true, true, true, false, false, true]);
    }

    #[test]
    fn trunc_normal_stays_within_its_bounds_with_about_its_std() {
        let _rng = crate::testing::seed(0);
        let t = trunc_normal(&[20000], 0.5, 1.5).unwrap();
        assert!(t.abs().max().double_value(&[]) <= 1.5);
        let std = t.std(false).double_value(&[]);
        assert!((std - 0.5 * 0.9866).abs() < 0.01, "{std}");
    }
}
