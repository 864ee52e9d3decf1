//! A merged sweep: throughput per point and strategy, and one table row per point and strategy.

use super::Section;
use super::format::{f, heading};
use crate::charts::{LineChart, Series};
use crate::document::Block;
use crate::figure::{SIZE, render};
use crate::sweep::SweepResult;

/// The sweep's heading, a throughput chart over its points, and the table of points.
pub(super) fn section(sec: &mut Section, name: &str, sweep: &SweepResult) -> Result<(), String> {
    let mut rows = Vec::new();
    for p in &sweep.points {
        for r in &p.report.results {
            rows.push(vec![
                p.index.to_string(),
                p.scenario.clone(),
                if p.overrides.is_empty() {
                    "-".into()
                } else {
                    p.overrides.join(" ")
                },
                r.strategy.clone(),
                f(r.step_time_ms.mean, 3),
                f(r.step_time_ms.p99, 3),
                crate::numbers::rate(r.tokens_per_s),
                crate::numbers::percent(r.dropped_fraction),
                f(r.memory_peak_gib, 2),
                if r.oom { "OOM".into() } else { "-".into() },
            ]);
        }
    }
    sec.push(heading(1, format!("Sweep {name}")));
    sec.push(Block::Paragraph(format!(
        "{} points, merged from {} shards.",
        sweep.points.len(),
        sweep.shard_count
    )));
    // One line per strategy name, over the points that have it.
    let mut names: Vec<&str> = Vec::new();
    for r in sweep.points.iter().flat_map(|p| &p.report.results) {
        if !names.contains(&r.strategy.as_str()) {
            names.push(&r.strategy);
        }
    }
    let chart = LineChart {
        title: format!("Sweep {name}: throughput per point"),
        x_label: "point (see the table)".into(),
        y_label: "tokens/s".into(),
        series: names
            .iter()
            .map(|n| Series {
                name: n.to_string(),
                points: sweep
                    .points
                    .iter()
                    .flat_map(|p| {
                        p.report
                            .results
                            .iter()
                            .filter(|r| r.strategy == *n)
                            .map(|r| (p.index as f64, r.tokens_per_s))
                    })
                    .collect(),
            })
            .collect(),
        limit: None,
        y_from_zero: true,
        steps: false,
    };
    sec.figure(render(
        &chart,
        "throughput",
        "Tokens per second of every point and strategy; the table below names each point's settings.",
        SIZE,
    )?);
    sec.push(Block::Table {
        header: [
            "point", "scenario", "settings", "strategy", "mean ms", "p99 ms", "tokens/s",
            "dropped", "GiB/GPU", "OOM",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    Ok(())
}
