//! Datasets: loading (generators, CSV, Parquet, NPY), the seeded train/validation/test split, and the
//! preprocessing fitted on the training part (missing-value fill, standardisation, class
//! labels), which `preprocessing.json` and `model.pt` carry to prediction time.
//!
//! Generated data is drawn on the CPU from libtorch's seeded generator, so a seed gives the
//! same numbers whatever device the run uses.

use std::path::Path;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use self::csv::header;
use crate::config::{Config, DataConfig, DataKind, Loss, Missing, ModelKind};

mod array;
#[cfg(test)]
mod array_tests;
mod bins;
mod categorical;
mod csv;
mod features;
mod generate;
mod npy;
mod numbers;
mod parquet;
mod paths;
mod preprocessing;
#[cfg(test)]
mod tests;
mod text;
mod tokens;

pub use self::array::{ArrayDtype, ArrayInput};
pub use self::csv::header::{clip, delimiter_hint, list as list_names};
pub use self::csv::{
    classes_from_labels, read_csv, read_labelled_csv, CellError, Column, CsvData, LabelledCsv, Problem, Role,
};
pub use self::npy::read_array;
pub use crate::cell::is_missing;
// The one rule for a cell's text (the server reads JSON strings by it too).
pub use categorical::{
    codes_by_name as categorical_codes, script as categorical_script, CategoricalFeature, TextColumn,
};
pub use features::{or_list, read_features, read_features_keeping, ColumnMatch, Features};
pub use generate::generate;
pub use numbers::Numbers;
pub use paths::{check_file, note_config_file};
pub use preprocessing::Preprocessing;
pub use text::Text;
pub use tokens::TextFeatures;

/// A whole dataset as loaded, before splitting.
pub struct Table {
    /// `[rows, numeric features]` float32; NaN marks a missing value (only with `missing:
    /// mean`). Array data: `[rows, ...]` as the model takes it (see `input`).
    pub x: Tensor,
    /// The categorical features, as read.
    pub categorical: Vec<TextColumn>,
    /// The free-text features (`data.text`), as read.
    pub text: Vec<TextColumn>,
    pub y: Target,
    /// The numeric features' names: the columns of `x`.
    pub feature_names: Vec<String>,
    pub target_names: Vec<String>,
    /// Array data (`x` of any rank but 2, or of integers): what each sample is. `x` is then
    /// `[rows, ...]` float32 or int64, as the model takes it, and there are no feature names.
    pub input: Option<ArrayInput>,
}

pub enum Target {
    /// Regression targets, `[rows, targets]` float32.
    Values(Tensor),
    /// Class indices `[rows]` int64 into `labels`.
    Classes { index: Tensor, labels: Vec<String> },
}

/// One part of the split, ready for the model: standardised features (or an array as
/// stored, `[rows, ...]` float32 or int64) and training-space targets (standardised values,
/// or class indices).
pub struct Part {
    pub x: Tensor,
    pub y: Tensor,
}

impl Part {
    pub fn len(&self) -> usize {
        self.x.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_device(&self, device: Device) -> Part {
        Part { x: self.x.to_device(device), y: self.y.to_device(device) }
    }
}

/// Which rows went where, recorded as `split.json` (0-based data-row indices).
#[derive(Debug, Clone, Serialize)]
pub struct Split {
    pub rows: usize,
    pub train: usize,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

pub struct Prepared {
    pub train: Part,
    pub validation: Option<Part>,
    pub test: Option<Part>,
    pub preprocessing: Preprocessing,
    pub split: Split,
}

/// How a table file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header row, cells split at this delimiter.
    Csv(u8),
    Parquet,
}

impl Format {
    /// A file's format by its extension: `.parquet` or `.pq` is Parquet, anything else CSV
    /// with `delimiter` (as `torchfit predict` and `evaluate` take their input files).
    pub fn of(path: &Path, delimiter: u8) -> Format {
        let parquet = ["parquet", "pq"];
        match path.extension() {
            Some(e) if parquet.iter().any(|p| e.eq_ignore_ascii_case(p)) => Format::Parquet,
            _ => Format::Csv(delimiter),
        }
    }

    /// The `data.kind` that reads this format.
    pub fn kind(self) -> &'static str {
        match self {
            Format::Csv(_) => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// Reads the columns that `choose` picks, with how to read each, from the file's header
    /// (CSV) or schema (Parquet).
    pub fn read(
        self,
        path: &Path,
        missing: Missing,
        choose: impl FnOnce(&[String]) -> Result<Vec<(String, Role)>>,
    ) -> Result<CsvData> {
        match self {
            Format::Csv(delimiter) => read_csv(path, delimiter, missing, choose),
            Format::Parquet => self::parquet::read_parquet(path, missing, choose),
        }
    }
}

/// Loads the config's data and splits and preprocesses it.
pub fn load(config: &Config) -> Result<Prepared> {
    let table = match config.data.kind {
        DataKind::Csv => self::csv::read_table(&config.data, config.task(), Format::Csv(config.data.delimiter()))?,
        DataKind::Parquet => self::csv::read_table(&config.data, config.task(), Format::Parquet)?,
        DataKind::Npy => npy::read_npy_table(&config.data, config.task())?,
        _ => generate(&config.data)?,
    };
    if let (Some(input), ModelKind::Mlp) = (&table.input, config.model.kind) {
        refuse_mlp(&config.data, input, table.x.size()[0])?;
    }
    prepare(table, config)
}

/// Array data needs a module that takes it: the MLP takes a table.
fn refuse_mlp(d: &DataConfig, input: &ArrayInput, samples: i64) -> Result<()> {
    let x = match (&d.x, &d.path) {
        (Some(x), _) => format!("data.x ({})", x.display()),
        (None, Some(npz)) => format!("the x of data.path ({})", npz.display()),
        _ => "x".to_string(),
    };
    bail!(
        "model.kind: mlp takes a table [samples, features]; {x} is an array {}: use model.kind: torchscript \
         with a PyTorch module whose forward takes {}",
        input.describe(samples),
        input.batch_shape("batch")
    )
}

/// Splits a table with a seeded shuffle, checks every part is usable, and fits and applies
/// the preprocessing on the training part.
pub fn prepare(table: Table, config: &Config) -> Result<Prepared> {
    let d = &config.data;
    if config.model.numeric_embedding.is_some() && (table.feature_names.is_empty() || table.input.is_some()) {
        bail!("model.numeric_embedding needs numeric features; the data has none");
    }
    let (split, order) = split_rows(table.x.size()[0] as usize, d, config.seed)?;
    let (n_test, n_val) = (split.test.len(), split.validation.len());
    let train_rows = &order[n_test + n_val..];
    // Without a split the training part is the whole table, in order: no copy is made.
    let unsplit = n_test + n_val == 0;
    let select = |t: &Tensor, idx: &[usize]| if unsplit { t.shallow_clone() } else { select_rows(t, idx) };
    let train_x = select(&table.x, train_rows);
    let mut preprocessing = fit_inputs(&table, &train_x, d, unsplit)?;
    let y_all = fit_targets(&mut preprocessing, &table.y, train_rows, &select, config)?;
    drop(train_x);
    let min_frequency = d.min_frequency.unwrap_or(1);
    preprocessing.categorical = table
        .categorical
        .iter()
        .map(|c| {
            CategoricalFeature::fit(&c.name, &c.values, train_rows, min_frequency, d.categorical_encoding.as_ref())
        })
        .collect();
    let columns: Vec<&Text> = table.categorical.iter().map(|c| &c.values).collect();
    // Nothing else holds `table.x` now (the training part was it, or a copy of its rows):
    // a numeric table is standardised in place, a table with text written once with its
    // level codes. An array goes to the model as stored.
    let x_all = match table.input {
        Some(_) => table.x.shallow_clone(),
        None => preprocessing.apply_with_codes(table.x.shallow_clone(), &columns)?,
    };
    drop(columns);
    let x_all = match &config.data.tokenizer {
        Some(tokenizer) if !table.text.is_empty() => {
            let (text, tokenizer) = TextFeatures::fit(&table.text, train_rows, tokenizer)?;
            let columns: Vec<&Text> = table.text.iter().map(|c| &c.values).collect();
            let ids = text.encode(&tokenizer, &columns, x_all.size()[0] as usize)?;
            preprocessing.text = Some(text);
            Tensor::f_cat(&[x_all, ids.f_to_kind(Kind::Float)?], 1)?
        }
        _ => x_all,
    };
    drop(table);
    let part = |idx: &[usize]| Part { x: select(&x_all, idx), y: select(&y_all, idx) };
    let train = part(train_rows);
    if let Some(embedding) = &config.model.numeric_embedding {
        let numeric = train.x.f_narrow(1, 0, preprocessing.feature_names.len() as i64)?;
        preprocessing.numeric_bins = bins::for_embedding(embedding, &numeric)?;
    }
    Ok(Prepared {
        train,
        validation: (n_val > 0).then(|| part(&split.validation)),
        test: (n_test > 0).then(|| part(&split.test)),
        preprocessing,
        split,
    })
}

/// The seeded split of `rows` rows, and the shuffled order it was cut from: test rows first,
/// then validation, then training.
fn split_rows(rows: usize, d: &DataConfig, seed: u64) -> Result<(Split, Vec<usize>)> {
    let part_size = |key: &str, fraction: f64| -> Result<usize> {
        let size = (rows as f64 * fraction).round() as usize;
        if fraction > 0.0 && size == 0 {
            bail!("data.{key} {fraction} of {rows} rows leaves that part empty; use a larger fraction or more data");
        }
        Ok(size)
    };
    let (n_test, n_val) = (part_size("test_split", d.test_split)?, part_size("validation_split", d.validation_split)?);
    if n_test + n_val >= rows {
        bail!("data.validation_split and data.test_split leave no rows for training ({rows} rows in all)");
    }
    let mut order: Vec<usize> = (0..rows).collect();
    if n_test + n_val > 0 {
        // Stream 0 of the seed; epoch shuffles use streams 1, 2, ...
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        order.shuffle(&mut rng);
    }
    let split = Split {
        rows,
        train: rows - n_test - n_val,
        test: order[..n_test].to_vec(),
        validation: order[n_test..n_test + n_val].to_vec(),
    };
    Ok((split, order))
}

fn select_rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    t.index_select(0, &Tensor::from_slice(&idx))
}

/// The preprocessing of the numeric features (fill and standardisation), fitted on the
/// training part `train_x`; targets and categorical features are left for the caller.
fn fit_inputs(table: &Table, train_x: &Tensor, d: &DataConfig, unsplit: bool) -> Result<Preprocessing> {
    let features = table.feature_names.len();
    let mut preprocessing = Preprocessing {
        feature_names: table.feature_names.clone(),
        target_names: table.target_names.clone(),
        input_mean: vec![0.0; features],
        input_std: vec![1.0; features],
        input_fill: None,
        target_mean: Vec::new(),
        target_std: Vec::new(),
        labels: None,
        categorical: Vec::new(),
        input: table.input.clone(),
        numeric_bins: None,
        text: None,
    };
    if table.input.is_some() {
        // An array is neither filled (it holds no NaN) nor standardised.
        return Ok(preprocessing);
    }
    // Standardising a table taken whole begins with its column sums: finite ones also settle
    // that it holds no NaN, without a pass to look for one. kind npy leaves the default to
    // the file: a table is standardised, an array is not.
    let standardize = d.standardize.unwrap_or(d.kind == DataKind::Npy);
    let rows_x = if standardize && unsplit { preprocessing::rows_of(&table.x) } else { None };
    let sums = rows_x.as_ref().map(|r| r.sums()).filter(|s| s.iter().all(|v| v.is_finite()));
    // Under `missing: mean` a table without NaN is known to be one here, once.
    let nan = sums.is_none() && d.missing == Missing::Mean && has_nan(&table.x);
    preprocessing.input_fill = if nan { Some(fill_means(train_x, table, d)?) } else { None };
    if let (Some(rows), Some(sums)) = (rows_x, sums) {
        // The training part is the table, which holds no NaN: nothing to fill.
        (preprocessing.input_mean, preprocessing.input_std) = to_f32(rows.mean_std(sums));
    } else if standardize {
        // Nothing to fill, and nothing `apply` would find missing, in a table known to hold no NaN.
        let known_full = d.missing == Missing::Mean && !nan;
        let filled = if known_full { train_x.f_to_kind(Kind::Float)? } else { preprocessing.apply(train_x)? };
        (preprocessing.input_mean, preprocessing.input_std) = mean_std(&filled)?;
    }
    if d.missing == Missing::Mean && !nan {
        // `mean` promises to fill any missing value, also in a column that training found
        // full: without a fill there, model.pt, predict and serve would answer NaN.
        let means = if standardize { preprocessing.input_mean.clone() } else { column_means(train_x, table, d)? };
        preprocessing.input_fill = Some(means);
    }
    Ok(preprocessing)
}

/// Each column's mean over a training part that holds no NaN.
fn column_means(train_x: &Tensor, table: &Table, d: &DataConfig) -> Result<Vec<f32>> {
    match preprocessing::rows_of(train_x) {
        Some(rows) => {
            let n = train_x.size()[0] as f64;
            Ok(rows.sums().into_iter().map(|s| (s / n) as f32).collect())
        }
        // Not a plain float32 matrix (or no rows, or no columns): the long way.
        None => fill_means(train_x, table, d),
    }
}

/// Each column's mean over the values present in the training part (`missing: mean`).
fn fill_means(train_x: &Tensor, table: &Table, d: &DataConfig) -> Result<Vec<f32>> {
    let present = train_x.isnan().logical_not();
    let counts = present.sum_dim_intlist(0, false, Kind::Float);
    if let Some(col) = Vec::<f32>::try_from(&counts)?.iter().position(|&c| c == 0.0) {
        bail!(
            "{}: column `{}` has no values in the training part to take a mean of",
            source(d),
            table.feature_names[col]
        );
    }
    let sums = train_x.nan_to_num(0.0, None, None).sum_dim_intlist(0, false, Kind::Float);
    Ok(Vec::<f32>::try_from(&(sums / counts))?)
}

/// Fits the target scaling (regression) or checks and records the labels (classification),
/// and returns every row's target as the model sees it.
fn fit_targets(
    preprocessing: &mut Preprocessing,
    y: &Target,
    train_rows: &[usize],
    select: &impl Fn(&Tensor, &[usize]) -> Tensor,
    config: &Config,
) -> Result<Tensor> {
    let d = &config.data;
    Ok(match y {
        Target::Values(v) => {
            let targets = v.size()[1] as usize;
            (preprocessing.target_mean, preprocessing.target_std) = (vec![0.0; targets], vec![1.0; targets]);
            if d.standardize_target {
                (preprocessing.target_mean, preprocessing.target_std) = mean_std(&select(v, train_rows))?;
            }
            preprocessing.scale_targets(v)
        }
        Target::Classes { index, labels } => {
            check_classes(config, index, labels, train_rows, d)?;
            preprocessing.labels = Some(labels.clone());
            index.shallow_clone()
        }
    })
}

fn check_classes(
    config: &Config,
    index: &Tensor,
    labels: &[String],
    train_rows: &[usize],
    d: &DataConfig,
) -> Result<()> {
    if labels.len() < 2 {
        bail!(
            "{}: the target has {} class ({}); classification needs at least two",
            source(d),
            labels.len(),
            labels.join(", ")
        );
    }
    if config.loss() == Loss::Bce && labels.len() != 2 {
        bail!(
            "training.loss: bce needs exactly two classes, the data has {} ({}); use cross_entropy",
            labels.len(),
            labels.join(", ")
        );
    }
    let index = Vec::<i64>::try_from(index)?;
    let mut seen = vec![false; labels.len()];
    for &row in train_rows {
        seen[index[row] as usize] = true;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        if let Some(why) = looks_continuous(labels) {
            bail!(
                "{}: the target {why}; for a continuous target set task: regression and training.loss: mse",
                source(d)
            );
        }
        bail!(
            "{}: class {:?} has no rows in the training part; lower data.validation_split / data.test_split or add rows of it",
            source(d),
            labels[missing]
        );
    }
    Ok(())
}

/// Why class labels look like the values of a continuous target (numbers, some with a
/// fraction), for a message; `None` when they look like classes.
fn looks_continuous(labels: &[String]) -> Option<String> {
    let numbers: Vec<f64> = labels.iter().map(|l| l.parse::<f64>().ok()).collect::<Option<_>>()?;
    let fraction = numbers.iter().position(|v| v.fract() != 0.0)?;
    Some(format!(
        "looks continuous: {} distinct values such as {:?}, read as classes",
        labels.len(),
        header::clip(&labels[fraction])
    ))
}

/// Per-column mean and population std; a constant column gets std 1 rather than a division
/// by zero.
fn mean_std(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    if let Some(stats) = preprocessing::column_mean_std(x) {
        return Ok(to_f32(stats));
    }
    if x.size().get(1) == Some(&0) {
        // No numeric feature (a table of categorical ones): nothing to standardise, and
        // libtorch warns about a std over no values.
        return Ok((Vec::new(), Vec::new()));
    }
    let mean = x.f_mean_dim(0, false, Kind::Float)?;
    let std = x.f_std_dim(0, false, false)?;
    let std = std.f_where_scalarother(&std.gt(1e-12), 1.0)?;
    Ok((Vec::<f32>::try_from(&mean)?, Vec::<f32>::try_from(&std)?))
}

/// [`preprocessing::column_mean_std`]'s mean and std as float32, a constant column's std 1.
fn to_f32((mean, std): (Vec<f64>, Vec<f64>)) -> (Vec<f32>, Vec<f32>) {
    let std = std.into_iter().map(|s| s as f32).map(|s| if s > 1e-12 { s } else { 1.0 });
    (mean.into_iter().map(|m| m as f32).collect(), std.collect())
}

/// Whether `x` holds a NaN, without a mask the size of `x` in the common case: a sum is NaN
/// when any term is (or when infinities of both signs meet, which the mask then settles).
pub(crate) fn has_nan(x: &Tensor) -> bool {
    // A float sum is ten times faster than a double one, and the mask settles an overflow.
    x.sum(Kind::Float).double_value(&[]).is_nan() && x.isnan().any().int64_value(&[]) != 0
}

pub(crate) fn first_true(mask: &Tensor) -> (usize, usize) {
    let at = mask.nonzero();
    let v = Vec::<i64>::try_from(at.get(0)).unwrap_or_else(|_| vec![0, 0]);
    (v[0] as usize, v.get(1).copied().unwrap_or(0) as usize)
}

fn source(d: &DataConfig) -> String {
    d.path.as_ref().or(d.y.as_ref()).map(|p| p.display().to_string()).unwrap_or_else(|| "data".into())
}
