//! Free-text columns: `data.text` names them, `data.tokenizer` says how their text becomes
//! token ids, and `model.text` how the model turns each column's ids into a vector that joins
//! the other features (`model::text`). `resolve` fills every default, so the resolved config
//! says exactly what ran.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Config, DataKind, Invalid, ModelKind};

/// `data.tokenizer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// A `tokenizer.json` to use as it is (Hugging Face's format), instead of training one on
    /// the training part; `kind`, `vocab_size`, `min_frequency`, `lowercase` and
    /// `strip_accents` then do not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// `bpe` (the default: its training is deterministic) or `wordpiece`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TokenizerKind>,
    /// The vocabulary's size at most, `[PAD]` and `[UNK]` included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// Pieces seen fewer times in the training part are not merged into the vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_frequency: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lowercase: Option<bool>,
    /// Removes accents (é -> e); also breaks Devanagari, Thai and emoji variation selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_accents: Option<bool>,
    /// Each text's tokens: longer texts are cut, shorter ones padded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    Bpe,
    Wordpiece,
}

/// `data.tokenizer`'s defaults: bpe, 8000 tokens, min_frequency 2, lowercase, accents kept,
/// 128 tokens per text.
pub const TOKENIZER_DEFAULTS: (TokenizerKind, usize, usize, bool, bool, usize) =
    (TokenizerKind::Bpe, 8000, 2, true, false, 128);

/// `model.text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextEncoder {
    pub encoder: TextEncoderKind,
    /// Both: the token embeddings' width, and so each text column's vector's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_embedding: Option<usize>,
    /// transformer: encoder blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_blocks: Option<usize>,
    /// transformer: attention heads; they divide `d_embedding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_heads: Option<usize>,
    /// transformer: dropout on attention weights and on each block's outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// bag: also the runs of 2 (or 3) consecutive tokens, each hashed into one of `buckets`
    /// rows of its own (fastText's word n-grams); 1: the tokens alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ngrams: Option<usize>,
    /// bag with ngrams > 1: the rows the n-grams are hashed into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoderKind {
    /// The mean of the text's token embeddings (fastText's).
    Bag,
    /// Token and position embeddings, pre-norm self-attention blocks over the unpadded
    /// tokens, the output of a learned [CLS] token.
    Transformer,
}

/// `model.text`'s defaults: bag, d_embedding 64; transformer: 2 blocks of 4 heads, dropout 0.1.
pub const TEXT_DEFAULTS: (TextEncoderKind, usize, usize, usize, f64) = (TextEncoderKind::Bag, 64, 2, 4, 0.1);

/// The bag's defaults: the tokens alone (docs/text.md has what bigrams did on the bench's
/// tables); with n-grams, 2^16 rows to hash them into.
pub const BAG_DEFAULTS: (usize, usize) = (1, 1 << 16);

/// The most tokens a text may be given (`data.tokenizer.max_length`): an attention block's
/// memory grows with its square.
pub const MAX_LENGTH: usize = 4096;

impl TokenizerConfig {
    pub(super) fn resolve(&mut self) {
        let (kind, vocab_size, min_frequency, lowercase, strip_accents, max_length) = TOKENIZER_DEFAULTS;
        self.max_length.get_or_insert(max_length);
        if self.path.is_none() {
            self.kind.get_or_insert(kind);
            self.vocab_size.get_or_insert(vocab_size);
            self.min_frequency.get_or_insert(min_frequency);
            self.lowercase.get_or_insert(lowercase);
            self.strip_accents.get_or_insert(strip_accents);
        }
    }

    /// The tokens each text is given.
    pub fn length(&self) -> usize {
        self.max_length.unwrap_or(TOKENIZER_DEFAULTS.5)
    }
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            path: None,
            kind: None,
            vocab_size: None,
            min_frequency: None,
            lowercase: None,
            strip_accents: None,
            max_length: None,
        }
    }
}

impl TextEncoder {
    pub(super) fn resolve(&mut self) {
        let (_, d, n_blocks, n_heads, dropout) = TEXT_DEFAULTS;
        self.d_embedding.get_or_insert(d);
        match self.encoder {
            TextEncoderKind::Transformer => {
                self.n_blocks.get_or_insert(n_blocks);
                self.n_heads.get_or_insert(n_heads);
                self.dropout.get_or_insert(dropout);
            }
            TextEncoderKind::Bag => {
                let ngrams = *self.ngrams.get_or_insert(BAG_DEFAULTS.0);
                if ngrams > 1 {
                    self.buckets.get_or_insert(BAG_DEFAULTS.1);
                }
            }
        }
    }

    /// The encoder of a config with text columns but no `model.text`.
    pub fn default_for_text() -> TextEncoder {
        let mut e = TextEncoder {
            encoder: TEXT_DEFAULTS.0,
            d_embedding: None,
            n_blocks: None,
            n_heads: None,
            dropout: None,
            ngrams: None,
            buckets: None,
        };
        e.resolve();
        e
    }

    /// The width of each text column's vector.
    pub fn width(&self) -> usize {
        self.d_embedding.unwrap_or(TEXT_DEFAULTS.1)
    }

    /// bag: the longest token runs embedded, and the rows they are hashed into (0 for
    /// tokens alone).
    pub fn ngrams(&self) -> (usize, usize) {
        match self.encoder {
            TextEncoderKind::Transformer => (1, 0),
            TextEncoderKind::Bag => match self.ngrams.unwrap_or(BAG_DEFAULTS.0) {
                n if n > 1 => (n, self.buckets.unwrap_or(BAG_DEFAULTS.1)),
                n => (n, 0),
            },
        }
    }
}

fn fail(key: &str, message: String) -> Result<()> {
    Err(Invalid { key: key.to_string(), message }.into())
}

fn range(key: &str, value: Option<usize>, least: usize, most: usize) -> Result<()> {
    match value {
        Some(v) if v < least => fail(key, format!("{key} must be >= {least}, got {v}")),
        Some(v) if v > most => fail(key, format!("{key} must be at most {most}, got {v}")),
        _ => Ok(()),
    }
}

/// Checks `data.text`, `data.tokenizer` and `model.text` together.
pub(super) fn validate(config: &Config) -> Result<()> {
    let (d, m) = (&config.data, &config.model);
    let columns = d.text.as_deref().unwrap_or_default();
    if d.text.is_some() && columns.is_empty() {
        return fail("data.text", "data.text lists no columns".into());
    }
    if columns.is_empty() {
        if d.tokenizer.is_some() {
            return fail("data.tokenizer", "data.tokenizer applies when data.text names text columns".into());
        }
        if m.text.is_some() {
            return fail("model.text", "model.text applies when data.text names text columns".into());
        }
        return Ok(());
    }
    if !matches!(d.kind, DataKind::Csv | DataKind::Parquet) {
        let kind = super::yaml_name(&d.kind);
        return fail("data.text", format!("data.text applies to data.kind csv and parquet, not {kind}"));
    }
    for (i, column) in columns.iter().enumerate() {
        if columns[..i].contains(column) {
            return fail("data.text", format!("data.text lists `{column}` twice"));
        }
        if d.categorical.as_deref().unwrap_or_default().contains(column) {
            return fail(
                "data.text",
                format!("data.text: `{column}` is also in data.categorical; a column is one or the other"),
            );
        }
        if d.target.as_ref().is_some_and(|t| t.names().contains(column)) {
            return fail("data.text", format!("data.text: `{column}` is the target"));
        }
    }
    if let Some(t) = &d.tokenizer {
        validate_tokenizer(t)?;
    }
    if let Some(e) = &m.text {
        if m.kind == ModelKind::Torchscript {
            return fail(
                "model.text",
                "model.text does not apply to model.kind torchscript: your module's forward takes the token ids".into(),
            );
        }
        validate_encoder(e)?;
    }
    Ok(())
}

fn validate_tokenizer(t: &TokenizerConfig) -> Result<()> {
    const KEY: &str = "data.tokenizer";
    if t.path.is_some() {
        let trained = [
            ("kind", t.kind.is_some()),
            ("vocab_size", t.vocab_size.is_some()),
            ("min_frequency", t.min_frequency.is_some()),
            ("lowercase", t.lowercase.is_some()),
            ("strip_accents", t.strip_accents.is_some()),
        ];
        if let Some((name, _)) = trained.iter().find(|(_, set)| *set) {
            return fail(
                &format!("{KEY}.{name}"),
                format!("{KEY}.{name} applies to a tokenizer torchfit trains, not one read from {KEY}.path"),
            );
        }
    }
    range(&format!("{KEY}.vocab_size"), t.vocab_size, 3, torchfit_tokenize::MAX_VOCABULARY)?;
    range(&format!("{KEY}.min_frequency"), t.min_frequency, 1, super::MAX_COUNT)?;
    range(&format!("{KEY}.max_length"), t.max_length, 1, MAX_LENGTH)
}

fn validate_encoder(e: &TextEncoder) -> Result<()> {
    const KEY: &str = "model.text";
    let bag = e.encoder == TextEncoderKind::Bag;
    let foreign = [
        ("n_blocks", e.n_blocks.is_some() && bag, "transformer"),
        ("n_heads", e.n_heads.is_some() && bag, "transformer"),
        ("dropout", e.dropout.is_some() && bag, "transformer"),
        ("ngrams", e.ngrams.is_some() && !bag, "bag"),
        ("buckets", e.buckets.is_some() && !bag, "bag"),
    ];
    if let Some((name, _, kind)) = foreign.iter().find(|(_, set, _)| *set) {
        let other = if bag { "bag" } else { "transformer" };
        return fail(&format!("{KEY}.{name}"), format!("{KEY}.{name} applies to {KEY}.encoder: {kind}, not {other}"));
    }
    range(&format!("{KEY}.ngrams"), e.ngrams, 1, 3)?;
    range(&format!("{KEY}.buckets"), e.buckets, 1, torchfit_tokenize::MAX_VOCABULARY)?;
    if e.ngrams == Some(1) && e.buckets.is_some() {
        return fail(&format!("{KEY}.buckets"), format!("{KEY}.buckets applies with {KEY}.ngrams 2 or 3"));
    }
    range(&format!("{KEY}.d_embedding"), e.d_embedding, 1, super::MAX_COUNT)?;
    range(&format!("{KEY}.n_blocks"), e.n_blocks, 1, 64)?;
    range(&format!("{KEY}.n_heads"), e.n_heads, 1, super::MAX_COUNT)?;
    if let (Some(d), Some(h)) = (e.d_embedding, e.n_heads) {
        if d % h != 0 {
            return fail(&format!("{KEY}.n_heads"), format!("{KEY}.n_heads ({h}) must divide {KEY}.d_embedding ({d})"));
        }
    }
    if let Some(p) = e.dropout.filter(|p| !(0.0..1.0).contains(p)) {
        return fail(&format!("{KEY}.dropout"), format!("{KEY}.dropout must be in [0, 1), got {p}"));
    }
    Ok(())
}
