//! `torchfit runs`: every run below some directories in one table (status, epochs, the best
//! and last value of a metric, time, device, processes), best first, as aligned text, CSV or
//! JSON; or, with `--plot METRIC`, their curves of one metric in one PNG.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::Metric;
use crate::report::{self, MAX_CURVES};
use crate::rundir;

mod read;
mod table;

pub use read::{printable, Run};

/// How the table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub struct Options {
    /// Run directories, directories holding runs, sweep directories; `runs` when empty.
    pub dirs: Vec<PathBuf>,
    /// The metric of the table [default: `val_loss` when a run has it, else `loss`].
    pub metric: Option<String>,
    pub format: Format,
    /// Draw this metric's curves instead of printing the table.
    pub plot: Option<String>,
    /// Where the plot goes [default: `runs.png`].
    pub output: Option<PathBuf>,
}

/// How deep below each directory runs are looked for: `runs/<sweep>/trials/<trial>` is 3.
const DEPTH: usize = 4;
/// The most directories looked into, so that `torchfit runs /` ends.
const MAX_DIRS: usize = 100_000;
/// `--plot`'s image, in pixels.
pub const PLOT_SIZE: (u32, u32) = (1000, 600);

/// A row of the table: a run and its metric's best and last values.
pub struct Row<'a> {
    pub run: &'a Run,
    pub best: Option<f64>,
    pub last: Option<f64>,
}

pub fn runs(options: &Options, out: &mut dyn Write) -> Result<()> {
    let dirs = if options.dirs.is_empty() { vec![PathBuf::from("runs")] } else { options.dirs.clone() };
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    let mut visited = 0;
    for dir in &dirs {
        if !dir.is_dir() {
            let what = if dir.exists() { "is not a directory" } else { "does not exist" };
            bail!("{} {what}: name the directories that hold the runs (torchfit runs DIR...)", dir.display());
        }
        find(dir, DEPTH, &mut found, &mut visited);
    }
    if visited >= MAX_DIRS {
        warnings.push(format!("stopped looking for runs after {MAX_DIRS} directories"));
    }
    let mut seen = BTreeSet::new();
    found.retain(|path| seen.insert(path.canonicalize().unwrap_or_else(|_| path.clone())));
    let runs: Vec<Run> = found.iter().map(|path| Run::read(path, &mut warnings)).collect();
    for warning in &warnings {
        eprintln!("torchfit: warning: {}", printable(warning));
    }
    let places = dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ");
    if let Some(metric) = &options.plot {
        if runs.is_empty() {
            bail!("no runs in {places} (directories with a {})", rundir::SUMMARY);
        }
        check_metric(&runs, metric)?;
        return plot(&runs, metric, options.output.as_deref().unwrap_or(Path::new("runs.png")), out);
    }
    if runs.is_empty() {
        eprintln!("torchfit: no runs in {places} (directories with a {})", rundir::SUMMARY);
    }
    let metric = match &options.metric {
        Some(metric) => metric.clone(),
        None if runs.iter().any(|r| r.metrics.has("val_loss")) => "val_loss".into(),
        None => "loss".into(),
    };
    if options.metric.is_some() && !runs.is_empty() {
        check_metric(&runs, &metric)?;
    }
    let rows = rows(&runs, &metric);
    table::write(&rows, &metric, options.format, out)
}

/// Adds the run directories in `dir` to `found`: `dir` itself when it is one, else those
/// below it, `depth` levels down at most, in name order. Symbolic links below `dir` are not
/// followed (a link to a parent would never end).
fn find(dir: &Path, depth: usize, found: &mut Vec<PathBuf>, visited: &mut usize) {
    *visited += 1;
    // A folder of configs has a config.yaml too; a run writes config.yaml, preprocessing.json
    // and then summary.json as it starts.
    let run_files = [rundir::CONFIG, rundir::PREPROCESSING];
    if dir.join(rundir::SUMMARY).is_file() || run_files.iter().all(|f| dir.join(f).is_file()) {
        found.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut below: Vec<PathBuf> = entries
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    below.sort();
    for path in below {
        if depth == 0 || *visited >= MAX_DIRS {
            return;
        }
        find(&path, depth - 1, found, visited);
    }
}

/// An error naming the metrics the runs have when none has `metric`.
fn check_metric(runs: &[Run], metric: &str) -> Result<()> {
    if runs.iter().any(|r| r.metrics.has(metric)) {
        return Ok(());
    }
    let names: BTreeSet<&str> =
        runs.iter().flat_map(|r| r.metrics.columns.iter().map(String::as_str)).filter(|c| *c != "epoch").collect();
    let names = if names.is_empty() {
        "none (no readable metrics.csv)".into()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    };
    bail!("no run has the metric {metric:?} in its {}; the runs have: {names}", rundir::METRICS)
}

/// The runs' rows, best first (lowest or highest as the metric's direction says); runs
/// without a value of the metric last; ties by name.
pub fn rows<'a>(runs: &'a [Run], metric: &str) -> Vec<Row<'a>> {
    let higher = Metric::higher_is_better(metric);
    let mut rows: Vec<Row> = runs
        .iter()
        .map(|run| {
            let values = run.metrics.series(metric).unwrap_or_default().into_iter().map(|(_, y)| y);
            let best = values.reduce(|a, b| if higher { a.max(b) } else { a.min(b) });
            Row { run, best, last: run.metrics.last(metric) }
        })
        .collect();
    rows.sort_by(|a, b| {
        let by_best = match (a.best, b.best) {
            (Some(x), Some(y)) if higher => y.total_cmp(&x),
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_best.then_with(|| a.run.name.cmp(&b.run.name)).then_with(|| a.run.path.cmp(&b.run.path))
    });
    rows
}

/// The curves of `metric`, best run first, the first `MAX_CURVES` of them, in one PNG.
fn plot(runs: &[Run], metric: &str, output: &Path, out: &mut dyn Write) -> Result<()> {
    let curves: Vec<report::Curve> = rows(runs, metric)
        .into_iter()
        .filter_map(|row| row.run.metrics.series(metric).filter(|p| !p.is_empty()).map(|p| (row.run.name.clone(), p)))
        .collect();
    if curves.is_empty() {
        bail!("no run has a finite {metric} value to plot");
    }
    let title = if curves.len() > MAX_CURVES {
        eprintln!("torchfit: note: {} runs have {metric}; drawing the {MAX_CURVES} best", curves.len());
        format!("{metric} per epoch (the {MAX_CURVES} best of {} runs)", curves.len())
    } else {
        format!("{metric} per epoch")
    };
    report::plot_runs(output, &title, metric, &curves, PLOT_SIZE)?;
    writeln!(out, "wrote {} ({} runs)", output.display(), curves.len().min(MAX_CURVES))?;
    Ok(())
}
