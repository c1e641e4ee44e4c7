//! `model.kind: tabm` held to the reference package, `tabm.TabM` (0.0.3), through the binary:
//! tests/python/tabm_reference.py builds TabM.make with a seed on a table with numeric and text
//! columns, saves its state_dict as init.safetensors, and trains it from there in a plain
//! PyTorch loop (the mean of the members' losses, Adam, dropout 0, rows in file order);
//! torchfit, started from the same file with `model.init_from`, must agree on the per-epoch
//! losses, the final weights, model.pt's prediction with those weights in TabM, and `predict`,
//! within 1e-5. Without init_from, the seed draws TabM.make's initial weights bit for bit.
//! Then: the paper's defaults from `model: {kind: tabm}` alone, bad knobs, resume, two
//! processes under torchrun, an embedded text column and `serve`.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::*;

const PY: PythonCheck = PythonCheck("tabm_reference.py");

fn assert_python_ok(out: &Output, what: &str) {
    PY.assert_ok(out, what);
    assert!(stdout(out).contains(" passed, 0 failed"), "{}", stdout(out));
}

/// Trains CASE in torchfit and in PyTorch and compares them.
fn assert_trains_as_tabm(case: &str, proba: bool) {
    let Some(dir) = PY.prepare(case) else { return };
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "config.yaml", "--quiet", "--out", "run"]));
    let mut predict = vec!["predict", "run", "x.csv", "--output", "run/predictions.csv"];
    if proba {
        predict.push("--proba");
    }
    assert_ok(&torchfit(d, &predict));
    let out = PY.run(&["check", case, d.to_str().unwrap(), d.join("run").to_str().unwrap()]);
    // The measured differences, visible with --nocapture.
    println!("{}", stdout(&out));
    assert_python_ok(&out, "check");
}

#[test]
fn a_tabm_regressor_trains_as_the_tabm_package_does() {
    assert_trains_as_tabm("regression", false);
}

/// cross_entropy over 3 unbalanced classes with class_weight: balanced.
#[test]
fn a_class_weighted_tabm_classifier_trains_as_the_tabm_package_does() {
    assert_trains_as_tabm("classification", true);
}

/// bce, arch_type tabm-mini.
#[test]
fn a_binary_tabm_mini_trains_as_the_tabm_package_does() {
    assert_trains_as_tabm("binary", true);
}

/// Without `model.init_from`, the config's seed draws the parameters `torch.manual_seed(seed)`
/// and TabM.make draw (the first scaling per feature chunk), bit for bit.
#[test]
fn a_seeded_tabm_starts_from_tabm_makes_initial_weights() {
    for case in ["init", "init_mini"] {
        let Some(dir) = PY.prepare(case) else { return };
        let d = dir.path();
        assert_ok(&torchfit(d, &["train", "config.yaml", "--quiet", "--out", "run"]));
        let out = PY.run(&["check_init", case, d.join("run").to_str().unwrap()]);
        println!("{}", stdout(&out));
        assert_python_ok(&out, "check_init");
    }
}

/// `x0`, `x1` numbers, `colour` text; `y` follows colour and x0.
fn table(dir: &Path) {
    colour_classifier(dir, 200, "kind: tabm", "epochs: 2, batch_size: 32");
}

/// `model: {kind: tabm}` alone: the paper's defaults (k 32, 3 blocks of width 512, dropout
/// 0.1, arch_type tabm), the text column reaching the network one-hot, and `predict` on raw
/// rows.
#[test]
fn the_default_tabm_trains_on_a_table_with_a_text_column_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train_config(d, "t.yaml", "run", &[]));
    // x0, x1 and colour's 3 levels and "(other)".
    let d_in = 2 + 4;
    let mut expected: Vec<(String, Vec<i64>)> = Vec::new();
    for b in 0..3 {
        let fan_in = if b == 0 { d_in } else { 512 };
        let at = format!("backbone.blocks.{b}.0");
        expected.push((format!("{at}.weight"), vec![512, fan_in]));
        expected.push((format!("{at}.r"), vec![32, fan_in]));
        expected.push((format!("{at}.s"), vec![32, 512]));
        expected.push((format!("{at}.bias"), vec![32, 512]));
    }
    expected.push(("output.weight".into(), vec![32, 512, 2]));
    expected.push(("output.bias".into(), vec![32, 2]));
    expected.sort();
    assert_eq!(weight_shapes(&d.join("run")), expected, "weights.safetensors holds TabM.make's state_dict");

    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    let col = |h: &str| header.iter().position(|x| x == h).unwrap_or_else(|| panic!("{h} in {header:?}"));
    assert!(rows.last().unwrap()[col("loss")] < rows[0][col("loss")], "training lowers the loss: {rows:?}");

    // The defaults spelled out train the same network to the bit; dropout 0.1 is in effect.
    let spelled = "model={kind: tabm, k: 32, n_blocks: 3, d_block: 512, dropout: 0.1, arch_type: tabm}";
    assert_ok(&train_config(d, "t.yaml", "spelled", &[spelled]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(read("run") == read("spelled"), "model: {{kind: tabm}} is its defaults spelled out");
    assert_ok(&train_config(d, "t.yaml", "no_dropout", &["model.dropout=0", "model.n_blocks=3"]));
    assert!(read("run") != read("no_dropout"), "dropout 0.1 by default");

    // predict on raw rows, the text column as it is, an unseen colour included.
    std::fs::write(d.join("new.csv"), "colour,x0,x1\nred,1.0,3\nblue,9.0,50\npurple,4.5,10\n").unwrap();
    let out = torchfit(d, &["predict", "run", "new.csv", "--proba"]);
    assert_ok(&out);
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 4, "a header and one line per row: {lines:?}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        assert!(cells[0] == "yes" || cells[0] == "no", "{lines:?}");
        let p: f64 = cells[1..].iter().map(|c| c.parse::<f64>().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-5, "the members' mean probabilities sum to 1: {lines:?}");
    }
}

/// Out-of-range knobs and other kinds' keys: one-line errors naming the key, exit 2, before
/// any epoch.
#[test]
fn bad_tabm_knobs_are_one_line_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let cases: [&[&str]; 11] = [
        &["model.k=0"],
        &["model.n_blocks=0"],
        &["model.d_block=0"],
        &["model.dropout=1.0"],
        &["model.dropout=-0.1"],
        &["model.arch_type=tabm-packed"],
        &["model.hidden=[16]"],
        &["model.dropout1=0.1"],
        &["model.kind=mlp", "model.k=4"],
        &["model.kind=resnet", "model.arch_type=tabm"],
        &["model.kind=resnet", "model.dropout=0.1"],
    ];
    assert_each_fails_naming_its_key(d, "t.yaml", &cases);
}

/// A run killed in the middle of a checkpoint write (as kill -9 at that instant would) and
/// resumed ends exactly where an uninterrupted one does: weights, metrics, dropout masks.
#[test]
fn a_killed_tabm_run_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let sets = ["model={kind: tabm, k: 4, d_block: 32}", "training.epochs=4"];
    assert_ok(&train_config(d, "t.yaml", "straight", &sets));
    let mut args = vec!["train", "t.yaml", "--device", "cpu", "--quiet", "--out", "killed"];
    for s in &sets {
        args.extend(["--set", *s]);
    }
    let out = Command::new(BIN)
        .args(&args)
        .current_dir(d)
        .env("TORCHFIT_FAULT", "abort-during-checkpoint:2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault fired");
    assert_ok(&torchfit(d, &["train", "--resume", "killed", "--quiet"]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(read("straight") == read("killed"), "the resumed run's weights are the uninterrupted run's");
    assert_eq!(metrics_without_seconds(&d.join("straight")), metrics_without_seconds(&d.join("killed")));
}

/// Two processes under torchrun (Gloo) train what one process trains with the same global
/// batch: the members' loss gradient is summed across processes as any other (dropout 0: each
/// process draws its own masks).
#[test]
fn torchrun_two_processes_train_a_tabm_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let args = [
        "train",
        "t.yaml",
        "--device",
        "cpu",
        "--quiet",
        "--set",
        "model={kind: tabm, k: 4, d_block: 32, dropout: 0}",
        "--set",
        "training.epochs=3",
        "--out",
    ];
    let one: Vec<&str> = args.iter().copied().chain(["one"]).collect();
    assert_ok(&torchfit(d, &one));
    let two: Vec<&str> = [BIN].iter().chain(&args).copied().chain(["two"]).collect();
    let out = torchrun(2, d, &two, &[], std::time::Duration::from_secs(300)).unwrap();
    assert_ok(&out);
    let (m1, m2) = (metrics_without_seconds(&d.join("one")), metrics_without_seconds(&d.join("two")));
    assert_eq!(m1.len(), m2.len());
    for (a, b) in m1.iter().flatten().zip(m2.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-6), "metrics.csv: {m1:?} vs {m2:?}");
    }
    let load = |run: &str| {
        let mut w = tch::Tensor::read_safetensors(d.join(run).join("weights.safetensors")).unwrap();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    };
    let (w1, w2) = (load("one"), load("two"));
    assert_eq!(w1.len(), w2.len());
    for ((name, a), (other, b)) in w1.iter().zip(&w2) {
        assert_eq!(name, other);
        let diff = (a - b).abs().max().double_value(&[]) / a.abs().max().double_value(&[]).max(1e-12);
        assert!(diff <= 1e-5, "{name}: 1 vs 2 processes differ by {diff:.2e} of its largest magnitude");
    }
}

/// A text column embedded (as the MLP embeds high-cardinality ones): its table is
/// `embeddings.0.weight` and its width one feature of the first scaling's; `serve` answers
/// what `predict` answers, from the members' mean.
#[test]
fn a_tabm_with_an_embedded_column_serves_what_predict_answers() {
    use common::server::{predict_csv, Server};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let sets = ["model={kind: tabm, k: 4, d_block: 32}", "data.categorical_encoding={colour: embedding}"];
    assert_ok(&train_config(d, "t.yaml", "run", &sets));
    let w = weight_shapes(&d.join("run"));
    let shape = |name: &str| w.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).expect(name);
    let table_shape = shape("embeddings.0.weight");
    assert_eq!(table_shape[0], 4, "colour's 3 levels and (other): {w:?}");
    assert_eq!(shape("backbone.blocks.0.0.r"), vec![4, 2 + table_shape[1]], "x0, x1 and colour's embedding");

    let csv = "colour,x0,x1\nred,1.0,3\nblue,9.0,50\npurple,4.5,10\n";
    let want = predict_csv(d, "run", csv, true);
    let server = Server::start(d, Path::new("run"), &["--quiet"]);
    let rows = json!([
        {"colour": "red", "x0": 1.0, "x1": 3},
        {"colour": "blue", "x0": 9.0, "x1": 50},
        {"colour": "purple", "x0": 4.5, "x1": 10},
    ]);
    let (status, got) = server.json("POST", "/predict", &json!({ "rows": rows }).to_string());
    assert_eq!(status, 200, "{got}");
    for (i, row) in want.iter().enumerate() {
        assert_eq!(got["labels"][i], row[0], "{got}");
        for (j, p) in row[1..].iter().enumerate() {
            let (served, predicted) = (got["probabilities"][i][j].as_f64().unwrap(), p.parse::<f64>().unwrap());
            assert!((served - predicted).abs() <= 1e-6, "{got} vs {row:?}");
        }
    }
    server.terminate();
}
