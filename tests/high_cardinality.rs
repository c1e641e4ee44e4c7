//! High-cardinality text columns through the real binary: with `data.categorical_encoding`
//! unset, a column of thousands of levels is embedded (width min(50, (levels + 1) / 2)) while a
//! small one stays one-hot, and `torchfit predict`'s peak memory does not grow with the
//! number of levels.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `rows` rows of a numeric `x`, a text column `word` of `levels` values (`w0`, `w1`, ...,
/// in turn, so each is seen rows / levels times), a 5-level `colour` and a regression
/// target `y` that all three move.
fn write_table(path: &Path, rows: usize, levels: usize) {
    let colours = ["red", "green", "blue", "black", "white"];
    let mut csv = String::from("x,word,colour,y\n");
    for i in 0..rows {
        let x = ((i * 37) % 101) as f64 / 50.0 - 1.0;
        let k = (i * 7919) % levels;
        let c = (i / 3) % colours.len();
        let y = 2.0 * x + (k % 7) as f64 * 0.3 + c as f64 * 0.5;
        csv += &format!("{x},w{k},{},{y:.4}\n", colours[c]);
    }
    std::fs::write(path, csv).unwrap();
}

/// Trains a regression on `name`.csv into run directory `name`.
fn train(dir: &Path, name: &str, rows: usize, levels: usize) {
    write_table(&dir.join(format!("{name}.csv")), rows, levels);
    let yaml = format!("data: {{kind: csv, path: {name}.csv, target: y}}\nmodel: {{hidden: [16]}}\n");
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
    let config = format!("{name}.yaml");
    let mut args = vec!["train", config.as_str(), "--device", "cpu", "--quiet", "--out", name];
    for s in ["data.validation_split=0.1", "data.test_split=0.1", "training.epochs=3"] {
        args.extend(["--set", s]);
    }
    assert_ok(&torchfit(dir, &args));
}

/// Runs `torchfit predict MODEL INPUT -o OUT` and returns the child's peak resident set in
/// KiB (ru_maxrss of wait4 on that child alone: this process's memory is not in it).
fn predict_peak_kib(dir: &Path, model: &str, input: &str, out: &str) -> i64 {
    let stderr_path = dir.join(format!("{out}.stderr"));
    let child = Command::new(BIN)
        .args(["predict", model, input, "-o", out])
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the torchfit binary runs");
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waits for our own child, writing into the two locals.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "predict failed ({status}): {stderr}");
    usage.ru_maxrss
}

#[test]
fn a_3000_level_column_is_embedded_and_a_5_level_one_one_hot_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 9,000 rows: each word three times, about 2.4 times in the training part.
    train(d, "run", 9000, 3000);
    let pre = json(&d.join("run/preprocessing.json"));
    let categorical = pre["categorical"].as_array().unwrap();
    let find = |name: &str| categorical.iter().position(|c| c["name"] == name).expect(name);
    let (word, colour) = (find("word"), find("colour"));
    let levels = categorical[word]["levels"].as_array().unwrap().len();
    // The words seen in training and (other): 3,000 levels at most, far over 50.
    assert!((2900..=3001).contains(&levels), "{levels}");
    assert_eq!(categorical[word]["embedding"], 50, "min(50, (levels + 1) / 2)");
    assert_eq!(categorical[colour]["levels"].as_array().unwrap().len(), 6, "5 colours and (other)");
    assert!(categorical[colour]["embedding"].is_null(), "a small column stays one-hot");

    // The embedding table is [levels, 50]; the first layer takes x, 6 one-hot columns and 50.
    let weights = tch::Tensor::read_safetensors(d.join("run/weights.safetensors")).unwrap();
    let table = weights.iter().find(|(n, _)| *n == format!("embeddings.{word}.weight")).expect("an embedding table");
    assert_eq!(table.1.size(), [levels as i64, 50]);
    let (_, first) = weights.iter().find(|(n, _)| n == "0.weight").expect("the first layer");
    assert_eq!(first.size(), [16, 1 + 6 + 50]);
    let s = summary(&d.join("run"));
    // y's standard deviation is about 1.5 and predicting its mean leaves an MAE about 1.2.
    assert!(s["test_metrics"]["mae"].as_f64().is_some_and(|mae| mae < 1.0), "{s}");

    // predict on 20,000 raw rows, unseen words among them.
    write_table(&d.join("new.csv"), 20_000, 4000);
    let out = torchfit(d, &["predict", "run/model.pt", "new.csv", "-o", "pred.csv"]);
    assert_ok(&out);
    let predictions = std::fs::read_to_string(d.join("pred.csv")).unwrap();
    assert_eq!(predictions.lines().count(), 20_001, "a header and a row per input row");
}

/// `predict` on 20,000 rows: a 5,000-level column against a 50-level one, the same rows
/// otherwise. One-hot encoded (today's default before embedding), the 5,000 levels built a
/// `[20000, 5001]` block (int64 then float, then concatenated: about 1.2 GB more); embedded,
/// its table is 5001 x 50 floats (1 MB) and the first layer's input is [20000, 57] either way.
#[test]
fn predict_memory_does_not_grow_with_the_number_of_levels() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "many", 15_000, 5000);
    train(d, "few", 15_000, 50);
    write_table(&d.join("many_new.csv"), 20_000, 5000);
    write_table(&d.join("few_new.csv"), 20_000, 50);
    let many = predict_peak_kib(d, "many/model.pt", "many_new.csv", "many.pred.csv");
    let few = predict_peak_kib(d, "few/model.pt", "few_new.csv", "few.pred.csv");
    eprintln!("predict peak RSS: 5,000 levels {} MiB, 50 levels {} MiB", many / 1024, few / 1024);
    // Measured on this machine: about the same (see docs/tables.md). 64 MiB covers the
    // larger preprocessing.json, level table and script of 5,000 levels with room to spare,
    // and is a twentieth of what one-hot encoding the column cost.
    assert!(many < few + 64 * 1024, "5,000 levels peaked at {many} KiB, 50 levels at {few} KiB");
}
