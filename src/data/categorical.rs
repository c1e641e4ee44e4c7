//! Categorical features: levels learned from the training part (rare ones folded into one
//! "other" level, missing cells a level of their own), and values turned into level codes,
//! the same way in training, `predict`, `evaluate` and model.pt.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::text::Text;
use crate::config::{CategoricalEncoding, ColumnEncoding, Encoding};

/// A column of text as read.
#[derive(Debug, Clone)]
pub struct TextColumn {
    pub name: String,
    pub values: Text,
}

/// A categorical feature: its levels as learned from the training part, and how the model
/// encodes it. The model's input holds its level index (as a float) after the numeric columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalFeature {
    pub name: String,
    /// Level names in index order.
    pub levels: Vec<String>,
    /// The level that values unseen in training (and rare ones) take.
    pub other: usize,
    /// The level of missing cells, when they are a level of their own.
    pub missing: Option<usize>,
    /// `None`: one-hot; `Some(width)`: a learned embedding of that width.
    pub embedding: Option<usize>,
}

/// The names the two special levels show under (values are matched by index, so a value
/// spelt the same is still its own level).
pub const OTHER: &str = "(other)";
pub const MISSING: &str = "(missing)";

/// The most levels a column is one-hot encoded with when `data.categorical_encoding` leaves
/// it to the default; a column with more is embedded. Levels count as the model sees them,
/// `(other)` and `(missing)` included: the one-hot width. 50 is also the widest default
/// embedding ([`MAX_EMBEDDING_WIDTH`]), so by default no categorical column takes more than
/// 50 of the first layer's inputs, and the `[rows, levels]` one-hot block that the model
/// builds for a column (at prediction too) is at most `[rows, 50]`: memory in proportion to
/// rows and columns, whatever the number of levels.
pub const ONE_HOT_MAX_LEVELS: usize = 50;

/// The widest embedding the width rule gives.
pub const MAX_EMBEDDING_WIDTH: usize = 50;

/// The width rule of embedded columns: min(50, (levels + 1) / 2), the entity-embedding rule
/// (Guo and Berkhahn 2016) that fastai used before its `emb_sz_rule`, 1.6 levels^0.56 capped
/// at 600 (which gives 141 columns at 5,000 levels where this gives 50).
pub fn embedding_width(levels: usize) -> usize {
    ((levels + 1) / 2).clamp(1, MAX_EMBEDDING_WIDTH)
}

/// A column's encoding when the config does not choose it: `None` (one-hot) up to
/// [`ONE_HOT_MAX_LEVELS`] levels, else an embedding of [`embedding_width`].
pub fn default_encoding(levels: usize) -> Option<usize> {
    (levels > ONE_HOT_MAX_LEVELS).then(|| embedding_width(levels))
}

impl CategoricalFeature {
    /// Learns a column's levels from the rows `train` of `values`: those seen at least
    /// `min_frequency` times, sorted (as numbers when they all are), then `(other)` for
    /// unseen and rare values, then `(missing)` when the training part has missing cells.
    /// Encoded as `encoding` says for the column, else by [`default_encoding`].
    pub fn fit(
        name: &str,
        values: &Text,
        train: &[usize],
        min_frequency: usize,
        encoding: Option<&CategoricalEncoding>,
    ) -> CategoricalFeature {
        // Counted per distinct value (a code per training row), then sorted once. A value
        // only in other rows counts 0, which no min_frequency keeps.
        let (counts, has_missing) = values.counts(train);
        let kept = values.distinct().iter().zip(counts).filter(|&(_, n)| n >= min_frequency.max(1));
        let mut kept: Vec<&str> = kept.map(|(v, _)| v.as_str()).collect();
        kept.sort_unstable();
        let mut levels: Vec<String> = kept.into_iter().map(str::to_string).collect();
        if levels.iter().all(|l| l.parse::<f64>().is_ok()) {
            levels.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
        }
        let other = levels.len();
        levels.push(OTHER.to_string());
        let missing = has_missing.then(|| {
            levels.push(MISSING.to_string());
            levels.len() - 1
        });
        let width = embedding_width(levels.len());
        let embedding = match encoding {
            None => default_encoding(levels.len()),
            Some(CategoricalEncoding::All(Encoding::OneHot)) => None,
            Some(CategoricalEncoding::All(Encoding::Embedding)) => Some(width),
            Some(CategoricalEncoding::PerColumn(columns)) => match columns.get(name) {
                None => default_encoding(levels.len()),
                Some(ColumnEncoding::Kind(Encoding::OneHot)) => None,
                Some(ColumnEncoding::Kind(Encoding::Embedding)) => Some(width),
                Some(ColumnEncoding::Width(width)) => Some(*width),
            },
        };
        CategoricalFeature { name: name.to_string(), levels, other, missing, embedding }
    }

    /// The level codes of `values`: a known level's index, else `other`; a missing cell's
    /// level, or `other` when training saw none.
    pub fn codes(&self, values: &Text) -> Vec<f32> {
        let (per_value, missing) = self.level_codes(values);
        values.codes().iter().map(|&c| per_value.get(c as usize).copied().unwrap_or(missing)).collect()
    }

    /// [`CategoricalFeature::codes`] of each of `values`' distinct values, and of a missing
    /// cell: a lookup per distinct value, after which rows only map their codes.
    pub fn level_codes(&self, values: &Text) -> (Vec<f32>, f32) {
        let known: HashMap<&str, usize> =
            self.levels[..self.other].iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
        let per_value = values.distinct().iter().map(|v| known.get(v.as_str()).copied().unwrap_or(self.other) as f32);
        (per_value.collect(), self.missing.unwrap_or(self.other) as f32)
    }
}

/// TorchScript for model.pt that encodes raw rows exactly as [`CategoricalFeature::codes`]
/// and `Preprocessing::encode` do: `encode(numeric, categorical)` takes the numeric
/// features (`[rows, N]` floats, NaN where missing) and each categorical column's values as
/// text by name, and returns the model's input; `predict_rows` (and, for classifiers,
/// `predict_proba_rows`) apply the model to it. Empty for a model without categorical
/// features.
pub fn script(features: &[CategoricalFeature], classifier: bool) -> String {
    if features.is_empty() {
        return String::new();
    }
    let mut src = String::from("def encode(self, numeric: Tensor, categorical: Dict[str, List[str]]) -> Tensor:\n");
    // A missing column is a message naming it, not a bare KeyError.
    let names: Vec<&str> = features.iter().map(|f| f.name.as_str()).collect();
    for f in features {
        let message = format!(
            "categorical has no column {:?}; the model's categorical features are {}",
            f.name,
            names.join(", ")
        );
        // `assert` compiles to a raise without resolving a Python exception class by name,
        // which a module defined from C++ cannot.
        src += &format!("    assert {} in categorical, {}\n", quote(&f.name), quote(&message));
    }
    src += "    codes: List[Tensor] = []\n";
    for (j, f) in features.iter().enumerate() {
        src += &format!("    codes.append(self._codes_{j}(categorical[{}]))\n", quote(&f.name));
    }
    src += "    return torch.cat([numeric.float(), torch.stack(codes, 1)], 1)\n\n";
    src += "def predict_rows(self, numeric: Tensor, categorical: Dict[str, List[str]]) -> Tensor:\n";
    src += "    return self.forward(self.encode(numeric, categorical))\n\n";
    if classifier {
        src += "def predict_proba_rows(self, numeric: Tensor, categorical: Dict[str, List[str]]) -> Tensor:\n";
        src += "    return self.predict_proba(self.encode(numeric, categorical))\n\n";
    }
    for (j, f) in features.iter().enumerate() {
        let table: Vec<String> =
            f.levels[..f.other].iter().enumerate().map(|(i, l)| format!("{}: {i}", quote(l))).collect();
        let missing = f.missing.unwrap_or(f.other);
        src += &format!(
            concat!(
                "def _codes_{j}(self, values: List[str]) -> Tensor:\n",
                "    table: Dict[str, int] = {{{table}}}\n",
                "    out: List[int] = []\n",
                "    for value in values:\n",
                "        key = value.strip()\n",
                "        if key.lower() in [\"\", \"na\", \"n/a\", \"nan\"]:\n",
                "            out.append({missing})\n",
                "        else:\n",
                "            out.append(table.get(key, {other}))\n",
                "    return torch.tensor(out).float()\n\n",
            ),
            j = j,
            table = table.join(", "),
            missing = missing,
            other = f.other,
        );
    }
    src
}

/// A TorchScript string literal (Python's syntax, which JSON's is a subset of for strings).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

/// [`codes`] of the text columns named as `features` are, from any order; a feature without
/// its column is an error naming it.
pub fn codes_by_name(features: &[CategoricalFeature], text: &[TextColumn], rows: usize) -> Result<Tensor> {
    let columns: Vec<&Text> = features
        .iter()
        .map(|f| {
            let column = text.iter().find(|c| c.name == f.name);
            column.map(|c| &c.values).ok_or_else(|| anyhow::anyhow!("no column `{}`", f.name))
        })
        .collect::<Result<_>>()?;
    codes(features, &columns, rows)
}

/// `[rows, columns]` level codes of `columns` (in `features`' order) as floats, the form the
/// model takes them in after the numeric features.
pub fn codes(features: &[CategoricalFeature], columns: &[&Text], rows: usize) -> Result<Tensor> {
    let codes: Vec<Vec<f32>> = features.iter().zip(columns).map(|(f, values)| f.codes(values)).collect();
    super::csv::column_matrix(codes, rows)
}
