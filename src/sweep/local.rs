//! A sweep on this machine: `jobs` worker processes, each training trial after trial
//! in-process, so that a trial pays no process start and libtorch's global state (seed,
//! threads, signal handlers) is each worker's own. The workers are forks of this process
//! (the same loop a Slurm array task runs as `torchfit sweep worker DIR`), which only
//! watches: one line per finished task, and at the end the best trial.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::claims::{Claims, Task};
use super::spec::Sweep;
use super::survey::{Survey, Work};
use super::table::{self, Row};
use super::SweepDir;
use crate::exit;
use crate::train::Interrupted;

/// How often the workers are looked at: a finished sweep is noticed this long after.
const POLL: Duration = Duration::from_millis(25);

pub fn run(
    dir: &SweepDir,
    sweep: &Sweep,
    jobs: usize,
    continued: bool,
    command: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let trials = sweep.trials();
    let claims = Claims::new(dir.path())?;
    let mut seen: BTreeSet<Task> = done(&Survey::read(dir, sweep, &trials, &claims)?);
    let verb = if continued { "continuing" } else { "starting" };
    writeln!(out, "{verb} sweep {}: {} trials, {jobs} workers", dir.path().display(), trials.len())?;
    out.flush()?;
    let mut workers = start_workers(dir, jobs)?;
    // Ctrl-C reaches the workers from the terminal; a signal to this process alone is
    // passed on to them. Either way each checkpoints its trial, and this process waits.
    let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    signal_hook::flag::register(signal_hook::consts::SIGINT, int.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
    let stopped = || int.load(Ordering::Relaxed) || term.load(Ordering::Relaxed);
    let mut forwarded = false;
    let mut failed = Vec::new();
    while !workers.is_empty() {
        std::thread::sleep(POLL);
        if stopped() && !forwarded {
            forwarded = true;
            for &pid in &workers {
                // SAFETY: kill(2) with a pid this process started and has not reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let survey = Survey::read(dir, sweep, &trials, &claims)?;
        for task in done(&survey).difference(&seen.clone()) {
            seen.insert(*task);
            writeln!(out, "{}", task_line(dir, sweep, &claims, *task, &trials, seen.len()))?;
        }
        out.flush()?;
        let mut running = Vec::new();
        for pid in workers {
            match exited(pid)? {
                Some(status) if !status.success() && !forwarded && !stopped() => failed.push(status),
                Some(_) => {}
                None => running.push(pid),
            }
        }
        workers = running;
    }
    let survey = Survey::read(dir, sweep, &trials, &claims)?;
    let complete = matches!(survey.next(&claims), Work::Complete);
    let rows = table::rows(dir, sweep, &trials, &survey, &claims, complete);
    if stopped() || !complete {
        let finished = rows.iter().filter(|r| is_final(&r.status)).count();
        // 128 + the signal, as shells report it: Ctrl-C (SIGINT) 130, SIGTERM 143.
        let (exit_code, signal) = match term.load(Ordering::Relaxed) && !int.load(Ordering::Relaxed) {
            true => (143, "SIGTERM"),
            false => (130, "SIGINT"),
        };
        let why = match failed.first() {
            Some(status) => format!("a worker failed ({status})"),
            None if stopped() => format!("sweep interrupted by {signal}"),
            None => "sweep interrupted (its workers were stopped)".into(),
        };
        let message = format!(
            "{why}: {finished} of {} trials done, the others checkpointed; continue with: {command}",
            rows.len()
        );
        if failed.is_empty() {
            return Err(Interrupted { exit_code, message }.into());
        }
        bail!("{message}");
    }
    super::mlflow::end_parent(dir, sweep, &rows);
    writeln!(out, "{}", summary_line(dir, sweep, &rows, complete))?;
    Ok(())
}

/// Starts `jobs` workers, each a fork of this process. libtorch is loaded and initialised
/// here already, so a fork starts training at once, where a new process spends about 0.4 s
/// starting libtorch (in series with this process's own start, before any trial ran). A
/// fork is sound here because this process has one thread: no other thread can hold a
/// lock (the allocator's, say) that the child would inherit held.
fn start_workers(dir: &SweepDir, jobs: usize) -> Result<Vec<libc::pid_t>> {
    let threads = std::fs::read_dir("/proc/self/task").map(|tasks| tasks.count()).unwrap_or(1);
    if threads != 1 {
        bail!("internal error: sweep workers are forked from a process with one thread, this one has {threads}");
    }
    // Whatever is buffered would otherwise be written by every child too.
    std::io::stdout().flush()?;
    let mut workers = Vec::new();
    for _ in 0..jobs {
        // SAFETY: fork(2) in a process with one thread (checked above).
        match unsafe { libc::fork() } {
            -1 => {
                let err = std::io::Error::last_os_error();
                // The workers already started checkpoint their trials and stop.
                for &pid in &workers {
                    // SAFETY: kill(2) with a pid this process started and has not reaped.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                return Err(err).context("cannot start a sweep worker");
            }
            0 => exit::now(work(dir, jobs)),
            pid => workers.push(pid),
        }
    }
    Ok(workers)
}

/// A forked worker's life: the loop `torchfit sweep worker` runs, its error said as
/// main() says it; the exit status.
fn work(dir: &SweepDir, jobs: usize) -> u8 {
    let run = || super::worker::Worker::open(dir.clone(), jobs, false)?.run();
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => 0,
        // Stopped by a signal: the `torchfit sweep` process says how to continue the sweep.
        Ok(Err(err)) if err.is::<Interrupted>() => exit::code(&err),
        Ok(Err(err)) => {
            eprintln!("torchfit: {}", exit::one_line(&err));
            exit::code(&err)
        }
        // main()'s panic hook, inherited, has said what and where.
        Err(_) => exit::INTERNAL_ERROR,
    }
}

/// The status of worker `pid` once it has ended (reaped), or None while it runs.
fn exited(pid: libc::pid_t) -> Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid(2) on a child of this process, writing into a local.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        -1 => Err(std::io::Error::last_os_error()).context("cannot wait for a sweep worker"),
        _ => Ok(Some(ExitStatus::from_raw(status))),
    }
}

fn done(survey: &Survey) -> BTreeSet<Task> {
    survey.tasks.iter().filter(|(_, e)| e.done).map(|(t, _)| *t).collect()
}

fn is_final(status: &str) -> bool {
    matches!(status, "finished" | "stopped_early" | "failed" | "pruned")
}

/// `trial 0003 (lr=0.01, hidden=[64]): finished, 100 epochs, val_loss 0.1234 [5 done]`.
fn task_line(
    dir: &SweepDir,
    sweep: &Sweep,
    claims: &Claims,
    task: Task,
    trials: &[super::space::Trial],
    count: usize,
) -> String {
    let trial = &trials[task.trial];
    let record = claims.record(task).unwrap_or_default();
    let (epochs, value) = super::survey::reached(dir, sweep, trial, task);
    let last = value.map(|v| format!(", {} {v:.6}", sweep.metric)).unwrap_or_default();
    let rung = if sweep.asha().is_some() { format!(" rung {}", task.rung) } else { String::new() };
    format!(
        "trial {}{rung} ({}): {}, {} epochs{last} [{count} done]",
        trial.name(),
        table::describe(trial),
        record.lines().next().unwrap_or("done"),
        epochs
    )
}

/// The closing line: how many trials ended how, and the best one.
pub fn summary_line(dir: &SweepDir, sweep: &Sweep, rows: &[Row], complete: bool) -> String {
    let finished = rows.iter().filter(|r| is_final(&r.status)).count();
    let state = if complete { "complete".to_string() } else { format!("{finished} of {} trials done", rows.len()) };
    match table::best(rows, sweep.mode) {
        Some(best) => format!(
            "sweep {} {state}; best: trial {} ({}), {} {:.6}; results in {}, config in {}",
            dir.path().display(),
            best.trial.name(),
            table::describe(&best.trial),
            sweep.metric,
            best.best.unwrap_or(f64::NAN),
            dir.path().join(table::RESULTS).display(),
            dir.path().join(table::BEST).display()
        ),
        None => format!("sweep {} {state}; no trial has a {} yet", dir.path().display(), sweep.metric),
    }
}
