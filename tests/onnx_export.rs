//! `torchfit export --format onnx`: onnxruntime computes what `torchfit predict` does. Runs
//! tests/python/onnx_check.py (onnx and onnxruntime from the pip cache of scripts/libtorch.sh)
//! on the interop test's models — a regression, a standardised regression with mean-filled
//! missing cells, a softmax and a bce classifier, a model with one-hot and embedded
//! categorical features, and the housing and titanic tables with `model.kind: resnet` and
//! `ft_transformer`, `tabm` and the numeric embeddings — and on one model per activation;
//! plus the CLI's bad inputs.

use std::path::Path;
use std::process::Command;

use tch::{Kind, Tensor};

mod common;
use common::*;

/// Where the rows to predict come from.
enum Rows<'a> {
    Random(i64),
    /// A repo CSV file, raw as users pass it (missing cells, text columns).
    Csv(&'a str),
}

/// Trains `config` into `dir/out`, exports it to ONNX, writes the ONNX inputs for `rows`
/// (`out.numeric.npy`, and `out.codes.npy` when the model has categorical features) and
/// `torchfit predict`'s answer on the same rows (`out.csv`). Returns onnx_check.py's four
/// arguments.
fn prepare(dir: &Path, out: &str, config: &str, sets: &[&str], rows: Rows) -> [String; 4] {
    let config = repo_file(config);
    let mut args = vec!["train", config.to_str().unwrap(), "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", s]);
    }
    assert_ok(&torchfit(dir, &args));
    // Both ways of asking for ONNX: the output's extension, and --format into the run.
    let onnx = if out.len() % 2 == 0 {
        let file = format!("{out}.onnx");
        assert_ok(&torchfit(dir, &["export", out, "--output", &file]));
        dir.join(file)
    } else {
        assert_ok(&torchfit(dir, &["export", out, "--format", "onnx"]));
        dir.join(out).join("model.onnx")
    };
    let trained = torchfit::rundir::TrainedRun::load(&dir.join(out), None, "--weights").unwrap();
    let pre = &trained.preprocessing;
    let classifier = pre.labels.is_some();
    let numeric_npy = dir.join(format!("{out}.numeric.npy"));
    let mut codes_arg = "-".to_string();
    let input = match rows {
        Rows::Random(features) => {
            let npy = dir.join(format!("{out}.input.npy"));
            Tensor::randn([33, features], (Kind::Float, tch::Device::Cpu)).write_npy(&npy).unwrap();
            std::fs::copy(&npy, &numeric_npy).unwrap();
            npy
        }
        Rows::Csv(file) => {
            let names: Vec<String> = pre.categorical.iter().map(|c| c.name.clone()).collect();
            let (x, text, _) =
                torchfit::data::read_features(&repo_file(file), &pre.feature_names, &names, &[], b',').unwrap();
            x.write_npy(&numeric_npy).unwrap();
            if !pre.categorical.is_empty() {
                let codes = torchfit::data::categorical_codes(&pre.categorical, &text, x.size()[0] as usize).unwrap();
                let npy = dir.join(format!("{out}.codes.npy"));
                codes.to_kind(Kind::Int64).write_npy(&npy).unwrap();
                codes_arg = npy.display().to_string();
            }
            repo_file(file)
        }
    };
    let csv = dir.join(format!("{out}.csv"));
    let model = dir.join(out).join("model.pt");
    let mut args = vec!["predict", model.to_str().unwrap(), input.to_str().unwrap(), "--output", csv.to_str().unwrap()];
    if classifier {
        args.push("--proba");
    }
    assert_ok(&torchfit(dir, &args));
    [onnx.display().to_string(), numeric_npy.display().to_string(), codes_arg, csv.display().to_string()]
}

fn run_check(args: &[String]) {
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("onnxruntime").is_dir(),
        "no onnxruntime at {python_path}: build with scripts/libtorch.sh (make test) to run this test"
    );
    let out = Command::new("python3")
        .arg(repo_file("tests/python/onnx_check.py"))
        .args(args)
        .env("PYTHONPATH", python_path)
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "onnx_check.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    println!("{stdout}");
}

#[test]
fn onnxruntime_agrees_with_torchfit_predict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = |name: &str| format!("data.path={}", repo_file(name).display());
    let mut args = Vec::new();
    args.extend(prepare(d, "keras", "configs/keras_example.yaml", &["training.epochs=2"], Rows::Random(10)));
    let housing = data("data/housing.csv");
    args.extend(prepare(
        d,
        "housing",
        "configs/housing.yaml",
        &[&housing, "training.epochs=3"],
        Rows::Csv("data/housing.csv"),
    ));
    let penguins = data("data/penguins.csv");
    args.extend(prepare(
        d,
        "penguins",
        "configs/penguins.yaml",
        &[&penguins, "training.epochs=3"],
        Rows::Csv("data/penguins.csv"),
    ));
    args.extend(prepare(
        d,
        "moons",
        "configs/moons.yaml",
        &["training.loss=bce", "training.epochs=3"],
        Rows::Random(2),
    ));
    let titanic = data("data/titanic.csv");
    args.extend(prepare(
        d,
        "titanic",
        "configs/titanic.yaml",
        &[&titanic, "training.epochs=3", "data.categorical_encoding={sex: one_hot, embarked: embedding, deck: 3}"],
        Rows::Csv("data/titanic.csv"),
    ));
    // model.kind: resnet, BatchNormalization in evaluation mode, on the same tables.
    args.extend(prepare(
        d,
        "resnet_housing",
        "configs/housing.yaml",
        &[&housing, "training.epochs=2", "model={kind: resnet, d_block: 32, n_blocks: 2}"],
        Rows::Csv("data/housing.csv"),
    ));
    args.extend(prepare(
        d,
        "resnet_titanic",
        "configs/titanic.yaml",
        &[
            &titanic,
            "training.epochs=2",
            "model={kind: resnet, d_block: 16, n_blocks: 1}",
            "data.categorical_encoding={sex: one_hot, embarked: embedding, deck: 3}",
        ],
        Rows::Csv("data/titanic.csv"),
    ));
    run_check(&args);
}

/// model.kind: ft_transformer (LayerNormalization, attention by MatMul and Softmax, ReGLU):
/// housing (numeric columns, a text one; several heads, W_out) and titanic (text and numeric
/// columns, missing cells; one head, no W_out).
#[test]
fn ft_transformer_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = |name: &str| format!("data.path={}", repo_file(name).display());
    let (housing, titanic) = (data("data/housing.csv"), data("data/titanic.csv"));
    let mut args = Vec::new();
    let model = "model={kind: ft_transformer, d_block: 16, n_blocks: 2, attention_n_heads: 4}";
    let sets = [housing.as_str(), "training.epochs=2", model];
    args.extend(prepare(d, "ftt_housing", "configs/housing.yaml", &sets, Rows::Csv("data/housing.csv")));
    let model = "model={kind: ft_transformer, d_block: 8, n_blocks: 1, attention_n_heads: 1}";
    let sets = [titanic.as_str(), "training.epochs=2", model];
    args.extend(prepare(d, "ftt_titanic", "configs/titanic.yaml", &sets, Rows::Csv("data/titanic.csv")));
    run_check(&args);
}

/// model.kind: tabm (the ensemble view by broadcasting, batched MatMuls, the members'
/// combination: mean, logits of the mean softmax, logit of the mean sigmoid) and
/// `model.numeric_embedding` (piecewise_linear with a one-bin feature, periodic, lite) on the
/// MLP and on TabM.
#[test]
fn tabm_and_numeric_embeddings_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = |name: &str| format!("data.path={}", repo_file(name).display());
    let (housing, titanic, penguins) = (data("data/housing.csv"), data("data/titanic.csv"), data("data/penguins.csv"));
    let encoding = "data.categorical_encoding={sex: one_hot, embarked: embedding, deck: 3}";
    let tabm = "model={kind: tabm, k: 4, d_block: 16, n_blocks: 2}";
    let cases: [(&str, &str, &[&str], &str); 7] = [
        ("tabm_housing", "configs/housing.yaml", &[&housing, tabm], "data/housing.csv"),
        ("tabm_titanic", "configs/titanic.yaml", &[&titanic, tabm, encoding], "data/titanic.csv"),
        ("tabm_bce", "configs/titanic.yaml", &[&titanic, "model={kind: tabm, k: 3, d_block: 8, arch_type: tabm-mini}", "training.loss=bce"], "data/titanic.csv"),
        ("tabm_ple", "configs/penguins.yaml", &[&penguins, "model={kind: tabm, k: 4, d_block: 16, numeric_embedding: {kind: piecewise_linear, n_bins: 6, d_embedding: 4}}"], "data/penguins.csv"),
        ("mlp_ple", "configs/titanic.yaml", &[&titanic, "model={hidden: [8], numeric_embedding: {kind: piecewise_linear, n_bins: 4, d_embedding: 3, activation: true}}", encoding], "data/titanic.csv"),
        ("mlp_periodic", "configs/housing.yaml", &[&housing, "model={hidden: [8], activation: gelu, numeric_embedding: {kind: periodic, n_frequencies: 5, d_embedding: 4}}"], "data/housing.csv"),
        ("tabm_lite", "configs/housing.yaml", &[&housing, "model={kind: tabm, k: 2, d_block: 8, numeric_embedding: {kind: periodic, n_frequencies: 3, d_embedding: 4, lite: true}}"], "data/housing.csv"),
    ];
    let mut args = Vec::new();
    for (out, config, sets, rows) in cases {
        let mut sets = sets.to_vec();
        sets.push("training.epochs=2");
        args.extend(prepare(d, out, config, &sets, Rows::Csv(rows)));
    }
    run_check(&args);
}

/// Every hidden activation, each spelt in ONNX ops of its own (gelu and silu composed).
#[test]
fn every_activation_exports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = Vec::new();
    for activation in ["relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "silu", "linear"] {
        let set = format!("model.activation={activation}");
        let sets = [set.as_str(), "training.epochs=2"];
        args.extend(prepare(d, activation, "configs/keras_example.yaml", &sets, Rows::Random(10)));
    }
    run_check(&args);
}

#[test]
fn bad_onnx_exports_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = repo_file("configs/keras_example.yaml");
    let args = [config.to_str().unwrap(), "--set", "training.epochs=1", "--device", "cpu", "--quiet", "--out", "run"];
    assert_ok(&torchfit(d, &[&["train"][..], &args].concat()));
    assert_fails_with(&torchfit(d, &["export", "run", "--output", "no/such/dir/m.onnx"]), &["no/such/dir/m.onnx"]);
    assert_fails_with(
        &torchfit(d, &["export", "run", "--format", "onnx", "--output", "m.pt"]),
        &["--format onnx contradicts --output m.pt"],
    );
    assert!(!d.join("m.pt").exists() && !d.join("run/model.onnx").exists());
    // An unwritable target directory leaves nothing behind and says which file.
    std::fs::create_dir(d.join("ro")).unwrap();
    std::fs::set_permissions(d.join("ro"), std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let out = torchfit(d, &["export", "run", "--output", "ro/m.onnx"]);
    // root ignores directory permissions; only check when the write was refused.
    if !out.status.success() {
        assert_fails_with(&out, &["ro/m.onnx"]);
    }
}
