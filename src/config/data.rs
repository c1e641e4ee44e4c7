//! The `data:` section of the schema: where the rows come from (a generator, CSV, Parquet,
//! NPY), which columns are features and targets, and how they are encoded and filled.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Each kind reads only its own keys; setting another kind's is an error, so these are
/// `None` until set, and `Config::resolve` fills in the chosen kind's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub kind: DataKind,
    /// Generated kinds: rows to generate (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// Generated kinds: the number of features (default 10; 2 for moons). csv: the columns to
    /// use (default: all but the target columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Generated kinds: the number of targets (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<usize>,
    /// Generated kinds: the standard deviation of the Gaussian noise (default 0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<f64>,
    /// csv: the file. npy: one `.npz` holding arrays `x` and `y` (instead of `x` and `y`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// csv: the target column, or a list of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Columns>,
    /// csv: the field delimiter, one character (default `,`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// npy: the features file: a table `[samples, features]` of floats, or an array passed to
    /// the model as stored (`[samples, ...]` of any rank, or integers: token ids).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<PathBuf>,
    /// npy: the targets file `[samples]` or `[samples, targets]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<PathBuf>,
    /// Empty cells, `NA` and `nan`: `error`, `drop_row`, or `mean` (features only; the mean of
    /// the training part).
    pub missing: Missing,
    /// Fraction of rows held out for validation, after a seeded shuffle.
    pub validation_split: f64,
    /// Fraction of rows held out for the final test, after the same shuffle.
    pub test_split: f64,
    /// Standardise each numeric feature with the training part's mean and std (inside
    /// model.pt too). Defaults to true for file data (csv, parquet, npy tables), false for
    /// generated data. An npy array x (any rank but 2, or integers) is never standardised:
    /// unset, it stays unset, and `true` is an error when the file is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standardize: Option<bool>,
    /// csv, parquet: columns to treat as categorical even though they hold numbers
    /// (integer-coded ids, classes 1/2/3). Columns with any text are categorical anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical: Option<Vec<String>>,
    /// csv, parquet: levels seen fewer times than this in the training part share one
    /// "other" level (default 1: every level seen counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_frequency: Option<usize>,
    /// csv, parquet: how the model takes categorical columns: `one_hot`, `embedding`, or per
    /// column `{column: one_hot | embedding | WIDTH}`. Unset (and for columns a per-column
    /// map leaves out): one-hot up to 50 levels, `(other)` and `(missing)` included, and an
    /// embedding above (`data::categorical::default_encoding`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categorical_encoding: Option<CategoricalEncoding>,
    /// Regression: standardise the targets too; predictions come back in original units.
    pub standardize_target: bool,
    /// csv, parquet: free-text columns (a review, a title), tokenised (`tokenizer`) and
    /// encoded by the model (`model.text`), rather than taken as categories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Vec<String>>,
    /// With `text`: how the text becomes token ids (`config::text`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<super::TokenizerConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// x ~ N(0, 1), y ~ N(0, 1): the Keras example; nothing to learn.
    RandomNormal,
    /// x ~ N(0, 1), y = x W + noise with W ~ N(0, 1/features) fixed by the seed.
    Linear,
    /// Friedman #1: y = 10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5 + noise, x ~ U(0,1)^d.
    Friedman1,
    /// Two interleaving half circles, two classes (scikit-learn's make_moons).
    Moons,
    /// A CSV file with a header row.
    Csv,
    /// A Parquet file: columns by the schema's names, as csv takes them by the header's.
    Parquet,
    /// `.npy` files (`x`, `y`) or one `.npz` (`path`).
    Npy,
}

/// `data.categorical_encoding`: one choice for every categorical column, or one per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategoricalEncoding {
    All(Encoding),
    PerColumn(std::collections::BTreeMap<String, ColumnEncoding>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One 0/1 input per level.
    OneHot,
    /// A learned vector per level, of width min(50, (levels + 1) / 2) as in entity
    /// embeddings (`data::categorical::embedding_width`).
    Embedding,
}

/// One column's encoding: a kind, or an embedding of the given width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ColumnEncoding {
    Kind(Encoding),
    Width(usize),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Features {
    Count(usize),
    Columns(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    One(String),
    Many(Vec<String>),
}

impl Columns {
    pub(crate) fn names(&self) -> Vec<String> {
        match self {
            Columns::One(name) => vec![name.clone()],
            Columns::Many(names) => names.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    Error,
    DropRow,
    Mean,
}
