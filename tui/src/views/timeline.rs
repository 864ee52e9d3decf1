//! Timeline: one iteration's operations as a Gantt chart, one row per rank and stream (compute, the
//! communication stream that drives its links, copies), and under the flow network backend one row per
//! link that carried traffic, busy (`=`) while any flow crossed it; `+`/`-` zoom, `<`/`>` pan, ↑/↓ scroll
//! rows.

use crate::app::App;
use crate::session::Session;
use moesim_sim::engine::to_ms;
use moesim_sim::iteration::Stream;
use moesim_sim::phase::Phase;
use moesim_sim::timeline::{IterationTimeline, LinkUse, stream_name};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

/// The glyph and colour of a phase in the chart.
pub fn glyph(p: Phase) -> (char, Color) {
    match p {
        Phase::DenseCompute => ('d', Color::Blue),
        Phase::Dispatch => ('>', Color::Yellow),
        Phase::ExpertCompute => ('E', Color::Green),
        Phase::Combine => ('<', Color::Magenta),
        Phase::GradSync => ('g', Color::Cyan),
        Phase::Optimizer => ('o', Color::White),
        Phase::Barrier => ('|', Color::DarkGray),
        Phase::Spag => ('s', Color::LightYellow),
        Phase::Sprs => ('r', Color::LightMagenta),
        Phase::ExpertFetch => ('f', Color::LightRed),
        Phase::Reshard => ('h', Color::LightBlue),
        Phase::Rebalance => ('b', Color::LightGreen),
        Phase::PipelineSend => ('p', Color::LightCyan),
        Phase::TensorParallel => ('t', Color::Gray),
    }
}

fn stream_order(s: Stream) -> usize {
    s.index()
}

pub fn render(app: &App, _s: &Session, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let block = Block::bordered().title(format!(
        " {} · iteration {} of 0..{} · zoom ×{} (+/-, </> pan, ←/→ iteration, ↑/↓ rows) ",
        r.strategy,
        app.iteration,
        r.per_iteration.len(),
        app.zoom
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    match app.current_timeline() {
        Some(Ok(t)) => gantt(app, t, inner, buf),
        Some(Err(e)) => Paragraph::new(e.as_str())
            .wrap(Wrap { trim: false })
            .render(inner, buf),
        None => Paragraph::new("computing…").render(inner, buf),
    }
}

const LABEL: u16 = 12;

/// A chart row: a rank's stream, or a link of the network (flow backend).
enum Row<'a> {
    Stream(usize, Stream),
    Link(u32, &'a str),
}

/// A link's name fitted to the label column (`gpu3→switch0` → `gpu3→sw0`).
fn link_label(name: &str) -> String {
    let short: String = name
        .replace("switch", "sw")
        .chars()
        .take(LABEL as usize - 1)
        .collect();
    format!("{short:<w$}", w = LABEL as usize)
}

fn gantt(app: &App, t: &IterationTimeline, area: Rect, buf: &mut Buffer) {
    let [axis, rows_area, legend] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut op_rows: Vec<(usize, Stream)> = t.ops.iter().map(|o| (o.rank, o.stream)).collect();
    op_rows.sort_by_key(|&(r, s)| (r, stream_order(s)));
    op_rows.dedup();
    let mut link_rows: Vec<(u32, &str)> =
        t.links.iter().map(|l| (l.link, l.name.as_str())).collect();
    link_rows.sort_unstable();
    link_rows.dedup();
    let rows: Vec<Row> = op_rows
        .into_iter()
        .map(|(rank, stream)| Row::Stream(rank, stream))
        .chain(link_rows.into_iter().map(|(l, name)| Row::Link(l, name)))
        .collect();
    let cols = area.width.saturating_sub(LABEL) as f64;
    let step = t.step.max(1) as f64;
    let from = app.pan * step;
    let span = step / app.zoom as f64;
    let to_col = |time: u64| ((time as f64 - from) / span * cols).floor();
    // The cells [a, b] an interval covers, at least one so short ones stay visible; None when off screen.
    let cells = |start: u64, finish: u64| -> Option<(u16, u16)> {
        let (a, b) = (to_col(start), to_col(finish));
        if b < 0.0 || a >= cols {
            return None;
        }
        let a = a.max(0.0) as u16;
        Some((a, (b.min(cols - 1.0) as u16).max(a)))
    };
    let offset = app.row_offset.min(rows.len().saturating_sub(1));
    let shown = (rows.len() - offset).min(rows_area.height as usize);
    let range = format!("rows {}–{}/{}", offset + 1, offset + shown, rows.len());
    Line::from(format!(
        "{range:<w$}{:.3} ms{:>pad$}{:.3} ms",
        to_ms(from as u64),
        "",
        to_ms((from + span) as u64),
        w = LABEL as usize,
        pad = (cols as usize).saturating_sub(20)
    ))
    .render(axis, buf);
    for (y, row) in rows
        .iter()
        .skip(offset)
        .take(rows_area.height as usize)
        .enumerate()
    {
        let y = rows_area.y + y as u16;
        match *row {
            Row::Stream(rank, stream) => {
                buf.set_string(
                    rows_area.x,
                    y,
                    format!("r{rank:<3}{:<8}", stream_name(stream)),
                    Style::new(),
                );
                for op in t
                    .ops
                    .iter()
                    .filter(|o| o.rank == rank && o.stream == stream)
                {
                    let Some((a, b)) = cells(op.start, op.finish) else {
                        continue;
                    };
                    let (ch, color) = glyph(op.phase);
                    for x in a..=b {
                        buf[(rows_area.x + LABEL + x, y)].set_char(ch).set_fg(color);
                    }
                }
            }
            Row::Link(link, name) => {
                buf.set_string(rows_area.x, y, link_label(name), Style::new());
                for u in t.links.iter().filter(|u: &&LinkUse| u.link == link) {
                    let Some((a, b)) = cells(u.start, u.finish) else {
                        continue;
                    };
                    for x in a..=b {
                        buf[(rows_area.x + LABEL + x, y)]
                            .set_char('=')
                            .set_fg(Color::Gray);
                    }
                }
            }
        }
    }
    let mut phases: Vec<Phase> = t.ops.iter().map(|o| o.phase).collect();
    phases.sort_by_key(|p| p.index());
    phases.dedup();
    let spans: Vec<Span> = phases
        .iter()
        .flat_map(|&p| {
            let (ch, color) = glyph(p);
            [
                Span::styled(ch.to_string(), Style::new().fg(color)),
                Span::from(format!(" {}  ", p.name())),
            ]
        })
        .collect();
    Line::from(spans).render(legend, buf);
}
