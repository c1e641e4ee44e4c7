//! The ONNX graph of a `model.kind: resnet` run: `model::resnet`'s network in evaluation mode
//! (BatchNormalization with the running statistics), op for op.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::Tensor;

use super::{float, input_stage, int, Graph, Network};
use crate::data::Preprocessing;
use crate::model::Input;

/// The network of a `model.kind: resnet` run (its state_dict `state`, input stage `input`):
/// `model::resnet`'s in evaluation mode (BatchNormalization with the running statistics).
pub(super) fn network(
    state: &HashMap<String, Tensor>,
    input: &Input,
    preprocessing: &Preprocessing,
) -> Result<Network> {
    let get = |name: &str| state.get(name).with_context(|| format!("the ResNet has no `{name}`"));
    let (mut g, inputs, mut x) =
        input_stage(input, &super::tables(input, state)?, &super::text::tables(input, state)?, preprocessing, None)?;
    let linear = |g: &mut Graph, x: &str, m: &str| -> Result<String> {
        let (weight, bias) = (get(&format!("{m}.weight"))?, get(&format!("{m}.bias"))?);
        let (weight, bias) = (g.tensor(&format!("{m}.weight"), weight)?, g.tensor(&format!("{m}.bias"), bias)?);
        Ok(g.op("Gemm", &[x, &weight, &bias], vec![int("transB", 1)]))
    };
    x = linear(&mut g, &x, "input_projection")?;
    let norm = |g: &mut Graph, x: &str, m: &str| -> Result<String> {
        let mut names = Vec::new();
        for part in ["weight", "bias", "running_mean", "running_var"] {
            names.push(g.tensor(&format!("{m}.{part}"), get(&format!("{m}.{part}"))?)?);
        }
        let refs: Vec<&str> = std::iter::once(x).chain(names.iter().map(String::as_str)).collect();
        Ok(g.op("BatchNormalization", &refs, vec![float("epsilon", 1e-5)]))
    };
    for i in 0.. {
        let block = format!("blocks.{i}");
        if !state.contains_key(&format!("{block}.linear1.weight")) {
            break;
        }
        let h = norm(&mut g, &x, &format!("{block}.normalization"))?;
        let h = linear(&mut g, &h, &format!("{block}.linear1"))?;
        let h = g.op("Relu", &[&h], vec![]);
        let h = linear(&mut g, &h, &format!("{block}.linear2"))?;
        x = g.op("Add", &[&x, &h], vec![]);
    }
    let h = norm(&mut g, &x, "output.normalization")?;
    let h = g.op("Relu", &[&h], vec![]);
    let x = linear(&mut g, &h, "output.linear")?;
    Ok((g, inputs, x, "A torchfit ResNet (rtdl_revisiting_models) with its preprocessing"))
}
