//! Serving: a serving scenario's deployments in one table (TTFT, TPOT, throughput, goodput under the SLO,
//! KV cache, preemptions — `moesim_sim::serving::simulate_serving`'s metrics), the selected deployment's
//! details, and its per-request TTFT, TPOT or latency as a histogram with the SLO's target marked.

use super::{percent, rate};
use crate::app::{App, ServingFigure, View};
use crate::session::Session;
use moesim_sim::serving::config::{Arrival, Slo};
use moesim_sim::serving::{ServingReport, ServingResult};
use moesim_sim::stats::percentile;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Text;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Cell, Paragraph, Row, Table, Widget, Wrap};

/// Milliseconds as the Serving view shows them: whole above 100 ms, one decimal above 10, two below.
pub fn ms(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// One line in the views that show step-level runs, for a serving scenario.
pub fn not_applicable(view: View, area: Rect, buf: &mut Buffer) {
    Paragraph::new(format!(
        "{}: does not apply to a serving scenario (workload.mode = \"serving\"); 7 Serving shows its \
         deployments, 6 Knobs its knobs",
        view.title()
    ))
    .wrap(Wrap { trim: true })
    .render(area, buf);
}

pub fn render(app: &App, s: &Session, area: Rect, buf: &mut Buffer) {
    let Some(report) = &s.serving else {
        Paragraph::new(
            "Serving: not a serving scenario; one with workload.mode = \"serving\" shows its deployments \
             here (TTFT, TPOT, goodput under the SLO)",
        )
        .wrap(Wrap { trim: true })
        .render(area, buf);
        return;
    };
    let n = report.results.len() as u16;
    let [top, details, bottom] = Layout::vertical([
        Constraint::Length(n + 4),
        Constraint::Length(2),
        Constraint::Min(0),
    ])
    .areas(area);
    table(app, s, report, top, buf);
    if let Some(r) = app.selected_deployment() {
        Paragraph::new(details_text(r))
            .wrap(Wrap { trim: true })
            .render(details, buf);
        histogram(app, r, slo(s), bottom, buf);
    }
}

fn slo(s: &Session) -> Option<&Slo> {
    s.scenario.serving.as_ref()?.slo.as_ref()
}

/// One column of the deployments table: two header lines, a width, and how much it matters when the
/// terminal is too narrow for all of them (lower first). The columns of a `group` (TTFT, TPOT) share one
/// label: the group's name over the first shown, "ms" over the second.
struct Column {
    group: &'static str,
    head: [&'static str; 2],
    width: u16,
    priority: u8,
    cell: fn(&ServingResult) -> Cell<'static>,
}

fn text(s: String) -> Cell<'static> {
    Cell::from(s)
}

const COLUMNS: [Column; 13] = [
    Column {
        group: "",
        head: ["", "done"],
        width: 5,
        priority: 6,
        cell: |r| text(r.metrics.completed.to_string()),
    },
    Column {
        group: "TTFT",
        head: ["", "p50"],
        width: 6,
        priority: 7,
        cell: |r| text(ms(r.metrics.ttft_ms.p50)),
    },
    Column {
        group: "TTFT",
        head: ["", "p90"],
        width: 6,
        priority: 1,
        cell: |r| text(ms(r.metrics.ttft_ms.p90)),
    },
    Column {
        group: "TTFT",
        head: ["", "p99"],
        width: 6,
        priority: 2,
        cell: |r| text(ms(r.metrics.ttft_ms.p99)),
    },
    Column {
        group: "TPOT",
        head: ["", "p50"],
        width: 5,
        priority: 9,
        cell: |r| text(ms(r.metrics.tpot_ms.p50)),
    },
    Column {
        group: "TPOT",
        head: ["", "p90"],
        width: 5,
        priority: 3,
        cell: |r| text(ms(r.metrics.tpot_ms.p90)),
    },
    Column {
        group: "TPOT",
        head: ["", "p99"],
        width: 5,
        priority: 8,
        cell: |r| text(ms(r.metrics.tpot_ms.p99)),
    },
    Column {
        group: "",
        head: ["out", "tok/s"],
        width: 7,
        priority: 5,
        cell: |r| text(rate(r.metrics.throughput.output_tokens_per_s)),
    },
    Column {
        group: "",
        head: ["", "/GPU"],
        width: 6,
        priority: 10,
        cell: |r| text(rate(r.metrics.throughput.output_tokens_per_s_per_gpu)),
    },
    Column {
        group: "",
        head: ["in", "SLO"],
        width: 6,
        priority: 4,
        cell: |r| match &r.metrics.goodput {
            Some(g) => {
                Cell::from(percent(g.attainment)).fg(if g.met { Color::Green } else { Color::Red })
            }
            None => text("—".into()),
        },
    },
    Column {
        group: "",
        head: ["goodput", "req/s"],
        width: 7,
        priority: 11,
        cell: |r| {
            text(
                r.metrics
                    .goodput
                    .as_ref()
                    .map_or("—".into(), |g| rate(g.requests_per_s)),
            )
        },
    },
    Column {
        group: "",
        head: ["KV", "peak"],
        width: 6,
        priority: 12,
        cell: |r| text(percent(r.metrics.kv_peak_utilization)),
    },
    Column {
        group: "",
        head: ["pre-", "empt"],
        width: 5,
        priority: 13,
        cell: |r| text(r.metrics.preemptions.to_string()),
    },
];

/// The columns that fit `width` (the marker and name columns take `fixed`), in table order.
fn fitting(width: u16, fixed: u16) -> Vec<&'static Column> {
    let mut by_priority: Vec<&Column> = COLUMNS.iter().collect();
    by_priority.sort_by_key(|c| c.priority);
    let mut used = fixed;
    let mut keep = Vec::new();
    for c in by_priority {
        if used + 1 + c.width <= width {
            used += 1 + c.width;
            keep.push(c.priority);
        }
    }
    COLUMNS
        .iter()
        .filter(|c| keep.contains(&c.priority))
        .collect()
}

fn table(app: &App, s: &Session, report: &ServingReport, area: Rect, buf: &mut Buffer) {
    let name = super::name_width(report.results.iter().map(|r| r.strategy.as_str()));
    let columns = fitting(area.width.saturating_sub(2), 2 + name);
    let header = Row::new(
        ["", "deployment"]
            .map(|h| Cell::from(Text::from(format!("\n{h}"))))
            .into_iter()
            .chain(columns.iter().enumerate().map(|(i, c)| {
                let top = if c.group.is_empty() {
                    c.head[0]
                } else {
                    // Its place among the shown columns of its group.
                    let k = columns[..i].iter().filter(|o| o.group == c.group).count();
                    [c.group, "ms", ""][k.min(2)]
                };
                Cell::from(Text::from(format!("{top}\n{}", c.head[1])))
            })),
    )
    .height(2)
    .bold();
    let rows = report.results.iter().enumerate().map(|(i, r)| {
        let mark = if i == app.deployment { "▶" } else { " " };
        let cells = [text(mark.into()), text(r.strategy.clone())]
            .into_iter()
            .chain(columns.iter().map(|c| (c.cell)(r)));
        let row = Row::new(cells);
        if i == app.deployment {
            row.style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    let widths = [Constraint::Length(1), Constraint::Length(name)]
        .into_iter()
        .chain(columns.iter().map(|c| Constraint::Length(c.width)));
    let sc = &s.scenario;
    let stream = sc.serving.as_ref().map_or(String::new(), |c| {
        let rate = match c.requests.arrival {
            Arrival::Poisson { rate_per_s } | Arrival::Gamma { rate_per_s, .. } => {
                format!("{rate_per_s} requests/s")
            }
            Arrival::Trace => "the trace's arrivals".into(),
        };
        match c.requests.duration_s {
            Some(d) => format!(" · {rate} for {d} s"),
            None => format!(" · {rate}"),
        }
    });
    let title = format!(
        " {} — {} on {} GPUs, serving{stream} (↑/↓ deployment) ",
        sc.name,
        sc.model.name,
        sc.cluster.gpus(),
    );
    Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::bordered().title(title))
        .render(area, buf);
}

fn details_text(r: &ServingResult) -> String {
    let m = &r.metrics;
    let d =
        |x: &moesim_sim::stats::Distribution| format!("{}/{}/{}", ms(x.p50), ms(x.p90), ms(x.p99));
    let mut t = format!(
        "{} ({}, {} GPUs): {} requests, {} completed, {} rejected over {:.1} s · queueing p50/p90/p99 {} ms · \
         latency {} ms · busy {} · KV {} blocks, mean {} peak {} · {} preemptions",
        r.strategy,
        r.kind,
        r.gpus,
        m.requests,
        m.completed,
        m.rejected,
        m.span_s,
        d(&m.queue_ms),
        d(&m.e2e_ms),
        percent(m.busy_fraction),
        m.kv_capacity_blocks,
        percent(m.kv_mean_utilization),
        percent(m.kv_peak_utilization),
        m.preemptions,
    );
    if let Some(x) = &r.kv_transfer_ms {
        t.push_str(&format!(" · KV transfer {} ms", d(x)));
    }
    t
}

/// The per-request values of `figure` (requests that never got that far are left out).
pub fn values(r: &ServingResult, figure: ServingFigure) -> Vec<f64> {
    r.records
        .iter()
        .filter_map(|x| match figure {
            ServingFigure::Ttft => x.ttft_ms,
            ServingFigure::Tpot => x.tpot_ms,
            ServingFigure::Latency => x.e2e_ms,
        })
        .filter(|v| v.is_finite())
        .collect()
}

/// Counts of `values` in `bins` equal bins over [0, top); values at or above `top` count in the last.
pub fn histogram_counts(values: &[f64], bins: usize, top: f64) -> Vec<u64> {
    let mut counts = vec![0u64; bins.max(1)];
    let last = counts.len() - 1;
    for &v in values {
        let b = if top > 0.0 {
            ((v / top * counts.len() as f64).floor().max(0.0) as usize).min(last)
        } else {
            0
        };
        counts[b] += 1;
    }
    counts
}

fn histogram(app: &App, r: &ServingResult, slo: Option<&Slo>, area: Rect, buf: &mut Buffer) {
    let figure = app.serving_figure;
    let mut v = values(r, figure);
    v.sort_by(f64::total_cmp);
    let target = match figure {
        ServingFigure::Ttft => slo.and_then(|s| s.ttft_ms),
        ServingFigure::Tpot => slo.and_then(|s| s.tpot_ms),
        ServingFigure::Latency => None,
    };
    let mark = match (target, slo) {
        (Some(t), Some(s)) => {
            let within = v.iter().filter(|x| **x <= t).count() as f64 / v.len().max(1) as f64;
            format!(
                " · SLO {} ≤ {} ms for {} % ({} within)",
                figure.name(),
                ms(t),
                s.percentile,
                percent(within)
            )
        }
        _ => " · no SLO target".into(),
    };
    let others: Vec<&str> = ServingFigure::ALL
        .iter()
        .filter(|f| **f != figure)
        .map(|f| f.name())
        .collect();
    let title = format!(
        " {}: {} per request (ms){mark} · {} requests, bars to p99, the rest in the last · ←/→ {} ",
        r.strategy,
        figure.name(),
        v.len(),
        others.join(", ")
    );
    let block = Block::bordered().title(title);
    if v.is_empty() {
        Paragraph::new("no request got this far")
            .block(block)
            .render(area, buf);
        return;
    }
    // Bars of 5 columns and a gap: labels fit ms() of up to five characters.
    let inner = area.width.saturating_sub(2);
    let bins = ((inner + 1) / 6).clamp(1, 40) as usize;
    // The bars span the values up to their 99th percentile, so that a few stragglers do not squash them.
    let top = percentile(&v, 0.99).max(1e-9);
    let counts = histogram_counts(&v, bins, top);
    let width = top / bins as f64;
    let bars: Vec<Bar> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (lo, hi) = (i as f64 * width, (i + 1) as f64 * width);
            let color = match target {
                Some(t) if hi <= t => Color::Green,
                Some(t) if lo < t => Color::Yellow,
                Some(_) => Color::Red,
                None => Color::Cyan,
            };
            Bar::default()
                .label(ms(hi))
                .value(c)
                .style(Style::new().fg(color))
        })
        .collect();
    BarChart::default()
        .block(block)
        .data(BarGroup::default().bars(&bars))
        .bar_width(5)
        .bar_gap(1)
        .render(area, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_keep_three_significant_digits() {
        assert_eq!(ms(1234.56), "1235");
        assert_eq!(ms(123.4), "123");
        assert_eq!(ms(45.67), "45.7");
        assert_eq!(ms(3.456), "3.46");
    }

    #[test]
    fn histogram_bins_values_and_puts_the_tail_in_the_last_bin() {
        let v = [0.5, 1.5, 1.6, 3.9, 10.0, 100.0];
        assert_eq!(histogram_counts(&v, 4, 4.0), vec![1, 2, 0, 3]);
        assert_eq!(histogram_counts(&v, 1, 0.0), vec![6]);
        assert_eq!(histogram_counts(&[], 3, 1.0), vec![0, 0, 0]);
    }
}
