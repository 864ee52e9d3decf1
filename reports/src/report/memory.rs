//! Memory: the fullest GPU by kind against the limit, with the headroom.

use super::Section;
use super::format::{f, heading};
use crate::charts::{LineChart, Series, StackedBars};
use crate::collect::ScenarioData;
use crate::document::Block;
use crate::figure::{SIZE, render};

/// Memory chart and table.
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let results = &d.report.results;
    let limit = d.scenario.objective.memory_limit_gib;
    sec.push(heading(2, "Memory"));
    let mem = StackedBars {
        title: "Memory of the fullest GPU".into(),
        y_label: "GiB".into(),
        categories: results.iter().map(|r| r.strategy.clone()).collect(),
        components: [
            (
                "parameters",
                results.iter().map(|r| r.memory.params_gib).collect(),
            ),
            (
                "gradients",
                results.iter().map(|r| r.memory.grads_gib).collect(),
            ),
            (
                "optimizer",
                results.iter().map(|r| r.memory.optimizer_gib).collect(),
            ),
            (
                "activations",
                results.iter().map(|r| r.memory.activations_gib).collect(),
            ),
            (
                "KV cache",
                results.iter().map(|r| r.memory.kv_cache_gib).collect(),
            ),
        ]
        .into_iter()
        .map(|(n, v): (&str, Vec<f64>)| (n.to_string(), v))
        .collect(),
        limit: Some((limit, format!("limit {limit:.0} GiB"))),
    };
    sec.figure(render(
        &mem,
        "memory",
        "Peak memory per GPU by kind, against the memory limit (dashed).",
        SIZE,
    )?);
    let per_rank: Vec<Series> = results
        .iter()
        .zip(&d.rank_iterations)
        .filter_map(|(r, ri)| {
            let m = &ri.as_ref()?.memory_gib;
            (!m.is_empty()).then(|| Series {
                name: r.strategy.clone(),
                points: m.iter().enumerate().map(|(k, v)| (k as f64, *v)).collect(),
            })
        })
        .collect();
    if !per_rank.is_empty() {
        let chart = LineChart {
            title: "Peak memory per GPU".into(),
            x_label: "GPU".into(),
            y_label: "GiB".into(),
            series: per_rank,
            limit: Some((limit, format!("limit {limit:.0} GiB"))),
            y_from_zero: true,
            steps: false,
        };
        sec.figure(render(
            &chart,
            "memory_per_rank",
            "Peak memory of every GPU against the memory limit: GPUs that receive more tokens hold more activations.",
            SIZE,
        )?);
    }
    sec.push(Block::Table {
        header: [
            "strategy",
            "parameters GiB",
            "gradients GiB",
            "optimizer GiB",
            "activations GiB",
            "KV cache GiB",
            "total GiB",
            "headroom GiB",
        ]
        .map(String::from)
        .to_vec(),
        rows: results
            .iter()
            .map(|r| {
                let m = &r.memory;
                vec![
                    r.strategy.clone(),
                    f(m.params_gib, 2),
                    f(m.grads_gib, 2),
                    f(m.optimizer_gib, 2),
                    f(m.activations_gib, 2),
                    f(m.kv_cache_gib, 2),
                    f(m.total_gib, 2),
                    f(limit - m.total_gib, 2),
                ]
            })
            .collect(),
    });
    Ok(())
}
