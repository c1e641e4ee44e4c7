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

#[test]
fn srun_timeout_kills_and_cancels_its_job() {
    let Some(_) = slurm() else { return };
    let start = Instant::now();
    let timed_out = srun(2, Path::new("/"), &["sleep", "300"], &[], Duration::from_secs(4)).unwrap_err();
    println!("timed out: killed {:?}, cancelled jobs {:?}", timed_out.killed, timed_out.cancelled_jobs);
    assert!(start.elapsed() < Duration::from_secs(60), "{timed_out:?}");
    // Cancelled by srun itself on SIGTERM, or by the helper: no job of that name is queued.
    let name = timed_out.job_name.as_deref().unwrap();
    let queue = std::process::Command::new("squeue").args(["-h", "-n", name]).output().unwrap();
    assert_eq!(stdout(&queue), "", "{timed_out:?}");
    for pid in &timed_out.killed {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid), "pid {pid} left running");
    }
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
    let timed_out = torchrun(2, Path::new("/"), &["sleep", "300"], &[], Duration::from_secs(8)).unwrap_err();
    println!("timed out: killed {:?}", timed_out.killed);
    // torchrun and its two workers (in sessions of their own) at least.
    assert!(timed_out.killed.len() >= 3, "{timed_out:?}");
    for pid in &timed_out.killed {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid),
            "pid {pid} left running: {timed_out:?}"
        );
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}
