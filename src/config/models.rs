//! Checks of the model's kind and of what fine-tuning names (`model.freeze`,
//! `training.optimizer.param_groups`), each naming its key. Whether a pattern matches a
//! parameter is known only once the model is built (`model::Trainable`).

use anyhow::Result;

use super::{Columns, Config, Invalid, ModelConfig, ModelKind};

impl Config {
    pub(super) fn validate_model_kind(&self) -> Result<()> {
        let model = &self.model;
        let fail = |key: &str, message: String| Err(Invalid { key: key.to_string(), message }.into());
        if let Some((key, message)) = foreign_key(model) {
            let why = match model.kind {
                ModelKind::Torchscript => "a TorchScript module brings its own layers",
                _ => "each kind reads only its own keys (docs/models.md)",
            };
            return fail(key, format!("{message}; {why}"));
        }
        if model.kind == ModelKind::Torchscript && model.path.is_none() {
            return fail(
                "model.path",
                "model.kind: torchscript needs model.path, a file saved by torch.jit.script(module).save(path)".into(),
            );
        }
        match model.kind {
            ModelKind::Resnet => validate_resnet(model)?,
            ModelKind::Tabm => validate_counts(model)?,
            ModelKind::FtTransformer => validate_ft_transformer(model, self.data.categorical_encoding.is_some())?,
            _ => {}
        }
        super::numeric::validate(model)?;
        super::text::validate(self)?;
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

/// The tabm kind's defaults, `tabm.TabM.make`'s without numeric embeddings: k 32 members,
/// 3 blocks of width 512, dropout 0.1 (with numeric embeddings the package's n_blocks is 2).
pub const TABM_DEFAULTS: (usize, usize, usize, f64) = (32, 3, 512, 0.1);

/// The `model` keys that only some kinds read, each with the kinds that read it, in the
/// spelling of `--set` (`model.d_block`; a row's key covers its subkeys too, as
/// `model.numeric_embedding` does `model.numeric_embedding.n_bins`). A `model` key of no row
/// (`kind`, `init_from`, `strict`, `freeze`) and every key outside `model` is read by every
/// kind. The one table of it: a config's check (`foreign_key`) and a sweep over `model.kind`
/// (which leaves each trial only the keys its kind reads) both go by it. A new kind adds
/// itself to the rows of the keys it reads, a row for each key of its own, and its keys to
/// `is_set`.
pub const KIND_KEYS: &[(&str, &[ModelKind])] = &[
    ("model.hidden", &[ModelKind::Mlp]),
    ("model.activation", &[ModelKind::Mlp]),
    ("model.init", &[ModelKind::Mlp]),
    ("model.dropout", &[ModelKind::Mlp, ModelKind::Tabm]),
    ("model.backward", &[ModelKind::Mlp]),
    ("model.numeric_embedding", &[ModelKind::Mlp, ModelKind::Tabm]),
    ("model.path", &[ModelKind::Torchscript]),
    ("model.n_blocks", &[ModelKind::Resnet, ModelKind::Tabm, ModelKind::FtTransformer]),
    ("model.d_block", &[ModelKind::Resnet, ModelKind::Tabm, ModelKind::FtTransformer]),
    ("model.d_hidden_multiplier", &[ModelKind::Resnet]),
    ("model.dropout1", &[ModelKind::Resnet]),
    ("model.dropout2", &[ModelKind::Resnet]),
    ("model.k", &[ModelKind::Tabm]),
    ("model.arch_type", &[ModelKind::Tabm]),
    ("model.attention_n_heads", &[ModelKind::FtTransformer]),
    ("model.attention_dropout", &[ModelKind::FtTransformer]),
    ("model.ffn_d_hidden_multiplier", &[ModelKind::FtTransformer]),
    ("model.ffn_dropout", &[ModelKind::FtTransformer]),
    ("model.residual_dropout", &[ModelKind::FtTransformer]),
    ("model.text", &[ModelKind::Mlp, ModelKind::Resnet, ModelKind::Tabm, ModelKind::FtTransformer]),
];

/// The first key of `KIND_KEYS` that `model` sets although its kind does not read it, with
/// the message saying so.
fn foreign_key(model: &ModelConfig) -> Option<(&'static str, String)> {
    let (key, kinds) = KIND_KEYS.iter().find(|(key, kinds)| !kinds.contains(&model.kind) && is_set(model, key))?;
    let names: Vec<String> = kinds.iter().map(super::yaml_name).collect();
    let list = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    };
    Some((key, format!("{key} applies to model.kind {list}, not {}", super::yaml_name(&model.kind))))
}

/// Whether `model` sets `key`, a row of `KIND_KEYS`. The MLP's keys always have values: at
/// their defaults they count as not set.
fn is_set(model: &ModelConfig, key: &str) -> bool {
    let mlp = ModelConfig::default();
    match key {
        "model.hidden" => model.hidden != mlp.hidden,
        "model.activation" => model.activation != mlp.activation,
        "model.init" => model.init != mlp.init,
        "model.backward" => model.backward != mlp.backward,
        "model.dropout" => model.dropout.is_some(),
        "model.numeric_embedding" => model.numeric_embedding.is_some(),
        "model.path" => model.path.is_some(),
        "model.n_blocks" => model.n_blocks.is_some(),
        "model.d_block" => model.d_block.is_some(),
        "model.d_hidden_multiplier" => model.d_hidden_multiplier.is_some(),
        "model.dropout1" => model.dropout1.is_some(),
        "model.dropout2" => model.dropout2.is_some(),
        "model.k" => model.k.is_some(),
        "model.arch_type" => model.arch_type.is_some(),
        "model.attention_n_heads" => model.attention_n_heads.is_some(),
        "model.attention_dropout" => model.attention_dropout.is_some(),
        "model.ffn_d_hidden_multiplier" => model.ffn_d_hidden_multiplier.is_some(),
        "model.ffn_dropout" => model.ffn_dropout.is_some(),
        "model.residual_dropout" => model.residual_dropout.is_some(),
        "model.text" => model.text.is_some(),
        _ => false,
    }
}

/// The kinds that read the dotted config key `key`, when only some do (its row of
/// `KIND_KEYS`, or the row of a section holding it); `None` when every kind reads it.
pub fn kinds_reading(key: &str) -> Option<&'static [ModelKind]> {
    let within = |row: &str| key.strip_prefix(row).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    KIND_KEYS.iter().find(|(row, _)| within(row)).map(|(_, kinds)| *kinds)
}

/// Whether a config of model kind `kind` reads the dotted config key `key`
/// (`model.d_block`, `training.optimizer.lr`).
pub fn kind_reads(kind: ModelKind, key: &str) -> bool {
    kinds_reading(key).is_none_or(|kinds| kinds.contains(&kind))
}

/// n_blocks and d_block (resnet, tabm) and k (tabm): counts from 1.
fn validate_counts(model: &ModelConfig) -> Result<()> {
    let counts = [("model.n_blocks", model.n_blocks), ("model.d_block", model.d_block), ("model.k", model.k)];
    for (key, value) in counts {
        if let Some(value) = value.filter(|v| *v == 0 || *v > super::MAX_COUNT) {
            let message = format!("{key} must be between 1 and {}, got {value}", super::MAX_COUNT);
            return Err(Invalid { key: key.to_string(), message }.into());
        }
    }
    Ok(())
}

fn validate_resnet(model: &ModelConfig) -> Result<()> {
    let fail = |key: &str, message: String| -> Result<()> { Err(Invalid { key: key.to_string(), message }.into()) };
    validate_counts(model)?;
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

#[cfg(test)]
mod kind_keys_tests {
    use super::*;

    /// A value other than the default for each key of `KIND_KEYS`: a key a kind does not
    /// read is refused on a config of that kind, one it reads is not.
    const SAMPLES: &[(&str, &str)] = &[
        ("model.hidden", "[3]"),
        ("model.activation", "tanh"),
        ("model.init", "torch"),
        ("model.dropout", "0.1"),
        ("model.backward", "autograd"),
        ("model.path", "m.pt"),
        ("model.n_blocks", "1"),
        ("model.d_block", "8"),
        ("model.d_hidden_multiplier", "1.5"),
        ("model.dropout1", "0.1"),
        ("model.dropout2", "0.1"),
        ("model.k", "4"),
        ("model.arch_type", "tabm-mini"),
        ("model.numeric_embedding", "{kind: periodic}"),
        ("model.attention_n_heads", "4"),
        ("model.attention_dropout", "0.1"),
        ("model.ffn_d_hidden_multiplier", "2.0"),
        ("model.ffn_dropout", "0.1"),
        ("model.residual_dropout", "0.1"),
        ("model.text", "{encoder: bag}"),
    ];

    #[test]
    fn the_table_of_kind_keys_agrees_with_the_configs_own_check() {
        let mut kinds: Vec<ModelKind> = vec![ModelKind::Mlp];
        for kind in KIND_KEYS.iter().flat_map(|(_, kinds)| kinds.iter()) {
            if !kinds.contains(kind) {
                kinds.push(*kind);
            }
        }
        for (key, _) in KIND_KEYS {
            let sample = SAMPLES.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            let sample = sample.unwrap_or_else(|| panic!("add a sample value of {key} to SAMPLES"));
            for &kind in &kinds {
                let mut config = Config::default();
                config.model.kind = kind;
                // The other checks of a torchscript config want a module path.
                if kind == ModelKind::Torchscript && *key != "model.path" {
                    config.model.path = Some("m.pt".into());
                }
                // model.text encodes the text columns of a table.
                if *key == "model.text" {
                    config.data.kind = crate::config::DataKind::Csv;
                    config.data.text = Some(vec!["review".into()]);
                }
                let text = serde_yaml::to_string(&config).unwrap();
                let set = format!("{key}={sample}");
                let parsed = Config::parse(&text, "t", &[set]).unwrap();
                let refused = parsed.validate_model_kind().err().and_then(|e| e.downcast::<Invalid>().ok());
                let refused = refused.is_some_and(|e| e.key == *key);
                assert_eq!(refused, !kind_reads(kind, key), "{key} on kind {}", crate::config::yaml_name(&kind));
            }
        }
        assert!(kind_reads(ModelKind::Resnet, "training.optimizer.lr") && kind_reads(ModelKind::Mlp, "model.freeze"));
    }
}
