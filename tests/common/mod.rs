//! Helpers shared by the end-to-end tests: run the real binary in a directory, read what it
//! wrote; launch it under srun or torchrun (launch.rs).
#![allow(dead_code)]

mod launch;
#[allow(unused_imports)]
pub use launch::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod server;

pub const BIN: &str = env!("CARGO_BIN_EXE_torchfit");

pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs torchfit in `dir`, without LD_LIBRARY_PATH: the binary must find libtorch itself.
pub fn torchfit(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("the torchfit binary runs")
}

/// `python3` with the torch package this build links on PYTHONPATH (which must hold it).
pub fn python_with_torch() -> Command {
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("torch/__init__.py").is_file(),
        "no torch Python package at {python_path}: build with the pip-installed libtorch (make test) to run this test"
    );
    let mut python = Command::new("python3");
    python.env("PYTHONPATH", python_path);
    python
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_ok(out: &Output) {
    assert!(out.status.success(), "status {:?}\nstdout: {}\nstderr: {}", out.status, stdout(out), stderr(out));
}

/// Asserts a failure the way users see it: status 2 and one line `torchfit: ...` holding
/// every one of `words`.
pub fn assert_fails_with(out: &Output, words: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("torchfit: "), "{err}");
    for word in words {
        assert!(err.contains(word), "expected {word:?} in {err}");
    }
}

/// A CSV file's header and numeric rows.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(|c| c.parse().unwrap()).collect()).collect();
    (header, rows)
}

/// metrics.csv's rows without the wall-time `seconds` column, which no seed fixes.
pub fn metrics_without_seconds(run: &Path) -> Vec<Vec<f64>> {
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let seconds = header.iter().position(|h| h == "seconds").expect("metrics.csv has a seconds column");
    rows.into_iter()
        .map(|mut r| {
            r.remove(seconds);
            r
        })
        .collect()
}

/// Writes `dir/t.csv`: `rows` rows of `x0`, `x1` numbers and `colour` text, and a label `y`
/// that follows colour and x0 together.
fn colour_table(dir: &Path, rows: usize) {
    let mut csv = String::from("x0,colour,x1,y\n");
    for i in 0..rows {
        let colour = ["red", "green", "blue"][i % 3];
        let x0 = ((i * 37) % 101) as f64 / 10.0;
        let x1 = ((i * 53) % 89) as f64;
        let y = if (colour == "red") ^ (x0 > 5.0) { "yes" } else { "no" };
        csv += &format!("{x0},{colour},{x1},{y}\n");
    }
    std::fs::write(dir.join("t.csv"), csv).unwrap();
}

/// `colour_table(dir, rows)` and `dir/t.yaml`, a classifier of it: seed 4, a fifth of the rows
/// for validation, no test part, one thread, `model` and `training`'s other keys as given
/// (YAML flow mappings' insides, e.g. `"epochs: 3, batch_size: 32"`).
pub fn colour_classifier(dir: &Path, rows: usize, model: &str, training: &str) {
    colour_table(dir, rows);
    let config = format!(
        "seed: 4\ntask: classification\ndata: {{kind: csv, path: t.csv, target: y, validation_split: 0.2, \
         test_split: 0}}\nmodel: {{{model}}}\ntraining: {{loss: cross_entropy, metrics: [accuracy], threads: 1, \
         {training}}}\n"
    );
    std::fs::write(dir.join("t.yaml"), config).unwrap();
}

/// Whether CONFIG (with `sets`) trained for `epochs` epochs in one go and for `epochs / 2`
/// then resumed (`--resume`) to `epochs` ends with byte-identical weights.safetensors.
pub fn resumes_to_the_uninterrupted_weights(dir: &Path, config: &str, sets: &[&str], epochs: usize) -> bool {
    let (whole, half) = (format!("training.epochs={epochs}"), format!("training.epochs={}", epochs / 2));
    assert_ok(&train_config(dir, config, "whole", &[sets, &[whole.as_str()]].concat()));
    assert_ok(&train_config(dir, config, "halves", &[sets, &[half.as_str()]].concat()));
    assert_ok(&torchfit(dir, &["train", "--resume", "halves", "--set", &whole, "--quiet"]));
    let read = |run: &str| std::fs::read(dir.join(run).join("weights.safetensors")).unwrap();
    read("whole") == read("halves")
}

/// Trains CONFIG with each case's `--set`s: each must fail with a one-line error holding its
/// words (`assert_fails_with`), before any epoch.
pub fn assert_each_fails_with(dir: &Path, config: &str, cases: &[(&[&str], &str)]) {
    for (i, (sets, words)) in cases.iter().enumerate() {
        let run = format!("run{i}");
        let out = train_config(dir, config, &run, sets);
        assert_fails_with(&out, &[words]);
        assert!(!dir.join(&run).join("metrics.csv").exists(), "{sets:?}: no epoch trained");
    }
}

/// `assert_each_fails_with`, each error naming the key of the case's last `--set`.
pub fn assert_each_fails_naming_its_key(dir: &Path, config: &str, cases: &[&[&str]]) {
    let named: Vec<(&[&str], &str)> =
        cases.iter().map(|sets| (*sets, sets.last().and_then(|set| set.split('=').next()).expect("a key"))).collect();
    assert_each_fails_with(dir, config, &named);
}

/// A check script in tests/python that holds torchfit to a reference package, run with the
/// torch this build links. `prepare CASE DIR` writes a case; the script exits `SKIP` when the
/// reference package cannot be installed.
pub struct PythonCheck(pub &'static str);

impl PythonCheck {
    pub const SKIP: i32 = 77;

    /// `python3 tests/python/SCRIPT ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        python_with_torch()
            .arg(repo_file(&format!("tests/python/{}", self.0)))
            .args(args)
            .output()
            .expect("python3 runs")
    }

    /// Fails unless `out` (of the script's `what`) exited 0.
    pub fn assert_ok(&self, out: &Output, what: &str) {
        assert!(out.status.success(), "{} {what} failed:\n{}\n{}", self.0, stdout(out), stderr(out));
    }

    /// `prepare CASE` in a new folder; None, the reason printed, when the reference package is
    /// unavailable.
    pub fn prepare(&self, case: &str) -> Option<tempfile::TempDir> {
        let dir = tempfile::tempdir().unwrap();
        let out = self.run(&["prepare", case, dir.path().to_str().unwrap()]);
        if out.status.code() == Some(Self::SKIP) {
            println!("{}", stdout(&out).trim());
            return None;
        }
        self.assert_ok(&out, &format!("prepare {case}"));
        Some(dir)
    }
}

/// `torchfit train CONFIG --device cpu --quiet --out OUT`, with `--set` each of `sets`, in `dir`.
pub fn train_config(dir: &Path, config: &str, out: &str, sets: &[&str]) -> Output {
    let mut args = vec!["train", config, "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", *s]);
    }
    torchfit(dir, &args)
}

/// The tensors of a run's weights.safetensors, by name, with their shapes, sorted by name.
pub fn weight_shapes(run: &Path) -> Vec<(String, Vec<i64>)> {
    let mut w: Vec<(String, Vec<i64>)> = tch::Tensor::read_safetensors(run.join("weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(name, t)| (name, t.size()))
        .collect();
    w.sort();
    w
}

pub fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap()
}

/// Words that decide a review's label, and words that do not.
const GOOD: &[&str] = &["great", "excellent", "délicieux", "love", "perfect", "tasty", "😍", "wonderful"];
const BAD: &[&str] = &["awful", "stale", "broken", "bland", "terrible", "disgusting", "👎", "poor"];
const FILLER: &[&str] = &[
    "the",
    "coffee",
    "tea",
    "box",
    "arrived",
    "and",
    "it",
    "was",
    "very",
    "price",
    "café",
    "東京",
    "snack",
    "with",
    "a",
    "taste",
    "!",
    "?!",
    "...",
    "order",
    "Ünïcode",
    "shipping",
    "👍🏽",
];

/// `reviews.csv` and `reviews.yaml` (an MLP with the bag encoder, 8 epochs): `text` (a review, some empty), `stars` (noise) and `label` (great/other, by
/// the review's words), `rows` rows from a fixed generator.
pub fn review_classifier(dir: &Path, rows: usize) {
    let mut state = 12345u64;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % n as u64) as usize
    };
    let mut csv = String::from("text,stars,label\n");
    for i in 0..rows {
        let good = next(2) == 0;
        let mut words: Vec<&str> = (0..3 + next(12)).map(|_| FILLER[next(FILLER.len())]).collect();
        for _ in 0..1 + next(2) {
            let side = if good { GOOD } else { BAD };
            words.insert(next(words.len() + 1), side[next(side.len())]);
        }
        let text = if i % 50 == 7 { String::new() } else { words.join(" ") };
        csv += &format!("\"{text}\",{},{}\n", next(5) + 1, if good { "great" } else { "other" });
    }
    std::fs::write(dir.join("reviews.csv"), csv).unwrap();
    let config = "name: reviews\nseed: 3\ndata:\n  kind: csv\n  path: reviews.csv\n  target: label\n  text: [text]\n  \
                  validation_split: 0.2\n  tokenizer: {vocab_size: 300, max_length: 24}\nmodel:\n  hidden: [16]\n  \
                  text: {encoder: bag, d_embedding: 8}\ntraining:\n  epochs: 8\n  batch_size: 32\n  \
                  optimizer: {kind: adam, lr: 0.02}\n";
    std::fs::write(dir.join("reviews.yaml"), config).unwrap();
}
