//! Where a sweep stands, read from its directory alone (the claims and the trials' run
//! directories): what a worker should do next, and whether anything is left to do. Every
//! worker, and `sweep status`, reads the same files and so comes to the same answers.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::asha::Outcome;
use super::claims::{Claims, Entry, Holder, Task};
use super::space::Trial;
use super::spec::Sweep;
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
    /// With ASHA, the tasks decided so far: `plan[k]` the trials sent to rung k.
    plan: Option<Vec<Vec<usize>>>,
    trials: &'a [Trial],
}

impl<'a> Survey<'a> {
    pub fn read(dir: &SweepDir, sweep: &Sweep, trials: &'a [Trial], claims: &Claims) -> Result<Survey<'a>> {
        let tasks = claims.snapshot()?;
        let plan = sweep.asha().map(|asha| {
            let budgets = asha.budgets();
            let mut outcomes = BTreeMap::new();
            for (task, _) in tasks.iter().filter(|(_, e)| e.done) {
                let values = metric_values(&dir.trial(&trials[task.trial]), &sweep.metric);
                // A trial is in the rung when its run reached the rung's epoch (one that
                // stopped early or failed short of it is not).
                let outcome = match budgets.get(task.rung).and_then(|&b| values.get(b - 1)) {
                    Some(&value) => Outcome::Reached(value),
                    None => Outcome::Short,
                };
                outcomes.insert((task.trial, task.rung), outcome);
            }
            let outcome = |trial, rung| outcomes.get(&(trial, rung)).copied().unwrap_or(Outcome::Pending);
            asha.plan(trials.len(), sweep.mode, outcome)
        });
        Ok(Survey { tasks, plan, trials })
    }

    /// The next work in the order ASHA wants it: unfinished tasks whose worker is gone
    /// first (their work is half done), then decided promotions from the highest rung
    /// down, then a new trial.
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
        if let Some(plan) = &self.plan {
            for (rung, sent) in plan.iter().enumerate().skip(1).rev() {
                if let Some(&trial) = sent.iter().find(|&&trial| !self.tasks.contains_key(&Task { trial, rung })) {
                    return Work::Take(Task { trial, rung }, 1);
                }
            }
        }
        let mut new = self.trials.iter().filter(|t| !self.tasks.contains_key(&Task { trial: t.index, rung: 0 }));
        // Without ASHA every trial runs to its end: the costliest starts first (the first of
        // equals), so that the cheapest fill the end ("longest processing time first") and no
        // worker waits alone for a long last trial. ASHA starts them in their order, as its
        // paper samples them.
        let next = match self.plan {
            Some(_) => new.next(),
            None => new.reduce(|best, t| if t.cost > best.cost { t } else { best }),
        };
        if let Some(trial) = next {
            return Work::Take(Task { trial: trial.index, rung: 0 }, 1);
        }
        // With ASHA, a running task's result may decide another promotion.
        if busy {
            Work::Wait
        } else {
            Work::Complete
        }
    }
}

/// How far a done task took its trial: the epochs and the metric at the last of them. With
/// ASHA, counted to the task's rung at most: the trial may be training on to the next rung
/// already (and writing its metrics.csv) when this is read.
pub fn reached(dir: &SweepDir, sweep: &Sweep, trial: &Trial, task: Task) -> (usize, Option<f64>) {
    let values = metric_values(&dir.trial(trial), &sweep.metric);
    let budget = sweep.asha().and_then(|asha| asha.budgets().get(task.rung).copied());
    let epochs = budget.map_or(values.len(), |b| values.len().min(b));
    (epochs, epochs.checked_sub(1).and_then(|last| values.get(last).copied()))
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
