//! `model.numeric_embedding` held to `rtdl_num_embeddings` (0.0.12): tests/python/
//! numeric_embeddings.py writes a table with numeric and text columns and a config; torchfit
//! trains it and predicts on it; then the package's module (`PiecewiseLinearEmbeddings(bins,
//! ..., version="B")` or `PeriodicEmbeddings`) with the run's bins and trained weights,
//! followed by the same MLP in PyTorch, must give model.pt's logits and `torchfit predict`'s
//! values within 1e-5, and preprocessing.json's bins must be `compute_bins` of the
//! standardised training part. The same for `model.kind: tabm` against `tabm.TabM.make(...,
//! num_embeddings=...)` (0.0.3), whose seeded initial weights torchfit draws bit for bit.
//! Then, without Python: the defaults, resume, and the errors.

use std::path::Path;

mod common;
use common::*;

const PY: PythonCheck = PythonCheck("numeric_embeddings.py");

/// Trains CASE (numeric_embeddings.py's CASES), predicts on its table, and compares.
fn assert_matches_rtdl_num_embeddings(case: &str) {
    let Some(dir) = PY.prepare(case) else { return };
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "config.yaml", "--quiet", "--out", "run"]));
    assert_ok(&torchfit(d, &["predict", "run", "t.csv", "--output", "run/predictions.csv"]));
    let out = PY.run(&["check", case, d.to_str().unwrap(), d.join("run").to_str().unwrap()]);
    println!("{}", stdout(&out));
    assert!(out.status.success(), "check {case}:\n{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
}

#[test]
fn piecewise_linear_embeddings_compute_what_rtdl_num_embeddings_does() {
    assert_matches_rtdl_num_embeddings("piecewise_linear");
}

#[test]
fn periodic_embeddings_compute_what_rtdl_num_embeddings_does() {
    assert_matches_rtdl_num_embeddings("periodic");
}

#[test]
fn lite_periodic_embeddings_compute_what_rtdl_num_embeddings_does() {
    assert_matches_rtdl_num_embeddings("periodic_lite");
}

/// A constant column (which compute_bins refuses) and a 0/1 column: the run trains, its bins
/// give the constant column [v - 1, v + 1], and the package agrees with model.pt.
#[test]
fn a_table_with_a_constant_and_a_binary_column_trains_with_piecewise_linear_embeddings() {
    assert_matches_rtdl_num_embeddings("constant");
}

/// `model.kind: tabm` behind the embeddings: TabM.make(..., num_embeddings=
/// PiecewiseLinearEmbeddings(bins, 16, activation=False, version="B")) with the run's weights
/// gives model.pt's and predict's values (TabM.make's n_blocks 2 with embeddings).
#[test]
fn tabm_with_piecewise_linear_embeddings_computes_what_tabm_make_does() {
    assert_matches_rtdl_num_embeddings("tabm_piecewise_linear");
}

#[test]
fn tabm_with_periodic_embeddings_computes_what_tabm_make_does() {
    assert_matches_rtdl_num_embeddings("tabm_periodic");
}

/// Seeded, a TabM with embeddings starts from the weights torch.manual_seed(seed), the
/// package's embedding module and TabM.make (start_scaling_init normal, one scaling chunk per
/// embedded feature) draw, bit for bit.
#[test]
fn a_seeded_tabm_with_embeddings_starts_from_tabm_makes_initial_weights() {
    assert_matches_rtdl_num_embeddings("tabm_init");
}

/// `x0`, `x1` numbers, `colour` text; `y` follows colour and x0.
fn table(dir: &Path) {
    let mut csv = String::from("x0,colour,x1,y\n");
    for i in 0..300 {
        let colour = ["red", "green", "blue"][i % 3];
        let x0 = ((i * 37) % 101) as f64 / 10.0;
        let x1 = ((i * 53) % 89) as f64;
        let y = (x0 - 5.0).abs() + if colour == "red" { 2.0 } else { 0.0 };
        csv += &format!("{x0},{colour},{x1},{y}\n");
    }
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let config = "seed: 4\ntask: regression\ndata: {kind: csv, path: t.csv, target: y, validation_split: 0.2, \
                  test_split: 0}\nmodel: {numeric_embedding: {kind: piecewise_linear}}\ntraining: {epochs: 6, \
                  batch_size: 32, loss: mse, metrics: [], threads: 1}\n";
    std::fs::write(dir.join("t.yaml"), config).unwrap();
}

/// `{kind: piecewise_linear}` alone: 48 bins, d_embedding 16, no activation, spelled out in the
/// resolved config; the bins kept in preprocessing.json; and a run resumed from its
/// checkpoint ends where an uninterrupted one does.
#[test]
fn the_defaults_are_spelled_out_and_a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train_config(d, "t.yaml", "run", &[]));
    let config = std::fs::read_to_string(d.join("run/config.yaml")).unwrap();
    for line in ["kind: piecewise_linear", "n_bins: 48", "d_embedding: 16", "activation: false"] {
        assert!(config.contains(line), "{line} in the resolved config:\n{config}");
    }
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/preprocessing.json")).unwrap()).unwrap();
    let bins = pre["numeric_bins"].as_array().expect("numeric_bins in preprocessing.json");
    assert_eq!(bins.len(), 2, "one list of edges per numeric feature: {bins:?}");
    assert!(bins.iter().all(|b| b.as_array().unwrap().len() == 49), "48 bins each: {bins:?}");
    let weights = tch::Tensor::read_safetensors(d.join("run/weights.safetensors")).unwrap();
    let shape = |name: &str| weights.iter().find(|(n, _)| n == name).map(|(_, t)| t.size());
    assert_eq!(shape("num_module.linear.weight"), Some(vec![2, 48, 16]));
    assert_eq!(shape("0.weight"), Some(vec![10, 2 * 16 + 4]), "x0, x1 embedded; colour one-hot (3 + other)");

    assert_ok(&train_config(d, "t.yaml", "part", &["training.epochs=3"]));
    assert_ok(&torchfit(d, &["train", "--resume", "part", "--quiet", "--set", "training.epochs=6"]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(read("run") == read("part"), "the resumed run's weights are the uninterrupted run's");
    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    let loss = header.iter().position(|h| h == "loss").unwrap();
    assert!(rows.last().unwrap()[loss] < 0.5 * rows[0][loss], "training lowers the loss: {rows:?}");

    std::fs::write(d.join("new.csv"), "colour,x0,x1\nred,1.0,3\nblue,9.0,50\n").unwrap();
    let out = torchfit(d, &["predict", "run", "new.csv"]);
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 3, "a header and a value per row: {}", stdout(&out));
    // The ONNX graph (checked against predict by onnxruntime in tests/onnx_export.rs).
    let out = torchfit(d, &["export", "run", "--format", "onnx", "--output", "m.onnx"]);
    assert_ok(&out);
}

/// Each bad knob is a one-line error naming its key, exit 2, before any epoch.
#[test]
fn bad_knobs_are_errors_naming_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let e = "model.numeric_embedding";
    let cases: [(&[&str], &str); 9] = [
        (
            &["model.numeric_embedding={kind: piecewise_linear, n_bins: 1}"],
            "model.numeric_embedding.n_bins must be >= 2",
        ),
        (
            &["model.numeric_embedding={kind: periodic, d_embedding: 0}"],
            "model.numeric_embedding.d_embedding must be >= 1",
        ),
        (&["model.numeric_embedding={kind: periodic, n_frequencies: 0}"], "model.numeric_embedding.n_frequencies"),
        (&["model.numeric_embedding={kind: periodic, frequency_init_scale: -1}"], "frequency_init_scale"),
        (&["model.numeric_embedding={kind: periodic, n_bins: 8}"], "model.numeric_embedding.n_bins does not apply"),
        (&["model.numeric_embedding={kind: periodic, lite: true, activation: false}"], "model.numeric_embedding.lite"),
        (&["model.numeric_embedding={kind: splines}"], "model.numeric_embedding.kind"),
        (&["model.numeric_embedding={kind: piecewise_linear, n_bins: 240}"], "model.numeric_embedding.n_bins (240)"),
        (&["model.kind=resnet"], "model.numeric_embedding applies to model.kind mlp and tabm, not resnet"),
    ];
    assert_each_fails_with(d, "t.yaml", &cases);
    // A table whose only feature is text has nothing to embed.
    std::fs::write(d.join("text.csv"), "colour,y\nred,1\nblue,2\ngreen,3\nred,1.5\nblue,2.5\n").unwrap();
    let out = train_config(d, "t.yaml", "text", &["data.path=text.csv", "data.validation_split=0"]);
    assert_fails_with(&out, &[e, "numeric features"]);
}
