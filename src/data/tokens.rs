//! Free-text columns (`data.text`) as token ids: the tokenizer fitted on the training part
//! (or read from `data.tokenizer.path`), and each row's ids. A model's input holds, after the
//! numeric features and the categorical level codes, `max_length` ids per text column (as
//! floats, exact up to 2^24), padded with the tokenizer's padding id. One tokenizer serves
//! every text column.
//!
//! A missing or empty cell is an empty text: all padding. Cells are trimmed, as every cell
//! torchfit reads is.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;
use torchfit_tokenize::{Model, TextTokenizer, Training};

use super::TextColumn;
use crate::config::{TokenizerConfig, TokenizerKind};

/// What the model's text input is, as fitted: stored in `preprocessing.json`, and in
/// `model.pt` as `extra/text.json` beside `extra/tokenizer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextFeatures {
    /// The text columns, in input order.
    pub columns: Vec<String>,
    /// Token ids per column.
    pub max_length: usize,
    /// The padding id, which fills each column's ids after its text's.
    pub pad_id: u32,
    /// One more than the largest id.
    pub vocab_size: usize,
    /// The tokenizer (`tokenizer.json`'s content, truncation and padding included). Absent
    /// from `extra/text.json`, whose tokenizer is the file beside it.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub tokenizer: serde_json::Value,
}

impl TextFeatures {
    /// The tokenizer of `config`: read from its `path`, or trained on the text of
    /// `train_rows` of every column; with it, ready to encode.
    pub fn fit(
        columns: &[TextColumn],
        train_rows: &[usize],
        config: &TokenizerConfig,
    ) -> Result<(TextFeatures, TextTokenizer)> {
        let max_length = config.length();
        let tokenizer = match &config.path {
            Some(path) => {
                let json = std::fs::read_to_string(path)
                    .with_context(|| format!("data.tokenizer.path: cannot read {}", path.display()))?;
                TextTokenizer::from_json(&json, max_length)
                    .with_context(|| format!("data.tokenizer.path: {}", path.display()))?
            }
            None => {
                let texts: Vec<&str> =
                    columns.iter().flat_map(|c| train_rows.iter().filter_map(|&r| c.values.get(r))).collect();
                if texts.iter().all(|t| t.is_empty()) {
                    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                    bail!("data.text: the training part has no text in {} to train a tokenizer on", names.join(", "));
                }
                TextTokenizer::train(&texts, &training(config), max_length)?
            }
        };
        let features = TextFeatures::of(&tokenizer, columns.iter().map(|c| c.name.clone()).collect())?;
        Ok((features, tokenizer))
    }

    fn of(tokenizer: &TextTokenizer, columns: Vec<String>) -> Result<TextFeatures> {
        let json = tokenizer.to_json()?;
        Ok(TextFeatures {
            columns,
            max_length: tokenizer.max_length(),
            pad_id: tokenizer.pad_id(),
            vocab_size: tokenizer.vocab_size(),
            tokenizer: serde_json::from_str(&json).context("the tokenizer's own JSON")?,
        })
    }

    /// The fitted tokenizer, ready to encode.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::from_json(&self.tokenizer.to_string(), self.max_length)
    }

    /// The ids input width: `max_length` per column.
    pub fn width(&self) -> usize {
        self.columns.len() * self.max_length
    }

    /// `tokenizer.json`'s text, as Python's `tokenizers.Tokenizer.from_file` reads it.
    pub fn tokenizer_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(&self.tokenizer)?)
    }

    /// This without the tokenizer: `extra/text.json`.
    pub fn summary(&self) -> TextFeatures {
        let TextFeatures { columns, max_length, pad_id, vocab_size, .. } = self;
        TextFeatures {
            columns: columns.clone(),
            max_length: *max_length,
            pad_id: *pad_id,
            vocab_size: *vocab_size,
            tokenizer: serde_json::Value::Null,
        }
    }

    /// Every row's ids, `[rows, columns * max_length]` int64: `text` holds the columns in
    /// [`TextFeatures::columns`]' order. Each distinct text is encoded once.
    pub fn encode(&self, tokenizer: &TextTokenizer, text: &[&super::Text], rows: usize) -> Result<Tensor> {
        let (length, width) = (self.max_length, self.width());
        let mut ids = vec![i64::from(self.pad_id); rows * width];
        for (j, column) in text.iter().enumerate() {
            if column.len() != rows {
                bail!("text column {} has {} rows, not {rows}", self.columns[j], column.len());
            }
            let distinct: Vec<&str> = column.distinct().iter().map(String::as_str).collect();
            let encoded = tokenizer.encode(&distinct)?;
            for (row, &code) in column.codes().iter().enumerate() {
                if code != super::text::MISSING {
                    let from = code as usize * length;
                    let to = row * width + j * length;
                    ids[to..to + length].copy_from_slice(&encoded[from..from + length]);
                }
            }
        }
        Ok(Tensor::from_slice(&ids).view([rows as i64, width as i64]))
    }

    /// [`TextFeatures::encode`] of the columns among `text` named as this model's text
    /// columns (`[rows, columns * max_length]` int64); a column missing is an error naming it.
    pub fn encode_named(&self, tokenizer: &TextTokenizer, text: &[TextColumn]) -> Result<Tensor> {
        let columns = self
            .columns
            .iter()
            .map(|name| {
                text.iter()
                    .find(|c| &c.name == name)
                    .map(|c| &c.values)
                    .with_context(|| format!("no text column `{name}`"))
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = columns.first().map_or(0, |c| c.len());
        self.encode(tokenizer, &columns, rows)
    }
}

fn training(config: &TokenizerConfig) -> Training {
    let (kind, vocab_size, min_frequency, lowercase, strip_accents, _) = crate::config::TOKENIZER_DEFAULTS;
    Training {
        model: match config.kind.unwrap_or(kind) {
            TokenizerKind::Bpe => Model::Bpe,
            TokenizerKind::Wordpiece => Model::WordPiece,
        },
        vocab_size: config.vocab_size.unwrap_or(vocab_size),
        min_frequency: config.min_frequency.unwrap_or(min_frequency) as u64,
        lowercase: config.lowercase.unwrap_or(lowercase),
        strip_accents: config.strip_accents.unwrap_or(strip_accents),
    }
}
