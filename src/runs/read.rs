//! One run as `torchfit runs` sees it: what its summary.json and metrics.csv say. Files are
//! read with a size bound, and one that cannot be read (half-written, corrupt, hostile) is a
//! warning naming it: the run is listed with what could be read.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::rundir;

/// The largest summary.json read (torchfit's own are a few KiB).
pub const MAX_SUMMARY: u64 = 4 << 20;
/// The largest metrics.csv (or a sweep's results.csv) read: a line per epoch fits millions.
pub const MAX_METRICS: u64 = 64 << 20;
/// The longest text shown from a file (a name, a status, a device).
const MAX_TEXT: usize = 80;

/// A run directory's summary and history.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run directory's name.
    pub name: String,
    pub path: PathBuf,
    /// summary.json's `status`, or `pruned` for a sweep trial ASHA left paused at its rung.
    pub status: Option<String>,
    pub epochs: Option<u64>,
    pub seconds: Option<f64>,
    pub device: Option<String>,
    pub world_size: Option<u64>,
    pub metrics: Metrics,
}

/// metrics.csv: its header and its rows as numbers (NaN where a cell is not one).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub columns: Vec<String>,
    rows: Vec<Vec<f64>>,
}

impl Metrics {
    pub fn has(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
    }

    /// The finite values of `column` by epoch (metrics.csv's `epoch`, or the row's place
    /// when that is unreadable); `None` without the column.
    pub fn series(&self, column: &str) -> Option<Vec<(f64, f64)>> {
        let at = self.columns.iter().position(|c| c == column)?;
        let epoch = self.columns.iter().position(|c| c == "epoch");
        let points = self.rows.iter().enumerate().filter_map(|(i, row)| {
            let x = epoch.and_then(|e| row.get(e).copied()).filter(|x| x.is_finite()).unwrap_or((i + 1) as f64);
            row.get(at).copied().filter(|y| y.is_finite()).map(|y| (x, y))
        });
        Some(points.collect())
    }

    /// The last row's value of `column`, when it is a finite number.
    pub fn last(&self, column: &str) -> Option<f64> {
        let at = self.columns.iter().position(|c| c == column)?;
        self.rows.last().and_then(|row| row.get(at).copied()).filter(|v| v.is_finite())
    }

    pub fn epochs(&self) -> usize {
        self.rows.len()
    }
}

impl Run {
    /// Reads the run in `path`, pushing a line to `warnings` for each file that could not be
    /// read whole.
    pub fn read(path: &Path, warnings: &mut Vec<String>) -> Run {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| path.display().to_string());
        let mut run = Run {
            name: clean(&name),
            path: path.to_path_buf(),
            status: None,
            epochs: None,
            seconds: None,
            device: None,
            world_size: None,
            metrics: Metrics::default(),
        };
        let summary = path.join(rundir::SUMMARY);
        match read_bounded(&summary, MAX_SUMMARY).and_then(|bytes| bytes.map(|b| parse_summary(&b)).transpose()) {
            Ok(Some(s)) => run.take_summary(&s),
            Ok(None) => {}
            Err(err) => warnings.push(format!("{}: {err}", summary.display())),
        }
        let metrics = path.join(rundir::METRICS);
        match read_bounded(&metrics, MAX_METRICS) {
            Ok(Some(bytes)) => run.metrics = parse_metrics(&bytes, &metrics, warnings),
            Ok(None) => {}
            Err(err) => warnings.push(format!("{}: {err}", metrics.display())),
        }
        if run.status.as_deref() == Some("paused") && pruned(path, &name) {
            run.status = Some("pruned".into());
        }
        run
    }

    fn take_summary(&mut self, summary: &serde_json::Map<String, Value>) {
        let text = |key: &str| summary.get(key).and_then(Value::as_str).map(clean);
        self.status = text("status");
        self.device = text("device");
        self.epochs = summary.get("epochs").and_then(Value::as_u64);
        self.seconds = summary.get("total_seconds").and_then(Value::as_f64).filter(|s| s.is_finite());
        self.world_size = summary.get("world_size").and_then(Value::as_u64);
    }
}

/// The file's bytes; `None` when it does not exist; an error (the warning's words) when it
/// cannot be read or is larger than `limit`.
fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it ({e})")),
    };
    let mut bytes = Vec::new();
    // Read one byte past the limit, rather than trusting the size, which may grow meanwhile.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it ({e})"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {} MiB; not read", limit >> 20));
    }
    Ok(Some(bytes))
}

fn parse_summary(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(summary)) => Ok(summary),
        Ok(_) => Err("not a run summary (a JSON object); ignored".into()),
        Err(e) => Err(format!("not valid JSON ({e}); ignored")),
    }
}

/// metrics.csv's rows up to the first that cannot be read; a cell that is not a number is
/// NaN. One warning per file, at the first problem.
fn parse_metrics(bytes: &[u8], path: &Path, warnings: &mut Vec<String>) -> Metrics {
    let mut reader = csv::Reader::from_reader(bytes);
    let columns: Vec<String> = match reader.headers() {
        Ok(header) => header.iter().map(clean).collect(),
        Err(e) => {
            warnings.push(format!("{}: unreadable header ({e}); ignored", path.display()));
            return Metrics::default();
        }
    };
    let mut rows = Vec::new();
    let mut warned = false;
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                warnings.push(format!("{}: row {line} cannot be read ({e}); read {i} rows", path.display()));
                break;
            }
        };
        let row: Vec<f64> = record.iter().map(|cell| cell.trim().parse().unwrap_or(f64::NAN)).collect();
        let junk = record.iter().zip(&columns).find(|(cell, _)| cell.trim().parse::<f64>().is_err());
        if let (Some((cell, column)), false) = (junk, warned) {
            warnings.push(format!("{}: row {line}: {column} is {:?}, not a number", path.display(), clean(cell)));
            warned = true;
        }
        rows.push(row);
    }
    Metrics { columns, rows }
}

/// Whether the run is a trial of a sweep (`<sweep>/trials/<name>`) whose results.csv (the
/// sweep's table, src/sweep/table.rs) says ASHA pruned it.
fn pruned(run: &Path, name: &str) -> bool {
    let Some(sweep) = run.parent().filter(|p| p.file_name().is_some_and(|n| n == "trials")).and_then(Path::parent)
    else {
        return false;
    };
    let Ok(Some(bytes)) = read_bounded(&sweep.join("results.csv"), MAX_METRICS) else { return false };
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let Ok(header) = reader.headers().cloned() else { return false };
    let (Some(trial), Some(status)) =
        (header.iter().position(|c| c == "trial"), header.iter().position(|c| c == "status"))
    else {
        return false;
    };
    reader.records().map_while(Result::ok).any(|r| r.get(trial) == Some(name) && r.get(status) == Some("pruned"))
}

/// Text as it may be printed: control characters (a terminal's escapes, in a file or a
/// directory's name) replaced.
pub fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

/// Text from a file as it may be shown: `printable`, cut to `MAX_TEXT` characters.
pub fn clean(text: &str) -> String {
    let cut: String = text.chars().take(MAX_TEXT).collect();
    let mut out = printable(&cut);
    if text.chars().nth(MAX_TEXT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(summary: &[u8], metrics: &str) -> (Run, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("summary.json"), summary).unwrap();
        std::fs::write(path.join("metrics.csv"), metrics).unwrap();
        let mut warnings = Vec::new();
        (Run::read(&path, &mut warnings), warnings)
    }

    #[test]
    fn reads_a_summary_and_metrics() {
        let summary = br#"{"status": "finished", "epochs": 2, "total_seconds": 1.5, "device": "cpu", "world_size": 1}"#;
        let (run, warnings) =
            run_with(summary, "epoch,loss,val_loss,lr,seconds\n1,0.5,0.6,0.001,0.1\n2,0.4,0.7,0.001,0.1\n");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!((run.name.as_str(), run.status.as_deref(), run.epochs), ("r", Some("finished"), Some(2)));
        assert_eq!((run.seconds, run.device.as_deref(), run.world_size), (Some(1.5), Some("cpu"), Some(1)));
        assert_eq!(run.metrics.series("val_loss"), Some(vec![(1.0, 0.6), (2.0, 0.7)]));
        assert_eq!(run.metrics.last("loss"), Some(0.4));
        assert_eq!(run.metrics.series("accuracy"), None);
    }

    #[test]
    fn bad_files_are_warnings_and_what_can_be_read_is_kept() {
        let (run, warnings) = run_with(b"{\"status\": \"finis", "epoch,loss\n1,0.5\n2,junk\n3,0.25,9\n4,0.1\n");
        assert_eq!(run.status, None);
        assert_eq!(run.metrics.series("loss"), Some(vec![(1.0, 0.5)]));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains("summary.json: not valid JSON"), "{warnings:?}");
        assert!(warnings[1].contains("metrics.csv: row 3: loss is \"junk\""), "{warnings:?}");
        assert!(warnings[2].contains("metrics.csv: row 4 cannot be read"), "{warnings:?}");
        let (run, warnings) = run_with(b"[1, 2]", "");
        assert_eq!((run.status, run.metrics.epochs()), (None, 0));
        assert!(warnings[0].contains("not a run summary"), "{warnings:?}");
        let (run, _) = run_with(br#"{"status": "\u001b[31mred", "epochs": -1}"#, "");
        assert_eq!((run.status.as_deref(), run.epochs), (Some("\u{fffd}[31mred"), None));
    }

    #[test]
    fn an_oversized_summary_is_not_read() {
        let mut big = b"{\"status\": \"finished\", \"x\": \"".to_vec();
        big.resize(MAX_SUMMARY as usize + 10, b'a');
        let (run, warnings) = run_with(&big, "");
        assert_eq!(run.status, None);
        assert!(warnings[0].contains("larger than 4 MiB"), "{warnings:?}");
    }
}
