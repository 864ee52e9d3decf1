//! Load balance: imbalance per MoE layer and the placement map.

use super::Section;
use super::format::heading;
use crate::charts::{Heatmap, LineChart, Series};
use crate::collect::ScenarioData;
use crate::figure::{SIZE, render};

/// Strategies that share a placement, the placement, and its per-layer imbalance.
type SharedPlacement<'a> = (Vec<String>, &'a Vec<Vec<usize>>, &'a Vec<f64>);

/// Per-layer imbalance and the chosen strategy's placement map.
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let results = &d.report.results;
    if d.loads.iter().any(Option::is_some) {
        sec.push(heading(2, "Load balance and placement"));
        // Strategies with the same placement see the same imbalance: one line for them all.
        let mut series: Vec<SharedPlacement> = Vec::new();
        for (r, l) in results.iter().zip(&d.loads) {
            let Some(l) = l.as_ref().filter(|l| !l.rank_imbalance.is_empty()) else {
                continue;
            };
            match series.iter_mut().find(|(_, p, _)| **p == r.placement) {
                Some(entry) => entry.0.push(r.strategy.clone()),
                None => series.push((vec![r.strategy.clone()], &r.placement, &l.rank_imbalance)),
            }
        }
        let mut series: Vec<Series> = series
            .into_iter()
            .map(|(names, _, v)| Series {
                name: format!("GPUs: {}", names.join(", ")),
                points: v.iter().enumerate().map(|(k, v)| (k as f64, *v)).collect(),
            })
            .collect();
        if let Some(l) = d.loads.iter().flatten().next() {
            series.push(Series {
                name: "experts".into(),
                points: l
                    .expert_imbalance
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (k as f64, *v))
                    .collect(),
            });
        }
        let imb = LineChart {
            title: "Imbalance per MoE layer (busiest / mean)".into(),
            x_label: "MoE layer".into(),
            y_label: "max / mean tokens".into(),
            series,
            limit: None,
            y_from_zero: false,
            steps: false,
        };
        sec.figure(render(
                &imb,
                "layer_imbalance",
                "How much more the busiest GPU (or expert) gets than the average, per layer; 1 is perfectly even.",
                SIZE,
            )?,
        );
        let shown = d.chosen.unwrap_or(0);
        if let (Some(r), Some(Some(l))) = (results.get(shown), d.loads.get(shown)) {
            let total: f64 = l.expert_tokens.iter().sum::<f64>().max(1e-12);
            let experts = l.expert_tokens.len();
            let map = Heatmap {
                title: format!("{}: placement (experts × GPUs of one EP group)", r.strategy),
                x_label: "expert".into(),
                y_label: "GPU in group".into(),
                value_label: "% tokens".into(),
                values: r
                    .placement
                    .iter()
                    .map(|on| {
                        (0..experts)
                            .map(|e| on.contains(&e).then(|| 100.0 * l.expert_tokens[e] / total))
                            .collect()
                    })
                    .collect(),
            };
            sec.figure(render(
                    &map,
                    "placement",
                    &format!(
                        "{}: which GPU holds which expert; colour is the expert's share of all routed tokens.",
                        r.strategy
                    ),
                    SIZE,
                )?,
            );
        }
    }
    Ok(())
}
