//! The text columns' `bag` encoder in ONNX: input `ids`, int64 `[batch, columns *
//! max_length]` (the tokenizer's ids, padded with its padding id, as `extra/tokenizer.json`
//! gives them), each column's mean of its tokens' embeddings over the tokens that are not
//! padding (zeros for an empty text), as `torch.embedding_bag` computes it: Gather, a mask,
//! ReduceSum, and a division by the count (at least 1). With `ngrams`, the runs of tokens are
//! hashed first, as `model::text` does: Slice, Mul, Add, Mod, and Where for the runs with
//! padding, concatenated after the tokens.

use std::collections::HashMap;

use anyhow::{Context, Result};
use tch::Tensor;

use super::proto::*;
use super::{int, value_info, Graph};
use crate::model::{TextInput, NGRAM_PRIME};

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
        let ids = ngrams(g, text, &ids, &pad)?;
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

/// Column ids `ids` (`[batch, max_length]`) followed by their hashed n-grams, as
/// `model::text`'s bag script computes them; `ids` itself without n-grams.
fn ngrams(g: &mut Graph, text: &TextInput, ids: &str, pad: &str) -> Result<String> {
    let (n, buckets) = text.encoder.as_ref().context("the model has no text encoder")?.ngrams();
    if n < 2 {
        return Ok(ids.to_string());
    }
    let length = text.max_length as i64;
    let axis = g.axes(&[1]);
    let (prime, buckets, vocab) =
        (g.axes(&[NGRAM_PRIME]), g.axes(&[buckets as i64]), g.axes(&[text.vocab_size as i64]));
    let mut parts = vec![ids.to_string()];
    for k in 2..=n as i64 {
        let mut hash: Option<String> = None;
        let mut padded: Option<String> = None;
        for s in 0..k {
            let (starts, ends) = (g.axes(&[s]), g.axes(&[length - (k - 1) + s]));
            let column = g.op("Slice", &[ids, &starts, &ends, &axis], vec![]);
            let is_pad = g.op("Equal", &[&column, pad], vec![]);
            padded = Some(match padded {
                None => is_pad,
                Some(p) => g.op("Or", &[&p, &is_pad], vec![]),
            });
            hash = Some(match hash {
                None => column,
                Some(h) => {
                    let scaled = g.op("Mul", &[&h, &prime], vec![]);
                    let sum = g.op("Add", &[&scaled, &column], vec![]);
                    g.op("Mod", &[&sum, &buckets], vec![])
                }
            });
        }
        let (hash, padded) = (hash.context("an n-gram of no tokens")?, padded.context("an n-gram of no tokens")?);
        let shifted = g.op("Add", &[&hash, &vocab], vec![]);
        parts.push(g.op("Where", &[&padded, pad, &shifted], vec![]));
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(g.op("Concat", &refs, vec![int("axis", 1)]))
}
