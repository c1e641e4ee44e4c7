//! The plots of runs: `loss.png`, one panel per metrics.csv quantity (the loss, then each
//! metric; train and validation in each), and `torchfit runs --plot`'s curves of several
//! runs in one chart.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{register_font, History};
use crate::atomic;

/// What `loss.png` marks besides the curves.
#[derive(Debug, Clone, Default)]
pub struct Marks {
    /// With early stopping: the best epoch (the weights exported with `restore_best`), a
    /// dashed line.
    pub best_epoch: Option<usize>,
    /// A run that did not train all its epochs: how it stopped ("stopped early", "paused",
    /// "interrupted", "failed"), a cross on each curve's last point.
    pub stopped: Option<&'static str>,
}

/// One line of a chart: its legend and its points (epoch, value).
pub type Curve = (String, Vec<(f64, f64)>);

/// The most runs `plot_runs` draws: beyond about a dozen colours, curves cannot be told apart.
pub const MAX_CURVES: usize = 12;

/// The curves' colours: matplotlib's `tab10`, then two more.
const COLOURS: [RGBColor; MAX_CURVES] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(0, 0, 128),
];

/// A curve of `loss.png`'s: train or validation, its colour, its points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

/// A panel of `loss.png`: the quantity's name and its train and validation curves.
struct Panel {
    name: String,
    curves: Vec<Line>,
}

impl History {
    /// The loss per epoch and the validation loss when there is one, like the Keras
    /// tutorial's `plt.plot(history.history['loss'])`, and below it a panel for each metric
    /// alike (`accuracy` and `val_accuracy`, ...), captioned `<name>: model <quantity>`.
    /// `marks` adds the early-stopped best epoch and where a run that did not finish stopped.
    /// A metric without a finite value has no panel; the loss must have one.
    pub fn plot(&self, path: &Path, name: &str, marks: &Marks) -> Result<()> {
        register_font();
        let panels = self.panels();
        if panels.first().is_none_or(|p| p.name != "loss") {
            return Err(anyhow!("cannot plot {}: no finite loss values", path.display()));
        }
        let last_epoch = self.epochs.iter().map(|r| r.epoch).max().unwrap_or(1).max(2) as f64;
        let size = if panels.len() == 1 { (800, 500) } else { (800, 340 * panels.len() as u32) };
        atomic::write_with(path, |tmp| {
            let root = BitMapBackend::new(tmp, size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
            for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
                let caption = format!("{name}: model {}", panel.name);
                draw_panel(&area, &caption, panel, last_epoch, marks)?;
            }
            root.present().map_err(|e| anyhow!("{e}"))?;
            Ok(())
        })
    }

    /// The loss, then each metric, with their finite points; validation's `val_` twins
    /// beside them in the same panel.
    fn panels(&self) -> Vec<Panel> {
        let bases = self.columns.iter().filter(|c| !c.starts_with("val_"));
        bases
            .filter_map(|base| {
                let curves: Vec<_> = [("train", BLUE, base.clone()), ("validation", RED, format!("val_{base}"))]
                    .into_iter()
                    .filter_map(|(label, color, column)| self.series(&column).map(|points| (label, color, points)))
                    .filter(|(_, _, points)| !points.is_empty())
                    .collect();
                (!curves.is_empty()).then(|| Panel { name: base.clone(), curves })
            })
            .collect()
    }
}

/// Epochs 1 to `last` with a little room either side, so that a mark on the first or the
/// last epoch is not hidden by the axis.
fn x_range(last: f64) -> std::ops::Range<f64> {
    let room = ((last - 1.0) * 0.02).max(0.04);
    (1.0 - room)..(last + room)
}

/// An x axis label: whole epochs only (a short run's axis has ticks between them).
fn epoch_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

/// The smallest and largest of `values` with a margin, for a chart's y axis.
fn y_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-12);
    Some((lo - pad, hi + pad))
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    panel: &Panel,
    last_epoch: f64,
    marks: &Marks,
) -> Result<()> {
    let values = panel.curves.iter().flat_map(|(_, _, p)| p.iter().map(|&(_, y)| y));
    let (lo, hi) = y_range(values).ok_or_else(|| anyhow!("{caption}: no finite values"))?;
    let mut chart = epoch_chart(area, (caption, 24), &panel.name, last_epoch, (lo, hi))?;
    for (label, color, points) in &panel.curves {
        let color = *color;
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(best) = marks.best_epoch {
        let x = best as f64;
        let style = BLACK.mix(0.6).stroke_width(1);
        let steps = 40;
        let dashes = (0..steps).step_by(2).map(|i| {
            let at = |k: i32| lo + (hi - lo) * k as f64 / steps as f64;
            PathElement::new(vec![(x, at(i)), (x, at(i + 1))], style)
        });
        chart
            .draw_series(dashes)
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("best epoch {best}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if let Some(how) = marks.stopped {
        let ends: Vec<(f64, f64)> = panel.curves.iter().filter_map(|(_, _, p)| p.last().copied()).collect();
        let epoch = ends.iter().map(|&(x, _)| x).fold(1.0, f64::max);
        let style = BLACK.stroke_width(2);
        chart
            .draw_series(ends.into_iter().map(|at| Cross::new(at, 7, style)))
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{how} after epoch {epoch:.0}"))
            .legend(move |(x, y)| Cross::new((x + 10, y), 5, style));
    }
    draw_legend(&mut chart, 14)
}

/// A chart of values per epoch in `area`: its caption (text and size), the axes (whole epochs
/// on x, `y_desc` on y) and its grid, drawn.
fn epoch_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    (caption, size): (&str, u32),
    y_desc: &str,
    last_epoch: f64,
    (lo, hi): (f64, f64),
) -> Result<EpochChart<'a, DB>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", size))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range(last_epoch), lo..hi)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&epoch_label)
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(chart)
}

type EpochChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The chart's legend, in its upper right corner, in `font_size` text.
fn draw_legend<'a, DB: DrawingBackend + 'a>(chart: &mut EpochChart<'a, DB>, font_size: u32) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", font_size))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// `curves` (at most `MAX_CURVES`; the rest are not drawn) in one chart of `size` pixels,
/// each in its own colour with its name in the legend, written atomically to `path`.
pub fn plot_runs(path: &Path, title: &str, metric: &str, curves: &[Curve], size: (u32, u32)) -> Result<()> {
    register_font();
    let curves = &curves[..curves.len().min(MAX_CURVES)];
    let values = curves.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let (lo, hi) =
        y_range(values).ok_or_else(|| anyhow!("cannot plot {}: no finite {metric} values", path.display()))?;
    let last_epoch = curves.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x)).fold(2.0, f64::max);
    atomic::write_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let mut chart = epoch_chart(&root, (title, 22), metric, last_epoch, (lo, hi))?;
        for ((name, points), &color) in curves.iter().zip(&COLOURS) {
            let style = color.stroke_width(2);
            let series =
                chart.draw_series(LineSeries::new(points.iter().copied(), style)).map_err(|e| anyhow!("{e}"))?;
            series.label(name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            // A run of one epoch is a point, which a line does not show.
            if points.len() == 1 {
                chart
                    .draw_series(points.iter().map(|&at| Circle::new(at, 3, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        draw_legend(&mut chart, 13)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::EpochRecord;

    /// Three epochs of `columns`, each column's value falling by epoch.
    fn history(columns: &[&str]) -> History {
        let mut h = History::new(columns.iter().map(|c| c.to_string()).collect());
        for epoch in 1..=3 {
            let values = (0..columns.len()).map(|i| (i + 1) as f64 / epoch as f64).collect();
            h.epochs.push(EpochRecord { epoch, values, lr: 0.001, seconds: 0.25 });
        }
        h
    }

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let word = |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        (word(16), word(20))
    }

    #[test]
    fn plot_is_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        history(&["loss", "val_loss"]).plot(&path, "model", &Marks::default()).unwrap();
        assert_eq!(png_size(&path), (800, 500));
        assert!(std::fs::metadata(&path).unwrap().len() > 5000);
    }

    #[test]
    fn each_metric_gets_a_panel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        history(&["loss", "mae", "val_loss", "val_mae"]).plot(&path, "m", &Marks::default()).unwrap();
        assert_eq!(png_size(&path), (800, 680));
        // A metric without a finite value has no panel.
        let mut h = history(&["loss", "mae"]);
        h.epochs.iter_mut().for_each(|r| r.values[1] = f64::NAN);
        h.plot(&path, "m", &Marks::default()).unwrap();
        assert_eq!(png_size(&path), (800, 500));
    }

    #[test]
    fn plot_marks_the_best_epoch_and_where_a_run_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let h = history(&["loss", "mae"]);
        let mut drawn = Vec::new();
        for marks in [
            Marks::default(),
            Marks { best_epoch: Some(2), stopped: None },
            Marks { best_epoch: None, stopped: Some("interrupted") },
        ] {
            let path = dir.path().join(format!("{}.png", drawn.len()));
            h.plot(&path, "t", &marks).unwrap();
            drawn.push(std::fs::read(path).unwrap());
        }
        assert_ne!(drawn[0], drawn[1]);
        assert_ne!(drawn[0], drawn[2]);
        assert_ne!(drawn[1], drawn[2]);
    }

    #[test]
    fn plot_refuses_non_finite_losses() {
        let mut h = history(&["loss", "mae"]);
        h.epochs.iter_mut().for_each(|r| r.values[0] = f64::NAN);
        let dir = tempfile::tempdir().unwrap();
        assert!(h.plot(&dir.path().join("loss.png"), "t", &Marks::default()).is_err());
    }

    #[test]
    fn runs_plot_is_a_png_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.png");
        let curves = vec![("a".to_string(), vec![(1.0, 1.0), (2.0, 0.5)]), ("b".to_string(), vec![(1.0, 0.7)])];
        plot_runs(&path, "val_loss", "val_loss", &curves, (900, 540)).unwrap();
        assert_eq!(png_size(&path), (900, 540));
        let nan = vec![("a".to_string(), vec![(1.0, f64::NAN)])];
        assert!(plot_runs(&path, "t", "x", &nan, (900, 540)).is_err());
    }
}
