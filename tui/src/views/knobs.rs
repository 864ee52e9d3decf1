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
    let n = s
        .serving
        .as_ref()
        .map_or(s.report.results.len(), |r| r.results.len()) as u16;
    let [list, overrides, diff] = Layout::vertical([
        Constraint::Length(knobs.len() as u16 + 2),
        Constraint::Length(3),
        Constraint::Min(n.min(4) + 3),
    ])
    .areas(area);
    let strategy = match &s.serving {
        Some(_) => app
            .selected_deployment()
            .map_or("", |r| r.strategy.as_str()),
        None => app.selected().map_or("", |r| r.strategy.as_str()),
    };
    let selects = if s.is_serving() {
        "deployment"
    } else {
        "strategy"
    };
    // Values up to 10 characters wide, more for a long one (a serving policy).
    let value_width = knobs
        .iter()
        .map(|k| k.value.chars().count() as u16)
        .max()
        .unwrap_or(0)
        .clamp(10, 16);
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
            Constraint::Length(value_width),
            Constraint::Fill(1),
        ],
    )
    .block(Block::bordered().title(format!(
        " knobs of {strategy} (←/→ {selects}, ↑/↓ knob, Enter edit, +/- step) "
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
    if let Some(report) = &s.serving {
        serving_diff(app, report, diff, buf);
        return;
    }
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

/// A serving scenario's previous run against this one, per deployment: TTFT p90 and output tokens/s.
fn serving_diff(
    app: &App,
    report: &moesim_sim::serving::ServingReport,
    area: Rect,
    buf: &mut Buffer,
) {
    use super::serving::ms;
    let before = |name: &str, f: fn(&moesim_sim::serving::ServingResult) -> f64| {
        app.previous_serving
            .as_ref()?
            .results
            .iter()
            .find(|r| r.strategy == name)
            .map(f)
    };
    let rows = report.results.iter().map(|r| {
        let ttft = before(&r.strategy, |p| p.metrics.ttft_ms.p90);
        let tps = before(&r.strategy, |p| p.metrics.throughput.output_tokens_per_s);
        let now_tps = r.metrics.throughput.output_tokens_per_s;
        Row::new([
            r.strategy.clone(),
            ttft.map_or("—".to_string(), ms),
            ms(r.metrics.ttft_ms.p90),
            delta(ttft, r.metrics.ttft_ms.p90),
            tps.map_or("—".to_string(), super::rate),
            super::rate(now_tps),
            delta(tps, now_tps),
        ])
    });
    let title = if app.previous_serving.is_some() {
        format!(
            " previous run → this run ({}) · TTFT p90 ms ",
            app.last_change.join(" ")
        )
    } else {
        " previous run → this run (change a knob to compare) · TTFT p90 ms ".into()
    };
    let name = super::name_width(report.results.iter().map(|r| r.strategy.as_str()));
    Table::new(
        rows,
        [
            Constraint::Length(name),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(7),
        ],
    )
    .header(
        Row::new([
            "deployment",
            "TTFT was",
            "TTFT now",
            "Δ",
            "tok/s was",
            "tok/s now",
            "Δ",
        ])
        .bold(),
    )
    .block(Block::bordered().title(title))
    .render(area, buf);
}
