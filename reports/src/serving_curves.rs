//! A serving scenario's report data: latency against request rate per deployment, and the cost Pareto
//! front of the deployments at their capacity. Pure computation (no I/O, no drawing): the figures and
//! tables are built from [`ServingCurves`] by `report::serving`.
//!
//! - **Curves**: each deployment's capacity is searched as `moesim plan` does
//!   ([`moesim_sim::serving::capacity`]), then the deployment serves the scenario's stream at
//!   [`RATE_FACTORS`] × that capacity (× the scenario's rate when no rate meets the SLO), each point a
//!   full serving simulation with the same seed (the same traffic compressed or stretched in time). The
//!   search's step-time memos are kept for those runs: memo keys are quantised shapes priced as such, so
//!   reuse changes no figure, only how often a shape is lowered.
//! - **Pareto front**: a deployment at its capacity is a point (capacity rate in requests/s, more is
//!   better; cost per million output tokens with a price, else GPU-hours per million output tokens, less
//!   is better). The front is the non-dominated set: no other deployment serves at least as high a rate at
//!   no higher cost, and strictly better in one of them. Deployments that meet the SLO at no rate tried
//!   are not on it.

use moesim_calibrate::CostModel;
use moesim_sim::Scenario;
use moesim_sim::serving::capacity::{
    CapacityReport, at_rate, base_rate, price, rank, search_with_memos,
};
use moesim_sim::serving::config::Slo;
use moesim_sim::serving::{arrivals, deployments, serve_with_memos};
use moesim_sim::stats::percentile;
use moesim_traces::requests::TraceRequest;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The rates of a curve, as multiples of the deployment's capacity rate.
pub const RATE_FACTORS: [f64; 6] = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5];

/// One rate of a deployment's curve: one serving simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Multiple of the curve's anchor rate (the capacity, or the scenario's rate without one).
    pub factor: f64,
    pub rate_per_s: f64,
    /// TTFT at the SLO's percentile over the completed requests, ms.
    pub ttft_ms: f64,
    pub ttft_mean_ms: f64,
    /// TPOT at the SLO's percentile over the requests with more than one output token, ms.
    pub tpot_ms: f64,
    pub tpot_mean_ms: f64,
    /// Share of requests within the SLO (rejected ones count as missed).
    pub attainment: f64,
    pub met: bool,
    pub requests: usize,
    pub rejected: usize,
    pub output_tokens_per_s: f64,
}

/// A deployment's latency against request rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub deployment: String,
    pub kind: String,
    pub gpus: usize,
    /// The capacity rate from the search (`None`: the SLO is missed at every rate tried).
    pub capacity_rate_per_s: Option<f64>,
    /// The rate the factors multiply: the capacity, else the scenario's rate.
    pub anchor_rate_per_s: f64,
    /// In rate order.
    pub points: Vec<CurvePoint>,
}

/// What the y axis of the Pareto front measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CostMeasure {
    /// `cluster.price_per_gpu_hour` (or `[serving]`'s) × GPU-hours per million output tokens.
    CostPerMillionOutputTokens,
    /// GPU-hours per million output tokens (no price set).
    GpuHoursPerMillionOutputTokens,
}

impl CostMeasure {
    /// The axis and column label.
    pub fn label(self) -> &'static str {
        match self {
            CostMeasure::CostPerMillionOutputTokens => "cost per million output tokens",
            CostMeasure::GpuHoursPerMillionOutputTokens => "GPU-hours per million output tokens",
        }
    }
}

/// A deployment at its capacity, as a point of the cost plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParetoPoint {
    pub deployment: String,
    pub kind: String,
    pub gpus: usize,
    /// x: the capacity rate (requests/s; `None`: no rate met the SLO).
    pub rate_per_s: Option<f64>,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_gpu: f64,
    /// y: in [`ServingCurves::cost_measure`] (`None` without a capacity).
    pub cost: Option<f64>,
    /// Non-dominated among the deployments with a capacity.
    pub on_front: bool,
}

/// Everything the serving section shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingCurves {
    pub scenario: String,
    pub slo: Slo,
    pub price_per_gpu_hour: Option<f64>,
    pub cost_measure: CostMeasure,
    /// The capacity search, as `moesim plan` reports it (ranked best first).
    pub capacity: CapacityReport,
    /// Per deployment, in the scenario's order.
    pub curves: Vec<Curve>,
    /// Per deployment, in the scenario's order.
    pub pareto: Vec<ParetoPoint>,
}

/// Which of `points` are non-dominated, maximising x and minimising y: point i is dominated when some j
/// has `x_j ≥ x_i` and `y_j ≤ y_i` with one of them strict. Equal points do not dominate each other (both
/// stay on the front); non-finite coordinates are never on it.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    points
        .iter()
        .map(|&(x, y)| {
            x.is_finite()
                && y.is_finite()
                && !points.iter().any(|&(xj, yj)| {
                    xj.is_finite() && yj.is_finite() && xj >= x && yj <= y && (xj > x || yj < y)
                })
        })
        .collect()
}

/// GPU-hours per million output tokens at `output_tokens_per_s` on `gpus`.
pub fn gpu_hours_per_million(gpus: usize, output_tokens_per_s: f64) -> Option<f64> {
    (output_tokens_per_s > 0.0).then(|| gpus as f64 / 3600.0 / output_tokens_per_s * 1e6)
}

/// `q`-th percentile (0–100) of `values` (any order; `0` when empty), as the serving metrics compute theirs.
fn pct(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, q / 100.0)
}

/// Searches every deployment's capacity and serves it at `factors` × that rate (see the module doc).
/// Deployments run in parallel, each sequentially: the result does not depend on the thread count.
pub fn serving_curves(
    s: &Scenario,
    trace: Option<&[TraceRequest]>,
    cost: Option<&dyn CostModel>,
    factors: &[f64],
) -> Result<ServingCurves, String> {
    let base = base_rate(s)?;
    let cfg = s.serving.as_ref().expect("checked by base_rate");
    let slo = cfg.slo.expect("checked by base_rate");
    let roofline = s.cluster.roofline();
    let cost: &dyn CostModel = cost.unwrap_or(&roofline);
    let price = price(s);
    let runs = deployments(s)
        .par_iter()
        .map(|d| {
            let mut memos = Vec::new();
            let cap = search_with_memos(
                s,
                d,
                trace,
                cost,
                base,
                cfg.capacity_tolerance,
                price,
                &mut memos,
            )?;
            let anchor = cap.rate_per_s.unwrap_or(base);
            let mut rates: Vec<(f64, f64)> = factors.iter().map(|f| (*f, f * anchor)).collect();
            rates.sort_by(|a, b| a.1.total_cmp(&b.1));
            let mut points = Vec::with_capacity(rates.len());
            for (factor, r) in rates {
                let sr = at_rate(s, r);
                let c = sr.serving.as_ref().expect("serving");
                let requests = arrivals::requests(&c.requests, sr.seed, trace)?;
                let res = serve_with_memos(&sr, d, &requests, cost, &mut memos)?;
                let mut ttft: Vec<f64> = res.records.iter().filter_map(|x| x.ttft_ms).collect();
                let mut tpot: Vec<f64> = res.records.iter().filter_map(|x| x.tpot_ms).collect();
                let g = res.metrics.goodput.expect("an SLO");
                points.push(CurvePoint {
                    factor,
                    rate_per_s: r,
                    ttft_ms: pct(&mut ttft, slo.percentile),
                    ttft_mean_ms: res.metrics.ttft_ms.mean,
                    tpot_ms: pct(&mut tpot, slo.percentile),
                    tpot_mean_ms: res.metrics.tpot_ms.mean,
                    attainment: g.attainment,
                    met: g.met,
                    requests: res.metrics.requests,
                    rejected: res.metrics.rejected,
                    output_tokens_per_s: res.metrics.throughput.output_tokens_per_s,
                });
            }
            let curve = Curve {
                deployment: d.name.clone(),
                kind: cap.kind.clone(),
                gpus: cap.gpus,
                capacity_rate_per_s: cap.rate_per_s,
                anchor_rate_per_s: anchor,
                points,
            };
            Ok((cap, curve))
        })
        .collect::<Vec<_>>()
        // The first deployment's error in scenario order, whichever thread met one first.
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
    let cost_measure = if price.is_some() {
        CostMeasure::CostPerMillionOutputTokens
    } else {
        CostMeasure::GpuHoursPerMillionOutputTokens
    };
    let mut pareto: Vec<ParetoPoint> = runs
        .iter()
        .map(|(c, _)| ParetoPoint {
            deployment: c.deployment.clone(),
            kind: c.kind.clone(),
            gpus: c.gpus,
            rate_per_s: c.rate_per_s,
            output_tokens_per_s: c.output_tokens_per_s,
            output_tokens_per_s_per_gpu: c.output_tokens_per_s_per_gpu,
            cost: c.rate_per_s.and_then(|_| {
                gpu_hours_per_million(c.gpus, c.output_tokens_per_s)
                    .map(|h| price.map_or(h, |p| h * p))
            }),
            on_front: false,
        })
        .collect();
    let xy: Vec<(f64, f64)> = pareto
        .iter()
        .map(|p| (p.rate_per_s.unwrap_or(f64::NAN), p.cost.unwrap_or(f64::NAN)))
        .collect();
    for (p, on) in pareto.iter_mut().zip(pareto_front(&xy)) {
        p.on_front = on;
    }
    let (mut caps, curves): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    rank(&mut caps, price.is_some());
    Ok(ServingCurves {
        scenario: s.name.clone(),
        slo,
        price_per_gpu_hour: price,
        cost_measure,
        capacity: CapacityReport {
            scenario: s.name.clone(),
            slo,
            tolerance: cfg.capacity_tolerance,
            price_per_gpu_hour: price,
            ranked_by: moesim_sim::serving::capacity::ranked_by(price),
            deployments: caps,
        },
        curves,
        pareto,
    })
}

/// A serving scenario's report data with where it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServingData {
    pub scenario: Scenario,
    pub inputs: crate::collect::Provenance,
    pub curves: ServingCurves,
}

/// Resolved `inputs` of a serving scenario → its report data (see [`serving_curves`]).
pub fn collect_serving(
    inputs: &crate::inputs::Inputs,
    moesim_version: &str,
) -> Result<ServingData, String> {
    let curves = serving_curves(
        &inputs.scenario,
        inputs.requests.as_deref().map(|t| t.requests.as_slice()),
        inputs.cost(),
        &RATE_FACTORS,
    )
    .map_err(|e| format!("{}: {e}", inputs.file.display()))?;
    Ok(ServingData {
        scenario: inputs.scenario.clone(),
        inputs: crate::collect::Provenance {
            file: inputs.file.display().to_string(),
            text: inputs.text.clone(),
            overrides: inputs.overrides.clone(),
            workload: match &inputs.scenario.serving {
                Some(c) => format!("{:?}", c.requests.arrival),
                None => String::new(),
            },
            workload_checksum: String::new(),
            cost_profile: inputs.cost_label.clone(),
            moesim_version: moesim_version.to_string(),
        },
        curves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The non-dominated set by brute force over pairs, written differently: i is on the front unless
    /// some j is at least as good in both and better in one.
    #[test]
    fn the_front_is_exactly_the_non_dominated_set() {
        // (rate: more is better, cost: less is better)
        let pts = [
            (10.0, 5.0), // front: cheapest
            (20.0, 6.0), // front
            (15.0, 7.0), // dominated by (20, 6)
            (30.0, 9.0), // front: highest rate
            (30.0, 9.5), // dominated by (30, 9): same rate, dearer
            (5.0, 5.0),  // dominated by (10, 5): same cost, lower rate
            (20.0, 6.0), // equal to a front point: stays
            (f64::NAN, 1.0),
            (25.0, f64::INFINITY),
        ];
        assert_eq!(
            pareto_front(&pts),
            vec![true, true, false, true, false, false, true, false, false]
        );
        assert_eq!(pareto_front(&[]), Vec::<bool>::new());
        assert_eq!(pareto_front(&[(1.0, 1.0)]), vec![true]);
        // A chain where each point dominates the next: only the first survives.
        let chain: Vec<(f64, f64)> = (0..5).map(|i| (10.0 - i as f64, i as f64)).collect();
        assert_eq!(pareto_front(&chain), vec![true, false, false, false, false]);
    }

    #[test]
    fn front_points_dominate_every_other_point_they_can() {
        // A pseudo-random cloud: every point off the front is dominated by a front point, and no front
        // point is dominated by any point.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f64 / 10.0
        };
        let pts: Vec<(f64, f64)> = (0..200).map(|_| (next(), next())).collect();
        let on = pareto_front(&pts);
        let dominates =
            |a: (f64, f64), b: (f64, f64)| a.0 >= b.0 && a.1 <= b.1 && (a.0 > b.0 || a.1 < b.1);
        for (i, p) in pts.iter().enumerate() {
            let dominated = pts.iter().any(|q| dominates(*q, *p));
            assert_eq!(on[i], !dominated, "{p:?}");
            if !on[i] {
                assert!(
                    pts.iter().zip(&on).any(|(q, f)| *f && dominates(*q, *p)),
                    "{p:?} is dominated by a front point"
                );
            }
        }
        assert!(on.iter().any(|f| *f));
    }

    #[test]
    fn gpu_hours_follow_the_capacity_formula() {
        // 8 GPUs at 1000 output tokens/s: 8 / 3600 / 1000 × 10⁶ GPU-hours per million tokens.
        let h = gpu_hours_per_million(8, 1000.0).unwrap();
        assert!((h - 8.0 / 3.6).abs() < 1e-12);
        assert_eq!(gpu_hours_per_million(8, 0.0), None);
    }
}
