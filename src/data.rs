//! Datasets: loading (generators, CSV, NPY), the seeded train/validation/test split, and the
//! preprocessing fitted on the training part (missing-value fill, standardisation, class
//! labels), which `preprocessing.json` and `model.pt` carry to prediction time.
//!
//! Generated data is drawn on the CPU from libtorch's seeded generator, so a seed gives the
//! same numbers whatever device the run uses.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::config::{Config, DataConfig, DataKind, Features, Loss, Missing, Task};

/// A whole dataset as loaded, before splitting.
pub struct Table {
    /// `[rows, features]` float32; NaN marks a missing value (only with `missing: mean`).
    pub x: Tensor,
    pub y: Target,
    pub feature_names: Vec<String>,
    pub target_names: Vec<String>,
}

pub enum Target {
    /// Regression targets, `[rows, targets]` float32.
    Values(Tensor),
    /// Class indices `[rows]` int64 into `labels`.
    Classes { index: Tensor, labels: Vec<String> },
}

/// One part of the split, ready for the model: standardised features and training-space
/// targets (standardised values, or class indices).
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

/// What was fitted on the training part, applied again to any new data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub feature_names: Vec<String>,
    pub target_names: Vec<String>,
    /// Per-feature mean and std (0 and 1 without `data.standardize`).
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
    /// `missing: mean`: the training part's feature means that replace missing values.
    pub input_fill: Option<Vec<f32>>,
    /// Regression: per-target mean and std (0 and 1 without `data.standardize_target`).
    pub target_mean: Vec<f32>,
    pub target_std: Vec<f32>,
    /// Classification: the class labels, in class-index order.
    pub labels: Option<Vec<String>>,
}

impl Preprocessing {
    /// Features as the model sees them: missing values filled, then standardised.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.f_to_kind(Kind::Float)?;
        if has_nan(&x) {
            let missing = x.isnan();
            let Some(fill) = &self.input_fill else {
                let (row, col) = first_true(&missing);
                bail!(
                    "row {} column `{}` is missing, and the model was trained with data.missing: error",
                    row + 1,
                    self.feature_names.get(col).map(String::as_str).unwrap_or("?")
                );
            };
            x = Tensor::from_slice(fill).to_device(x.device()).f_where_self(&missing, &x)?;
        }
        if self.is_identity() {
            return Ok(x);
        }
        let mean = Tensor::from_slice(&self.input_mean).to_device(x.device());
        let std = Tensor::from_slice(&self.input_std).to_device(x.device());
        // One new tensor, divided in place: large inputs are not copied twice.
        let mut out = x.f_sub(&mean)?;
        let _ = out.f_div_(&std)?;
        Ok(out)
    }

    /// Whether standardisation leaves features as they are (mean 0, std 1 everywhere).
    fn is_identity(&self) -> bool {
        self.input_mean.iter().all(|&m| m == 0.0) && self.input_std.iter().all(|&s| s == 1.0)
    }

    pub fn classes(&self) -> Option<usize> {
        self.labels.as_ref().map(Vec::len)
    }

    /// The network's output width: one per regression target, one per class for
    /// cross-entropy, a single logit for bce.
    pub fn output_width(&self, loss: Loss) -> usize {
        match (loss, self.classes()) {
            (Loss::Bce, _) => 1,
            (_, Some(classes)) => classes,
            (_, None) => self.target_mean.len(),
        }
    }

    /// Whether regression targets were standardised, so metrics must map them back.
    pub fn scales_targets(&self) -> bool {
        self.target_std.iter().any(|&s| s != 1.0) || self.target_mean.iter().any(|&m| m != 0.0)
    }

    /// Class indices for label strings; an unseen label is an error naming it.
    pub fn encode_labels(&self, values: &[String]) -> Result<Tensor> {
        let labels = self.labels.as_ref().context("this run is not a classification")?;
        let index = values
            .iter()
            .enumerate()
            .map(|(row, v)| {
                labels.iter().position(|l| l == v).map(|i| i as i64).ok_or_else(|| {
                    anyhow!("row {}: label {v:?} was not seen in training (labels: {})", row + 1, labels.join(", "))
                })
            })
            .collect::<Result<Vec<i64>>>()?;
        Ok(Tensor::from_slice(&index))
    }

    /// Regression targets in training space (standardised when the run standardised them).
    pub fn scale_targets(&self, y: &Tensor) -> Tensor {
        let mean = Tensor::from_slice(&self.target_mean).to_device(y.device());
        let std = Tensor::from_slice(&self.target_std).to_device(y.device());
        (y - mean) / std
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

/// Loads the config's data and splits and preprocesses it.
pub fn load(config: &Config) -> Result<Prepared> {
    let table = match config.data.kind {
        DataKind::Csv => read_csv_table(&config.data, config.task())?,
        DataKind::Npy => read_npy_table(&config.data, config.task())?,
        _ => generate(&config.data)?,
    };
    prepare(table, config)
}

/// Builds a generated dataset. Draws from libtorch's global generator, which the caller
/// seeds.
pub fn generate(cfg: &DataConfig) -> Result<Table> {
    let n = cfg.samples as i64;
    let f = match cfg.features {
        Some(Features::Count(f)) => f as i64,
        _ => 10,
    };
    let t = cfg.targets as i64;
    let opts = (Kind::Float, Device::Cpu);
    let noise = |shape: &[i64]| -> Result<Tensor> { Ok(Tensor::f_randn(shape, opts)? * cfg.noise) };
    let (x, y) = match cfg.kind {
        DataKind::Linear => {
            let x = Tensor::f_randn([n, f], opts)?;
            // Scaled so that each target has unit variance before the noise.
            let w = Tensor::f_randn([f, t], opts)? / (f as f64).sqrt();
            let y = x.f_matmul(&w)? + noise(&[n, t])?;
            (x, Target::Values(y))
        }
        DataKind::Friedman1 => {
            let x = Tensor::f_rand([n, f], opts)?;
            let c = |i: i64| x.select(1, i);
            let y = (c(0) * c(1) * std::f64::consts::PI).sin() * 10.0
                + (c(2) - 0.5).square() * 20.0
                + c(3) * 10.0
                + c(4) * 5.0
                + noise(&[n])?;
            (x, Target::Values(y.unsqueeze(1)))
        }
        DataKind::Moons => {
            // scikit-learn's make_moons: the outer moon gets n/2 points, the inner the rest.
            let (n_out, n_in) = (n / 2, n - n / 2);
            let pi = std::f64::consts::PI;
            let t_out = Tensor::f_linspace(0.0, pi, n_out, opts)?;
            let t_in = Tensor::f_linspace(0.0, pi, n_in, opts)?;
            let outer = Tensor::stack(&[t_out.cos(), t_out.sin()], 1);
            let inner = Tensor::stack(&[-t_in.cos() + 1.0, -t_in.sin() + 0.5], 1);
            let x = Tensor::cat(&[outer, inner], 0) + noise(&[n, 2])?;
            let index = Tensor::cat(
                &[Tensor::zeros([n_out], (Kind::Int64, Device::Cpu)), Tensor::ones([n_in], (Kind::Int64, Device::Cpu))],
                0,
            );
            (x, Target::Classes { index, labels: vec!["0".into(), "1".into()] })
        }
        DataKind::RandomNormal | DataKind::Csv | DataKind::Npy => {
            (Tensor::f_randn([n, f], opts)?, Target::Values(Tensor::f_randn([n, t], opts)?))
        }
    };
    let targets = match &y {
        Target::Values(v) => v.size()[1],
        Target::Classes { .. } => 1,
    };
    Ok(Table {
        x,
        y,
        feature_names: (0..f).map(|i| format!("x{i}")).collect(),
        target_names: (0..targets).map(|i| if targets == 1 { "y".to_string() } else { format!("y{i}") }).collect(),
    })
}

/// Splits a table with a seeded shuffle, checks every part is usable, and fits and applies
/// the preprocessing on the training part.
pub fn prepare(table: Table, config: &Config) -> Result<Prepared> {
    let d = &config.data;
    let rows = table.x.size()[0] as usize;
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
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        order.shuffle(&mut rng);
    }
    let split = Split {
        rows,
        train: rows - n_test - n_val,
        test: order[..n_test].to_vec(),
        validation: order[n_test..n_test + n_val].to_vec(),
    };
    let select = |t: &Tensor, idx: &[usize]| {
        let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        t.index_select(0, &Tensor::from_slice(&idx))
    };
    let train_rows = &order[n_test + n_val..];
    // Without a split the training part is the whole table, in order: no copy is made.
    let unsplit = n_test + n_val == 0;
    let select = |t: &Tensor, idx: &[usize]| if unsplit { t.shallow_clone() } else { select(t, idx) };
    let train_x = select(&table.x, train_rows);

    let input_fill = if d.missing == Missing::Mean && has_nan(&table.x) {
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
        Some(Vec::<f32>::try_from(&(sums / counts))?)
    } else {
        None
    };
    let features = table.feature_names.len();
    let mut preprocessing = Preprocessing {
        feature_names: table.feature_names.clone(),
        target_names: table.target_names.clone(),
        input_mean: vec![0.0; features],
        input_std: vec![1.0; features],
        input_fill,
        target_mean: Vec::new(),
        target_std: Vec::new(),
        labels: None,
    };
    if d.standardize {
        let filled = preprocessing.apply(&train_x)?;
        (preprocessing.input_mean, preprocessing.input_std) = mean_std(&filled)?;
    }

    let y_all = match &table.y {
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
    };
    drop(train_x);
    let x_all = preprocessing.apply(&table.x)?;
    drop(table);
    let part = |idx: &[usize]| Part { x: select(&x_all, idx), y: select(&y_all, idx) };
    Ok(Prepared {
        train: part(train_rows),
        validation: (n_val > 0).then(|| part(&split.validation)),
        test: (n_test > 0).then(|| part(&split.test)),
        preprocessing,
        split,
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
        bail!(
            "{}: class {:?} has no rows in the training part; lower data.validation_split / data.test_split or add rows of it",
            source(d),
            labels[missing]
        );
    }
    Ok(())
}

/// Per-column mean and population std; a constant column gets std 1 rather than a division
/// by zero.
fn mean_std(x: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    let mean = x.f_mean_dim(0, false, Kind::Float)?;
    let std = x.f_std_dim(0, false, false)?;
    let std = std.f_where_scalarother(&std.gt(1e-12), 1.0)?;
    Ok((Vec::<f32>::try_from(&mean)?, Vec::<f32>::try_from(&std)?))
}

/// Whether `x` holds a NaN, without a mask the size of `x` in the common case: a sum is NaN
/// when any term is (or when infinities of both signs meet, which the mask then settles).
pub(crate) fn has_nan(x: &Tensor) -> bool {
    x.sum(Kind::Double).double_value(&[]).is_nan() && x.isnan().any().int64_value(&[]) != 0
}

pub(crate) fn first_true(mask: &Tensor) -> (usize, usize) {
    let at = mask.nonzero();
    let v = Vec::<i64>::try_from(at.get(0)).unwrap_or_else(|_| vec![0, 0]);
    (v[0] as usize, v.get(1).copied().unwrap_or(0) as usize)
}

fn source(d: &DataConfig) -> String {
    d.path.as_ref().or(d.y.as_ref()).map(|p| p.display().to_string()).unwrap_or_else(|| "data".into())
}

/// Cells that count as missing: empty, `NA`, `N/A`, `nan` (any case).
pub fn is_missing(cell: &str) -> bool {
    matches!(cell.trim().to_ascii_lowercase().as_str(), "" | "na" | "n/a" | "nan")
}

/// The columns a CSV reader is asked for.
pub struct CsvColumns {
    /// Numeric columns, read as f32 (missing: NaN when `missing: mean` allows it).
    pub numeric: Vec<String>,
    /// Which numeric columns may hold missing values under `missing: mean` (features may;
    /// targets may not).
    pub fillable: Vec<bool>,
    /// One column read as text (class labels).
    pub text: Option<String>,
}

pub struct CsvData {
    pub header: Vec<String>,
    /// Row-major values of the numeric columns.
    pub numeric: Vec<f32>,
    pub text: Vec<String>,
    pub rows: usize,
}

/// Streams a CSV file with a header row, keeping only the requested columns; `choose` picks
/// them once the header is known. Errors name the file, the row and the column.
pub fn read_csv(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<CsvColumns>,
) -> Result<CsvData> {
    read_csv_rows(path, delimiter, missing, |first| Ok((choose(first)?, None)))
}

/// [`read_csv`], where `choose` sees the first row and may decide that it is data rather than
/// a header: it then returns names for the columns (for lookups and messages).
fn read_csv_rows(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    choose: impl FnOnce(&[String]) -> Result<(CsvColumns, Option<Vec<String>>)>,
) -> Result<CsvData> {
    let file = path.display();
    // No header as far as the csv crate knows: records() then yields the first row too,
    // and we skip it when it is the header.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .from_path(path)
        .with_context(|| format!("cannot read {file}"))?;
    let first: Vec<String> = reader
        .headers()
        .with_context(|| format!("{file}: cannot read the header row"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if first.iter().all(String::is_empty) {
        bail!("{file}: the file is empty; expected a header row, then one row per sample");
    }
    let (wanted, names) = choose(&first)?;
    let first_is_data = names.is_some();
    let header = names.unwrap_or(first);
    let position = |name: &String| -> Result<usize> {
        let mut at = header.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| i);
        match (at.next(), at.next()) {
            (Some(i), None) => Ok(i),
            (Some(_), Some(_)) => bail!("{file}: the header has more than one column `{name}`"),
            (None, _) => bail!("{file}: no column `{name}` (columns: {})", header.join(", ")),
        }
    };
    let numeric: Vec<usize> = wanted.numeric.iter().map(position).collect::<Result<_>>()?;
    let text = wanted.text.as_ref().map(position).transpose()?;
    let (mut values, mut labels, mut rows) = (Vec::new(), Vec::new(), 0usize);
    let mut row_values = Vec::with_capacity(numeric.len());
    let records = reader.records().skip(usize::from(!first_is_data));
    for (i, record) in records.enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| anyhow!("{file}: row {row}: {}", csv_error(&e)))?;
        let start = record.position().map_or(0, |p| p.byte());
        // Only errors need the line, so it is counted only for them.
        let at = |col: usize| format!("{file}: row {row} (line {}), column `{}`", line_at(path, start), header[col]);
        let mut drop = false;
        row_values.clear();
        for (&col, &fillable) in numeric.iter().zip(&wanted.fillable) {
            let cell = record.get(col).unwrap_or("");
            if is_missing(cell) {
                match missing {
                    Missing::DropRow => drop = true,
                    Missing::Mean if fillable => row_values.push(f32::NAN),
                    Missing::Mean => bail!(
                        "{}: missing value; data.missing: mean fills features only, use drop_row for targets",
                        at(col)
                    ),
                    Missing::Error => bail!("{}: missing value; set data.missing to drop_row or mean", at(col)),
                }
                continue;
            }
            let value: f32 = cell.trim().parse().map_err(|_| anyhow!("{}: {cell:?} is not a number", at(col)))?;
            row_values.push(value);
        }
        let label = match text {
            Some(col) => {
                let cell = record.get(col).unwrap_or("").trim();
                if is_missing(cell) {
                    match missing {
                        Missing::DropRow => drop = true,
                        _ => bail!("{}: missing label; set data.missing: drop_row to skip such rows", at(col)),
                    }
                }
                Some(cell.to_string())
            }
            None => None,
        };
        if drop {
            continue;
        }
        values.extend_from_slice(&row_values);
        labels.extend(label);
        rows += 1;
    }
    if rows == 0 {
        bail!("{file}: no data rows after the header");
    }
    Ok(CsvData { header, numeric: values, text: labels, rows })
}

/// The line on which the CSV record that the reader began at byte `start` begins. The
/// reader's own `Position::line` is where it stood at `start`, which is before the LF of a
/// CRLF line end (csv counts that LF only as it reads the next record) and before any blank
/// lines it skips; so count the file's newlines, and those skipped, here.
fn line_at(path: &Path, start: u64) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else { return 0 };
    let (mut line, mut offset) = (1, 0u64);
    let mut chunk = [0u8; 1 << 16];
    while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut chunk) {
        for &byte in &chunk[..n] {
            if offset >= start && byte != b'\n' && byte != b'\r' {
                return line;
            }
            line += u64::from(byte == b'\n');
            offset += 1;
        }
    }
    line
}

fn csv_error(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text".to_string(),
        _ => e.to_string(),
    }
}

fn read_csv_table(d: &DataConfig, task: Task) -> Result<Table> {
    let path = d.path.as_deref().context("data.path is required for kind csv")?;
    if !path.is_file() {
        bail!("data.path: {}: no such file", path.display());
    }
    let targets = d.target.as_ref().map(|t| t.names()).unwrap_or_default();
    let delimiter = d.delimiter.as_bytes().first().copied().unwrap_or(b',');
    let labelled = read_labelled_csv(path, delimiter, d.missing, task, &targets, |header| {
        for target in &targets {
            if !header.contains(target) {
                bail!("data.target: no column `{target}` in {} (columns: {})", path.display(), header.join(", "));
            }
        }
        let features: Vec<String> = match &d.features {
            Some(Features::Columns(names)) => {
                if let Some(t) = names.iter().find(|n| targets.contains(n)) {
                    bail!("data.features: `{t}` is also the target");
                }
                names.clone()
            }
            _ => header.iter().filter(|h| !targets.contains(h)).cloned().collect(),
        };
        if features.is_empty() {
            bail!("data.features: {} has no columns besides the target", path.display());
        }
        Ok(features)
    })?;
    let y = match labelled.values {
        Some(values) => Target::Values(values),
        None => classes_from_labels(&labelled.labels),
    };
    Ok(Table { x: labelled.x, y, feature_names: labelled.feature_names, target_names: targets })
}

/// A CSV file's features and targets, as read by [`read_labelled_csv`].
pub struct LabelledCsv {
    pub feature_names: Vec<String>,
    /// `[rows, features]`, missing values as NaN (with `missing: mean`).
    pub x: Tensor,
    /// Regression: the target columns, `[rows, targets]`.
    pub values: Option<Tensor>,
    /// Classification: the label column's strings.
    pub labels: Vec<String>,
}

/// Reads the feature columns that `features` picks from the header, and the `targets`
/// columns: numbers for regression, one label column for classification.
pub fn read_labelled_csv(
    path: &Path,
    delimiter: u8,
    missing: Missing,
    task: Task,
    targets: &[String],
    features: impl FnOnce(&[String]) -> Result<Vec<String>>,
) -> Result<LabelledCsv> {
    let mut feature_names = Vec::new();
    let data = read_csv(path, delimiter, missing, |header| {
        feature_names = features(header)?;
        let mut numeric = feature_names.clone();
        let mut fillable = vec![true; numeric.len()];
        let text = match task {
            Task::Classification => targets.first().cloned(),
            Task::Regression => {
                numeric.extend(targets.iter().cloned());
                fillable.extend(targets.iter().map(|_| false));
                None
            }
        };
        Ok(CsvColumns { numeric, fillable, text })
    })?;
    let width = (data.numeric.len() / data.rows) as i64;
    let all = Tensor::f_from_slice(&data.numeric)?.f_reshape([data.rows as i64, width])?;
    let f = feature_names.len() as i64;
    let values = (task == Task::Regression).then(|| all.narrow(1, f, width - f).contiguous());
    Ok(LabelledCsv { x: all.narrow(1, 0, f).contiguous(), values, labels: data.text, feature_names })
}

/// Maps label strings to class indices; labels sort numerically when they are all integers.
pub fn classes_from_labels(values: &[String]) -> Target {
    let distinct: BTreeSet<&String> = values.iter().collect();
    let mut labels: Vec<String> = distinct.into_iter().cloned().collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
    }
    let index: Vec<i64> = values.iter().map(|v| labels.iter().position(|l| l == v).unwrap_or(0) as i64).collect();
    Target::Classes { index: Tensor::from_slice(&index), labels }
}

fn read_npy_table(d: &DataConfig, task: Task) -> Result<Table> {
    let (x, y, x_source, source) = match (&d.path, &d.x, &d.y) {
        (Some(npz), _, _) => {
            let arrays =
                Tensor::read_npz(npz).map_err(|e| anyhow!("data.path: {}: cannot read as .npz: {e}", npz.display()))?;
            let get = |name: &str| {
                let at = arrays.iter().position(|(n, _)| n == name || n == &format!("{name}.npy"));
                at.map(|i| arrays[i].1.shallow_clone()).ok_or_else(|| {
                    anyhow!(
                        "data.path: {} has no array `{name}` (it has: {})",
                        npz.display(),
                        arrays.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            };
            (get("x")?, get("y")?, format!("{}: x", npz.display()), format!("{}: y", npz.display()))
        }
        (None, Some(xp), Some(yp)) => (
            read_npy("data.x", xp)?,
            read_npy("data.y", yp)?,
            format!("data.x: {}", xp.display()),
            format!("data.y: {}", yp.display()),
        ),
        _ => bail!("data: kind npy takes either x and y (.npy files) or path (one .npz with arrays x and y)"),
    };
    if x.dim() != 2 {
        bail!("{x_source}: must be 2-D [samples, features], got shape {:?}", x.size());
    }
    let rows = x.size()[0];
    let y = if y.dim() == 1 { y.unsqueeze(1) } else { y };
    if y.dim() != 2 || y.size()[0] != rows {
        bail!("{source}: must have shape [{rows}] or [{rows}, targets] to match x, got {:?}", y.size());
    }
    let mut x = x.f_to_kind(Kind::Float)?;
    let mut y_values = y.f_to_kind(Kind::Double)?;
    // NaN in x follows data.missing like an empty CSV cell.
    let x_missing = x.isnan().any_dim(1, false);
    let y_missing = y_values.isnan().any_dim(1, false);
    if x_missing.any().int64_value(&[]) != 0 || y_missing.any().int64_value(&[]) != 0 {
        match d.missing {
            Missing::Error => {
                let row =
                    Vec::<bool>::try_from(&x_missing.logical_or(&y_missing))?.iter().position(|&m| m).unwrap_or(0);
                bail!("{source}: row {} has a missing (NaN) value; set data.missing to drop_row or mean", row + 1)
            }
            Missing::Mean if y_missing.any().int64_value(&[]) != 0 => {
                bail!("{source}: y has missing (NaN) values; data.missing: mean fills features only, use drop_row")
            }
            Missing::Mean => {}
            Missing::DropRow => {
                let keep = x_missing.logical_or(&y_missing).logical_not().nonzero().squeeze_dim(1);
                x = x.index_select(0, &keep);
                y_values = y_values.index_select(0, &keep);
            }
        }
    }
    let targets = y_values.size()[1];
    let y = match task {
        Task::Regression => Target::Values(y_values.to_kind(Kind::Float)),
        Task::Classification => {
            if targets != 1 {
                bail!("{source}: classification takes one label per row, y has {targets} columns");
            }
            let values = Vec::<f64>::try_from(y_values.flatten(0, 1))?;
            if let Some(v) = values.iter().find(|v| v.fract() != 0.0) {
                bail!("{source}: class labels must be integers, found {v}");
            }
            classes_from_labels(&values.iter().map(|v| (*v as i64).to_string()).collect::<Vec<_>>())
        }
    };
    let f = x.size()[1];
    Ok(Table {
        x,
        y,
        feature_names: (0..f).map(|i| format!("x{i}")).collect(),
        target_names: (0..targets).map(|i| if targets == 1 { "y".to_string() } else { format!("y{i}") }).collect(),
    })
}

fn read_npy(key: &str, path: &Path) -> Result<Tensor> {
    let t = Tensor::read_npy(path).map_err(|e| {
        anyhow!("{key}: {}: cannot read as .npy: {}", path.display(), crate::shim::first_line(&e.to_string()))
    })?;
    if !(t.is_floating_point()
        || matches!(t.kind(), Kind::Int | Kind::Int64 | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool))
    {
        bail!("{key}: {}: expected a numeric array, got dtype {:?}", path.display(), t.kind());
    }
    Ok(t)
}

/// How [`read_features`] matched an input file's columns to the model's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnMatch {
    /// By the names in the CSV header (other columns, such as the target, are ignored).
    ByName,
    /// In order: the CSV header names none of the features.
    ByPosition,
    /// In order: the CSV file has no header (its first row is numbers).
    NoHeader,
    /// In order: a `.npy` array has no names.
    Array,
}

/// Reads a feature matrix for prediction: a `.npy` file holding a 2-D numeric array, or a
/// CSV file. CSV columns are picked by the model's feature `names` when the header has them
/// all, and a header with only some of them is an error naming the others; a header with
/// none of them, or no header at all, means every column is a feature, in order. Missing
/// cells become NaN.
pub fn read_features(path: &Path, names: &[String], delimiter: u8) -> Result<(Tensor, ColumnMatch)> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let t = read_npy("input", path)?;
        if t.dim() != 2 {
            bail!("{}: expected a 2-D array [samples, features], got shape {:?}", path.display(), t.size());
        }
        return Ok((t.f_to_kind(Kind::Float)?, ColumnMatch::Array));
    }
    let mut matched = ColumnMatch::ByName;
    let data = read_csv_rows(path, delimiter, Missing::Mean, |first| {
        let columns = |numeric: Vec<String>| CsvColumns { fillable: vec![true; numeric.len()], numeric, text: None };
        let absent: Vec<&String> = names.iter().filter(|n| !first.contains(n)).collect();
        if absent.is_empty() {
            return Ok((columns(names.to_vec()), None));
        }
        if absent.len() < names.len() {
            bail!("{}: no column {} (the model's features are {})", path.display(), or_list(&absent), names.join(", "));
        }
        let is_number = |cell: &String| cell.parse::<f32>().is_ok();
        if first.iter().all(|c| is_number(c) || is_missing(c)) && first.iter().any(is_number) {
            // No header: name the columns after the features they are, when they fit.
            matched = ColumnMatch::NoHeader;
            let named: Vec<String> = if first.len() == names.len() {
                names.to_vec()
            } else {
                (1..=first.len()).map(|i| format!("#{i}")).collect()
            };
            return Ok((columns(named.clone()), Some(named)));
        }
        matched = ColumnMatch::ByPosition;
        Ok((columns(first.to_vec()), None))
    })?;
    let cols = data.numeric.len() / data.rows;
    let x = Tensor::f_from_slice(&data.numeric)?.f_reshape([data.rows as i64, cols as i64])?;
    Ok((x, matched))
}

/// `` `a` ``, `` `a` or `b` ``, `` `a`, `b` or `c` ``: column names for a message.
pub fn or_list(names: &[&String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let mut c = Config::parse(yaml, "t.yaml", &[]).unwrap();
        c.resolve();
        c.validate().unwrap();
        c
    }

    #[test]
    fn generators_fix_values_by_seed_and_linear_is_exactly_linear() {
        let _rng = crate::testing::seed(0);
        let cfg = config("data: {kind: linear, samples: 50, features: 4, targets: 2, noise: 0.0}\n");
        tch::manual_seed(3);
        let a = generate(&cfg.data).unwrap();
        tch::manual_seed(3);
        let b = generate(&cfg.data).unwrap();
        assert_eq!(a.x.size(), vec![50, 4]);
        assert!(a.x.equal(&b.x));
        let Target::Values(y) = &a.y else { panic!("regression") };
        assert_eq!(y.size(), vec![50, 2]);
        let w = a.x.linalg_lstsq(y, None::<f64>, "gelsd").0;
        let residual = (a.x.matmul(&w) - y).abs().max().double_value(&[]);
        assert!(residual < 1e-4, "residual {residual}");
    }

    #[test]
    fn friedman1_follows_its_formula_and_moons_has_two_balanced_classes() {
        let _rng = crate::testing::seed(0);
        tch::manual_seed(0);
        let t = generate(&config("data: {kind: friedman1, samples: 20, features: 6, noise: 0.0}\n").data).unwrap();
        let (x, Target::Values(y)) = (&t.x, &t.y) else { panic!() };
        let row = Vec::<f32>::try_from(x.get(3)).unwrap();
        let want = 10.0 * (std::f32::consts::PI * row[0] * row[1]).sin()
            + 20.0 * (row[2] - 0.5).powi(2)
            + 10.0 * row[3]
            + 5.0 * row[4];
        assert!((y.double_value(&[3, 0]) as f32 - want).abs() < 1e-4);
        let m = generate(&config("data: {kind: moons, samples: 101}\n").data).unwrap();
        let Target::Classes { index, labels } = &m.y else { panic!() };
        assert_eq!(labels, &["0", "1"]);
        assert_eq!(index.sum(Kind::Int64).int64_value(&[]), 51);
        assert_eq!(m.x.size(), vec![101, 2]);
    }

    #[test]
    fn split_is_seeded_disjoint_and_standardises_on_training_rows_only() {
        let _rng = crate::testing::seed(0);
        let cfg = config("seed: 5\ndata: {kind: linear, samples: 100, features: 3, validation_split: 0.2, test_split: 0.1, standardize: true, standardize_target: true}\n");
        tch::manual_seed(1);
        let p = prepare(generate(&cfg.data).unwrap(), &cfg).unwrap();
        assert_eq!((p.train.len(), p.validation.as_ref().unwrap().len(), p.test.as_ref().unwrap().len()), (70, 20, 10));
        let mut all: Vec<usize> = p.split.validation.iter().chain(&p.split.test).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 30);
        let mean = p.train.x.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]);
        let std = p.train.x.std_dim(0, false, false);
        assert!(mean < 1e-5 && (std - 1.0).abs().max().double_value(&[]) < 1e-4);
        assert!(p.train.y.mean(Kind::Float).abs().double_value(&[]) < 1e-5);
        tch::manual_seed(1);
        let again = prepare(generate(&cfg.data).unwrap(), &cfg).unwrap();
        assert_eq!(again.split.test, p.split.test);
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn csv_config(path: &Path, extra: &str) -> Config {
        config(&format!("data: {{kind: csv, path: {}, target: y{extra}}}\n", path.display()))
    }

    #[test]
    fn csv_missing_values_follow_the_policy() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "m.csv", "a,b,y\n1,,3\n2,4,5\nNA,6,7\n");
        let err = load(&csv_config(&path, "")).err().unwrap().to_string();
        assert!(err.contains("m.csv: row 1 (line 2), column `b`: missing value"), "{err}");
        let dropped = load(&csv_config(&path, ", missing: drop_row")).unwrap();
        assert_eq!(dropped.train.len(), 1);
        let filled = load(&csv_config(&path, ", missing: mean")).unwrap();
        assert_eq!(filled.preprocessing.input_fill, Some(vec![1.5, 5.0]));
        assert_eq!(Vec::<f32>::try_from(filled.train.x.flatten(0, 1)).unwrap(), vec![1.0, 5.0, 2.0, 4.0, 1.5, 6.0]);
    }

    #[test]
    fn csv_labels_become_sorted_classes() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "c.csv", "a,y\n1,cat\n2,dog\n3,cat\n4,ant\n");
        let cfg = config(&format!("task: classification\ndata: {{kind: csv, path: {}, target: y}}\n", path.display()));
        let p = load(&cfg).unwrap();
        assert_eq!(p.preprocessing.labels.as_deref(), Some(&["ant".to_string(), "cat".into(), "dog".into()][..]));
        assert_eq!(Vec::<i64>::try_from(&p.train.y).unwrap(), vec![1, 2, 1, 0]);
        let numeric = classes_from_labels(&["10".into(), "9".into(), "10".into()]);
        let Target::Classes { labels, .. } = numeric else { panic!() };
        assert_eq!(labels, ["9", "10"]);
    }

    #[test]
    fn csv_errors_name_file_row_and_column() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let bad = write(dir.path(), "bad.csv", "a,y\n1,2\nx,3\n");
        assert!(load(&csv_config(&bad, ""))
            .err()
            .unwrap()
            .to_string()
            .contains("bad.csv: row 2 (line 3), column `a`: \"x\" is not a number"));
        let ragged = write(dir.path(), "ragged.csv", "a,y\n1,2\n3\n");
        assert!(load(&csv_config(&ragged, ""))
            .err()
            .unwrap()
            .to_string()
            .contains("row 2: has 1 fields, the header has 2"));
        let no_target = write(dir.path(), "nt.csv", "a,b\n1,2\n");
        assert!(load(&csv_config(&no_target, "")).err().unwrap().to_string().contains("data.target: no column `y`"));
    }

    #[test]
    fn read_features_picks_columns_by_name_and_npy_must_be_2d() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "x.csv", "y,b,a\n9,2,1\n9,4,3\n");
        let names = ["a".to_string(), "b".to_string()];
        let (x, matched) = read_features(&path, &names, b',').unwrap();
        assert_eq!(Vec::<f32>::try_from(x.flatten(0, 1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(matched, ColumnMatch::ByName);
        let npy = dir.path().join("x.npy");
        Tensor::from_slice(&[1.0f32, 2.0, 3.0]).write_npy(&npy).unwrap();
        assert!(read_features(&npy, &names, b',').unwrap_err().to_string().contains("expected a 2-D array"));
    }

    #[test]
    fn read_features_takes_columns_in_order_only_when_no_name_matches() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let values = |path: &Path| {
            let (x, matched) = read_features(path, &names, b';').unwrap();
            (Vec::<f32>::try_from(x.flatten(0, 1)).unwrap(), matched)
        };
        // No header: the first row is data, not lost.
        let bare = write(dir.path(), "bare.csv", "1;2;3\n4;;6\n");
        let (x, matched) = values(&bare);
        assert_eq!((x.len(), x[0], x[5], matched), (6, 1.0, 6.0, ColumnMatch::NoHeader));
        assert!(x[4].is_nan());
        let other = write(dir.path(), "other.csv", "p;q;r\n1;2;3\n");
        assert_eq!(values(&other), (vec![1.0, 2.0, 3.0], ColumnMatch::ByPosition));
        // Some names but not all: an error naming the absent ones, not a silent fallback.
        let partial = write(dir.path(), "partial.csv", "a;x_c;y\n1;2;3\n");
        let err = read_features(&partial, &names, b';').unwrap_err().to_string();
        assert!(err.contains("partial.csv: no column `b` or `c` (the model's features are a, b, c)"), "{err}");
        // A name the header repeats is ambiguous, not the first of them.
        let twice = write(dir.path(), "twice.csv", "a;b;c;a\n1;2;3;4\n");
        let err = read_features(&twice, &names, b';').unwrap_err().to_string();
        assert!(err.contains("twice.csv: the header has more than one column `a`"), "{err}");
        // A headerless row that is not all numbers further down names the column by feature.
        let text = write(dir.path(), "text.csv", "1;2;3\n4;x;6\n");
        let err = read_features(&text, &names, b';').unwrap_err().to_string();
        assert!(err.contains("text.csv: row 2 (line 2), column `b`: \"x\" is not a number"), "{err}");
    }

    #[test]
    fn crlf_files_report_the_lines_that_editors_show() {
        let _rng = crate::testing::seed(0);
        let dir = tempfile::tempdir().unwrap();
        for (name, newline) in [("lf.csv", "\n"), ("crlf.csv", "\r\n")] {
            let text = ["a,y", "1,2", "", "x,3", ""].join(newline);
            let path = write(dir.path(), name, &text);
            let err = load(&csv_config(&path, "")).err().unwrap().to_string();
            assert!(err.contains(&format!("{name}: row 2 (line 4), column `a`: \"x\" is not a number")), "{err}");
            let bare = write(dir.path(), name, &["1,2", "3,x", ""].join(newline));
            let err = read_features(&bare, &["a".into(), "b".into()], b',').unwrap_err().to_string();
            assert!(err.contains(&format!("{name}: row 2 (line 2), column `b`")), "{err}");
        }
    }
}
