//! Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel
//! Hyperparameter Tuning", MLSys 2020, Algorithm 2). Trials run to rung k's budget,
//! `min_epochs * reduction_factor^k` epochs (the last rung: `training.epochs`), and pause.
//! A trial goes on to the next rung when it is among the best floor(n / reduction_factor)
//! of the n trials that reached its rung (each trial once). When no trial is promotable,
//! no new trial is left to start and no trial reached the full budget, the best paused
//! trial of the highest rung goes on (as Optuna's SuccessiveHalvingPruner and Ray Tune's
//! ASHA promote from a rung with fewer than `reduction_factor` results), so that a sweep
//! of few trials still trains one to the end.
//!
//! The decisions are those of one worker running every task to its end before the next
//! decision (the paper's algorithm with one worker), replayed from the results known so
//! far: with any number of workers, and whatever finishes first, the same trials reach the
//! same rungs. A rung's results are read in the order one worker would have produced them;
//! a decision waits for the results it depends on, while new trials start meanwhile.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Whether a lower or a higher metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

#[derive(Debug, Clone, Copy)]
pub struct Asha {
    pub min_epochs: usize,
    pub reduction_factor: usize,
    /// `training.epochs`: the full budget, the last rung.
    pub epochs: usize,
}

/// How a task (a trial trained to a rung) stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Not done: not started, training, or left by a worker that is gone.
    Pending,
    /// Done, with the metric at the rung's epoch.
    Reached(f64),
    /// Done short of the rung's epoch (stopped early, failed): not in the rung.
    Short,
}

impl Asha {
    /// Each rung's epochs, rising to `epochs`.
    pub fn budgets(&self) -> Vec<usize> {
        let mut budgets = Vec::new();
        let mut b = self.min_epochs;
        while b < self.epochs {
            budgets.push(b);
            b = b.saturating_mul(self.reduction_factor);
        }
        budgets.push(self.epochs);
        budgets
    }

    /// The tasks decided so far: `plan[k]` lists the trials sent to rung k, in the order one
    /// worker would send them (rung 0: every trial, in order). `outcome(trial, rung)` says
    /// how each decided task stands; a pending one holds up the decisions that follow it
    /// on its rung.
    pub fn plan(&self, trials: usize, mode: Mode, outcome: impl Fn(usize, usize) -> Outcome) -> Vec<Vec<usize>> {
        let top = self.budgets().len() - 1;
        let mut sent: Vec<Vec<usize>> = vec![Vec::new(); top + 1];
        sent[0] = (0..trials).collect();
        let mut rungs: Vec<Rung> = (0..top).map(|_| Rung::default()).collect();
        loop {
            let mut settled = true;
            for k in 0..top {
                let rung = &mut rungs[k];
                while let Some(&trial) = sent[k].get(rung.read) {
                    match outcome(trial, k) {
                        Outcome::Pending => {
                            settled = false;
                            break;
                        }
                        Outcome::Short => {}
                        Outcome::Reached(value) => {
                            let promoted = rung.add(Ranked::new(trial, value, mode), self.reduction_factor);
                            sent[k + 1].extend(promoted);
                        }
                    }
                    rung.read += 1;
                }
            }
            let at_top: Vec<Outcome> = sent[top].iter().map(|&t| outcome(t, top)).collect();
            if !settled || at_top.iter().any(|o| matches!(o, Outcome::Pending | Outcome::Reached(_))) {
                return sent;
            }
            // Everything decided has run and no trial reached the full budget: the best
            // paused trial of the highest rung goes on.
            match (0..top).rev().find_map(|k| rungs[k].best_unpromoted().map(|t| (k, t))) {
                Some((k, trial)) => {
                    rungs[k].promoted.insert(trial);
                    sent[k + 1].push(trial);
                }
                None => return sent,
            }
        }
    }
}

/// A result in a rung, ordered best first: by the metric (a NaN last), then trial number.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    key: f64,
    trial: usize,
}

impl Ranked {
    fn new(trial: usize, value: f64, mode: Mode) -> Ranked {
        let key = match (value.is_nan(), mode) {
            (true, _) => f64::INFINITY,
            (false, Mode::Min) => value,
            (false, Mode::Max) => -value,
        };
        Ranked { key, trial }
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.total_cmp(&other.key).then(self.trial.cmp(&other.trial))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ranked {}

/// One rung's results as they are read: the best floor(n / eta) of the n so far, the
/// rest, and which trials went on (O(log n) a result, for sweeps of many trials).
#[derive(Default)]
struct Rung {
    /// How many of the trials sent to this rung have been read.
    read: usize,
    reached: usize,
    best: BTreeSet<Ranked>,
    rest: BTreeSet<Ranked>,
    promoted: BTreeSet<usize>,
}

impl Rung {
    /// Adds a result; returns the trials that thereby joined the best floor(n / eta) for
    /// the first time (at most one), which go on to the next rung.
    fn add(&mut self, result: Ranked, eta: usize) -> Vec<usize> {
        self.reached += 1;
        self.rest.insert(result);
        let mut joined = Vec::new();
        while self.best.len() < self.reached / eta {
            let Some(first) = self.rest.pop_first() else { break };
            self.best.insert(first);
            joined.push(first.trial);
        }
        let swap = matches!((self.rest.first(), self.best.last()), (Some(a), Some(b)) if a < b);
        if swap {
            if let (Some(a), Some(b)) = (self.rest.pop_first(), self.best.pop_last()) {
                self.best.insert(a);
                self.rest.insert(b);
                joined.push(a.trial);
            }
        }
        joined.retain(|&t| self.promoted.insert(t));
        joined
    }

    /// The best trial of the rung that has not gone on.
    fn best_unpromoted(&self) -> Option<usize> {
        self.best.iter().chain(&self.rest).map(|r| r.trial).find(|t| !self.promoted.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_rise_by_the_factor_to_the_full_budget() {
        assert_eq!(Asha { min_epochs: 5, reduction_factor: 3, epochs: 100 }.budgets(), [5, 15, 45, 100]);
        assert_eq!(Asha { min_epochs: 1, reduction_factor: 2, epochs: 8 }.budgets(), [1, 2, 4, 8]);
        assert_eq!(Asha { min_epochs: 3, reduction_factor: 3, epochs: 4 }.budgets(), [3, 4]);
    }

    /// The paper's rule on fixed values, as results arrive one by one at rung 0 with
    /// eta = 3: after n results the best floor(n / 3) are promotable, each once.
    #[test]
    fn promotions_follow_the_papers_rule() {
        let asha = Asha { min_epochs: 1, reduction_factor: 3, epochs: 9 };
        let arrivals = [0.9, 0.5, 0.7, 0.2, 0.8, 0.6, 0.1, 0.95, 0.4];
        // Only rung 0 is known: every promoted trial is pending at rung 1.
        let outcome = |t: usize, k: usize| if k == 0 { Outcome::Reached(arrivals[t]) } else { Outcome::Pending };
        let plan = asha.plan(arrivals.len(), Mode::Min, outcome);
        // n=3: the best of {.9, .5, .7} is trial 1. n=4: trial 3 (.2). n=7: trial 6 (.1).
        // n=9: the top 3 add trial 8 (.4). Trial 1 went on though it is not among the final
        // best three (asynchrony's price, as the paper notes); trial 2 never did.
        assert_eq!(plan[1], [1, 3, 6, 8]);
        // Trials 3 and 6 pending at rung 1: nothing goes further yet.
        assert!(plan[2].is_empty());
    }

    #[test]
    fn a_pending_result_holds_up_the_decisions_after_it() {
        let asha = Asha { min_epochs: 1, reduction_factor: 2, epochs: 4 };
        let values = [0.5, 0.4, 0.3, 0.2];
        // Trial 1 still training at rung 0: trials 2 and 3's results wait behind it, so the
        // decisions are those one worker would make, whatever finished first.
        let outcome =
            |t: usize, k: usize| if k == 0 && t != 1 { Outcome::Reached(values[t]) } else { Outcome::Pending };
        assert_eq!(asha.plan(4, Mode::Min, outcome)[1], Vec::<usize>::new());
        let outcome = |t: usize, k: usize| if k == 0 { Outcome::Reached(values[t]) } else { Outcome::Pending };
        // Trial 1 (.4) leads at n=2, trial 2 (.3) at n=3, trial 3 (.2) joins at n=4.
        assert_eq!(asha.plan(4, Mode::Min, outcome)[1], [1, 2, 3]);
    }

    #[test]
    fn max_mode_ranks_high_values_first_and_nan_last() {
        let asha = Asha { min_epochs: 1, reduction_factor: 2, epochs: 2 };
        let values = [0.1, 0.9, f64::NAN, 0.7];
        let outcome = |t: usize, k: usize| if k == 0 { Outcome::Reached(values[t]) } else { Outcome::Pending };
        assert_eq!(asha.plan(4, Mode::Max, outcome)[1], [1, 3]);
        assert_eq!(asha.plan(4, Mode::Min, outcome)[1], [0, 3]);
    }

    /// 12 trials, eta 3, rungs 5/15/45/100: the rule alone leaves one trial at 45 epochs;
    /// then the best paused trial of the highest rung goes on to the full budget.
    #[test]
    fn the_best_of_the_highest_rung_goes_on_when_nothing_else_is_left() {
        let asha = Asha { min_epochs: 5, reduction_factor: 3, epochs: 100 };
        // Each trial's metric falls the same way at every rung: trial order is rank order.
        let value = |t: usize| 1.0 + (t as f64 * 7.0) % 12.0;
        let outcome = |t: usize, _k: usize| Outcome::Reached(value(t));
        let plan = asha.plan(12, Mode::Min, outcome);
        assert_eq!(plan[0].len(), 12);
        assert!(!plan[3].is_empty(), "{plan:?}");
        assert_eq!(plan[3].len(), 1, "{plan:?}");
        // Every trial at rung 2 or 3 came through rung 1, and the one at the end is the best
        // of those at rung 2.
        let best2 = plan[2].iter().copied().min_by(|a, b| value(*a).total_cmp(&value(*b)));
        assert_eq!(plan[3].first().copied(), best2);
        // A trial that reached the full budget on the rule alone needs no help.
        let asha = Asha { min_epochs: 1, reduction_factor: 2, epochs: 8 };
        let plan = asha.plan(8, Mode::Min, |t, _| Outcome::Reached(t as f64));
        assert_eq!(plan[1..], [vec![0, 1, 2, 3], vec![0, 1], vec![0]]);
    }

    #[test]
    fn stopped_early_trials_are_not_in_their_rung_and_the_plan_moves_on() {
        let asha = Asha { min_epochs: 1, reduction_factor: 2, epochs: 2 };
        // Trial 0 stopped early at rung 0; trials 1, 2 reached it: trial 1 (0.3) goes on.
        let outcome = |t: usize, k: usize| match (t, k) {
            (0, 0) => Outcome::Short,
            (1, 0) => Outcome::Reached(0.3),
            (2, 0) => Outcome::Reached(0.5),
            (_, _) => Outcome::Pending,
        };
        assert_eq!(asha.plan(3, Mode::Min, outcome)[1], [1]);
        // Trial 1 stopped early at the top as well: the next best paused trial goes on.
        let outcome = |t: usize, k: usize| match (t, k) {
            (1, 1) => Outcome::Short,
            (_, 1) => Outcome::Pending,
            (t, _) => outcome(t, 0),
        };
        assert_eq!(asha.plan(3, Mode::Min, outcome)[1], [1, 2]);
    }
}
