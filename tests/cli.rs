//! End-to-end tests: the real `torchfit` binary, run in a temporary directory.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use torchfit::config::{Config, DeviceChoice, ModelConfig};
use torchfit::model::{Input, Mlp};

mod common;
use common::*;

/// Trains the Keras example for `epochs` epochs into `dir/run`.
fn short_run(dir: &Path, epochs: usize, extra: &[&str]) -> PathBuf {
    let epochs = format!("training.epochs={epochs}");
    let mut args = vec!["train", "--set", &epochs, "--device", "cpu", "--out", "run", "--quiet"];
    args.extend(extra);
    assert_ok(&torchfit(dir, &args));
    dir.join("run")
}

#[test]
fn a_short_run_writes_every_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let run = short_run(dir.path(), 3, &[]);
    let files = [
        "config.yaml",
        "preprocessing.json",
        "split.json",
        "metrics.csv",
        "loss.png",
        "model.pt",
        "weights.safetensors",
        "summary.json",
        "model_summary.txt",
        "manifest.json",
        "train.lock",
    ];
    for file in files {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    // No temporary files are left beside them; the last checkpoint sits in checkpoint/.
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), files.len() + 1);
    let checkpoints: Vec<_> =
        std::fs::read_dir(run.join("checkpoint")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(checkpoints, ["last.safetensors"]);

    let (header, rows) = read_csv(&run.join("metrics.csv"));
    assert_eq!(header, ["epoch", "loss", "mae", "lr", "seconds"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r[0]).collect::<Vec<_>>(), [1.0, 2.0, 3.0]);
    assert!(rows.iter().all(|r| r[1].is_finite() && r[1] > 0.0 && r[3] == 0.001));

    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "finished");
    assert_eq!(summary["epochs"], 3);
    assert_eq!(summary["steps"], 3 * 32); // 1000 = 31 x 32 + 8: 32 batches per epoch
    assert_eq!(summary["parameters"], 10 * 10 + 10 + 10 + 1);
    assert_eq!(summary["device"], "cpu");
    assert_eq!(summary["final_metrics"]["loss"].as_f64().unwrap(), rows[2][1]);
    // The libtorch this build linked, whichever it is (a GPU build may use another).
    assert_eq!(summary["libtorch_version"], torchfit::device::libtorch_version());
    assert!(summary["train_seconds"].as_f64().unwrap() <= summary["total_seconds"].as_f64().unwrap());

    let config = Config::load(Some(&run.join("config.yaml")), &[]).unwrap();
    assert_eq!(config.training.epochs, 3);
    assert_eq!(config.device, DeviceChoice::Cpu);

    let png = std::fs::read(run.join("loss.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let module = tch::CModule::load(run.join("model.pt")).unwrap();
    let y = module.forward_ts(&[Tensor::zeros([5, 10], (Kind::Float, Device::Cpu))]).unwrap();
    assert_eq!(y.size(), [5, 1]);
}

#[test]
fn without_out_the_run_goes_under_runs_with_name_and_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let out = torchfit(dir.path(), &["train", "--set", "training.epochs=1", "--device", "cpu"]);
    assert_ok(&out);
    let runs: Vec<String> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 1);
    let name = &runs[0];
    assert!(
        name.starts_with("keras_example-")
            && name.ends_with('Z')
            && name.len() == "keras_example-20260101T000000Z".len(),
        "{name}"
    );
    assert!(stdout(&out).contains(&format!("run saved to runs/{name}")), "{}", stdout(&out));
    assert!(dir.path().join("runs").join(name).join("summary.json").is_file());
}

#[test]
fn progress_is_one_line_per_epoch_off_a_terminal_and_quiet_prints_only_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = torchfit(dir.path(), &["train", "--set", "training.epochs=2", "--device", "cpu", "--out", "a"]);
    assert_ok(&out);
    let log = stderr(&out);
    assert!(log.lines().any(|l| l.starts_with("epoch 1/2  loss ") && l.contains("mae")), "{log}");
    assert!(log.lines().any(|l| l.starts_with("epoch 2/2  loss ")), "{log}");
    let quiet =
        torchfit(dir.path(), &["train", "--set", "training.epochs=2", "--device", "cpu", "--out", "b", "--quiet"]);
    assert_ok(&quiet);
    assert_eq!(stderr(&quiet), "");
    assert!(stdout(&quiet).starts_with("run saved to b\n2 epochs on cpu: loss "), "{}", stdout(&quiet));
}

#[test]
fn predict_on_the_export_equals_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let run = short_run(dir.path(), 2, &["--set", "model.hidden=[16, 8]", "--set", "model.activation=tanh"]);

    // The trained weights, loaded into the library's in-memory model.
    let cfg = ModelConfig {
        init_from: Some(run.join("weights.safetensors")),
        ..Config::load(Some(&run.join("config.yaml")), &[]).unwrap().model
    };
    let model = Mlp::new(&cfg, &Input::numeric_only(10), 1, Device::Cpu).unwrap();
    let x = Tensor::randn([7, 10], (Kind::Float, Device::Cpu));
    let want = Vec::<f32>::try_from(model.forward(&x).flatten(0, 1)).unwrap();

    let values = Vec::<f32>::try_from(x.flatten(0, 1)).unwrap();
    let mut csv = (0..10).map(|i| format!("f{i}")).collect::<Vec<_>>().join(",") + "\n";
    for row in values.chunks(10) {
        csv += &(row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",") + "\n");
    }
    std::fs::write(dir.path().join("x.csv"), csv).unwrap();
    x.write_npy(dir.path().join("x.npy")).unwrap();

    let from_stdout = torchfit(dir.path(), &["predict", "run/model.pt", "x.csv"]);
    assert_ok(&from_stdout);
    let from_npy = torchfit(dir.path(), &["predict", "run/model.pt", "x.npy", "--output", "p.csv"]);
    assert_ok(&from_npy);
    for text in [stdout(&from_stdout), std::fs::read_to_string(dir.path().join("p.csv")).unwrap()] {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("prediction"));
        let got: Vec<f32> = lines.map(|l| l.parse().unwrap()).collect();
        assert_eq!(got.len(), 7);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "{g} vs {w}");
        }
    }
}

#[test]
fn training_on_a_learnable_target_cuts_the_loss_by_90_percent() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo_file("configs/linear.yaml");
    let out = torchfit(dir.path(), &["train", config.to_str().unwrap(), "--device", "cpu", "--out", "run", "--quiet"]);
    assert_ok(&out);
    let (header, rows) = read_csv(&dir.path().join("run/metrics.csv"));
    assert_eq!(header, ["epoch", "loss", "mae", "rmse", "lr", "seconds"]);
    let (first, last) = (rows[0][1], rows[rows.len() - 1][1]);
    assert!(last < 0.1 * first, "loss went from {first} to {last}");
    // rmse is the square root of the epoch's mean squared error, which the mse loss is.
    let last_row = &rows[rows.len() - 1];
    assert!((last_row[3] - last_row[1].sqrt()).abs() < 1e-4, "{last_row:?}");
}

#[test]
fn one_seed_gives_identical_metrics_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = |out: &str, seed: &str| {
        assert_ok(&torchfit(
            dir.path(),
            &["train", "--set", "training.epochs=3", "--device", "cpu", "--seed", seed, "--out", out, "--quiet"],
        ));
        let (header, rows) = read_csv(&dir.path().join(out).join("metrics.csv"));
        // Everything but the wall time per epoch, which no seed fixes.
        let seconds = header.iter().position(|h| h == "seconds").unwrap();
        rows.into_iter()
            .map(|mut r| {
                r.remove(seconds);
                r
            })
            .collect::<Vec<_>>()
    };
    let a = metrics("a", "11");
    assert_eq!(a, metrics("b", "11"));
    assert_ne!(a, metrics("c", "12"));
    let weights = |run: &str| std::fs::read(dir.path().join(run).join("weights.safetensors")).unwrap();
    assert_eq!(weights("a"), weights("b"));
}

#[test]
fn keras_and_torch_semantics_give_different_runs() {
    let dir = tempfile::tempdir().unwrap();
    let loss = |out: &str, semantics: &str| {
        let set = format!("training.optimizer.semantics={semantics}");
        assert_ok(&torchfit(
            dir.path(),
            &[
                "train",
                "--set",
                "training.epochs=2",
                "--set",
                &set,
                "--set",
                "training.optimizer.eps=0.1",
                "--device",
                "cpu",
                "--out",
                out,
                "--quiet",
            ],
        ));
        read_csv(&dir.path().join(out).join("metrics.csv")).1[1][1]
    };
    assert_ne!(loss("k", "keras"), loss("t", "torch"));
}

#[test]
fn config_prints_the_resolved_yaml_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let out = torchfit(dir.path(), &["config", "--set", "training.optimizer.lr=0.01", "--set", "model.hidden=[3]"]);
    assert_ok(&out);
    let config = Config::parse(&stdout(&out), "stdout", &[]).unwrap();
    assert_eq!(config.training.optimizer.lr, 0.01);
    assert_eq!(config.model.hidden, [3]);
    assert_eq!(config.training.optimizer.eps, Some(1e-7));
    assert_eq!(config.name, "keras_example");
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    // For each subcommand, words only its own help has: a flag it takes, or for info (which
    // takes none) its description.
    let cases: &[(&str, &[&str])] = &[
        ("train", &["--resume <DIR>", "--device <DEVICE>", "--seed <SEED>", "--quiet"]),
        ("config", &["--set <KEY=VALUE>", "Print the resolved config"]),
        ("predict", &["--output <FILE>", "--proba", "<MODEL>", "<INPUT>"]),
        ("predict", &["--keep <COLUMN>"]),
        ("evaluate", &["--data <FILE>", "--target <COLUMN>", "<RUN>", "--format <FORMAT>"]),
        ("runs", &["--metric <NAME>", "--plot <METRIC>", "--format <FORMAT>", "[DIRS]..."]),
        ("export", &["--format <FORMAT>", "--weights <FILE>", "torchscript, safetensors"]),
        ("info", &["Show torchfit and libtorch versions, CUDA devices"]),
    ];
    for (cmd, words) in cases {
        let out = torchfit(dir.path(), &[cmd, "--help"]);
        assert_ok(&out);
        let help = stdout(&out);
        assert!(help.contains(&format!("Usage: torchfit {cmd}")), "{cmd}: {help}");
        for word in *words {
            assert!(help.contains(word), "{cmd}: expected {word:?} in {help}");
        }
    }
    // And the top-level help lists every one of them.
    let out = torchfit(dir.path(), &["--help"]);
    assert_ok(&out);
    for (cmd, _) in cases {
        assert!(stdout(&out).lines().any(|l| l.trim_start().starts_with(cmd)), "{cmd} missing from {}", stdout(&out));
    }
}

#[test]
fn info_reports_versions_and_cuda() {
    let out = torchfit(Path::new("."), &["info"]);
    assert_ok(&out);
    let text = stdout(&out);
    // The libtorch this build linked, whichever it is (a GPU build may use another).
    let version = torchfit::device::libtorch_version();
    assert!(version.starts_with(|c: char| c.is_ascii_digit()), "build.rs found no libtorch version: {version}");
    assert!(text.lines().any(|l| l == format!("libtorch {version}")), "{text}");
    assert!(text.contains("cuda available: "), "{text}");
    assert!(text.contains("cudnn available: "), "{text}");
    // libtorch's CUDA backend is loaded at run time, where there is a driver; either way
    // the line says which, and why not.
    let backend = text.lines().find_map(|l| l.strip_prefix("cuda backend: ")).unwrap_or_default();
    assert!(
        backend.starts_with("loaded (CUDA runtime ") || backend.starts_with("not loaded (no NVIDIA driver"),
        "{text}"
    );
}

/// The CUDA libraries are not linked but loaded at run time (src/cuda.rs): forced to load on
/// any machine, they register libtorch's CUDA backend, which reports the CUDA runtime it was
/// built with, GPU or not; told not to, they stay out.
#[test]
fn the_cuda_backend_loads_at_run_time() {
    let info = |load: &str| {
        let out = std::process::Command::new(BIN).arg("info").env(torchfit::cuda::LOAD_ENV, load).output().unwrap();
        assert_ok(&out);
        stdout(&out)
    };
    let version = torchfit::device::libtorch_version();
    let forced = info("1");
    if let Some((_, cuda)) = version.split_once("+cu") {
        // 2.13.0+cu130: CUDA 13.0.
        let runtime = format!("{}.{}", &cuda[..cuda.len() - 1], &cuda[cuda.len() - 1..]);
        assert!(forced.contains(&format!("cuda backend: loaded (CUDA runtime {runtime})")), "{forced}");
    }
    let skipped = info("0");
    assert!(skipped.contains("cuda backend: not loaded (TORCHFIT_LOAD_CUDA=0)"), "{skipped}");
    assert!(skipped.contains("cuda available: false"), "{skipped}");
}

#[test]
fn predict_rejects_inputs_that_do_not_fit_the_model() {
    let dir = tempfile::tempdir().unwrap();
    short_run(dir.path(), 1, &[]);
    std::fs::write(dir.path().join("narrow.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(dir.path().join("bad.csv"), "a,b,c,d,e,f,g,h,i,j\n1,2,3,4,5,6,7,8,9,x\n").unwrap();
    std::fs::write(dir.path().join("gap.csv"), "a,b,c,d,e,f,g,h,i,j\n1,2,3,4,5,6,7,8,9,\n").unwrap();
    let cases = [
        ("gap.csv", "gap.csv: row 1 column `x9` is missing, and run/model.pt fills missing values only when trained with data.missing: mean"),
        ("narrow.csv", "narrow.csv: has 2 feature column(s), but run/model.pt expects 10"),
        ("bad.csv", "bad.csv: row 1 (line 2), column `j`: \"x\" is not a number"),
        ("none.csv", "cannot read none.csv"),
    ];
    for (input, words) in cases {
        let out = torchfit(dir.path(), &["predict", "run/model.pt", input]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(words), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn export_rewrites_a_run_from_its_weights_or_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    short_run(d, 2, &[]);
    assert_ok(&torchfit(d, &["train", "--set", "training.epochs=1", "--seed", "9", "--out", "other", "--quiet"]));
    std::fs::write(d.join("x.csv"), "a,b,c,d,e,f,g,h,i,j\n1,2,3,4,5,6,7,8,9,10\n-1,0,1,0,-1,0,1,0,-1,0\n").unwrap();
    let predict = |model: &str| {
        let out = torchfit(d, &["predict", model, "x.csv"]);
        assert_ok(&out);
        stdout(&out)
    };
    let out = torchfit(d, &["export", "run", "--output", "again.pt"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "wrote again.pt\n");
    assert_eq!(predict("again.pt"), predict("run/model.pt"));

    assert_ok(&torchfit(d, &["export", "run", "--format", "safetensors", "--output", "w.safetensors"]));
    let read = |file: &str| {
        let mut tensors = Tensor::read_safetensors(d.join(file)).unwrap();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    };
    let (original, exported) = (read("run/weights.safetensors"), read("w.safetensors"));
    assert_eq!(original.len(), exported.len());
    for ((n1, t1), (n2, t2)) in original.iter().zip(&exported) {
        assert!(n1 == n2 && t1.equal(t2), "{n1}");
    }

    // Other weights of the same shapes: the export computes with them instead.
    assert_ok(&torchfit(d, &["export", "run", "--weights", "other/weights.safetensors", "--output", "swapped.pt"]));
    assert_eq!(predict("swapped.pt"), predict("other/model.pt"));
    assert_ne!(predict("swapped.pt"), predict("run/model.pt"));

    let not_a_run = torchfit(d, &["export", "."]);
    assert_eq!(not_a_run.status.code(), Some(2));
    assert!(stderr(&not_a_run).contains("is not a finished torchfit run"), "{}", stderr(&not_a_run));
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    // `torchfit info | true`: the pipe is closed before torchfit writes to it.
    let mut child = std::process::Command::new(BIN)
        .arg("info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}
