//! Knobs: the selected strategy's parameters and the GPU count, edited in place; each change re-simulates
//! in the background, and the table below compares the new run with the previous one.

use super::{delta, previous_figure};
use crate::app::App;
use crate::session::Session;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::widgets::{Block, Paragraph, Row, Table, Widget};

pub fn render(app: &App, s: &Session, area: Rect, buf: &mut Buffer) {
    let knobs = app.knobs();
    let n = s.report.results.len() as u16;
    let [list, overrides, diff] = Layout::vertical([
        Constraint::Length(knobs.len() as u16 + 2),
        Constraint::Length(3),
        Constraint::Min(n.min(4) + 3),
    ])
    .areas(area);
    let strategy = app.selected().map_or("", |r| r.strategy.as_str());
    let rows = knobs.iter().enumerate().map(|(i, k)| {
        let value = match (&app.edit, i == app.knob) {
            (Some(buf), true) => format!("{buf}▏"),
            _ => k.value.clone(),
        };
        let row = Row::new([k.label.to_string(), value, k.key.clone()]);
        if i == app.knob {
            row.style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    Table::new(
        rows,
        [
            Constraint::Length(32),
            Constraint::Length(10),
            Constraint::Fill(1),
        ],
    )
    .block(Block::bordered().title(format!(
        " knobs of {strategy} (←/→ strategy, ↑/↓ knob, Enter edit, +/- step) "
    )))
    .render(list, buf);
    let applied = if s.request.overrides.is_empty() {
        "none".to_string()
    } else {
        s.request.overrides.join("  ")
    };
    Paragraph::new(applied)
        .block(Block::bordered().title(" overrides in effect "))
        .render(overrides, buf);
    let prev = app.previous.as_ref();
    let rows = s.report.results.iter().map(|r| {
        let tps = previous_figure(prev, &r.strategy, |p| p.tokens_per_s);
        let p50 = previous_figure(prev, &r.strategy, |p| p.step_time_ms.p50);
        let fmt = |v: Option<f64>, d: usize| v.map_or("—".to_string(), |v| format!("{v:.d$}"));
        Row::new([
            r.strategy.clone(),
            tps.map_or("—".to_string(), super::rate),
            super::rate(r.tokens_per_s),
            delta(tps, r.tokens_per_s),
            fmt(p50, 2),
            format!("{:.2}", r.step_time_ms.p50),
            delta(p50, r.step_time_ms.p50),
        ])
    });
    let title = if app.previous.is_some() {
        format!(" previous run → this run ({}) ", app.last_change.join(" "))
    } else {
        " previous run → this run (change a knob to compare) ".into()
    };
    let name = s
        .report
        .results
        .iter()
        .map(|r| r.strategy.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 24) as u16;
    Table::new(
        rows,
        [
            Constraint::Length(name),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new([
            "strategy",
            "tok/s was",
            "tok/s now",
            "Δ",
            "p50 was",
            "p50 now",
            "Δ",
        ])
        .bold(),
    )
    .block(Block::bordered().title(title))
    .render(diff, buf);
}
