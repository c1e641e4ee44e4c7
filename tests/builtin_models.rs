//! The built-in tabular kinds held to their reference packages. `model.kind: resnet` is
//! `rtdl_revisiting_models.ResNet` (0.0.2): tests/python/builtin_models.py builds that network
//! with a seed, saves its state_dict as init.safetensors, and trains it from there in a plain
//! PyTorch loop (rows in file order, `semantics: torch`); torchfit, started from the same
//! file with `model.init_from`, must agree on the per-epoch losses, the final weights and
//! BatchNorm buffers (num_batches_tracked exactly), model.pt's logits and `predict`, within
//! 1e-5; without init_from, the seed draws rtdl's initial weights. Then: the default knobs on a table with a text column, and the MLP's keys refused.

use std::path::Path;

mod common;
use common::*;

const PY: PythonCheck = PythonCheck("builtin_models.py");

/// Trains CASE (builtin_models.py's CASES) in torchfit and in PyTorch and compares them.
fn assert_trains_as_rtdl(case: &str) {
    let Some(dir) = PY.prepare(case) else { return };
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "config.yaml", "--quiet", "--out", "run"]));
    let mut predict = vec!["predict", "run", "x.npy", "--output", "run/predictions.csv"];
    if case != "regression" {
        predict.push("--proba");
    }
    assert_ok(&torchfit(d, &predict));
    let run = d.join("run");
    let out = PY.run(&["check", case, d.to_str().unwrap(), run.to_str().unwrap()]);
    // The measured differences, visible with --nocapture.
    println!("{}", stdout(&out));
    PY.assert_ok(&out, "check");
    assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
}

#[test]
fn a_resnet_on_a_regression_table_trains_as_rtdl_resnet_does() {
    assert_trains_as_rtdl("regression");
}

#[test]
fn a_resnet_classifier_trains_as_rtdl_resnet_does() {
    assert_trains_as_rtdl("classification");
}

/// SGD with momentum, every parameter trained (builtin_models.py says why Adam's cases
/// freeze the biases that only feed BatchNorms).
#[test]
fn a_resnet_trained_with_sgd_matches_rtdl_in_every_parameter() {
    assert_trains_as_rtdl("sgd");
}

/// Without `model.init_from`, the config's seed draws the initial weights that
/// `torch.manual_seed(seed)` and rtdl's constructor draw, bit for bit.
#[test]
fn a_seeded_resnet_starts_from_rtdl_resnets_initial_weights() {
    let Some(dir) = PY.prepare("init") else { return };
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "config.yaml", "--quiet", "--out", "run"]));
    let out = PY.run(&["check_init", d.join("run").to_str().unwrap()]);
    println!("{}", stdout(&out));
    PY.assert_ok(&out, "check_init");
    assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
}

/// `x0`, `x1` numbers, `colour` text; `y` follows colour and x0.
fn table(dir: &Path) {
    colour_classifier(dir, 300, "kind: resnet", "epochs: 12, batch_size: 32");
}

/// `model: {kind: resnet}` alone: the paper's defaults (2 blocks of width 192, hidden 384,
/// dropout1 0.15, dropout2 0), the text column reaching the network, and `predict` on raw
/// rows.
#[test]
fn the_default_resnet_trains_on_a_table_with_a_text_column_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train_config(d, "t.yaml", "run", &[]));

    let w = weight_shapes(&d.join("run"));
    let shape = |name: &str| w.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
    let d_in = shape("input_projection.weight").expect("input_projection.weight")[1];
    assert!(d_in > 2, "the colour column reaches the network beside x0 and x1: d_in {d_in}");
    let mut expected: Vec<(String, Vec<i64>)> =
        vec![("input_projection.weight".into(), vec![192, d_in]), ("input_projection.bias".into(), vec![192])];
    let norm = |at: &str| {
        let mut v: Vec<(String, Vec<i64>)> =
            ["weight", "bias", "running_mean", "running_var"].map(|s| (format!("{at}.{s}"), vec![192])).into();
        v.push((format!("{at}.num_batches_tracked"), vec![]));
        v
    };
    for b in 0..2 {
        expected.extend(norm(&format!("blocks.{b}.normalization")));
        expected.push((format!("blocks.{b}.linear1.weight"), vec![384, 192]));
        expected.push((format!("blocks.{b}.linear1.bias"), vec![384]));
        expected.push((format!("blocks.{b}.linear2.weight"), vec![192, 384]));
        expected.push((format!("blocks.{b}.linear2.bias"), vec![192]));
    }
    expected.extend(norm("output.normalization"));
    expected.push(("output.linear.weight".into(), vec![2, 192]));
    expected.push(("output.linear.bias".into(), vec![2]));
    assert_eq!(w.len(), expected.len(), "weights.safetensors holds rtdl's state_dict, no more: {w:?}");
    for (name, size) in &expected {
        assert_eq!(shape(name).as_ref(), Some(size), "{name} in weights.safetensors: {w:?}");
    }

    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    let col = |h: &str| header.iter().position(|x| x == h).unwrap_or_else(|| panic!("{h} in {header:?}"));
    let (loss, accuracy) = (col("loss"), col("val_accuracy"));
    assert!(rows.last().unwrap()[loss] < rows[0][loss], "training lowers the loss: {rows:?}");
    assert!(rows.last().unwrap()[accuracy] >= 0.8, "colour and x0 decide y: {rows:?}");

    // The defaults spelled out train the same network to the bit; dropout1 is in effect.
    let spelled = "model={kind: resnet, n_blocks: 2, d_block: 192, d_hidden_multiplier: 2.0, dropout1: 0.15, \
                   dropout2: 0.0}";
    assert_ok(&train_config(d, "t.yaml", "spelled", &[spelled]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(read("run") == read("spelled"), "model: {{kind: resnet}} is its defaults spelled out");
    assert_ok(&train_config(d, "t.yaml", "no_dropout", &["model.dropout1=0"]));
    assert!(read("run") != read("no_dropout"), "dropout1 0.15 by default");

    // predict on raw rows, the text column as it is, an unseen colour included.
    std::fs::write(d.join("new.csv"), "colour,x0,x1\nred,1.0,3\nblue,9.0,50\npurple,4.5,10\n").unwrap();
    let out = torchfit(d, &["predict", "run", "new.csv"]);
    assert_ok(&out);
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 4, "a header and one line per row: {lines:?}");
    assert!(lines[1..].iter().all(|l| *l == "yes" || *l == "no"), "{lines:?}");
}

/// The MLP's knobs mean nothing to a ResNet, nor the ResNet's to the MLP: each is a one-line
/// error naming it, exit 2, before any epoch.
#[test]
fn the_mlps_keys_are_errors_with_kind_resnet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let cases: [&[&str]; 6] = [
        &["model.hidden=[16]"],
        &["model.activation=tanh"],
        &["model.init=torch"],
        &["model.dropout=0.1"],
        &["model.backward=autograd"],
        &["model.kind=mlp", "model.n_blocks=3"],
    ];
    assert_each_fails_naming_its_key(d, "t.yaml", &cases);
}

/// A run stopped after 2 epochs and resumed to 4 ends with the weights of 4 epochs in one go:
/// BatchNorm's running statistics and step counts come back with the weights, and the
/// dropout masks' generator with the checkpoint.
#[test]
fn a_resumed_resnet_ends_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let small = "model={kind: resnet, n_blocks: 1, d_block: 16}";
    assert!(resumes_to_the_uninterrupted_weights(d, "t.yaml", &[small], 4), "resuming changes nothing");
    let names: Vec<String> = weight_shapes(&d.join("whole")).into_iter().map(|(name, _)| name).collect();
    assert!(names.iter().any(|n| n.ends_with("running_mean")), "{names:?}");
}
