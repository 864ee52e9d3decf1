//! Heatmaps: a value per (column, row) cell, e.g. per-rank time over iterations or experts × GPUs.

use super::line::short;
use super::{AXIS, CAPTION, TICKS, palette};
use crate::figure::{Chart, DrawResult};
use crate::font::FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// `values[row][column]`; `None` cells stay white (e.g. an expert not on that GPU).
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// What the colour means, with its unit.
    pub value_label: String,
    pub values: Vec<Vec<Option<f64>>>,
}

impl Heatmap {
    /// The finite range of the values (`(0, 1)` when there are none).
    pub fn range(&self) -> (f64, f64) {
        let mut it = self.values.iter().flatten().flatten().copied();
        let first = it.find(|v| v.is_finite());
        match first {
            None => (0.0, 1.0),
            Some(f) => it
                .filter(|v| v.is_finite())
                .fold((f, f), |(lo, hi), v| (lo.min(v), hi.max(v))),
        }
    }
}

/// Labels whole-numbered ticks only (cell indices).
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 && *v >= 0.0 {
        format!("{:.0}", v.round())
    } else {
        String::new()
    }
}

impl Chart for Heatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let rows = self.values.len().max(1);
        let cols = self.values.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let (lo, hi) = self.range();
        let span = if hi > lo { hi - lo } else { 1.0 };
        let bar_w = 150;
        let (plot, bar) = root.split_horizontally(root.dim_in_pixel().0 as i32 - bar_w);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FAMILY, CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(70)
            // Cells are centred on integers, so tick labels name the cell beside them.
            .build_cartesian_2d(-0.5f64..cols as f64 - 0.5, -0.5f64..rows as f64 - 0.5)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FAMILY, AXIS))
            .label_style((FAMILY, TICKS))
            .x_labels(cols.min(12))
            .y_labels(rows.min(16))
            .x_label_formatter(&integer_label)
            .y_label_formatter(&integer_label)
            .draw()?;
        chart.draw_series(self.values.iter().enumerate().flat_map(|(r, row)| {
            row.iter().enumerate().filter_map(move |(c, v)| {
                let v = (*v)?;
                let color = palette::sequential((v - lo) / span);
                Some(Rectangle::new(
                    [
                        (c as f64 - 0.5, r as f64 - 0.5),
                        (c as f64 + 0.5, r as f64 + 0.5),
                    ],
                    color.filled(),
                ))
            })
        }))?;
        // Colour bar with its range, so cells can be read as numbers.
        let (_, h) = bar.dim_in_pixel();
        let (top, bottom) = (70i32, h as i32 - 80);
        let steps = 64;
        for i in 0..steps {
            let y0 = bottom - (bottom - top) * (i + 1) / steps;
            let y1 = bottom - (bottom - top) * i / steps;
            bar.draw(&Rectangle::new(
                [(16, y0), (44, y1)],
                palette::sequential(i as f64 / (steps - 1) as f64).filled(),
            ))?;
        }
        let font = (FAMILY, TICKS).into_font();
        bar.draw(&Text::new(short(hi), (50, top - 4), font.clone()))?;
        bar.draw(&Text::new(short(lo), (50, bottom - 14), font.clone()))?;
        bar.draw(&Text::new(
            self.value_label.as_str(),
            (4, top - 40),
            font.clone(),
        ))?;
        Ok(())
    }
}
