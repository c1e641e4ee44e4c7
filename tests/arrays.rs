//! Array data (`kind: npy` with x of any rank, or of integers) through the real binary: the
//! MLP's refusal, the checks on the arrays, and user modules trained on images and token ids
//! against a plain PyTorch loop on the same files.

mod common;

use std::path::Path;

use common::*;
use tch::{Device, Kind, Tensor};

fn write_config(dir: &Path, text: &str) {
    std::fs::write(dir.join("c.yaml"), text).unwrap();
}

fn train(dir: &Path, sets: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "c.yaml", "--device", "cpu", "--quiet", "--out", "run"];
    for set in sets {
        args.extend(["--set", set]);
    }
    torchfit(dir, &args)
}

#[test]
fn the_mlp_refuses_images_and_token_ids_naming_their_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    Tensor::randn([30, 1, 4, 4], (Kind::Float, Device::Cpu)).write_npy(d.join("images.npy")).unwrap();
    Tensor::randint(10, [30, 6], (Kind::Int64, Device::Cpu)).write_npy(d.join("ids.npy")).unwrap();
    Tensor::randn([30], (Kind::Float, Device::Cpu)).write_npy(d.join("y.npy")).unwrap();
    write_config(d, "data: {kind: npy, x: images.npy, y: y.npy}\ntraining: {epochs: 1}\n");
    let out = train(d, &[]);
    assert_fails_with(
        &out,
        &[
            "model.kind: mlp takes a table [samples, features]; data.x (",
            "images.npy) is an array [30, 1, 4, 4] (float32): use model.kind: torchscript",
            "forward takes [batch, 1, 4, 4]",
        ],
    );
    assert!(!d.join("run").exists(), "no run directory for a refused run");
    let out = train(d, &["data.x=ids.npy"]);
    assert_fails_with(&out, &["ids.npy) is an array [30, 6] (int64)", "forward takes [batch, 6]"]);
    // The same from one .npz (data.path), a uint8 image array loading as int64.
    let images = Tensor::randint(255, [30, 5, 5, 3], (Kind::Uint8, Device::Cpu));
    let y = Tensor::randn([30], (Kind::Float, Device::Cpu));
    Tensor::write_npz(&[("x", &images), ("y", &y)], d.join("xy.npz")).unwrap();
    let out = train(d, &["data.x=null", "data.y=null", "data.path=xy.npz"]);
    assert_fails_with(&out, &["the x of data.path (", "xy.npz) is an array [30, 5, 5, 3] (int64)"]);
    // Standardising an array is refused by name, before the model is.
    let out = train(d, &["data.standardize=true"]);
    assert_fails_with(&out, &["data.standardize: data.x: ", "images.npy is an array [30, 1, 4, 4] (float32)"]);
    // A NaN in an array is not a missing value to fill: an error naming sample and index.
    let x = Tensor::zeros([30, 1, 4, 4], (Kind::Float, Device::Cpu));
    let _ = x.get(4).get(0).get(2).get(3).fill_(f64::NAN);
    x.write_npy(d.join("nan.npy")).unwrap();
    let out = train(d, &["data.x=nan.npy", "data.missing=mean"]);
    assert_fails_with(&out, &["nan.npy: sample 5, index [4, 0, 2, 3] (flat index 75): NaN is not a finite number"]);
    // A 2-D float x is a table, as before: the MLP trains on it.
    Tensor::randn([30, 3], (Kind::Float, Device::Cpu)).write_npy(d.join("table.npy")).unwrap();
    assert_ok(&train(d, &["data.x=table.npy"]));
}

/// Writes the images, token ids and scripted modules into `dir` and returns the plain PyTorch
/// loop's per-epoch losses, `{"cnn": [...], "emb": [...]}`.
fn reference(dir: &Path, epochs: usize, batch: usize, lr: f64) -> serde_json::Value {
    let script = repo_file("tests/python/arrays_reference.py");
    let out = python_with_torch()
        .args([script.to_str().unwrap(), ".", &epochs.to_string(), &batch.to_string(), &lr.to_string()])
        .current_dir(dir)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "arrays_reference.py failed: {}", stderr(&out));
    serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1e-3), "{what}: torchfit {got:?}, PyTorch {want:?}");
    }
}

/// A scripted CNN on `[N, 1, 4, 4]` float32 images and an embedding model on `[N, 6]` int64
/// token ids, trained in file order without a split: each epoch's loss is the plain PyTorch
/// loop's on the same module file and data.
#[test]
fn user_modules_train_on_images_and_token_ids_as_a_plain_pytorch_loop_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (epochs, batch, lr) = (3, 8, 0.01);
    let want = reference(d, epochs, batch, lr);
    let training = format!(
        "training: {{epochs: {epochs}, batch_size: {batch}, shuffle: false, \
         optimizer: {{kind: adam, lr: {lr}, semantics: torch}}}}\n"
    );
    write_config(
        d,
        &format!(
            "task: classification\n\
             data: {{kind: npy, x: x.npy, y: y.npy, validation_split: 0, test_split: 0}}\n\
             model: {{kind: torchscript, path: cnn.pt}}\n{training}"
        ),
    );
    assert_ok(&train(d, &[]));
    let run = d.join("run");
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let loss = header.iter().position(|h| h == "loss").unwrap();
    assert_eq!(rows.iter().map(|r| r[0] as usize).collect::<Vec<_>>(), (1..=epochs).collect::<Vec<_>>());
    let got: Vec<f64> = rows.iter().map(|r| r[loss]).collect();
    let want_cnn: Vec<f64> = serde_json::from_value(want["cnn"].clone()).unwrap();
    assert_close(&got, &want_cnn, "cnn");
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("preprocessing.json")).unwrap()).unwrap();
    assert_eq!(pre["input"], serde_json::json!({"shape": [1, 4, 4], "dtype": "float32"}));

    write_config(
        d,
        &format!(
            "data: {{kind: npy, x: ids.npy, y: t.npy, validation_split: 0, test_split: 0}}\n\
             model: {{kind: torchscript, path: emb.pt}}\ntraining: {{loss: mse, {}",
            training.trim_start_matches("training: {")
        ),
    );
    std::fs::remove_dir_all(&run).unwrap();
    assert_ok(&train(d, &[]));
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    let loss = header.iter().position(|h| h == "loss").unwrap();
    let got: Vec<f64> = rows.iter().map(|r| r[loss]).collect();
    let want_emb: Vec<f64> = serde_json::from_value(want["emb"].clone()).unwrap();
    assert_close(&got, &want_emb, "emb");
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("preprocessing.json")).unwrap()).unwrap();
    assert_eq!(pre["input"], serde_json::json!({"shape": [6], "dtype": "int64"}));
}

/// With a validation split and shuffling, the same code splits and batches images: the run
/// finishes, metrics.csv has every epoch with a val_loss, and split.json holds the samples
/// held out.
#[test]
fn a_user_module_trains_on_shuffled_split_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    reference(d, 1, 8, 0.01);
    write_config(
        d,
        "task: classification\n\
         data: {kind: npy, x: x.npy, y: y.npy, validation_split: 0.25}\n\
         model: {kind: torchscript, path: cnn.pt}\n\
         training: {epochs: 4, batch_size: 16}\n",
    );
    assert_ok(&train(d, &[]));
    let run = d.join("run");
    let (header, rows) = read_csv(&run.join("metrics.csv"));
    assert!(header.iter().any(|h| h == "val_loss"), "{header:?}");
    assert_eq!(rows.len(), 4);
    let split: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("split.json")).unwrap()).unwrap();
    assert_eq!(split["validation"].as_array().unwrap().len(), 10);
    assert_eq!(split["train"], 30);
}
