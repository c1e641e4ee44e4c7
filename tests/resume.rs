//! Checkpoints and exact resume, end to end: runs killed (kill -9, an abort in the middle of a
//! checkpoint write), interrupted (SIGINT, SIGTERM, a second SIGINT) or failed (NaN, a
//! read-only run directory), then resumed, must end exactly where an uninterrupted run does.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A run long enough to interrupt, with dropout, validation and a plateau schedule, so that
/// every piece of state a checkpoint holds matters.
const SETS: &[&str] = &[
    "data.samples=3000",
    "data.validation_split=0.2",
    "training.batch_size=16",
    "model.dropout=0.1",
    "training.epochs=12",
    "training.lr_schedule={kind: reduce_on_plateau, patience: 1, factor: 0.5}",
    "training.early_stopping={monitor: val_loss, patience: 50, restore_best: true}",
];

fn args<'a>(out: &'a str, sets: &'a [&'a str]) -> Vec<&'a str> {
    let config = Box::leak(repo_file("configs/linear.yaml").display().to_string().into_boxed_str());
    let mut args = vec!["train", config, "--device", "cpu", "--quiet", "--out", out];
    for s in sets {
        args.extend(["--set", *s]);
    }
    args
}

fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn resume(dir: &Path, run: &str) -> std::process::Output {
    torchfit(dir, &["train", "--resume", run, "--quiet"])
}

fn assert_same_run(dir: &Path, a: &str, b: &str) {
    let (a, b) = (dir.join(a), dir.join(b));
    assert_eq!(metrics_without_seconds(&a), metrics_without_seconds(&b));
    for file in ["weights.safetensors", "checkpoint/last.safetensors"] {
        let (x, y) = (std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap());
        if file == "weights.safetensors" {
            assert!(x == y, "{file} differs");
        } else {
            // The checkpoints hold wall times; their weights must still match.
            let load = |p: &Path| {
                let mut t = tch::Tensor::read_safetensors(p).unwrap();
                t.retain(|(n, _)| n.starts_with("model.") || n.starts_with("optimizer."));
                t.sort_by(|l, r| l.0.cmp(&r.0));
                t
            };
            let (x, y) = (load(&a.join(file)), load(&b.join(file)));
            assert_eq!(x.len(), y.len());
            assert!(x.iter().zip(&y).all(|((n1, t1), (n2, t2))| n1 == n2 && t1.equal(t2)), "{file} state differs");
        }
    }
    assert_eq!(summary(&a)["steps"], summary(&b)["steps"]);
    assert_eq!(summary(&b)["status"], "finished");
}

fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", path.display());
        assert!(start.elapsed() < Duration::from_secs(60), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &args("straight", SETS)));

    // An abort in the middle of checkpoint writes 1, 2 and 4 (after the new file is
    // written, before it replaces the old one), as a kill -9 at that instant would.
    for n in ["1", "2", "4"] {
        let run = format!("abort{n}");
        let out = Command::new(BIN)
            .args(args(&run, SETS))
            .current_dir(d)
            .env("TORCHFIT_FAULT", format!("abort-during-checkpoint:{n}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the fault fired");
        assert_eq!(summary_status(&d.join(&run)).as_deref(), Some("running"), "a killed run says it was running");
        let out = resume(d, &run);
        assert_ok(&out);
        assert_same_run(d, "straight", &run);
    }

    // A real kill -9 once training is under way, then again once the resumed run has
    // written a newer checkpoint.
    let last = d.join("killed/checkpoint/last.safetensors");
    let mut child = spawn(d, &args("killed", SETS), &[]);
    wait_for(&last, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let written = std::fs::metadata(&last).unwrap().modified().unwrap();
    let mut child = spawn(d, &["train", "--resume", "killed", "--quiet"], &[]);
    let start = Instant::now();
    while std::fs::metadata(&last).unwrap().modified().unwrap() == written && child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "the resumed run wrote no checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    if summary_status(&d.join("killed")).as_deref() != Some("finished") {
        assert_ok(&resume(d, "killed"));
    }
    assert_same_run(d, "straight", "killed");
}

fn summary_status(run: &Path) -> Option<String> {
    let bytes = std::fs::read(run.join("summary.json")).ok()?;
    serde_json::from_slice::<serde_json::Value>(&bytes).ok()?["status"].as_str().map(String::from)
}

#[test]
fn sigint_and_sigterm_checkpoint_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &args("straight", SETS)));
    for (name, code) in [("INT", 130), ("TERM", 143)] {
        let run = format!("sig{name}");
        let mut child = spawn(d, &args(&run, SETS), &[]);
        wait_for(&d.join(&run).join("checkpoint/last.safetensors"), &mut child);
        signal(&child, name);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", String::from_utf8_lossy(&out.stderr));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains(&format!("interrupted by SIG{name}")), "{err}");
        assert!(err.contains(&format!("resume with: torchfit train --resume {run}")), "{err}");
        assert_eq!(summary(&d.join(&run))["status"], "interrupted");
        let out = resume(d, &run);
        assert_ok(&out);
        assert_same_run(d, "straight", &run);
    }
}

#[test]
fn a_second_sigint_exits_at_once_and_the_last_checkpoint_still_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut child = spawn(d, &args("twice", SETS), &[]);
    wait_for(&d.join("twice/checkpoint/last.safetensors"), &mut child);
    signal(&child, "INT");
    signal(&child, "INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    // Stopped at once or after its checkpoint, the run no longer says `running`, and the
    // message says how to go on.
    assert_eq!(summary(&d.join("twice"))["status"], "interrupted");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("resume with: torchfit train --resume twice"), "{err}");
    assert_ok(&resume(d, "twice"));
    assert_eq!(summary(&d.join("twice"))["status"], "finished");
    assert_eq!(summary(&d.join("twice"))["epochs"], 12);
}

/// Killed after the checkpoint of its last epoch and before its artifacts (model.pt,
/// weights, summary.json `finished`): the same command line with --resume finishes it,
/// rather than taking it for a finished run.
#[test]
fn a_run_killed_after_its_last_checkpoint_resumes_to_write_its_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = ["data.samples=500", "training.epochs=3"];
    assert_ok(&torchfit(d, &args("whole", &sets)));
    assert_ok(&torchfit(d, &args("killed", &sets)));
    // What a SIGKILL there leaves: the last checkpoint, summary.json still `running`, no
    // exports yet.
    let killed = d.join("killed");
    let mut s = summary(&killed);
    s["status"] = "running".into();
    std::fs::write(killed.join("summary.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    for file in ["model.pt", "weights.safetensors", "loss.png"] {
        std::fs::remove_file(killed.join(file)).unwrap();
    }
    let out = resume(d, "killed");
    assert_ok(&out);
    assert!(!stdout(&out).contains("nothing to do"), "{}", stdout(&out));
    assert!(["model.pt", "loss.png"].iter().all(|f| killed.join(f).is_file()));
    assert_same_run(d, "whole", "killed");
}

#[test]
fn more_epochs_continue_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["data.samples=500", "training.epochs=6"];
    assert_ok(&torchfit(d, &args("six", &base)));
    let three = ["data.samples=500", "training.epochs=3"];
    assert_ok(&torchfit(d, &args("more", &three)));
    // Resuming a finished run is not an error (launchers that restart a command rely on
    // it): it says so and changes nothing.
    let before = std::fs::read(d.join("more/weights.safetensors")).unwrap();
    let again = resume(d, "more");
    assert_ok(&again);
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(said.contains("has already trained all 3 epochs; nothing to do"), "{said}");
    assert_eq!(std::fs::read(d.join("more/weights.safetensors")).unwrap(), before);
    assert_eq!(summary(&d.join("more"))["status"], "finished");
    assert_ok(&torchfit(d, &["train", "--resume", "more", "--set", "training.epochs=6", "--quiet"]));
    assert_same_run(d, "six", "more");
    let refused = torchfit(d, &["train", "--resume", "more", "--set", "model.hidden=[4]"]);
    assert_fails_with(&refused, &["--set model.hidden: a resumed run keeps its data, model, task and seed"]);
}

/// A run that early stopping ended trains on when the resume changes what stopped it (more
/// patience, early stopping off, more epochs), as Keras's `fit` called again does; with
/// nothing changed it is done; changed without room for another epoch, an error.
#[test]
fn a_run_that_stopped_early_trains_on_when_the_resume_allows_more_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No later epoch improves on the first by 1000: early stopping ends epoch 2 of 50.
    let sets = [
        "data.samples=300",
        "data.validation_split=0.2",
        "training.epochs=50",
        "training.early_stopping={monitor: val_loss, patience: 1, min_delta: 1000}",
    ];
    assert_ok(&torchfit(d, &args("run", &sets)));
    let s = summary(&d.join("run"));
    assert_eq!((s["status"].as_str(), s["epochs"].as_u64()), (Some("stopped_early"), Some(2)));

    let same = resume(d, "run");
    assert_ok(&same);
    assert!(stdout(&same).contains("stopped early at epoch 2; there is nothing to resume"), "{}", stdout(&same));
    assert!(stdout(&same).contains("--set training.epochs=N with N > 2"), "{}", stdout(&same));

    let short = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=2"]);
    assert_fails_with(&short, &["stopped early at epoch 2", "--set training.epochs=N with N > 2"]);

    // Patience 3, counted afresh: epochs 3, 4 and 5 do not improve.
    let patient = torchfit(d, &["train", "--resume", "run", "--set", "training.early_stopping.patience=3", "--quiet"]);
    assert_ok(&patient);
    let s = summary(&d.join("run"));
    assert_eq!((s["status"].as_str(), s["epochs"].as_u64()), (Some("stopped_early"), Some(5)), "{s}");
    assert_eq!(read_csv(&d.join("run/metrics.csv")).1.len(), 5);

    // Without early stopping, on to training.epochs.
    let off = torchfit(
        d,
        &["train", "--resume", "run", "--set", "training.early_stopping=null", "--set", "training.epochs=8", "--quiet"],
    );
    assert_ok(&off);
    let s = summary(&d.join("run"));
    assert_eq!((s["status"].as_str(), s["epochs"].as_u64()), (Some("finished"), Some(8)), "{s}");
}

/// A run whose checkpoint is gone cannot continue: its status says one was written, so
/// `--resume` refuses rather than train its epochs again from the start. A run that died
/// before its first checkpoint starts over, and says so.
#[test]
fn resume_refuses_a_run_whose_checkpoint_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = ["data.samples=300", "training.epochs=2"];
    assert_ok(&torchfit(d, &args("run", &sets)));
    let last = d.join("run/checkpoint/last.safetensors");
    std::fs::remove_file(&last).unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=4"]);
    assert_fails_with(&out, &["run/checkpoint/last.safetensors is missing"]);
    // Without a manifest (an older torchfit's run) too.
    std::fs::remove_file(d.join("run/manifest.json")).unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=4"]);
    assert_fails_with(&out, &["run/checkpoint/last.safetensors is missing: the run is finished and cannot continue"]);
    assert_eq!(summary(&d.join("run"))["epochs"], 2, "nothing was trained again");

    // Killed before its first checkpoint: summary.json says running.
    let mut s = summary(&d.join("run"));
    s["status"] = "running".into();
    std::fs::write(d.join("run/summary.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=4", "--quiet"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("training starts over from epoch 1"), "{}", stderr(&out));
    assert_eq!(summary(&d.join("run"))["epochs"], 4);
}

/// While a process trains a run, `--resume` of it is refused, naming that process; once it
/// is gone (kill -9 included), its lock goes with it and the run resumes.
#[test]
fn a_run_being_trained_cannot_be_resumed_until_its_trainer_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let long = ["data.samples=3000", "training.batch_size=16", "training.epochs=100000"];
    let mut child = spawn(d, &args("long", &long), &[]);
    wait_for(&d.join("long/checkpoint/last.safetensors"), &mut child);
    let mut second = spawn(d, &["train", "--resume", "long", "--quiet"], &[]);
    let start = Instant::now();
    while second.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = second.kill();
            let _ = child.kill();
            panic!("a second trainer of the same run was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = second.wait_with_output().unwrap();
    assert_eq!(child.try_wait().unwrap(), None, "the first trainer still runs");
    assert_fails_with(&out, &["long is being trained by process", &child.id().to_string()]);
    child.kill().unwrap();
    child.wait().unwrap();
    // kill -9: the lock is released with the process. Two epochs past its checkpoint (whose
    // own epoch counts: metrics.csv is written after it, and a kill between the two leaves
    // the table behind).
    let epochs = checkpoint_epoch(&d.join("long/checkpoint/last.safetensors")) + 2;
    let out = torchfit(d, &["train", "--resume", "long", "--quiet", "--set", &format!("training.epochs={epochs}")]);
    assert_ok(&out);
    assert_eq!(summary(&d.join("long"))["status"], "finished");
}

#[test]
fn a_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = ["data.samples=500", "training.epochs=3"];
    assert_ok(&torchfit(d, &args("run", &base)));
    let good = std::fs::read(d.join("run/checkpoint/last.safetensors")).unwrap();
    // More epochs at an absurd rate: the loss overflows in epoch 4.
    let out = torchfit(
        d,
        &["train", "--resume", "run", "--set", "training.epochs=6", "--set", "training.optimizer.lr=1.0e+12", "-q"],
    );
    assert_fails_with(&out, &["the loss became", "in epoch 4 at step ", "keeps epoch 3", "training.optimizer.lr"]);
    assert_eq!(std::fs::read(d.join("run/checkpoint/last.safetensors")).unwrap(), good, "the checkpoint is untouched");
    let s = summary(&d.join("run"));
    assert_eq!(s["status"], "failed");
    assert!(s["error"].as_str().unwrap().contains("in epoch 4"));

    // skip_batch leaves those batches out instead, and says how many.
    let skip = [
        "data.samples=500",
        "training.epochs=1",
        "training.on_nan=skip_batch",
        "training.optimizer={kind: sgd, lr: 1.0e+12}",
    ];
    assert_ok(&torchfit(d, &args("skip", &skip)));
    assert!(summary(&d.join("skip"))["skipped_batches"].as_u64().unwrap() > 0);
    // An epoch whose every batch is skipped has learned nothing: that is an error.
    let hopeless = torchfit(d, &["train", "--resume", "skip", "--set", "training.epochs=2", "-q"]);
    assert_fails_with(&hopeless, &["every batch of epoch 2 had a non-finite loss and was skipped"]);

    // The optimizer's saved state only fits the same optimizer.
    let other = torchfit(
        d,
        &["train", "--resume", "skip", "--set", "training.epochs=2", "--set", "training.optimizer.kind=adam"],
    );
    assert_fails_with(&other, &["does not fit this run", "it holds sgd state, and training.optimizer.kind is adam"]);
}

#[test]
fn an_unwritable_run_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &args("run", &["data.samples=300", "training.epochs=2"])));
    let before = std::fs::read(d.join("run/checkpoint/last.safetensors")).unwrap();
    let resume = format!("{BIN} train --resume run --set training.epochs=4 --quiet");
    // Root ignores permission bits, so make the directory read-only with a bind mount in a
    // private mount namespace; other users get plain permission bits.
    let out = if unsafe_is_root() {
        Command::new("unshare")
            .args([
                "-rm",
                "sh",
                "-c",
                &format!("mount --bind run run && mount -o remount,bind,ro run && exec {resume}"),
            ])
            .current_dir(d)
            .output()
            .expect("unshare runs")
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new("sh").args(["-c", &resume]).current_dir(d).output().unwrap()
    };
    // The first write: the manifest's removal (the run trains again, its files will change).
    assert_fails_with(&out, &["cannot remove run/manifest.json"]);
    assert_eq!(std::fs::read(d.join("run/checkpoint/last.safetensors")).unwrap(), before);
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

#[test]
fn resume_rejects_what_is_not_a_resumable_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_fails_with(&resume(d, "nowhere"), &["nowhere is not a torchfit run directory"]);
    assert_ok(&torchfit(d, &args("run", &["data.samples=200", "training.epochs=1"])));
    let path = d.join("run/checkpoint/last.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=2"]);
    assert_fails_with(&out, &["run/checkpoint/last.safetensors has changed since the run ended"]);
    // An interrupted run has no manifest to check: the checkpoint's reader says it.
    std::fs::remove_file(d.join("run/manifest.json")).unwrap();
    let mut s = summary(&d.join("run"));
    s["status"] = "interrupted".into();
    std::fs::write(d.join("run/summary.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    let out = torchfit(d, &["train", "--resume", "run", "--set", "training.epochs=2"]);
    assert_fails_with(&out, &["last.safetensors is not a readable torchfit checkpoint"]);
}

/// The epochs a checkpoint holds, from its `state.json`.
fn checkpoint_epoch(path: &Path) -> usize {
    let tensors = tch::Tensor::read_safetensors(path).unwrap();
    let (_, json) = tensors.into_iter().find(|(name, _)| name == "state.json").expect("a state.json");
    let state: serde_json::Value = serde_json::from_slice(&Vec::<u8>::try_from(&json).unwrap()).unwrap();
    state["epoch"].as_u64().unwrap() as usize
}
