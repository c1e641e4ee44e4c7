//! The run table's three forms: aligned text for a terminal, CSV (numbers in full, empty
//! cells for what a run does not say) and JSON (an array of objects, null likewise).

use std::io::Write;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use super::{printable, Format, Row};

pub fn write(rows: &[Row], metric: &str, format: Format, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Table => out.write_all(text(rows, metric).as_bytes())?,
        Format::Csv => out.write_all(&csv(rows, metric)?)?,
        Format::Json => {
            let objects: Vec<Value> = rows.iter().map(|row| object(row, metric)).collect();
            // Serialized first: written straight out, a reader that stops reading would be a
            // serde_json error rather than the broken pipe that main lets pass.
            let mut bytes = serde_json::to_vec_pretty(&objects)?;
            bytes.push(b'\n');
            out.write_all(&bytes)?;
        }
    }
    Ok(())
}

fn header(metric: &str) -> Vec<String> {
    let names = ["name", "status", "epochs"].map(String::from);
    let mut header = names.to_vec();
    header.extend([format!("best_{metric}"), format!("last_{metric}")]);
    header.extend(["seconds", "device", "world_size", "path"].map(String::from));
    header
}

/// The row's cells; `number` writes a value, `missing` stands for what the run does not say.
fn cells(row: &Row, number: impl Fn(f64) -> String, missing: &str) -> Vec<String> {
    let run = row.run;
    let or = |v: Option<String>| v.unwrap_or_else(|| missing.to_string());
    vec![
        run.name.clone(),
        or(run.status.clone()),
        or(run.epochs.or(Some(run.metrics.epochs() as u64).filter(|&n| n > 0)).map(|n| n.to_string())),
        or(row.best.map(&number)),
        or(row.last.map(&number)),
        or(run.seconds.map(|s| format!("{s:.1}"))),
        or(run.device.clone()),
        or(run.world_size.map(|n| n.to_string())),
        printable(&run.path.display().to_string()),
    ]
}

/// Aligned columns, as `sweep status` prints its table.
fn text(rows: &[Row], metric: &str) -> String {
    let mut lines = vec![header(metric)];
    lines.extend(rows.iter().map(|row| cells(row, |v| format!("{v:.6}"), "-")));
    crate::report::aligned(&lines)
}

fn csv(rows: &[Row], metric: &str) -> Result<Vec<u8>> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(header(metric))?;
    for row in rows {
        let mut cells = cells(row, |v| v.to_string(), "");
        // Seconds in full, as summary.json has them.
        cells[5] = row.run.seconds.map(|s| s.to_string()).unwrap_or_default();
        csv.write_record(cells)?;
    }
    csv.into_inner().map_err(|e| anyhow!("{e}"))
}

fn object(row: &Row, metric: &str) -> Value {
    let run = row.run;
    json!({
        "name": run.name,
        "status": run.status,
        "epochs": run.epochs.or(Some(run.metrics.epochs() as u64).filter(|&n| n > 0)),
        "metric": metric,
        "best": row.best,
        "last": row.last,
        "seconds": run.seconds,
        "device": run.device,
        "world_size": run.world_size,
        "path": printable(&run.path.display().to_string()),
    })
}
