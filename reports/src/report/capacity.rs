//! Capacity: throughput, step time and memory per GPU against cluster size.

use super::format::{capacity_table, heading, table};
use super::{ReportOptions, Section};
use crate::charts::{LineChart, Series};
use crate::collect::ScenarioData;
use crate::document::Block;
use crate::figure::{SIZE, render};
use std::collections::BTreeSet;

/// Capacity curves, the GPUs needed for a target, and the table of points.
pub(super) fn section(
    sec: &mut Section,
    d: &ScenarioData,
    opts: &ReportOptions,
) -> Result<(), String> {
    let results = &d.report.results;
    let limit = d.scenario.objective.memory_limit_gib;
    if !d.capacity.is_empty() {
        sec.push(heading(2, "Capacity: how many GPUs"));
        sec.push(Block::Paragraph(
            "Each point is a separate simulation of the scenario at that cluster size (--set cluster.nodes=N), \
             on its synthetic workload; a strategy whose EP groups cannot tile a size has no point there."
                .into(),
        ));
        let names: Vec<String> = d
            .capacity
            .iter()
            .map(|p| p.strategy.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let ordered: Vec<&String> = results
            .iter()
            .map(|r| &r.strategy)
            .filter(|n| names.contains(n))
            .collect();
        let curve = |value: &dyn Fn(&crate::capacity::CapacityPoint) -> f64| -> Vec<Series> {
            ordered
                .iter()
                .map(|n| Series {
                    name: n.to_string(),
                    points: d
                        .capacity
                        .iter()
                        .filter(|p| &&p.strategy == n)
                        .map(|p| (p.gpus as f64, value(p)))
                        .collect(),
                })
                .collect()
        };
        let tput = LineChart {
            title: "Throughput vs cluster size".into(),
            x_label: "GPUs".into(),
            y_label: "tokens/s".into(),
            series: curve(&|p| p.tokens_per_s),
            limit: opts
                .target_tokens_per_s
                .map(|t| (t, format!("target {}", crate::charts::line::short(t)))),
            y_from_zero: true,
            steps: false,
        };
        sec.figure(render(
            &tput,
            "capacity_throughput",
            "Tokens per second at each cluster size (each point a separate simulation).",
            SIZE,
        )?);
        let step = LineChart {
            title: "Step time vs cluster size".into(),
            x_label: "GPUs".into(),
            y_label: "mean step time (ms)".into(),
            series: curve(&|p| p.step_time_ms_mean),
            limit: None,
            y_from_zero: true,
            steps: false,
        };
        sec.figure(render(
            &step,
            "capacity_step_time",
            "Mean step time at each cluster size.",
            SIZE,
        )?);
        let memc = LineChart {
            title: "Memory per GPU vs cluster size".into(),
            x_label: "GPUs".into(),
            y_label: "GiB per GPU".into(),
            series: curve(&|p| p.memory_peak_gib),
            limit: Some((limit, format!("memory limit {limit:.0} GiB"))),
            y_from_zero: true,
            steps: false,
        };
        sec.figure(render(
            &memc,
            "capacity_memory",
            "Peak memory per GPU at each cluster size; points above the dashed line do not fit.",
            SIZE,
        )?);
        if let Some(t) = opts.target_tokens_per_s {
            let rows = ordered
                .iter()
                .map(|n| {
                    vec![
                        n.to_string(),
                        crate::capacity::gpus_for(&d.capacity, n, t)
                            .map_or("not reached in the sizes simulated".into(), |g| {
                                g.to_string()
                            }),
                    ]
                })
                .collect();
            sec.push(Block::Paragraph(format!(
                "Fewest GPUs that reach {t:.0} tokens/s within the memory limit and the quality constraint:"
            )));
            sec.push(Block::Table {
                header: vec!["strategy".into(), "GPUs".into()],
                rows,
            });
        }
        sec.push(table(capacity_table(d)));
    }
    Ok(())
}
