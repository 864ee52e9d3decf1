//! Labelled points with a highlighted subset joined by a line: the serving cost Pareto front.

use super::{AXIS, CAPTION, TICKS, palette};
use crate::charts::line::{padded, short};
use crate::figure::{Chart, DrawResult};
use crate::font::FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One labelled point.
#[derive(Debug, Clone)]
pub struct LabelledPoint {
    pub label: String,
    pub x: f64,
    pub y: f64,
    /// Drawn filled and joined to the other highlighted points (in x order); others hollow.
    pub highlighted: bool,
}

/// A scatter of labelled points.
#[derive(Debug, Clone)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<LabelledPoint>,
    /// Legend entries of the highlighted and the other points.
    pub highlighted_name: String,
    pub other_name: String,
}

impl Chart for Scatter {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let finite: Vec<&LabelledPoint> = self
            .points
            .iter()
            .filter(|p| p.x.is_finite() && p.y.is_finite())
            .collect();
        let fold = |f: fn(&LabelledPoint) -> f64| {
            finite
                .iter()
                .map(|p| f(p))
                .fold(None, |acc: Option<(f64, f64)>, v| match acc {
                    None => Some((v, v)),
                    Some((a, b)) => Some((a.min(v), b.max(v))),
                })
                .unwrap_or((0.0, 1.0))
        };
        let (_, x1) = fold(|p| p.x);
        let (_, y1) = fold(|p| p.y);
        // Amounts: both axes from zero; room on the right and above for labels and the legend.
        let xr = padded(0.0, x1 * 1.15);
        let yr = padded(0.0, y1 * 1.25);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, CAPTION))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(84)
            .build_cartesian_2d(xr, yr)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .axis_desc_style((FAMILY, AXIS))
            .label_style((FAMILY, TICKS))
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let front_color = palette::series(0);
        let other_color = palette::series(7);
        let mut front: Vec<(f64, f64)> = finite
            .iter()
            .filter(|p| p.highlighted)
            .map(|p| (p.x, p.y))
            .collect();
        front.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(front.clone(), front_color.stroke_width(2)))?
            .label(self.highlighted_name.as_str())
            .legend(move |(x, y)| Circle::new((x + 12, y), 6, front_color.filled()));
        chart.draw_series(
            front
                .iter()
                .map(|p| Circle::new(*p, 7, front_color.filled())),
        )?;
        chart
            .draw_series(
                finite
                    .iter()
                    .filter(|p| !p.highlighted)
                    .map(|p| Circle::new((p.x, p.y), 7, other_color.stroke_width(2))),
            )?
            .label(self.other_name.as_str())
            .legend(move |(x, y)| Circle::new((x + 12, y), 6, other_color.stroke_width(2)));
        chart.draw_series(finite.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Text::new(
                    p.label.clone(),
                    (10, -26),
                    (FAMILY, TICKS).into_font().color(&BLACK),
                )
        }))?;
        chart
            .configure_series_labels()
            .label_font((FAMILY, TICKS))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    }
}
