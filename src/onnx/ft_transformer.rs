//! The ONNX graph of a `model.kind: ft_transformer` run: `model::ft_transformer`'s network in
//! evaluation mode (no dropout), op for op: the tokens (Mul and Add for the numeric ones,
//! Gather for the categorical ones, the CLS token expanded to the batch), then per block
//! LayerNormalization, the attention (MatMul, heads split by Reshape and Transpose, Softmax),
//! ReGLU (two Slices, Relu, Mul) and the residual Adds; the last block on the CLS token only.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::{code_column, codes_input, float, int, ints, numeric_stage, Graph, Network};
use crate::config::{FtTransformerKnobs, ModelConfig};
use crate::data::Preprocessing;
use crate::model::Input;

/// The network of an ft_transformer run (its state_dict `state`, knobs `cfg`, input `input`).
pub(super) fn network(
    state: HashMap<String, Tensor>,
    cfg: &ModelConfig,
    input: &Input,
    preprocessing: &Preprocessing,
) -> Result<Network> {
    let k = FtTransformerKnobs::of(cfg);
    let mut net = Net { g: Graph::default(), state, k };
    let mut inputs = Vec::new();
    let mut tokens = vec![];
    // The batch size, for the CLS token: the first dimension of whichever input there is.
    let first = if input.numeric > 0 {
        let x = numeric_stage(&mut net.g, &mut inputs, input.numeric, preprocessing);
        let axes = net.g.axes(&[2]);
        let x = net.g.op("Unsqueeze", &[&x, &axes], vec![]);
        let weighted = net.param_op("Mul", &x, "cont_embeddings.weight")?;
        tokens.push(net.param_op("Add", &weighted, "cont_embeddings.bias")?);
        "numeric"
    } else {
        "codes"
    };
    if !input.categorical.is_empty() {
        codes_input(&mut inputs, input.categorical.len());
        let axes = net.g.axes(&[1]);
        let mut rows = Vec::new();
        for j in 0..input.categorical.len() {
            let code = code_column(&mut net.g, j);
            let table = net.param(&format!("cat_embeddings.embeddings.{j}.weight"))?;
            let row = net.g.op("Gather", &[&table, &code], vec![int("axis", 0)]);
            rows.push(net.g.op("Unsqueeze", &[&row, &axes], vec![]));
        }
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let stacked = net.g.op("Concat", &refs, vec![int("axis", 1)]);
        tokens.push(net.param_op("Add", &stacked, "cat_embeddings.bias")?);
    }
    let cls = net.cls(first)?;
    tokens.insert(0, cls);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut x = net.g.op("Concat", &refs, vec![int("axis", 1)]);
    for i in 0..k.n_blocks {
        x = net.block(i, &x)?;
    }
    let index = net.g.int64s("token_0", &[], &[0]);
    let x = net.g.op("Gather", &[&x, &index], vec![int("axis", 1)]);
    let x = net.layer_norm(&x, "backbone.output.normalization")?;
    let x = net.g.op("Relu", &[&x], vec![]);
    let (weight, bias) = (net.param("backbone.output.linear.weight")?, net.param("backbone.output.linear.bias")?);
    let x = net.g.op("Gemm", &[&x, &weight, &bias], vec![int("transB", 1)]);
    Ok((net.g, inputs, x, "A torchfit FT-Transformer (rtdl_revisiting_models) with its preprocessing"))
}

/// The graph being built, with the state_dict it reads.
struct Net {
    g: Graph,
    state: HashMap<String, Tensor>,
    k: FtTransformerKnobs,
}

impl Net {
    fn get(&self, name: &str) -> Result<&Tensor> {
        self.state.get(name).with_context(|| format!("the FT-Transformer has no `{name}`"))
    }

    /// Parameter `name` as an initializer.
    fn param(&mut self, name: &str) -> Result<String> {
        let t = self.get(name)?.shallow_clone();
        self.g.tensor(name, &t)
    }

    /// `op(x, parameter)`.
    fn param_op(&mut self, op: &str, x: &str, name: &str) -> Result<String> {
        let p = self.param(name)?;
        Ok(self.g.op(op, &[x, &p], vec![]))
    }

    /// The CLS token, `[batch, 1, d]`, its batch size read from input `first`.
    fn cls(&mut self, first: &str) -> Result<String> {
        let d = self.k.d_block as i64;
        let weight = self.get("cls_embedding.weight")?.reshape([1, 1, d]);
        let weight = self.g.tensor("cls_embedding.weight", &weight)?;
        let shape = self.g.op("Shape", &[first], vec![]);
        let (zero, one) = (self.g.axes(&[0]), self.g.axes(&[1]));
        let batch = self.g.op("Slice", &[&shape, &zero, &one], vec![]);
        let rest = self.g.int64s("cls_shape", &[2], &[1, d]);
        let shape = self.g.op("Concat", &[&batch, &rest], vec![int("axis", 0)]);
        Ok(self.g.op("Expand", &[&weight, &shape], vec![]))
    }

    /// `x @ weight.T + bias` for 3-D `x` (Gemm takes matrices only).
    fn linear(&mut self, x: &str, m: &str) -> Result<String> {
        let weight = self.get(&format!("{m}.weight"))?.tr();
        let weight = self.g.tensor(&format!("{m}.weight_t"), &weight)?;
        let product = self.g.op("MatMul", &[x, &weight], vec![]);
        self.param_op("Add", &product, &format!("{m}.bias"))
    }

    fn layer_norm(&mut self, x: &str, m: &str) -> Result<String> {
        let (scale, bias) = (self.param(&format!("{m}.weight"))?, self.param(&format!("{m}.bias"))?);
        Ok(self.g.op("LayerNormalization", &[x, &scale, &bias], vec![int("axis", -1), float("epsilon", 1e-5)]))
    }

    /// The int64 constant `name`, written once however often it is asked for (initializer
    /// names must be unique).
    fn int64s(&mut self, name: &str, dims: &[i64], values: &[i64]) -> String {
        if self.g.initializers.iter().any(|t| t.name.as_deref() == Some(name)) {
            return name.to_string();
        }
        self.g.int64s(name, dims, values)
    }

    /// Tokens `[batch, tokens, d]` from `from` to `to` (exclusive).
    fn tokens(&mut self, x: &str, from: i64, to: i64) -> String {
        let start = self.int64s(&format!("tokens_from_{from}"), &[1], &[from]);
        let end = self.int64s(&format!("tokens_to_{to}"), &[1], &[to]);
        let axes = self.g.axes(&[1]);
        self.g.op("Slice", &[x, &start, &end, &axes], vec![])
    }

    fn block(&mut self, i: usize, x: &str) -> Result<String> {
        let at = format!("backbone.blocks.{i}");
        let last = i + 1 == self.k.n_blocks;
        let h = match i {
            0 => x.to_string(),
            _ => self.layer_norm(x, &format!("{at}.attention_normalization"))?,
        };
        let (q_in, x) = match last {
            true => (self.tokens(&h, 0, 1), self.tokens(x, 0, 1)),
            false => (h.clone(), x.to_string()),
        };
        let a = self.attention(&at, &q_in, &h)?;
        let x = self.g.op("Add", &[&x, &a], vec![]);
        let h = self.layer_norm(&x, &format!("{at}.ffn_normalization"))?;
        let h = self.linear(&h, &format!("{at}.ffn.linear1"))?;
        let hidden = self.k.ffn_d_hidden() as i64;
        let (start, middle, end) = (
            self.g.int64s(&format!("{at}.reglu_0"), &[1], &[0]),
            self.g.int64s(&format!("{at}.reglu_1"), &[1], &[hidden]),
            self.g.int64s(&format!("{at}.reglu_2"), &[1], &[2 * hidden]),
        );
        let axes = self.g.int64s(&format!("{at}.reglu_axis"), &[1], &[-1]);
        let a = self.g.op("Slice", &[&h, &start, &middle, &axes], vec![]);
        let b = self.g.op("Slice", &[&h, &middle, &end, &axes], vec![]);
        let b = self.g.op("Relu", &[&b], vec![]);
        let h = self.g.op("Mul", &[&a, &b], vec![]);
        let h = self.linear(&h, &format!("{at}.ffn.linear2"))?;
        Ok(self.g.op("Add", &[&x, &h], vec![]))
    }

    /// MultiheadAttention(q_in, kv) of block `at`, as the TorchScript computes it.
    fn attention(&mut self, at: &str, q_in: &str, kv: &str) -> Result<String> {
        let (heads, d) = (self.k.attention_n_heads as i64, self.k.d_block as i64);
        if d % heads != 0 {
            bail!("d_block {d} is not a multiple of attention_n_heads {heads}");
        }
        let d_head = d / heads;
        let q = self.linear(q_in, &format!("{at}.attention.W_q"))?;
        let k = self.linear(kv, &format!("{at}.attention.W_k"))?;
        let v = self.linear(kv, &format!("{at}.attention.W_v"))?;
        let split = self.g.int64s(&format!("{at}.heads"), &[4], &[0, 0, heads, d_head]);
        let [q, k, v] = [q, k, v].map(|t| self.g.op("Reshape", &[&t, &split], vec![]));
        let q = self.g.op("Transpose", &[&q], vec![ints("perm", &[0, 2, 1, 3])]);
        let k = self.g.op("Transpose", &[&k], vec![ints("perm", &[0, 2, 3, 1])]);
        let v = self.g.op("Transpose", &[&v], vec![ints("perm", &[0, 2, 1, 3])]);
        let scores = self.g.op("MatMul", &[&q, &k], vec![]);
        let scale = self.g.scalar((d_head as f64).sqrt() as f32);
        let scores = self.g.op("Div", &[&scores, &scale], vec![]);
        let p = self.g.op("Softmax", &[&scores], vec![int("axis", -1)]);
        let h = self.g.op("MatMul", &[&p, &v], vec![]);
        let h = self.g.op("Transpose", &[&h], vec![ints("perm", &[0, 2, 1, 3])]);
        let merge = self.g.int64s(&format!("{at}.merge"), &[3], &[0, 0, d]);
        let h = self.g.op("Reshape", &[&h, &merge], vec![]);
        if heads > 1 {
            return self.linear(&h, &format!("{at}.attention.W_out"));
        }
        Ok(h)
    }
}
