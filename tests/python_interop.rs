//! PyTorch loads torchfit's exports: runs tests/python/interop.py with the torch package of
//! the libtorch this build links (the pip install in ~/.cache/torchfit), on a regression run,
//! a standardised CSV regression with missing values, and two classification runs.

use std::path::Path;
use std::process::Command;

use tch::{Kind, Tensor};

mod common;
use common::*;

/// The features to predict on: random ones, or columns of a repo CSV file (raw, as users
/// pass them, missing cells included).
enum Input<'a> {
    Random(i64),
    Csv(&'a str, &'a [&'a str]),
}

/// Trains `config` into `dir/out`, writes `out.npy` from `input`, and runs `torchfit predict`
/// on it into `out.csv`. Returns the three paths for interop.py.
fn prepare(dir: &Path, out: &str, config: &str, sets: &[&str], input: Input, proba: bool) -> [String; 3] {
    let config = repo_file(config);
    let mut args = vec!["train", config.to_str().unwrap(), "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", s]);
    }
    assert_ok(&torchfit(dir, &args));
    let x = match input {
        Input::Csv(file, columns) => {
            let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
            torchfit::data::read_features(&repo_file(file), &names, &[], &[], b',').unwrap().0
        }
        Input::Random(features) => Tensor::randn([33, features], (Kind::Float, tch::Device::Cpu)),
    };
    let npy = dir.join(format!("{out}.npy"));
    x.write_npy(&npy).unwrap();
    let csv = dir.join(format!("{out}.csv"));
    let model = dir.join(out).join("model.pt");
    let mut args = vec!["predict", model.to_str().unwrap(), npy.to_str().unwrap(), "--output", csv.to_str().unwrap()];
    if proba {
        args.push("--proba");
    }
    assert_ok(&torchfit(dir, &args));
    [dir.join(out).display().to_string(), npy.display().to_string(), csv.display().to_string()]
}

#[test]
fn pytorch_loads_fine_tunes_and_agrees_with_torchfit_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let housing = repo_file("data/housing.csv").display().to_string();
    let penguins = repo_file("data/penguins.csv").display().to_string();
    let mut args: Vec<String> = vec![repo_file("tests/python/interop.py").display().to_string()];
    args.extend(prepare(d, "keras", "configs/keras_example.yaml", &["training.epochs=2"], Input::Random(10), false));
    args.extend(prepare(
        d,
        "housing",
        "configs/housing.yaml",
        &[&format!("data.path={housing}"), "training.epochs=3"],
        Input::Csv("data/housing.csv", &["rooms", "area", "age", "distance_km", "garden"]),
        false,
    ));
    args.extend(prepare(
        d,
        "penguins",
        "configs/penguins.yaml",
        &[&format!("data.path={penguins}"), "training.epochs=3"],
        Input::Csv("data/penguins.csv", &["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]),
        true,
    ));
    args.extend(prepare(
        d,
        "moons",
        "configs/moons.yaml",
        &["training.loss=bce", "training.epochs=3"],
        Input::Random(2),
        true,
    ));
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("torch/__init__.py").is_file(),
        "no torch Python package at {python_path}: build with the pip-installed libtorch (make test) to run this test"
    );
    let out = Command::new("python3").args(&args).env("PYTHONPATH", python_path).output().expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "interop.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// A model with categorical features (one one-hot, the others embedded) takes raw rows in
/// PyTorch exactly as `torchfit predict` does, unseen levels and missing cells included.
#[test]
fn raw_rows_in_pytorch_equal_torchfit_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let titanic = repo_file("data/titanic.csv").display().to_string();
    let config = repo_file("configs/titanic.yaml").display().to_string();
    assert_ok(&torchfit(
        d,
        &[
            "train",
            &config,
            "--set",
            &format!("data.path={titanic}"),
            "--set",
            "training.epochs=3",
            "--set",
            "data.categorical_encoding={sex: one_hot, embarked: embedding, deck: 3}",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            "run",
        ],
    ));
    // Columns in another order, an extra one, levels never seen, missing cells.
    let raw = "survived,note,deck,embarked,sex,alone,fare,age,pclass\n\
               1,x,A,S,female,no,70.5,38,1\n\
               0,y,Z,Q,male,yes,8.05,,3\n\
               1,z,,X,,yes,,22,2\n\
               0,w,B,C,unknown,no,13,54,4\n";
    std::fs::write(d.join("raw.csv"), raw).unwrap();
    assert_ok(&torchfit(d, &["predict", "run", "raw.csv", "--proba", "--output", "p.csv"]));
    let out = Command::new("python3")
        .args([repo_file("tests/python/raw_rows.py").to_str().unwrap(), "run", "raw.csv", "p.csv"])
        .current_dir(d)
        .env("PYTHONPATH", env!("TORCHFIT_TORCH_PYTHONPATH"))
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "raw_rows.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
