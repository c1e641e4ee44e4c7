//! Checks of the model's kind and of what fine-tuning names (`model.freeze`,
//! `training.optimizer.param_groups`), each naming its key. Whether a pattern matches a
//! parameter is known only once the model is built (`model::Trainable`).

use anyhow::Result;

use super::{Columns, Config, Invalid, ModelConfig, ModelKind};

impl Config {
    pub(super) fn validate_model_kind(&self) -> Result<()> {
        let model = &self.model;
        let fail = |key: &str, message: String| Err(Invalid { key: key.to_string(), message }.into());
        match (model.kind, &model.path) {
            (ModelKind::Torchscript, None) => {
                return fail(
                    "model.path",
                    "model.kind: torchscript needs model.path, a file saved by torch.jit.script(module).save(path)"
                        .into(),
                )
            }
            (ModelKind::Mlp, Some(_)) => {
                return fail(
                    "model.path",
                    "model.path applies to model.kind: torchscript (the mlp is built from model.hidden)".into(),
                )
            }
            _ => {}
        }
        if model.kind == ModelKind::Torchscript {
            // The MLP's keys would be silently ignored: say so instead.
            let mlp = ModelConfig::default();
            let set = [
                ("model.hidden", model.hidden != mlp.hidden),
                ("model.activation", model.activation != mlp.activation),
                ("model.init", model.init != mlp.init),
                ("model.dropout", model.dropout != mlp.dropout),
                ("model.backward", model.backward != mlp.backward),
            ];
            if let Some((key, _)) = set.iter().find(|(_, set)| *set) {
                return fail(
                    key,
                    format!("{key} applies to model.kind: mlp; a TorchScript module brings its own layers (and is trained through autograd)"),
                );
            }
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
