//! Launchers for the multi-process tests: a command under Slurm's `srun` on the one-node
//! Slurm of scripts/slurm.sh, or under PyTorch's `torchrun`, each with a bounded time. On
//! timeout the launcher and every process it started are killed (by pid, found through
//! /proc while they ran) and the Slurm job is cancelled by its id, so a hung test leaves
//! nothing behind.

use std::fmt;
use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The one-node Slurm that `slurm()` found up.
#[derive(Clone, Debug)]
pub struct Slurm {
    pub node: String,
    pub cpus: usize,
    /// sinfo's state of the node: idle, mixed, allocated or completing.
    pub state: String,
}

/// Whether `srun` can run jobs here: `Some` when sinfo answers and shows a node up. When not,
/// prints why (visible with --nocapture) and returns `None`, for tests to return early:
///
/// ```ignore
/// let Some(_) = slurm() else { return };
/// ```
pub fn slurm() -> Option<Slurm> {
    static FOUND: OnceLock<Result<Slurm, String>> = OnceLock::new();
    match FOUND.get_or_init(find_slurm) {
        Ok(s) => Some(s.clone()),
        Err(why) => {
            println!("skipping: one-node Slurm not available (run scripts/slurm.sh): {why}");
            None
        }
    }
}

fn find_slurm() -> Result<Slurm, String> {
    for tool in ["sinfo", "srun", "squeue", "scancel"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(format!("{tool} not found (Slurm is not installed)"));
        }
    }
    // sinfo keeps retrying while slurmctld is down: bounded.
    let out = run_bounded(Command::new("sinfo").args(["-h", "-o", "%n %T %c"]), Duration::from_secs(10))
        .map_err(|_| "sinfo did not answer within 10 s (slurmctld not running?)".to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("sinfo failed: {}", err.trim().lines().last().unwrap_or("no message")));
    }
    let mut seen = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [node, state, cpus] = fields[..] {
            if ["idle", "mixed", "allocated", "completing"].contains(&state) {
                let cpus = cpus.parse().unwrap_or(1);
                return Ok(Slurm { node: node.to_string(), cpus, state: state.to_string() });
            }
            seen.push(format!("{node} {state}"));
        }
    }
    Err(if seen.is_empty() { "sinfo lists no node".to_string() } else { format!("no node up ({})", seen.join(", ")) })
}

/// A launch that ran out of time. Its processes were killed and its Slurm jobs cancelled
/// before it was returned.
pub struct TimedOut {
    pub command: String,
    pub after: Duration,
    pub stdout: String,
    pub stderr: String,
    /// The pids killed: the launcher and every descendant seen while it ran.
    pub killed: Vec<u32>,
    /// With srun: the job's unique name, and the ids of the jobs of that name still queued
    /// after srun was stopped, which were cancelled (srun usually cancels its own on SIGTERM).
    pub job_name: Option<String>,
    pub cancelled_jobs: Vec<String>,
}

impl fmt::Debug for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} timed out after {:?} (killed pids {:?}, cancelled Slurm jobs {:?})\nstdout: {}\nstderr: {}",
            self.command, self.after, self.killed, self.cancelled_jobs, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (its stdin closed, stdout and stderr captured) for at most `timeout`. On
/// timeout: SIGTERM to the process (srun cancels its job step, torchrun stops its workers),
/// a few seconds' grace, then SIGKILL to it and to every descendant seen while it ran, which
/// includes torchrun's workers in their own sessions.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, TimedOut> {
    // Files rather than pipes: a descendant that outlives the launcher cannot keep a read
    // blocked.
    let mut out = tempfile::tempfile().expect("a temporary file");
    let mut err = tempfile::tempfile().expect("a temporary file");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let mut family = Vec::new();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            break None;
        }
        for p in descendants(child.id()) {
            if !family.contains(&p) {
                family.push(p);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |file: &mut std::fs::File| {
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).ok();
        text
    };
    if let Some(status) = status {
        return Ok(Output { status, stdout: read(&mut out).into_bytes(), stderr: read(&mut err).into_bytes() });
    }
    let after = start.elapsed();
    for p in descendants(child.id()) {
        if !family.contains(&p) {
            family.push(p);
        }
    }
    signal("TERM", child.id());
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(5) && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = vec![child.id()];
    child.kill().ok();
    child.wait().ok();
    for (pid, started) in &family {
        // Only the same process: a pid reused since is left alone.
        if proc_start(*pid).as_ref() == Some(started) {
            signal("KILL", *pid);
        }
        killed.push(*pid);
    }
    Err(TimedOut {
        command: format!("{cmd:?}"),
        after,
        stdout: read(&mut out),
        stderr: read(&mut err),
        killed,
        job_name: None,
        cancelled_jobs: Vec::new(),
    })
}

fn signal(name: &str, pid: u32) {
    Command::new("kill").args([format!("-{name}"), pid.to_string()]).stderr(Stdio::null()).status().ok();
}

/// A process's start time (field 22 of /proc/PID/stat), which tells it from a later process
/// given the same pid; and its parent.
fn proc_stat(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name, which may hold spaces and parentheses.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some((rest.get(1)?.parse().ok()?, rest.get(19)?.to_string()))
}

fn proc_start(pid: u32) -> Option<String> {
    proc_stat(pid).map(|(_, start)| start)
}

/// Every live descendant of `root` with its start time.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
            if let Some((ppid, start)) = proc_stat(pid) {
                parents.push((pid, ppid, start));
            }
        }
    }
    let mut found: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, start) in &parents {
            if *ppid == p && !found.iter().any(|(f, _)| f == pid) {
                found.push((*pid, start.clone()));
                frontier.push(*pid);
            }
        }
    }
    found
}

/// A Slurm job name unique to this launch, naming the test that made it.
fn job_name() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let test = std::thread::current().name().unwrap_or("test").replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let tail: String = test.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
    format!("torchfit-test-{}-{}-{tail}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed))
}

/// A TCP port free on this machine now, for MASTER_PORT.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `cmd` as `tasks` tasks of one Slurm job step on the one node (`srun -N 1 -n TASKS
/// --overcommit --oversubscribe --kill-on-bad-exit=1`), in `dir`, for at most `timeout`.
/// The tasks get SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID from Slurm and, as a batch script
/// would export them, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT (unless `env` sets them).
/// Without LD_LIBRARY_PATH, as `torchfit()`. Their outputs are interleaved in `stdout`.
/// On timeout the job, found by its unique `--job-name`, is cancelled too.
pub fn srun(
    tasks: usize,
    dir: &Path,
    cmd: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output, TimedOut> {
    let name = job_name();
    let port = free_port().to_string();
    let mut c = Command::new("srun");
    c.args(["--job-name", &name, "-N", "1", "-n", &tasks.to_string()])
        // More tasks than free cores, and alongside other jobs: a test machine has few.
        .args(["--overcommit", "--oversubscribe", "--kill-on-bad-exit=1"])
        // Slurm's own bound too, in minutes, should this process die before cancelling.
        .arg(format!("--time={}", timeout.as_secs() / 60 + 2))
        .args(cmd)
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", &port);
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(&mut c, timeout).map_err(|mut timed_out| {
        timed_out.cancelled_jobs = cancel_jobs(&name);
        timed_out.job_name = Some(name);
        timed_out
    })
}

/// Cancels the jobs named `name` (by id, as squeue lists them) and waits up to 20 s for
/// them to leave the queue. Returns their ids.
pub fn cancel_jobs(name: &str) -> Vec<String> {
    let list = || -> Vec<String> {
        run_bounded(Command::new("squeue").args(["-h", "-n", name, "-o", "%i"]), Duration::from_secs(10))
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let ids = list();
    if ids.is_empty() {
        return ids;
    }
    run_bounded(Command::new("scancel").args(&ids), Duration::from_secs(10)).ok();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) && !list().is_empty() {
        std::thread::sleep(Duration::from_millis(200));
    }
    ids
}

/// Runs `cmd` as `procs` workers under PyTorch's launcher, with the torch package this build
/// links (the one the Python tests use):
/// `python3 -m torch.distributed.run --no-python --standalone --nproc-per-node PROCS CMD...`,
/// in `dir`, for at most `timeout`. The workers get RANK, WORLD_SIZE, LOCAL_RANK,
/// MASTER_ADDR, MASTER_PORT, ... from torchrun; their outputs are interleaved in `stdout`.
/// Without LD_LIBRARY_PATH, as `torchfit()`.
pub fn torchrun(
    procs: usize,
    dir: &Path,
    cmd: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Output, TimedOut> {
    let torch = env!("TORCHFIT_TORCH_PYTHONPATH");
    let python_path = match std::env::var("PYTHONPATH") {
        Ok(p) if p.split(':').any(|d| d == torch) => p,
        Ok(p) if !p.is_empty() => format!("{torch}:{p}"),
        _ => torch.to_string(),
    };
    let mut c = Command::new("python3");
    c.args(["-m", "torch.distributed.run", "--no-python", "--standalone", "--nproc-per-node", &procs.to_string()])
        .args(cmd)
        .current_dir(dir)
        .env_remove("LD_LIBRARY_PATH")
        .env("PYTHONPATH", python_path);
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(&mut c, timeout)
}
