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

pub struct Survey<'a> {
    pub tasks: BTreeMap<Task, Entry>,
    asha: Option<Asha>,
    /// With ASHA, the trials that reached each rung, with the metric at its epoch.
    rungs: Vec<Vec<asha::Result>>,
    mode: Mode,
    trials: &'a [Trial],
}

impl<'a> Survey<'a> {
    pub fn read(dir: &SweepDir, sweep: &Sweep, trials: &'a [Trial], claims: &Claims) -> Result<Survey<'a>> {
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
        Ok(Survey { tasks, asha, rungs, mode: sweep.mode, trials })
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
        let mut new = self.trials.iter().filter(|t| !self.tasks.contains_key(&Task { trial: t.index, rung: 0 }));
        // Without ASHA every trial runs to its end: the costliest starts first (the first of
        // equals), so that the cheapest fill the end ("longest processing time first") and no
        // worker waits alone for a long last trial. ASHA starts them in their order, as its
        // paper samples them.
        let next = match self.asha {
            Some(_) => new.next(),
            None => new.reduce(|best, t| if t.cost > best.cost { t } else { best }),
        };
        if let Some(trial) = next {
            return Work::Take(Task { trial: trial.index, rung: 0 }, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep whose trials differ in cost by width and batch size.
    fn sweep(dir: &Path, extra: &str) -> Sweep {
        let file = dir.join("sweep.yaml");
        let text = format!(
            "config: {{name: t, training: {{epochs: 10}}}}\nmethod: grid\n{extra}parameters:\n  \
             model.hidden: {{values: [[16], [256, 256], [64, 64]]}}\n  training.batch_size: {{values: [512, 32]}}\n"
        );
        std::fs::write(&file, text).unwrap();
        Sweep::load(&file, &[]).unwrap()
    }

    /// The trial indexes in the order a worker would start them, one claim after another.
    fn start_order(dir: &Path, sweep: &Sweep) -> Vec<usize> {
        let (trials, claims) = (sweep.trials(), Claims::new(&dir.join("claims")).unwrap());
        let mut order = Vec::new();
        while let Work::Take(task, generation) =
            Survey::read(&SweepDir::new(dir), sweep, &trials, &claims).unwrap().next(&claims)
        {
            claims.finish(claims.take(task, generation).unwrap().unwrap(), "finished").unwrap();
            order.push(task.trial);
        }
        order
    }

    #[test]
    fn without_asha_the_costliest_trials_start_first() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = sweep(dir.path(), "");
        // Trials: 0 [16]/512, 1 [16]/32, 2 [256,256]/512, 3 [256,256]/32, 4 [64,64]/512, 5 [64,64]/32.
        let costs: Vec<f64> = sweep.trials().iter().map(|t| t.cost).collect();
        assert!(costs[3] > costs[2] && costs[2] > costs[5] && costs[5] > costs[4], "{costs:?}");
        assert!(costs[1] > costs[0], "a smaller batch means more steps: {costs:?}");
        assert_eq!(start_order(dir.path(), &sweep), [3, 2, 5, 1, 4, 0]);
    }

    #[test]
    fn under_asha_trials_start_in_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = sweep(dir.path(), "early_termination: {kind: asha, min_epochs: 1, reduction_factor: 3}\n");
        assert_eq!(start_order(dir.path(), &sweep), [0, 1, 2, 3, 4, 5]);
    }
}
