//! `torchfit sweep` over `model.kind`: each trial keeps only the parameters its kind reads
//! (an empty cell in results.csv, `-` in the status table), grid trials that become the same
//! run once, the base's keys of another kind leave a trial of that kind, whole `model`
//! sections are choices, and a parameter no trial's kind reads is refused on one line.

use std::path::Path;

mod common;
use common::*;

/// A tiny friedman1 base of kind mlp, with MLP keys (`hidden`, `activation`) that a resnet
/// trial must lose. One thread: a kind other than the MLP takes its worker's share of the
/// cores, which would make a table depend on `--jobs`.
const BASE: &str = "name: tiny
seed: 1
device: cpu
data: {kind: friedman1, samples: 200, features: 5, noise: 0.5, validation_split: 0.25, standardize: true, standardize_target: true}
model: {hidden: [8], activation: tanh}
training:
  epochs: 3
  batch_size: 32
  threads: 1
  loss: mse
  optimizer: {kind: adam, lr: 0.003}
";

fn setup(sweep: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("base.yaml"), BASE).unwrap();
    std::fs::write(d.path().join("sweep.yaml"), sweep).unwrap();
    d
}

fn sweep(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "sweep.yaml", "--out", out];
    args.extend(extra);
    torchfit(dir, &args)
}

/// results.csv without the wall-time columns.
fn table(sweep_dir: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(sweep_dir.join("results.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !header[i].ends_with("seconds")).collect();
    let mut rows = vec![keep.iter().map(|&i| header[i].clone()).collect()];
    for record in reader.records() {
        let record = record.unwrap();
        rows.push(keep.iter().map(|&i| record[i].to_string()).collect());
    }
    rows
}

fn config(run: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(run.join("config.yaml")).unwrap()).unwrap()
}

const KINDS: &str = "base: base.yaml
method: grid
parameters:
  model.kind: {values: [mlp, resnet]}
  model.d_block: {values: [8, 16]}
  model.hidden: {values: [[8], [16, 16]]}
  training.optimizer.lr: {values: [0.003]}
";

#[test]
fn a_grid_over_kinds_and_their_knobs_runs_each_distinct_trial_once() {
    let d = setup(KINDS);
    let run = sweep(d.path(), "s", &["--jobs", "2"]);
    assert_ok(&run);
    let s = d.path().join("s");
    let rows = table(&s);
    // 2 x 2 x 2 combinations; an MLP trial ignores d_block, a ResNet trial hidden: 4 trials.
    let header = ["trial", "model.kind", "model.d_block", "model.hidden", "training.optimizer.lr", "status", "epochs"];
    assert_eq!(rows[0][..7], header);
    let cells: Vec<&[String]> = rows[1..].iter().map(|r| &r[..7]).collect();
    assert_eq!(
        cells,
        [
            ["0000", "mlp", "", "[8]", "0.003", "finished", "3"],
            ["0001", "mlp", "", "[16, 16]", "0.003", "finished", "3"],
            ["0002", "resnet", "8", "", "0.003", "finished", "3"],
            ["0003", "resnet", "16", "", "0.003", "finished", "3"],
        ]
    );
    assert!(!s.join("trials/0004").exists());
    // A ResNet trial has the ResNet's keys, and the base's MLP keys are gone from it.
    let resnet = config(&s.join("trials/0003"));
    assert_eq!(resnet["model"]["kind"], "resnet");
    assert_eq!(resnet["model"]["d_block"], 16);
    assert!(resnet["model"]["activation"] != "tanh", "{resnet:?}");
    let mlp = config(&s.join("trials/0001"));
    assert_eq!(mlp["model"]["hidden"], serde_yaml::from_str::<serde_yaml::Value>("[16, 16]").unwrap());
    assert_eq!(mlp["model"]["activation"], "tanh");
    assert!(mlp["model"].get("d_block").is_none(), "{mlp:?}");
    // Each trial's config trains as it is, and so does best.yaml, of the best trial's kind.
    for trial in ["0000", "0003"] {
        let path = format!("s/trials/{trial}/config.yaml");
        assert_ok(&torchfit(d.path(), &["train", &path, "--quiet", "--out", &format!("again{trial}")]));
    }
    let best = std::fs::read_to_string(s.join("best.yaml")).unwrap();
    let best_trial = best.split(": trial ").nth(1).unwrap()[..4].to_string();
    let best_kind = config(&s.join("trials").join(&best_trial))["model"]["kind"].clone();
    let best_config: serde_yaml::Value = serde_yaml::from_str(&best).unwrap();
    assert_eq!(best_config["model"]["kind"], best_kind);
    assert_ok(&torchfit(d.path(), &["train", "s/best.yaml", "--quiet", "--out", "best"]));
    // The status table shows `-` where a trial's kind does not read the parameter; running
    // the sweep again continues it: nothing left, the same table.
    let status = stdout(&torchfit(d.path(), &["sweep", "status", "s"]));
    let line = status.lines().find(|l| l.starts_with("0002")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..5], ["0002", "resnet", "8", "-", "0.003"], "{status}");
    let again = sweep(d.path(), "s", &["--jobs", "2"]);
    assert_ok(&again);
    assert!(stdout(&again).starts_with("continuing sweep s"), "{}", stdout(&again));
    assert_eq!(table(&s), rows);
}

#[test]
fn whole_model_sections_are_choices() {
    let text = "base: base.yaml
method: grid
parameters:
  model: {values: [{kind: mlp, hidden: [8]}, {kind: resnet, d_block: 8, n_blocks: 1}]}
  training.optimizer.lr: {values: [0.001, 0.01]}
";
    let d = setup(text);
    assert_ok(&sweep(d.path(), "s", &["--jobs", "2"]));
    let rows = table(&d.path().join("s"));
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[3][..4], ["0002", "{kind: resnet, d_block: 8, n_blocks: 1}", "0.001", "finished"]);
    let resnet = config(&d.path().join("s/trials/0003"));
    assert_eq!((&resnet["model"]["kind"], &resnet["model"]["n_blocks"]), (&"resnet".into(), &1.into()));
    assert_ok(&torchfit(d.path(), &["train", "s/best.yaml", "--quiet", "--out", "best"]));
}

#[test]
fn random_and_asha_sweeps_over_kinds_leave_out_what_a_kind_does_not_read() {
    let text = "base: base.yaml
method: random
trials: 6
seed: 3
parameters:
  model.kind: {values: [mlp, resnet]}
  model.dropout1: {distribution: uniform, min: 0.0, max: 0.3}
  model.dropout: {values: [0.0, 0.1]}
  training.optimizer.lr: {distribution: log_uniform, min: 0.001, max: 0.01}
early_termination: {kind: asha, min_epochs: 1, reduction_factor: 2}
";
    let d = setup(text);
    for (out, jobs) in [("a", "1"), ("b", "2")] {
        assert_ok(&sweep(d.path(), out, &["--jobs", jobs]));
    }
    let rows = table(&d.path().join("a"));
    // ASHA decides the same with any number of workers.
    assert_eq!(rows, table(&d.path().join("b")));
    assert_eq!(rows.len(), 7);
    let kinds: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert!(kinds.contains(&"mlp") && kinds.contains(&"resnet"), "{rows:?}");
    for row in &rows[1..] {
        // dropout1 is the ResNet's, dropout the MLP's: each row has exactly one of them.
        assert_eq!(row[2].is_empty(), row[1] == "mlp", "{row:?}");
        assert_eq!(row[3].is_empty(), row[1] == "resnet", "{row:?}");
        assert!(["finished", "pruned"].contains(&row[5].as_str()), "{row:?}");
    }
}

#[test]
fn a_parameter_that_no_trials_kind_reads_is_refused_naming_it() {
    let cases: &[(&str, &[&str])] = &[
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.d_block: {values: [8, 16]}}\n",
            &["sweep.yaml: parameters.model.d_block", "applies to model.kind resnet", "of kind mlp"],
        ),
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.kind: {values: [resnet]}, model.hidden: {values: [[4]]}}\n",
            &["parameters.model.hidden", "applies to model.kind mlp", "of kind resnet"],
        ),
        // A value is checked under a kind that reads its key.
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.kind: {values: [mlp, resnet]}, model.d_block: {values: [8, 0]}}\n",
            &["parameters.model.d_block: value 0", "model.d_block must be between 1"],
        ),
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.kind: {values: [mlp, resnett]}}\n",
            &["parameters.model.kind: value resnett", "did you mean `resnet`"],
        ),
    ];
    for (text, words) in cases {
        let d = setup(text);
        assert_fails_with(&sweep(d.path(), "s", &[]), words);
        assert!(!d.path().join("s").exists(), "{text}: a sweep directory was made");
    }
}
