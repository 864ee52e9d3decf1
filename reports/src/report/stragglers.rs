//! Stragglers: which ranks held iterations up, and per-GPU heatmaps over iterations.

use super::Section;
use super::format::heading;
use super::slug;
use crate::charts::Heatmap;
use crate::collect::ScenarioData;
use crate::document::Block;
use crate::figure::{SIZE, render};

/// Straggler table and per-rank heatmaps (time and load).
pub(super) fn section(sec: &mut Section, d: &ScenarioData) -> Result<(), String> {
    let results = &d.report.results;
    sec.push(heading(2, "Stragglers"));
    sec.push(Block::Table {
        header: ["strategy", "rank", "share of iterations", "cause"]
            .map(String::from)
            .to_vec(),
        rows: results
            .iter()
            .flat_map(|r| {
                r.stragglers.iter().take(3).map(|st| {
                    vec![
                        r.strategy.clone(),
                        st.rank.to_string(),
                        format!("{:.0}%", 100.0 * st.critical_share),
                        st.cause.as_str().to_string(),
                    ]
                })
            })
            .collect(),
    });
    for (r, ri) in results.iter().zip(&d.rank_iterations) {
        let Some(ri) = ri else { continue };
        let name = slug(&r.strategy);
        let busy = Heatmap {
            title: format!("{}: compute busy time per GPU and iteration", r.strategy),
            x_label: "iteration".into(),
            y_label: "GPU".into(),
            value_label: "busy ms".into(),
            values: ri
                .busy_ms
                .iter()
                .map(|row| row.iter().map(|v| Some(*v)).collect())
                .collect(),
        };
        sec.figure(render(
            &busy,
            &format!("rank_time_{name}"),
            &format!(
                "{}: a bright row is a GPU that works longer than the others (a straggler).",
                r.strategy
            ),
            SIZE,
        )?);
        let tokens = Heatmap {
            title: format!("{}: tokens received per GPU and iteration", r.strategy),
            x_label: "iteration".into(),
            y_label: "GPU".into(),
            value_label: "tokens".into(),
            values: ri
                .tokens
                .iter()
                .map(|row| row.iter().map(|v| Some(*v)).collect())
                .collect(),
        };
        sec.figure(render(
            &tokens,
            &format!("rank_load_{name}"),
            &format!(
                "{}: expert tokens each GPU received, summed over layers.",
                r.strategy
            ),
            SIZE,
        )?);
    }
    Ok(())
}
