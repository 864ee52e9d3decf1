//! The scenario's overview and step times: summary table, CDF, phase breakdown, and the timeline link.

use super::Section;
use super::format::{f, heading, spelled, summary_table, table};
use crate::charts::{LineChart, Series, StackedBars};
use crate::collect::ScenarioData;
use crate::document::Block;
use crate::figure::{SIZE, render};
use std::collections::BTreeSet;

/// Overview, step-time table and CDF, critical-path breakdown.
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let dir = sec.dir.clone();
    let s = &d.scenario;
    let results = &d.report.results;
    let limit = s.objective.memory_limit_gib;
    sec.push(heading(1, format!("Scenario {}", s.name)));
    if !s.description.is_empty() {
        sec.push(Block::Paragraph(s.description.clone()));
    }
    sec.push(Block::Paragraph(format!(
        "{} on {} × {} ({} GPUs), {} mode, {} iterations; {}.",
        s.model.name,
        s.cluster.nodes,
        s.cluster.name,
        s.cluster.gpus(),
        spelled(s.workload.mode),
        s.workload.iterations,
        d.inputs.workload
    )));
    sec.push(Block::Paragraph(match d.chosen {
        Some(i) => format!(
            "Chosen under the objective ({}, at most {} of assignments dropped): {} — {} tokens/s, p99 step {:.3} ms, {:.2} GiB per GPU of {:.1}.",
            spelled(s.objective.metric), crate::numbers::percent(s.objective.max_dropped_fraction),
            results[i].strategy, crate::numbers::rate(results[i].tokens_per_s), results[i].step_time_ms.p99,
            results[i].memory_peak_gib, limit
        ),
        None => format!(
            "No strategy fits in {limit:.1} GiB per GPU while dropping at most {} of its assignments.",
            crate::numbers::percent(s.objective.max_dropped_fraction)
        ),
    }));
    sec.push(Block::Paragraph(
        "Tokens/s counts every token of an iteration (dropped assignments too) per second of mean step \
         time; dropped is the fraction of (token, expert) assignments a capacity factor dropped."
            .into(),
    ));
    sec.push(heading(2, "Step time"));
    sec.push(table(summary_table(d)));
    let cdf = LineChart {
        title: "Step time distribution (CDF over iterations)".into(),
        x_label: "step time (ms)".into(),
        y_label: "fraction of iterations".into(),
        series: results
            .iter()
            .map(|r| {
                let mut v: Vec<f64> = r.per_iteration.iter().map(|i| i.step_ms).collect();
                v.sort_by(f64::total_cmp);
                let n = v.len() as f64;
                Series {
                    name: r.strategy.clone(),
                    points: v
                        .iter()
                        .enumerate()
                        .map(|(k, x)| (*x, (k + 1) as f64 / n))
                        .collect(),
                }
            })
            .collect(),
        limit: None,
        y_from_zero: true,
        steps: true,
    };
    sec.figure(render(
        &cdf,
        "step_time_cdf",
        "Step time CDF per strategy: further left is faster, steeper is steadier.",
        SIZE,
    )?);

    let phases: Vec<String> = results
        .iter()
        .flat_map(|r| r.breakdown_ms.keys().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let bd = StackedBars {
        title: "Critical path per iteration, by phase".into(),
        y_label: "ms per iteration".into(),
        categories: results.iter().map(|r| r.strategy.clone()).collect(),
        components: phases
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    results
                        .iter()
                        .map(|r| r.breakdown_ms.get(p).copied().unwrap_or(0.0))
                        .collect(),
                )
            })
            .collect(),
        limit: None,
    };
    sec.figure(render(
        &bd,
        "breakdown",
        "Mean critical-path time per iteration, split into phases.",
        SIZE,
    )?);
    let mut header = vec!["strategy".to_string()];
    header.extend(phases.iter().map(|p| format!("{p} ms")));
    sec.push(Block::Table {
        header,
        rows: results
            .iter()
            .map(|r| {
                let mut row = vec![r.strategy.clone()];
                row.extend(
                    phases
                        .iter()
                        .map(|p| f(r.breakdown_ms.get(p).copied().unwrap_or(0.0), 3)),
                );
                row
            })
            .collect(),
    });

    if let Some((name, _)) = &d.trace {
        sec.push(Block::Link {
            before: format!(
                "Timeline of {name}, iterations 0..{}: ",
                crate::collect::TRACE_ITERATIONS
            ),
            text: "timeline.trace.json".into(),
            href: format!("{dir}/timeline.trace.json"),
            after: " (Chrome trace JSON: open it in ui.perfetto.dev or chrome://tracing; one track per GPU \
                    compute stream and per GPU network port)."
                .into(),
        });
    }
    Ok(())
}
