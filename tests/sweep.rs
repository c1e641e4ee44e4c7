//! `torchfit sweep` end to end: grid and random sweeps repeat for a seed, a sweep killed
//! with SIGKILL (parent and workers) and run again ends with the uninterrupted table, ASHA
//! pauses and promotes trials with exact resume, bad sweep files fail on one line, and a
//! sweep continues, reports its status and refuses a changed sweep.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// A small friedman1 base config: trials of a fraction of a second.
const BASE: &str = "name: tiny
seed: 1
device: cpu
data: {kind: friedman1, samples: 400, features: 10, noise: 0.5, validation_split: 0.2, standardize: true, standardize_target: true}
model: {hidden: [8], activation: relu}
training:
  epochs: 6
  batch_size: 32
  loss: mse
  metrics: [mae]
  optimizer: {kind: adam, lr: 0.003}
  lr_schedule: {kind: cosine, warmup_epochs: 1}
";

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn setup(sweep: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "base.yaml", BASE);
    write(d.path(), "sweep.yaml", sweep);
    d
}

/// results.csv without the wall-time columns, which no seed fixes.
fn table(sweep_dir: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(sweep_dir.join("results.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !header[i].ends_with("seconds")).collect();
    let mut rows = vec![keep.iter().map(|&i| header[i].clone()).collect()];
    for record in reader.records() {
        let record = record.unwrap();
        rows.push(keep.iter().map(|&i| record[i].to_string()).collect());
    }
    rows
}

fn sweep(dir: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "sweep.yaml", "--out", out];
    args.extend(extra);
    torchfit(dir, &args)
}

const GRID: &str = "base: base.yaml
method: grid
parameters:
  training.optimizer.lr: {values: [0.001, 0.01]}
  model.hidden: {values: [[8], [16, 16]]}
";

#[test]
fn a_grid_sweep_gives_the_same_table_twice_and_a_trainable_best_config() {
    let d = setup(GRID);
    for out in ["a", "b"] {
        let run = sweep(d.path(), out, &["--jobs", "2"]);
        assert_ok(&run);
        assert!(stdout(&run).contains("complete; best: trial"), "{}", stdout(&run));
    }
    let (a, b) = (table(&d.path().join("a")), table(&d.path().join("b")));
    assert_eq!(a, b);
    assert_eq!(a.len(), 5);
    assert_eq!(
        a[0],
        ["trial", "training.optimizer.lr", "model.hidden", "status", "epochs", "best_val_loss", "last_val_loss"]
    );
    assert_eq!(a[4][..5], ["0003", "0.01", "[16, 16]", "finished", "6"]);
    assert!(a[1..].iter().all(|r| r[3] == "finished"));
    // Each trial is an ordinary run directory, with the trial's parameters in its config.
    let trial = d.path().join("a/trials/0002");
    assert_eq!(summary(&trial)["status"], "finished");
    let config = std::fs::read_to_string(trial.join("config.yaml")).unwrap();
    assert!(config.contains("lr: 0.01") && config.contains("- 8"), "{config}");
    assert!(d.path().join("a/sweep.png").is_file());
    // best.yaml trains as it is.
    assert_ok(&torchfit(d.path(), &["train", "a/best.yaml", "--quiet", "--out", "again"]));
    // Run again: complete already, nothing retrained, same table.
    let again = sweep(d.path(), "a", &["--jobs", "2"]);
    assert_ok(&again);
    assert!(stdout(&again).starts_with("continuing sweep a"), "{}", stdout(&again));
    assert_eq!(table(&d.path().join("a")), a);
    let status = torchfit(d.path(), &["sweep", "status", "a"]);
    assert_ok(&status);
    assert!(stdout(&status).contains("0003   0.01") && stdout(&status).contains("complete"), "{}", stdout(&status));
}

#[test]
fn a_random_sweep_gives_the_same_table_twice_for_a_seed() {
    let text = "base: base.yaml
method: random
trials: 4
seed: 5
parameters:
  training.optimizer.lr: {distribution: log_uniform, min: 0.0005, max: 0.05}
  training.batch_size: {distribution: int_uniform, min: 16, max: 64}
  model.dropout: {distribution: uniform, min: 0.0, max: 0.3}
  model.hidden: {values: [[8], [16]]}
metric: val_mae
";
    let d = setup(text);
    for out in ["a", "b"] {
        assert_ok(&sweep(d.path(), out, &["--jobs", "2"]));
    }
    let (a, b) = (table(&d.path().join("a")), table(&d.path().join("b")));
    assert_eq!(a, b);
    assert_eq!(a.len(), 5);
    assert_eq!(a[0][7], "best_val_mae");
    // Another seed draws other trials.
    write(d.path(), "sweep.yaml", &text.replace("seed: 5", "seed: 6"));
    assert_ok(&sweep(d.path(), "c", &["--jobs", "2"]));
    assert_ne!(table(&d.path().join("c"))[1][1], a[1][1]);
}

#[test]
fn a_sweep_killed_with_sigkill_continues_to_the_uninterrupted_table() {
    // Trials long enough (a few seconds) to be killed in the middle of.
    let text =
        GRID.replace("parameters:", "parameters:\n  training.epochs: {values: [40]}\n  data.samples: {values: [3000]}");
    let d = setup(&text);
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(["sweep", "sweep.yaml", "--out", "killed", "--jobs", "2"])
        .current_dir(d.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    // Kill the whole process group (the sweep and its workers) once a trial is done and
    // another has started.
    let claims = d.path().join("killed/claims");
    loop {
        let names: Vec<String> = std::fs::read_dir(&claims)
            .map(|e| e.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let done = names.iter().filter(|n| n.ends_with(".done")).count();
        let claimed = names.iter().filter(|n| n.ends_with(".1")).count();
        if done >= 1 && claimed > done && done < 4 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(300), "no trial finished in 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let again = sweep(d.path(), "killed", &["--jobs", "2"]);
    assert_ok(&again);
    assert_ok(&sweep(d.path(), "straight", &["--jobs", "2"]));
    let (killed, straight) = (table(&d.path().join("killed")), table(&d.path().join("straight")));
    assert_eq!(killed, straight);
    assert!(killed[1..].iter().all(|r| r[5] == "finished"), "{killed:?}");
}

#[test]
fn asha_pauses_prunes_and_promotes_trials_that_continue_exactly() {
    let text = "base: base.yaml
method: grid
parameters:
  training.optimizer.lr: {values: [0.0003, 0.003, 0.03, 0.001]}
  model.dropout: {values: [0.0, 0.2]}
early_termination: {kind: asha, min_epochs: 2, reduction_factor: 2}
";
    let d = setup(text);
    let run = sweep(d.path(), "asha", &["--jobs", "1", "--set", "training.epochs=8"]);
    assert_ok(&run);
    let rows = table(&d.path().join("asha"));
    // Rungs at 2, 4 and 8 epochs: every trial stops at one of them; some are pruned, and
    // the best half of each rung goes on (the unit tests check the rule itself).
    let epochs: Vec<&str> = rows[1..].iter().map(|r| r[4].as_str()).collect();
    assert!(epochs.iter().all(|e| ["2", "4", "8"].contains(e)), "{rows:?}");
    assert!(rows[1..].iter().any(|r| r[3] == "pruned") && rows[1..].iter().any(|r| r[3] == "finished"), "{rows:?}");
    // Replay the paper's rule (one worker: promote from the highest rung down the first of
    // the best floor(n/2) of a rung not yet promoted, else start the next trial) on the
    // trials' own metric values: it must stop each trial where the sweep did.
    let values: Vec<Vec<f64>> = rows[1..]
        .iter()
        .map(|r| {
            let (header, rows) = read_csv(&d.path().join("asha/trials").join(&r[0]).join("metrics.csv"));
            let at = header.iter().position(|h| h == "val_loss").unwrap();
            rows.iter().map(|row| row[at]).collect()
        })
        .collect();
    assert_eq!(asha_replay(&values, &[2, 4, 8], 2), epochs.iter().map(|e| e.parse().unwrap()).collect::<Vec<usize>>());
    // A trial promoted to the end, paused twice, equals one trained straight; a pruned one
    // equals the first epochs of a straight run. The schedule (cosine with warm-up over 8
    // epochs) and dropout make any difference show.
    for row in &rows[1..] {
        let trial = d.path().join("asha/trials").join(&row[0]);
        let straight = format!("straight-{}", row[0]);
        let config = trial.join("config.yaml").display().to_string();
        assert_ok(&torchfit(d.path(), &["train", &config, "--quiet", "--out", &straight]));
        let (paused, whole) = (metrics_without_seconds(&trial), metrics_without_seconds(&d.path().join(&straight)));
        assert_eq!(paused[..], whole[..paused.len()], "trial {}", row[0]);
        let expected = if row[4] == "8" { "finished" } else { "paused" };
        assert_eq!(summary(&trial)["status"], expected);
    }
}

/// The epochs each trial reaches under ASHA with one worker (Li et al. 2020, Algorithm 2).
fn asha_replay(values: &[Vec<f64>], budgets: &[usize], eta: usize) -> Vec<usize> {
    let mut rungs: Vec<Vec<usize>> = vec![Vec::new(); budgets.len()];
    let mut promoted = vec![vec![false; budgets.len()]; values.len()];
    let mut reached = vec![0; values.len()];
    let mut next_trial = 0;
    loop {
        let mut task = None;
        for k in (0..budgets.len() - 1).rev() {
            let mut ranked = rungs[k].clone();
            ranked.sort_by(|&a, &b| values[a][budgets[k] - 1].total_cmp(&values[b][budgets[k] - 1]).then(a.cmp(&b)));
            if let Some(&t) = ranked[..ranked.len() / eta].iter().find(|&&t| !promoted[t][k]) {
                promoted[t][k] = true;
                task = Some((t, k + 1));
                break;
            }
        }
        if task.is_none() && next_trial < values.len() {
            task = Some((next_trial, 0));
            next_trial += 1;
        }
        // Nothing else to do and no trial at the full budget: the best paused trial of the
        // highest rung goes on.
        let top = budgets.len() - 1;
        if task.is_none() && rungs[top].is_empty() {
            task = (0..top).rev().find_map(|k| {
                let value = |t: usize| values[t][budgets[k] - 1];
                let waiting = rungs[k].iter().copied().filter(|&t| !promoted[t][k]);
                let best = waiting.min_by(|&a, &b| value(a).total_cmp(&value(b)).then(a.cmp(&b)))?;
                promoted[best][k] = true;
                Some((best, k + 1))
            });
        }
        let Some((t, k)) = task else { return reached };
        rungs[k].push(t);
        reached[t] = budgets[k];
    }
}

#[test]
fn bad_sweep_files_fail_on_one_line_naming_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("base: base.yaml\nmethod: grid\nparameters: {training.optimizer.lr: {values: [0.1]}}\nbogus: 1\n", &["sweep.yaml", "bogus"]),
        ("base: base.yaml\nmethod: grid\nparameters: {training.optimizer.lrr: {values: [0.1]}}\n", &["parameters.training.optimizer.lrr", "unknown key"]),
        ("base: base.yaml\nmethod: grid\nparameters: {model.hidden: {values: [[8], [0]]}}\n", &["parameters.model.hidden", "value [0]"]),
        ("base: base.yaml\nmethod: grid\nparameters: {model.dropout: {distribution: uniform, min: 0, max: 0.3}}\n", &["parameters.model.dropout", "method: random"]),
        ("base: base.yaml\nmethod: random\ntrials: 2\nparameters: {model.dropout: {distribution: uniform, min: 0.3, max: 0.1}}\n", &["parameters.model.dropout", "below max"]),
        ("base: base.yaml\nmethod: random\nparameters: {model.dropout: {values: [0.1]}}\n", &["trials"]),
        ("base: base.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\nmetric: val_r2\n", &["metric", "val_r2"]),
        ("base: nope.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\n", &["base", "nope.yaml"]),
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\nearly_termination: {kind: asha, min_epochs: 6, reduction_factor: 3}\n",
            &["early_termination.min_epochs", "training.epochs"],
        ),
        (
            "base: base.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\nearly_termination: {kind: asha, min_epochs: 1, reduction_factor: 1}\n",
            &["reduction_factor", ">= 2"],
        ),
    ];
    for (text, words) in cases {
        let d = setup(text);
        let out = sweep(d.path(), "s", &[]);
        assert_fails_with(&out, words);
        assert!(!d.path().join("s").exists(), "{text}: a sweep directory was made");
    }
    // The sweep file and its base are read as config files are: no endless read of a
    // device, no nesting libyaml takes quadratic time over.
    let d = setup(GRID);
    let endless = torchfit(d.path(), &["sweep", "/dev/zero", "--out", "s"]);
    assert_fails_with(&endless, &["cannot read sweep file /dev/zero", "device"]);
    std::fs::write(d.path().join("zero.yaml"), GRID.replace("base.yaml", "/dev/zero")).unwrap();
    let base = torchfit(d.path(), &["sweep", "zero.yaml", "--out", "s"]);
    assert_fails_with(&base, &["zero.yaml: base", "cannot read config file /dev/zero", "device"]);
    let deep = format!("base: base.yaml\nx: {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    std::fs::write(d.path().join("deep.yaml"), deep).unwrap();
    let nested = torchfit(d.path(), &["sweep", "deep.yaml", "--out", "s"]);
    assert_fails_with(&nested, &["deep.yaml", "nested more than"]);
    // A sweep directory continues only as it started.
    let d = setup(GRID);
    assert_ok(&sweep(d.path(), "s", &["--jobs", "1", "--set", "training.epochs=2"]));
    let changed = sweep(d.path(), "s", &["--jobs", "1", "--set", "training.epochs=3"]);
    assert_fails_with(&changed, &["s holds a sweep", "set"]);
    let status = torchfit(d.path(), &["sweep", "status", "nowhere"]);
    assert_fails_with(&status, &["nowhere", "not a torchfit sweep directory"]);
}

/// Whether this machine answers Slurm commands; the reason to skip otherwise.
/// Cancels a job on drop, so that a failing test leaves nothing running.
struct Job(String);

impl Drop for Job {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.0).status();
    }
}

fn claim_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("claims"))
        .map(|e| e.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_sweep_writes_its_sbatch_script_with_dry_run() {
    let d = setup(GRID);
    let out =
        sweep(d.path(), "s", &["--launcher", "slurm", "--jobs", "3", "--dry-run", "--sbatch-arg=--time=00:10:00"]);
    assert_ok(&out);
    let script = std::fs::read_to_string(d.path().join("s/sweep.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0-2\n") && script.contains("#SBATCH --time=00:10:00\n"), "{script}");
    assert!(script.contains(" sweep worker ") && script.contains("exec "), "{script}");
}

/// A 2-worker job array on the one-node Slurm: one worker is cancelled with scancel in the
/// middle of its trial, which checkpoints and gives the trial back; the other worker
/// finishes it, exactly as an uninterrupted run.
#[test]
fn slurm_workers_finish_the_trial_of_a_cancelled_one() {
    let Some(_) = slurm() else { return };
    let text = "base: base.yaml
method: grid
parameters:
  training.optimizer.lr: {values: [0.001, 0.002]}
";
    let d = setup(text);
    // Long enough (about 10 s each on an idle 2-core machine) that a trial is still running
    // when the cancel arrives.
    let sets = [
        "--set",
        "training.epochs=400",
        "--set",
        "data.samples=4000",
        "--set",
        "model.hidden=[128, 128]",
        "--set",
        "training.batch_size=16",
    ];
    let mut args = vec!["--launcher", "slurm", "--jobs", "2"];
    args.extend(sets);
    let out = sweep(d.path(), "s", &args);
    assert_ok(&out);
    let job = stdout(&out).split_whitespace().nth(3).unwrap_or_default().trim_end_matches(':').to_string();
    assert!(job.chars().all(|c| c.is_ascii_digit()) && !job.is_empty(), "{}", stdout(&out));
    let _cancel = Job(job.clone());
    let s = d.path().join("s");
    let started = Instant::now();
    // Both workers in the middle of a trial (claimed, run directory open, not done), then
    // cancel array task 1: whichever trial its worker holds, it checkpoints and gives back.
    loop {
        let claims = claim_files(&s);
        let running = |t: &str| {
            claims.iter().any(|n| n == &format!("{t}-r0.1"))
                && !claims.iter().any(|n| n == &format!("{t}-r0.done"))
                && s.join("trials").join(t).join("summary.json").is_file()
        };
        if running("0000") && running("0001") {
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the workers did not start within 120 s: {claims:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancel = Command::new("scancel").arg(format!("{job}_1")).status().unwrap();
    assert!(cancel.success());
    // Wait (bounded) for the array to end.
    loop {
        let q = Command::new("squeue").args(["-h", "-j", &job]).output().unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(480), "the job array did not end within 480 s");
        std::thread::sleep(Duration::from_millis(500));
    }
    let claims = claim_files(&s);
    // The cancelled worker's trial was given back (generation 2: released) and finished by
    // the other worker (generation 3).
    let taken_over: Vec<&String> = claims.iter().filter(|n| n.ends_with(".3")).collect();
    assert_eq!(taken_over.len(), 1, "{claims:?}");
    let trial = &taken_over[0][..4];
    assert!(claims.contains(&format!("{trial}-r0.2")), "{claims:?}");
    let rows = table(&s);
    assert!(rows[1..].iter().all(|r| r[2] == "finished"), "{rows:?}");
    // Each array task's log shows its worker's progress.
    let logs: Vec<String> = std::fs::read_dir(s.join("slurm"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(logs.iter().all(|log| log.starts_with("sweep worker pid ") && log.contains("): started")), "{logs:?}");
    // The trial interrupted by scancel ends exactly as one trained straight.
    let run = s.join("trials").join(trial);
    let config = run.join("config.yaml").display().to_string();
    assert_ok(&torchfit(d.path(), &["train", &config, "--quiet", "--out", "straight"]));
    assert_eq!(metrics_without_seconds(&run), metrics_without_seconds(&d.path().join("straight")));
    assert_eq!(
        std::fs::read(run.join("weights.safetensors")).unwrap(),
        std::fs::read(d.path().join("straight/weights.safetensors")).unwrap()
    );
}

/// Issue 19, item 15: 12 random trials with rungs at 2, 6 and 18 of 20 epochs leave fewer
/// than `reduction_factor` trials at 18 epochs; the best of them must still go on to the full
/// budget. One worker and two make the same decisions, and every trial stops at a rung's
/// epoch, as the lines printed while the sweep runs say too.
#[test]
fn asha_with_few_trials_trains_one_to_the_full_budget_the_same_with_any_jobs() {
    let text = "base: base.yaml
method: random
trials: 12
seed: 3
parameters:
  training.optimizer.lr: {distribution: log_uniform, min: 0.0003, max: 0.1}
early_termination: {kind: asha, min_epochs: 2, reduction_factor: 3}
";
    let d = setup(text);
    let mut tables = Vec::new();
    for (out, jobs) in [("one", "1"), ("two", "2")] {
        let run = sweep(d.path(), out, &["--jobs", jobs, "--set", "training.epochs=20"]);
        assert_ok(&run);
        // Each line: `trial 0004 rung 1 (lr=...): paused, 6 epochs, val_loss 0.269571 [12 done]`.
        for line in stdout(&run).lines().filter(|l| l.contains(" rung ")) {
            let rung: usize = line.split(" rung ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
            let epochs: usize =
                line.split("epochs").next().unwrap().rsplit(", ").next().unwrap().trim().parse().unwrap();
            assert_eq!(epochs, [2, 6, 18, 20][rung], "{line}");
            let trial = &line[6..10];
            let (header, rows) = read_csv(&d.path().join(out).join("trials").join(trial).join("metrics.csv"));
            let at = header.iter().position(|h| h == "val_loss").unwrap();
            assert!(line.contains(&format!("val_loss {:.6} ", rows[epochs - 1][at])), "{line}");
        }
        tables.push(table(&d.path().join(out)));
    }
    assert_eq!(tables[0], tables[1]);
    let rows = &tables[0];
    let epochs: Vec<usize> = rows[1..].iter().map(|r| r[3].parse().unwrap()).collect();
    assert!(epochs.iter().all(|e| [2, 6, 18, 20].contains(e)), "{rows:?}");
    let finished: Vec<&Vec<String>> = rows[1..].iter().filter(|r| r[2] == "finished").collect();
    assert!(!finished.is_empty() && finished.iter().all(|r| r[3] == "20"), "{rows:?}");
    // The paper's rule with one worker, then the best paused trial of the highest rung: it
    // stops each trial where the sweep did.
    let values: Vec<Vec<f64>> = rows[1..]
        .iter()
        .map(|r| {
            let (header, rows) = read_csv(&d.path().join("one/trials").join(&r[0]).join("metrics.csv"));
            let at = header.iter().position(|h| h == "val_loss").unwrap();
            rows.iter().map(|row| row[at]).collect()
        })
        .collect();
    assert_eq!(asha_replay(&values, &[2, 6, 18, 20], 3), epochs);
    for row in &rows[1..] {
        let expected = if row[3] == "20" { "finished" } else { "paused" };
        assert_eq!(summary(&d.path().join("one/trials").join(&row[0]))["status"], expected, "{row:?}");
    }
}

/// Issue 19, item 13: identical `torchfit sweep` commands started at the same moment all
/// join one sweep (none says the directory is not a sweep directory), and every trial runs
/// exactly once. The race is narrow: several rounds of several commands each.
#[test]
fn identical_sweeps_started_together_join_and_run_each_trial_once() {
    let d = setup(GRID);
    for round in 0..4 {
        let out = format!("s{round}");
        let started = Instant::now();
        let mut children: Vec<std::process::Child> = (0..5)
            .map(|_| {
                Command::new(BIN)
                    .args(["sweep", "sweep.yaml", "--out", &out, "--jobs", "1", "--set", "training.epochs=2"])
                    .current_dir(d.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .spawn()
                    .unwrap()
            })
            .collect();
        // Bounded: a command that never ends fails the test instead of hanging it.
        while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
            if started.elapsed() > Duration::from_secs(240) {
                for c in &children {
                    unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
                }
                panic!("round {round}: the sweeps did not end within 240 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "round {round}: {:?} {}", output.status, stderr(&output));
        }
        let claims = claim_files(&d.path().join(&out));
        // Four trials, each claimed once (generation 1) and done once.
        let expected: Vec<String> = (0..4).flat_map(|t| [format!("{t:04}-r0.1"), format!("{t:04}-r0.done")]).collect();
        assert_eq!(claims, expected, "round {round}");
        let rows = table(&d.path().join(&out));
        assert!(rows[1..].iter().all(|r| r[3] == "finished" && r[4] == "2"), "{rows:?}");
    }
}

/// Issue 19, item 8 (sweeps): a sweep of more trials than the documented limit is refused
/// on one line naming the key and the count, before anything is listed or allocated.
#[test]
fn a_sweep_of_too_many_trials_is_refused_naming_the_count() {
    let d =
        setup("base: base.yaml\nmethod: random\ntrials: 1000000000000\nparameters: {model.dropout: {values: [0.1]}}\n");
    assert_fails_with(&sweep(d.path(), "s", &[]), &["sweep.yaml: trials", "1000000000000", "limit of 100000"]);
    let values = (0..1000).map(|i| format!("{}", i + 1)).collect::<Vec<_>>().join(", ");
    let grid = format!(
        "base: base.yaml\nmethod: grid\nparameters:\n  seed: {{values: [{values}]}}\n  training.batch_size: {{values: [{values}]}}\n  \
         training.epochs: {{values: [{values}]}}\n  training.checkpoint_every: {{values: [{values}]}}\n"
    );
    write(d.path(), "sweep.yaml", &grid);
    let out = sweep(d.path(), "s", &[]);
    assert_fails_with(
        &out,
        &["sweep.yaml: parameters", "1000000000000 combinations", "1000 x 1000 x 1000 x 1000", "limit of 100000"],
    );
    assert!(!d.path().join("s").exists());
}

/// Papercut: a misspelt key or value in a sweep file gets a did-you-mean, as in a config.
#[test]
fn a_misspelt_sweep_key_gets_a_did_you_mean() {
    let d = setup("base: base.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\nmetrc: val_loss\n");
    assert_fails_with(&sweep(d.path(), "s", &[]), &["metrc", "did you mean `metric`?"]);
    let d = setup("base: base.yaml\nmethod: gird\nparameters: {model.dropout: {values: [0.1]}}\n");
    assert_fails_with(&sweep(d.path(), "s", &[]), &["method", "did you mean `grid`?"]);
    let text = "base: base.yaml\nmethod: grid\nparameters: {model.dropout: {values: [0.1]}}\n\
                early_termination: {kind: asha, min_epoch: 1, reduction_factor: 2}\n";
    let d = setup(text);
    assert_fails_with(&sweep(d.path(), "s", &[]), &["early_termination", "did you mean `min_epochs`?"]);
}

/// Papercut: docs/sweeps.md's commands name sweeps/friedman1.yaml; it exists, and the sweep
/// it describes is valid (every trial checked; --dry-run writes the job array only).
#[test]
fn the_documented_sweep_file_exists_and_is_valid() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("friedman1");
    let out = out.to_str().unwrap();
    let run = torchfit(
        &repo_file(""),
        &["sweep", "sweeps/friedman1.yaml", "--out", out, "--launcher", "slurm", "--dry-run", "--jobs", "2"],
    );
    assert_ok(&run);
    let docs = std::fs::read_to_string(repo_file("docs/sweeps.md")).unwrap();
    let file = std::fs::read_to_string(repo_file("sweeps/friedman1.yaml")).unwrap();
    // The sweep file the docs show is the one in the repository.
    let shown = docs.split("```yaml\n").nth(1).unwrap().split("```").next().unwrap();
    assert_eq!(shown, file);
    assert!(docs.contains("torchfit sweep sweeps/friedman1.yaml"));
}

/// A sweep with trials of a few seconds, started in its own process group.
fn long_sweep(d: &Path, out: &str) -> std::process::Child {
    Command::new(BIN)
        .args(["sweep", "sweep.yaml", "--out", out, "--jobs", "2"])
        .args(["--set", "training.epochs=40", "--set", "data.samples=3000"])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Waits (bounded) until both workers are in the middle of a trial.
fn wait_for_two_running_trials(sweep_dir: &Path, child: &mut std::process::Child) {
    let started = Instant::now();
    loop {
        let running = (0..4)
            .filter(|t| {
                let trial = format!("{t:04}");
                let summary = sweep_dir.join("trials").join(&trial).join("metrics.csv");
                summary.is_file() && !sweep_dir.join("claims").join(format!("{trial}-r0.done")).exists()
            })
            .count();
        if running >= 2 {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the sweep ended before it could be stopped");
        assert!(started.elapsed() < Duration::from_secs(300), "no two trials running within 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Papercuts: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) stops the
/// sweep with status 130 and one line saying how to continue the sweep (not a trial), and
/// SIGTERM to the `torchfit sweep` process alone gives 143 (128 + the signal). Either way
/// the same command then finishes it.
#[test]
fn a_stopped_sweep_says_how_to_continue_it_with_the_signals_status() {
    let d = setup(GRID);
    for (signal, group, code, name) in [(libc::SIGINT, true, 130, "SIGINT"), (libc::SIGTERM, false, 143, "SIGTERM")] {
        let out = format!("s-{name}");
        let mut child = long_sweep(d.path(), &out);
        wait_for_two_running_trials(&d.path().join(&out), &mut child);
        let pid = child.id() as i32;
        unsafe { libc::kill(if group { -pid } else { pid }, signal) };
        let output = child.wait_with_output().unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(err.contains(&format!("interrupted by {name}")), "{name}: {err}");
        let command = format!(" sweep sweep.yaml --out {out} --jobs 2");
        assert!(
            err.contains("continue with: ") && err.contains(&command) && !err.contains("--resume"),
            "{name}: {err}"
        );
        let again = torchfit(
            d.path(),
            &[
                "sweep",
                "sweep.yaml",
                "--out",
                &out,
                "--jobs",
                "2",
                "--set",
                "training.epochs=40",
                "--set",
                "data.samples=3000",
            ],
        );
        assert_ok(&again);
        let rows = table(&d.path().join(&out));
        assert!(rows[1..].iter().all(|r| r[3] == "finished" && r[4] == "40"), "{rows:?}");
    }
}

/// Papercut: a Slurm worker's log (its stdout and stderr) shows its progress: a line as each
/// task starts and ends. `torchfit sweep worker` is what each array task runs.
#[test]
fn a_sweep_workers_log_shows_each_task() {
    let d = setup(GRID);
    assert_ok(&sweep(d.path(), "s", &["--launcher", "slurm", "--dry-run", "--set", "training.epochs=2"]));
    let worker = torchfit(d.path(), &["sweep", "worker", "s"]);
    assert_ok(&worker);
    let log = stdout(&worker);
    assert!(log.starts_with("sweep worker pid "), "{log}");
    for trial in ["0000", "0001", "0002", "0003"] {
        assert!(log.contains(&format!("trial {trial} (")), "{log}");
        assert!(log.contains("): finished, 2 epochs, val_loss "), "{log}");
    }
    assert!(log.trim_end().ends_with("nothing left to do; results in s"), "{log}");
}
