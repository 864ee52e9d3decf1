//! The comparison table printed by `simulate` and `plan`.

use moesim_reports::inputs::Inputs;
use moesim_reports::numbers::{percent, rate};
use moesim_sim::Scenario;
use moesim_sim::plan::exclusion;
use moesim_sim::result::StrategyResult;

/// The line above the table: scenario, model, cluster and workload.
pub fn headline(inputs: &Inputs) -> String {
    let s = &inputs.scenario;
    format!(
        "{} — {} on {} × {} ({} GPUs), {}\n",
        s.name,
        s.model.name,
        s.cluster.nodes,
        s.cluster.name,
        s.cluster.gpus(),
        inputs.workload()
    )
}

/// Renders one row per strategy; `chosen` is marked with `*`. `tokens/s` counts every token of the batch
/// (dropped assignments included); `dropped` is the fraction of (token, expert) assignments the capacity
/// factor dropped. Strategies the objective excludes (out of memory, or dropping more than
/// `objective.max_dropped_fraction`) are listed under the table with the reason.
pub fn comparison(results: &[StrategyResult], chosen: Option<usize>, s: &Scenario) -> String {
    let header = [
        "",
        "strategy",
        "kind",
        "p50 ms",
        "p99 ms",
        "tokens/s",
        "dropped",
        "mem GiB",
        "OOM",
        "top straggler",
    ];
    let rows: Vec<Vec<String>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let straggler = r.stragglers.first().map_or_else(
                || "none (balanced)".to_string(),
                |s| {
                    format!(
                        "rank {} ({:.0}%, {})",
                        s.rank,
                        100.0 * s.critical_share,
                        s.cause.as_str()
                    )
                },
            );
            vec![
                if Some(i) == chosen {
                    "*".into()
                } else {
                    String::new()
                },
                r.strategy.clone(),
                r.kind.clone(),
                format!("{:.3}", r.step_time_ms.p50),
                format!("{:.3}", r.step_time_ms.p99),
                rate(r.tokens_per_s),
                percent(r.dropped_fraction),
                format!("{:.1}", r.memory_peak_gib),
                if r.oom { "OOM".into() } else { "-".into() },
                straggler,
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    let excluded: Vec<String> = results
        .iter()
        .filter_map(|r| exclusion(r, s).map(|e| format!("{}: {e}", r.strategy)))
        .collect();
    if !excluded.is_empty() {
        out.push_str(&format!("not eligible: {}\n", excluded.join("; ")));
    }
    out
}

/// Mean critical-path breakdown of one result, as `phase ms` pairs.
pub fn breakdown(r: &StrategyResult) -> String {
    r.breakdown_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.3} ms"))
        .collect::<Vec<_>>()
        .join(", ")
}
