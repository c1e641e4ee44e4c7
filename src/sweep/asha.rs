//! Asynchronous successive halving (ASHA; Li et al., "A System for Massively Parallel
//! Hyperparameter Tuning", MLSys 2020, Algorithm 2). Trials run to rung k's budget,
//! `min_epochs * reduction_factor^k` epochs (the last rung: `training.epochs`), and pause.
//! When a worker asks for work, the rungs are searched from the top down for a trial among
//! the best floor(n / reduction_factor) of the n that reached its rung and not yet
//! promoted; it goes on to the next rung. Only when there is none does a new trial start,
//! so a free worker never waits for a rung to fill.

use super::spec::Mode;

#[derive(Debug, Clone, Copy)]
pub struct Asha {
    pub min_epochs: usize,
    pub reduction_factor: usize,
    /// `training.epochs`: the full budget, the last rung.
    pub epochs: usize,
}

/// A trial that reached a rung: its number and the metric at the rung's epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Result {
    pub trial: usize,
    pub value: f64,
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

    /// The next promotion, as (trial, to rung): `rungs[k]` holds the trials that reached
    /// rung k, `promoted(trial, k)` says whether one already went on from rung k.
    pub fn next_promotion(
        &self,
        rungs: &[Vec<Result>],
        mode: Mode,
        promoted: impl Fn(usize, usize) -> bool,
    ) -> Option<(usize, usize)> {
        let top = self.budgets().len() - 1;
        for k in (0..top.min(rungs.len())).rev() {
            if let Some(trial) = top_k(&rungs[k], self.reduction_factor, mode).into_iter().find(|&t| !promoted(t, k)) {
                return Some((trial, k + 1));
            }
        }
        None
    }
}

/// The best floor(n / eta) of a rung's n results, best first. Ties go to the lower trial
/// number; a NaN metric ranks last.
pub fn top_k(results: &[Result], eta: usize, mode: Mode) -> Vec<usize> {
    let mut ranked = results.to_vec();
    let key = |r: &Result| match (r.value.is_nan(), mode) {
        (true, _) => f64::INFINITY,
        (false, Mode::Min) => r.value,
        (false, Mode::Max) => -r.value,
    };
    ranked.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.trial.cmp(&b.trial)));
    ranked.truncate(results.len() / eta);
    ranked.into_iter().map(|r| r.trial).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(trial: usize, value: f64) -> Result {
        Result { trial, value }
    }

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
        let mut rung0 = Vec::new();
        let mut promoted: Vec<(usize, usize)> = Vec::new();
        let mut decisions = Vec::new();
        for (trial, &value) in arrivals.iter().enumerate() {
            rung0.push(r(trial, value));
            let rungs = vec![rung0.clone()];
            let next = asha.next_promotion(&rungs, Mode::Min, |t, k| promoted.contains(&(t, k)));
            if let Some((t, to)) = next {
                promoted.push((t, to - 1));
            }
            decisions.push(next);
        }
        // n=1,2: floor(n/3) = 0. n=3: the best of {.9, .5, .7} is trial 1. n=4: the best is
        // now trial 3 (.2). n=5, 6: the top 1, then 2, are {3}, {3, 1}, both promoted. n=7:
        // trial 6 (.1) is best. n=8: the top 2 are {6, 3}. n=9: the top 3 add trial 8 (.4).
        assert_eq!(decisions, [None, None, Some((1, 1)), Some((3, 1)), None, None, Some((6, 1)), None, Some((8, 1))]);
        // Asynchrony's price, as the paper notes: trial 1 was promoted on the results seen
        // when it arrived, though it is not among the final best three; trial 2 never was.
        assert!(top_k(&rung0, 3, Mode::Min) == [6, 3, 8] && promoted.contains(&(1, 0)) && !promoted.contains(&(2, 0)));
    }

    #[test]
    fn higher_rungs_are_searched_first_and_max_mode_ranks_high_values_first() {
        let asha = Asha { min_epochs: 1, reduction_factor: 2, epochs: 4 };
        let rungs = vec![vec![r(0, 0.1), r(1, 0.9), r(2, 0.5), r(3, 0.7)], vec![r(1, 0.95), r(3, 0.8)]];
        // Max mode: rung 1's best half is trial 1, promoted before any of rung 0's.
        let promoted = |t: usize, k: usize| k == 0 && (t == 1 || t == 3);
        assert_eq!(asha.next_promotion(&rungs, Mode::Max, promoted), Some((1, 2)));
        // Rung 1's one promotion made, rung 0's best half {1, 3} already promoted: none.
        let all = |t: usize, k: usize| (k == 1 && t == 1) || promoted(t, k);
        assert_eq!(asha.next_promotion(&rungs, Mode::Max, all), None);
        // Min mode: rung 1's best is trial 3; a NaN ranks last.
        assert_eq!(top_k(&[r(0, f64::NAN), r(1, 0.3), r(2, 0.2), r(3, 0.4)], 2, Mode::Min), [2, 1]);
    }
}
