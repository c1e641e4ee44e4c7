//! `logging.tensorboard` end to end, read back by TensorBoard's own code
//! (tests/python/tensorboard_check.py): every scalar equals metrics.csv, train and validation,
//! the learning rate too; the HParams plugin parses the run's config as its hyperparameters;
//! a run killed with SIGKILL (or interrupted) and resumed has exactly one value per epoch; a
//! sweep's trials are sessions of one HParams experiment, also as `tensorboard --logdir` serves
//! them; a logdir that cannot be made is a warning.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const CHECK: PythonCheck = PythonCheck("tensorboard_check.py");

/// Runs the check script; false (the reason printed) when its packages cannot be installed.
fn check(args: &[&str]) -> bool {
    let out = CHECK.run(args);
    if out.status.code() == Some(PythonCheck::SKIP) {
        println!("{}", stdout(&out).trim());
        return false;
    }
    CHECK.assert_ok(&out, args[0]);
    println!("{}", stdout(&out).trim());
    true
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// friedman1 regression with validation, in `dir/r.yaml`.
const REGRESSION: &str = "name: reg
seed: 1
device: cpu
data: {kind: friedman1, samples: 300, features: 6, noise: 0.5, validation_split: 0.2}
model: {hidden: [16, 8], activation: relu}
training:
  epochs: 5
  batch_size: 32
  loss: mse
  metrics: [mae, r2]
  threads: 1
  optimizer: {kind: adam, lr: 0.003}
  lr_schedule: {kind: cosine, warmup_epochs: 1}
";

#[test]
fn tensorboard_reads_every_scalar_and_the_hparams_of_a_classifier() {
    let d = tempfile::tempdir().unwrap();
    colour_classifier(d.path(), 400, "hidden: [16]", "epochs: 4, batch_size: 32");
    assert_ok(&train_config(d.path(), "t.yaml", "run", &["logging.tensorboard=true"]));
    let (run, logdir) = (d.path().join("run"), d.path().join("run/tensorboard"));
    assert!(logdir.join("train").is_dir() && logdir.join("validation").is_dir());
    if check(&["scalars", path(&logdir), path(&run)]) {
        assert!(check(&["hparams", path(&logdir), path(&run), "STATUS_SUCCESS"]));
    }
}

#[test]
fn a_tensorboard_directory_holds_the_run_under_its_name() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("r.yaml"), REGRESSION).unwrap();
    assert_ok(&train_config(d.path(), "r.yaml", "runs/reg-1", &["logging.tensorboard=boards"]));
    let (run, logdir) = (d.path().join("runs/reg-1"), d.path().join("boards/reg-1"));
    assert!(!run.join("tensorboard").exists());
    // Another run of the same directory name logs beside it, leaving its files alone.
    let sets = ["logging.tensorboard=boards", "training.epochs=3"];
    assert_ok(&train_config(d.path(), "r.yaml", "elsewhere/reg-1", &sets));
    let (other, other_logdir) = (d.path().join("elsewhere/reg-1"), d.path().join("boards/reg-1-2"));
    if check(&["scalars", path(&logdir), path(&run)]) {
        assert!(check(&["hparams", path(&logdir), path(&run), "STATUS_SUCCESS"]));
        assert!(check(&["scalars", path(&other_logdir), path(&other)]));
    }
    // Resumed, each run finds its own.
    assert_ok(&torchfit(d.path(), &["train", "--resume", "elsewhere/reg-1", "--set", "training.epochs=4", "-q"]));
    if check(&["scalars", path(&other_logdir), path(&other)]) {
        assert!(check(&["scalars", path(&logdir), path(&run)]));
        assert!(!d.path().join("boards/reg-1-3").exists());
    }
}

/// The train event files' total size: it grows by one record each epoch.
fn train_events_size(logdir: &Path) -> u64 {
    let files = std::fs::read_dir(logdir.join("train")).into_iter().flatten().flatten();
    files.filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum()
}

/// `torchfit train t.yaml --out run` with TensorBoard logging, started in `dir`.
fn spawn_training(dir: &Path) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["train", "t.yaml", "--device", "cpu", "--quiet", "--out", "run", "--set", "logging.tensorboard=true"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn metrics_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv")).map_or(0, |text| text.lines().count().saturating_sub(1))
}

#[test]
fn a_run_killed_and_resumed_has_one_value_per_epoch() {
    let d = tempfile::tempdir().unwrap();
    colour_classifier(d.path(), 3000, "hidden: [64, 64]", "epochs: 12, batch_size: 8, checkpoint_every: 3");
    let (run, logdir) = (d.path().join("run"), d.path().join("run/tensorboard"));
    let mut child = spawn_training(d.path());
    // Killed once an epoch after the first checkpoint (epoch 3) is in the event files: the
    // resumed run trains it again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metrics_rows(&run) < 3 {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no checkpoint at epoch 3");
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_checkpoint = train_events_size(&logdir);
    while train_events_size(&logdir) == at_checkpoint {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no epoch after the checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let checkpointed = metrics_rows(&run);
    assert!(checkpointed < 12, "the run finished before it was killed");
    let out = CHECK.run(&["steps", path(&logdir)]);
    if out.status.code() == Some(PythonCheck::SKIP) {
        return println!("{}", stdout(&out).trim());
    }
    let steps: Vec<usize> = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(steps.iter().max() > Some(&checkpointed), "epochs {steps:?} written, {checkpointed} checkpointed");
    // A record cut short, as a kill in the middle of a write leaves one.
    let train = std::fs::read_dir(logdir.join("train")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&train).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    std::fs::write(&train, bytes).unwrap();
    let resumed: Output = torchfit(d.path(), &["train", "--resume", "run", "--quiet"]);
    assert_ok(&resumed);
    assert!(!stderr(&resumed).contains("warning"), "{}", stderr(&resumed));
    assert_eq!(metrics_rows(&run), 12);
    if check(&["scalars", path(&logdir), path(&run)]) {
        assert!(check(&["hparams", path(&logdir), path(&run), "STATUS_SUCCESS"]));
    }
}

#[test]
fn a_sweeps_trials_are_sessions_of_the_hparams_tab() {
    let d = tempfile::tempdir().unwrap();
    let base = REGRESSION.replace("epochs: 5", "epochs: 3") + "logging: {tensorboard: true}\n";
    std::fs::write(d.path().join("base.yaml"), base).unwrap();
    let sweep = "base: base.yaml\nmethod: grid\nparameters:\n  training.optimizer.lr: {values: [0.001, 0.01]}\n";
    std::fs::write(d.path().join("sweep.yaml"), sweep).unwrap();
    assert_ok(&torchfit(d.path(), &["sweep", "sweep.yaml", "--out", "sw", "--jobs", "2"]));
    if check(&["sessions", path(&d.path().join("sw")), "2"]) {
        assert!(check(&["server", path(&d.path().join("sw")), "2"]));
    }
}

#[test]
fn a_logdir_that_cannot_be_made_is_a_warning() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("r.yaml"), REGRESSION).unwrap();
    std::fs::write(d.path().join("file"), "not a directory").unwrap();
    let out = train_config(d.path(), "r.yaml", "run", &["logging.tensorboard=file/boards"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("warning: tensorboard: cannot create file/boards/run"), "{err}");
    assert_eq!(summary(&d.path().join("run"))["status"], "finished");
}

#[test]
fn an_interrupted_run_ends_unknown_and_its_resumption_succeeds() {
    let d = tempfile::tempdir().unwrap();
    colour_classifier(d.path(), 3000, "hidden: [64, 64]", "epochs: 8, batch_size: 8");
    let (run, logdir) = (d.path().join("run"), d.path().join("run/tensorboard"));
    let mut child = spawn_training(d.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sizes = vec![];
    // Interrupted once two epochs are in the event files (the header, then one record each).
    while sizes.len() < 3 {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no two epochs");
        let size = train_events_size(&logdir);
        if size > 0 && sizes.last() != Some(&size) {
            sizes.push(size);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    server::signal(child.id(), "INT");
    assert!(!child.wait().unwrap().success());
    assert_eq!(summary(&run)["status"], "interrupted");
    if !check(&["hparams", path(&logdir), path(&run), "STATUS_UNKNOWN"]) {
        return;
    }
    assert!(check(&["scalars", path(&logdir), path(&run)]));
    assert_ok(&torchfit(d.path(), &["train", "--resume", "run", "--quiet"]));
    assert_eq!(metrics_rows(&run), 8);
    assert!(check(&["scalars", path(&logdir), path(&run)]));
    assert!(check(&["hparams", path(&logdir), path(&run), "STATUS_SUCCESS"]));
}
