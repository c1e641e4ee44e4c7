//! `sweep.png`: one panel per parameter, each trial a dot at its value and its best metric,
//! the best trial in red. Numbers on a numeric axis (logarithmic for log_uniform or values
//! spanning two decades), anything else (widths as lists, names) as categories.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_yaml::Value;

use super::space::{show, Distribution, Space};
use super::spec::Sweep;
use super::table::{self, Row};
use super::SweepDir;
use crate::atomic;

pub const PLOT: &str = "sweep.png";

pub fn write(dir: &SweepDir, sweep: &Sweep, rows: &[Row]) -> Result<()> {
    let scored: Vec<&Row> = rows.iter().filter(|r| r.best.is_some_and(f64::is_finite)).collect();
    if scored.is_empty() {
        return Ok(());
    }
    crate::report::register_font();
    let best = table::best(rows, sweep.mode).map(|r| r.trial.index);
    let ys: Vec<f64> = scored.iter().filter_map(|r| r.best).collect();
    let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
    let pad = ((hi - lo) * 0.08).max(hi.abs() * 1e-3).max(1e-9);
    let n = sweep.parameters.len();
    let cols = n.min(3);
    let grid_rows = n.div_ceil(cols);
    let size = (380 * cols as u32, 320 * grid_rows as u32 + 40);
    let path = dir.path().join(PLOT);
    let title = format!("{}: best {} per trial ({} trials)", dir.path().display(), sweep.metric, scored.len());
    atomic::write_with(&path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root.titled(&title, ("sans-serif", 20)).map_err(|e| anyhow!("{e}"))?;
        let panels = root.split_evenly((grid_rows, cols));
        for (p, (name, space)) in sweep.parameters.iter().enumerate() {
            // A trial whose model kind does not read the parameter has no dot in its panel.
            let scored: Vec<&Row> = scored.iter().copied().filter(|r| r.trial.value(name).is_some()).collect();
            if scored.is_empty() {
                continue;
            }
            let at = |r: &Row| r.trial.value(name).cloned().unwrap_or(Value::Null);
            let numeric = scored.iter().all(|r| at(r).as_f64().is_some());
            let (xs, labels): (Vec<f64>, Vec<String>) = if numeric {
                (scored.iter().map(|r| at(r).as_f64().unwrap_or(0.0)).collect(), Vec::new())
            } else {
                let mut labels: Vec<String> = Vec::new();
                let xs = scored
                    .iter()
                    .map(|r| {
                        let label = show(&at(r));
                        let i = labels.iter().position(|l| *l == label).unwrap_or_else(|| {
                            labels.push(label);
                            labels.len() - 1
                        });
                        i as f64
                    })
                    .collect();
                (xs, labels)
            };
            let (xlo, xhi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
            let log = numeric
                && xlo > 0.0
                && (matches!(space, Space::Distribution { distribution: Distribution::LogUniform, .. })
                    || xhi / xlo >= 100.0);
            let tx = |x: f64| if log { x.log10() } else { x };
            let (a, b) = (tx(xlo), tx(xhi));
            let xpad = if b > a { (b - a) * 0.08 } else { 0.5 };
            let mut chart = ChartBuilder::on(&panels[p])
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d((a - xpad)..(b + xpad), (lo - pad)..(hi + pad))
                .map_err(|e| anyhow!("{e}"))?;
            let categories = labels.clone();
            let format_x = move |x: &f64| -> String {
                if !categories.is_empty() {
                    let i = x.round();
                    return if (x - i).abs() < 1e-6 && i >= 0.0 {
                        categories.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    };
                }
                let v = if log { 10f64.powf(*x) } else { *x };
                format!("{v:.3e}").replace("e0", "")
            };
            let x_desc = if log { format!("{name} (log)") } else { name.clone() };
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(&sweep.metric)
                .x_labels(if labels.is_empty() { 6 } else { labels.len() * 2 + 1 })
                .x_label_formatter(&format_x)
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            let dots = scored.iter().zip(&xs).map(|(r, &x)| {
                let color = if Some(r.trial.index) == best { RED } else { BLUE };
                Circle::new((tx(x), r.best.unwrap_or(f64::NAN)), 4, color.filled())
            });
            chart.draw_series(dots).map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}
