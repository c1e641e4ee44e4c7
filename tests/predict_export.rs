//! End-to-end tests of using a trained model: `predict` (column matching, delimiters, run
//! directories), `evaluate` and `export` (formats, other weights, interrupted runs), and
//! what each refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use torchfit::config::{Config, ModelConfig};
use torchfit::data::Preprocessing;
use torchfit::model::{Input, Mlp};

mod common;
use common::*;

/// Trains the Keras example (features x0..x9) for one epoch into `dir/<out>`.
fn keras_run(dir: &Path, out: &str, sets: &[&str]) -> PathBuf {
    let mut args = vec!["train", "--set", "training.epochs=1", "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", s]);
    }
    assert_ok(&torchfit(dir, &args));
    dir.join(out)
}

/// Trains a regression on `semi.csv`, a `;`-separated file with columns a, b, c and the
/// target y, into `dir/semi`.
fn semicolon_run(dir: &Path) -> PathBuf {
    let mut csv = String::from("a;b;c;y\n");
    for i in 0..60 {
        let (a, b, c) = (i as f64 / 10.0, (i % 7) as f64, ((i * 13) % 5) as f64);
        csv += &format!("{a};{b};{c};{}\n", a + 2.0 * b - c);
    }
    std::fs::write(dir.join("semi.csv"), csv).unwrap();
    let yaml = "name: semi\ndata: {kind: csv, path: semi.csv, target: y, delimiter: \";\"}\n\
                model: {hidden: [4]}\ntraining: {epochs: 2, batch_size: 16}\n";
    std::fs::write(dir.join("semi.yaml"), yaml).unwrap();
    assert_ok(&torchfit(dir, &["train", "semi.yaml", "--device", "cpu", "--quiet", "--out", "semi"]));
    dir.join("semi")
}

/// `rows` as CSV text: a header line (none when empty), then one line per row.
fn csv_text(header: &[&str], rows: &[Vec<f32>]) -> String {
    let mut text = if header.is_empty() { String::new() } else { header.join(",") + "\n" };
    for row in rows {
        text += &(row.iter().map(f32::to_string).collect::<Vec<_>>().join(",") + "\n");
    }
    text
}

#[test]
fn predict_and_evaluate_read_csv_with_the_runs_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    semicolon_run(d);
    let evaluate = torchfit(d, &["evaluate", "semi", "--data", "semi.csv"]);
    assert_ok(&evaluate);
    let names: Vec<String> = stdout(&evaluate).lines().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(names, ["loss", "mae"]);
    // The run's model.pt stands for the run.
    assert_eq!(stdout(&torchfit(d, &["evaluate", "semi/model.pt", "--data", "semi.csv"])), stdout(&evaluate));

    // predict picks a, b and c by name from the `;` header and ignores y; a run directory
    // stands for its model.pt.
    let from_model = torchfit(d, &["predict", "semi/model.pt", "semi.csv"]);
    assert_ok(&from_model);
    assert_eq!(stderr(&from_model), "");
    let text = stdout(&from_model);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 61, "{}", stdout(&from_model));
    assert_eq!(lines[0], "prediction");
    assert!(lines[1..].iter().all(|l| l.parse::<f32>().is_ok_and(f32::is_finite)), "{lines:?}");
    assert_eq!(stdout(&torchfit(d, &["predict", "semi", "semi.csv"])), stdout(&from_model));
}

#[test]
fn predict_matches_columns_by_name_and_by_order_only_when_no_name_matches() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keras_run(d, "run", &[]);
    let rows: Vec<Vec<f32>> = (0..3).map(|r| (0..10).map(|c| (r * 10 + c) as f32 / 7.0 - 2.0).collect()).collect();
    let x = Tensor::from_slice(&rows.concat()).reshape([3, 10]);
    x.write_npy(d.join("x.npy")).unwrap();
    let want = torchfit(d, &["predict", "run", "x.npy"]);
    assert_ok(&want);
    assert_eq!(stdout(&want).lines().count(), 4);

    // Shuffled named columns and an extra target column: picked by name, silently.
    let names: Vec<String> = (0..10).map(|i| format!("x{i}")).collect();
    let mut header: Vec<&str> = names.iter().map(String::as_str).rev().collect();
    header.push("y");
    let shuffled: Vec<Vec<f32>> = rows.iter().map(|r| r.iter().rev().copied().chain([99.0]).collect()).collect();
    std::fs::write(d.join("named.csv"), csv_text(&header, &shuffled)).unwrap();
    // No header at all: the first row is data, not lost.
    std::fs::write(d.join("bare.csv"), csv_text(&[], &rows)).unwrap();
    // A header that names none of the features: columns in order, with a warning.
    let other: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    std::fs::write(d.join("other.csv"), csv_text(&other.iter().map(String::as_str).collect::<Vec<_>>(), &rows))
        .unwrap();
    for (file, warning) in [
        ("named.csv", None),
        ("bare.csv", Some("torchfit: warning: bare.csv has no header row; taking its columns in order as x0, x1")),
        ("other.csv", Some("torchfit: warning: other.csv: the header names none of the model's features (x0, x1")),
    ] {
        let out = torchfit(d, &["predict", "run/model.pt", file]);
        assert_ok(&out);
        assert_eq!(stdout(&out), stdout(&want), "{file}");
        match warning {
            None => assert_eq!(stderr(&out), "", "{file}"),
            Some(w) => {
                assert!(stderr(&out).starts_with(w), "{file}: {}", stderr(&out));
                assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
            }
        }
    }

    // Some feature names but not all (one left out, one misspelt): an error naming them.
    let mut partial: Vec<&str> = names.iter().map(String::as_str).collect();
    partial[9] = "y";
    std::fs::write(d.join("partial.csv"), csv_text(&partial, &rows)).unwrap();
    partial[9] = "x_9";
    partial[3] = "X3";
    std::fs::write(d.join("misspelt.csv"), csv_text(&partial, &rows)).unwrap();
    let out = torchfit(d, &["predict", "run/model.pt", "partial.csv"]);
    assert_fails_with(&out, &["partial.csv: no column `x9` (the model's features are x0, x1, x2"]);
    assert_eq!(stdout(&out), "");
    let out = torchfit(d, &["predict", "run/model.pt", "misspelt.csv"]);
    assert_fails_with(&out, &["misspelt.csv: no column `x3` or `x9`"]);
    std::fs::create_dir(d.join("empty")).unwrap();
    let out = torchfit(d, &["predict", "empty", "x.npy"]);
    assert_fails_with(&out, &["empty is a directory without a model.pt; pass a run directory or a model.pt"]);
}

#[test]
fn evaluate_names_missing_features_and_suggests_target_only_for_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    semicolon_run(d);
    std::fs::write(d.join("no_b.csv"), "a;c;y\n1;2;3\n").unwrap();
    std::fs::write(d.join("no_y.csv"), "a;b;c\n1;2;3\n").unwrap();
    let out = torchfit(d, &["evaluate", "semi", "--data", "no_b.csv"]);
    assert_fails_with(&out, &["no_b.csv: no column `b` (the run's features are a, b, c)"]);
    assert!(!stderr(&out).contains("--target"), "{}", stderr(&out));
    let out = torchfit(d, &["evaluate", "semi", "--data", "no_y.csv"]);
    assert_fails_with(&out, &["no_y.csv: no column `y` for the target; use --target"]);
    // With --target naming a column the file has, the same file is fine.
    std::fs::write(d.join("renamed.csv"), "a;b;c;label\n1;2;3;4\n2;3;4;5\n").unwrap();
    assert_ok(&torchfit(d, &["evaluate", "semi", "--data", "renamed.csv", "--target", "label"]));
}

#[test]
fn export_takes_the_format_from_the_output_and_keeps_the_runs_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keras_run(d, "run", &[]);
    keras_run(d, "other", &["seed=9"]);
    let model = std::fs::read(d.join("run/model.pt")).unwrap();

    // --output x.safetensors writes safetensors, not a TorchScript zip.
    assert_ok(&torchfit(d, &["export", "run/model.pt", "--output", "w.safetensors"]));
    assert_eq!(Tensor::read_safetensors(d.join("w.safetensors")).unwrap().len(), 4);
    assert_fails_with(
        &torchfit(d, &["export", "run", "--format", "torchscript", "--output", "x.safetensors"]),
        &["--format torchscript contradicts --output x.safetensors, a safetensors file name"],
    );
    assert!(!d.join("x.safetensors").exists());

    // Other weights never overwrite the run's own model.pt, which must match its summary.
    let out = torchfit(d, &["export", "run", "--weights", "other/weights.safetensors"]);
    assert_fails_with(&out, &["--weights other/weights.safetensors: pass --output FILE too", "run/model.pt"]);
    let out = torchfit(d, &["export", "run", "--weights", "other/weights.safetensors", "--output", "run/model.pt"]);
    assert_fails_with(&out, &["--output run/model.pt is the run's own"]);
    assert_eq!(std::fs::read(d.join("run/model.pt")).unwrap(), model);

    // Errors about other weights name --weights, whatever the run's own model.init_from.
    std::fs::copy(d.join("other/weights.safetensors"), d.join("init.safetensors")).unwrap();
    keras_run(d, "tuned", &["model.init_from=init.safetensors"]);
    std::fs::remove_file(d.join("init.safetensors")).unwrap();
    assert_ok(&torchfit(d, &["export", "tuned", "--output", "tuned.pt"]));
    for (weights, words) in [
        ("nowhere.safetensors", "--weights nowhere.safetensors: no such file"),
        ("run/metrics.csv", "--weights run/metrics.csv: cannot read safetensors"),
    ] {
        let out = torchfit(d, &["export", "tuned", "--weights", weights, "--output", "x.pt"]);
        assert_fails_with(&out, &[words]);
        assert!(!stderr(&out).contains("init_from"), "{}", stderr(&out));
    }
    keras_run(d, "wide", &["model.hidden=[12]"]);
    let out = torchfit(d, &["export", "tuned", "--weights", "wide/weights.safetensors", "--output", "x.pt"]);
    assert_fails_with(&out, &["--weights wide/weights.safetensors: `0.weight` has shape [12, 10]"]);
}

#[test]
fn an_interrupted_run_exports_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = repo_file("configs/linear.yaml");
    let mut child = Command::new(BIN)
        .args(["train", config.to_str().unwrap(), "--device", "cpu", "--quiet", "--out", "run"])
        .args(["--set", "data.samples=3000", "--set", "training.batch_size=16", "--set", "training.epochs=50"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = d.join("run/checkpoint/last.safetensors");
    let start = Instant::now();
    while !last.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(start.elapsed() < Duration::from_secs(60), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_eq!(summary(&d.join("run"))["status"], "interrupted");

    let x = Tensor::randn([6, 8], (Kind::Float, Device::Cpu));
    x.write_npy(d.join("x.npy")).unwrap();
    assert_fails_with(
        &torchfit(d, &["predict", "run", "x.npy"]),
        &[
            "run has no model.pt: the run is interrupted",
            "torchfit export run --weights run/checkpoint/last.safetensors",
        ],
    );
    assert_fails_with(&torchfit(d, &["export", "run", "--output", "x.pt"]), &["its status is interrupted"]);
    let out = torchfit(d, &["export", "run", "--weights", "run/checkpoint/last.safetensors", "--output", "last.pt"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "wrote last.pt\n");

    // evaluate takes the checkpoint too, and says how when it is not given.
    let values = Vec::<f32>::try_from(x.flatten(0, 1)).unwrap();
    let labelled: Vec<Vec<f32>> = values.chunks(8).map(|r| r.iter().copied().chain([0.5, -0.5]).collect()).collect();
    let header: Vec<String> = (0..8).map(|i| format!("x{i}")).chain(["y0".into(), "y1".into()]).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    std::fs::write(d.join("xy.csv"), csv_text(&header, &labelled)).unwrap();
    assert_fails_with(
        &torchfit(d, &["evaluate", "run", "--data", "xy.csv"]),
        &["its status is interrupted", "pass --weights run/checkpoint/last.safetensors"],
    );
    let out = torchfit(d, &["evaluate", "run", "--data", "xy.csv", "--weights", "run/checkpoint/last.safetensors"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("loss "), "{}", stdout(&out));

    // The export computes what the checkpoint's weights do.
    let out = torchfit(d, &["predict", "last.pt", "x.npy"]);
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("prediction_0,prediction_1"));
    let got: Vec<f32> =
        lines.flat_map(|l| l.split(',').map(|v| v.parse::<f32>().unwrap()).collect::<Vec<_>>()).collect();
    let run = d.join("run");
    let config = Config::load(Some(&run.join("config.yaml")), &[]).unwrap();
    let pre: Preprocessing = serde_json::from_slice(&std::fs::read(run.join("preprocessing.json")).unwrap()).unwrap();
    let model =
        Mlp::new(&ModelConfig { init_from: None, ..config.model }, &Input::numeric_only(8), 2, Device::Cpu).unwrap();
    torchfit::model::load_weights(&model, &last).unwrap();
    let scale = |v: &[f32]| Tensor::from_slice(v);
    let want = model.forward(&pre.apply(&x).unwrap()) * scale(&pre.target_std) + scale(&pre.target_mean);
    let want = Vec::<f32>::try_from(want.flatten(0, 1)).unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
    }
}

#[test]
fn torchscript_that_torchfit_did_not_write_or_with_broken_extra_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keras_run(d, "run", &[]);
    let python_path = env!("TORCHFIT_TORCH_PYTHONPATH");
    assert!(
        Path::new(python_path).join("torch/__init__.py").is_file(),
        "no torch Python package at {python_path}: build with the pip-installed libtorch (make test) to run this test"
    );
    // A scripted PyTorch model, and torchfit's model.pt saved again with one extra file
    // broken: config.yaml unparsable, features.json present but empty.
    let script = "import torch\n\
                  m = torch.nn.Sequential(torch.nn.BatchNorm1d(10), torch.nn.Linear(10, 1)).eval()\n\
                  torch.jit.save(torch.jit.script(m), 'foreign.pt')\n\
                  extra = {'config.yaml': '', 'features.json': ''}\n\
                  run = torch.jit.load('run/model.pt', _extra_files=extra)\n\
                  torch.jit.save(run, 'config.pt', _extra_files={**extra, 'config.yaml': 'data: [1, 2'})\n\
                  torch.jit.save(run, 'features.pt', _extra_files={**extra, 'features.json': ''})\n";
    let out = Command::new("python3").args(["-c", script]).current_dir(d).env("PYTHONPATH", python_path).output();
    let out = out.expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Tensor::zeros([2, 10], (Kind::Float, Device::Cpu)).write_npy(d.join("x.npy")).unwrap();
    assert_ok(&torchfit(d, &["predict", "run/model.pt", "x.npy"]));
    for (model, words) in [
        ("foreign.pt", "foreign.pt is not a torchfit model (it has no extra/features.json)"),
        ("config.pt", "config.pt: extra/config.yaml: YAML syntax error"),
        ("features.pt", "features.pt: extra/features.json is not a JSON list of names"),
    ] {
        let out = torchfit(d, &["predict", model, "x.npy"]);
        assert_fails_with(&out, &[words]);
    }
}

#[test]
fn help_says_what_each_command_accepts() {
    let dir = tempfile::tempdir().unwrap();
    for (cmd, words) in [
        ("predict", &["run directory", "model.pt", "data.delimiter", ".npy", ".parquet", "no header"][..]),
        ("evaluate", &["run directory", "model.pt", "data.delimiter", ".parquet", "--weights"][..]),
        ("export", &["run directory", ".safetensors", "required with --weights"][..]),
    ] {
        let out = torchfit(dir.path(), &[cmd, "--help"]);
        assert_ok(&out);
        let text = stdout(&out).split_whitespace().collect::<Vec<_>>().join(" ");
        for word in words {
            assert!(text.contains(word), "{cmd} --help lacks {word:?}: {text}");
        }
    }
}

/// Copies a run directory (files and one level of folders, as a run has).
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("checkpoint")).unwrap();
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        std::fs::copy(&entry, to.join(rel)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A labelled CSV for `run`: its features' columns and its target's, a few rows.
fn labelled_csv(run: &Path) -> String {
    let pre: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("preprocessing.json")).unwrap()).unwrap();
    let names =
        |key: &str| pre[key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (features, target) = (names("feature_names"), names("target_names"));
    let label = pre["labels"].as_array().map(|l| l[0].as_str().unwrap().to_string());
    let mut text = features.iter().chain(&target).cloned().collect::<Vec<_>>().join(",") + "\n";
    for i in 0..5 {
        let cells: Vec<String> =
            features.iter().enumerate().map(|(j, _)| format!("{}", (i * 7 + j) as f32 / 10.0)).collect();
        text += &format!("{},{}\n", cells.join(","), label.clone().unwrap_or_else(|| format!("{i}.5")));
    }
    text
}

/// Every command that reads `run`, each expected to refuse it with one line naming `file`.
fn assert_every_reader_refuses(d: &Path, run: &str, file: &str) {
    let input = format!("{run}.csv");
    let readers: Vec<Vec<String>> = [
        vec!["predict", run, &input],
        vec!["predict", &format!("{run}/model.pt"), &input],
        vec!["evaluate", run, "--data", &input],
        vec!["export", run, "--output", "again.pt"],
        vec!["export", run, "--output", "again.onnx"],
        vec!["export", run, "--output", "again.safetensors"],
        vec!["export", run, "--format", "triton", "--output", "repo"],
        vec!["train", "--resume", run, "--set", "training.epochs=3", "--quiet"],
    ]
    .iter()
    .map(|args| args.iter().map(|a| a.to_string()).collect())
    .collect();
    let named = format!("{run}/{file}");
    for args in &readers {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = torchfit(d, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?} accepted a changed {file}: {}", stderr(&out));
        assert_fails_with(&out, &[&named]);
    }
    // The server refuses to start (rather than serve the changed run).
    let mut server = Command::new(BIN)
        .args(["serve", run, "--port", "0", "--quiet"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = server.kill();
            let _ = server.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = server.wait_with_output().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(2), "serve started on a changed {file}");
    assert!(stderr(&out).contains(&named), "{}", stderr(&out));
}

/// A run's artifacts are checked against its manifest.json by every command that reads it:
/// an edit to preprocessing.json (valid JSON, other numbers), flipped bytes in the weights,
/// another run's model.pt, or a changed checkpoint are refused, naming the file.
#[test]
fn every_reader_refuses_a_run_changed_after_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keras_run(d, "keras", &[]);
    keras_run(d, "other", &["seed=7"]);
    let moons = repo_file("configs/moons.yaml").display().to_string();
    assert_ok(&torchfit(
        d,
        &["train", &moons, "--device", "cpu", "--quiet", "--out", "moons", "--set", "training.epochs=1"],
    ));
    for run in ["keras", "moons"] {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(run).join("manifest.json")).unwrap()).unwrap();
        for file in
            ["config.yaml", "preprocessing.json", "weights.safetensors", "model.pt", "checkpoint/last.safetensors"]
        {
            assert_eq!(manifest["files"][file].as_str().map(str::len), Some(64), "{run}: {file} in {manifest}");
        }
    }
    let damages: Vec<(&str, &str, Box<dyn Fn(&Path)>)> = vec![
        (
            "keras",
            "preprocessing.json",
            Box::new(|run: &Path| {
                edit_json(&run.join("preprocessing.json"), |p| p["target_mean"] = serde_json::json!([5.0]))
            }),
        ),
        (
            "moons",
            "preprocessing.json",
            Box::new(|run: &Path| {
                edit_json(&run.join("preprocessing.json"), |p| {
                    let mut labels = p["labels"].as_array().unwrap().clone();
                    labels.reverse();
                    p["labels"] = labels.into();
                })
            }),
        ),
        (
            "keras",
            "weights.safetensors",
            Box::new(|run: &Path| {
                let path = run.join("weights.safetensors");
                let mut bytes = std::fs::read(&path).unwrap();
                let n = bytes.len();
                for b in &mut bytes[n - 16..n - 8] {
                    *b ^= 0x5a;
                }
                std::fs::write(&path, bytes).unwrap();
            }),
        ),
        (
            "keras",
            "model.pt",
            Box::new(|run: &Path| {
                let other = run.parent().unwrap().join("other/model.pt");
                std::fs::copy(other, run.join("model.pt")).unwrap();
            }),
        ),
        (
            "keras",
            "checkpoint/last.safetensors",
            Box::new(|run: &Path| {
                let other = run.parent().unwrap().join("other/checkpoint/last.safetensors");
                std::fs::copy(other, run.join("checkpoint/last.safetensors")).unwrap();
            }),
        ),
    ];
    for (i, (from, file, damage)) in damages.iter().enumerate() {
        let run = format!("changed{i}");
        copy_run(&d.join(from), &d.join(&run));
        std::fs::write(d.join(format!("{run}.csv")), labelled_csv(&d.join(from))).unwrap();
        // Unchanged, the copy reads as its original does.
        assert_ok(&torchfit(d, &["predict", &run, &format!("{run}.csv")]));
        assert_ok(&torchfit(d, &["evaluate", &run, "--data", &format!("{run}.csv")]));
        damage(&d.join(&run));
        assert_every_reader_refuses(d, &run, file);
    }
    // Re-exporting a run's own model.pt from its own weights keeps it readable.
    assert_ok(&torchfit(d, &["export", "keras"]));
    std::fs::write(d.join("keras.csv"), labelled_csv(&d.join("keras"))).unwrap();
    assert_ok(&torchfit(d, &["predict", "keras", "keras.csv"]));
    // A run without a manifest (an older torchfit's) is read, with a warning.
    std::fs::remove_file(d.join("keras/manifest.json")).unwrap();
    let out = torchfit(d, &["predict", "keras", "keras.csv"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("warning: keras has no manifest.json"), "{}", stderr(&out));
}

fn edit_json(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// A damaged model.pt (bytes flipped inside the archive) is one line naming the file.
#[test]
fn a_garbled_model_pt_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keras_run(d, "run", &[]);
    let mut bytes = std::fs::read(d.join("run/model.pt")).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 3..n / 3 + 200] {
        *b ^= 0xff;
    }
    std::fs::create_dir(d.join("loose")).unwrap();
    std::fs::write(d.join("loose/model.pt"), bytes).unwrap();
    Tensor::zeros([2, 10], (Kind::Float, Device::Cpu)).write_npy(d.join("x.npy")).unwrap();
    let out = torchfit(d, &["predict", "loose/model.pt", "x.npy"]);
    assert_fails_with(&out, &["loose/model.pt is not a TorchScript archive that libtorch can load"]);
    assert!(!stderr(&out).contains("Internal torch error"), "{}", stderr(&out));
}
