//! What a run shows and leaves behind besides the model: the per-epoch history
//! (`metrics.csv`), the loss plot (`loss.png`), `summary.json`, and progress on the terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::atomic;

mod plot;

pub use plot::{plot_runs, Curve, Marks, MAX_CURVES};

/// One row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Values of `History::columns`: the loss (the batch-size-weighted mean of the batch
    /// losses, as Keras reports it), the metrics, then their `val_` twins.
    pub values: Vec<f64>,
    pub lr: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    /// `loss`, the metrics, and with validation `val_loss` and `val_<metric>`.
    pub columns: Vec<String>,
    pub epochs: Vec<EpochRecord>,
}

impl History {
    pub fn new(columns: Vec<String>) -> History {
        History { columns, epochs: Vec::new() }
    }

    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// The last epoch's value of a column (NaN when there is none).
    pub fn value(&self, column: &str) -> f64 {
        let at = self.columns.iter().position(|c| c == column);
        at.zip(self.last()).map(|(i, r)| r.values[i]).unwrap_or(f64::NAN)
    }

    /// Whether `column` has a finite value (a loss that is NaN from the first epoch has none).
    pub fn has_finite(&self, column: &str) -> bool {
        self.series(column).is_some_and(|points| !points.is_empty())
    }

    /// A column's finite values by epoch; `None` when there is no such column.
    fn series(&self, column: &str) -> Option<Vec<(f64, f64)>> {
        let i = self.columns.iter().position(|c| c == column)?;
        Some(self.epochs.iter().map(|r| (r.epoch as f64, r.values[i])).filter(|(_, y)| y.is_finite()).collect())
    }

    /// `epoch,<columns...>,lr,seconds`, written atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut out = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["epoch".to_string()];
        header.extend(self.columns.iter().cloned());
        header.extend(["lr".to_string(), "seconds".to_string()]);
        out.write_record(&header)?;
        for r in &self.epochs {
            let mut row = vec![r.epoch.to_string()];
            row.extend(r.values.iter().map(f64::to_string));
            row.extend([lr_text(r.lr), format!("{:.6}", r.seconds)]);
            out.write_record(&row)?;
        }
        let bytes = out.into_inner().map_err(|e| anyhow!("{e}"))?;
        atomic::write(path, &bytes)
    }
}

/// Plots use a font embedded in the binary, so they get labels on machines without fonts.
pub(crate) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        // The bytes are a known-good TrueType file compiled into the binary.
        let _ = plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes);
    });
}

/// Rows of cells as text columns for a terminal: each column as wide as its widest cell, two
/// spaces apart, no trailing spaces.
pub fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    atomic::write(path, &bytes)
}

/// Progress while training: a bar on a terminal, a line per epoch otherwise, or nothing.
pub enum Progress {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

impl Progress {
    /// Progress over `epochs` epochs, `done` of which a resumed run has behind it.
    pub fn new(epochs: usize, done: usize, quiet: bool) -> Progress {
        if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(epochs as u64);
            bar.set_position(done as u64);
            let style = ProgressStyle::with_template("{bar:30.cyan/blue} epoch {pos}/{len} [{elapsed}<{eta}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Lines
        }
    }

    pub fn epoch(&self, record: &EpochRecord, epochs: usize, columns: &[String]) {
        let values: Vec<String> =
            columns.iter().zip(&record.values).map(|(name, v)| format!("{name} {v:.4}")).collect();
        let values = values.join("  ");
        match self {
            Progress::Bar(bar) => {
                bar.set_message(values);
                bar.set_position(record.epoch as u64);
            }
            Progress::Lines => {
                let width = epochs.to_string().len();
                eprintln!("epoch {:>width$}/{epochs}  {values}  {:.3}s", record.epoch, record.seconds);
            }
            Progress::Quiet => {}
        }
    }

    /// Leaves the bar where training stopped (finishing it would draw it full, even after
    /// an interruption or early stopping).
    pub fn abandon(&self) {
        if let Progress::Bar(bar) = self {
            if !bar.is_finished() {
                bar.abandon();
                // The bar leaves the cursor on its line; what is printed next starts afresh.
                eprintln!();
            }
        }
    }
}

/// A learning rate as metrics.csv writes it: rounded to 12 significant digits, then the
/// shortest text that reads back as that, so that a schedule's arithmetic (0.003 x 0.75)
/// reads 0.00225 rather than 0.0022500000000000003. Twelve digits are far more than the
/// float32 arithmetic the rate is applied in keeps.
fn lr_text(lr: f64) -> String {
    format!("{lr:.11e}").parse::<f64>().map_or_else(|_| lr.to_string(), |rounded| rounded.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::new(vec!["loss".into(), "mae".into()]);
        for epoch in 1..=3 {
            h.epochs.push(EpochRecord { epoch, values: vec![1.0 / epoch as f64, 0.5], lr: 0.001, seconds: 0.25 });
        }
        h
    }

    #[test]
    fn csv_has_header_and_one_row_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        history().write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "epoch,loss,mae,lr,seconds");
        assert_eq!(lines[2], "2,0.5,0.5,0.001,0.250000");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn lr_is_written_without_float_noise() {
        assert_eq!(lr_text(0.003 * 0.75), "0.00225");
        assert_eq!(lr_text(0.001), "0.001");
        assert_eq!(lr_text(1e-30), 1e-30f64.to_string());
        let cosine = 0.001 * 0.5 * (1.0 + (std::f64::consts::PI * 0.3).cos());
        assert!((lr_text(cosine).parse::<f64>().unwrap() - cosine).abs() < 1e-15);
    }
}
