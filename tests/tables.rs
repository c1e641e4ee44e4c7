//! Tables as users bring them, end to end: text columns found by themselves or named,
//! booleans as 1/0, rare and unseen levels, missing cells as a level, one-hot and embedded
//! columns, standardisation by default for file data, and `evaluate`/`predict`/`serve` on raw
//! rows: missing numeric cells filled under `data.missing: mean`, tables of text columns only.

use std::path::Path;

mod common;
use common::server::Server;
use common::*;
use serde_json::json;

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

/// `data.missing: mean` promises a fill for every numeric column, also one with no missing
/// cell in training (`size` here): predict answers for a row missing it as for the training
/// mean, and evaluate takes it, never NaN. Under drop_row, a missing cell at prediction is an
/// error naming the file, row and column.
#[test]
fn mean_fills_a_numeric_column_that_training_found_full() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    table(d);
    assert_ok(&train(d, "run", &[]));
    let pre = json(&d.join("run/preprocessing.json"));
    let (fill, mean) =
        (pre["input_fill"][1].as_f64().expect("a fill for size"), pre["input_mean"][1].as_f64().unwrap());
    assert!((fill - mean).abs() <= 1e-3 * mean, "the fill is the training mean: {pre}");
    std::fs::write(d.join("new.csv"), format!("size,colour,member\n,red,yes\n{fill},red,yes\n1200,,\n")).unwrap();
    let out = torchfit(d, &["predict", "run", "new.csv", "--proba"]);
    assert_ok(&out);
    let predicted = out.clone();
    let rows: Vec<Vec<String>> =
        stdout(&out).lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    let p = |r: &Vec<String>| -> Vec<f64> { r[1..].iter().map(|v| v.parse().unwrap()).collect() };
    assert!(rows.iter().flat_map(p).all(f64::is_finite), "{}", stdout(&out));
    assert_eq!(rows[0][0], rows[1][0], "{}", stdout(&out));
    assert!(p(&rows[0]).iter().zip(p(&rows[1])).all(|(a, b)| (a - b).abs() < 1e-6), "{}", stdout(&out));
    std::fs::write(d.join("eval.csv"), "size,colour,member,y\n,red,yes,a\n1200,blue,no,b\n").unwrap();
    let out = torchfit(d, &["evaluate", "run", "--data", "eval.csv"]);
    assert_ok(&out);
    assert!(!stdout(&out).to_lowercase().contains("nan"), "{}", stdout(&out));
    // The server too: `null` and an empty cell are missing, answered as predict answers.
    let server = Server::start(d, Path::new("run"), &["--quiet"]);
    let body = json!({"rows": [{"size": null, "colour": "red", "member": "yes"}, {"size": "", "colour": "red", "member": "yes"}]});
    let (status, got) = server.json("POST", "/predict", &body.to_string());
    assert_eq!(status, 200, "{got}");
    for i in 0..2 {
        assert_eq!(got["labels"][i], rows[0][0].as_str(), "{got}");
        let served: Vec<f64> =
            got["probabilities"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(served.iter().zip(p(&rows[0])).all(|(a, b)| (a - b).abs() < 1e-5), "{got}");
    }
    assert_eq!(server.terminate().code(), Some(0));

    // A run from a torchfit that wrote no fill for a column training found full: evaluate
    // and export fill with its standardisation mean, the training mean, as this run does.
    let copied = std::process::Command::new("cp").args(["-r", "run", "old"]).current_dir(d).status().unwrap();
    assert!(copied.success());
    let mut old = pre.clone();
    old["input_fill"] = serde_json::Value::Null;
    std::fs::write(d.join("old/preprocessing.json"), old.to_string()).unwrap();
    std::fs::remove_file(d.join("old/manifest.json")).unwrap();
    let evaluated = |run: &str| stdout(&torchfit(d, &["evaluate", run, "--data", "eval.csv"]));
    assert_eq!(evaluated("old"), evaluated("run"));
    assert_ok(&torchfit(d, &["export", "old", "--output", "old.pt"]));
    assert_eq!(stdout(&torchfit(d, &["predict", "old.pt", "new.csv", "--proba"])), stdout(&predicted));

    assert_ok(&train(d, "dropped", &["data.missing=drop_row"]));
    let out = torchfit(d, &["predict", "dropped", "new.csv"]);
    assert_fails_with(&out, &["new.csv: row 1 column `size` is missing", "data.missing: mean"]);
    let server = Server::start(d, Path::new("dropped"), &["--quiet"]);
    let (status, got) = server.json("POST", "/predict", &body.to_string());
    assert_eq!(status, 400, "{got}");
    assert!(got.to_string().contains("row 1 column `size` is missing"), "{got}");
    assert_eq!(server.terminate().code(), Some(0));
}

/// A table whose features are all text columns: no numeric feature at all, and predict,
/// evaluate and training agree on it.
#[test]
fn a_table_of_text_columns_only_trains_evaluates_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("colour,shape,y\n");
    for i in 0..200 {
        let colour = ["red", "blue", "green", ""][i % 4];
        let shape = ["square", "round", "flat"][i % 3];
        let y = if colour == "red" || (shape == "flat" && i % 2 == 0) { "a" } else { "b" };
        csv += &format!("{colour},{shape},{y}\n");
    }
    std::fs::write(d.join("t.csv"), &csv).unwrap();
    std::fs::write(d.join("t.yaml"), "data: {kind: csv, path: t.csv, target: y}\nmodel: {hidden: [16]}\n").unwrap();
    let out = train(d, "run", &[]);
    assert_ok(&out);
    assert!(!stderr(&out).contains("Warning"), "no warning about the std of no column: {}", stderr(&out));
    assert_eq!(json(&d.join("run/preprocessing.json"))["feature_names"], serde_json::json!([]));

    let out = torchfit(d, &["evaluate", "run", "--data", "t.csv"]);
    assert_ok(&out);
    let accuracy = |text: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with("accuracy ")).unwrap_or_else(|| panic!("{text}"));
        line["accuracy ".len()..].trim().parse().unwrap()
    };
    let evaluated = accuracy(&stdout(&out));
    let out = torchfit(d, &["predict", "run", "t.csv", "--proba"]);
    assert_ok(&out);
    let predicted: Vec<String> =
        stdout(&out).lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    let truth: Vec<&str> = csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(predicted.len(), truth.len());
    let right = predicted.iter().zip(&truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64;
    assert!((right - evaluated).abs() < 1e-6, "predict's accuracy {right} is evaluate's {evaluated}");
    assert!(evaluated >= 0.7, "colour decides most labels: {evaluated}");
    // The server answers as predict does.
    let server = Server::start(d, Path::new("run"), &["--quiet", "--name", "t"]);
    let body = json!({"rows": [{"colour": "red", "shape": "flat"}, {"colour": "blue", "shape": "round"}]});
    let (status, got) = server.json("POST", "/predict", &body.to_string());
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["labels"], json!([predicted[0], predicted[1]]), "rows 1 and 2 of t.csv: {got}");
    // V2 takes the text columns alone: no numeric `input`.
    let (_, meta) = server.json("GET", "/v2/models/t", "");
    let inputs: Vec<&str> = meta["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["colour", "shape"], "{meta}");
    let body = json!({"inputs": [
        {"name": "shape", "datatype": "BYTES", "shape": [2], "data": ["flat", "round"]},
        {"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["red", "blue"]},
    ]});
    let (status, got) = server.json("POST", "/v2/models/t/infer", &body.to_string());
    assert_eq!(status, 200, "{got}");
    let labels = got["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "labels").unwrap();
    assert_eq!(labels["data"], json!([predicted[0], predicted[1]]), "{got}");
    assert_eq!(server.terminate().code(), Some(0));
}
