//! `model.kind: ft_transformer` held to `rtdl_revisiting_models.FTTransformer` (0.0.2):
//! tests/python/ft_transformer.py builds that network with a seed on a table with numeric and
//! text columns (empty cells in both), saves its state_dict as init.safetensors, and trains it
//! from there in a plain PyTorch loop on torchfit's inputs (rows in file order, `semantics:
//! torch`); torchfit, started from the same file with `model.init_from`, must agree on the
//! per-epoch losses, the final weights, model.pt's logits and `predict`, within 1e-5; without
//! init_from, the seed draws the package's initial weights bit for bit. Then: the defaults on
//! a table with a text column, bad knobs refused, `serve` answering as `predict` does, and
//! resume.

use std::path::Path;
use std::process::Output;

use serde_json::json;

mod common;
use common::server::{predict_csv, Server};
use common::*;

const PY: PythonCheck = PythonCheck("ft_transformer.py");

fn assert_python_ok(out: &Output, what: &str) {
    PY.assert_ok(out, what);
    assert!(stdout(out).contains(" passed, 0 failed"), "{}", stdout(out));
}

/// Prepares CASE in a new directory and trains it; `None` when the package is unavailable.
fn prepared(case: &str) -> Option<tempfile::TempDir> {
    let dir = PY.prepare(case)?;
    assert_ok(&torchfit(dir.path(), &["train", "config.yaml", "--quiet", "--out", "run"]));
    Some(dir)
}

/// Trains CASE in torchfit and in PyTorch and compares them.
fn assert_trains_as_rtdl(case: &str) {
    let Some(dir) = prepared(case) else { return };
    let d = dir.path();
    let mut predict = vec!["predict", "run", "x.csv", "--output", "run/predictions.csv"];
    if case == "classification" {
        predict.push("--proba");
    }
    assert_ok(&torchfit(d, &predict));
    let out = PY.run(&["check", case, d.to_str().unwrap(), d.join("run").to_str().unwrap()]);
    println!("{}", stdout(&out));
    assert_python_ok(&out, "check");
}

#[test]
fn an_ft_transformer_on_a_regression_table_trains_as_rtdl_does() {
    assert_trains_as_rtdl("regression");
}

#[test]
fn an_ft_transformer_classifier_trains_as_rtdl_does() {
    assert_trains_as_rtdl("classification");
}

/// Without `model.init_from`, the config's seed draws the initial weights that
/// `torch.manual_seed(seed)` and the package's constructor draw, bit for bit.
#[test]
fn a_seeded_ft_transformer_starts_from_rtdls_initial_weights() {
    let Some(dir) = prepared("init") else { return };
    let d = dir.path();
    let out = PY.run(&["check_init", d.to_str().unwrap(), d.join("run").to_str().unwrap()]);
    println!("{}", stdout(&out));
    assert_python_ok(&out, "check_init");
}

/// `x0`, `x1` numbers, `colour` text; `y` follows colour and x0.
fn table(dir: &Path) {
    let training = "epochs: 6, batch_size: 32, optimizer: {kind: adamw, lr: 0.0003}";
    colour_classifier(dir, 300, "kind: ft_transformer", training);
}

/// The package's state_dict of the default FTTransformer (get_default_kwargs(): 3 blocks of
/// 192, ffn hidden 256) for 2 numeric features, a text column of `levels` levels and 2 classes.
fn default_shapes(levels: i64) -> Vec<(String, Vec<i64>)> {
    let mut w: Vec<(String, Vec<i64>)> = vec![
        ("cls_embedding.weight".into(), vec![192]),
        ("cont_embeddings.weight".into(), vec![2, 192]),
        ("cont_embeddings.bias".into(), vec![2, 192]),
        ("cat_embeddings.embeddings.0.weight".into(), vec![levels, 192]),
        ("cat_embeddings.bias".into(), vec![1, 192]),
        ("backbone.output.normalization.weight".into(), vec![192]),
        ("backbone.output.normalization.bias".into(), vec![192]),
        ("backbone.output.linear.weight".into(), vec![2, 192]),
        ("backbone.output.linear.bias".into(), vec![2]),
    ];
    for b in 0..3 {
        let at = |s: &str| format!("backbone.blocks.{b}.{s}");
        for p in ["W_q", "W_k", "W_v", "W_out"] {
            w.push((at(&format!("attention.{p}.weight")), vec![192, 192]));
            w.push((at(&format!("attention.{p}.bias")), vec![192]));
        }
        let mut norms = vec!["ffn_normalization"];
        if b > 0 {
            norms.push("attention_normalization");
        }
        for n in norms {
            w.push((at(&format!("{n}.weight")), vec![192]));
            w.push((at(&format!("{n}.bias")), vec![192]));
        }
        w.push((at("ffn.linear1.weight"), vec![512, 192]));
        w.push((at("ffn.linear1.bias"), vec![512]));
        w.push((at("ffn.linear2.weight"), vec![192, 256]));
        w.push((at("ffn.linear2.bias"), vec![192]));
    }
    w.sort();
    w
}

/// `model: {kind: ft_transformer}` alone: the paper's defaults, the text column a token of
/// its own, dropout in effect, `predict` on raw rows with an unseen level.
#[test]
fn the_default_ft_transformer_trains_on_a_table_with_a_text_column_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train_config(d, "t.yaml", "run", &[]));
    // colour: blue, green, red, then (other).
    assert_eq!(weight_shapes(&d.join("run")), default_shapes(4), "weights.safetensors is the package's state_dict");

    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    let col = |h: &str| header.iter().position(|x| x == h).unwrap_or_else(|| panic!("{h} in {header:?}"));
    let (loss, accuracy) = (col("loss"), col("val_accuracy"));
    assert!(rows.last().unwrap()[loss] < rows[0][loss], "training lowers the loss: {rows:?}");
    assert!(rows.last().unwrap()[accuracy] >= 0.8, "colour and x0 decide y: {rows:?}");

    // The defaults spelled out train the same network to the bit; the dropouts are in effect.
    let spelled = "model={kind: ft_transformer, n_blocks: 3, d_block: 192, attention_n_heads: 8, \
                   attention_dropout: 0.2, ffn_d_hidden_multiplier: 1.3333333333333333, ffn_dropout: 0.1, \
                   residual_dropout: 0.0}";
    assert_ok(&train_config(d, "t.yaml", "spelled", &[spelled]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(read("run") == read("spelled"), "model: {{kind: ft_transformer}} is its defaults spelled out");
    assert_ok(&train_config(d, "t.yaml", "no_dropout", &["model.attention_dropout=0", "model.ffn_dropout=0"]));
    assert!(read("run") != read("no_dropout"), "dropout by default");

    std::fs::write(d.join("new.csv"), "colour,x0,x1\nred,1.0,3\nblue,9.0,50\npurple,4.5,10\n").unwrap();
    let out = torchfit(d, &["predict", "run", "new.csv"]);
    assert_ok(&out);
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 4, "a header and one line per row: {lines:?}");
    assert!(lines[1..].iter().all(|l| *l == "yes" || *l == "no"), "{lines:?}");

    // docs/models.md's param group for the paper's optimizer: embeddings, normalizations and
    // biases (tests/python/ft_transformer.py holds the patterns to the package's group).
    let groups = "training.optimizer={kind: adamw, lr: 0.0001, weight_decay: 0.00001, param_groups: [{params: \
                  [\"cls_embedding.*\", \"cont_embeddings.*\", \"cat_embeddings.*\", \"*_normalization.*\", \
                  \"*.bias\"], weight_decay: 0.0}]}";
    let out = torchfit(
        d,
        &["train", "t.yaml", "--device", "cpu", "--out", "groups", "--set", groups, "--set", "training.epochs=1"],
    );
    assert_ok(&out);
    // cls 192, cont 2 x 2 x 192, cat 4 x 192 + 192, norms (1 + 2 + 2) x 2 x 192 + 192, biases
    // 3 x (4 x 192 + 512 + 192) + 2.
    let size = 192 + 768 + 960 + 1920 + 192 + 3 * (768 + 512 + 192) + 2;
    assert!(stdout(&out).contains(&format!("weight_decay 0, {size} parameters")), "{}", stdout(&out));

    // n_blocks alone takes the rest of get_default_kwargs(n_blocks)'s row: d_block 96 for 1.
    assert_ok(&train_config(d, "t.yaml", "one", &["model.n_blocks=1"]));
    let one = weight_shapes(&d.join("one"));
    assert!(one.contains(&("cls_embedding.weight".to_string(), vec![96])), "{one:?}");
}

/// Only categorical columns, and only numeric ones: the package's network without
/// `cont_embeddings`, and without `cat_embeddings`.
#[test]
fn tables_of_one_kind_of_column_leave_the_other_embeddings_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let small = "model={kind: ft_transformer, n_blocks: 1, d_block: 16, attention_n_heads: 1}";
    assert_ok(&train_config(d, "t.yaml", "text", &[small, "data.features=[colour]"]));
    let names: Vec<String> = weight_shapes(&d.join("text")).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| !n.starts_with("cont_embeddings")), "{names:?}");
    assert!(names.iter().all(|n| !n.contains("W_out")), "one head, no W_out: {names:?}");
    assert_ok(&train_config(d, "t.yaml", "numbers", &[small, "data.features=[x0, x1]"]));
    let names: Vec<String> = weight_shapes(&d.join("numbers")).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| !n.starts_with("cat_embeddings")), "{names:?}");
    assert!(names.contains(&"cont_embeddings.weight".to_string()), "{names:?}");
}

/// Each bad knob, and each key of another kind, is a one-line error naming it, exit 2, before
/// any epoch.
#[test]
fn bad_ft_transformer_knobs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let cases: [(&[&str], &str); 12] = [
        (&["model.d_block=100"], "model.d_block"),
        (&["model.attention_n_heads=7"], "model.attention_n_heads"),
        (&["model.attention_n_heads=0"], "model.attention_n_heads"),
        (&["model.n_blocks=0"], "model.n_blocks"),
        (&["model.attention_dropout=1"], "model.attention_dropout"),
        (&["model.ffn_dropout=-0.1"], "model.ffn_dropout"),
        (&["model.residual_dropout=1.5"], "model.residual_dropout"),
        (&["model.ffn_d_hidden_multiplier=0"], "model.ffn_d_hidden_multiplier"),
        (&["model.dropout1=0.1"], "model.dropout1"),
        (&["model.hidden=[16]"], "model.hidden"),
        (&["model.kind=resnet", "model.attention_dropout=0.1"], "model.attention_dropout"),
        (&["data.categorical_encoding=embedding"], "data.categorical_encoding"),
    ];
    assert_each_fails_with(d, "t.yaml", &cases);
}

/// `serve` answers raw rows (text, an unseen level, an empty text cell) as `predict --proba`
/// does.
#[test]
fn serve_answers_an_ft_transformer_as_predict_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let small = "model={kind: ft_transformer, n_blocks: 1, d_block: 16, attention_n_heads: 2}";
    assert_ok(&train_config(d, "t.yaml", "run", &[small]));
    let csv = "x0,colour,x1\n1.0,red,3\n9.0,purple,50\n4.5,,20\n";
    let want = predict_csv(d, "run", csv, true);
    let server = Server::start(d, Path::new("run"), &["--quiet"]);
    let rows = json!([
        {"x0": 1.0, "colour": "red", "x1": 3},
        {"x0": 9.0, "colour": "purple", "x1": 50},
        {"x0": 4.5, "colour": null, "x1": 20},
    ]);
    let (status, got) = server.json("POST", "/predict", &json!({ "rows": rows }).to_string());
    assert_eq!(status, 200, "{got}");
    for (i, row) in want.iter().enumerate() {
        assert_eq!(got["labels"][i], row[0], "{got}");
        for (j, p) in row[1..].iter().enumerate() {
            let a = got["probabilities"][i][j].as_f64().unwrap_or_else(|| panic!("{got}"));
            let b = p.parse::<f64>().unwrap_or_else(|_| panic!("{row:?}"));
            assert!((a - b).abs() <= 1e-5, "{got} vs {row:?}");
        }
    }
    assert_eq!(server.terminate().code(), Some(0));
}

/// A run stopped after 2 epochs and resumed to 4 ends with the weights of 4 epochs in one go,
/// dropout masks included (each step's draws are seeded).
#[test]
fn a_resumed_ft_transformer_ends_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let small = "model={kind: ft_transformer, n_blocks: 2, d_block: 16, attention_n_heads: 2}";
    assert!(resumes_to_the_uninterrupted_weights(d, "t.yaml", &[small], 4), "resuming changes nothing");
}
