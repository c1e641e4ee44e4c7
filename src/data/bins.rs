//! The bin edges of `model.numeric_embedding: {kind: piecewise_linear}`: quantiles of each
//! numeric feature over the training part, as the model sees it (filled and standardised),
//! exactly as `rtdl_num_embeddings.compute_bins(X_train, n_bins)` (0.0.12) computes them:
//! `torch.quantile(X, torch.linspace(0, 1, n_bins + 1), dim=0)`, then each column's distinct
//! values in increasing order. They are fitted once, here, and kept in the run's
//! preprocessing (`Preprocessing::numeric_bins`, preprocessing.json) like the standardisation
//! statistics; every later use of the run reads them from there.
//!
//! Where `compute_bins` refuses, torchfit does not:
//! - a constant column (one distinct value `v`) gets the single bin `[v - 1, v + 1]`, whose
//!   encoding is `(x - v + 1) / 2` (the package leaves a feature's only bin unclamped);
//! - a column of few values (0/1, say) keeps its distinct quantiles, as in the package: at
//!   least its two values (one bin), and any quantile that falls between them;
//! - more rows than `torch.quantile` takes (2^24) are subsampled: every row whose index is a
//!   multiple of `ceil(rows / 2^24)`.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

use crate::config::{NumericEmbedding, NumericEmbeddingKind, PIECEWISE_LINEAR_DEFAULTS};

/// The most rows `torch.quantile` takes in one call.
const MAX_QUANTILE_ROWS: i64 = 1 << 24;

/// The bins `embedding` needs for the numeric features `x` (`[rows, numeric]`, float, as the
/// model sees them), or `None` when it needs none. Also refuses an embedding without numeric
/// features.
pub fn for_embedding(embedding: &NumericEmbedding, x: &Tensor) -> Result<Option<Vec<Vec<f32>>>> {
    let (rows, numeric) = (x.size()[0], x.size()[1]);
    if numeric == 0 {
        bail!("model.numeric_embedding needs numeric features; the data has none");
    }
    if embedding.kind != NumericEmbeddingKind::PiecewiseLinear {
        return Ok(None);
    }
    let n_bins = embedding.n_bins.unwrap_or(PIECEWISE_LINEAR_DEFAULTS.0);
    if n_bins as i64 >= rows {
        bail!(
            "model.numeric_embedding.n_bins ({n_bins}) must be less than the training part's rows ({rows}), \
             as compute_bins requires"
        );
    }
    fit(x, n_bins).map(Some)
}

/// Each column's bin edges: see the module's documentation.
pub fn fit(x: &Tensor, n_bins: usize) -> Result<Vec<Vec<f32>>> {
    let x = x.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
    let rows = x.size()[0];
    let x = match rows > MAX_QUANTILE_ROWS {
        true => x.f_slice(0, 0, rows, (rows + MAX_QUANTILE_ROWS - 1) / MAX_QUANTILE_ROWS)?,
        false => x,
    };
    if x.f_isfinite()?.f_logical_not()?.f_any()?.int64_value(&[]) != 0 {
        bail!("model.numeric_embedding: the numeric features hold NaN or infinite values; the bins need finite ones");
    }
    let q = Tensor::f_linspace(0.0, 1.0, n_bins as i64 + 1, (Kind::Float, Device::Cpu))?;
    let quantiles = x.f_quantile(&q, 0, false, "linear")?.f_t_()?.f_contiguous()?;
    let mut bins = Vec::with_capacity(x.size()[1] as usize);
    for column in 0..x.size()[1] {
        let mut edges = Vec::<f32>::try_from(quantiles.f_select(0, column)?)?;
        edges.sort_by(f32::total_cmp);
        edges.dedup();
        if let [v] = edges[..] {
            edges = vec![v - 1.0, v + 1.0];
        }
        bins.push(edges);
    }
    Ok(bins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_edges_are_distinct_and_a_constant_column_gets_one_bin_around_it() {
        let x = Tensor::from_slice(&[0.0f32, 0.0, 5.0, 1.0, 0.0, 5.0, 2.0, 0.0, 5.0, 3.0, 1.0, 5.0]).view([4, 3]);
        let bins = fit(&x, 2).unwrap();
        assert_eq!(bins[0], [0.0, 1.5, 3.0], "quantiles 0, 0.5, 1 of 0, 1, 2, 3");
        assert_eq!(bins[1], [0.0, 1.0], "a 0/1 column mostly 0: one bin between its values");
        assert_eq!(bins[2], [4.0, 6.0], "a constant column: one bin [v - 1, v + 1]");
    }

    #[test]
    fn too_many_bins_for_the_rows_and_no_numeric_features_are_errors() {
        let e = NumericEmbedding {
            kind: NumericEmbeddingKind::PiecewiseLinear,
            d_embedding: None,
            activation: None,
            n_bins: Some(4),
            n_frequencies: None,
            frequency_init_scale: None,
            lite: None,
        };
        let err = for_embedding(&e, &Tensor::zeros([4, 2], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
        assert!(err.starts_with("model.numeric_embedding.n_bins (4) must be less than"), "{err}");
        let err = for_embedding(&e, &Tensor::zeros([4, 0], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
        assert!(err.contains("needs numeric features"), "{err}");
    }
}
