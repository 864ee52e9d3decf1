//! Compare: every strategy in one table (the chosen one starred) and the selected strategy's phase
//! breakdown as bars.

use super::{delta, previous_figure};
use crate::app::App;
use crate::session::Session;
use moesim_sim::plan::exclusion;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Row, Table, Widget};

pub fn render(app: &App, s: &Session, area: Rect, buf: &mut Buffer) {
    let n = s.report.results.len() as u16;
    let [top, bottom] =
        Layout::vertical([Constraint::Length(n + 3), Constraint::Min(0)]).areas(area);
    table(app, s, top, buf);
    breakdown(app, bottom, buf);
}

fn table(app: &App, s: &Session, area: Rect, buf: &mut Buffer) {
    let header = Row::new([
        "",
        "strategy",
        "p50 ms",
        "p99 ms",
        "tokens/s",
        "Δ tok/s",
        "dropped",
        "mem GiB",
        "top straggler",
    ])
    .bold();
    let rows = s.report.results.iter().enumerate().map(|(i, r)| {
        let mark = match (Some(i) == s.chosen, i == app.strategy) {
            (true, true) => "▶★",
            (true, false) => " ★",
            (false, true) => "▶ ",
            (false, false) => "  ",
        };
        let straggler = r.stragglers.first().map_or("balanced".to_string(), |st| {
            format!(
                "r{} {:.0}% {}",
                st.rank,
                st.critical_share * 100.0,
                st.cause.as_str()
            )
        });
        let before = previous_figure(app.previous.as_ref(), &r.strategy, |p| p.tokens_per_s);
        let row = Row::new([
            mark.to_string(),
            r.strategy.clone(),
            format!("{:.2}", r.step_time_ms.p50),
            format!("{:.2}", r.step_time_ms.p99),
            super::rate(r.tokens_per_s),
            delta(before, r.tokens_per_s),
            super::percent(r.dropped_fraction),
            format!(
                "{:.1}{}",
                r.memory_peak_gib,
                if r.oom { " OOM" } else { "" }
            ),
            straggler,
        ]);
        if i == app.strategy {
            row.style(Style::new().add_modifier(Modifier::REVERSED))
        } else if exclusion(r, &s.scenario).is_some() {
            // Out of memory, or dropping more than the objective allows: never chosen.
            row.fg(Color::Red)
        } else {
            row
        }
    });
    // The strategy column fits the longest name (up to 24), the straggler column takes the rest.
    let name = s
        .report
        .results
        .iter()
        .map(|r| r.strategy.chars().count())
        .max()
        .unwrap_or(8)
        .clamp(8, 24) as u16;
    let widths = [
        Constraint::Length(2),
        Constraint::Length(name),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let title = format!(
        " {} — {} on {} GPUs · objective {} ",
        s.scenario.name,
        s.scenario.model.name,
        s.scenario.cluster.gpus(),
        serde_json::to_value(s.scenario.objective.metric)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn breakdown(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let bars: Vec<Bar> = r
        .breakdown_ms
        .iter()
        .map(|(phase, ms)| {
            Bar::default()
                .label(phase.clone())
                .value((ms * 1000.0).round() as u64)
                .text_value(format!("{ms:.2} ms"))
        })
        .collect();
    BarChart::default()
        .direction(Direction::Horizontal)
        .block(Block::bordered().title(format!(
            " {}: critical-path time per phase (mean per iteration) ",
            r.strategy
        )))
        .data(BarGroup::default().bars(&bars))
        .bar_width(1)
        .bar_gap(0)
        .bar_style(Style::new().fg(Color::Cyan))
        .render(area, buf);
}
