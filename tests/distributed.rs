//! Data-parallel training through PyTorch's c10d (Gloo on CPU), launched the way users
//! launch it: the real `torchrun` of the torch wheel, and bare environment variables as
//! Slurm's srun sets them. Two processes must train what one process trains with the same
//! global batch.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(300);

/// torchfit ARGS as `nproc` workers of torchrun, in `dir`.
fn torchrun_torchfit(dir: &Path, nproc: usize, args: &[&str]) -> Output {
    let cmd: Vec<&str> = [BIN].iter().chain(args).copied().collect();
    torchrun(nproc, dir, &cmd, &[], LIMIT).unwrap()
}

/// metrics.csv's header and rows without the `seconds` column.
fn metrics(run: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let (header, _) = read_csv(&run.join("metrics.csv"));
    (header.into_iter().filter(|h| h != "seconds").collect(), metrics_without_seconds(run))
}

fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let mut tensors = tch::Tensor::read_safetensors(run.join("weights.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors.into_iter().map(|(name, t)| (name, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())).collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
}

/// Per-epoch losses and metrics within `rel` relative, final weights within `rel`.
fn assert_same_training(one: &Path, two: &Path, rel: f64) {
    let (h1, m1) = metrics(one);
    let (h2, m2) = metrics(two);
    assert_eq!(h1, h2);
    assert_eq!(m1.len(), m2.len(), "epochs");
    for (epoch, (a, b)) in m1.iter().zip(&m2).enumerate() {
        for (column, (x, y)) in h1.iter().zip(a.iter().zip(b)) {
            assert!(close(*x, *y, rel), "epoch {}: {column} {x} (1 process) vs {y} (2 processes)", epoch + 1);
        }
    }
    // Weights within `rel` of their tensor's largest magnitude, and at least of 0.01: a
    // weight near 0 carries the rounding of the larger ones it was updated with, and a
    // whole tensor near 0 (a head's bias whose gradients nearly cancel, so that Adam's
    // normalised step magnifies their rounding) that of steps as large as the learning
    // rate (0.001 to 0.02 in these tests).
    for ((name, a), (other, b)) in weights(one).iter().zip(&weights(two)) {
        assert_eq!(name, other);
        let scale = a.iter().fold(0.01f32, |m, x| m.max(x.abs())) as f64;
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - *y as f64).abs() <= rel * scale, "{name}: {x} vs {y} (largest {scale})");
        }
    }
}

#[test]
fn torchrun_two_processes_train_the_keras_example_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "--out", "one", "--quiet"]));
    let two = torchrun_torchfit(d, 2, &["train", "--out", "two", "--quiet"]);
    assert_ok(&two);
    assert_same_training(&d.join("one"), &d.join("two"), 1e-5);
    let s = summary(&d.join("two"));
    assert_eq!((s["world_size"].as_u64(), s["backend"].as_str()), (Some(2), Some("gloo")));
    assert_eq!(
        (summary(&d.join("one"))["world_size"].as_u64(), summary(&d.join("one"))["backend"].as_str()),
        (Some(1), Some("none"))
    );
    // Only rank 0 reports: one summary on stdout.
    assert_eq!(stdout(&two).matches("run saved to").count(), 1, "{}", stdout(&two));
}

#[test]
fn torchrun_two_processes_train_a_classifier_with_validation_and_early_stopping_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = repo_file("configs/moons.yaml");
    let config = config.to_str().unwrap();
    let sets = ["--set", "training.epochs=25", "--quiet"];
    let one: Vec<&str> = ["train", config, "--out", "one"].iter().chain(&sets).copied().collect();
    assert_ok(&torchfit(d, &one));
    let two: Vec<&str> = ["train", config, "--out", "two"].iter().chain(&sets).copied().collect();
    assert_ok(&torchrun_torchfit(d, 2, &two));
    let (header, _) = metrics(&d.join("two"));
    assert!(header.contains(&"val_accuracy".to_string()), "{header:?}");
    assert_same_training(&d.join("one"), &d.join("two"), 1e-5);
    let (s1, s2) = (summary(&d.join("one")), summary(&d.join("two")));
    for (key, a) in s1["test_metrics"].as_object().unwrap() {
        let b = s2["test_metrics"][key].as_f64().unwrap();
        assert!(close(a.as_f64().unwrap(), b, 1e-5), "test {key}: {a} vs {b}");
    }
}

/// 101 rows in batches of 33 over 4 processes: shards of 9 and 8 rows, and a last batch of
/// 2 rows where two shards are empty and still take part in the sum. The model is large
/// enough that its gradients are summed in two buckets, the first while the backward pass
/// goes on. SGD and tanh keep the comparison about the sums: on 101 rows some gradients are
/// near 0, where Adam's normalised step turns rounding differences into steps of lr.
#[test]
fn an_uneven_last_batch_splits_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = [
        ["--set", "data.samples=101"],
        ["--set", "training.batch_size=33"],
        ["--set", "training.epochs=3"],
        ["--set", "model.hidden=[600, 600]"],
        ["--set", "model.activation=tanh"],
        ["--set", "training.optimizer.kind=sgd"],
        ["--set", "training.optimizer.lr=0.05"],
    ];
    let sets: Vec<&str> = sets.iter().flatten().copied().chain(["--quiet"]).collect();
    let one: Vec<&str> = ["train", "--out", "one"].iter().chain(&sets).copied().collect();
    assert_ok(&torchfit(d, &one));
    let four: Vec<&str> = ["train", "--out", "four"].iter().chain(&sets).copied().collect();
    assert_ok(&torchrun_torchfit(d, 4, &four));
    assert_same_training(&d.join("one"), &d.join("four"), 1e-5);
}

/// Slurm's `srun -n 2` (the one-node Slurm of scripts/slurm.sh) trains what torchrun's two
/// workers train: the same bytes.
#[test]
fn srun_two_tasks_train_what_torchrun_trains() {
    let Some(_) = slurm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = ["--set", "training.epochs=20", "--quiet"];
    let args: Vec<&str> = ["train", "--out", "torchrun"].iter().chain(&sets).copied().collect();
    assert_ok(&torchrun_torchfit(d, 2, &args));
    let cmd: Vec<&str> = [BIN, "train", "--out", "slurm"].iter().chain(&sets).copied().collect();
    let out = srun(2, d, &cmd, &[], LIMIT).unwrap();
    assert_ok(&out);
    let s = summary(&d.join("slurm"));
    assert_eq!((s["world_size"].as_u64(), s["backend"].as_str()), (Some(2), Some("gloo")));
    let weights = |run: &str| std::fs::read(d.join(run).join("weights.safetensors")).unwrap();
    assert!(weights("torchrun") == weights("slurm"), "srun's weights differ from torchrun's");
    assert_eq!(metrics(&d.join("torchrun")), metrics(&d.join("slurm")));
}

#[test]
fn processes_with_different_configs_fail_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Each worker gets its own epochs: 2 + RANK.
    let script = format!("exec {BIN} train --out run --quiet --set training.epochs=$((2 + RANK))");
    let out = torchrun(2, d, &["sh", "-c", &script], &[], LIMIT).unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the processes have different configs: training.epochs is 2 on rank 0 but 3 on rank 1"),
        "{err}"
    );
    // Every rank fails alike, naming itself; torchrun's report shows what each wrote to its
    // TORCHELASTIC_ERROR_FILE.
    for rank in ["rank 0", "rank 1"] {
        let line = format!("traceback : {rank}: the processes have different configs: training.epochs is 2");
        assert!(err.contains(&line), "{line} in {err}");
    }
    assert!(!d.join("run").exists(), "no run directory for a group that never trained");
}

/// Started as rank 0 of 2 the way srun starts tasks, with no rank 1 ever coming: a clear
/// error within the timeout, not a hang.
#[test]
fn a_rank_that_never_arrives_is_a_clear_error_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["train", "--out", "run", "--set", "distributed.timeout=3"])
        .current_dir(dir.path())
        .env_remove("LD_LIBRARY_PATH")
        .envs([("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", &port)])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_fails_with(&out, &["torchfit: rank 0: ", "within 3 s (distributed.timeout)", "1/2 clients joined"]);
    assert!(seconds < 30.0, "took {seconds} s");
    assert!(!dir.path().join("run").exists());
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The process ids of `parent`'s children whose environment has `RANK=rank`.
fn worker(parent: u32, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent pid is the second field after the command name's closing parenthesis.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|var| var == format!("RANK={rank}").as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// torchrun --max-restarts 1: a worker killed with SIGKILL mid-training, the group restarts,
/// continues from the last checkpoint, and ends with the weights of an uninterrupted run,
/// byte for byte.
#[test]
fn a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sets = ["--set", "training.epochs=60", "--set", "training.checkpoint_every=5", "--quiet"];
    let straight: Vec<&str> = ["train", "--out", "straight"].iter().chain(&sets).copied().collect();
    assert_ok(&torchrun_torchfit(d, 2, &straight));

    // Spawned rather than run_bounded: the test kills a worker while torchrun runs.
    let restarted: Vec<&str> = ["train", "--out", "restarted"].iter().chain(&sets).copied().collect();
    let mut torchrun = Command::new("python3")
        .args(["-m", "torch.distributed.run", "--no-python", "--standalone", "--nproc-per-node", "2"])
        .args(["--max-restarts", "1", BIN])
        .args(&restarted)
        .current_dir(d)
        .env("PYTHONPATH", env!("TORCHFIT_TORCH_PYTHONPATH"))
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoint = d.join("restarted/checkpoint/last.safetensors");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no checkpoint within 2 minutes");
        assert!(torchrun.try_wait().unwrap().is_none(), "torchrun ended before the first checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = worker(torchrun.id(), 1).expect("rank 1 is a child of torchrun");
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let out = wait_bounded(torchrun, LIMIT);
    assert_ok(&out);
    let s = summary(&d.join("restarted"));
    assert_eq!(s["status"], "finished");
    assert_eq!(s["epochs"], 60);
    let (a, b) = (d.join("straight/weights.safetensors"), d.join("restarted/weights.safetensors"));
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap(), "weights differ from the uninterrupted run's");
    assert_eq!(metrics(&d.join("straight")), metrics(&d.join("restarted")));
    // The first attempt's rank 0 lost its peer and said so, naming itself; torchrun then
    // started the group again, which finished.
    assert!(stderr(&out).contains("torchfit: rank 0: "), "{}", stderr(&out));
}

/// A restart after the run finished (the last worker died after rank 0 wrote everything)
/// changes nothing and succeeds.
#[test]
fn a_restart_of_a_finished_run_exits_0_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_ok(&torchfit(d, &["train", "--out", "run", "--quiet", "--set", "training.epochs=2"]));
    let before = std::fs::read(d.join("run/weights.safetensors")).unwrap();
    let out = Command::new(BIN)
        .args(["train", "--out", "run", "--quiet", "--set", "training.epochs=2"])
        .current_dir(d)
        .env_remove("LD_LIBRARY_PATH")
        .envs([("RANK", "0"), ("WORLD_SIZE", "1"), ("TORCHELASTIC_RESTART_COUNT", "1"), ("TORCHELASTIC_RUN_ID", "x")])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(stdout(&out).contains("has already trained all 2 epochs; nothing to do"), "{}", stdout(&out));
    assert_eq!(std::fs::read(d.join("run/weights.safetensors")).unwrap(), before);
    // The same command as a first attempt is refused: the directory is taken.
    let first = Command::new(BIN)
        .args(["train", "--out", "run", "--quiet", "--set", "training.epochs=2"])
        .current_dir(d)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert_fails_with(&first, &["run directory run already exists"]);
    // A restart whose config changed is refused, naming the key.
    let changed = Command::new(BIN)
        .args(["train", "--out", "run", "--quiet", "--set", "training.epochs=3"])
        .current_dir(d)
        .env_remove("LD_LIBRARY_PATH")
        .envs([("RANK", "0"), ("WORLD_SIZE", "1"), ("TORCHELASTIC_RESTART_COUNT", "1")])
        .output()
        .unwrap();
    assert_fails_with(&changed, &["restart 1: run holds a run whose training.epochs was 2, and the config now says 3"]);
}

/// The table kinds beyond the MLP, dropout off (each process draws its own masks): two
/// processes train what one trains, through the generated TorchScript modules' autograd and
/// the numeric embedding's bins (fitted on the whole training split by every rank). `W_k`'s
/// bias is frozen: softmax takes away what it adds, so its gradient is rounding alone, and
/// Adam scales that rounding (another for a sum over two processes) into full-size steps
/// (docs/models.md).
#[test]
fn torchrun_two_processes_train_the_ft_transformer_and_an_embedded_mlp_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    colour_classifier(d, 120, "", "epochs: 3, batch_size: 16");
    let models = [
        (
            "ftt",
            "model={kind: ft_transformer, n_blocks: 1, d_block: 16, attention_n_heads: 2, attention_dropout: 0, \
                 ffn_dropout: 0, residual_dropout: 0, freeze: ['*.W_k.bias']}",
        ),
        ("ple", "model={hidden: [16], dropout: 0, numeric_embedding: {kind: piecewise_linear, n_bins: 8}}"),
    ];
    for (name, model) in models {
        let (one, two) = (format!("{name}-one"), format!("{name}-two"));
        let args = |out: &str| -> Vec<String> {
            ["train", "t.yaml", "--quiet", "--device", "cpu", "--set", model, "--out", out].map(String::from).to_vec()
        };
        let (args1, args2) = (args(&one), args(&two));
        assert_ok(&torchfit(d, &args1.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_ok(&torchrun_torchfit(d, 2, &args2.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(summary(&d.join(&two))["world_size"].as_u64(), Some(2));
        assert_same_training(&d.join(&one), &d.join(&two), 1e-5);
    }
}

/// A model with a text column (`data.text`) trains under torchrun as in one process: the bag's
/// and the transformer's embedding gradients (rows looked up in each process's part of the
/// batch) summed over two processes; dropout 0, as each process draws its own masks. The
/// transformer's `qkv.bias` is frozen, as the FT-Transformer's `W_k.bias` above: its key part's
/// gradient is rounding alone (softmax takes away what it adds), which Adam scales up.
#[test]
fn torchrun_two_processes_train_a_text_model_as_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    review_classifier(d, 160);
    let transformer = "model.text={encoder: transformer, d_embedding: 8, n_heads: 2, n_blocks: 1, dropout: 0}";
    let models: [(&str, &[&str]); 2] = [
        ("bag", &["model.text={encoder: bag, d_embedding: 8, ngrams: 2, buckets: 64}"]),
        ("transformer", &[transformer, "model.freeze=['text.*.qkv.bias']"]),
    ];
    for (name, sets) in models {
        let (one, two) = (format!("{name}-one"), format!("{name}-two"));
        let args = |out: &str| -> Vec<String> {
            let mut args = vec!["train", "reviews.yaml", "--quiet", "--device", "cpu", "--out", out];
            args.extend(sets.iter().chain(&["training.epochs=3"]).flat_map(|s| ["--set", *s]));
            args.into_iter().map(String::from).collect()
        };
        let (args1, args2) = (args(&one), args(&two));
        assert_ok(&torchfit(d, &args1.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_ok(&torchrun_torchfit(d, 2, &args2.iter().map(String::as_str).collect::<Vec<_>>()));
        assert_eq!(summary(&d.join(&two))["world_size"].as_u64(), Some(2));
        assert_same_training(&d.join(&one), &d.join(&two), 1e-5);
    }
}
