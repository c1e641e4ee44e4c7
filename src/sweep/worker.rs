//! A sweep worker: the one loop that trains trials, whether `--jobs N` started it on this
//! machine or a Slurm array task on another. It takes the next task the sweep directory
//! offers (claims.rs), trains it in this process (no process start per trial), records
//! it, and exits when nothing is left. A trial is an ordinary run directory, resumed
//! (exact resume) when an earlier worker left it unfinished or ASHA promotes it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::claims::{Claim, Claims, Task};
use super::space::Trial;
use super::spec::Sweep;
use super::survey::{reached, Survey, Work};
use super::{table, SweepDir};
use crate::dist::Launch;
use crate::rundir::{self, RunDir, Status};
use crate::train::{self, Interrupted, Outcome, TrainOptions};

/// How often an idle worker looks for work again.
const POLL: Duration = Duration::from_millis(25);

pub struct Worker {
    dir: SweepDir,
    sweep: Sweep,
    trials: Vec<Trial>,
    claims: Claims,
    /// Workers training on this machine at once: each takes its share of the cores.
    jobs: usize,
    /// Print a line per task to stdout: a Slurm worker's log. Local workers leave that to
    /// the `torchfit sweep` process, which prints one line per task for all of them.
    log: bool,
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Worker {
    pub fn open(dir: SweepDir, jobs: usize, log: bool) -> Result<Worker> {
        let sweep = dir.sweep()?;
        let trials = sweep.trials();
        let claims = Claims::new(dir.path())?;
        // A signal between trials stops the worker before the next one; during a trial, the
        // trial's own handler checkpoints it first.
        let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        signal_hook::flag::register(signal_hook::consts::SIGINT, int.clone())?;
        signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())?;
        Ok(Worker { dir, sweep, trials, claims, jobs: jobs.max(1), log, int, term })
    }

    /// Trains tasks until none is left; then writes the results.
    pub fn run(&self) -> Result<()> {
        self.say(format_args!("sweep worker {} started on {}", self.claims.owner(), self.dir.path().display()));
        loop {
            if let Some(code) = self.stopped() {
                return Err(self.interrupted(code, None));
            }
            let survey = Survey::read(&self.dir, &self.sweep, &self.trials, &self.claims)?;
            match survey.next(&self.claims) {
                Work::Take(task, generation) => self.take(task, generation)?,
                Work::Wait => std::thread::sleep(POLL),
                Work::Complete => {
                    self.write_results(true)?;
                    self.say(format_args!(
                        "sweep worker: nothing left to do; results in {}",
                        self.dir.path().display()
                    ));
                    return Ok(());
                }
            }
        }
    }

    /// Takes `task` as generation `generation` and trains it, unless another worker won the
    /// race for it (then the caller surveys again).
    fn take(&self, task: Task, generation: u64) -> Result<()> {
        let Some(claim) = self.claims.take(task, generation)? else { return Ok(()) };
        let started = Instant::now();
        let name = self.task_name(task);
        self.say(format_args!("{name}: started"));
        if let Some(record) = self.train(claim)? {
            let took = started.elapsed().as_secs_f64();
            let (epochs, value) = reached(&self.dir, &self.sweep, &self.trials[task.trial], task);
            let metric = value.map(|v| format!(", {} {v:.6}", self.sweep.metric)).unwrap_or_default();
            let record = record.lines().next().unwrap_or_default();
            self.say(format_args!("{name}: {record}, {epochs} epochs{metric} ({took:.1} s)"));
        }
        self.write_results(false)
    }

    /// The exit status of a signal received, if one was.
    fn stopped(&self) -> Option<u8> {
        if self.int.load(Ordering::Relaxed) {
            Some(130)
        } else if self.term.load(Ordering::Relaxed) {
            Some(143)
        } else {
            None
        }
    }

    /// The error a signal ends this worker with: how to continue the sweep (not the trial,
    /// which is the sweep's to resume).
    fn interrupted(&self, exit_code: u8, trial: Option<&Trial>) -> anyhow::Error {
        let signal = if exit_code == 130 { "SIGINT" } else { "SIGTERM" };
        let given_back =
            trial.map(|t| format!("; trial {} checkpointed and given back to the sweep", t.name())).unwrap_or_default();
        let dir = self.dir.path().display();
        let message = format!(
            "sweep worker stopped by {signal}{given_back}; continue the sweep with the torchfit sweep command \
             that started it, or: torchfit sweep worker {dir}"
        );
        Interrupted { exit_code, message }.into()
    }

    /// A line of the worker's log, written at once (a Slurm log is read while it runs).
    fn say(&self, line: std::fmt::Arguments) {
        if self.log {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    fn task_name(&self, task: Task) -> String {
        let trial = &self.trials[task.trial];
        let rung = if self.sweep.asha().is_some() { format!(" rung {}", task.rung) } else { String::new() };
        format!("trial {}{rung} ({})", trial.name(), table::describe(trial))
    }

    /// Trains `claim`'s task: its trial from the start, or resumed from its checkpoint, to
    /// the end or (ASHA) to its rung's epoch. Returns how it ended (its record), or None
    /// when another worker took it over.
    fn train(&self, claim: Claim) -> Result<Option<String>> {
        let trial = &self.trials[claim.task.trial];
        let run_dir = self.dir.trial(trial);
        let resume = run_dir.join(rundir::CONFIG).is_file();
        if !resume && run_dir.exists() {
            // Killed before its config was written: nothing in it to keep.
            std::fs::remove_dir_all(&run_dir).with_context(|| format!("cannot clear {}", run_dir.display()))?;
        }
        if let Some(parent) = run_dir.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let config = match resume {
            true => train::resume_config(&run_dir, &[]),
            false => self.sweep.trial_config(trial).map(|c| super::mlflow::with_parent(c, &self.dir)),
        };
        let pause_after = self.sweep.asha().map(|asha| asha.budgets()[claim.task.rung]);
        let outcome = config.and_then(|config| {
            let launch = Launch { local_world_size: self.jobs, ..Launch::single() };
            let options = TrainOptions {
                run_dir: Some(run_dir.clone()),
                resume,
                quiet: true,
                started: Instant::now(),
                launch,
                pause_after,
            };
            train::train(&config, &options)
        });
        let record = match outcome {
            Ok(Outcome::Trained(summary)) => summary.status.name().to_string(),
            Ok(_) => RunDir::new(&run_dir).status().unwrap_or(Status::Finished).name().to_string(),
            Err(err) if err.is::<Interrupted>() => {
                self.claims.release(claim)?;
                let code = err.downcast_ref::<Interrupted>().map_or(143, |i| i.exit_code);
                return Err(self.interrupted(code, Some(trial)));
            }
            // A trial that fails (a learning rate that diverges, say) is a result, not the
            // end of the sweep: its run directory and the record say why.
            Err(err) => format!("failed: {}", crate::exit::one_line(&err)),
        };
        if claim.lost() {
            // Another worker found this one's heartbeat stale and took the task over: it
            // is that worker's to record now.
            return Ok(None);
        }
        self.claims.finish(claim, &record)?;
        Ok(Some(record))
    }

    /// results.csv and best.yaml (workers write them as trials end, so that a Slurm sweep,
    /// which has no parent waiting, has them too), and at the end sweep.png.
    fn write_results(&self, complete: bool) -> Result<()> {
        let survey = Survey::read(&self.dir, &self.sweep, &self.trials, &self.claims)?;
        let rows = table::rows(&self.dir, &self.sweep, &self.trials, &survey, &self.claims, complete);
        table::write(&self.dir, &self.sweep, &rows)?;
        if complete {
            super::plot::write(&self.dir, &self.sweep, &rows)?;
        }
        Ok(())
    }
}
