//! Trace: the workload's skew, drift, locality and cache hit-rate curves.

use crate::session::Session;
use crate::workload::WorkloadSummary;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, Paragraph, Widget, Wrap};

pub fn render(s: &Session, area: Rect, buf: &mut Buffer) {
    match &s.workload {
        Ok(w) => summary(w, area, buf),
        Err(e) => Paragraph::new(format!("cannot analyse the workload: {e}"))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" trace "))
            .render(area, buf),
    }
}

fn summary(w: &WorkloadSummary, area: Rect, buf: &mut Buffer) {
    let [text, chart] =
        Layout::horizontal([Constraint::Length(38), Constraint::Min(0)]).areas(area);
    let mut lines = vec![
        Line::from(format!("{} layers × {} experts", w.layers, w.experts)),
        Line::from(format!("load max/mean   {:.2}", w.load_max_over_mean)),
        Line::from(format!("Gini            {:.3}", w.gini)),
        Line::from(format!("CV              {:.3}", w.cv)),
        Line::from(format!("rank max/mean   {:.2}", w.rank_max_over_mean)),
        Line::from(match w.locality {
            Some(l) => format!("locality        {l:.3}"),
            None => "locality        n/a (no token order)".into(),
        }),
        Line::from("drift (TV distance):"),
    ];
    lines.extend(
        w.drift
            .iter()
            .map(|(lag, d)| Line::from(format!("  lag {lag:<10}{d:.4}"))),
    );
    lines.push(Line::from("per layer max/mean, Gini:"));
    lines.extend(
        w.per_layer
            .iter()
            .enumerate()
            .map(|(i, (m, g))| Line::from(format!("  L{i:<3} {m:>6.2} {g:>7.3}"))),
    );
    Paragraph::new(lines)
        .block(Block::bordered().title(format!(" {} ", w.source)))
        .render(text, buf);
    let colors = [Color::Cyan, Color::Yellow, Color::Green];
    let datasets: Vec<Dataset> = w
        .curves
        .iter()
        .zip(colors.iter().cycle())
        .map(|(c, &color)| {
            Dataset::default()
                .name(c.name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(color))
                .data(&c.points)
        })
        .collect();
    let max_x = w
        .curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    Chart::new(datasets)
        .block(Block::bordered().title(format!(
            " hit rate ({}) vs experts cached per layer ",
            w.curves
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .x_axis(
            Axis::default()
                .bounds([0.0, max_x])
                .labels(["0".to_string(), format!("{max_x:.0}")]),
        )
        .y_axis(Axis::default().bounds([0.0, 1.0]).labels(["0", "0.5", "1"]))
        .render(chart, buf);
}
