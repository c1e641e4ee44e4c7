//! Sweeps over `model.kind`: a trial keeps only the parameters its model kind reads, and its
//! base config (with `--set`) loses the `model` keys of other kinds, so that `model.kind:
//! {values: [mlp, resnet]}` sweeps next to `model.hidden` (the MLP's) and `model.d_block`
//! (the ResNet's). Which kind reads which key is config's table (`config::kinds_reading`):
//! a new kind needs nothing here.

use serde_yaml::{Mapping, Value};

use super::space;
use crate::config::{kind_reads, ModelKind};

/// The model kind of the base config once `set` (`KEY=VALUE`) and then `values` apply, read
/// from the YAML alone (the rest of a config may still be invalid): the last of them that
/// sets `model.kind` or the whole `model` section decides, the default is `mlp`. `None` when
/// that names no kind torchfit knows, which the config's own check reports.
pub fn kind_of(base: &Mapping, set: &[String], values: &[(String, Value)]) -> Option<ModelKind> {
    let mut kind = base.get("model").and_then(|m| m.get("kind")).cloned();
    let parsed = set.iter().filter_map(|s| parse_assignment(s));
    for (key, value) in parsed.chain(values.iter().cloned()) {
        match key.as_str() {
            "model.kind" => kind = Some(value),
            "model" => kind = value.get("kind").cloned(),
            _ => {}
        }
    }
    match kind {
        None | Some(Value::Null) => Some(ModelKind::default()),
        Some(value) => serde_yaml::from_value(value).ok(),
    }
}

/// The base config without the `model` keys `kind` does not read; `None` when it has none.
pub fn strip_base(base: &Mapping, kind: ModelKind) -> Option<Mapping> {
    let Some(Value::Mapping(model)) = base.get("model") else { return None };
    let model = strip_section(model, kind)?;
    let mut base = base.clone();
    base.insert(Value::from("model"), Value::Mapping(model));
    Some(base)
}

/// A `--set` override for a config of `kind`: dropped when it sets a key the kind does not
/// read, a whole `model` section without such keys, anything else as it is.
pub fn strip_set(assignment: &str, kind: ModelKind) -> Option<String> {
    let Some((key, value)) = parse_assignment(assignment) else { return Some(assignment.to_string()) };
    if !kind_reads(kind, &key) {
        return None;
    }
    match (key.as_str(), &value) {
        ("model", Value::Mapping(model)) => match strip_section(model, kind) {
            Some(model) => Some(space::assignment("model", &Value::Mapping(model))),
            None => Some(assignment.to_string()),
        },
        _ => Some(assignment.to_string()),
    }
}

/// A `model` section without the keys `kind` does not read; `None` when it has none.
fn strip_section(model: &Mapping, kind: ModelKind) -> Option<Mapping> {
    let reads = |key: &Value| key.as_str().is_none_or(|k| kind_reads(kind, &format!("model.{k}")));
    if model.keys().all(reads) {
        return None;
    }
    Some(model.iter().filter(|(k, _)| reads(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `KEY=VALUE` as `--set` reads it; `None` for one it refuses (its config's load says why).
fn parse_assignment(assignment: &str) -> Option<(String, Value)> {
    let (key, raw) = assignment.split_once('=')?;
    Some((key.trim().to_string(), serde_yaml::from_str(raw).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Mapping {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn the_last_override_of_the_kind_or_the_model_section_decides() {
        let base = yaml("model: {hidden: [64]}");
        assert_eq!(kind_of(&base, &[], &[]), Some(ModelKind::Mlp));
        let resnet = [("model.kind".to_string(), Value::from("resnet"))];
        assert_eq!(kind_of(&base, &[], &resnet), Some(ModelKind::Resnet));
        let section = [("model".to_string(), yaml("{d_block: 8}").into())];
        assert_eq!(kind_of(&base, &["model.kind=resnet".into()], &section), Some(ModelKind::Mlp));
        assert_eq!(kind_of(&base, &["model.kind=resnet".into()], &[]), Some(ModelKind::Resnet));
        assert_eq!(kind_of(&yaml("model: {kind: nope}"), &[], &[]), None);
    }

    #[test]
    fn other_kinds_keys_leave_the_base_and_the_overrides() {
        let base = yaml("model: {hidden: [64], dropout: 0.1, freeze: [a]}\nseed: 3");
        let stripped = strip_base(&base, ModelKind::Resnet).unwrap();
        assert_eq!(space::show(&Value::Mapping(stripped)), "{model: {freeze: [a]}, seed: 3}");
        assert_eq!(strip_base(&base, ModelKind::Mlp), None);
        assert_eq!(strip_set("model.hidden=[8]", ModelKind::Resnet), None);
        assert_eq!(strip_set("model.hidden=[8]", ModelKind::Mlp).as_deref(), Some("model.hidden=[8]"));
        let section = strip_set("model={hidden: [8], n_blocks: 2}", ModelKind::Resnet);
        assert_eq!(section.as_deref(), Some("model={n_blocks: 2}"));
        assert_eq!(strip_set("training.epochs=3", ModelKind::Resnet).as_deref(), Some("training.epochs=3"));
    }
}
