//! What was fitted on the training part, applied again to any new data.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{categorical, first_true, has_nan, CategoricalFeature, TextColumn};
use crate::config::Loss;

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
}

impl Preprocessing {
    /// The model's input for raw rows: the numeric features (`[rows, numeric]`) filled and
    /// standardised, then the categorical columns' level codes.
    pub fn encode(&self, numeric: &Tensor, categorical: &[TextColumn]) -> Result<Tensor> {
        let rows = numeric.size()[0] as usize;
        let columns: Vec<&[Option<String>]> = self
            .categorical
            .iter()
            .map(|f| {
                let column = categorical.iter().find(|c| c.name == f.name);
                column.map(|c| c.values.as_slice()).ok_or_else(|| anyhow!("no column `{}`", f.name))
            })
            .collect::<Result<_>>()?;
        let codes = categorical::codes(&self.categorical, &columns, rows)?;
        Ok(Tensor::f_cat(&[self.apply(numeric)?, codes.to_device(numeric.device())], 1)?)
    }

    /// What the model's input holds: the numeric features, then one level code per
    /// categorical feature.
    pub fn model_input(&self) -> crate::model::Input {
        let categorical = self
            .categorical
            .iter()
            .map(|f| crate::model::Categorical { levels: f.levels.len(), embedding: f.embedding })
            .collect();
        crate::model::Input { numeric: self.feature_names.len(), categorical }
    }

    /// Numeric features as the model sees them: missing values filled, then standardised.
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
