//! The summary a run prints when it starts and keeps in model_summary.txt, as Keras's
//! `model.summary()`: layers with output shapes and parameters, the data, the device, and
//! where a resumed run continues. User modules' rows are held to PyTorch's forward hooks in
//! tests/python/user_modules.py (`check_summary`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The table's rows after its header: (layer, output shape, params), split at runs of two
/// spaces or more as the table lays them out.
fn rows(text: &str) -> Vec<[String; 3]> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_start().starts_with("Layer (type)")).expect("a table") + 1;
    lines[start..]
        .iter()
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let cells: Vec<String> =
                l.trim().split("  ").map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect();
            [cells[0].clone(), cells[1].clone(), cells[2].clone()]
        })
        .collect()
}

fn row(layer: &str, shape: &str, params: &str) -> [String; 3] {
    [layer.to_string(), shape.to_string(), params.to_string()]
}

#[test]
fn the_keras_example_prints_the_rows_keras_prints_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = torchfit(d, &["train", "--set", "training.epochs=1", "--device", "cpu", "--out", "run"]);
    assert_ok(&out);
    // Keras's summary of Dense(10, relu) -> Dense(1) on 10 features: 110 and 11 parameters.
    let want = vec![
        row("0 (Linear)", "(None, 10)", "110"),
        row("1 (ReLU)", "(None, 10)", "0"),
        row("2 (Linear)", "(None, 1)", "11"),
    ];
    let kept = std::fs::read_to_string(d.join("run/model_summary.txt")).unwrap();
    assert_eq!(rows(&kept), want, "{kept}");
    assert!(stderr(&out).starts_with(&kept), "printed as kept:\n{}", stderr(&out));
    assert!(kept.contains("Parameters: 121 (121 trainable, 0 frozen)\n"), "{kept}");
    assert!(kept.contains("Data: 1000 training rows, 0 validation, 0 test; 10 features: 10 numeric\n"), "{kept}");
    assert!(kept.contains("Training: 1 epoch of batch 32 on cpu, 1 process, fp32, 1 thread\n"), "{kept}");
    let quiet = torchfit(d, &["train", "--set", "training.epochs=1", "--quiet", "--out", "quiet"]);
    assert_ok(&quiet);
    assert_eq!(stderr(&quiet), "");
    assert!(d.join("quiet/model_summary.txt").is_file());
}

#[test]
fn categorical_and_frozen_parameters_have_their_rows_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    colour_classifier(d, 200, "hidden: [8], freeze: ['0.*']", "epochs: 1, batch_size: 32");
    let out = torchfit(d, &["train", "t.yaml", "--out", "run", "--set", "data.categorical_encoding=embedding"]);
    assert_ok(&out);
    let kept = std::fs::read_to_string(d.join("run/model_summary.txt")).unwrap();
    let table = rows(&kept);
    let first = table.iter().find(|r| r[0] == "0 (Linear)").unwrap_or_else(|| panic!("{kept}"));
    assert!(first[2].ends_with(" frozen)"), "model.freeze 0.* freezes the first layer: {kept}");
    let table_row = table.iter().find(|r| r[0] == "embeddings.0 (Embedding)").unwrap_or_else(|| panic!("{kept}"));
    assert!(table_row[1].starts_with("(None, ") && !table_row[2].contains("frozen"), "{kept}");
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run/split.json")).unwrap()).unwrap();
    let validation = split["validation"].as_array().map_or(0, Vec::len);
    assert!(kept.contains(&format!("{} training rows, {validation} validation, 0 test", 200 - validation)), "{kept}");
    assert!(kept.contains("3 features: 2 numeric, 1 categorical"), "{kept}");
}

#[test]
fn a_text_model_lists_its_text_columns_and_generated_layers_have_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 120);
    assert_ok(&torchfit(d, &["train", "reviews.yaml", "--quiet", "--out", "run", "--set", "training.epochs=1"]));
    let kept = std::fs::read_to_string(d.join("run/model_summary.txt")).unwrap();
    assert!(kept.contains("2 features: 1 numeric, 1 text (24 tokens each)"), "{kept}");
    // A generated module: its Linear layers (numbered apart inside, `Linear0`, `Linear2`)
    // with their widths, and the text encoders' tables.
    let table = rows(&kept);
    assert_eq!(table[0], row("0 (Linear)", "(None, 16)", &(16 * (1 + 8 + 1)).to_string()), "{kept}");
    assert_eq!(table[1], row("2 (Linear)", "(None, 2)", &(2 * (16 + 1)).to_string()), "{kept}");
    assert!(table[2][0] == "text (TextEncoders)", "{kept}");
}

#[test]
fn a_resumed_run_says_where_it_continues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "--set", "training.epochs=2", "--quiet", "--out", "run"]));
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=3"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("Resuming after epoch 2 of 3, at epoch 3\n"), "{}", stderr(&out));
    let kept = std::fs::read_to_string(d.join("run/model_summary.txt")).unwrap();
    assert!(kept.ends_with("Resuming after epoch 2 of 3, at epoch 3\n"), "{kept}");

    // Interrupted within an epoch: the resume names that epoch and the step the interruption
    // message named.
    let args = [
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        "mid",
        "--set",
        "data.samples=20000",
        "--set",
        "training.batch_size=8",
        "--set",
        "training.epochs=1000",
        "--set",
        "training.checkpoint_every=1",
    ];
    let mut child = Command::new(BIN).args(args).current_dir(d).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let rows = || std::fs::read_to_string(d.join("mid/metrics.csv")).map(|t| t.lines().count()).unwrap_or(0);
    while rows() < 2 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "epoch 1 never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(30));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    let at = err.split("interrupted by SIGINT in epoch ").nth(1).unwrap_or_else(|| panic!("{err}"));
    let (epoch, rest) = at.split_once(" after step ").unwrap();
    let step_of = rest.split(';').next().unwrap();
    let resumed = resume_to(d, Path::new("mid"), epoch);
    let want = format!("Resuming in epoch {epoch} of {epoch}, after step {step_of}\n");
    assert!(resumed.contains(&want), "{want:?} in:\n{resumed}");
}

/// Resumes RUN to train through EPOCH; its standard error.
fn resume_to(dir: &Path, run: &Path, epoch: &str) -> String {
    let set = format!("training.epochs={epoch}");
    let out = torchfit(dir, &["train", "--resume", run.to_str().unwrap(), "--set", &set]);
    assert_ok(&out);
    stderr(&out)
}
