//! A sweep on this machine: `jobs` worker processes (`torchfit sweep worker DIR`), each
//! training trial after trial in-process, so that a trial pays no process start and
//! libtorch's global state (seed, threads, signal handlers) is each worker's own. This
//! process only watches: one line per finished task, and at the end the best trial.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::claims::{Claims, Task};
use super::spec::Sweep;
use super::survey::{Survey, Work};
use super::table::{self, Row};
use super::SweepDir;
use crate::train::Interrupted;

const POLL: Duration = Duration::from_millis(100);

pub fn run(dir: &SweepDir, sweep: &Sweep, jobs: usize, continued: bool, command: &str, out: &mut dyn Write) -> Result<()> {
    let trials = sweep.trials();
    let claims = Claims::new(dir.path())?;
    let mut seen: BTreeSet<Task> = done(&Survey::read(dir, sweep, &trials, &claims)?);
    let verb = if continued { "continuing" } else { "starting" };
    writeln!(out, "{verb} sweep {}: {} trials, {jobs} workers", dir.path().display(), trials.len())?;
    out.flush()?;
    // Ctrl-C reaches the workers from the terminal; a signal to this process alone is
    // passed on to them. Either way each checkpoints its trial, and this process waits.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let exe = std::env::current_exe().context("cannot find the torchfit binary to start workers")?;
    let mut workers: Vec<Child> = (0..jobs)
        .map(|_| {
            Command::new(&exe)
                .args(["sweep", "worker", "--jobs", &jobs.to_string()])
                .arg(dir.path())
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start a sweep worker")
        })
        .collect::<Result<_>>()?;
    let mut forwarded = false;
    let mut failed = Vec::new();
    while !workers.is_empty() {
        std::thread::sleep(POLL);
        if stop.load(Ordering::Relaxed) && !forwarded {
            forwarded = true;
            for child in &workers {
                // SAFETY: kill(2) with a pid this process started and has not reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
        }
        let survey = Survey::read(dir, sweep, &trials, &claims)?;
        for task in done(&survey).difference(&seen.clone()) {
            seen.insert(*task);
            writeln!(out, "{}", task_line(dir, sweep, &claims, *task, &trials, seen.len()))?;
        }
        out.flush()?;
        let mut running = Vec::new();
        for mut child in workers {
            match child.try_wait()? {
                Some(status) if !status.success() && !forwarded && !stop.load(Ordering::Relaxed) => failed.push(status),
                Some(_) => {}
                None => running.push(child),
            }
        }
        workers = running;
    }
    let survey = Survey::read(dir, sweep, &trials, &claims)?;
    let complete = matches!(survey.next(&claims), Work::Complete);
    let rows = table::rows(dir, sweep, &trials, &survey, &claims, complete);
    if stop.load(Ordering::Relaxed) || !complete {
        let finished = rows.iter().filter(|r| is_final(&r.status)).count();
        let why = match failed.first() {
            Some(status) => format!("a worker failed ({status})"),
            None => "sweep interrupted".into(),
        };
        let message = format!(
            "{why}: {finished} of {} trials done, the others checkpointed; continue with: {command}",
            rows.len()
        );
        if failed.is_empty() {
            return Err(Interrupted { exit_code: 130, message }.into());
        }
        bail!("{message}");
    }
    writeln!(out, "{}", summary_line(dir, sweep, &rows, complete))?;
    Ok(())
}

fn done(survey: &Survey) -> BTreeSet<Task> {
    survey.tasks.iter().filter(|(_, e)| e.done).map(|(t, _)| *t).collect()
}

fn is_final(status: &str) -> bool {
    matches!(status, "finished" | "stopped_early" | "failed" | "pruned")
}

/// `trial 0003 (lr=0.01, hidden=[64]): finished, 100 epochs, val_loss 0.1234 [5 done]`.
fn task_line(dir: &SweepDir, sweep: &Sweep, claims: &Claims, task: Task, trials: &[super::space::Trial], count: usize) -> String {
    let trial = &trials[task.trial];
    let record = claims.record(task).unwrap_or_default();
    let values = super::survey::metric_values(&dir.trial(trial), &sweep.metric);
    let last = values.last().map(|v| format!(", {} {v:.6}", sweep.metric)).unwrap_or_default();
    let rung = if sweep.asha().is_some() { format!(" rung {}", task.rung) } else { String::new() };
    format!(
        "trial {}{rung} ({}): {}, {} epochs{last} [{count} done]",
        trial.name(),
        table::describe(trial),
        record.lines().next().unwrap_or("done"),
        values.len()
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
