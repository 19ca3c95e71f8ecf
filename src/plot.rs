//! Line charts as PNG or SVG: the loss curve (the book's Figure 1-16), the benchmark chart, and any
//! set of named curves. Text is drawn with DejaVu Sans, embedded in the binary, so no system font
//! library is needed.
//!
//! ```no_run
//! use perturb::plot::{loss_curve, Chart};
//! loss_curve(&[0.33, 0.29, 0.25], false).render("loss.png".as_ref())?;
//! Chart::new("Error vs eps", "eps", "error")
//!     .log_x(true)
//!     .log_y(true)
//!     .series("f32", vec![(1e-4, 3e-3), (1e-3, 4e-4)])
//!     .render("check.svg".as_ref())?;
//! # Ok::<(), perturb::Error>(())
//! ```

use crate::bench::Row;
use crate::error::{Error, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// Family name the embedded font is registered under (plotters looks fonts up by family).
const FONT: &str = "sans-serif";
/// Default image size in pixels.
pub const DEFAULT_SIZE: (u32, u32) = (800, 600);
/// Title of the loss chart, as in the book's Figure 1-16.
pub const LOSS_TITLE: &str = "Loss over increasing number of epochs";

/// Tableau 10: distinct on white and for common colour-vision deficiencies.
const PALETTE: [RGBColor; 10] = [
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
];

/// Series with at most this many points also get a marker per point (a one-point series is only
/// its marker).
const MARKER_MAX_POINTS: usize = 40;

/// Image format, chosen by the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.png`
    Png,
    /// `.svg`
    Svg,
}

impl Format {
    /// The format for `path`'s extension (case-insensitive), or a [`Error::Config`] naming it.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            Some(other) => Err(Error::Config(format!(
                "{}: cannot plot to a .{other} file (use .png or .svg)",
                path.display()
            ))),
            None => Err(Error::Config(format!(
                "{}: no file extension (use .png or .svg)",
                path.display()
            ))),
        }
    }
}

/// One named line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart: title, axis labels, linear or log axes and named series.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Caption above the plot.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Width and height in pixels (for SVG, its user units).
    pub size: (u32, u32),
    /// The lines; a legend is drawn when there are two or more.
    pub series: Vec<Series>,
}

impl Chart {
    /// An empty chart with linear axes and [`DEFAULT_SIZE`].
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            size: DEFAULT_SIZE,
            series: Vec::new(),
        }
    }

    /// Sets a logarithmic x axis.
    pub fn log_x(mut self, on: bool) -> Chart {
        self.log_x = on;
        self
    }

    /// Sets a logarithmic y axis.
    pub fn log_y(mut self, on: bool) -> Chart {
        self.log_y = on;
        self
    }

    /// Sets the size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Chart {
        self.size = (width, height);
        self
    }

    /// Adds a named line.
    pub fn series(mut self, name: &str, points: Vec<(f64, f64)>) -> Chart {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }

    /// The points that can be drawn: finite, and positive on a log axis. Series left empty are
    /// dropped; an error when nothing is left at all.
    fn plottable(&self) -> Result<Vec<Series>> {
        let ok = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
        let kept: Vec<Series> = self
            .series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s
                    .points
                    .iter()
                    .copied()
                    .filter(|&(x, y)| ok(x, self.log_x) && ok(y, self.log_y))
                    .collect(),
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        if kept.is_empty() {
            let log = if self.log_x || self.log_y {
                " (a log axis needs positive values)"
            } else {
                ""
            };
            return Err(Error::Config(format!(
                "chart {:?}: no finite points to plot{log}",
                self.title
            )));
        }
        Ok(kept)
    }

    /// Draws the chart to `path`, as PNG or SVG by its extension.
    pub fn render(&self, path: &Path) -> Result<()> {
        render_stacked(std::slice::from_ref(self), path)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        series: &[Series],
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        // Log axes are drawn as linear axes over log10 of the values, with our own ticks:
        // plotters' log coordinate puts no tick at all on a range narrower than a decade.
        let t = |v: f64, log: bool| if log { v.log10() } else { v };
        let series: Vec<Series> = series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s
                    .points
                    .iter()
                    .map(|&(x, y)| (t(x, self.log_x), t(y, self.log_y)))
                    .collect(),
            })
            .collect();
        let x = Axis::new(
            series.iter().flat_map(|s| &s.points).map(|p| p.0),
            self.log_x,
        );
        let y = Axis::new(
            series.iter().flat_map(|s| &s.points).map(|p| p.1),
            self.log_y,
        );
        let corner = legend_corner(&series, &x, &y);
        let (log_x, log_y) = (self.log_x, self.log_y);
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 26))
            .margin(16)
            .x_label_area_size(52)
            .y_label_area_size(78)
            .build_cartesian_2d(x, y)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FONT, 18))
            .label_style((FONT, 14))
            .x_label_formatter(&|v| tick(if log_x { 10f64.powf(*v) } else { *v }))
            .y_label_formatter(&|v| tick(if log_y { 10f64.powf(*v) } else { *v }))
            .bold_line_style(RGBColor(200, 200, 200))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let line = chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?;
            line.label(s.name.as_str()).legend(move |(lx, ly)| {
                PathElement::new([(lx, ly), (lx + 20, ly)], color.stroke_width(2))
            });
            if s.points.len() <= MARKER_MAX_POINTS {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .position(corner)
                .draw()?;
        }
        // Presented by the caller once every panel is drawn (an SVG file is written at the first
        // present, so a panel presenting itself would cut off the ones below).
        Ok(())
    }
}

/// One axis in drawing coordinates (log10 of the values on a log axis): its padded range and
/// tick positions.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Axis {
    /// The data range with a margin (5 % of the span, or of the value, or 1, when every value is
    /// the same) and ticks: round numbers, or whole decades on a log axis spanning two or more.
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let span = hi - lo;
        let pad = if span > 0.0 {
            0.05 * span
        } else if log {
            0.3 // decades
        } else if lo != 0.0 {
            0.1 * lo.abs()
        } else {
            1.0
        };
        let (lo, hi) = (lo - pad, hi + pad);
        let (bold, light) = if !log {
            let step = nice_step((hi - lo) / 10.0);
            (multiples(lo, hi, step), multiples(lo, hi, step / 5.0))
        } else if hi - lo >= 2.0 {
            let every = ((hi - lo) / 10.0).ceil();
            let light = if every == 1.0 {
                (lo.floor() as i64..=hi.ceil() as i64)
                    .flat_map(|e| (2..10).map(move |m| (m as f64).log10() + e as f64))
                    .filter(|v| (lo..=hi).contains(v))
                    .collect()
            } else {
                multiples(lo, hi, 1.0)
            };
            (multiples(lo, hi, every), light)
        } else {
            // Less than two decades: round numbers of the values themselves, placed by log10.
            let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
            let step = nice_step((b - a) / 6.0);
            let at = |s: f64| {
                multiples(a, b, s)
                    .into_iter()
                    .filter(|v| *v > 0.0)
                    .map(f64::log10)
            };
            (at(step).collect(), at(step / 5.0).collect())
        };
        Axis {
            lo,
            hi,
            bold,
            light,
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (f64::from(limit.1 - limit.0) * f + 1e-3).floor() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// The smallest of 1, 2, 5 × 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * base)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * base)
}

/// Multiples of `step` in `[lo, hi]` (at most a few hundred for the steps used here).
fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last.min(first + 1000))
        .map(|i| i as f64 * step)
        .collect()
}

/// The upper corner with fewer points near it, so that the legend covers as little as possible.
fn legend_corner(series: &[Series], x: &Axis, y: &Axis) -> SeriesLabelPosition {
    let (mut left, mut right) = (0, 0);
    for &(px, py) in series.iter().flat_map(|s| &s.points) {
        let fx = (px - x.lo) / (x.hi - x.lo);
        let fy = (py - y.lo) / (y.hi - y.lo);
        if fy > 0.6 {
            if fx < 0.4 {
                left += 1;
            } else if fx > 0.6 {
                right += 1;
            }
        }
    }
    if left < right {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    }
}

/// A tick label: plain decimals from 1e-3 to 1e5, otherwise `1e-4`, `2.5e6` (three significant
/// digits, no trailing zeros).
fn tick(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if (1e-3..1e5).contains(&a) {
        let r: f64 = format!("{v:.5e}").parse().unwrap_or(v);
        format!("{r}")
    } else {
        let r: f64 = format!("{v:.2e}").parse().unwrap_or(v);
        format!("{r:e}")
    }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        // Only fails on a corrupt font file, which the plot tests would catch at once.
        if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_err() {
            eprintln!("perturb: warning: the embedded font did not load; chart text is missing");
        }
    });
}

/// Draws `charts` one above the other in one file at `path` (PNG or SVG by its extension), each
/// `charts[0]`'s size; an error when there are none or any has nothing to draw.
pub fn render_stacked(charts: &[Chart], path: &Path) -> Result<()> {
    let format = Format::from_path(path)?;
    let Some(first) = charts.first() else {
        return Err(Error::Config("no chart to draw".into()));
    };
    let (w, h) = first.size;
    if !(200..=16_384).contains(&w) || !(150..=16_384).contains(&h) {
        return Err(Error::Config(format!(
            "chart size {w}x{h}: width must be 200..=16384 and height 150..=16384"
        )));
    }
    let series = charts
        .iter()
        .map(Chart::plottable)
        .collect::<Result<Vec<_>>>()?;
    let size = (w, h.saturating_mul(charts.len() as u32));
    register_font();
    let fail = |e: String| std::io::Error::other(e);
    // Drawn into a temporary file that replaces `path` atomically, like every output.
    crate::fileio::write_atomic_via(path, |tmp| match format {
        Format::Png => draw_stacked(
            &BitMapBackend::new(tmp, size).into_drawing_area(),
            charts,
            &series,
        )
        .map_err(|e| fail(e.to_string())),
        Format::Svg => draw_stacked(
            &SVGBackend::new(tmp, size).into_drawing_area(),
            charts,
            &series,
        )
        .map_err(|e| fail(e.to_string())),
    })
}

/// Each chart with its plottable series in its own band of `root`, top to bottom.
fn draw_stacked<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    charts: &[Chart],
    series: &[Vec<Series>],
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for ((chart, series), area) in charts
        .iter()
        .zip(series)
        .zip(root.split_evenly((charts.len(), 1)))
    {
        chart.draw(&area, series)?;
    }
    root.present()
}

/// Title of the accuracy panel of [`training_charts`].
pub const ACCURACY_TITLE: &str = "Accuracy";

/// What `perturb train --plot` draws: the loss per epoch ([`loss_curve`]) alone, or with
/// validation data the training and validation loss ("train loss", "val loss"), and for class
/// labels a second panel below with "train accuracy" and "val accuracy" in percent. Empty lists are
/// left out.
pub fn training_charts(
    losses: &[f64],
    val_loss: &[f64],
    train_accuracy: &[f64],
    val_accuracy: &[f64],
    log_y: bool,
) -> Vec<Chart> {
    let named = |lists: [(&str, &[f64]); 2]| -> Vec<(String, Vec<f64>)> {
        lists
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    };
    let mut charts = vec![match val_loss.is_empty() {
        true => loss_curve(losses, log_y),
        false => loss_curves(
            &named([("train loss", losses), ("val loss", val_loss)]),
            log_y,
        ),
    }];
    let percent = |v: &[f64]| v.iter().map(|a| 100.0 * a).collect::<Vec<_>>();
    let (train, val) = (percent(train_accuracy), percent(val_accuracy));
    let accuracy = named([("train accuracy", &train), ("val accuracy", &val)]);
    if !accuracy.is_empty() {
        let mut chart = Chart::new(ACCURACY_TITLE, "Epochs", "Accuracy (%)");
        for (name, values) in accuracy {
            let points = values
                .iter()
                .enumerate()
                .map(|(i, &a)| ((i + 1) as f64, a))
                .collect();
            chart = chart.series(&name, points);
        }
        charts.push(chart);
    }
    charts
}

/// The loss per epoch, as the book's Figure 1-16: title [`LOSS_TITLE`], x "Epochs" (1-based), y
/// "Loss", optionally on a log y axis for long runs.
pub fn loss_curve(losses: &[f64], log_y: bool) -> Chart {
    loss_curves(&[("loss".to_string(), losses.to_vec())], log_y)
}

/// Several loss curves on one chart (one per run, e.g. a sweep), named in the legend.
pub fn loss_curves(runs: &[(String, Vec<f64>)], log_y: bool) -> Chart {
    let mut chart = Chart::new(LOSS_TITLE, "Epochs", "Loss").log_y(log_y);
    for (name, losses) in runs {
        let points = losses
            .iter()
            .enumerate()
            .map(|(i, &l)| ((i + 1) as f64, l))
            .collect();
        chart = chart.series(name, points);
    }
    chart
}

/// Named curves with the same axes (e.g. error against eps on log-log axes for `perturb check`).
pub fn curves(
    title: &str,
    x_label: &str,
    y_label: &str,
    log_log: bool,
    series: Vec<Series>,
) -> Chart {
    Chart {
        series,
        ..Chart::new(title, x_label, y_label)
            .log_x(log_log)
            .log_y(log_log)
    }
}

/// Seconds per training step against parameter count on log-log axes, one line per device,
/// method, loop mode and loss (NumPy rows: one per NumPy variant), so that the sizes where the GPU
/// overtakes the CPU show as crossing lines. Skipped rows (no time) are left out; sizes with the
/// same P but other batch sizes (mnist, mnist1k) share an x value.
pub fn bench_chart(rows: &[Row]) -> Chart {
    let mut series: Vec<Series> = Vec::new();
    for r in rows {
        let Some(s) = r.seconds else { continue };
        let mut name = if r.adapter.starts_with("NumPy") {
            r.method.clone()
        } else if r.device == "gpu" {
            format!("gpu {} {}", r.method, r.mode)
        } else {
            format!("{} {}", r.device, r.method)
        };
        if r.loss != "mse" {
            name = format!("{name} {}", r.loss);
        }
        let point = (r.params as f64, s);
        match series.iter_mut().find(|x| x.name == name) {
            Some(x) => x.points.push(point),
            None => series.push(Series {
                name,
                points: vec![point],
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    curves(
        "Seconds per training step vs parameter count",
        "Parameters P",
        "Seconds per step",
        true,
        series,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(0.05), "0.05");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(1e-4), "1e-4");
        assert_eq!(tick(2.5e6), "2.5e6");
        assert_eq!(tick(0.30000000000000004), "0.3");
    }

    #[test]
    fn ranges_are_never_empty_and_ticks_are_round() {
        let a = Axis::new([2.0].into_iter(), false);
        assert_eq!((a.lo, a.hi), (1.8, 2.2));
        let a = Axis::new([0.0].into_iter(), false);
        assert_eq!((a.lo, a.hi), (-1.0, 1.0));
        let labels: Vec<String> = a.bold.iter().map(|&v| tick(v)).collect();
        assert_eq!(
            labels,
            ["-1", "-0.8", "-0.6", "-0.4", "-0.2", "0", "0.2", "0.4", "0.6", "0.8", "1"]
        );
        // Four decades: a bold tick per decade.
        let a = Axis::new([-4.0, 0.0].into_iter(), true);
        assert_eq!(a.bold, [-4.0, -3.0, -2.0, -1.0, 0.0]);
        // A tenth of a decade still gets several ticks.
        let a = Axis::new([0.25f64.log10(), 0.33f64.log10()].into_iter(), true);
        assert!(a.bold.len() >= 3, "{:?}", a.bold);
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
    }
}
