//! A run of the user's own PyTorch module (`model.kind: torchscript`) after training:
//! `torchfit predict` and `evaluate`, model.pt in PyTorch (`torch.jit.load` gives predict's
//! answers; `m.net` is the trained module with its own methods), every export, and `serve`,
//! on tables (CSV) and on arrays (.npy of any rank, int64 token ids). The modules are
//! scripted by tests/python/user_module_io.py with the torch of the libtorch this build links.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Kind, Tensor};

mod common;
use common::server::Server;
use common::*;

fn python(args: &[&str]) -> String {
    let out = python_with_torch().args(args).output().expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// The modules and arrays of user_module_io.py in `dir`.
fn make_modules(dir: &Path) {
    let script = repo_file("tests/python/user_module_io.py");
    python(&[script.to_str().unwrap(), "make", dir.to_str().unwrap()]);
}

/// Trains a user module into `dir/name` from a config of `data` and `training` (YAML flow
/// mappings) with `net` (a file in `dir`).
fn train(dir: &Path, name: &str, task: &str, data: &str, net: &str, training: &str) -> PathBuf {
    let config = format!(
        "name: {name}\nseed: 3\ntask: {task}\ndata: {data}\nmodel: {{kind: torchscript, path: {}}}\ntraining: {training}\n",
        dir.join(net).display()
    );
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, config).unwrap();
    assert_ok(&torchfit(dir, &["train", file.to_str().unwrap(), "--device", "cpu", "--quiet", "--out", name]));
    dir.join(name)
}

fn housing(dir: &Path) -> PathBuf {
    let data = format!(
        "{{kind: csv, path: {}, target: price, missing: mean, standardize: true, standardize_target: true, validation_split: 0.2, test_split: 0}}",
        repo_file("data/housing.csv").display()
    );
    let training = "{epochs: 3, batch_size: 32, loss: mse, metrics: [mae], optimizer: {kind: adam, lr: 0.01}}";
    train(dir, "housing", "regression", &data, "table_net.pt", training)
}

fn penguins(dir: &Path) -> PathBuf {
    let data = format!(
        "{{kind: csv, path: {}, target: species, standardize: true, validation_split: 0.2, test_split: 0}}",
        repo_file("data/penguins.csv").display()
    );
    let training =
        "{epochs: 4, batch_size: 16, loss: cross_entropy, metrics: [accuracy], optimizer: {kind: adam, lr: 0.01}}";
    train(dir, "penguins", "classification", &data, "penguin_net.pt", training)
}

const PENGUIN_FEATURES: [&str; 4] = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"];
const HOUSING_FEATURES: [&str; 5] = ["rooms", "area", "age", "distance_km", "garden"];

/// `torchfit predict RUN INPUT` into `out`; the CSV's text.
fn predict(dir: &Path, run: &Path, input: &Path, out: &str, proba: bool) -> String {
    let out = dir.join(out);
    let mut args = vec!["predict", run.to_str().unwrap(), input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    if proba {
        args.push("--proba");
    }
    assert_ok(&torchfit(dir, &args));
    std::fs::read_to_string(out).unwrap()
}

/// A CSV file's feature columns, raw (missing cells NaN), as the .npy that model.pt's
/// forward takes.
fn features_npy(dir: &Path, csv: &str, columns: &[&str], name: &str) -> PathBuf {
    let names: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let x = torchfit::data::read_features(&repo_file(csv), &names, &[], &[], b',').unwrap().0;
    let path = dir.join(name);
    x.write_npy(&path).unwrap();
    path
}

#[test]
fn table_runs_predict_evaluate_and_agree_with_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_modules(d);
    let housing = housing(d);
    let penguins = penguins(d);
    // predict on the CSV file and on the same features as an array agree.
    let housing_x = features_npy(d, "data/housing.csv", &HOUSING_FEATURES, "housing_x.npy");
    let from_csv = predict(d, &housing, &repo_file("data/housing.csv"), "housing_csv.csv", false);
    assert_eq!(predict(d, &housing, &housing_x, "housing.csv", false), from_csv);
    let penguins_x = features_npy(d, "data/penguins.csv", &PENGUIN_FEATURES, "penguins_x.npy");
    let labels = predict(d, &penguins, &repo_file("data/penguins.csv"), "penguins_csv.csv", true);
    assert_eq!(predict(d, &penguins, &penguins_x, "penguins.csv", true), labels);

    // evaluate's accuracy is that of predict's labels against the file's.
    let out = torchfit(d, &["evaluate", penguins.to_str().unwrap(), repo_file("data/penguins.csv").to_str().unwrap()]);
    assert_ok(&out);
    let reported: f64 = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("accuracy "))
        .unwrap_or_else(|| panic!("no accuracy in {}", stdout(&out)))
        .parse()
        .unwrap();
    let truth = std::fs::read_to_string(repo_file("data/penguins.csv")).unwrap();
    let truth: Vec<&str> = truth.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
    let predicted: Vec<&str> = labels.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(truth.len(), predicted.len());
    let right = truth.iter().zip(&predicted).filter(|(a, b)| a == b).count();
    assert!((reported - right as f64 / truth.len() as f64).abs() < 1e-6, "{reported} vs {right}/{}", truth.len());
    let out = torchfit(d, &["evaluate", housing.to_str().unwrap(), repo_file("data/housing.csv").to_str().unwrap()]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("loss ") && stdout(&out).contains("\nmae "), "{}", stdout(&out));

    // PyTorch: torch.jit.load(model.pt)(x) is predict's answer; m.net is the trained module.
    let script = repo_file("tests/python/user_module_io.py");
    let mut args = vec![script.display().to_string(), "check".into()];
    for (run, x, csv) in [(&housing, &housing_x, "housing.csv"), (&penguins, &penguins_x, "penguins.csv")] {
        args.extend([run.display().to_string(), x.display().to_string(), d.join(csv).display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(python(&args).contains(" passed, 0 failed"));

    // A table's model takes rows of features: an array of another width is one line.
    let wrong = d.join("wrong.npy");
    Tensor::zeros([3, 7], (Kind::Float, tch::Device::Cpu)).write_npy(&wrong).unwrap();
    let out = torchfit(d, &["predict", penguins.to_str().unwrap(), wrong.to_str().unwrap()]);
    assert_fails_with(&out, &["wrong.npy", "7 feature column(s)", "expects 4"]);
}

#[test]
fn exports_of_a_user_module() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_modules(d);
    let run = penguins(d);
    let run_arg = run.to_str().unwrap();
    let x = features_npy(d, "data/penguins.csv", &PENGUIN_FEATURES, "x.npy");
    let want = predict(d, &run, &x, "want.csv", true);

    // TorchScript: a model.pt of its own, which predicts as the run's.
    let out = torchfit(d, &["export", run_arg, "--format", "torchscript", "--output", "again.pt"]);
    assert_ok(&out);
    assert_eq!(predict(d, &d.join("again.pt"), &x, "again.csv", true), want);

    // safetensors: the module's state_dict, as the run's weights.safetensors holds it.
    assert_ok(&torchfit(d, &["export", run_arg, "--format", "safetensors", "--output", "w.safetensors"]));
    let mut exported = Tensor::read_safetensors(d.join("w.safetensors")).unwrap();
    let mut own = Tensor::read_safetensors(run.join("weights.safetensors")).unwrap();
    exported.sort_by(|a, b| a.0.cmp(&b.0));
    own.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["body.0.bias", "body.0.weight", "body.1.bias", "body.1.weight", "head.bias", "head.weight"]);
    assert_eq!(exported.len(), own.len());
    for ((name, a), (_, b)) in exported.iter().zip(&own) {
        assert!(a.equal(b), "{name}");
    }

    // ONNX: refused in one line that says what to do instead.
    let out = torchfit(d, &["export", run_arg, "--format", "onnx", "--output", "m.onnx"]);
    assert_fails_with(&out, &["ONNX", "torch.onnx.export", "net"]);
    assert!(!d.join("m.onnx").exists());
    let out = torchfit(d, &["export", run_arg, "--output", "m.onnx"]);
    assert_fails_with(&out, &["torch.onnx.export"]);

    // Triton: the repository's config matches model.pt's forward.
    assert_ok(&torchfit(d, &["export", run_arg, "--format", "triton", "--output", "repo"]));
    let script = repo_file("tests/python/triton_config.py");
    let folder = d.join("repo/penguins");
    let model = run.join("model.pt");
    let out = python(&[script.to_str().unwrap(), folder.to_str().unwrap(), model.to_str().unwrap()]);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

/// Posts a V2 infer request; the status and JSON answer.
fn infer(server: &Server, name: &str, body: &Value) -> (u16, Value) {
    server.json("POST", &format!("/v2/models/{name}/infer"), &body.to_string())
}

#[test]
fn serving_a_table_user_module() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_modules(d);
    let run = penguins(d);
    let rows = [[39.1f32, 18.7, 181.0, 3750.0], [49.5, 16.1, 220.0, 5400.0]];
    let csv = format!(
        "{}\n{}\n",
        PENGUIN_FEATURES.join(","),
        rows.iter().map(|r| r.map(|v| v.to_string()).join(",")).collect::<Vec<_>>().join("\n")
    );
    let want = common::server::predict_csv(d, run.to_str().unwrap(), &csv, false);
    let want: Vec<&str> = want.iter().map(|r| r[0].as_str()).collect();
    let server = Server::start(d, &run, &["--quiet"]);
    let good = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": rows}]});
    let (status, first) = infer(&server, "penguins", &good);
    assert_eq!(status, 200, "{first}");
    let labels = first["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "labels").unwrap();
    assert_eq!(labels["data"], json!(want));
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]});
    let (status, answer) = infer(&server, "penguins", &bad);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("[batch, 4]"), "{answer}");
    // A good request after a bad one is still answered, as before.
    assert_eq!(infer(&server, "penguins", &good), (200, first));
    assert!(server.terminate().success());
}

/// The images and token-id runs of user_module_io.py's arrays.
fn array_runs(d: &Path) -> (PathBuf, PathBuf) {
    let npy = |x: &str, y: &str| {
        format!(
            "{{kind: npy, x: {}, y: {}, validation_split: 0.2, test_split: 0}}",
            d.join(x).display(),
            d.join(y).display()
        )
    };
    let training =
        "{epochs: 2, batch_size: 32, loss: cross_entropy, metrics: [accuracy], optimizer: {kind: adam, lr: 0.01}}";
    let images = train(d, "images", "classification", &npy("images_x.npy", "images_y.npy"), "cnn_net.pt", training);
    let training = "{epochs: 2, batch_size: 32, loss: mse, optimizer: {kind: adam, lr: 0.01}}";
    let tokens = train(d, "tokens", "regression", &npy("tokens_x.npy", "tokens_y.npy"), "token_net.pt", training);
    (images, tokens)
}

#[test]
fn array_runs_predict_export_and_agree_with_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_modules(d);
    let (images, tokens) = array_runs(d);
    let input = |run: &Path| torchfit::export::read_extra_file(&run.join("model.pt"), "input.json").unwrap();
    let input: Value = serde_json::from_slice(&input(&images).expect("model.pt has extra/input.json")).unwrap();
    assert_eq!(input, json!({"shape": [1, 8, 8], "dtype": "float32"}));
    let images_x = d.join("images_x.npy");
    let tokens_x = d.join("tokens_x.npy");
    let want = predict(d, &images, &images_x, "images.csv", true);
    // A TorchScript export carries input.json too, and predicts as the run's model.pt.
    assert_ok(&torchfit(d, &["export", images.to_str().unwrap(), "--output", "again.pt"]));
    assert_eq!(predict(d, &d.join("again.pt"), &images_x, "again.csv", true), want);
    predict(d, &tokens, &tokens_x, "tokens.csv", false);
    let script = repo_file("tests/python/user_module_io.py");
    let mut args = vec![script.display().to_string(), "check".into()];
    for (run, x, csv) in [(&images, &images_x, "images.csv"), (&tokens, &tokens_x, "tokens.csv")] {
        args.extend([run.display().to_string(), x.display().to_string(), d.join(csv).display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(python(&args).contains(" passed, 0 failed"));

    // Inputs are held to the recorded per-sample shape and dtype, in one line.
    let (images_arg, tokens_arg) = (images.to_str().unwrap(), tokens.to_str().unwrap());
    let flat = d.join("flat.npy");
    Tensor::zeros([4, 64], (Kind::Float, tch::Device::Cpu)).write_npy(&flat).unwrap();
    let out = torchfit(d, &["predict", images_arg, flat.to_str().unwrap()]);
    assert_fails_with(
        &out,
        &["flat.npy", "the model takes arrays [N, 1, 8, 8] (float32), this one is [4, 64] (float32)"],
    );
    let floats = d.join("floats.npy");
    Tensor::zeros([4, 6], (Kind::Float, tch::Device::Cpu)).write_npy(&floats).unwrap();
    let out = torchfit(d, &["predict", tokens_arg, floats.to_str().unwrap()]);
    assert_fails_with(&out, &["floats.npy", "the model takes arrays [N, 6] (int64), this one is [4, 6] (float32)"]);
    let out = torchfit(d, &["predict", tokens_arg, repo_file("data/housing.csv").to_str().unwrap()]);
    assert_fails_with(&out, &["housing.csv", "pass a .npy file"]);

    let out = torchfit(d, &["evaluate", images_arg, repo_file("data/penguins.csv").to_str().unwrap()]);
    assert_fails_with(&out, &["trained on float32 arrays [batch, 1, 8, 8]", "torchfit predict"]);

    // Triton: INPUT__0 is the recorded sample shape and type.
    let script = repo_file("tests/python/triton_config.py");
    let mut args = vec![script.display().to_string()];
    for (run, name) in [(&images, "images"), (&tokens, "tokens")] {
        assert_ok(&torchfit(d, &["export", run.to_str().unwrap(), "--format", "triton", "--output", "repo"]));
        args.extend([d.join("repo").join(name).display().to_string(), run.join("model.pt").display().to_string()]);
    }
    let config = std::fs::read_to_string(d.join("repo/tokens/config.pbtxt")).unwrap();
    assert!(config.contains("data_type: TYPE_INT64\n    dims: [ 6 ]"), "{config}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(&args);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

#[test]
fn serving_array_user_modules() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_modules(d);
    let (images, tokens) = array_runs(d);
    // The first two images, and what torchfit predict says of them.
    let x = Tensor::read_npy(d.join("images_x.npy")).unwrap().narrow(0, 0, 2);
    let two = d.join("two.npy");
    x.write_npy(&two).unwrap();
    let want: Vec<String> = predict(d, &images, &two, "two.csv", false).lines().skip(1).map(String::from).collect();
    let data = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap();

    let server = Server::start(d, &images, &["--quiet"]);
    let (status, meta) = server.json("GET", "/v2/models/images", "");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]));
    assert_eq!(meta["parameters"]["input"], json!({"shape": [1, 8, 8], "dtype": "float32"}));
    let good = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8], "data": data}]});
    let (status, first) = infer(&server, "images", &good);
    assert_eq!(status, 200, "{first}");
    let labels = first["outputs"].as_array().unwrap().iter().find(|o| o["name"] == "labels").unwrap();
    assert_eq!(labels["data"], json!(want));
    for (shape, datatype, expected) in [
        (json!([2, 8, 8]), "FP32", "has shape [2, 8, 8], but the model takes FP32 [batch, 1, 8, 8]"),
        (json!([1, 1, 8, 8]), "FP32", "has 128 values, but its shape [1, 1, 8, 8] holds 64"),
        (json!([2, 1, 8, 8]), "INT64", "has datatype INT64, but the model takes FP32 [batch, 1, 8, 8]"),
    ] {
        let bad = json!({"inputs": [{"name": "input", "datatype": datatype, "shape": shape, "data": data}]});
        let (status, answer) = infer(&server, "images", &bad);
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(expected), "{answer}");
        // A good request after a bad one is still answered, as before.
        assert_eq!(infer(&server, "images", &good), (200, first.clone()));
    }
    // /predict takes samples as nested lists of their shape.
    let samples: Vec<Vec<Vec<Vec<f32>>>> =
        data.chunks(64).map(|s| vec![s.chunks(8).map(<[f32]>::to_vec).collect()]).collect();
    let nested = json!({ "instances": samples });
    let (status, answer) = server.json("POST", "/predict", &nested.to_string());
    assert_eq!((status, &answer["labels"]), (200, &json!(want)), "{answer}");
    assert!(server.terminate().success());

    // Token ids: INT64, here in Triton's binary form.
    let ids: Vec<i64> = vec![1, 2, 3, 4, 5, 6, 0, 0, 9, 9, 9, 9];
    let ids_npy = d.join("ids.npy");
    Tensor::from_slice(&ids).view([2, 6]).write_npy(&ids_npy).unwrap();
    let want: Vec<f32> =
        predict(d, &tokens, &ids_npy, "ids.csv", false).lines().skip(1).map(|l| l.parse().unwrap()).collect();
    let server = Server::start(d, &tokens, &["--quiet"]);
    let header = json!({"inputs": [{"name": "input", "datatype": "INT64", "shape": [2, 6], "parameters": {"binary_data_size": 96}}]})
        .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(ids.iter().flat_map(|v| v.to_le_bytes()));
    let length = header.len().to_string();
    let response = server.request(
        "POST",
        "/v2/models/tokens/infer",
        &[("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", &length)],
        &body,
    );
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let answer: Value = serde_json::from_slice(&response.body).unwrap();
    let got: Vec<f64> = answer["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(got.len(), want.len(), "{answer}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - f64::from(*w)).abs() <= 1e-6 * (1.0 + g.abs()), "{answer} vs {want:?}");
    }
    let floats = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 6], "data": vec![0.5; 12]}]});
    let (status, answer) = infer(&server, "tokens", &floats);
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("the model takes INT64 [batch, 6]"), "{answer}");
    assert!(server.terminate().success());
}
