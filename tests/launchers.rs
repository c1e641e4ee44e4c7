//! The multi-process launchers the distributed tests use work on this machine: srun on the
//! one-node Slurm of scripts/slurm.sh (skipped, saying why, when it is not up) and torchrun
//! from the torch package the build links. These check the environment, not torchfit.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The sorted lines of the launch's stdout that start with `prefix`.
fn lines(out: &std::process::Output, prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = stdout(out).lines().filter(|l| l.starts_with(prefix)).map(String::from).collect();
    found.sort();
    found
}

#[test]
fn srun_runs_two_ranks() {
    let Some(_) = slurm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = "echo rank $SLURM_PROCID of $SLURM_NTASKS local $SLURM_LOCALID at $MASTER_ADDR:$MASTER_PORT in $(pwd)";
    let out = srun(2, dir.path(), &["sh", "-c", script], &[], Duration::from_secs(120)).unwrap();
    assert_ok(&out);
    let found = lines(&out, "rank ");
    assert_eq!(found.len(), 2, "{found:?}");
    let here = dir.path().canonicalize().unwrap();
    for (rank, line) in found.iter().enumerate() {
        assert!(line.starts_with(&format!("rank {rank} of 2 local {rank} at 127.0.0.1:")), "{line}");
        assert!(line.ends_with(&format!(" in {}", here.display())), "{line}");
    }
    // One MASTER_PORT for both ranks, as a batch script exports it.
    let port = |l: &str| l.split(':').nth(1).unwrap().split(' ').next().unwrap().to_string();
    assert_eq!(port(&found[0]), port(&found[1]));
}

/// A command for each task or worker: writes its pid to pid-<RANK> in the current folder,
/// then sleeps far longer than the timeout.
const SLEEPER: &str = "echo $$ > pid-${SLURM_PROCID:-$RANK}; exec sleep 300";
/// The same for torchrun, which passes each argument through Python's
/// `string.Template.safe_substitute` (for its `${local_rank}` macro): `$$` becomes `$`.
const TORCHRUN_SLEEPER: &str = "echo $$$$ > pid-$RANK; exec sleep 300";

/// The pids the sleepers wrote (a loaded machine may not have started them all in time:
/// torchrun imports torch first).
fn sleeper_pids(dir: &Path) -> Vec<u32> {
    ["pid-0", "pid-1"].iter().filter_map(|f| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok()).collect()
}

/// The live processes working in `dir`: whatever a launch there left running, started or
/// not yet.
fn working_in(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| cwd == dir) && !is_zombie(*p))
        .collect()
}

/// Waits up to 20 s for each pid to be gone (or a zombie); returns those still running.
fn still_running(pids: &[u32]) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let left: Vec<u32> =
            pids.iter().copied().filter(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p)).collect();
        if left.is_empty() || start.elapsed() > Duration::from_secs(20) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that nothing of a timed-out launch in `dir` runs on: the processes it killed,
/// the sleepers that wrote their pid, and anything else working in `dir`.
fn assert_all_stopped(dir: &Path, timed_out: &TimedOut) {
    let sleepers = sleeper_pids(dir);
    println!(
        "timed out: {} sleepers started, killed {:?}, cancelled jobs {:?}",
        sleepers.len(),
        timed_out.killed,
        timed_out.cancelled_jobs
    );
    assert_eq!(still_running(&sleepers), Vec::<u32>::new(), "{timed_out:?}");
    assert_eq!(still_running(&timed_out.killed), Vec::<u32>::new(), "{timed_out:?}");
    assert_eq!(still_running(&working_in(dir)), Vec::<u32>::new(), "{timed_out:?}");
}

#[test]
fn srun_timeout_kills_and_cancels_its_job() {
    let Some(_) = slurm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let timed_out = srun(2, dir.path(), &["sh", "-c", SLEEPER], &[], Duration::from_secs(10)).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(60), "{timed_out:?}");
    // Cancelled by srun itself on SIGTERM, or by the helper: no job of that name is queued.
    let name = timed_out.job_name.as_deref().unwrap();
    let queue = std::process::Command::new("squeue").args(["-h", "-n", name]).output().unwrap();
    assert_eq!(stdout(&queue), "", "{timed_out:?}");
    // The tasks ran under slurmd, not under srun: the job's end stopped them.
    assert_all_stopped(dir.path(), &timed_out);
}

#[test]
fn torchrun_runs_two_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let script = "echo rank $RANK of $WORLD_SIZE local $LOCAL_RANK at $MASTER_ADDR:$MASTER_PORT";
    let out = torchrun(2, dir.path(), &["sh", "-c", script], &[], Duration::from_secs(120)).unwrap();
    assert_ok(&out);
    let found = lines(&out, "rank ");
    assert_eq!(found.len(), 2, "{found:?}\n{}", stderr(&out));
    for (rank, line) in found.iter().enumerate() {
        assert!(line.starts_with(&format!("rank {rank} of 2 local {rank} at ")), "{line}");
    }
}

#[test]
fn torchrun_timeout_kills_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let timed_out = torchrun(2, dir.path(), &["sh", "-c", TORCHRUN_SLEEPER], &[], Duration::from_secs(12)).unwrap_err();
    // The workers run in sessions of their own: found by pid, not by process group.
    assert!(sleeper_pids(dir.path()).iter().all(|w| timed_out.killed.contains(w)), "{timed_out:?}");
    assert_all_stopped(dir.path(), &timed_out);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}

#[test]
fn cancel_jobs_finds_a_job_by_name() {
    let Some(_) = slurm() else { return };
    let name = format!("torchfit-test-{}-cancel", std::process::id());
    let submit = std::process::Command::new("sbatch")
        .args(["--job-name", &name, "--output", "/dev/null", "--oversubscribe", "--time=2", "--wrap", "sleep 300"])
        .output()
        .unwrap();
    assert_ok(&submit);
    let id = stdout(&submit).split_whitespace().last().unwrap().to_string();
    assert_eq!(cancel_jobs(&name), [id]);
    let queue = std::process::Command::new("squeue").args(["-h", "-n", &name]).output().unwrap();
    assert_eq!(stdout(&queue), "");
}
