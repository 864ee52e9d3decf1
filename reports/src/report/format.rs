//! Number formats and the tables the tests read back.

use crate::collect::ScenarioData;
use crate::document::Block;
use crate::numbers::{percent, rate};
use moesim_sim::result::StrategyResult;

/// A value's name as scenario files spell it (`tokens-per-s`, `training`).
pub(super) fn spelled(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// `v` with `digits` decimals, as every table shows numbers.
pub(super) fn f(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

/// Header and rows of the strategy summary table (tests read the numbers back from it).
pub fn summary_table(d: &ScenarioData) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "strategy",
        "kind",
        "chosen",
        "mean ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "tokens/s",
        "dropped",
        "peak GiB/GPU",
        "OOM",
        "top straggler",
    ]
    .map(String::from)
    .to_vec();
    let rows = d
        .report
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                r.strategy.clone(),
                r.kind.clone(),
                if d.chosen == Some(i) {
                    "yes".into()
                } else {
                    String::new()
                },
                f(r.step_time_ms.mean, 3),
                f(r.step_time_ms.p50, 3),
                f(r.step_time_ms.p90, 3),
                f(r.step_time_ms.p99, 3),
                rate(r.tokens_per_s),
                percent(r.dropped_fraction),
                f(r.memory_peak_gib, 2),
                if r.oom { "OOM".into() } else { "-".into() },
                straggler(r),
            ]
        })
        .collect();
    (header, rows)
}

fn straggler(r: &StrategyResult) -> String {
    r.stragglers.first().map_or_else(
        || "none (balanced)".into(),
        |s| {
            format!(
                "rank {} ({:.0}% of iterations, {})",
                s.rank,
                100.0 * s.critical_share,
                s.cause.as_str()
            )
        },
    )
}

/// Header and rows of the capacity table.
pub fn capacity_table(d: &ScenarioData) -> (Vec<String>, Vec<Vec<String>>) {
    let header = [
        "GPUs",
        "nodes",
        "strategy",
        "mean ms",
        "p99 ms",
        "tokens/s",
        "dropped",
        "GiB/GPU",
        "total GiB",
        "OOM",
    ]
    .map(String::from)
    .to_vec();
    let rows = d
        .capacity
        .iter()
        .map(|p| {
            vec![
                p.gpus.to_string(),
                p.nodes.to_string(),
                p.strategy.clone(),
                f(p.step_time_ms_mean, 3),
                f(p.step_time_ms_p99, 3),
                rate(p.tokens_per_s),
                percent(p.dropped_fraction),
                f(p.memory_peak_gib, 2),
                f(p.total_memory_gib, 1),
                if p.oom { "OOM".into() } else { "-".into() },
            ]
        })
        .collect();
    (header, rows)
}

/// A table block from (header, rows).
pub(super) fn table((header, rows): (Vec<String>, Vec<Vec<String>>)) -> Block {
    Block::Table { header, rows }
}

/// A heading block.
pub(super) fn heading(level: u8, text: impl Into<String>) -> Block {
    Block::Heading {
        level,
        text: text.into(),
    }
}
