//! The comparison table printed by `simulate` and `plan`.

use moesim_sim::result::StrategyResult;

/// Renders one row per strategy; `chosen` is marked with `*`.
pub fn comparison(results: &[StrategyResult], chosen: Option<usize>) -> String {
    let header = [
        "",
        "strategy",
        "kind",
        "p50 ms",
        "p99 ms",
        "tokens/s",
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
                format!("{:.0}", r.tokens_per_s),
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
