//! Stacked bars over named categories: time per phase per strategy, memory by kind per strategy.

use super::line::short;
use super::{AXIS, CAPTION, TICKS, palette};
use crate::figure::{Chart, DrawResult};
use crate::font::FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One bar per category, stacked from `components` (drawn bottom to top in order).
#[derive(Debug, Clone)]
pub struct StackedBars {
    pub title: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (name, value per category).
    pub components: Vec<(String, Vec<f64>)>,
    /// A horizontal reference line and its label.
    pub limit: Option<(f64, String)>,
}

impl Chart for StackedBars {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.categories.len().max(1);
        let totals: Vec<f64> = (0..n)
            .map(|c| {
                self.components
                    .iter()
                    .map(|(_, v)| v.get(c).copied().unwrap_or(0.0).max(0.0))
                    .sum()
            })
            .collect();
        let top = totals
            .iter()
            .copied()
            .chain(self.limit.as_ref().map(|l| l.0))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.12;
        // Bars sit on integer slots; the legend gets the right third of the width.
        let legend_w = root.dim_in_pixel().0 as i32 / 4;
        let (plot, legend) = root.split_horizontally(root.dim_in_pixel().0 as i32 - legend_w);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FAMILY, CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..top)?;
        let names = self.categories.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FAMILY, AXIS))
            .label_style((FAMILY, TICKS))
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| short(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let mut base = vec![0.0; n];
        for (k, (_, values)) in self.components.iter().enumerate() {
            let color = palette::series(k);
            let bars: Vec<_> = (0..n)
                .map(|c| {
                    let v = values.get(c).copied().unwrap_or(0.0).max(0.0);
                    let r = Rectangle::new(
                        [(c as f64 - 0.35, base[c]), (c as f64 + 0.35, base[c] + v)],
                        color.filled(),
                    );
                    base[c] += v;
                    r
                })
                .collect();
            chart.draw_series(bars)?;
        }
        let limit = self.limit.as_ref().map(|l| l.0);
        chart.draw_series(totals.iter().enumerate().map(|(c, t)| {
            Text::new(
                short(*t),
                (c as f64 - 0.1, label_y(*t, limit, top)),
                (FAMILY, TICKS).into_font(),
            )
        }))?;
        if let Some((l, _)) = &self.limit {
            chart.draw_series(DashedLineSeries::new(
                vec![(-0.5, *l), (n as f64 - 0.5, *l)],
                10,
                6,
                palette::LIMIT.stroke_width(2),
            ))?;
        }
        // Legend: one swatch per component, top to bottom in stacking order reversed (as drawn).
        let mut entries: Vec<(String, RGBColor, bool)> = self
            .components
            .iter()
            .enumerate()
            .map(|(k, (name, _))| (name.clone(), palette::series(k), false))
            .rev()
            .collect();
        if let Some((_, label)) = &self.limit {
            entries.push((label.clone(), palette::LIMIT, true));
        }
        for (i, (name, color, dashed)) in entries.iter().enumerate() {
            let y = 70 + 30 * i as i32;
            if *dashed {
                legend.draw(&PathElement::new(
                    vec![(6, y + 9), (30, y + 9)],
                    color.stroke_width(3),
                ))?;
            } else {
                legend.draw(&Rectangle::new([(8, y), (28, y + 18)], color.filled()))?;
            }
            legend.draw(&Text::new(
                name.as_str(),
                (36, y),
                (FAMILY, TICKS).into_font(),
            ))?;
        }
        Ok(())
    }
}

/// Where a bar's value label goes (the top of its text; the text hangs below, about 4 % of the axis):
/// just above the bar, or just above the limit line when the line would cross the label.
pub(crate) fn label_y(total: f64, limit: Option<f64>, top: f64) -> f64 {
    let y = total + top * 0.055;
    match limit {
        Some(l) if l >= total - top * 0.01 && l <= y + top * 0.01 => l.max(total) + top * 0.055,
        _ => y,
    }
}

#[cfg(test)]
mod tests {
    use super::label_y;

    /// The label's band: from its top down by the text height (4 % of the axis, with a margin).
    fn band(y: f64, top: f64) -> std::ops::Range<f64> {
        y - top * 0.05..y + top * 0.01
    }

    #[test]
    fn value_labels_stay_clear_of_the_limit_line() {
        let top = 100.0;
        for total in [10.0, 50.0, 79.0, 80.0, 81.0, 85.0] {
            let y = label_y(total, Some(80.0), top);
            assert!(!band(y, top).contains(&80.0), "total {total}: label at {y}");
            assert!(
                y - top * 0.05 >= total,
                "total {total}: the label overlaps its bar"
            );
            assert!(y <= top, "total {total}: the label leaves the plot");
        }
        assert_eq!(label_y(50.0, None, top), 55.5);
    }
}
