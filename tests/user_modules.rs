//! User TorchScript modules (`model: {kind: torchscript, path: net.pt}`) held to PyTorch
//! itself: tests/python/user_modules.py writes each module, its data and the config, and
//! trains the same net.pt in a plain PyTorch loop (same initial weights, rows in file order,
//! `semantics: torch`); torchfit's per-epoch losses and final weights (buffers included) must
//! agree within 1e-5. Then: resume after kill -9, two processes under torchrun, and the
//! modules torchfit must refuse before epoch 1.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const LIMIT: Duration = Duration::from_secs(300);
/// user_modules.py's exit status when the digits data cannot be downloaded.
const SKIP: i32 = 77;

/// Runs tests/python/user_modules.py ARGS with the torch package this build links.
fn python(args: &[&str]) -> Output {
    python_with_torch().arg(repo_file("tests/python/user_modules.py")).args(args).output().expect("python3 runs")
}

fn assert_python_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "user_modules.py {what} failed:\n{}\n{}", stdout(out), stderr(out));
}

/// Writes CASE's net.pt, x.npy, y.npy and config.yaml into `dir`; false (having said why)
/// when the digits data cannot be downloaded.
fn prepare(case: &str, dir: &Path) -> bool {
    let out = python(&["prepare", case, dir.to_str().unwrap()]);
    if out.status.code() == Some(SKIP) {
        println!("{}", stdout(&out).trim());
        return false;
    }
    assert_python_ok(&out, "prepare");
    true
}

fn train_args<'a>(dir: &'a Path, run: &'a str, sets: &'a [&'a str]) -> Vec<&'a str> {
    let config = Box::leak(dir.join("config.yaml").display().to_string().into_boxed_str());
    let mut args = vec!["train", config, "--quiet", "--out", run];
    for s in sets {
        args.extend(["--set", *s]);
    }
    args
}

/// Trains CASE in torchfit and in PyTorch and compares them (user_modules.py check), with
/// `sets` (`epochs=N`, `batch_size=N`) applied to both.
fn assert_trains_as_pytorch(case: &str, sets: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !prepare(case, d) {
        return;
    }
    let torchfit_sets: Vec<String> = sets.iter().map(|s| format!("training.{s}")).collect();
    let torchfit_sets: Vec<&str> = torchfit_sets.iter().map(String::as_str).collect();
    assert_ok(&torchfit(d, &train_args(d, "run", &torchfit_sets)));
    let (x, predictions) = (d.join("x.npy"), d.join("run/predictions.csv"));
    let mut predict = vec!["predict", "run", x.to_str().unwrap(), "--output", predictions.to_str().unwrap()];
    if std::fs::read_to_string(d.join("config.yaml")).unwrap().contains("task: \"classification\"") {
        predict.push("--proba");
    }
    assert_ok(&torchfit(d, &predict));
    let (folder, run) = (d.to_str().unwrap(), d.join("run"));
    let mut args = vec!["check", case, folder, run.to_str().unwrap()];
    args.extend(sets);
    let out = python(&args);
    // The measured differences, visible with --nocapture.
    println!("{}", stdout(&out));
    assert_python_ok(&out, "check");
    assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
}

#[test]
fn a_cnn_with_batchnorm_on_digits_trains_as_pytorch_does() {
    assert_trains_as_pytorch("cnn", &[]);
}

#[test]
fn frozen_layers_and_param_groups_train_as_torch_optim_param_groups_do() {
    assert_trains_as_pytorch("frozen", &[]);
}

#[test]
fn frozen_layers_and_param_groups_train_as_torch_optim_adam_param_groups_do() {
    assert_trains_as_pytorch("frozen_adam", &[]);
}

#[test]
fn an_lstm_on_generated_sequences_trains_as_pytorch_does() {
    assert_trains_as_pytorch("lstm", &[]);
}

#[test]
fn a_transformer_encoder_on_generated_sequences_trains_as_pytorch_does() {
    assert_trains_as_pytorch("transformer", &[]);
}

/// Everything a checkpoint restores must match: metrics, and weights.safetensors (the
/// module's parameters and BatchNorm buffers) byte for byte.
fn assert_same_run(a: &Path, b: &Path) {
    assert_eq!(metrics_without_seconds(a), metrics_without_seconds(b));
    let (x, y) =
        (std::fs::read(a.join("weights.safetensors")).unwrap(), std::fs::read(b.join("weights.safetensors")).unwrap());
    assert!(x == y, "weights.safetensors of {} differs from {}'s", b.display(), a.display());
    assert_eq!(summary(b)["status"], "finished");
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn resume(dir: &Path, run: &str) -> Output {
    torchfit(dir, &["train", "--resume", run, "--quiet"])
}

#[test]
fn a_killed_user_module_run_resumes_to_identical_weights_and_batchnorm_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if !prepare("cnn", d) {
        return;
    }
    let sets = ["training.epochs=20"];
    assert_ok(&torchfit(d, &train_args(d, "straight", &sets)));
    let names: Vec<String> = tch::Tensor::read_safetensors(d.join("straight/weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    for buffer in ["features.1.running_mean", "features.1.running_var", "features.5.num_batches_tracked"] {
        assert!(names.iter().any(|n| n == buffer), "{buffer} in weights.safetensors: {names:?}");
    }

    // An abort in the middle of the third checkpoint write, as a kill -9 at that instant.
    let out = Command::new(BIN)
        .args(train_args(d, "aborted", &sets))
        .current_dir(d)
        .env_remove("LD_LIBRARY_PATH")
        .env("TORCHFIT_FAULT", "abort-during-checkpoint:3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault fired");

    // A real kill -9 once the first checkpoint is written.
    let last = d.join("killed/checkpoint/last.safetensors");
    let mut child = spawn(d, &train_args(d, "killed", &sets));
    let started = Instant::now();
    while !last.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint within 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The resumed runs read the module from the run's own copy: net.pt, changed since the
    // runs started, is not read again.
    std::fs::write(d.join("net.pt"), b"changed since the run started").unwrap();
    assert_ok(&resume(d, "aborted"));
    assert_same_run(&d.join("straight"), &d.join("aborted"));
    let status = summary(&d.join("killed"))["status"].clone();
    println!("the kill -9 left the run {status}");
    if status != "finished" {
        assert_ok(&resume(d, "killed"));
    }
    assert_same_run(&d.join("straight"), &d.join("killed"));
}

/// metrics.csv's rows and weights.safetensors' tensors of two runs, within `rel`: losses
/// relative to themselves, weights relative to their tensor's largest magnitude.
fn assert_close_runs(one: &Path, two: &Path, rel: f64) {
    let (m1, m2) = (metrics_without_seconds(one), metrics_without_seconds(two));
    assert_eq!(m1.len(), m2.len(), "epochs");
    for (epoch, (a, b)) in m1.iter().zip(&m2).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= rel * x.abs().max(y.abs()).max(1e-12), "epoch {}: {x} vs {y}", epoch + 1);
        }
    }
    let read = |run: &Path| {
        let mut t = tch::Tensor::read_safetensors(run.join("weights.safetensors")).unwrap();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        t
    };
    let (w1, w2) = (read(one), read(two));
    assert_eq!(w1.iter().map(|t| &t.0).collect::<Vec<_>>(), w2.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((name, a), (_, b)) in w1.iter().zip(&w2) {
        let scale = a.abs().max().double_value(&[]).max(1e-12);
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= rel * scale, "{name}: largest difference {diff:e} of {scale}");
    }
}

/// The LSTM (with a LayerNorm, no BatchNorm: batch statistics would differ per shard) on two
/// processes trains what it trains on one.
#[test]
fn two_processes_under_torchrun_train_a_user_module_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(prepare("lstm", d));
    assert_ok(&torchfit(d, &train_args(d, "one", &[])));
    let args: Vec<&str> = [BIN].into_iter().chain(train_args(d, "two", &[])).collect();
    let two = torchrun(2, d, &args, &[], LIMIT).unwrap();
    assert_ok(&two);
    assert_eq!(summary(&d.join("two"))["world_size"].as_u64(), Some(2));
    assert_close_runs(&d.join("one"), &d.join("two"), 1e-5);
}

/// Each refused at start-up: exit 2, one line naming the file and what is wrong, and no
/// epoch trained.
#[test]
fn modules_torchfit_cannot_train_fail_before_the_first_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = python(&["bad", d.to_str().unwrap()]);
    if out.status.code() == Some(SKIP) {
        println!("{}", stdout(&out).trim());
        return;
    }
    assert_python_ok(&out, "bad");
    let cases: [(&str, &[&str]); 4] = [
        ("eager.pt", &["eager.pt", "TorchScript"]),
        ("two_inputs.pt", &["two_inputs.pt", "forward"]),
        ("seven.pt", &["seven.pt", "7", "10"]),
        ("no_grad.pt", &["no_grad.pt", "head.weight", "requires_grad"]),
    ];
    for (i, (file, words)) in cases.iter().enumerate() {
        let path = format!("model.path={}", d.join(file).display());
        let run = format!("run{i}");
        let out = torchfit(d, &train_args(d, &run, &[&path]));
        assert_fails_with(&out, words);
        assert!(!d.join(&run).join("metrics.csv").exists(), "{file}: no epoch trained");
    }
}

#[test]
fn bf16_trains_a_user_module_as_torch_autocast_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(prepare("lstm", d));
    assert_ok(&torchfit(d, &train_args(d, "run", &["training.precision=bf16"])));
    assert_eq!(summary(&d.join("run"))["precision"], "bf16");
    let run = d.join("run");
    let out = python(&["check_bf16", "lstm", d.to_str().unwrap(), run.to_str().unwrap()]);
    println!("{}", stdout(&out));
    assert_python_ok(&out, "check_bf16");
    assert!(stdout(&out).contains(" passed, 0 failed"), "{}", stdout(&out));
}

#[test]
fn a_sweep_tries_a_user_module_with_each_setting() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(prepare("lstm", d));
    let sweep = "base: config.yaml\nmethod: grid\nparameters:\n  training.optimizer.lr: {values: [0.001, 0.01]}\n  \
                 training.batch_size: {values: [16, 32]}\nmetric: loss\n";
    std::fs::write(d.join("sweep.yaml"), sweep).unwrap();
    let out = torchfit(d, &["sweep", "sweep.yaml", "--out", "sweep"]);
    assert_ok(&out);
    let mut reader = csv::Reader::from_path(d.join("sweep/results.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let loss = header.iter().position(|h| h == "best_loss").expect("a best_loss column");
    let losses: Vec<f64> = reader.records().map(|r| r.unwrap()[loss].parse().unwrap()).collect();
    assert_eq!(losses.len(), 4, "one row per trial");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    // Different settings train differently: the trials are real runs of the module.
    assert!(losses.iter().any(|l| (l - losses[0]).abs() > 1e-6), "{losses:?}");
}
