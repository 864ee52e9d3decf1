//! A serving scenario's section: capacity per deployment, TTFT and TPOT against request rate with the SLO
//! marked, and the cost Pareto front, each figure with the table of its numbers.

use super::Section;
use super::format::{f, heading, table};
use crate::charts::{LabelledPoint, LineChart, Scatter, Series};
use crate::document::Block;
use crate::figure::{SIZE, render};
use crate::numbers::{percent, rate};
use crate::serving_curves::{CurvePoint, ServingCurves, ServingData};

/// A latency figure: file stem, label, the value of a point, the SLO's target.
type Metric = (
    &'static str,
    &'static str,
    fn(&CurvePoint) -> f64,
    Option<f64>,
);

fn opt(v: Option<f64>, show: impl Fn(f64) -> String) -> String {
    v.map_or("—".into(), show)
}

/// Header and rows of the latency-versus-rate table (every point of every curve).
pub fn curve_table(c: &ServingCurves) -> (Vec<String>, Vec<Vec<String>>) {
    let p = c.slo.percentile;
    let header = vec![
        "deployment".to_string(),
        "× capacity".into(),
        "rate/s".into(),
        format!("TTFT p{p} ms"),
        "TTFT mean ms".into(),
        format!("TPOT p{p} ms"),
        "TPOT mean ms".into(),
        "within SLO".into(),
        "SLO met".into(),
        "rejected".into(),
        "out tok/s".into(),
    ];
    let rows = c
        .curves
        .iter()
        .flat_map(|cv| {
            cv.points.iter().map(|x| {
                vec![
                    cv.deployment.clone(),
                    f(x.factor, 2),
                    rate(x.rate_per_s),
                    f(x.ttft_ms, 1),
                    f(x.ttft_mean_ms, 1),
                    f(x.tpot_ms, 2),
                    f(x.tpot_mean_ms, 2),
                    percent(x.attainment),
                    if x.met { "yes".into() } else { "no".into() },
                    x.rejected.to_string(),
                    rate(x.output_tokens_per_s),
                ]
            })
        })
        .collect();
    (header, rows)
}

/// Header and rows of the Pareto table (every deployment; the front marked).
pub fn pareto_table(c: &ServingCurves) -> (Vec<String>, Vec<Vec<String>>) {
    let header = vec![
        "deployment".to_string(),
        "kind".into(),
        "GPUs".into(),
        "capacity/s".into(),
        "out tok/s".into(),
        "out tok/s/GPU".into(),
        c.cost_measure.label().into(),
        "Pareto front".into(),
    ];
    let rows = c
        .pareto
        .iter()
        .map(|p| {
            vec![
                p.deployment.clone(),
                p.kind.clone(),
                p.gpus.to_string(),
                opt(p.rate_per_s, rate),
                rate(p.output_tokens_per_s),
                rate(p.output_tokens_per_s_per_gpu),
                opt(p.cost, |x| f(x, 4)),
                if p.on_front {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    (header, rows)
}

/// The serving section of one scenario.
pub(super) fn section(sec: &mut Section, d: &ServingData) -> Result<(), String> {
    let c = &d.curves;
    let slo = c.slo;
    let pct = slo.percentile;
    sec.push(heading(1, format!("{} (serving)", d.scenario.name)));
    sec.push(Block::Paragraph(format!(
        "{} on {} × {} GPUs; SLO: TTFT ≤ {} and TPOT ≤ {} for {pct} % of requests. Each deployment's \
         capacity is the highest request rate found within the SLO (the search of `moesim plan`, bisection to \
         {} of the rate); every point below is a separate serving simulation with the scenario's seed.",
        d.scenario.model.name,
        d.scenario.cluster.nodes,
        d.scenario.cluster.gpus_per_node,
        opt(slo.ttft_ms, |x| format!("{x} ms")),
        opt(slo.tpot_ms, |x| format!("{x} ms")),
        percent(c.capacity.tolerance),
    )));

    sec.push(heading(2, "Latency versus request rate"));
    sec.push(Block::Paragraph(format!(
        "Per deployment, the stream at {} × its capacity rate (× the scenario's rate when it meets the SLO at \
         no rate). TTFT and TPOT at the SLO's percentile (p{pct}); the dashed line is the SLO's target.",
        c.curves
            .first()
            .map(|cv| cv
                .points
                .iter()
                .map(|p| f(p.factor, 2))
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    )));
    let series = |value: fn(&CurvePoint) -> f64| -> Vec<Series> {
        c.curves
            .iter()
            .map(|cv| Series {
                name: cv.deployment.clone(),
                points: cv.points.iter().map(|p| (p.rate_per_s, value(p))).collect(),
            })
            .collect()
    };
    let metrics: [Metric; 2] = [
        ("ttft", "TTFT", |p| p.ttft_ms, slo.ttft_ms),
        ("tpot", "TPOT", |p| p.tpot_ms, slo.tpot_ms),
    ];
    for (stem, label, value, target) in metrics {
        let chart = LineChart {
            title: format!("{label} p{pct} vs request rate"),
            x_label: "requests/s".into(),
            y_label: format!("{label} p{pct} (ms)"),
            series: series(value),
            limit: target.map(|t| (t, format!("SLO {label} {t} ms"))),
            y_from_zero: true,
            steps: false,
        };
        sec.figure(render(
            &chart,
            &format!("serving_{stem}_vs_rate"),
            &format!(
                "{label} at p{pct} against request rate, per deployment; dashed: the SLO's {label} target."
            ),
            SIZE,
        )?);
    }
    sec.push(table(curve_table(c)));

    sec.push(heading(2, "Cost Pareto front"));
    let measure = c.cost_measure.label();
    sec.push(Block::Paragraph(format!(
        "Each deployment at its capacity: x the capacity rate (requests/s, more is better), y the {measure} \
         (less is better{}). A deployment is on the front when no other serves at least its rate at no more \
         cost and is strictly better in one of the two; deployments that meet the SLO at no rate tried are \
         left out.",
        match c.price_per_gpu_hour {
            Some(p) => format!("; {p} per GPU-hour"),
            None => "; no cluster.price_per_gpu_hour is set".into(),
        }
    )));
    let chart = Scatter {
        title: "Deployments at capacity: rate vs cost".into(),
        x_label: "capacity (requests/s)".into(),
        y_label: measure.into(),
        points: c
            .pareto
            .iter()
            .filter_map(|p| {
                Some(LabelledPoint {
                    label: p.deployment.clone(),
                    x: p.rate_per_s?,
                    y: p.cost?,
                    highlighted: p.on_front,
                })
            })
            .collect(),
        highlighted_name: "Pareto front".into(),
        other_name: "dominated".into(),
    };
    sec.figure(render(
        &chart,
        "serving_cost_pareto",
        &format!("Capacity rate against {measure}; filled and joined: the Pareto front."),
        SIZE,
    )?);
    let front: Vec<&str> = c
        .pareto
        .iter()
        .filter(|p| p.on_front)
        .map(|p| p.deployment.as_str())
        .collect();
    sec.push(Block::Paragraph(if front.is_empty() {
        "Pareto front: none (no deployment meets the SLO at any rate tried).".into()
    } else {
        format!("Pareto front: {}.", front.join(", "))
    }));
    sec.push(table(pareto_table(c)));

    sec.push(heading(2, "Inputs"));
    sec.push(Block::Paragraph(format!(
        "Scenario file {}{}; seed {}; cost model: {}; moesim {}.",
        d.inputs.file,
        if d.inputs.overrides.is_empty() {
            String::new()
        } else {
            format!(" with {}", d.inputs.overrides.join(" "))
        },
        d.scenario.seed,
        d.inputs.cost_profile,
        d.inputs.moesim_version
    )));
    sec.push(Block::Link {
        before: "The numbers as data: ".into(),
        text: "serving.json".into(),
        href: format!("{}/serving.json", sec.dir),
        after: ".".into(),
    });
    sec.push(Block::Code {
        lang: "toml".into(),
        text: d.inputs.text.clone(),
    });
    Ok(())
}
