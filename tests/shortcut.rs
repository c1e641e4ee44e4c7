//! `torchfit train FILE --target COLUMN`: a table without a config, trained with the
//! recommended default (configs/table.yaml), the task read from the target column.

use std::path::Path;

mod common;
use common::*;

fn config_yaml(dir: &Path, args: &[&str]) -> (serde_yaml::Value, String) {
    let mut all = vec!["config"];
    all.extend(args);
    let out = torchfit(dir, &all);
    assert_ok(&out);
    (serde_yaml::from_str(&stdout(&out)).unwrap(), stderr(&out))
}

fn key<'a>(v: &'a serde_yaml::Value, path: &str) -> &'a serde_yaml::Value {
    path.split('.').fold(v, |v, k| &v[k])
}

#[test]
fn the_task_follows_the_target_column_and_the_rest_is_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let titanic = repo_file("data/titanic.csv");
    let titanic = titanic.to_str().unwrap();
    // 0/1 survival: two whole numbers are classes.
    let (config, note) = config_yaml(dir.path(), &[titanic, "--target", "survived"]);
    assert_eq!(key(&config, "task").as_str(), Some("classification"), "{config:?}");
    assert_eq!(key(&config, "training.loss").as_str(), Some("cross_entropy"));
    assert_eq!(key(&config, "data.path").as_str(), Some(titanic));
    assert_eq!(key(&config, "name").as_str(), Some("titanic"));
    assert!(note.contains("classification of `survived` (2 distinct whole numbers"), "{note}");
    // The template's own keys come through, and --set still wins over them.
    let (template, _) = config_yaml(dir.path(), &[repo_file("configs/table.yaml").to_str().unwrap()]);
    for part in ["model", "training.optimizer", "training.early_stopping", "data.missing"] {
        assert_eq!(key(&config, part), key(&template, part), "{part}");
    }
    let (config, _) = config_yaml(dir.path(), &[titanic, "--target", "survived", "--set", "training.batch_size=7"]);
    assert_eq!(key(&config, "training.batch_size").as_u64(), Some(7));
    // --task overrides what the column suggests.
    let (config, note) = config_yaml(dir.path(), &[titanic, "--target", "survived", "--task", "regression"]);
    assert_eq!(key(&config, "task").as_str(), Some("regression"));
    assert_eq!(key(&config, "training.loss").as_str(), Some("mse"));
    assert!(note.contains("as --task says"), "{note}");
    // A price is a number to predict, standardised.
    let diamonds = repo_file("data/diamonds.csv");
    let (config, _) = config_yaml(dir.path(), &[diamonds.to_str().unwrap(), "--target", "price"]);
    assert_eq!(key(&config, "task").as_str(), Some("regression"));
    assert_eq!(key(&config, "data.standardize_target").as_bool(), Some(true));
    // Text labels, in a tab-separated file.
    let mut tsv = String::from("colour\tsize\tkind\n");
    for i in 0..60 {
        tsv += &format!("{}\t{}\t{}\n", ["red", "blue"][i % 2], i, ["small", "large", "odd"][i % 3]);
    }
    std::fs::write(dir.path().join("shapes.tsv"), tsv).unwrap();
    let (config, note) = config_yaml(dir.path(), &["shapes.tsv", "--target", "kind"]);
    assert_eq!(key(&config, "task").as_str(), Some("classification"));
    assert_eq!(key(&config, "data.delimiter").as_str(), Some("\t"));
    assert!(note.contains("3 distinct text values"), "{note}");
}

#[test]
fn a_table_trains_predicts_and_scores_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let titanic = repo_file("data/titanic.csv");
    let out = torchfit(
        dir.path(),
        &["train", titanic.to_str().unwrap(), "--target", "survived", "--out", "run", "--set", "training.epochs=4"],
    );
    assert_ok(&out);
    let summary = summary(&dir.path().join("run"));
    let accuracy = summary["test_metrics"]["accuracy"].as_f64().expect("a test accuracy");
    assert!((0.0..=1.0).contains(&accuracy), "{summary}");
    let out = torchfit(dir.path(), &["predict", "run", titanic.to_str().unwrap(), "--proba"]);
    assert_ok(&out);
    let header = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert_eq!(header, "label,p_0,p_1");
    assert_eq!(stdout(&out).lines().count(), 892);
}

#[test]
fn shortcut_mistakes_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let titanic = repo_file("data/titanic.csv");
    let titanic = titanic.to_str().unwrap();
    let out = torchfit(dir.path(), &["train", titanic]);
    assert_fails_with(&out, &["is a table, not a config", "--target COLUMN"]);
    let out = torchfit(dir.path(), &["train", titanic, "--target", "survivd"]);
    assert_fails_with(&out, &["--target: no column `survivd`", "survived"]);
    let out = torchfit(dir.path(), &["train", repo_file("configs/titanic.yaml").to_str().unwrap(), "--target", "x"]);
    assert_fails_with(&out, &["--target applies to a table file"]);
    let out = torchfit(dir.path(), &["train", "missing.csv", "--target", "y"]);
    assert_fails_with(&out, &["missing.csv", "no such file"]);
    std::fs::write(dir.path().join("empty.csv"), "a,y\n1,\n2,\n").unwrap();
    let out = torchfit(dir.path(), &["train", "empty.csv", "--target", "y"]);
    assert_fails_with(&out, &["column `y` of empty.csv has no values"]);
    let out = torchfit(dir.path(), &["train", titanic, "--target", "survived", "--set", "training.epoch=3"]);
    assert_fails_with(&out, &["training.epoch", "did you mean `training.epochs`?"]);
}
