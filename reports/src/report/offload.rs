//! Offloading: hit rate and time per output token against the expert-cache size, per policy.

use super::Section;
use super::format::heading;
use crate::charts::{LineChart, Series};
use crate::collect::ScenarioData;
use crate::document::Block;
use crate::figure::{SIZE, render};

/// Two curves and their table, when the scenario has an offloading strategy.
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let pts = &d.cache_curve;
    let Some(first) = pts.first() else {
        return Ok(());
    };
    sec.push(heading(2, "Offloading: expert-cache size and policy"));
    sec.push(Block::Paragraph(format!(
        "Each point is a separate simulation of `{}` with its cache policy and size replaced. Belady is the \
         optimal bound (it needs the future), not a policy a runtime can run.",
        first.strategy
    )));
    let mut policies: Vec<&str> = Vec::new();
    for p in pts {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    let series = |value: &dyn Fn(&crate::cache_curve::CachePoint) -> f64| -> Vec<Series> {
        policies
            .iter()
            .map(|pol| Series {
                name: pol.to_string(),
                points: pts
                    .iter()
                    .filter(|p| p.policy == *pol)
                    .map(|p| (p.cache_experts_per_layer as f64, value(p)))
                    .collect(),
            })
            .collect()
    };
    let hit = LineChart {
        title: "Hit rate vs expert-cache size".into(),
        x_label: "experts cached per layer".into(),
        y_label: "hit rate".into(),
        series: series(&|p| p.hit_rate),
        limit: None,
        y_from_zero: true,
        steps: false,
    };
    sec.figure(render(
        &hit,
        "offload_hit_rate",
        "Cache hit rate per policy and size.",
        SIZE,
    )?);
    let tpot = LineChart {
        title: "Time per output token vs expert-cache size".into(),
        x_label: "experts cached per layer".into(),
        y_label: "TPOT (ms)".into(),
        series: series(&|p| p.tpot_ms),
        limit: None,
        y_from_zero: true,
        steps: false,
    };
    sec.figure(render(
        &tpot,
        "offload_tpot",
        "Time per output token per policy and size.",
        SIZE,
    )?);
    sec.push(Block::Table {
        header: vec![
            "policy".into(),
            "cached per layer".into(),
            "hit rate".into(),
            "TPOT ms".into(),
            "GB fetched".into(),
        ],
        rows: pts
            .iter()
            .map(|p| {
                vec![
                    p.policy.clone(),
                    p.cache_experts_per_layer.to_string(),
                    format!("{:.3}", p.hit_rate),
                    format!("{:.2}", p.tpot_ms),
                    format!("{:.1}", p.bytes_fetched as f64 / 1e9),
                ]
            })
            .collect(),
    });
    Ok(())
}
