//! `data.kind: parquet` end to end: the repo's CSV data written as Parquet by pyarrow (the
//! pip install beside the libtorch this build links, see scripts/libtorch.sh) trains, predicts
//! and evaluates exactly as the CSV file does.

use std::path::Path;
use std::process::Command;

mod common;
use common::*;

/// Writes `csv` (a repo file) as `dir/<stem>.parquet` with pyarrow's own CSV reader, so the
/// Parquet file has the types another tool would give it: integers, doubles with nulls for
/// the empty cells, strings for the labels.
fn to_parquet(dir: &Path, csv: &str) -> String {
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    let stem = Path::new(csv).file_stem().unwrap().to_str().unwrap();
    let out = dir.join(format!("{stem}.parquet"));
    let script = "import sys, pyarrow.csv, pyarrow.parquet\n\
                  table = pyarrow.csv.read_csv(sys.argv[1])\n\
                  pyarrow.parquet.write_table(table, sys.argv[2])\n\
                  print(table.schema.to_string(show_schema_metadata=False).replace('\\n', '; '))";
    let run = Command::new("python3")
        .args(["-c", script, repo_file(csv).to_str().unwrap(), out.to_str().unwrap()])
        .env("PYTHONPATH", python_path)
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(
        run.status.success(),
        "pyarrow could not write {csv} as Parquet (scripts/libtorch.sh installs pyarrow beside torch at {python_path}):\n{stderr}"
    );
    eprintln!("{csv} as Parquet: {stdout}");
    out.display().to_string()
}

/// Trains `config` on `csv` and on its Parquet copy with the same seed, and checks that the
/// two runs, their predictions on either file and their evaluations agree exactly.
fn same_as_csv(config: &str, csv: &str, columns: &[&str], proba: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let parquet = to_parquet(d, csv);
    let csv = repo_file(csv).display().to_string();
    let config = repo_file(config).display().to_string();
    for (run, kind, path) in [("from-csv", "csv", &csv), ("from-parquet", "parquet", &parquet)] {
        let (kind, path) = (format!("data.kind={kind}"), format!("data.path={path}"));
        let args = ["train", &config, "--set", &kind, "--set", &path, "--set", "training.epochs=4"];
        assert_ok(&torchfit(d, &[&args[..], &["--device", "cpu", "--quiet", "--out", run]].concat()));
    }
    let (a, b) = (d.join("from-csv"), d.join("from-parquet"));
    let rows = metrics_without_seconds(&a);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows, metrics_without_seconds(&b));
    let weights = |run: &Path| std::fs::read(run.join("weights.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "weights.safetensors differ");
    for name in ["preprocessing.json", "split.json"] {
        let read = |run: &Path| std::fs::read_to_string(run.join(name)).unwrap();
        assert_eq!(read(&a), read(&b), "{name}");
    }

    let predict = |input: &str| {
        let model = a.join("model.pt");
        let mut args = vec!["predict", model.to_str().unwrap(), input];
        if proba {
            args.push("--proba");
        }
        let out = torchfit(d, &args);
        assert_ok(&out);
        assert_eq!(stderr(&out), "", "matched by name, without a warning");
        stdout(&out)
    };
    let from_parquet = predict(&parquet);
    assert_eq!(from_parquet.lines().count(), read_csv_rows(&csv) + 1, "a header and one line per row");
    assert_eq!(from_parquet, predict(&csv));

    let evaluate = |data: &str| {
        let out = torchfit(d, &["evaluate", b.to_str().unwrap(), "--data", data]);
        assert_ok(&out);
        stdout(&out)
    };
    let scores = evaluate(&parquet);
    assert!(columns.iter().all(|c| scores.contains(c)), "{scores}");
    assert_eq!(scores, evaluate(&csv));
}

/// The data rows of a CSV file.
fn read_csv_rows(path: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().skip(1).filter(|l| !l.is_empty()).count()
}

#[test]
fn housing_regression_with_missing_cells_trains_predicts_and_evaluates_as_from_csv() {
    same_as_csv("configs/housing.yaml", "data/housing.csv", &["loss", "mae", "rmse", "r2"], false);
}

#[test]
fn penguins_classification_from_a_string_label_column_matches_csv() {
    same_as_csv("configs/penguins.yaml", "data/penguins.csv", &["loss", "accuracy", "f1"], true);
}
