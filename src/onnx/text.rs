//! The text columns' `bag` encoder in ONNX: input `ids`, int64 `[batch, columns *
//! max_length]` (the tokenizer's ids, padded with its padding id, as `extra/tokenizer.json`
//! gives them), each column's mean of its tokens' embeddings over the tokens that are not
//! padding (zeros for an empty text), as `torch.embedding_bag` computes it: Gather, a mask,
//! ReduceSum, and a division by the count (at least 1).

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::Tensor;

use super::proto::*;
use super::{int, value_info, Graph};
use crate::model::TextInput;

/// Each text column's embedding table in a state_dict (`text.<j>.embedding.weight`).
pub(super) fn tables(input: &crate::model::Input, state: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
    let Some(text) = &input.text else { return Ok(Vec::new()) };
    (0..text.columns)
        .map(|j| {
            let name = format!("text.{j}.embedding.weight");
            state.get(&name).map(Tensor::shallow_clone).with_context(|| format!("the model has no `{name}`"))
        })
        .collect()
}

/// The `ids` input and each column's vector from it.
pub(super) fn bags(
    g: &mut Graph,
    inputs: &mut Vec<ValueInfoProto>,
    text: &TextInput,
    tables: &[Tensor],
) -> Result<Vec<String>> {
    let (length, width) = (text.max_length as i64, text.ids() as i64);
    let doc = "token ids of each text column, max_length each, padded (text.json, tokenizer.json)";
    inputs.push(value_info("ids", INT64, &[None, Some(width)], doc));
    let pad = g.int64s("pad_id", &[], &[text.pad_id]);
    let one = g.scalar(1.0);
    let (axis, last) = (g.axes(&[1]), g.axes(&[-1]));
    let mut vectors = Vec::with_capacity(tables.len());
    for (j, table) in tables.iter().enumerate() {
        let (starts, ends) = (g.axes(&[j as i64 * length]), g.axes(&[(j as i64 + 1) * length]));
        let ids = g.op("Slice", &["ids", &starts, &ends, &axis], vec![]);
        let table = g.tensor(&format!("text.{j}.embedding.weight"), table)?;
        let rows = g.op("Gather", &[&table, &ids], vec![int("axis", 0)]);
        let padding = g.op("Equal", &[&ids, &pad], vec![]);
        let kept = g.op("Not", &[&padding], vec![]);
        let mask = g.op("Cast", &[&kept], vec![int("to", i64::from(FLOAT))]);
        let weights = g.op("Unsqueeze", &[&mask, &last], vec![]);
        let masked = g.op("Mul", &[&rows, &weights], vec![]);
        let sum = g.op("ReduceSum", &[&masked, &axis], vec![int("keepdims", 0)]);
        let count = g.op("ReduceSum", &[&mask, &axis], vec![int("keepdims", 1)]);
        let count = g.op("Max", &[&count, &one], vec![]);
        vectors.push(g.op("Div", &[&sum, &count], vec![]));
    }
    Ok(vectors)
}
