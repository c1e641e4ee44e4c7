//! `model.numeric_embedding`: embeddings of the numeric features (Gorishniy et al., "On
//! Embeddings for Numerical Features in Tabular Deep Learning", NeurIPS 2022), as the
//! `rtdl_num_embeddings` package (0.0.12) names its knobs. Each kind reads only its own keys;
//! `resolve` fills the kind's defaults (the package's and the papers' recommendations), so the
//! resolved config says exactly what ran. The stage itself is `model::numeric`.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{Invalid, ModelConfig, ModelKind};

/// `model.numeric_embedding`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericEmbedding {
    pub kind: NumericEmbeddingKind,
    /// Both kinds: each numeric feature's embedding width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_embedding: Option<usize>,
    /// Both kinds: a ReLU at the end of the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<bool>,
    /// piecewise_linear: the most bins per feature (quantiles of the training part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_bins: Option<usize>,
    /// periodic: frequencies per feature (`k` in the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_frequencies: Option<usize>,
    /// periodic: the frequencies' initial scale (`sigma` in the paper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_init_scale: Option<f64>,
    /// periodic: one linear layer shared by all features instead of one each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lite: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumericEmbeddingKind {
    /// `PiecewiseLinearEmbeddings(bins, d_embedding, activation=..., version="B")`.
    PiecewiseLinear,
    /// `PeriodicEmbeddings(n_features, d_embedding, n_frequencies=..., ...)`.
    Periodic,
}

/// piecewise_linear's defaults: 48 bins (`compute_bins`' default), d_embedding 16 and no
/// activation (TabM's recommendation for version B).
pub const PIECEWISE_LINEAR_DEFAULTS: (usize, usize, bool) = (48, 16, false);

/// periodic's defaults, `PeriodicEmbeddings`' own: 48 frequencies, scale 0.01, d_embedding 24,
/// not lite, ReLU on.
pub const PERIODIC_DEFAULTS: (usize, f64, usize, bool, bool) = (48, 0.01, 24, false, true);

impl NumericEmbedding {
    /// Fills the kind's unset knobs with their defaults.
    pub(super) fn resolve(&mut self) {
        match self.kind {
            NumericEmbeddingKind::PiecewiseLinear => {
                let (n_bins, d, activation) = PIECEWISE_LINEAR_DEFAULTS;
                self.n_bins.get_or_insert(n_bins);
                self.d_embedding.get_or_insert(d);
                self.activation.get_or_insert(activation);
            }
            NumericEmbeddingKind::Periodic => {
                let (k, sigma, d, lite, activation) = PERIODIC_DEFAULTS;
                self.n_frequencies.get_or_insert(k);
                self.frequency_init_scale.get_or_insert(sigma);
                self.d_embedding.get_or_insert(d);
                self.lite.get_or_insert(lite);
                self.activation.get_or_insert(activation);
            }
        }
    }

    /// The embedding width, its default when unset.
    pub fn width(&self) -> usize {
        self.d_embedding.unwrap_or(match self.kind {
            NumericEmbeddingKind::PiecewiseLinear => PIECEWISE_LINEAR_DEFAULTS.1,
            NumericEmbeddingKind::Periodic => PERIODIC_DEFAULTS.2,
        })
    }
}

const KEY: &str = "model.numeric_embedding";

fn fail(key: &str, message: String) -> Result<()> {
    Err(Invalid { key: key.to_string(), message }.into())
}

/// Checks `model.numeric_embedding` against the model's kind and each knob's range.
pub(super) fn validate(model: &ModelConfig) -> Result<()> {
    let Some(e) = &model.numeric_embedding else { return Ok(()) };
    if !matches!(model.kind, ModelKind::Mlp | ModelKind::Tabm) {
        let kind = super::yaml_name(&model.kind);
        return fail(KEY, format!("{KEY} applies to model.kind mlp and tabm, not {kind}"));
    }
    let kind = super::yaml_name(&e.kind);
    let (pl, periodic) = (e.kind == NumericEmbeddingKind::PiecewiseLinear, e.kind == NumericEmbeddingKind::Periodic);
    let foreign = [
        ("n_bins", e.n_bins.is_some() && !pl),
        ("n_frequencies", e.n_frequencies.is_some() && !periodic),
        ("frequency_init_scale", e.frequency_init_scale.is_some() && !periodic),
        ("lite", e.lite.is_some() && !periodic),
    ];
    if let Some((name, _)) = foreign.iter().find(|(_, set)| *set) {
        return fail(&format!("{KEY}.{name}"), format!("{KEY}.{name} does not apply to {KEY}.kind: {kind}"));
    }
    let counts = [("n_bins", e.n_bins, 2), ("d_embedding", e.d_embedding, 1), ("n_frequencies", e.n_frequencies, 1)];
    for (name, value, least) in counts {
        if let Some(v) = value.filter(|v| *v < least) {
            return fail(&format!("{KEY}.{name}"), format!("{KEY}.{name} must be >= {least}, got {v}"));
        }
        if let Some(v) = value.filter(|v| *v > super::MAX_COUNT) {
            return fail(
                &format!("{KEY}.{name}"),
                format!("{KEY}.{name} must be at most {}, got {v}", super::MAX_COUNT),
            );
        }
    }
    if let Some(s) = e.frequency_init_scale.filter(|s| !(s.is_finite() && *s > 0.0)) {
        let key = format!("{KEY}.frequency_init_scale");
        return fail(&key, format!("{key} must be a positive number, got {s}"));
    }
    if e.lite == Some(true) && e.activation == Some(false) {
        let key = format!("{KEY}.lite");
        return fail(&key, format!("{key}: true needs {KEY}.activation: true (as PeriodicEmbeddings requires)"));
    }
    Ok(())
}
