//! Config input that once reached libtorch, or took seconds, or was read without end, and
//! the config papercuts: each through the real binary, as a user meets it.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// `torchfit ARGS` in `dir` fails with status 2, one line holding `words`, and no run.
fn fails(dir: &Path, args: &[&str], words: &[&str]) -> String {
    let out = torchfit(dir, args);
    assert_fails_with(&out, words);
    assert!(!dir.join("run").exists() && !dir.join("runs").exists(), "{args:?} left a run directory");
    stderr(&out)
}

fn train_cpu<'a>(sets: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--device", "cpu", "--out", "run"];
    for set in sets {
        args.extend(["--set", set]);
    }
    args
}

#[test]
fn counts_past_what_libtorch_takes_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        d,
        &train_cpu(&["training.batch_size=18446744073709551615"]),
        &["training.batch_size must be at most 2147483647, got 18446744073709551615"],
    );
    fails(d, &train_cpu(&["data.features=4294967296"]), &["data.features must be at most 2147483647, got 4294967296"]);
    fails(d, &train_cpu(&["data.samples=100000000000"]), &["data.samples must be at most 2147483647"]);
    fails(d, &train_cpu(&["training.threads=1000000"]), &["training.threads must be at most 1024"]);
}

#[test]
fn a_model_or_table_larger_than_memory_is_refused_with_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 10^12 weights: 16 TB with Adam's state, more than any machine these tests run on.
    let err = fails(d, &train_cpu(&["model.hidden=[1000000, 1000000]"]), &["model.hidden [1000000, 1000000]"]);
    assert!(err.contains("about 16.0 TB") && err.contains("of memory available"), "{err}");
    let err =
        fails(d, &train_cpu(&["data.samples=2000000000", "data.features=100000"]), &["data.samples x data.features"]);
    assert!(err.contains("2000000000 rows x 100001 columns is about 800.0 TB"), "{err}");
}

#[test]
fn a_config_that_never_ends_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(d, &["train", "/dev/zero"], &["cannot read config file /dev/zero: it is a device or socket, not a file"]);
    // A pipe that never ends is read up to the cap, then refused.
    let fifo = d.join("endless.yaml");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut writer =
        std::process::Command::new("sh").args(["-c", "yes 'name: x' > endless.yaml"]).current_dir(d).spawn().unwrap();
    let started = Instant::now();
    fails(d, &["train", "endless.yaml"], &["endless.yaml: larger than 1024 KiB"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = writer.kill();
    let _ = writer.wait();
    // Just past the cap in a plain file too.
    std::fs::write(d.join("big.yaml"), format!("name: x\n{}", "#\n".repeat(600_000))).unwrap();
    fails(d, &["train", "big.yaml"], &["big.yaml: larger than 1024 KiB; a config is a few kilobytes of YAML"]);
}

#[test]
fn deep_nesting_and_huge_values_are_refused_quickly_and_echoed_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("deep.yaml"), format!("model:\n  hidden: {}\n", "[".repeat(40_000))).unwrap();
    let started = Instant::now();
    fails(d, &["train", "deep.yaml"], &["deep.yaml: line 2: nested more than 64 levels deep"]);
    // libyaml alone took 1.5 s on 20,000 and 5.1 s on 40,000 levels; the binary's start-up
    // is well under this.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    std::fs::write(d.join("name.yaml"), format!("name: {}\n", "n".repeat(900_000))).unwrap();
    let started = Instant::now();
    let err = fails(d, &["train", "name.yaml"], &["name.yaml:1: name must be at most 200 bytes", "(900000 bytes)"]);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(err.len() < 300, "{err}");

    // A long unknown value is echoed cut, too.
    let long = format!("training.loss={}", "x".repeat(5000));
    let err = fails(d, &train_cpu(&[&long]), &["training.loss: unknown value", "(5000 bytes)"]);
    assert!(err.len() < 600, "{err}");
}

#[test]
fn replacing_the_embedded_data_derives_task_loss_and_metrics_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("a,b,bought\n");
    for i in 0..60 {
        let (a, b) = ((i * 7 % 13) as f64 / 13.0, (i * 5 % 11) as f64 / 11.0);
        csv += &format!("{a},{b},{}\n", if a + b > 1.0 { "yes" } else { "no" });
    }
    std::fs::write(d.join("d.csv"), csv).unwrap();
    let args = [
        "train",
        "--set",
        "data={kind: csv, path: d.csv, target: bought}",
        "--set",
        "training.epochs=2",
        "--device",
        "cpu",
        "--out",
        "run",
        "--quiet",
    ];
    assert_ok(&torchfit(d, &args));
    let config = std::fs::read_to_string(d.join("run/config.yaml")).unwrap();
    for line in ["task: classification", "loss: cross_entropy", "- accuracy"] {
        assert!(config.contains(line), "{line} not in\n{config}");
    }
    let (header, _) = read_csv(&d.join("run/metrics.csv"));
    assert_eq!(header, ["epoch", "loss", "accuracy", "lr", "seconds"]);
}

#[test]
fn config_papercuts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A byte-order mark before `---`, as Windows editors write it.
    std::fs::write(d.join("bom.yaml"), b"\xef\xbb\xbf---\nname: bom\n").unwrap();
    let out = torchfit(d, &["config", "bom.yaml"]);
    assert_ok(&out);
    assert!(stdout(&out).starts_with("name: bom\n"), "{}", stdout(&out));
    // A value's error names the file and line of its key, as a syntax error does.
    std::fs::write(d.join("c.yaml"), "name: c\ntraining:\n  epochs: 0\n").unwrap();
    fails(d, &["train", "c.yaml"], &["c.yaml:3: training.epochs must be > 0, got 0"]);
    std::fs::write(d.join("m.yaml"), "training:\n  metrics: [mae, rmse, mae]\n").unwrap();
    fails(d, &["train", "m.yaml"], &["m.yaml:2: training.metrics: mae is listed more than once"]);
    // A file's mistake is placed in the file even when --set changes another key.
    std::fs::write(d.join("dev.yaml"), "name: d\ndevice: gpu\n").unwrap();
    let err = fails(d, &["train", "dev.yaml", "--set", "training.epochs=1"], &["dev.yaml:2: device must be auto"]);
    assert!(!err.contains("--set"), "{err}");
    // One wording for one key, whether serde or validation finds the problem.
    fails(
        d,
        &train_cpu(&["training.epochs=-1"]),
        &["training.epochs: invalid value: integer `-1`, expected a whole number > 0"],
    );
    // Command-line errors on one line, naming the option used.
    fails(d, &["train", "--seed", "-3"], &["'--seed <SEED>': the seed must be a whole number >= 0, got \"-3\""]);
    let err = fails(d, &["train", "--device", "gpu"], &["'--device <DEVICE>'", "got \"gpu\""]);
    assert!(!err.contains("--set"), "{err}");
}

#[test]
fn metrics_csv_writes_the_learning_rate_without_float_noise() {
    let dir = tempfile::tempdir().unwrap();
    let sets = [
        "training.epochs=2",
        "data.samples=64",
        "training.optimizer.lr=0.003",
        "training.lr_schedule={kind: step, step_size: 1, gamma: 0.75}",
    ];
    let mut args = train_cpu(&sets);
    args.push("--quiet");
    assert_ok(&torchfit(dir.path(), &args));
    let text = std::fs::read_to_string(dir.path().join("run/metrics.csv")).unwrap();
    let lr: Vec<&str> = text.lines().skip(1).map(|l| l.split(',').nth(3).unwrap()).collect();
    // 0.003 x 0.75 is 0.0022500000000000003 in float64.
    assert_eq!(lr, ["0.003", "0.00225"], "{text}");
}
