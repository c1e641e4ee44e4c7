//! torchfit's tokenizer: Hugging Face's `tokenizers` behind a small API without generics, so
//! that the library's generic code is compiled here, once, and not again in every build of
//! torchfit's main crate.
//!
//! A [`TextTokenizer`] is trained on the training part's text (BPE or WordPiece), or loaded
//! from a `tokenizer.json` a user brings. Either way it truncates to `max_length` tokens and
//! pads with its padding token to exactly that many; [`TextTokenizer::to_json`] writes the
//! file with that truncation and padding in it, so that Python's
//! `tokenizers.Tokenizer.from_file(...).encode_batch(texts)` gives the very ids torchfit's
//! model takes.

use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::strip::StripAccents;
use tokenizers::normalizers::unicode::{NFC, NFD, NFKC};
use tokenizers::normalizers::utils::{Lowercase, Sequence};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// The padding token of a tokenizer torchfit trains, id 0.
pub const PAD: &str = "[PAD]";
/// The token of what the vocabulary lacks, id 1.
pub const UNK: &str = "[UNK]";

/// The largest token id a model can take: ids travel in float32 columns of the model's input
/// beside the numeric features, exact up to 2^24.
pub const MAX_VOCABULARY: usize = 1 << 24;

/// Which subword model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Byte-pair encoding: deterministic training, identical to the Python package's.
    Bpe,
    /// WordPiece (BERT's): its trainer in tokenizers 0.23 numbers continuing pieces in a
    /// hash map's order, so two trainings on the same text may differ.
    WordPiece,
}

/// How to train a tokenizer.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    pub model: Model,
    /// The vocabulary's size at most, the two special tokens included.
    pub vocab_size: usize,
    /// Pieces seen fewer times are not merged into the vocabulary.
    pub min_frequency: u64,
    pub lowercase: bool,
    /// Removes combining marks (é -> e); it also breaks scripts that write vowels with them
    /// (Devanagari, Thai) and drops emoji variation selectors.
    pub strip_accents: bool,
}

/// A tokenizer ready to encode: see the crate's documentation.
pub struct TextTokenizer {
    /// Truncates to `max_length`; pads nothing (padding is written straight into the ids).
    inner: Tokenizer,
    pad_id: u32,
    pad_token: String,
    max_length: usize,
}

impl TextTokenizer {
    /// Trains a tokenizer on `texts` (each text counted once per time it appears).
    pub fn train(texts: &[&str], training: &Training, max_length: usize) -> Result<TextTokenizer> {
        if training.vocab_size < 3 {
            bail!("vocab_size {} leaves no room beside {PAD} and {UNK}", training.vocab_size);
        }
        let mut tokenizer = match training.model {
            Model::Bpe => Tokenizer::new(BPE::builder().unk_token(UNK.into()).build().map_err(err)?),
            Model::WordPiece => {
                Tokenizer::new(WordPiece::builder().unk_token(UNK.into()).build().map_err(err)?)
            }
        };
        tokenizer.with_normalizer(Some(normalizer(training))).map_err(err)?;
        tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
        let specials = vec![AddedToken::from(PAD, true), AddedToken::from(UNK, true)];
        let mut trainer: TrainerWrapper = match training.model {
            Model::Bpe => BpeTrainerBuilder::default()
                .vocab_size(training.vocab_size)
                .min_frequency(training.min_frequency)
                .show_progress(false)
                .special_tokens(specials)
                .build()
                .into(),
            Model::WordPiece => WordPieceTrainerBuilder::default()
                .vocab_size(training.vocab_size)
                .min_frequency(training.min_frequency)
                .show_progress(false)
                .special_tokens(specials)
                .build()
                .into(),
        };
        tokenizer.train(&mut trainer, texts.iter()).map_err(err).context("training the tokenizer")?;
        TextTokenizer::ready(tokenizer, max_length)
    }

    /// A tokenizer from the text of a `tokenizer.json`, its truncation and padding set to
    /// `max_length`. Its padding token is the one its padding names, else `[PAD]` or `<pad>`.
    pub fn from_json(json: &str, max_length: usize) -> Result<TextTokenizer> {
        let tokenizer = Tokenizer::from_str(json).map_err(|e| anyhow!("not a tokenizer.json: {e}"))?;
        TextTokenizer::ready(tokenizer, max_length)
    }

    fn ready(mut inner: Tokenizer, max_length: usize) -> Result<TextTokenizer> {
        if max_length == 0 {
            bail!("max_length must be at least 1");
        }
        let named = inner.get_padding().map(|p| (p.pad_id, p.pad_token.clone()));
        let found = || ["[PAD]", "<pad>"].into_iter().find_map(|t| inner.token_to_id(t).map(|id| (id, t.to_string())));
        let Some((pad_id, pad_token)) = named.or_else(found) else {
            bail!("the tokenizer has no padding token (its padding names none, and it has no [PAD] or <pad>)");
        };
        let size = inner.get_vocab_size(true);
        if size > MAX_VOCABULARY {
            bail!("the tokenizer's vocabulary has {size} tokens; torchfit takes at most {MAX_VOCABULARY}");
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(err)?;
        Ok(TextTokenizer { inner, pad_id, pad_token, max_length })
    }

    /// The padding token's id: every sequence ends in it up to `max_length`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The number of ids (one more than the largest), added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The `tokenizer.json` text, with the truncation and padding that give the model's ids.
    pub fn to_json(&self) -> Result<String> {
        let mut out = self.inner.clone();
        out.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(self.max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: self.pad_id,
            pad_type_id: 0,
            pad_token: self.pad_token.clone(),
        }));
        out.to_string(true).map_err(err)
    }

    /// Each text's ids in `max_length` slots, the rest padding: a `[texts, max_length]`
    /// matrix, row-major. Texts are encoded on every core, in chunks, so that the library's
    /// per-text records (tokens, offsets) never exist for more than a chunk at once.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<i64>> {
        const CHUNK: usize = 4096;
        let length = self.max_length;
        let mut out = vec![i64::from(self.pad_id); texts.len() * length];
        for (rows, chunk) in out.chunks_mut(CHUNK * length).zip(texts.chunks(CHUNK)) {
            let encodings = self.inner.encode_batch_fast(chunk.to_vec(), true).map_err(err)?;
            for (slots, encoding) in rows.chunks_mut(length).zip(&encodings) {
                for (slot, &id) in slots.iter_mut().zip(encoding.get_ids()) {
                    *slot = i64::from(id);
                }
            }
        }
        Ok(out)
    }
}

/// NFKC (ligatures and fullwidth forms folded), lowercasing, and accents stripped, as asked.
fn normalizer(training: &Training) -> NormalizerWrapper {
    let mut steps: Vec<NormalizerWrapper> = vec![NFKC.into()];
    if training.lowercase {
        steps.push(Lowercase.into());
    }
    if training.strip_accents {
        steps.extend([NFD.into(), StripAccents.into(), NFC.into()]);
    }
    Sequence::new(steps).into()
}

fn err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!("{e}")
}
