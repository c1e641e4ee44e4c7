//! `torchfit evaluate --format json|text`'s confusion matrix and per-class report, held to
//! scikit-learn's confusion_matrix and classification_report on `torchfit predict`'s labels
//! (tests/python/classification_report_check.py; skipped when scikit-learn cannot be
//! installed), and `torchfit predict --keep`, which copies input columns beside the
//! predictions, from CSV and Parquet files.

use std::path::Path;

mod common;
use common::*;

const PY: PythonCheck = PythonCheck("classification_report_check.py");

/// The classes, in the model's order (sorted), of different widths.
const CLASSES: [&str; 4] = ["east", "north", "south", "westerly"];

/// `rows` points (x0, x1) with noise, each labelled by the quadrant-ish sector it lies in,
/// so that a small model gets most but not all right; `from` offsets the generator.
fn points(rows: usize, from: u64) -> Vec<(f64, f64, &'static str)> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ from;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows)
        .map(|_| {
            let (x0, x1) = (next() * 2.0 - 1.0, next() * 2.0 - 1.0);
            let (a, b) = (x0 + 0.4 * (next() - 0.5), x1 + 0.4 * (next() - 0.5));
            let class = match (a > 0.0, b > 0.0) {
                (true, true) => "north",
                (true, false) => "east",
                (false, true) => "westerly",
                (false, false) => "south",
            };
            (x0, x1, class)
        })
        .collect()
}

/// `dir/t.csv` (400 points) and `dir/t.yaml`, a small classifier of it trained briefly, then
/// trained into `dir/run`.
fn train_classifier(dir: &Path) {
    let mut csv = "x0,x1,y\n".to_string();
    for (x0, x1, y) in points(400, 1) {
        csv += &format!("{x0:.4},{x1:.4},{y}\n");
    }
    std::fs::write(dir.join("t.csv"), csv).unwrap();
    let config = "seed: 3\ntask: classification\ndata: {kind: csv, path: t.csv, target: y, validation_split: 0.2, \
                  test_split: 0}\nmodel: {hidden: [8]}\ntraining: {epochs: 2, batch_size: 32, loss: cross_entropy, \
                  metrics: [accuracy, f1], threads: 1}\n";
    std::fs::write(dir.join("t.yaml"), config).unwrap();
    assert_ok(&train_config(dir, "t.yaml", "run", &[]));
}

/// `dir/NAME` with an `id` column first, `rows` new points (without `skip`'s class).
fn labelled_file(dir: &Path, name: &str, rows: usize, skip: Option<&str>) {
    let mut csv = "id,x0,x1,y\n".to_string();
    for (i, (x0, x1, y)) in points(rows, 2).into_iter().enumerate().filter(|(_, p)| Some(p.2) != skip) {
        csv += &format!("s-{i:03},{x0:.4},{x1:.4},{y}\n");
    }
    std::fs::write(dir.join(name), csv).unwrap();
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert_ok(out);
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// A CSV file's header and rows, as the csv crate reads them.
fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

/// predict --keep id, evaluate in both formats, and scikit-learn on the same labels: for
/// every class present, and with one class absent from the file.
#[test]
fn reports_are_scikit_learns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_classifier(d);
    labelled_file(d, "all.csv", 160, None);
    labelled_file(d, "no_west.csv", 160, Some("westerly"));
    for data in ["all.csv", "no_west.csv"] {
        let (preds, json, text) = (d.join("preds.csv"), d.join("report.json"), d.join("report.txt"));
        assert_ok(&torchfit(d, &["predict", "run", data, "--keep", "id", "-o", preds.to_str().unwrap()]));
        let out = torchfit(d, &["evaluate", "run", data, "--format", "json"]);
        let report = json_of(&out);
        std::fs::write(&json, stdout(&out)).unwrap();
        let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["metrics", "confusion_matrix", "classification_report"], "{report}");
        let metrics: Vec<&String> = report["metrics"].as_object().unwrap().keys().collect();
        assert_eq!(metrics, ["loss", "accuracy", "f1"]);
        if data == "no_west.csv" {
            let westerly = &report["classification_report"]["westerly"];
            assert_eq!(westerly["support"], 0, "{report}");
            assert_eq!(report["confusion_matrix"]["matrix"][3], serde_json::json!([0, 0, 0, 0]), "{report}");
        }

        let out = torchfit(d, &["evaluate", "run", data]);
        assert_ok(&out);
        assert_eq!(stdout(&out), stdout(&torchfit(d, &["evaluate", "run", data, "--format", "text"])));
        std::fs::write(&text, stdout(&out)).unwrap();
        println!("{data}:\n{}", stdout(&out));
        let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
        // Today's lines first, each metric as JSON has it to six decimals.
        for (line, name) in lines.iter().zip(["loss", "accuracy", "f1"]) {
            let value = report["metrics"][name].as_f64().unwrap();
            assert_eq!(line, &format!("{name} {value:.6}"));
        }
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("confusion matrix"), "{}", stdout(&out));
        for row in CLASSES.iter().chain(&["accuracy", "macro avg", "weighted avg"]) {
            assert!(lines.iter().any(|l| l.trim_start().starts_with(row)), "no {row} row:\n{}", stdout(&out));
        }

        let files = [d.join(data), preds, json, text];
        let files: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
        let mut args = vec![files[0], "y", files[1], "id", files[2], files[3]];
        args.extend(CLASSES);
        let out = PY.run(&args);
        if out.status.code() == Some(PythonCheck::SKIP) {
            println!("{}", stdout(&out).trim());
            return;
        }
        PY.assert_ok(&out, data);
        assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
        println!("{data}: scikit-learn: {}", stdout(&out).trim());
    }
}

#[test]
fn regression_json_has_only_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = "x0,x1,v\n".to_string();
    for (x0, x1, _) in points(200, 3) {
        csv += &format!("{x0:.4},{x1:.4},{:.4}\n", 2.0 * x0 - x1);
    }
    std::fs::write(d.join("r.csv"), csv).unwrap();
    let config = "seed: 1\ntask: regression\ndata: {kind: csv, path: r.csv, target: v, test_split: 0}\n\
                  model: {hidden: [8]}\ntraining: {epochs: 2, loss: mse, metrics: [mae, r2], threads: 1}\n";
    std::fs::write(d.join("r.yaml"), config).unwrap();
    assert_ok(&train_config(d, "r.yaml", "run", &[]));
    let report = json_of(&torchfit(d, &["evaluate", "run", "r.csv", "--format", "json"]));
    assert_eq!(report.as_object().unwrap().keys().collect::<Vec<_>>(), ["metrics"], "{report}");
    let text = stdout(&torchfit(d, &["evaluate", "run", "r.csv"]));
    let want: String = ["loss", "mae", "r2"]
        .iter()
        .map(|name| format!("{name} {:.6}\n", report["metrics"][name].as_f64().unwrap()))
        .collect();
    assert_eq!(text, want, "the text is today's: a line per metric and nothing more");
}

/// --keep copies CSV cells exactly (quoted ones, `NA`, empty, spaces), in the order given,
/// before the same predictions as without it, with --proba too; through the parallel reader
/// (no quotes) and the csv crate's (quotes).
#[test]
fn keep_copies_csv_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_classifier(d);
    labelled_file(d, "plain.csv", 40, None);
    let notes = ["a,b", "say \"hi\"", "NA", "", " padded ", "line\nbreak", "n/a", "1e400", "ünï"];
    let mut writer = csv::Writer::from_path(d.join("quoted.csv")).unwrap();
    writer.write_record(["x1", "note", "x0", "id"]).unwrap();
    for (i, (x0, x1, _)) in points(notes.len(), 4).into_iter().enumerate() {
        writer.write_record([&format!("{x1:.4}"), notes[i], &format!("{x0:.4}"), &format!("{}", 900 + i)]).unwrap();
    }
    writer.flush().unwrap();
    for (input, keep) in [("plain.csv", vec!["id", "y"]), ("quoted.csv", vec!["note", "id"])] {
        let (header, source) = csv_rows(&d.join(input));
        let at: Vec<usize> = keep.iter().map(|k| header.iter().position(|h| h == k).unwrap()).collect();
        for proba in [false, true] {
            let extra: &[&str] = if proba { &["--proba"] } else { &[] };
            let plain = d.join("plain_preds.csv");
            assert_ok(&torchfit(d, &[&["predict", "run", input, "-o", plain.to_str().unwrap()], extra].concat()));
            let kept = d.join("kept.csv");
            let keep_arg = keep.join(",");
            let args = ["predict", "run", input, "--keep", &keep_arg, "--output", kept.to_str().unwrap()];
            assert_ok(&torchfit(d, &[&args[..], extra].concat()));
            let ((want_header, want), (got_header, got)) = (csv_rows(&plain), csv_rows(&kept));
            assert_eq!(got_header, [keep.iter().map(|k| k.to_string()).collect(), want_header].concat());
            assert_eq!(got.len(), source.len());
            for ((got, want), source) in got.iter().zip(&want).zip(&source) {
                let copied: Vec<&String> = at.iter().map(|&i| &source[i]).collect();
                assert_eq!(got[..keep.len()].iter().collect::<Vec<_>>(), copied, "{input}");
                assert_eq!(&got[keep.len()..], &want[..], "{input}: the predictions are those without --keep");
            }
        }
    }
    // Repeated flags are the comma-separated list; to standard output as to a file.
    let repeated = torchfit(d, &["predict", "run", "quoted.csv", "--keep", "note", "--keep", "id", "--proba"]);
    assert_ok(&repeated);
    assert_eq!(stdout(&repeated), std::fs::read_to_string(d.join("kept.csv")).unwrap());
}

/// --keep from Parquet: integers, floats, strings, booleans as text, nulls empty.
#[test]
fn keep_copies_parquet_values_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_classifier(d);
    let file = d.join("new.parquet");
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
                  pq.write_table(pa.table({\n\
                  'x0': [0.5, -0.25, 0.75, -0.5], 'x1': [0.1, 0.2, -0.3, 0.4],\n\
                  'id': pa.array([7, -12, 9007199254740993, None], pa.int64()),\n\
                  'tag': ['a,b', 'say \"hi\"', None, 'NA'],\n\
                  'ok': [True, False, None, True],\n\
                  'w': [0.1, 2.5, None, 1e-7],\n\
                  'f': pa.array([0.1, 3.0, -2.5, None], pa.float32()),\n\
                  'cat': pa.array(['u', None, 'u', 'v']).dictionary_encode()}), sys.argv[1])\n";
    let out = python_with_torch().args(["-c", script, file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "pyarrow writes the file: {}", stderr(&out));
    let keep = "id,tag,ok,w,f,cat";
    let out = d.join("kept.csv");
    assert_ok(&torchfit(d, &["predict", "run", "new.parquet", "--keep", keep, "--proba", "-o", out.to_str().unwrap()]));
    let (header, rows) = csv_rows(&out);
    assert_eq!(header[..7], ["id", "tag", "ok", "w", "f", "cat", "label"]);
    assert_eq!(header.len(), 7 + CLASSES.len());
    let kept: Vec<Vec<&str>> = rows.iter().map(|r| r[..6].iter().map(String::as_str).collect()).collect();
    assert_eq!(
        kept,
        [
            ["7", "a,b", "true", "0.1", "0.1", "u"],
            ["-12", "say \"hi\"", "false", "2.5", "3", ""],
            ["9007199254740993", "", "", "", "-2.5", "u"],
            ["", "NA", "true", "0.0000001", "", "v"],
        ]
    );
    assert!(rows.iter().all(|r| CLASSES.contains(&r[6].as_str())), "{rows:?}");
}

#[test]
fn bad_keep_columns_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train_classifier(d);
    labelled_file(d, "new.csv", 10, None);
    let out = torchfit(d, &["predict", "run", "new.csv", "--keep", "id,idd"]);
    assert_fails_with(&out, &["new.csv", "--keep: no column `idd`", "did you mean `id`?"]);
    let out = torchfit(d, &["predict", "run", "new.csv", "--keep", "something_else"]);
    assert_fails_with(&out, &["no column `something_else`", "(columns: id, x0, x1, y)"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
    let x = tch::Tensor::from_slice(&[0.5f32, 0.25, -0.5, 0.1]).reshape([2, 2]);
    x.write_npy(d.join("x.npy")).unwrap();
    assert_ok(&torchfit(d, &["predict", "run", "x.npy"]));
    let out = torchfit(d, &["predict", "run", "x.npy", "--keep", "id"]);
    assert_fails_with(&out, &["x.npy", "a .npy array has no columns", "`id`"]);
}
