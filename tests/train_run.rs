//! The run as `torchfit train` leaves it, end to end: status written as it changes, failures
//! after the last epoch recorded, resume limits, timing over sessions, early stopping's best
//! epoch, and how a bug is reported.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn train(dir: &Path, out: &str, sets: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", *s]);
    }
    torchfit(dir, &args)
}

fn metrics_rows(run: &Path) -> usize {
    read_csv(&run.join("metrics.csv")).1.len()
}

#[test]
fn the_status_is_running_while_training_and_failed_after_a_failed_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // While a long run trains, summary.json already says so.
    let mut child = Command::new(BIN)
        .args(["train", "--device", "cpu", "--quiet", "--out", "long", "--set", "training.epochs=100000"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !d.join("long/summary.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "no summary.json while training");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = summary(&d.join("long"))["status"].clone();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, "running");

    // A resume that fails in its first new epoch says failed, with the epochs that metrics.csv
    // and the checkpoint hold, not the finished summary of before.
    assert_ok(&train(d, "run", &["training.epochs=2"]));
    let out = torchfit(
        d,
        &["train", "--resume", "run", "--set", "training.epochs=4", "--set", "training.optimizer.lr=1.0e+30"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let s = summary(&d.join("run"));
    assert_eq!(s["status"], "failed");
    assert_eq!(s["epochs"].as_u64(), Some(metrics_rows(&d.join("run")) as u64));
}

#[test]
fn an_error_after_the_last_epoch_is_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&train(d, "run", &["training.epochs=1"]));
    // loss.png cannot be replaced once it is a non-empty directory.
    let plot = d.join("run/loss.png");
    std::fs::remove_file(&plot).unwrap();
    std::fs::create_dir(&plot).unwrap();
    std::fs::write(plot.join("keep"), "x").unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=2", "--quiet"]);
    assert_fails_with(&out, &["cannot write", "loss.png"]);
    let s = summary(&d.join("run"));
    assert_eq!(s["status"], "failed");
    assert!(s["error"].as_str().unwrap().contains("loss.png"), "{s}");
    assert_eq!(s["epochs"], 2);
    // Once the obstacle is gone, resuming writes what was missing, training nothing more.
    std::fs::remove_dir_all(&plot).unwrap();
    assert_ok(&torchfit(d, &["train", "--resume", "run", "--quiet"]));
    let s = summary(&d.join("run"));
    assert_eq!((s["status"].as_str(), s["epochs"].as_u64()), (Some("finished"), Some(2)));
    assert!(plot.is_file());
    assert_ok(&torchfit(d, &["export", "run", "--output", "again.pt"]));
}

#[test]
fn resume_refuses_fewer_epochs_than_already_trained_with_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&train(d, "run", &["training.epochs=3"]));
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=2"]);
    assert_fails_with(
        &out,
        &["run has already trained 3 epochs, more than training.epochs (2)", "training.epochs=N with N > 3"],
    );
    // Interrupted in the middle of epoch E (3 or later): E - 1 epochs would end it before it
    // started.
    let sets = ["data.samples=20000", "training.batch_size=8", "training.epochs=1000"];
    let mut args = vec!["train", "--device", "cpu", "--quiet", "--out", "mid", "--set", "training.checkpoint_every=1"];
    for s in &sets {
        args.extend(["--set", *s]);
    }
    let mut child = Command::new(BIN).args(&args).current_dir(d).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let rows = || std::fs::read_to_string(d.join("mid/metrics.csv")).map(|t| t.lines().count()).unwrap_or(0);
    while rows() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before epoch 3");
        assert!(start.elapsed() < Duration::from_secs(120), "epoch 2 never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    let epoch: usize = err
        .split("interrupted by SIGINT in epoch ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    assert!(epoch >= 3, "{err}");
    let fewer = format!("training.epochs={}", epoch - 1);
    let out = torchfit(d, &["train", "--resume", "mid", "--set", &fewer]);
    let words = format!("mid was interrupted in epoch {epoch}, beyond training.epochs ({})", epoch - 1);
    assert_fails_with(&out, &[&words, &format!("with N > {}", epoch - 1)]);
    assert_eq!(summary(&d.join("mid"))["status"], "interrupted", "a refused resume changes nothing");
}

#[test]
fn seconds_add_up_over_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&train(d, "run", &["training.epochs=20"]));
    let first = summary(&d.join("run"));
    assert_ok(&torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=40", "--quiet"]));
    let s = summary(&d.join("run"));
    let (train_s, total_s) = (s["train_seconds"].as_f64().unwrap(), s["total_seconds"].as_f64().unwrap());
    assert!(train_s <= total_s, "train {train_s} > total {total_s}");
    assert!(total_s > first["total_seconds"].as_f64().unwrap(), "{total_s} counts the first session too");
    // train_seconds is the sum of metrics.csv's seconds column, both sessions' epochs.
    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    let col = header.iter().position(|h| h == "seconds").unwrap();
    let sum: f64 = rows.iter().map(|r| r[col]).sum();
    assert_eq!(rows.len(), 40);
    assert!((sum - train_s).abs() < 1e-3, "seconds column sums to {sum}, train_seconds {train_s}");
    assert!(train_s > first["train_seconds"].as_f64().unwrap());
}

#[test]
fn a_nan_before_any_checkpoint_says_none_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(dir.path(), "run", &["training.epochs=3", "training.optimizer.lr=1.0e+30"]);
    assert_fails_with(&out, &["the loss became", "in epoch 1", "no checkpoint was written yet"]);
    assert_eq!(summary(&dir.path().join("run"))["status"], "failed");
}

#[test]
fn early_stopping_reports_the_best_epoch_and_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = [
        "training.epochs=60",
        "data.validation_split=0.3",
        "training.early_stopping={monitor: val_loss, patience: 2, restore_best: true}",
    ];
    assert_ok(&train(d, "run", &sets));
    let s = summary(&d.join("run"));
    assert_eq!(s["status"], "stopped_early", "random targets stop improving long before 60 epochs: {s}");
    let best = s["best_epoch"].as_u64().unwrap() as usize;
    let (header, rows) = read_csv(&d.join("run/metrics.csv"));
    assert!(best < rows.len());
    for (i, name) in header.iter().enumerate().filter(|(_, h)| !["epoch", "lr", "seconds"].contains(&h.as_str())) {
        assert_eq!(s["best_metrics"][name].as_f64(), Some(rows[best - 1][i]), "{name}");
        assert_eq!(s["final_metrics"][name].as_f64(), Some(rows[rows.len() - 1][i]), "{name}");
    }
}

#[test]
fn a_bug_is_one_line_with_its_message_and_exit_status_70() {
    let out =
        Command::new(BIN).arg("info").env("TORCHFIT_FAULT", "panic").env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert_eq!(out.status.code(), Some(70));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("torchfit: internal error, please report it: injected by TORCHFIT_FAULT=panic (at src/"),
        "{err}"
    );
}

#[test]
fn a_negative_seed_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = torchfit(dir.path(), &["train", "--seed", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("the seed must be a whole number >= 0, got \"-1\""), "{err}");
    assert!(!err.contains("-- -1"), "{err}");
}

#[test]
fn on_a_terminal_an_interrupted_run_leaves_its_bar_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // `script` gives the run a terminal; the shell records the pid that torchfit takes over.
    let inner = format!("echo $$ > pid; exec {BIN} train --device cpu --out run --set training.epochs=100000");
    let child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let start = Instant::now();
    while !d.join("run/checkpoint/last.safetensors").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never checkpointed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = std::fs::read_to_string(d.join("pid")).unwrap();
    Command::new("kill").args(["-INT", pid.trim()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("interrupted by SIGINT"), "{screen}");
    assert!(screen.contains("/100000"), "a bar was drawn: {screen}");
    assert!(!screen.contains("100000/100000"), "the bar was drawn full: {screen}");
}

/// Several `train --out SAME` started together: exactly one trains, the others fail at once
/// naming the directory (no run of mixed files, every one exiting 0).
#[test]
fn runs_started_together_into_one_directory_leave_one_owner() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for round in 0..4 {
        let out = format!("same{round}");
        let children: Vec<_> = (0..4)
            .map(|i| {
                Command::new(BIN)
                    .args(["train", "--device", "cpu", "--quiet", "--out", &out])
                    .args(["--set", &format!("training.epochs={}", 2 + i), "--set", "data.samples=200"])
                    .current_dir(d)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let won: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(won.len(), 1, "round {round}: {} of 4 trained into {out}", won.len());
        for lost in outputs.iter().filter(|o| !o.status.success()) {
            assert_fails_with(lost, &[&format!("run directory {out} already exists and is not empty")]);
        }
        // The winner's run is whole: its config's epochs are metrics.csv's rows.
        let epochs = summary(&d.join(&out))["epochs"].as_u64().unwrap() as usize;
        assert_eq!(metrics_rows(&d.join(&out)), epochs);
        let config = std::fs::read_to_string(d.join(&out).join("config.yaml")).unwrap();
        assert!(config.contains(&format!("epochs: {epochs}\n")), "{config}");
    }
}
