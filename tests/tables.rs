//! Tables as users bring them, end to end: text columns found by themselves or named,
//! booleans as 1/0, rare and unseen levels, missing cells as a level, one-hot and embedded
//! columns, standardisation by default for file data, and `evaluate`/`predict` on raw rows.

use std::path::Path;

mod common;
use common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A small table: `colour` text with a rare level and missing cells, `member` yes/no, `size`
/// numbers on a large scale, `y` a label that follows colour and size.
fn table(dir: &Path) {
    let mut csv = String::from("colour,member,size,y\n");
    for i in 0..300 {
        let colour = match i % 10 {
            0 if i < 10 => "violet", // seen once: rarer than min_frequency 2
            0..=3 => "red",
            4..=6 => "blue",
            7 | 8 => "green",
            _ => "",
        };
        let member = if i % 3 == 0 { "yes" } else { "no" };
        let size = 1000.0 + (i * 37 % 101) as f64 * 10.0;
        let y = if (colour == "red") ^ (size > 1500.0) { "a" } else { "b" };
        csv += &format!("{colour},{member},{size},{y}\n");
    }
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    // A config of its own: the embedded default's `loss: mse` would make y a regression.
    std::fs::write(dir.join("t.yaml"), "data: {kind: csv, path: t.csv, target: y}\nmodel: {hidden: [16]}\n").unwrap();
}

fn train(dir: &Path, out: &str, sets: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "t.yaml", "--device", "cpu", "--quiet", "--out", out];
    for s in ["data.validation_split=0.2", "data.test_split=0.2", "data.missing=mean", "training.epochs=80"] {
        args.extend(["--set", s]);
    }
    for s in sets {
        args.extend(["--set", *s]);
    }
    torchfit(dir, &args)
}

#[test]
fn text_boolean_and_numeric_columns_are_told_apart_and_encoded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train(d, "run", &["data.min_frequency=2"]));
    let pre = json(&d.join("run/preprocessing.json"));
    assert_eq!(pre["feature_names"], serde_json::json!(["member", "size"]), "yes/no and numbers are numeric");
    let colour = &pre["categorical"][0];
    assert_eq!(colour["name"], "colour");
    // violet is seen at most once in training: it shares (other); missing cells are a level.
    assert_eq!(colour["levels"], serde_json::json!(["blue", "green", "red", "(other)", "(missing)"]));
    assert_eq!((colour["other"].as_u64(), colour["missing"].as_u64()), (Some(3), Some(4)));
    assert!(colour["embedding"].is_null(), "one-hot by default");
    // File data is standardised by default: size's std is in the hundreds.
    assert!(pre["input_std"][1].as_f64().unwrap() > 100.0, "{pre}");
    let s = summary(&d.join("run"));
    assert!(s["test_metrics"]["accuracy"].as_f64().unwrap() >= 0.85, "colour and size decide y: {s}");

    // evaluate and predict take the raw table, text, yes/no and empty cells as they are.
    let out = torchfit(d, &["evaluate", "run", "--data", "t.csv"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("accuracy "), "{}", stdout(&out));
    std::fs::write(d.join("new.csv"), "size,colour,member\n1200,purple,yes\n1800,,no\n1700,red,t\n").unwrap();
    let out = torchfit(d, &["predict", "run/model.pt", "new.csv"]);
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out));
}

#[test]
fn embedded_columns_train_checkpoint_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let sets = ["data.categorical_encoding={colour: 3}", "data.min_frequency=2", "model.dropout=0.1"];
    assert_ok(&train(d, "straight", &sets));
    let weights = tch::Tensor::read_safetensors(d.join("straight/weights.safetensors")).unwrap();
    let (_, table) = weights.iter().find(|(n, _)| n == "embeddings.0.weight").expect("an embedding table");
    assert_eq!(table.size(), [5, 3], "blue, green, red, (other), (missing): width 3");

    // Stopped after 20 epochs and resumed to 40: the same weights, embeddings included.
    let mut first: Vec<&str> = sets.to_vec();
    first.push("training.epochs=40");
    assert_ok(&train(d, "resumed", &first));
    assert_ok(&torchfit(d, &["train", "--resume", "resumed", "--set", "training.epochs=80", "--quiet"]));
    let read = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert_eq!(read("straight"), read("resumed"));
}

#[test]
fn a_missing_text_cell_is_an_error_unless_the_policy_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    let out = torchfit(d, &["train", "t.yaml", "--out", "run"]);
    assert_fails_with(
        &out,
        &["t.csv: row 10 (line 11), column `colour`: missing value; set data.missing to drop_row or mean"],
    );
    let out = torchfit(
        d,
        &[
            "train",
            "t.yaml",
            "--quiet",
            "--out",
            "dropped",
            "--set",
            "data.missing=drop_row",
            "--set",
            "training.epochs=1",
        ],
    );
    assert_ok(&out);
    assert_eq!(json(&d.join("dropped/split.json"))["rows"], 270, "the 30 rows without a colour are dropped");
    assert!(json(&d.join("dropped/preprocessing.json"))["categorical"][0]["missing"].is_null());
}
