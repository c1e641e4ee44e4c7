//! The results: one row per trial, read from its run directory and its claims; written as
//! `results.csv` and `best.yaml`, and printed by `sweep status`.

use anyhow::Result;
use serde_yaml::Value;

use super::asha::Mode;
use super::claims::{Claims, Holder, Task};
use super::space::{show, Trial};
use super::spec::Sweep;
use super::survey::{metric_values, Survey};
use super::SweepDir;
use crate::atomic;
use crate::rundir::{self, RunDir};

pub const RESULTS: &str = "results.csv";
pub const BEST: &str = "best.yaml";

#[derive(Debug, Clone)]
pub struct Row {
    pub trial: Trial,
    /// pending, running, interrupted (its worker is gone; a worker will resume it),
    /// paused (at an ASHA rung, while the sweep goes on), pruned (left at its rung by
    /// ASHA), finished, stopped_early, failed.
    pub status: String,
    pub epochs: usize,
    pub best: Option<f64>,
    pub last: Option<f64>,
    pub train_seconds: f64,
    pub seconds: f64,
}

/// Every trial's row. `complete`: the sweep has nothing left to do (a paused trial is then
/// one ASHA pruned).
pub fn rows(
    dir: &SweepDir,
    sweep: &Sweep,
    trials: &[Trial],
    survey: &Survey,
    claims: &Claims,
    complete: bool,
) -> Vec<Row> {
    trials
        .iter()
        .map(|trial| {
            let run = dir.trial(trial);
            let summary: Option<serde_json::Value> =
                std::fs::read(run.join(rundir::SUMMARY)).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let get = |key: &str| summary.as_ref().and_then(|s| s.get(key)).and_then(serde_json::Value::as_f64);
            let mine: Vec<(&Task, _)> = survey.tasks.iter().filter(|(t, _)| t.trial == trial.index).collect();
            let open = mine.iter().find(|(_, e)| !e.done && e.generation > 0);
            let status = match (open, RunDir::new(&run).status()) {
                _ if mine.is_empty() => "pending".to_string(),
                (Some((task, entry)), _) => match claims.holder(**task, entry.generation) {
                    Holder::Alive => "running".to_string(),
                    Holder::Gone => "interrupted".to_string(),
                },
                (None, Some(rundir::Status::Paused)) if complete => "pruned".to_string(),
                (None, Some(status)) => status.name().to_string(),
                // Failed before its run directory was written (its record says why).
                (None, None) => "failed".to_string(),
            };
            let values = metric_values(&run, &sweep.metric);
            let best = values.iter().copied().filter(|v| !v.is_nan()).reduce(|a, b| better(sweep.mode, a, b));
            Row {
                trial: trial.clone(),
                status,
                epochs: values.len(),
                best,
                last: values.last().copied(),
                train_seconds: get("train_seconds").unwrap_or(0.0),
                seconds: get("total_seconds").unwrap_or(0.0),
            }
        })
        .collect()
}

fn better(mode: Mode, a: f64, b: f64) -> f64 {
    match mode {
        Mode::Min => a.min(b),
        Mode::Max => a.max(b),
    }
}

/// The row with the best `best` value (the earlier trial on a tie).
pub fn best<'a>(rows: &'a [Row], mode: Mode) -> Option<&'a Row> {
    rows.iter().filter(|r| r.best.is_some()).fold(None, |acc: Option<&Row>, row| match acc {
        Some(a)
            if better(mode, a.best.unwrap_or(f64::NAN), row.best.unwrap_or(f64::NAN)) == a.best.unwrap_or(f64::NAN) =>
        {
            Some(a)
        }
        _ => Some(row),
    })
}

/// Writes results.csv and, once a trial has a metric, best.yaml: the best trial's resolved
/// config, ready for `torchfit train`.
pub fn write(dir: &SweepDir, sweep: &Sweep, rows: &[Row]) -> Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["trial".to_string()];
    header.extend(sweep.parameters.iter().map(|(name, _)| name.clone()));
    let metric = &sweep.metric;
    header.extend(["status".into(), "epochs".into(), format!("best_{metric}"), format!("last_{metric}")]);
    header.extend(["train_seconds".into(), "seconds".into()]);
    csv.write_record(&header)?;
    let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for row in rows {
        let mut record = vec![row.trial.name()];
        // A parameter the trial's model kind does not read: an empty cell.
        record.extend(sweep.parameters.iter().map(|(name, _)| row.trial.value(name).map(plain).unwrap_or_default()));
        record.extend([row.status.clone(), row.epochs.to_string(), number(row.best), number(row.last)]);
        record.extend([format!("{:.3}", row.train_seconds), format!("{:.3}", row.seconds)]);
        csv.write_record(&record)?;
    }
    atomic::write(&dir.path().join(RESULTS), &csv.into_inner()?)?;
    if let Some(best) = best(rows, sweep.mode) {
        let run = dir.trial(&best.trial);
        let config = std::fs::read_to_string(run.join(rundir::CONFIG)).unwrap_or_default();
        let text = format!(
            "# The best trial of sweep {}: trial {} ({}), {metric} {} ({}; {} epochs).\n# Train it again with: torchfit train {}\n{config}",
            dir.path().display(),
            best.trial.name(),
            describe(&best.trial),
            number(best.best),
            match sweep.mode {
                Mode::Min => "lowest",
                Mode::Max => "highest",
            },
            best.epochs,
            dir.path().join(BEST).display()
        );
        atomic::write(&dir.path().join(BEST), text.as_bytes())?;
    }
    Ok(())
}

/// A value as a CSV cell: a string as it is, anything else in YAML's flow style.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => show(other),
    }
}

/// `lr=0.01, model.hidden=[64, 64]`: the parameters by their last key segment where that
/// is unambiguous.
pub fn describe(trial: &Trial) -> String {
    trial
        .values
        .iter()
        .map(|(name, v)| {
            let short = name.rsplit('.').next().unwrap_or(name);
            let unique = trial.values.iter().filter(|(n, _)| n.rsplit('.').next() == Some(short)).count() == 1;
            format!("{}={}", if unique { short } else { name }, show(v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table as aligned text, for the terminal.
pub fn text(sweep: &Sweep, rows: &[Row]) -> String {
    let mut lines = vec![{
        let mut h = vec!["trial".to_string()];
        h.extend(sweep.parameters.iter().map(|(n, _)| n.clone()));
        h.extend(["status".into(), "epochs".into(), format!("best {}", sweep.metric), "last".into(), "seconds".into()]);
        h
    }];
    let number = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_else(|| "-".into());
    for row in rows {
        let mut l = vec![row.trial.name()];
        l.extend(sweep.parameters.iter().map(|(name, _)| row.trial.value(name).map_or("-".into(), plain)));
        l.extend([
            row.status.clone(),
            row.epochs.to_string(),
            number(row.best),
            number(row.last),
            format!("{:.1}", row.seconds),
        ]);
        lines.push(l);
    }
    crate::report::aligned(&lines)
}
