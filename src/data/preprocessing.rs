//! What was fitted on the training part, applied again to any new data.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::array::ArrayInput;
use super::text::Text;
use super::{categorical, clip, first_true, has_nan, list_names, CategoricalFeature, TextColumn};
use crate::config::{Loss, Missing};

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
    /// The categorical features, whose level codes follow the numeric features in the
    /// model's input.
    #[serde(default)]
    pub categorical: Vec<CategoricalFeature>,
    /// Array data: each sample's shape and dtype, taken by the model as stored (no feature
    /// names, means or stds then). Absent for tables, and in runs before array data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<ArrayInput>,
    /// `model.numeric_embedding: {kind: piecewise_linear}`: each numeric feature's bin edges,
    /// fitted on the training part (`bins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric_bins: Option<Vec<Vec<f32>>>,
    /// `data.text`: the text columns and their tokenizer, whose ids follow the categorical
    /// level codes in the model's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<super::TextFeatures>,
}

impl Preprocessing {
    /// The model's input for raw rows: the numeric features (`[rows, numeric]`) filled and
    /// standardised, then the categorical columns' level codes, then the free-text columns'
    /// token ids (`text`, by name).
    pub fn encode(&self, numeric: &Tensor, categorical: &[TextColumn], text: &[TextColumn]) -> Result<Tensor> {
        let rows = numeric.size()[0] as usize;
        let codes = categorical::codes_by_name(&self.categorical, categorical, rows)?;
        let mut parts = vec![self.apply(numeric)?, codes.to_device(numeric.device())];
        if let Some(features) = &self.text {
            let ids = features.encode_named(&features.tokenizer()?, text)?;
            parts.push(ids.f_to_kind(Kind::Float)?.to_device(numeric.device()));
        }
        Ok(Tensor::f_cat(&parts, 1)?)
    }

    /// Numeric features as the model sees them: missing values filled, then standardised.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.f_to_kind(Kind::Float)?;
        if has_nan(&x) {
            let missing = x.isnan();
            let Some(fill) = &self.input_fill else {
                let (row, col) = first_true(&missing);
                bail!(
                    "row {} column `{}` is missing, and the model has no value to fill it with (it fills missing values when trained with data.missing: mean)",
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

    /// [`Preprocessing::apply`] to a tensor the caller gives up, standardised in place: a
    /// large table is not copied. Anything else that shares its storage sees the change.
    pub fn apply_owned(&self, mut x: Tensor) -> Result<Tensor> {
        if x.kind() != Kind::Float || has_nan(&x) {
            // Filling makes a new tensor anyway.
            return self.apply(&x);
        }
        if self.is_identity() {
            return Ok(x);
        }
        let _ = x.f_sub_(&Tensor::from_slice(&self.input_mean).to_device(x.device()))?;
        let _ = x.f_div_(&Tensor::from_slice(&self.input_std).to_device(x.device()))?;
        Ok(x)
    }

    /// The training table's model input: [`Preprocessing::apply`] to `x`, then the level
    /// codes of the categorical columns `text` (in [`Preprocessing::categorical`]'s order),
    /// written row by row on every core: no standardised copy, matrix of codes or
    /// concatenation on the way. Where `x` is the left part of a float32 matrix with a column
    /// to spare per text column (as the CSV and Parquet readers leave it), that matrix is
    /// filled in place and returned; otherwise one new tensor is. A table without text is
    /// standardised in place ([`Preprocessing::apply_owned`]), so that it is never copied
    /// here.
    pub(super) fn apply_with_codes(&self, x: Tensor, text: &[&Text]) -> Result<Tensor> {
        if text.is_empty() {
            return self.apply_owned(x);
        }
        let size = x.size();
        let (rows, width) = match size.as_slice() {
            &[rows, width] => (rows as usize, width as usize),
            _ => (0, usize::MAX),
        };
        let plain = x.kind() == Kind::Float && x.device() == Device::Cpu;
        let fitted = [&self.input_mean, &self.input_std].iter().all(|v| v.len() == width)
            && self.input_fill.as_ref().is_none_or(|f| f.len() == width);
        if !plain || !fitted || text.iter().any(|t| t.len() != rows) || self.categorical.len() != text.len() {
            return self.apply_then_codes(x, text);
        }
        let out_width = width + text.len();
        let shape = [rows as i64, out_width as i64];
        // The matrix `x` is the left of, when its rows are that wide: libtorch checks that
        // its storage holds them.
        let spare = x.stride() == [out_width as i64, 1] && x.storage_offset() == 0;
        let wider = spare.then(|| x.f_as_strided(shape, [out_width as i64, 1], 0).ok()).flatten();
        let in_place = wider.is_some();
        if !in_place && !x.is_contiguous() {
            return self.apply_then_codes(x, text);
        }
        let out = match wider {
            Some(wider) => wider,
            None => Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?,
        };
        let levels: Vec<(Vec<f32>, f32)> = self.categorical.iter().zip(text).map(|(f, t)| f.level_codes(t)).collect();
        let (mean, std, fill, identity) =
            (&self.input_mean, &self.input_std, self.input_fill.as_deref(), self.is_identity());
        let unfilled = AtomicBool::new(false);
        // A row whose first `width` values are the raw features: filled, standardised, then
        // the codes after them.
        let encode = |r: usize, row: &mut [f32]| {
            let (numeric, codes) = row.split_at_mut(width);
            for (j, o) in numeric.iter_mut().enumerate() {
                // As `apply`: the fill where missing, then (v - mean) / std in float32.
                let v = match (o.is_nan(), fill) {
                    (true, Some(fill)) => fill[j],
                    (true, None) => {
                        unfilled.store(true, Ordering::Relaxed);
                        *o
                    }
                    (false, _) => *o,
                };
                *o = if identity { v } else { (v - mean[j]) / std[j] };
            }
            for (o, ((per_value, missing), t)) in codes.iter_mut().zip(levels.iter().zip(text)) {
                *o = per_value.get(t.codes()[r] as usize).copied().unwrap_or(*missing);
            }
        };
        // SAFETY: `out` is a contiguous float32 CPU tensor of rows * out_width elements: `x`'s
        // storage seen whole (libtorch checked its size), or just allocated. Nothing else
        // reads or writes it while the slice lives: the caller gave `x` up.
        let dst = unsafe { std::slice::from_raw_parts_mut(out.data_ptr().cast::<f32>(), rows * out_width) };
        if in_place {
            super::csv::fill_rows(dst, out_width, |first, block| {
                for (r, row) in block.chunks_exact_mut(out_width).enumerate() {
                    encode(first + r, row);
                }
            });
        } else {
            // SAFETY: `x` is a contiguous float32 CPU tensor of rows * width elements (checked
            // above), only read while borrowed here, and no storage of `out`.
            let src = unsafe { std::slice::from_raw_parts(x.data_ptr().cast::<f32>().cast_const(), rows * width) };
            super::csv::fill_rows(dst, out_width, |first, block| {
                for (r, row) in block.chunks_exact_mut(out_width).enumerate() {
                    let at = (first + r) * width;
                    row[..width].copy_from_slice(&src[at..at + width]);
                    encode(first + r, row);
                }
            });
        }
        if unfilled.load(Ordering::Relaxed) {
            // A missing value with nothing to fill it: `apply` says where (filled in place,
            // `x` still holds NaN just there).
            return self.apply_then_codes(x, text);
        }
        Ok(out)
    }

    /// [`Preprocessing::apply_with_codes`] the long way: standardised, codes, joined.
    pub(super) fn apply_then_codes(&self, x: Tensor, text: &[&Text]) -> Result<Tensor> {
        let codes = categorical::codes(&self.categorical, text, x.size()[0] as usize)?;
        Ok(Tensor::f_cat(&[self.apply_owned(x)?, codes], 1)?)
    }

    /// A run trained under `data.missing: mean` by a torchfit that filled only the columns
    /// with a missing cell in training has no fill where its table had none. Standardised,
    /// its means are the training means: the fill this version writes. Unstandardised it
    /// stays without one, and a missing value is an error rather than NaN.
    pub fn fill_from_means(&mut self, missing: Missing) {
        if missing == Missing::Mean && self.input_fill.is_none() && self.input.is_none() && !self.is_identity() {
            self.input_fill = Some(self.input_mean.clone());
        }
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

    /// Class indices for a label column; an unseen label is an error naming it (and the
    /// first row that has it).
    pub fn encode_labels(&self, values: &Text) -> Result<Tensor> {
        let labels = self.labels.as_ref().context("this run is not a classification")?;
        // A search per distinct value (a missing one is the empty label); rows map codes.
        let class = |v: &str| labels.iter().position(|l| l == v).map_or(-1, |i| i as i64);
        let index = values.map_rows(class(""), class);
        if let Some(row) = index.iter().position(|&i| i < 0) {
            let v = values.get(row).unwrap_or("");
            let (v, labels) = (clip(v), list_names(labels.iter().map(String::as_str)));
            bail!("row {}: label {v:?} was not seen in training (labels: {labels})", row + 1);
        }
        Ok(Tensor::from_slice(&index))
    }

    /// Regression targets in training space (standardised when the run standardised them).
    pub fn scale_targets(&self, y: &Tensor) -> Tensor {
        let mean = Tensor::from_slice(&self.target_mean).to_device(y.device());
        let std = Tensor::from_slice(&self.target_std).to_device(y.device());
        (y - mean) / std
    }
}

/// Per-column mean and population std of a `[rows, columns]` float32 CPU tensor (see
/// [`rows_of`]), summed in f64 (two passes: the mean, then squares about it) over blocks of
/// rows on every core. On a tall, narrow table libtorch's std over dim 0 takes ten times as
/// long. `None` for any other tensor.
pub(super) fn column_mean_std(x: &Tensor) -> Option<(Vec<f64>, Vec<f64>)> {
    let rows = rows_of(x)?;
    let sums = rows.sums();
    Some(rows.mean_std(sums))
}

/// The rows of a float32 CPU matrix, `stride` values apart, of `width` values each.
pub(super) struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    width: usize,
    stride: usize,
}

/// `x`'s rows when it is a non-empty `[rows, columns]` float32 CPU tensor whose rows lie one
/// after the other: contiguous, or the left of a wider matrix.
pub(super) fn rows_of(x: &Tensor) -> Option<Rows<'_>> {
    let &[rows, width] = x.size().as_slice() else { return None };
    let (rows, width) = (usize::try_from(rows).ok()?, usize::try_from(width).ok()?);
    let &[stride, 1] = x.stride().as_slice() else { return None };
    let stride = usize::try_from(stride).ok()?;
    if rows == 0 || width == 0 || stride < width || x.kind() != Kind::Float || x.device() != Device::Cpu {
        return None;
    }
    // SAFETY: `x` is a float32 CPU tensor of `rows` rows `stride` elements apart, each of
    // `width` elements (checked above): its last row ends (rows - 1) * stride + width
    // elements from its start. The slice only reads it, for as long as `x` is borrowed.
    let len = (rows - 1) * stride + width;
    let data = unsafe { std::slice::from_raw_parts(x.data_ptr().cast::<f32>().cast_const(), len) };
    Some(Rows { data, rows, width, stride })
}

impl Rows<'_> {
    /// Each column's sum, in f64.
    pub(super) fn sums(&self) -> Vec<f64> {
        column_sums(self.data, self.rows, self.width, self.stride, |_, v| f64::from(v))
    }

    /// Each column's mean and population std, from its [`Rows::sums`].
    pub(super) fn mean_std(&self, sums: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
        let n = self.rows as f64;
        let mean: Vec<f64> = sums.into_iter().map(|s| s / n).collect();
        let std = column_sums(self.data, self.rows, self.width, self.stride, |j, v| (f64::from(v) - mean[j]).powi(2));
        (mean, std.into_iter().map(|s| (s / n).sqrt()).collect())
    }
}

/// Per column, the sum of `term(column, value)` over the rows of `data` (`stride` apart, the
/// first `width` values of each), in f64: blocks of rows on every core, each summed in row
/// order, then the blocks' sums in order. Generic rather than a `dyn Fn`, so that the term is
/// inlined in the loop over every value.
fn column_sums(
    data: &[f32],
    rows: usize,
    width: usize,
    stride: usize,
    term: impl Fn(usize, f32) -> f64 + Sync,
) -> Vec<f64> {
    let per_thread = rows.div_ceil(std::thread::available_parallelism().map_or(1, |n| n.get())).max(1 << 14);
    let term = &term;
    let parts: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = data
            .chunks(per_thread * stride)
            .map(|part| {
                scope.spawn(move || {
                    let mut acc = vec![0.0f64; width];
                    for row in part.chunks(stride) {
                        for (j, (a, &v)) in acc.iter_mut().zip(&row[..width]).enumerate() {
                            *a += term(j, v);
                        }
                    }
                    acc
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap_or_else(|_| vec![f64::NAN; width])).collect()
    });
    (0..width).map(|j| parts.iter().map(|p| p[j]).sum()).collect()
}
