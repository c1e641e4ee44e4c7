//! Where a sweep stands, read from its directory alone (the claims and the trials' run
//! directories): what a worker should do next, and whether anything is left to do. Every
//! worker, and `sweep status`, reads the same files and so comes to the same answers.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::asha::{self, Asha};
use super::claims::{Claims, Entry, Holder, Task};
use super::space::Trial;
use super::spec::{Mode, Sweep};
use super::SweepDir;

/// What there is to do.
pub enum Work {
    /// Take `task` as generation `generation`: a task whose worker is gone (it resumes from
    /// its checkpoint), an ASHA promotion, or a new trial.
    Take(Task, u64),
    /// Workers are busy with every task there is (and, with ASHA, a finishing one may yet
    /// promote a trial): look again soon.
    Wait,
    /// Every trial has been trained as far as it goes.
    Complete,
}

pub struct Survey {
    pub tasks: BTreeMap<Task, Entry>,
    asha: Option<Asha>,
    /// With ASHA, the trials that reached each rung, with the metric at its epoch.
    rungs: Vec<Vec<asha::Result>>,
    mode: Mode,
    trials: usize,
}

impl Survey {
    pub fn read(dir: &SweepDir, sweep: &Sweep, trials: &[Trial], claims: &Claims) -> Result<Survey> {
        let tasks = claims.snapshot()?;
        let asha = sweep.asha();
        let mut rungs = Vec::new();
        if let Some(asha) = &asha {
            let budgets = asha.budgets();
            rungs = vec![Vec::new(); budgets.len()];
            for (task, entry) in &tasks {
                if !entry.done {
                    continue;
                }
                let values = metric_values(&dir.trial(&trials[task.trial]), &sweep.metric);
                // A trial is in the rung when its run reached the rung's epoch (one that
                // stopped early or failed short of it is not).
                if let Some(&value) = values.get(budgets[task.rung] - 1) {
                    rungs[task.rung].push(asha::Result { trial: task.trial, value });
                }
            }
        }
        Ok(Survey { tasks, asha, rungs, mode: sweep.mode, trials: trials.len() })
    }

    /// The next work in the order ASHA wants it: unfinished tasks whose worker is gone
    /// first (their work is half done), then promotions from the highest rung down, then a
    /// new trial.
    pub fn next(&self, claims: &Claims) -> Work {
        let mut busy = false;
        for (task, entry) in &self.tasks {
            if entry.done || entry.generation == 0 {
                continue;
            }
            match claims.holder(*task, entry.generation) {
                Holder::Gone => return Work::Take(*task, entry.generation + 1),
                Holder::Alive => busy = true,
            }
        }
        if let Some(asha) = &self.asha {
            let promoted = |trial, rung| self.tasks.contains_key(&Task { trial, rung: rung + 1 });
            if let Some((trial, rung)) = asha.next_promotion(&self.rungs, self.mode, promoted) {
                return Work::Take(Task { trial, rung }, 1);
            }
        }
        if let Some(trial) = (0..self.trials).find(|&trial| !self.tasks.contains_key(&Task { trial, rung: 0 })) {
            return Work::Take(Task { trial, rung: 0 }, 1);
        }
        if busy {
            Work::Wait
        } else {
            Work::Complete
        }
    }
}

/// A run's metrics.csv column `metric`, one value per epoch; empty without one.
pub fn metric_values(run: &Path, metric: &str) -> Vec<f64> {
    let Ok(mut reader) = csv::Reader::from_path(run.join(crate::rundir::METRICS)) else { return Vec::new() };
    let Some(at) = reader.headers().ok().and_then(|h| h.iter().position(|c| c == metric)) else { return Vec::new() };
    reader
        .records()
        .map_while(std::result::Result::ok)
        .map(|r| r.get(at).and_then(|c| c.trim().parse().ok()).unwrap_or(f64::NAN))
        .collect()
}
