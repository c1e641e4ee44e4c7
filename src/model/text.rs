//! The text encoders (`model.text`): each free-text column's token ids (`[batch,
//! max_length]`, padded with the tokenizer's padding id) become one vector of `d_embedding`
//! that joins the other features before the model's body. A generated TorchScript piece, as
//! the numeric embeddings are: a child module `text` holding one encoder per column
//! (`text.<j>.…`), and lines that leave column `j`'s vector in `t<j>`.
//!
//! - `bag`: `torch.embedding_bag` in mean mode with the padding id excluded, as
//!   `nn.EmbeddingBag(vocab, d, mode="mean", padding_idx=pad)` computes it on 2-D ids
//!   (fastText's model): `text.<j>.embedding.weight`. An empty text gives zeros. With
//!   `ngrams` 2 or 3 (fastText's word n-grams) the runs of consecutive tokens are hashed into
//!   `buckets` more rows of the same table and averaged with the tokens.
//! - `transformer`: token embeddings plus learned position embeddings, a learned `[CLS]`
//!   vector in front, `n_blocks` pre-norm blocks (self-attention whose keys are the [CLS] and
//!   the text's own tokens, never padding; a GELU feed-forward of twice the width), and a
//!   final LayerNorm of the [CLS] output. The [CLS] is always there to attend to, so an empty
//!   text gives a vector too, not NaN. Names: `embedding.weight`, `position.weight`,
//!   `cls`, `blocks.<i>.{attention_norm, qkv, out, ffn_norm, linear1, linear2}.{weight,bias}`,
//!   `norm.{weight,bias}`.
//!
//! The bag's table is drawn U(-1/d, 1/d) as fastText draws its input vectors: small, so the
//! first steps of the head see the tokens it learns rather than N(0, 1) noise, which a linear
//! head on a short bag overfit within a few epochs (docs/text.md). The transformer's
//! embeddings are drawn N(0, 1) as nn.Embedding draws them, linear layers as nn.Linear. The
//! padding row is zero (as `padding_idx` makes it); everything comes from the global
//! generator the caller seeds, column by column.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use super::layers::{layer_norm, linear};
use crate::config::{TextEncoder, TextEncoderKind};
use crate::data::TextFeatures;
use crate::shim::ScriptModule;

/// The child module holding the encoders, in `model.pt` and in parameter names.
pub const TEXT: &str = "text";

/// The text part of a model's input: `columns` columns of `max_length` ids each, after the
/// numeric features and the categorical codes; `encoder` says how a built-in model encodes
/// them (`None` where only the layout matters, or for a user's module, which takes the ids).
#[derive(Debug, Clone, PartialEq)]
pub struct TextInput {
    pub columns: usize,
    pub max_length: usize,
    pub vocab_size: usize,
    pub pad_id: i64,
    pub encoder: Option<TextEncoder>,
}

const FLOAT: (Kind, Device) = (Kind::Float, Device::Cpu);

impl TextInput {
    pub fn of(text: &TextFeatures) -> TextInput {
        TextInput {
            columns: text.columns.len(),
            max_length: text.max_length,
            vocab_size: text.vocab_size,
            pad_id: i64::from(text.pad_id),
            encoder: None,
        }
    }

    /// The ids' columns in the encoded input.
    pub fn ids(&self) -> usize {
        self.columns * self.max_length
    }

    /// Each column's vector's width (0 without an encoder).
    pub fn d_embedding(&self) -> usize {
        self.encoder.as_ref().map_or(0, TextEncoder::width)
    }

    /// The columns the text takes in `h0`.
    pub fn width(&self) -> usize {
        self.columns * self.d_embedding()
    }

    /// The names of the vectors [`TextInput::script`] leaves, in column order.
    pub fn vectors(&self) -> Vec<String> {
        (0..self.columns).map(|j| format!("t{j}")).collect()
    }

    fn encoder(&self) -> Result<&TextEncoder> {
        match &self.encoder {
            Some(e) => Ok(e),
            None => bail!("the model takes text columns but has no text encoder"),
        }
    }

    /// Adds the encoders' parameters to `root` as its child `text`, drawn column by column.
    pub fn register(&self, root: &mut ScriptModule) -> Result<()> {
        let e = self.encoder()?;
        let mut text = ScriptModule::new("__torch__.torchfit.TextEncoders")?;
        for j in 0..self.columns {
            let encoder = match e.encoder {
                TextEncoderKind::Bag => self.bag(j, e)?,
                TextEncoderKind::Transformer => self.transformer(j, e)?,
            };
            text.register_module(&j.to_string(), &encoder)?;
        }
        root.register_module(TEXT, &text)
    }

    /// nn.Embedding(rows, d, padding_idx=pad): N(0, 1), the padding row zero.
    fn embedding(&self, rows: usize, d: usize) -> Result<Tensor> {
        self.without_padding(Tensor::f_randn([rows as i64, d as i64], FLOAT)?)
    }

    /// fastText's input vectors: U(-1/d, 1/d), the padding row zero.
    fn bag_table(&self, rows: usize, d: usize) -> Result<Tensor> {
        let scale = 1.0 / d as f64;
        let table = Tensor::f_rand([rows as i64, d as i64], FLOAT)?.f_mul_scalar(2.0 * scale)?.f_sub_scalar(scale)?;
        self.without_padding(table)
    }

    fn without_padding(&self, table: Tensor) -> Result<Tensor> {
        if (0..table.size()[0]).contains(&self.pad_id) {
            let _ = table.get(self.pad_id).f_zero_()?;
        }
        Ok(table)
    }

    /// The bag's one table: the tokens' rows, then the n-grams' buckets.
    fn bag(&self, j: usize, e: &TextEncoder) -> Result<ScriptModule> {
        let mut m = ScriptModule::new(&format!("__torch__.torchfit.TextBag{j}"))?;
        let (_, buckets) = e.ngrams();
        let table = self.bag_table(self.vocab_size + buckets, e.width())?;
        m.register_module("embedding", &weight(&format!("TextBag{j}Embedding"), &table)?)?;
        Ok(m)
    }

    fn transformer(&self, j: usize, e: &TextEncoder) -> Result<ScriptModule> {
        let d = e.width() as i64;
        let mut m = ScriptModule::new(&format!("__torch__.torchfit.TextTransformer{j}"))?;
        let table = self.embedding(self.vocab_size, e.width())?;
        m.register_module("embedding", &weight(&format!("Text{j}Embedding"), &table)?)?;
        let position = Tensor::f_randn([self.max_length as i64, d], FLOAT)?;
        m.register_module("position", &weight(&format!("Text{j}Position"), &position)?)?;
        m.register_tensor("cls", &Tensor::f_randn([d], FLOAT)?, false)?;
        let mut blocks = ScriptModule::new(&format!("__torch__.torchfit.Text{j}Blocks"))?;
        for i in 0..e.n_blocks.unwrap_or(crate::config::TEXT_DEFAULTS.2) {
            let name = |part: &str| format!("Text{j}Block{i}{part}");
            let mut block = ScriptModule::new(&format!("__torch__.torchfit.{}", name("")))?;
            block.register_module("attention_norm", &layer_norm(&name("AttentionNorm"), d)?)?;
            block.register_module("qkv", &linear(&name("Qkv"), d, 3 * d)?)?;
            block.register_module("out", &linear(&name("Out"), d, d)?)?;
            block.register_module("ffn_norm", &layer_norm(&name("FfnNorm"), d)?)?;
            block.register_module("linear1", &linear(&name("Linear1"), d, 2 * d)?)?;
            block.register_module("linear2", &linear(&name("Linear2"), 2 * d, d)?)?;
            blocks.register_module(&i.to_string(), &block)?;
        }
        m.register_module("blocks", &blocks)?;
        m.register_module("norm", &layer_norm(&format!("Text{j}Norm"), d)?)?;
        Ok(m)
    }

    /// TorchScript lines (in a method with the ids `ids`, int64 `[batch, columns *
    /// max_length]`) leaving each column's vector in `t<j>`; nothing without an encoder
    /// (which `register` refuses).
    pub fn script(&self) -> String {
        let Some(e) = &self.encoder else { return String::new() };
        let (length, pad) = (self.max_length, self.pad_id);
        let mut src = String::new();
        for j in 0..self.columns {
            let (from, to) = (j * length, (j + 1) * length);
            src += &format!("    e = getattr(self.{TEXT}, \"{j}\")\n    i = ids[:, {from}:{to}]\n");
            src += &match e.encoder {
                TextEncoderKind::Bag => bag_script(j, e, self.vocab_size, pad),
                TextEncoderKind::Transformer => transformer_script(j, e, length, pad),
            };
        }
        src
    }
}

/// The multiplier of the n-gram hash: a prime, so that `(a * P + b) mod buckets` spreads
/// pairs of ids below 2^24 without overflowing int64.
pub const NGRAM_PRIME: i64 = 1_000_003;

/// Column `j`'s bag, from its ids `i` and module `e` into `t<j>`: with n-grams, each run of
/// 2 (and 3) tokens without padding is hashed to `vocab + (hash mod buckets)` and joins the
/// tokens in the bag; a run with padding is padding.
fn bag_script(j: usize, e: &TextEncoder, vocab: usize, pad: i64) -> String {
    let (n, buckets) = e.ngrams();
    let mut src = String::new();
    let mut parts = vec!["i".to_string()];
    for k in 2..=n {
        // The k-gram starting at each position that has k tokens: columns [s, s + L - k].
        let column = |s: usize| format!("i[:, {s}:i.size(1) - {}]", k - 1 - s);
        let mut hash = column(0);
        let mut padded = format!("({} == {pad})", column(0));
        for s in 1..k {
            hash = format!("(({hash}) * {NGRAM_PRIME} + {}) % {buckets}", column(s));
            padded = format!("{padded} | ({} == {pad})", column(s));
        }
        src += &format!("    g{k} = ({hash} + {vocab}).masked_fill({padded}, {pad})\n");
        parts.push(format!("g{k}"));
    }
    if parts.len() > 1 {
        src += &format!("    i = torch.cat([{}], 1)\n", parts.join(", "));
    }
    src + &format!(
        "    offsets = torch.arange(i.size(0), device=i.device) * i.size(1)\n    \
         t{j} = torch.embedding_bag(e.embedding.weight, i.reshape(-1), offsets, False, 1, False, None, False, {pad})[0]\n"
    )
}

/// Column `j`'s transformer, from its ids `i` and module `e` into `t<j>`.
fn transformer_script(j: usize, e: &TextEncoder, length: usize, pad: i64) -> String {
    let (_, _, n_blocks, n_heads, dropout) = crate::config::TEXT_DEFAULTS;
    let d = e.width();
    let heads = e.n_heads.unwrap_or(n_heads);
    let (p, tokens, d_head) = (e.dropout.unwrap_or(dropout), length + 1, d / heads.max(1));
    let norm = |m: &str, x: &str| format!("torch.layer_norm({x}, [{d}], {m}.weight, {m}.bias, 1e-05, True)");
    let drop = |x: &str| format!("torch.dropout({x}, {p:?}, self.training)");
    let mut src = String::from("    keep = (i != ");
    src += &format!("{pad}).unsqueeze(1).unsqueeze(1)\n");
    src += "    keep = torch.cat([torch.ones_like(keep[:, :, :, :1]), keep], 3)\n";
    src += &format!("    h = torch.embedding(e.embedding.weight, i, {pad}) + e.position.weight\n");
    src += "    h = torch.cat([e.cls.expand(h.size(0), 1, -1), h], 1)\n";
    for b in 0..e.n_blocks.unwrap_or(n_blocks) {
        src += &format!("    b = getattr(e.blocks, \"{b}\")\n");
        src += &format!("    a = {}\n", norm("b.attention_norm", "h"));
        src += &format!(
            "    qkv = torch.linear(a, b.qkv.weight, b.qkv.bias).reshape(-1, {tokens}, 3, {heads}, {d_head}).permute(2, 0, 3, 1, 4)\n"
        );
        src += &format!(
            "    a = torch.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], keep, {p:?} if self.training else 0.0)\n"
        );
        src +=
            &format!("    a = torch.linear(a.transpose(1, 2).reshape(-1, {tokens}, {d}), b.out.weight, b.out.bias)\n");
        src += &format!("    h = h + {}\n", drop("a"));
        src += &format!("    a = {}\n", norm("b.ffn_norm", "h"));
        src += "    a = torch.linear(torch.gelu(torch.linear(a, b.linear1.weight, b.linear1.bias)), b.linear2.weight, b.linear2.bias)\n";
        src += &format!("    h = h + {}\n", drop("a"));
    }
    src + &format!("    t{j} = {}\n", norm("e.norm", "h[:, 0]"))
}

fn weight(class: &str, w: &Tensor) -> Result<ScriptModule> {
    let mut m = ScriptModule::new(&format!("__torch__.torchfit.{class}"))?;
    m.register_tensor("weight", w, false)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bag_table_is_fasttexts_and_the_padding_row_is_zero() {
        let _rng = crate::testing::seed(0);
        let input = TextInput { columns: 1, max_length: 4, vocab_size: 1000, pad_id: 3, encoder: None };
        let (rows, d) = (1000, 16);
        let t = input.bag_table(rows, d).unwrap();
        assert_eq!(t.size(), [rows as i64, d as i64]);
        assert_eq!(t.get(3).abs().max().double_value(&[]), 0.0);
        let bound = 1.0 / d as f64;
        assert!(t.abs().max().double_value(&[]) <= bound);
        // U(-a, a) has the std a / sqrt(3); N(0, 1) would be 1.
        let std = t.std(false).double_value(&[]);
        assert!((std - bound / 3f64.sqrt()).abs() < 0.05 * bound, "{std}");
        assert!(t.mean(Kind::Float).double_value(&[]).abs() < 0.02 * bound);
    }
}
