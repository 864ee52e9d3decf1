//! Line charts with markers: CDFs, capacity curves, per-layer imbalance.

use super::{AXIS, CAPTION, TICKS, palette};
use crate::figure::{Chart, DrawResult};
use crate::font::FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a numeric x axis, optionally with a dashed horizontal limit (e.g. GPU memory).
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// A horizontal reference line and its label.
    pub limit: Option<(f64, String)>,
    /// Start the y axis at zero (amounts) rather than at the data's minimum (ratios, CDF x).
    pub y_from_zero: bool,
    /// Draw the line as a step function (CDFs).
    pub steps: bool,
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// A range around `lo..hi` with 5% padding, never empty.
pub(crate) fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = (hi - lo).abs().max(hi.abs() * 1e-3).max(1e-9);
    (lo - 0.05 * span)..(hi + 0.05 * span)
}

impl Chart for LineChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = bounds(pts().map(|p| p.0)).unwrap_or((0.0, 1.0));
        let integral_x = pts().all(|p| p.0.fract() == 0.0);
        let (mut y0, mut y1) = bounds(pts().map(|p| p.1)).unwrap_or((0.0, 1.0));
        if let Some((l, _)) = &self.limit {
            y0 = y0.min(*l);
            y1 = y1.max(*l);
        }
        if self.y_from_zero {
            y0 = y0.min(0.0);
        }
        let yr = padded(y0, y1);
        // Room above the data for the legend (upper left), one line per entry; a CDF's axis is a fraction
        // that ends at 1 and its legend goes to the lower right, where a CDF has no line.
        let entries = self.series.len() + self.limit.is_some() as usize;
        let yr = if self.steps {
            yr.start.max(-0.02)..yr.end.min(1.02)
        } else {
            yr.start..yr.end + (yr.end - yr.start) * 0.075 * entries as f64
        };
        let yr = if self.y_from_zero {
            0.0f64.min(y0)..yr.end
        } else {
            yr
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(padded(x0, x1), yr)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FAMILY, AXIS))
            .label_style((FAMILY, TICKS))
            .x_label_formatter(&|v| {
                // Counts on the x axis (GPUs, layers, points) get no fractional ticks.
                match (integral_x, (v - v.round()).abs() < 1e-9) {
                    (true, true) => format!("{v:.0}"),
                    (true, false) => String::new(),
                    (false, _) => short(*v),
                }
            })
            .y_label_formatter(&|v| short(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let color = palette::series(i);
            let line: Vec<(f64, f64)> = if self.steps {
                let mut v = Vec::with_capacity(2 * s.points.len());
                for (k, p) in s.points.iter().enumerate() {
                    if k > 0 {
                        v.push((p.0, s.points[k - 1].1));
                    }
                    v.push(*p);
                }
                v
            } else {
                s.points.clone()
            };
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(3)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            if !self.steps {
                chart.draw_series(s.points.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
            }
        }
        if let Some((l, label)) = &self.limit {
            let red = palette::LIMIT;
            let (xa, xb) = (chart.x_range().start, chart.x_range().end);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(xa, *l), (xb, *l)],
                    10,
                    6,
                    red.stroke_width(2),
                ))?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], red.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, TICKS))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(if self.steps {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperLeft
            })
            .draw()?;
        Ok(())
    }
}

/// Tick labels without noise digits: 12, 1.5, 0.25, 1.2e6 → "1.2M".
pub(crate) fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || a == 0.0 || (a >= 10.0 && v.fract() == 0.0) {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(25_000.0), "25k");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(0.256), "0.26");
        assert_eq!(short(640.0), "640");
        assert_eq!(short(16.0), "16");
        assert_eq!(short(1.0), "1.00", "like its neighbours 0.80 and 1.20");
        assert_eq!(short(-20.0), "-20");
    }

    /// The tick labels of a rendered chart's SVG.
    fn tick_labels(chart: &LineChart) -> Vec<String> {
        let fig = crate::figure::render(chart, "t", "t", crate::figure::SIZE).unwrap();
        fig.svg
            .split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>').and_then(|(_, r)| r.split_once("</text>")))
            .map(|(label, _)| label.trim().to_string())
            .collect()
    }

    #[test]
    fn a_cdf_axis_ends_at_one() {
        let cdf = LineChart {
            title: "step time".into(),
            x_label: "ms".into(),
            y_label: "fraction of iterations".into(),
            series: (0..3)
                .map(|k| Series {
                    name: format!("s{k}"),
                    points: (1..=10)
                        .map(|i| (i as f64 + k as f64, i as f64 / 10.0))
                        .collect(),
                })
                .collect(),
            limit: None,
            y_from_zero: true,
            steps: true,
        };
        let labels = tick_labels(&cdf);
        assert!(labels.iter().any(|l| l == "1.00"), "{labels:?}");
        for above in ["1.20", "1.40", "1.10"] {
            assert!(!labels.iter().any(|l| l == above), "{above} in {labels:?}");
        }
    }

    #[test]
    fn padding_never_collapses() {
        let r = padded(5.0, 5.0);
        assert!(r.start < 5.0 && r.end > 5.0);
        let r = padded(0.0, 10.0);
        assert_eq!((r.start, r.end), (-0.5, 10.5));
    }
}
