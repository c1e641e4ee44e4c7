//! Fine-tuning the built-in MLP through the real binary: `model.init_from` (strict, and
//! `model.strict: false` for a partial file), `model.freeze` and
//! `training.optimizer.param_groups`, and the config errors around them.

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

mod common;
use common::*;

const BASE: &[&str] = &["train", "--quiet", "--set", "data.kind=linear", "--set", "training.epochs=3"];

fn train(dir: &Path, out: &str, sets: &[&str]) -> std::process::Output {
    let mut args: Vec<&str> = BASE.to_vec();
    args.extend(["--out", out]);
    for s in sets {
        args.extend(["--set", *s]);
    }
    torchfit(dir, &args)
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

#[test]
fn a_frozen_layer_keeps_its_pretrained_weights_while_a_param_group_trains_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&train(d, "pre", &["model.hidden=[8]"]));
    let pre = weights(&d.join("pre/weights.safetensors"));
    let from = format!("model.init_from={}", d.join("pre/weights.safetensors").display());
    let sets = [
        "model.hidden=[8]",
        from.as_str(),
        "model.freeze=[\"0.*\"]",
        "training.optimizer.param_groups=[{params: \"2.*\", lr: 0.01}]",
    ];
    assert_ok(&train(d, "tuned", &sets));
    let tuned = weights(&d.join("tuned/weights.safetensors"));
    for name in ["0.weight", "0.bias"] {
        assert!(tuned[name].equal(&pre[name]), "{name} is frozen: it must keep init_from's values");
    }
    assert!(!tuned["2.weight"].equal(&pre["2.weight"]), "the head trains");
    // The run's config keeps what it was fine-tuned with.
    let config = std::fs::read_to_string(d.join("tuned/config.yaml")).unwrap();
    assert!(
        config.contains("freeze:") && config.contains("param_groups:") && config.contains("init_from:"),
        "{config}"
    );
    // Without --quiet, the start of the run says what trains.
    let out = torchfit(d, &["train", "tuned/config.yaml", "--out", "again", "--set", "training.epochs=1"]);
    assert_ok(&out);
    let first = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(
        first.starts_with("model: mlp, 9 trainable parameters, 88 frozen (0.*); group 0 (2.*): lr 0.01"),
        "{first}"
    );
}

#[test]
fn init_from_is_strict_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&train(d, "pre", &["model.hidden=[8]"]));
    let pre = weights(&d.join("pre/weights.safetensors"));
    // Only the first layer: a model with a new head.
    let partial = d.join("encoder.safetensors");
    Tensor::write_safetensors(&[("0.weight", &pre["0.weight"]), ("0.bias", &pre["0.bias"])], &partial).unwrap();
    let from = format!("model.init_from={}", partial.display());
    let out = train(d, "strict", &["model.hidden=[8]", &from]);
    assert_fails_with(&out, &["model.init_from", "has no tensor `2.weight`", "model.strict: false"]);
    assert!(!d.join("strict").exists(), "no run directory for a run that cannot start");
    assert_ok(&train(d, "loose", &["model.hidden=[8]", &from, "model.strict=false", "training.epochs=1"]));
    // A name present with another shape is an error either way.
    let wide = train(d, "wide", &["model.hidden=[4]", &from, "model.strict=false"]);
    assert_fails_with(&wide, &["`0.weight` has shape [8, 10], the model needs [4, 10]"]);
}

#[test]
fn fine_tuning_keys_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&[&str], &[&str])] = &[
        (&["model.path=net.pt"], &["model.path applies to model.kind torchscript, not mlp"]),
        (&["model.kind=torchscript"], &["model.kind: torchscript needs model.path"]),
        (&["model.freeze=[\"[\"]"], &["model.freeze[0]", "is not a glob pattern"]),
        (&["model.freeze=[\"9.*\"]"], &["model.freeze[0]: `9.*` matches no parameter", "0.weight"]),
        (&["model.freeze=[\"*\"]"], &["nothing would train"]),
        (
            &["training.optimizer.param_groups=[{params: \"0.*\", lr: -1}]"],
            &["param_groups[0].lr must be a positive number"],
        ),
        (
            &["training.optimizer.param_groups=[{params: \"0.*\"}, {params: \"*.weight\"}]"],
            &["`0.weight` is in training.optimizer.param_groups[0] and [1]"],
        ),
        (&["model.strict=false"], &["model.strict: false applies to model.init_from"]),
        (&["model.n_blocks=3"], &["model.n_blocks applies to model.kind resnet, tabm and ft_transformer, not mlp"]),
        (&["model.kind=resnet", "model.hidden=[4]"], &["model.hidden applies to model.kind mlp, not resnet"]),
        (&["model.kind=resnet", "model.dropout1=1.5"], &["model.dropout1 must be in [0, 1), got 1.5"]),
        (&["model.kind=resnet", "model.d_block=0"], &["model.d_block must be between 1 and"]),
    ];
    for (i, (sets, words)) in cases.iter().enumerate() {
        let out = train(d, &format!("run{i}"), sets);
        assert_fails_with(&out, words);
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{sets:?}: one line: {}", stderr(&out));
        assert!(!d.join(format!("run{i}")).exists(), "{sets:?}: no run directory");
    }
}
