//! Checks of the model's kind and of what fine-tuning names (`model.freeze`,
//! `training.optimizer.param_groups`), each naming its key. Whether a pattern matches a
//! parameter is known only once the model is built (`model::Trainable`).

use anyhow::Result;

use super::{Columns, Config, Invalid, ModelConfig, ModelKind};

impl Config {
    pub(super) fn validate_model_kind(&self) -> Result<()> {
        let model = &self.model;
        let fail = |key: &str, message: String| Err(Invalid { key: key.to_string(), message }.into());
        let kind = super::yaml_name(&model.kind);
        if let Some(key) = foreign_key(model) {
            let what = match model.kind {
                ModelKind::Torchscript => {
                    "a TorchScript module brings its own layers (and is trained through autograd)"
                }
                _ => "each kind reads only its own keys (docs/models.md)",
            };
            return fail(key, format!("{key} does not apply to model.kind: {kind}; {what}"));
        }
        match (model.kind, &model.path) {
            (ModelKind::Torchscript, None) => {
                return fail(
                    "model.path",
                    "model.kind: torchscript needs model.path, a file saved by torch.jit.script(module).save(path)"
                        .into(),
                )
            }
            (ModelKind::Mlp | ModelKind::Resnet | ModelKind::FtTransformer, Some(_)) => {
                return fail("model.path", format!("model.path applies to model.kind: torchscript, not {kind}"))
            }
            _ => {}
        }
        match model.kind {
            ModelKind::Resnet => validate_resnet(model)?,
            ModelKind::FtTransformer => validate_ft_transformer(model, self.data.categorical_encoding.is_some())?,
            _ => {}
        }
        if !model.strict && model.init_from.is_none() {
            return fail("model.strict", "model.strict: false applies to model.init_from, which is not set".into());
        }
        for (i, pattern) in model.freeze.iter().enumerate() {
            check_pattern(&format!("model.freeze[{i}]"), pattern)?;
        }
        for (i, group) in self.training.optimizer.param_groups.iter().enumerate() {
            let key = format!("training.optimizer.param_groups[{i}]");
            let patterns = group.params.names();
            if patterns.is_empty() {
                return fail(&format!("{key}.params"), format!("{key}.params names no parameters"));
            }
            for pattern in &patterns {
                check_pattern(&format!("{key}.params"), pattern)?;
            }
            if let Some(lr) = group.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
                return fail(&format!("{key}.lr"), format!("{key}.lr must be a positive number, got {lr}"));
            }
            if let Some(wd) = group.weight_decay.filter(|wd| !(wd.is_finite() && *wd >= 0.0)) {
                return fail(&format!("{key}.weight_decay"), format!("{key}.weight_decay must be >= 0, got {wd}"));
            }
        }
        Ok(())
    }
}

/// A glob pattern over parameter names, compiled (`*`, `?`, `[...]`).
pub fn name_pattern(pattern: &str) -> Result<glob::Pattern, glob::PatternError> {
    glob::Pattern::new(pattern)
}

fn check_pattern(key: &str, pattern: &str) -> Result<()> {
    if let Err(e) = name_pattern(pattern) {
        return Err(Invalid {
            key: key.to_string(),
            message: format!("{key}: {pattern:?} is not a glob pattern ({e})"),
        }
        .into());
    }
    Ok(())
}

impl Columns {
    /// Whether any of the patterns matches `name`.
    pub fn matches(&self, name: &str) -> bool {
        self.names().iter().any(|p| name_pattern(p).is_ok_and(|p| p.matches(name)))
    }
}

/// The resnet kind's defaults, those of rtdl_revisiting_models' README and the paper's
/// search space centre: two blocks of width 192, hidden width 2 x 192, hidden dropout 0.15.
pub const RESNET_DEFAULTS: (usize, usize, f64, f64, f64) = (2, 192, 2.0, 0.15, 0.0);

/// A key set that the model's kind does not read: the MLP's keys away from the MLP, the
/// ResNet's away from the ResNet, the FT-Transformer's away from it (`n_blocks` and `d_block`
/// are both of theirs; unset or at their defaults count as not set for the MLP's, which always
/// have values).
fn foreign_key(model: &ModelConfig) -> Option<&'static str> {
    let mlp = ModelConfig::default();
    let mlp_keys = [
        ("model.hidden", model.hidden != mlp.hidden),
        ("model.activation", model.activation != mlp.activation),
        ("model.init", model.init != mlp.init),
        ("model.dropout", model.dropout != mlp.dropout),
        ("model.backward", model.backward != mlp.backward),
    ];
    let block_keys = [("model.n_blocks", model.n_blocks.is_some()), ("model.d_block", model.d_block.is_some())];
    let resnet_keys = [
        ("model.d_hidden_multiplier", model.d_hidden_multiplier.is_some()),
        ("model.dropout1", model.dropout1.is_some()),
        ("model.dropout2", model.dropout2.is_some()),
    ];
    let ft_keys = [
        ("model.attention_n_heads", model.attention_n_heads.is_some()),
        ("model.attention_dropout", model.attention_dropout.is_some()),
        ("model.ffn_d_hidden_multiplier", model.ffn_d_hidden_multiplier.is_some()),
        ("model.ffn_dropout", model.ffn_dropout.is_some()),
        ("model.residual_dropout", model.residual_dropout.is_some()),
    ];
    let foreign: Vec<(&'static str, bool)> = match model.kind {
        ModelKind::Mlp => [block_keys.as_slice(), &resnet_keys, &ft_keys].concat(),
        ModelKind::Resnet => [mlp_keys.as_slice(), &ft_keys].concat(),
        ModelKind::FtTransformer => [mlp_keys.as_slice(), &resnet_keys].concat(),
        ModelKind::Torchscript => [mlp_keys.as_slice(), &block_keys, &resnet_keys, &ft_keys].concat(),
    };
    foreign.iter().find(|(_, set)| *set).map(|(key, _)| *key)
}

fn validate_resnet(model: &ModelConfig) -> Result<()> {
    let fail = |key: &str, message: String| -> Result<()> { Err(Invalid { key: key.to_string(), message }.into()) };
    for (key, value) in [("model.n_blocks", model.n_blocks), ("model.d_block", model.d_block)] {
        if let Some(value) = value.filter(|v| *v == 0 || *v > super::MAX_COUNT) {
            return fail(key, format!("{key} must be between 1 and {}, got {value}", super::MAX_COUNT));
        }
    }
    if let Some(m) = model.d_hidden_multiplier.filter(|m| !(m.is_finite() && *m > 0.0 && *m <= 64.0)) {
        return fail("model.d_hidden_multiplier", format!("model.d_hidden_multiplier must be in (0, 64], got {m}"));
    }
    for (key, p) in [("model.dropout1", model.dropout1), ("model.dropout2", model.dropout2)] {
        if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
            return fail(key, format!("{key} must be in [0, 1), got {p}"));
        }
    }
    Ok(())
}

/// The ft_transformer kind's knobs, each as set or as `rtdl_revisiting_models.FTTransformer
/// .get_default_kwargs(n_blocks)` has it (the paper's defaults; n_blocks 3 unless set, its
/// table row 6 for deeper networks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FtTransformerKnobs {
    pub n_blocks: usize,
    pub d_block: usize,
    pub attention_n_heads: usize,
    pub attention_dropout: f64,
    pub ffn_d_hidden_multiplier: f64,
    pub ffn_dropout: f64,
    pub residual_dropout: f64,
}

impl FtTransformerKnobs {
    pub fn of(model: &ModelConfig) -> FtTransformerKnobs {
        let n_blocks = model.n_blocks.unwrap_or(3);
        let row = n_blocks.clamp(1, 6) - 1;
        FtTransformerKnobs {
            n_blocks,
            d_block: model.d_block.unwrap_or([96, 128, 192, 256, 320, 384][row]),
            attention_n_heads: model.attention_n_heads.unwrap_or(8),
            attention_dropout: model.attention_dropout.unwrap_or([0.1, 0.15, 0.2, 0.25, 0.3, 0.35][row]),
            ffn_d_hidden_multiplier: model.ffn_d_hidden_multiplier.unwrap_or(4.0 / 3.0),
            ffn_dropout: model.ffn_dropout.unwrap_or([0.0, 0.05, 0.1, 0.15, 0.2, 0.25][row]),
            residual_dropout: model.residual_dropout.unwrap_or(0.0),
        }
    }

    /// The feed-forward hidden width, `int(d_block * ffn_d_hidden_multiplier)` as the
    /// package computes it (the first linear layer is twice as wide, for ReGLU).
    pub fn ffn_d_hidden(&self) -> usize {
        (self.d_block as f64 * self.ffn_d_hidden_multiplier).floor() as usize
    }
}

fn validate_ft_transformer(model: &ModelConfig, categorical_encoding: bool) -> Result<()> {
    let fail = |key: &str, message: String| -> Result<()> { Err(Invalid { key: key.to_string(), message }.into()) };
    if categorical_encoding {
        let why = "it embeds every categorical column as a token of its own";
        return fail(
            "data.categorical_encoding",
            format!("data.categorical_encoding does not apply to model.kind: ft_transformer; {why}"),
        );
    }
    let counts = [
        ("model.n_blocks", model.n_blocks),
        ("model.d_block", model.d_block),
        ("model.attention_n_heads", model.attention_n_heads),
    ];
    for (key, value) in counts {
        if let Some(value) = value.filter(|v| *v == 0 || *v > super::MAX_COUNT) {
            return fail(key, format!("{key} must be between 1 and {}, got {value}", super::MAX_COUNT));
        }
    }
    let knobs = FtTransformerKnobs::of(model);
    let (d, heads) = (knobs.d_block, knobs.attention_n_heads);
    if d % heads != 0 {
        // Name the key the user set: a d_block of theirs, else their head count.
        let key = if model.d_block.is_some() { "model.d_block" } else { "model.attention_n_heads" };
        return fail(
            key,
            format!("{key}: model.d_block ({d}) must be a multiple of model.attention_n_heads ({heads})"),
        );
    }
    let m = knobs.ffn_d_hidden_multiplier;
    if !(m.is_finite() && m > 0.0 && m <= 64.0) || knobs.ffn_d_hidden() == 0 {
        let key = "model.ffn_d_hidden_multiplier";
        return fail(key, format!("{key} must be in (0, 64] with int(d_block * {key}) >= 1, got {m}"));
    }
    let rates = [
        ("model.attention_dropout", model.attention_dropout),
        ("model.ffn_dropout", model.ffn_dropout),
        ("model.residual_dropout", model.residual_dropout),
    ];
    for (key, p) in rates {
        if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
            return fail(key, format!("{key} must be in [0, 1), got {p}"));
        }
    }
    Ok(())
}
