//! Triton's Python HTTP client (tritonclient, installed into the torch cache by
//! scripts/libtorch.sh) against `torchfit serve`: tests/python/serve_client.py, on the
//! Keras example (regression) and on titanic (a classifier with categorical columns).

use std::path::Path;
use std::process::Command;

use serde_json::json;

mod common;
use common::server::{predict_csv, train, Server};
use common::*;

#[test]
fn tritonclient_gets_what_torchfit_predict_gets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    train(d, "keras", "configs/keras_example.yaml", &["training.epochs=2"]);
    let titanic = repo_file("data/titanic.csv").display().to_string();
    train(d, "titanic", "configs/titanic.yaml", &[&format!("data.path={titanic}"), "training.epochs=3"]);

    let rows: Vec<Vec<f32>> =
        (0..6).map(|i| (0..10).map(|j| ((i * 5 + j * 3) % 7) as f32 / 3.0 - 1.0).collect()).collect();
    let mut csv = (0..10).map(|j| format!("x{j}")).collect::<Vec<_>>().join(",") + "\n";
    for row in &rows {
        csv += &(row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n");
    }
    let want: Vec<f64> = predict_csv(d, "keras", &csv, false).iter().map(|r| r[0].parse().unwrap()).collect();

    let titanic_csv = "pclass,sex,age,fare,embarked,deck,alone\n1,female,38,70.5,S,A,no\n3,male,40,8.05,Q,Z,yes\n2,female,4,15,,,no\n";
    let titanic_rows = json!([
        {"pclass": 1, "sex": "female", "age": 38, "fare": 70.5, "embarked": "S", "deck": "A", "alone": "no"},
        {"pclass": 3, "sex": "male", "age": 40, "fare": 8.05, "embarked": "Q", "deck": "Z", "alone": "yes"},
        {"pclass": 2, "sex": "female", "age": 4, "fare": 15, "embarked": null, "deck": null, "alone": "no"},
    ]);
    let predicted = predict_csv(d, "titanic", titanic_csv, true);
    let labels: Vec<&str> = predicted.iter().map(|r| r[0].as_str()).collect();
    let proba: Vec<Vec<f64>> = predicted.iter().map(|r| r[1..].iter().map(|p| p.parse().unwrap()).collect()).collect();

    let keras = Server::start(d, Path::new("keras"), &["--name", "keras", "--quiet"]);
    let classifier = Server::start(d, Path::new("titanic"), &["--quiet"]);
    let spec = json!({
        "regression": {"port": keras.port, "name": "keras", "rows": rows, "want": want},
        "categorical": {"port": classifier.port, "name": "titanic", "rows": titanic_rows, "labels": labels, "proba": proba},
    });
    let spec_path = d.join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("tritonclient/http/__init__.py").is_file(),
        "no tritonclient at {python_path}: run the tests through scripts/libtorch.sh (make test), which installs it"
    );
    let out = Command::new("python3")
        .arg(repo_file("tests/python/serve_client.py"))
        .arg(&spec_path)
        .env("PYTHONPATH", python_path)
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "serve_client.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert_eq!(keras.terminate().code(), Some(0));
    assert_eq!(classifier.terminate().code(), Some(0));
}
