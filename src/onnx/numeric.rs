//! The ONNX ops of `model.numeric_embedding` (`model::numeric`'s TorchScript, op for op) and
//! the network of `model.kind: mlp` with it (`model::embedded_mlp`): Unsqueeze the filled,
//! standardised numeric features to `[batch, numeric, 1]`, then
//!
//! - `piecewise_linear`: the linear embedding (Mul, Add), the encoding (Mul, Add, then Min /
//!   Clip / Max on its first, middle and last components: a feature of one bin is left
//!   unclamped by a Max with -inf), the per-feature layer (a batched MatMul over
//!   `[numeric, batch, bins]`), their sum;
//! - `periodic`: `2 pi w x`, Cos and Sin, the per-feature layer (or with `lite` one shared
//!   MatMul) and its bias;
//!
//! an optional Relu, and Flatten to `[batch, numeric * d_embedding]`.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::Tensor;

use super::{activation, input_stage, ints, Graph, Network};
use crate::config::{ModelConfig, NumericEmbedding, NumericEmbeddingKind, PERIODIC_DEFAULTS};
use crate::data::Preprocessing;
use crate::model::Input;

/// A run's numeric embedding: its config and the tensors of its `num_module`.
pub(super) struct Embed<'a> {
    pub cfg: &'a NumericEmbedding,
    pub state: &'a HashMap<String, Tensor>,
}

impl Embed<'_> {
    fn get(&self, name: &str) -> Result<&Tensor> {
        let name = format!("num_module.{name}");
        self.state.get(&name).with_context(|| format!("the numeric embedding has no `{name}`"))
    }

    fn param(&self, g: &mut Graph, name: &str) -> Result<String> {
        g.tensor(&format!("num_module.{name}"), self.get(name)?)
    }

    /// `x` (`[batch, numeric]`, standardised) embedded and flattened.
    pub(super) fn apply(&self, g: &mut Graph, x: &str) -> Result<String> {
        let last_axis = g.axes(&[-1]);
        let xu = g.op("Unsqueeze", &[x, &last_axis], vec![]);
        let (e, activation) = match self.cfg.kind {
            NumericEmbeddingKind::PiecewiseLinear => (self.piecewise_linear(g, &xu)?, false),
            NumericEmbeddingKind::Periodic => (self.periodic(g, &xu)?, PERIODIC_DEFAULTS.4),
        };
        let e = match self.cfg.activation.unwrap_or(activation) {
            true => g.op("Relu", &[&e], vec![]),
            false => e,
        };
        let e = match self.cfg.kind {
            NumericEmbeddingKind::PiecewiseLinear => {
                let w = self.param(g, "linear0.weight")?;
                let b = self.param(g, "linear0.bias")?;
                let scaled = g.op("Mul", &[&w, &xu], vec![]);
                let linear = g.op("Add", &[&b, &scaled], vec![]);
                g.op("Add", &[&linear, &e], vec![])
            }
            NumericEmbeddingKind::Periodic => e,
        };
        Ok(g.op("Flatten", &[&e], vec![super::int("axis", 1)]))
    }

    /// The encoding and its per-feature layer (before the activation and `linear0`).
    fn piecewise_linear(&self, g: &mut Graph, xu: &str) -> Result<String> {
        let (w, b) = (self.param(g, "impl.weight")?, self.param(g, "impl.bias")?);
        let scaled = g.op("Mul", &[&w, xu], vec![]);
        let mut e = g.op("Add", &[&b, &scaled], vec![]);
        let bins = self.get("impl.weight")?.size()[1];
        if bins > 1 {
            let slice = |g: &mut Graph, e: &str, start: i64, end: i64| {
                let (s, t, a) = (g.axes(&[start]), g.axes(&[end]), g.axes(&[2]));
                g.op("Slice", &[e, &s, &t, &a], vec![])
            };
            let (zero, one) = (g.scalar(0.0), g.scalar(1.0));
            let first = slice(g, &e, 0, 1);
            let mut parts = vec![g.op("Min", &[&first, &one], vec![])];
            if bins > 2 {
                let middle = slice(g, &e, 1, bins - 1);
                parts.push(g.op("Clip", &[&middle, &zero, &one], vec![]));
            }
            // The last component's lower clamp: 0, or -inf (none) for a feature of one bin.
            let single = self.state.get("num_module.impl.single_bin_mask");
            let n = self.get("impl.weight")?.size()[0];
            let floor: Vec<f32> = match single {
                Some(mask) => Vec::<bool>::try_from(mask.to_kind(tch::Kind::Bool).flatten(0, -1))?
                    .into_iter()
                    .map(|s| if s { f32::NEG_INFINITY } else { 0.0 })
                    .collect(),
                None => vec![0.0; n as usize],
            };
            let floor = g.floats("num_module.last_floor", &[n, 1], &floor);
            let last = slice(g, &e, bins - 1, bins);
            parts.push(g.op("Max", &[&last, &floor], vec![]));
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            e = g.op("Concat", &refs, vec![super::int("axis", 2)]);
        }
        let weight = self.param(g, "linear.weight")?;
        per_feature(g, &e, &weight, None)
    }

    /// `2 pi w x`, cos and sin, and the layer after them.
    fn periodic(&self, g: &mut Graph, xu: &str) -> Result<String> {
        let w = self.param(g, "periodic.weight")?;
        let two_pi = g.scalar((2.0 * std::f64::consts::PI) as f32);
        let frequencies = g.op("Mul", &[&two_pi, &w], vec![]);
        let angle = g.op("Mul", &[&frequencies, xu], vec![]);
        let (cos, sin) = (g.op("Cos", &[&angle], vec![]), g.op("Sin", &[&angle], vec![]));
        let e = g.op("Concat", &[&cos, &sin], vec![super::int("axis", -1)]);
        let bias = self.param(g, "linear.bias")?;
        match self.get("linear.weight")?.dim() {
            // lite: one nn.Linear for every feature.
            2 => {
                let weight_t = g.tensor("num_module.linear.weight_t", &self.get("linear.weight")?.tr().contiguous())?;
                let product = g.op("MatMul", &[&e, &weight_t], vec![]);
                Ok(g.op("Add", &[&product, &bias], vec![]))
            }
            _ => {
                let weight = self.param(g, "linear.weight")?;
                per_feature(g, &e, &weight, Some(&bias))
            }
        }
    }
}

/// `_NLinear`: feature i's `[batch, in]` times its own `[in, out]` (`weight` `[n, in, out]`),
/// plus its bias.
fn per_feature(g: &mut Graph, e: &str, weight: &str, bias: Option<&str>) -> Result<String> {
    let features_first = g.op("Transpose", &[e], vec![ints("perm", &[1, 0, 2])]);
    let product = g.op("MatMul", &[&features_first, weight], vec![]);
    let out = g.op("Transpose", &[&product], vec![ints("perm", &[1, 0, 2])]);
    Ok(match bias {
        Some(bias) => g.op("Add", &[&out, bias], vec![]),
        None => out,
    })
}

/// The network of a `model.kind: mlp` run with `model.numeric_embedding`: the embedding, the
/// categorical features, then the config's Dense layers ("0", "2", ...).
pub(super) fn embedded_mlp(
    state: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    input: &Input,
    preprocessing: &Preprocessing,
) -> Result<Network> {
    // Without numeric embeddings this is the MLP of a run with text columns.
    let embed = cfg.numeric_embedding.as_ref().map(|embedding| Embed { cfg: embedding, state });
    let (tables, text) = (super::tables(input, state)?, super::text::tables(input, state)?);
    let (mut g, inputs, mut x) = input_stage(input, &tables, &text, preprocessing, embed.as_ref())?;
    let layers = (0..).take_while(|i| state.contains_key(&format!("{}.weight", 2 * i))).count();
    for i in 0..layers {
        let name = |part: &str| format!("{}.{part}", 2 * i);
        let weight = g.tensor(&name("weight"), &state[&name("weight")])?;
        let bias = g.tensor(&name("bias"), &state[&name("bias")])?;
        x = g.op("Gemm", &[&x, &weight, &bias], vec![super::int("transB", 1)]);
        if i + 1 < layers {
            x = activation(&mut g, cfg.activation, &x);
        }
    }
    Ok((g, inputs, x, "A torchfit MLP with numeric embeddings (rtdl_num_embeddings) and its preprocessing"))
}
