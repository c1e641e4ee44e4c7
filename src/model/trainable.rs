//! Which parameters train, and with which optimizer settings: `model.freeze` and
//! `training.optimizer.param_groups` resolved against a model's parameter names, and the
//! parameter groups as ranges (`Segment`s) of its flat buffer.

use anyhow::{bail, Result};

use super::Segment;
use crate::config::{name_pattern, ParamGroup};

/// Each parameter's fate, in the model's parameter order.
pub(super) struct Assignment {
    pub frozen: Vec<bool>,
    /// The index of the `param_groups` entry that holds it; `None`: the optimizer's own
    /// settings.
    pub group: Vec<Option<usize>>,
}

/// Resolves the patterns against `names`: each must match some parameter, and no parameter
/// may be in two groups (`torch.optim` refuses that too).
pub(super) fn assign(names: &[String], freeze: &[String], groups: &[ParamGroup]) -> Result<Assignment> {
    let listed = || {
        let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
        let more = if names.len() > shown.len() { format!(", ... ({} in all)", names.len()) } else { String::new() };
        format!("{}{more}", shown.join(", "))
    };
    let mut frozen = vec![false; names.len()];
    for (i, pattern) in freeze.iter().enumerate() {
        let compiled = name_pattern(pattern)?;
        let mut any = false;
        for (name, frozen) in names.iter().zip(frozen.iter_mut()) {
            if compiled.matches(name) {
                *frozen = true;
                any = true;
            }
        }
        if !any {
            bail!("model.freeze[{i}]: `{pattern}` matches no parameter (the model has: {})", listed());
        }
    }
    if !frozen.contains(&false) {
        bail!("model.freeze freezes every parameter: nothing would train");
    }
    let mut group = vec![None; names.len()];
    for (g, param_group) in groups.iter().enumerate() {
        let mut any = false;
        for (p, name) in names.iter().enumerate() {
            if !param_group.params.matches(name) {
                continue;
            }
            any = true;
            if let Some(other) = group[p] {
                bail!(
                    "parameter `{name}` is in training.optimizer.param_groups[{other}] and [{g}]; a parameter may be in one group"
                );
            }
            group[p] = Some(g);
        }
        if !any {
            bail!(
                "training.optimizer.param_groups[{g}].params: {:?} matches no parameter (the model has: {})",
                param_group.params.names(),
                listed()
            );
        }
    }
    Ok(Assignment { frozen, group })
}

/// The optimizer's segments of a flat buffer whose parameter `i` takes `ranges[i]`:
/// trainable parameters only, neighbours of one group merged.
pub(super) fn segments(ranges: &[(i64, i64)], assignment: &Assignment) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for (i, &(start, len)) in ranges.iter().enumerate() {
        if assignment.frozen[i] || len == 0 {
            continue;
        }
        let group = assignment.group[i];
        match segments.last_mut() {
            Some(last) if last.group == group && last.start + last.len == start => last.len += len,
            _ => segments.push(Segment { start, len, group }),
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Columns;

    fn names() -> Vec<String> {
        ["encoder.0.weight", "encoder.0.bias", "head.weight", "head.bias"].map(String::from).to_vec()
    }

    fn group(pattern: &str) -> ParamGroup {
        ParamGroup { params: Columns::One(pattern.into()), lr: Some(0.1), weight_decay: None }
    }

    #[test]
    fn freeze_and_groups_resolve_to_merged_segments() {
        let a = assign(&names(), &["encoder.0.w*".into()], &[group("head.*")]).unwrap();
        assert_eq!(a.frozen, [true, false, false, false]);
        assert_eq!(a.group, [None, None, Some(0), Some(0)]);
        let s = segments(&[(0, 6), (6, 2), (8, 4), (12, 2)], &a);
        assert_eq!(s, [Segment { start: 6, len: 2, group: None }, Segment { start: 8, len: 6, group: Some(0) }]);
    }

    #[test]
    fn patterns_that_match_nothing_or_twice_are_errors() {
        let err = assign(&names(), &["decoder.*".into()], &[]).err().unwrap().to_string();
        assert!(
            err.starts_with("model.freeze[0]: `decoder.*` matches no parameter (the model has: encoder.0.weight"),
            "{err}"
        );
        let err = assign(&names(), &[], &[group("head.*"), group("*.bias")]).err().unwrap().to_string();
        assert!(err.contains("`head.bias` is in training.optimizer.param_groups[0] and [1]"), "{err}");
        let err = assign(&names(), &["*".into()], &[]).err().unwrap().to_string();
        assert!(err.contains("nothing would train"), "{err}");
    }
}
