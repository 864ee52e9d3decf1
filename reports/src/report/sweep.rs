//! A merged sweep: one row per point and strategy.

use super::format::{f, heading};
use crate::document::Block;
use crate::sweep::SweepResult;

/// The sweep's heading, size and table of points.
pub(super) fn section(name: &str, sweep: &SweepResult) -> Vec<Block> {
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
                f(r.tokens_per_s, 0),
                f(r.memory_peak_gib, 2),
                if r.oom { "OOM".into() } else { "-".into() },
            ]);
        }
    }
    vec![
        heading(1, format!("Sweep {name}")),
        Block::Paragraph(format!(
            "{} points, merged from {} shards.",
            sweep.points.len(),
            sweep.shard_count
        )),
        Block::Table {
            header: [
                "point", "scenario", "settings", "strategy", "mean ms", "p99 ms", "tokens/s",
                "GiB/GPU", "OOM",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        },
    ]
}
