//! `model.kind: ft_transformer`: the FT-Transformer of "Revisiting Deep Learning Models for
//! Tabular Data" (Gorishniy et al., NeurIPS 2021), exactly as
//! `rtdl_revisiting_models.FTTransformer` (0.0.2) computes it, with its parameter names:
//!
//! ```text
//! tokens = [cls_embedding, cont_embeddings(x), cat_embeddings(codes)]   # [batch, 1 + features, d_block]
//! for i, block in enumerate(backbone.blocks):
//!     h = x if i == 0 else block.attention_normalization(x)           # LayerNorm (none in block 0)
//!     x = x + residual_dropout(block.attention(h, h))                   # the last block: CLS queries only
//!     x = x + residual_dropout(block.ffn(block.ffn_normalization(x)))   # linear1, ReGLU, dropout, linear2
//! return backbone.output.linear(relu(backbone.output.normalization(x[:, 0])))
//! ```
//!
//! Numeric features (standardised and filled by torchfit) are tokens `x_j * w_j + b_j`
//! (`LinearEmbeddings`); each categorical feature is a token of its own, a row of its table
//! over torchfit's levels plus a per-feature bias (`CategoricalEmbeddings`), so torchfit's
//! one-hot/embedding input stage is not used. In the last block the package attends from the
//! CLS token only but adds the result to every token and runs the feed-forward part on all of
//! them, then keeps the CLS token: the same CLS output as running that block on the CLS token
//! alone, which is what is done here (in that block only the keys and values remain per
//! token: about two thirds less work).
//!
//! Each free-text column (`model.text`) is a token too: its encoder's vector through a
//! linear layer `text_tokens.<j>` (d_embedding -> d_block), after the categorical tokens.
//!
//! Built as a TorchScript module and trained through autograd by `Scripted`, like `resnet`.
//! Parameters are drawn from the global generator in the order the package's constructors
//! draw them, discarded draws included (nn.Embedding's N(0, 1) before the package's uniform,
//! the attention biases before they are zeroed), so a seed gives the package's network.

use anyhow::{Context, Result};
use tch::{Device, Kind, Tensor};

use super::input::Input;
use super::layers::{layer_norm, linear, linear_drawn};
use crate::config::{FtTransformerKnobs, ModelConfig};
use crate::shim::ScriptModule;

/// The TorchScript module of an FT-Transformer for `input` with `outputs` outputs.
pub(super) fn module(cfg: &ModelConfig, input: &Input, outputs: usize) -> Result<ScriptModule> {
    let k = FtTransformerKnobs::of(cfg);
    let d = k.d_block as i64;
    let mut root = ScriptModule::new("__torch__.torchfit.FTTransformer")?;
    let mut cls = ScriptModule::new("__torch__.torchfit.CLSEmbedding")?;
    cls.register_tensor("weight", &rsqrt_uniform(&[d], d)?, false)?;
    root.register_module("cls_embedding", &cls)?;
    if input.numeric > 0 {
        let n = input.numeric as i64;
        let mut cont = ScriptModule::new("__torch__.torchfit.LinearEmbeddings")?;
        cont.register_tensor("weight", &rsqrt_uniform(&[n, d], d)?, false)?;
        cont.register_tensor("bias", &rsqrt_uniform(&[n, d], d)?, false)?;
        root.register_module("cont_embeddings", &cont)?;
    }
    if !input.categorical.is_empty() {
        root.register_module("cat_embeddings", &categorical_embeddings(input, d)?)?;
    }
    let mut backbone = ScriptModule::new("__torch__.torchfit.FTTransformerBackbone")?;
    let mut blocks = ScriptModule::new("__torch__.torchfit.FTBlocks")?;
    for i in 0..k.n_blocks {
        blocks.register_module(&i.to_string(), &block(i, &k)?)?;
    }
    backbone.register_module("blocks", &blocks)?;
    let mut output = ScriptModule::new("__torch__.torchfit.FTOutput")?;
    output.register_module("normalization", &layer_norm("FTOutputNorm", d)?)?;
    output.register_module("linear", &linear("FTOutputLinear", d, outputs as i64)?)?;
    backbone.register_module("output", &output)?;
    root.register_module("backbone", &backbone)?;
    if let Some(text) = &input.text {
        // Each text column's vector (`model.text`) becomes one more token.
        text.register(&mut root)?;
        let mut projections = ScriptModule::new("__torch__.torchfit.FTTextTokens")?;
        for j in 0..text.columns {
            projections
                .register_module(&j.to_string(), &linear(&format!("FTTextToken{j}"), text.d_embedding() as i64, d)?)?;
        }
        root.register_module("text_tokens", &projections)?;
    }
    root.define(&source(input, &k)).context("compiling the FT-Transformer's forward")?;
    root.set_training(false)?;
    Ok(root)
}

/// U(-d^-0.5, d^-0.5) of `shape`, the package's embedding initialisation (`d ** -0.5` as
/// Python computes it).
fn rsqrt_uniform(shape: &[i64], d: i64) -> Result<Tensor> {
    let bound = (d as f64).powf(-0.5);
    Ok(Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?.f_uniform_(-bound, bound)?)
}

/// `CategoricalEmbeddings(levels, d, bias=True)`: nn.Embedding draws N(0, 1) tables, which
/// `reset_parameters` then overwrites with uniform ones, then the bias.
fn categorical_embeddings(input: &Input, d: i64) -> Result<ScriptModule> {
    let levels: Vec<i64> = input.categorical.iter().map(|c| c.levels as i64).collect();
    for &n in &levels {
        let _ = Tensor::f_randn([n, d], (Kind::Float, Device::Cpu))?;
    }
    let mut tables = ScriptModule::new("__torch__.torchfit.FTCategoricalTables")?;
    for (j, &n) in levels.iter().enumerate() {
        let mut table = ScriptModule::new(&format!("__torch__.torchfit.FTCategoricalTable{j}"))?;
        table.register_tensor("weight", &rsqrt_uniform(&[n, d], d)?, false)?;
        tables.register_module(&j.to_string(), &table)?;
    }
    let mut m = ScriptModule::new("__torch__.torchfit.CategoricalEmbeddings")?;
    m.register_module("embeddings", &tables)?;
    m.register_tensor("bias", &rsqrt_uniform(&[levels.len() as i64, d], d)?, false)?;
    Ok(m)
}

/// Block `i`, its modules drawn in the order of the package's ModuleDict literal:
/// attention (W_q, W_k, W_v, then W_out with more than one head; biases zeroed after their
/// draw), ffn_normalization, ffn.linear1, ffn.linear2, and attention_normalization after
/// block 0.
fn block(i: usize, k: &FtTransformerKnobs) -> Result<ScriptModule> {
    let d = k.d_block as i64;
    let hidden = k.ffn_d_hidden() as i64;
    let mut attention = ScriptModule::new(&format!("__torch__.torchfit.FTBlock{i}Attention"))?;
    let mut projections = vec!["W_q", "W_k", "W_v"];
    if k.attention_n_heads > 1 {
        projections.push("W_out");
    }
    for name in projections {
        attention.register_module(name, &linear_drawn(&format!("FTBlock{i}{name}"), d, d, true)?)?;
    }
    let mut block = ScriptModule::new(&format!("__torch__.torchfit.FTBlock{i}"))?;
    block.register_module("attention", &attention)?;
    block.register_module("ffn_normalization", &layer_norm(&format!("FTBlock{i}FfnNorm"), d)?)?;
    let mut ffn = ScriptModule::new(&format!("__torch__.torchfit.FTBlock{i}Ffn"))?;
    ffn.register_module("linear1", &linear(&format!("FTBlock{i}Linear1"), d, 2 * hidden)?)?;
    ffn.register_module("linear2", &linear(&format!("FTBlock{i}Linear2"), hidden, d)?)?;
    block.register_module("ffn", &ffn)?;
    if i > 0 {
        block.register_module("attention_normalization", &layer_norm(&format!("FTBlock{i}AttentionNorm"), d)?)?;
    }
    Ok(block)
}

/// `forward(x)` or `forward(x, codes)` (`Scripted`'s input contract): the tokens, the blocks,
/// the output head.
fn source(input: &Input, k: &FtTransformerKnobs) -> String {
    let mut src = format!("def forward(self, {}) -> Tensor:\n", input.signature());
    src += "    tokens = [self.cls_embedding.weight.expand(x.size(0), 1, -1)]\n";
    if input.numeric > 0 {
        src += "    tokens.append(x.unsqueeze(-1) * self.cont_embeddings.weight + self.cont_embeddings.bias)\n";
    }
    if !input.categorical.is_empty() {
        let rows: Vec<String> = (0..input.categorical.len())
            .map(|j| format!("torch.embedding(getattr(self.cat_embeddings.embeddings, \"{j}\").weight, codes[:, {j}])"))
            .collect();
        src += &format!("    tokens.append(torch.stack([{}], -2) + self.cat_embeddings.bias)\n", rows.join(", "));
    }
    if let Some(text) = &input.text {
        src += &text.script();
        let rows: Vec<String> = text
            .vectors()
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let m = format!("getattr(self.text_tokens, \"{j}\")");
                format!("torch.linear({t}, {m}.weight, {m}.bias)")
            })
            .collect();
        src += &format!("    tokens.append(torch.stack([{}], 1))\n", rows.join(", "));
    }
    src += "    x = torch.cat(tokens, 1)\n";
    let d = k.d_block;
    let dropout = |p: f64, h: &str| match p {
        0.0 => String::new(),
        p => format!("    {h} = torch.dropout({h}, {p:?}, self.training)\n"),
    };
    for i in 0..k.n_blocks {
        let last = i + 1 == k.n_blocks;
        src += &format!("    block = getattr(self.backbone.blocks, \"{i}\")\n");
        src += &match i {
            0 => "    h = x\n".to_string(),
            _ => norm("block.attention_normalization", "x", "h", d),
        };
        src += &attention(k, if last { "h[:, :1]" } else { "h" });
        src += &dropout(k.residual_dropout, "h");
        src += if last { "    x = x[:, :1] + h\n" } else { "    x = x + h\n" };
        src += &norm("block.ffn_normalization", "x", "h", d);
        src += "    h = torch.linear(h, block.ffn.linear1.weight, block.ffn.linear1.bias)\n";
        // ReGLU by chunk, as the package does: the backward of two narrows would zero and
        // fill a gradient of the whole width for each half.
        src += "    halves = h.chunk(2, -1)\n    h = halves[0] * torch.relu(halves[1])\n";
        src += &dropout(k.ffn_dropout, "h");
        src += "    h = torch.linear(h, block.ffn.linear2.weight, block.ffn.linear2.bias)\n";
        src += &dropout(k.residual_dropout, "h");
        src += "    x = x + h\n";
    }
    src += "    x = x[:, 0]\n";
    src += &norm("self.backbone.output.normalization", "x", "x", d);
    src += "    x = torch.relu(x)\n";
    src + "    return torch.linear(x, self.backbone.output.linear.weight, self.backbone.output.linear.bias)\n"
}

/// LayerNorm of module `m` over the last dimension (`d`), eps 1e-5 as nn.LayerNorm's.
fn norm(m: &str, x: &str, out: &str, d: usize) -> String {
    format!("    {out} = torch.layer_norm({x}, [{d}], {m}.weight, {m}.bias, 1e-05, True)\n")
}

/// `block.attention(q_in, h)` into `h`, as `MultiheadAttention.forward` computes it: heads
/// split from the projections, softmax(q k^T / sqrt(d_head)) with dropout, heads merged,
/// W_out when there is more than one head.
fn attention(k: &FtTransformerKnobs, q_in: &str) -> String {
    let heads = k.attention_n_heads;
    let d_head = k.d_block / heads;
    let scale = (d_head as f64).sqrt();
    let a = "block.attention";
    let mut src = format!("    q = torch.linear({q_in}, {a}.W_q.weight, {a}.W_q.bias)\n");
    src += &format!("    k = torch.linear(h, {a}.W_k.weight, {a}.W_k.bias)\n");
    src += &format!("    v = torch.linear(h, {a}.W_v.weight, {a}.W_v.bias)\n");
    // [batch, tokens, d] -> [batch * heads, tokens, d_head], contiguous (as the package's
    // `_reshape`): bmm on it is several times faster than matmul on the strided 4-D view.
    let split = |t: &str| {
        format!("{t}.reshape({t}.size(0), {t}.size(1), {heads}, {d_head}).transpose(1, 2).reshape(-1, {t}.size(1), {d_head})")
    };
    src += &format!("    p = torch.bmm({}, {}.transpose(1, 2)) / {scale:?}\n", split("q"), split("k"));
    src += "    p = torch.softmax(p, -1)\n";
    if k.attention_dropout > 0.0 {
        src += &format!("    p = torch.dropout(p, {:?}, self.training)\n", k.attention_dropout);
    }
    src += &format!("    h = torch.bmm(p, {})\n", split("v"));
    src += &format!("    h = h.reshape(q.size(0), {heads}, q.size(1), {d_head}).transpose(1, 2).reshape(q.size(0), q.size(1), {})\n", k.d_block);
    if heads > 1 {
        src += &format!("    h = torch.linear(h, {a}.W_out.weight, {a}.W_out.bias)\n");
    }
    src
}
