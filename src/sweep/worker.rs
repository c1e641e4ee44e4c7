//! A sweep worker: the one loop that trains trials, whether `--jobs N` started it on this
//! machine or a Slurm array task on another. It takes the next task the sweep directory
//! offers (claims.rs), trains it in this process (no process start per trial), records
//! it, and exits when nothing is left. A trial is an ordinary run directory, resumed
//! (exact resume) when an earlier worker left it unfinished or ASHA promotes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::claims::{Claim, Claims};
use super::space::Trial;
use super::spec::Sweep;
use super::survey::{Survey, Work};
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
    stop: Arc<AtomicBool>,
}

impl Worker {
    pub fn open(dir: SweepDir, jobs: usize) -> Result<Worker> {
        let sweep = dir.sweep()?;
        let trials = sweep.trials();
        let claims = Claims::new(dir.path())?;
        // A signal between trials stops the worker before the next one; during a trial, the
        // trial's own handler checkpoints it first.
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone())?;
        }
        Ok(Worker { dir, sweep, trials, claims, jobs: jobs.max(1), stop })
    }

    /// Trains tasks until none is left; then writes the results.
    pub fn run(&self) -> Result<()> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Interrupted { exit_code: 143, message: "sweep worker stopped by a signal".into() }.into());
            }
            let survey = Survey::read(&self.dir, &self.sweep, &self.trials, &self.claims)?;
            match survey.next(&self.claims) {
                Work::Take(task, generation) => {
                    // Another worker may win the race: then survey again.
                    if let Some(claim) = self.claims.take(task, generation)? {
                        self.train(claim)?;
                        self.write_results(false)?;
                    }
                }
                Work::Wait => std::thread::sleep(POLL),
                Work::Complete => return self.write_results(true),
            }
        }
    }

    /// Trains `claim`'s task: its trial from the start, or resumed from its checkpoint, to
    /// the end or (ASHA) to its rung's epoch.
    fn train(&self, claim: Claim) -> Result<()> {
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
            false => self.sweep.trial_config(trial),
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
                return Err(err);
            }
            // A trial that fails (a learning rate that diverges, say) is a result, not the
            // end of the sweep: its run directory and the record say why.
            Err(err) => format!("failed: {}", crate::exit::one_line(&err)),
        };
        if claim.lost() {
            // Another worker found this one's heartbeat stale and took the task over: it
            // is that worker's to record now.
            return Ok(());
        }
        self.claims.finish(claim, &record)
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
