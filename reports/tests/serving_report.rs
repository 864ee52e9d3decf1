//! The serving section of a report on scenarios/serving-mixtral.toml (a 3-second stream to stay quick):
//! latency curves against the capacity search, the Pareto front against its definition, the figures'
//! files, and determinism for a fixed seed.

use moesim_reports::check::check_svg;
use moesim_reports::inputs::Inputs;
use moesim_reports::report::{ReportOptions, pareto_table, render_report_with_serving};
use moesim_reports::serving_curves::{
    RATE_FACTORS, ServingData, collect_serving, gpu_hours_per_million, pareto_front,
};
use moesim_sim::serving::capacity::capacity;
use std::path::Path;
use std::sync::OnceLock;

const SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scenarios/serving-mixtral.toml"
);

fn inputs() -> Inputs {
    Inputs::read(
        Path::new(SCENARIO),
        vec!["workload.serving.duration_s=3".into()],
        None,
    )
    .unwrap()
}

fn data() -> &'static ServingData {
    static DATA: OnceLock<ServingData> = OnceLock::new();
    DATA.get_or_init(|| collect_serving(&inputs(), "test").unwrap())
}

#[test]
fn curves_rise_with_the_rate_and_pass_through_the_capacity() {
    let d = data();
    let c = &d.curves;
    assert_eq!(c.curves.len(), 2, "ep8 and ep8-replicated");
    for cv in &c.curves {
        let cap = c
            .capacity
            .deployments
            .iter()
            .find(|x| x.deployment == cv.deployment)
            .unwrap();
        let rate = cap.rate_per_s.expect("both deployments meet the SLO");
        assert_eq!(cv.capacity_rate_per_s, Some(rate));
        assert_eq!(cv.points.len(), RATE_FACTORS.len());
        for (p, f) in cv.points.iter().zip(RATE_FACTORS) {
            assert_eq!(p.factor, f);
            assert!((p.rate_per_s - f * rate).abs() <= 1e-12 * rate);
        }
        let (lo, hi) = (&cv.points[0], cv.points.last().unwrap());
        assert!(
            hi.ttft_ms >= lo.ttft_ms,
            "{}: TTFT {} at {} /s < {} at {} /s",
            cv.deployment,
            hi.ttft_ms,
            hi.rate_per_s,
            lo.ttft_ms,
            lo.rate_per_s
        );
        assert!(hi.tpot_ms >= lo.tpot_ms, "{}", cv.deployment);
        assert!(hi.attainment <= lo.attainment, "{}", cv.deployment);
        // The point at 1 × capacity is the search's own run at that rate (the shared memo changes no
        // figure): same p90 latencies and throughput.
        let at = cv.points.iter().find(|p| p.factor == 1.0).unwrap();
        let m = &cap.at_capacity.metrics;
        assert!(at.met);
        assert!((at.ttft_ms - m.ttft_ms.p90).abs() <= 1e-9 * m.ttft_ms.p90.max(1.0));
        assert!((at.tpot_ms - m.tpot_ms.p90).abs() <= 1e-9 * m.tpot_ms.p90.max(1.0));
        assert_eq!(at.ttft_mean_ms, m.ttft_ms.mean);
        assert_eq!(at.output_tokens_per_s, m.throughput.output_tokens_per_s);
        // 1.5 × capacity is past where the search found the SLO to break.
        let breaks = cap
            .breaks_at_per_s
            .expect("the search brackets the capacity");
        assert!(hi.rate_per_s >= breaks);
        assert!(
            !hi.met,
            "{}: 1.5 × capacity still meets the SLO",
            cv.deployment
        );
    }
}

#[test]
fn the_pareto_points_are_the_deployments_at_capacity() {
    let c = &data().curves;
    assert_eq!(c.price_per_gpu_hour, None);
    for p in &c.pareto {
        let cap = c
            .capacity
            .deployments
            .iter()
            .find(|x| x.deployment == p.deployment)
            .unwrap();
        assert_eq!(p.rate_per_s, cap.rate_per_s);
        assert_eq!(
            p.cost,
            gpu_hours_per_million(cap.gpus, cap.output_tokens_per_s)
        );
    }
    let xy: Vec<(f64, f64)> = c
        .pareto
        .iter()
        .map(|p| (p.rate_per_s.unwrap(), p.cost.unwrap()))
        .collect();
    let on: Vec<bool> = c.pareto.iter().map(|p| p.on_front).collect();
    assert_eq!(on, pareto_front(&xy));
    assert!(on.iter().any(|x| *x));
    // The table marks the same front.
    let (_, rows) = pareto_table(c);
    for (r, p) in rows.iter().zip(&c.pareto) {
        assert_eq!(r[0], p.deployment);
        assert_eq!(r.last().unwrap(), if p.on_front { "yes" } else { "no" });
    }
}

/// With a price, the search is the one `moesim plan` runs (same capacity report) and the Pareto front's
/// cost is plan's cost per million output tokens.
#[test]
fn the_capacity_search_is_plans_and_a_price_turns_gpu_hours_into_cost() {
    let i = Inputs::read(
        Path::new(SCENARIO),
        vec![
            "workload.serving.duration_s=1".into(),
            "cluster.price_per_gpu_hour=2.5".into(),
        ],
        None,
    )
    .unwrap();
    let c = collect_serving(&i, "test").unwrap().curves;
    assert_eq!(c.capacity, capacity(&i.scenario, None, i.cost()).unwrap());
    assert_eq!(c.price_per_gpu_hour, Some(2.5));
    assert!(c.pareto.iter().any(|p| p.cost.is_some()));
    for (p, cap) in c.pareto.iter().filter_map(|p| {
        let cap = c
            .capacity
            .deployments
            .iter()
            .find(|x| x.deployment == p.deployment)?;
        Some((p, cap))
    }) {
        assert_eq!(
            p.cost.is_some(),
            cap.cost_per_million_output_tokens.is_some()
        );
        if let (Some(a), Some(b)) = (p.cost, cap.cost_per_million_output_tokens) {
            assert!((a - b).abs() <= 1e-9 * b, "{a} vs plan's {b}");
        }
    }
}

#[test]
fn the_report_writes_the_figures_with_the_deployments_named_deterministically() {
    let render = |d: &ServingData| {
        render_report_with_serving(&[], std::slice::from_ref(d), &[], &ReportOptions::default())
            .unwrap()
    };
    let files = render(data());
    let get = |name: &str| {
        files
            .iter()
            .find(|f| f.path == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    for stem in [
        "serving_ttft_vs_rate",
        "serving_tpot_vs_rate",
        "serving_cost_pareto",
    ] {
        let svg =
            String::from_utf8(get(&format!("serving-mixtral/{stem}.svg")).bytes.clone()).unwrap();
        check_svg(&svg).unwrap();
        for name in ["ep8", "ep8-replicated"] {
            // plotters writes a label as its own line inside <text>.
            assert!(
                svg.lines().any(|l| l.trim() == name),
                "{stem}.svg lacks the label {name}"
            );
        }
        assert!(!get(&format!("serving-mixtral/{stem}.png")).bytes.is_empty());
    }
    let ttft = String::from_utf8(
        get("serving-mixtral/serving_ttft_vs_rate.svg")
            .bytes
            .clone(),
    )
    .unwrap();
    assert!(
        ttft.contains("SLO TTFT 1000 ms"),
        "the SLO line is labelled"
    );
    let md = String::from_utf8(get("index.md").bytes.clone()).unwrap();
    assert!(md.contains("### Latency versus request rate"));
    assert!(md.contains("| deployment | × capacity | rate/s | TTFT p90 ms |"));
    assert!(md.contains("Pareto front: "));
    assert!(md.contains("(serving-mixtral/serving_cost_pareto.svg)"));
    // One row per curve point in the Markdown.
    let rows = md
        .lines()
        .filter(|l| l.starts_with("| ep8 | ") || l.starts_with("| ep8-replicated | "))
        .count();
    assert_eq!(
        rows,
        2 * RATE_FACTORS.len() + 2,
        "curve rows and Pareto rows"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&get("serving-mixtral/serving.json").bytes).unwrap();
    assert_eq!(json["curves"]["curves"][0]["deployment"], "ep8");
    // Deterministic: the same seed gives the same bytes, recomputed from scratch.
    let again = render(&collect_serving(&inputs(), "test").unwrap());
    assert_eq!(files, again);
}
