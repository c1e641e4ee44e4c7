//! The ONNX graph of a `model.kind: tabm` run: `model::tabm`'s evaluation-mode forward, op for
//! op: the input stage, the ensemble view (an Unsqueeze that broadcasts against each member's
//! scaling), the BatchEnsemble blocks (Mul r, MatMul with the shared weight, Mul s, Add bias,
//! Relu), the members' output layer (a batched MatMul over `[k, batch, d_block]`) and the
//! combination of the members' outputs (their mean, or the logits of their mean probability).

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::Tensor;

use super::numeric::Embed;
use super::{input_stage, int, ints, Graph, Network};
use crate::config::{ModelConfig, TabmArch};
use crate::data::Preprocessing;
use crate::model::{Combine, Input};

/// The network of a `model.kind: tabm` run (its state_dict `state`, knobs `cfg`).
pub(super) fn network(
    state: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    input: &Input,
    preprocessing: &Preprocessing,
) -> Result<Network> {
    let embed = cfg.numeric_embedding.as_ref().map(|cfg| Embed { cfg, state });
    let tables = super::tables(input, state)?;
    let (mut g, inputs, x) =
        input_stage(input, &tables, &super::text::tables(input, state)?, preprocessing, embed.as_ref())?;
    let arch = cfg.arch_type.unwrap_or(TabmArch::Tabm);
    let outputs = state.get("output.bias").map_or(1, |b| b.size()[1]) as usize;
    let x = members(&mut g, state, &x, arch, Combine::of(preprocessing, outputs))?;
    Ok((g, inputs, x, "A torchfit TabM (the tabm package) with its preprocessing"))
}

/// The network after the input stage: `x` `[batch, d_in]` to the combined `[batch, outputs]`.
fn members(
    g: &mut Graph,
    state: &HashMap<String, Tensor>,
    x: &str,
    arch: TabmArch,
    combine: Combine,
) -> Result<String> {
    let get = |name: &str| state.get(name).with_context(|| format!("the TabM has no `{name}`"));
    let axes = g.axes(&[1]);
    let mut x = g.op("Unsqueeze", &[x, &axes], vec![]);
    if arch == TabmArch::TabmMini {
        let affine = g.tensor("backbone.affine.weight", get("backbone.affine.weight")?)?;
        x = g.op("Mul", &[&x, &affine], vec![]);
    }
    for i in 0.. {
        let m = format!("backbone.blocks.{i}.0");
        let Some(weight) = state.get(&format!("{m}.weight")) else { break };
        // MatMul takes the weight as [in, out]: the transpose, stored as such.
        let weight_t = g.tensor(&format!("{m}.weight_t"), &weight.tr().contiguous())?;
        let bias = g.tensor(&format!("{m}.bias"), get(&format!("{m}.bias"))?)?;
        x = match arch {
            TabmArch::Tabm => {
                let r = g.tensor(&format!("{m}.r"), get(&format!("{m}.r"))?)?;
                let s = g.tensor(&format!("{m}.s"), get(&format!("{m}.s"))?)?;
                let scaled = g.op("Mul", &[&x, &r], vec![]);
                let product = g.op("MatMul", &[&scaled, &weight_t], vec![]);
                let product = g.op("Mul", &[&product, &s], vec![]);
                g.op("Add", &[&bias, &product], vec![])
            }
            TabmArch::TabmMini => {
                let product = g.op("MatMul", &[&x, &weight_t], vec![]);
                g.op("Add", &[&product, &bias], vec![])
            }
        };
        x = g.op("Relu", &[&x], vec![]);
    }
    // LinearEnsemble: [k, batch, d_block] @ [k, d_block, outputs] + bias [k, 1, outputs].
    let members_first = g.op("Transpose", &[&x], vec![ints("perm", &[1, 0, 2])]);
    let weight = g.tensor("output.weight", get("output.weight")?)?;
    let bias = get("output.bias")?.unsqueeze(1);
    let bias = g.tensor("output.bias", &bias)?;
    let product = g.op("MatMul", &[&members_first, &weight], vec![]);
    let out = g.op("Add", &[&bias, &product], vec![]);
    let out = g.op("Transpose", &[&out], vec![ints("perm", &[1, 0, 2])]);
    Ok(combined(g, &out, combine, state))
}

/// `[batch, k, outputs]` to `[batch, outputs]` as `model::tabm`'s `combine` computes it.
fn combined(g: &mut Graph, x: &str, combine: Combine, state: &HashMap<String, Tensor>) -> String {
    let k = state.get("output.weight").map_or(1, |w| w.size()[0]);
    let over_members = || vec![ints("axes", &[1]), int("keepdims", 0)];
    match combine {
        Combine::Mean => g.op("ReduceMean", &[x], over_members()),
        Combine::Softmax => {
            let log_p = g.op("LogSoftmax", &[x], vec![int("axis", 2)]);
            let sum = g.op("ReduceLogSumExp", &[&log_p], over_members());
            let log_k = g.scalar((k as f32).ln());
            g.op("Sub", &[&sum, &log_k], vec![])
        }
        // The logit of the mean sigmoid: lse(log_sigmoid(x)) - lse(log_sigmoid(-x)) over the
        // members, the log-sigmoids of x and -x as one LogSoftmax of [0, x] (onnxruntime's
        // extended optimisations fail on the graph of Neg and Softplus that says the same).
        Combine::Sigmoid => {
            let shape = g.op("Shape", &[x], vec![]);
            let zero = g.scalar(0.0);
            let zeros = g.op("Expand", &[&zero, &shape], vec![]);
            let pair = g.op("Concat", &[&zeros, x], vec![int("axis", 2)]);
            let log_q_p = g.op("LogSoftmax", &[&pair], vec![int("axis", 2)]);
            let sums = g.op("ReduceLogSumExp", &[&log_q_p], over_members());
            let (zero_at, one_at, two_at, axis) = (g.axes(&[0]), g.axes(&[1]), g.axes(&[2]), g.axes(&[1]));
            let q = g.op("Slice", &[&sums, &zero_at, &one_at, &axis], vec![]);
            let p = g.op("Slice", &[&sums, &one_at, &two_at, &axis], vec![]);
            g.op("Sub", &[&p, &q], vec![])
        }
    }
}
