//! Ranks: the selected iteration's per-rank load and time, step time over iterations as a sparkline, and
//! each iteration's critical-path rank and cause.

use crate::app::App;
use crate::session::Session;
use moesim_sim::engine::to_ms;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table, Widget};

pub fn render(app: &App, _s: &Session, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let [spark, rest] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(area);
    let it = app.iteration;
    let cur = r.per_iteration.get(it);
    let title = match cur {
        Some(c) => format!(
            " {} · iteration {}/{}: {:.2} ms · critical {} (←/→ scrub) ",
            r.strategy,
            it + 1,
            r.per_iteration.len(),
            c.step_ms,
            critical(c.critical_rank, c.cause)
        ),
        None => format!(" {} ", r.strategy),
    };
    // Bars relative to the fastest iteration so small differences show.
    let min = r
        .per_iteration
        .iter()
        .map(|i| i.step_ms)
        .fold(f64::INFINITY, f64::min);
    let data: Vec<u64> = r
        .per_iteration
        .iter()
        .map(|i| ((i.step_ms - min * 0.98) * 1000.0).max(1.0) as u64)
        .collect();
    let width = spark.width.saturating_sub(2) as usize;
    // Keep the selected iteration on screen when there are more iterations than columns.
    let start = it.saturating_sub(width.saturating_sub(1));
    Sparkline::default()
        .block(Block::bordered().title(title))
        .data(&data[start.min(data.len())..])
        .style(Style::new().fg(Color::Green))
        .render(spark, buf);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(rest);
    per_rank(app, left, buf);
    per_iteration(app, right, buf);
}

fn critical(rank: Option<usize>, cause: Option<moesim_sim::collective::Cause>) -> String {
    use moesim_sim::collective::Cause;
    // Short cause names so the per-iteration column fits an 80-column terminal.
    let short = |c: Cause| match c {
        Cause::InboundLink => "in link",
        Cause::OutboundLink => "out link",
        other => other.as_str(),
    };
    match (rank, cause) {
        (Some(r), Some(c)) => format!("r{r} ({})", short(c)),
        (Some(r), None) => format!("r{r}"),
        _ => "balanced".into(),
    }
}

fn per_rank(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let header = Row::new(["rank", "tokens", "busy ms", "idle ms", "load"]).bold();
    let (rows, title): (Vec<(usize, f64, f64, f64)>, String) = match app.current_timeline() {
        Some(Ok(t)) => {
            let step = to_ms(t.step);
            (
                t.busy
                    .iter()
                    .enumerate()
                    .map(|(rank, &b)| {
                        let busy = to_ms(b);
                        (rank, t.tokens_received[rank] as f64, busy, step - busy)
                    })
                    .collect(),
                format!(" ranks in iteration {} ", app.iteration),
            )
        }
        other => (
            r.per_rank
                .iter()
                .map(|p| (p.rank, p.tokens_received, p.busy_ms, p.idle_ms))
                .collect(),
            match other {
                Some(Err(_)) => " ranks: means over iterations (no per-iteration data) ".into(),
                _ => " ranks: means over iterations ".into(),
            },
        ),
    };
    let max_tokens = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let critical = r
        .per_iteration
        .get(app.iteration)
        .and_then(|i| i.critical_rank);
    let rows = rows.iter().map(|&(rank, tokens, busy, idle)| {
        let bar = "█".repeat(((tokens / max_tokens) * 10.0).round() as usize);
        let row = Row::new([
            format!("r{rank}"),
            format!("{tokens:.0}"),
            format!("{busy:.2}"),
            format!("{idle:.2}"),
            bar,
        ]);
        if Some(rank) == critical {
            row.style(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
        } else {
            row
        }
    });
    Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Fill(1),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title))
    .render(area, buf);
}

fn per_iteration(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let visible = area.height.saturating_sub(3) as usize;
    let start = app
        .iteration
        .saturating_sub(visible / 2)
        .min(r.per_iteration.len().saturating_sub(visible));
    let rows = r
        .per_iteration
        .iter()
        .enumerate()
        .skip(start)
        .take(visible)
        .map(|(i, it)| {
            let row = Row::new([
                format!("{i}"),
                format!("{:.2}", it.step_ms),
                critical(it.critical_rank, it.cause),
            ]);
            if i == app.iteration {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        });
    if r.per_iteration.is_empty() {
        Paragraph::new("no iterations")
            .block(Block::bordered())
            .render(area, buf);
        return;
    }
    Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(["it", "step ms", "critical path"]).bold())
    .block(Block::bordered().title(" per iteration "))
    .render(area, buf);
}
