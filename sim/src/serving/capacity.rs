//! Capacity: the highest request rate each deployment serves within the SLO, and what a million output
//! tokens cost there (`moesim plan` on a serving scenario).
//!
//! The search varies only the arrival rate of the scenario's stream (Poisson or Gamma), with the same
//! seed: arrivals are the same random draws scaled in time (an exponential or Gamma gap at rate λ is the
//! unit-rate draw divided by λ) and the lengths are the same, so a higher rate is the same traffic
//! compressed, and attainment falls as the rate rises up to sampling noise. From the scenario's rate it
//! doubles (or halves) until the SLO breaks (or holds), then bisects until the bracket `[lo, hi]` is
//! narrower than `tolerance × hi`; `lo` is the capacity: the highest rate found to meet the SLO, the
//! rate where it breaks within the tolerance above.
//!
//! Ranking: by cost per million output tokens at the capacity rate, `gpus × price_per_gpu_hour / 3600 /
//! output tokens per second × 10⁶`, when the cluster (or `[serving]`) has a price; without one, by output
//! tokens per second per GPU at that rate (the same order a uniform price gives). Deployments that meet
//! the SLO at no rate tried rank last.

use crate::scenario::Scenario;
use crate::scenario::serving::MAX_REQUESTS;
use crate::serving::config::{Arrival, Deployment};
use crate::serving::{ServingResult, arrivals, deployments, serve_with_memos};
use moesim_calibrate::CostModel;
use moesim_traces::requests::TraceRequest;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Doublings or halvings tried from the scenario's rate before giving up (a factor of about 10⁶; doubling
/// also stops before the stream passes [`MAX_REQUESTS`]).
pub const MAX_SCALINGS: usize = 20;

/// One rate tried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub rate_per_s: f64,
    pub attainment: f64,
    pub met: bool,
}

/// A deployment's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub deployment: String,
    pub kind: String,
    pub gpus: usize,
    /// Highest rate found within the SLO (`None`: missed at every rate tried).
    pub rate_per_s: Option<f64>,
    /// Lowest rate found to miss it (`None`: met at every rate tried).
    pub breaks_at_per_s: Option<f64>,
    /// The run at the capacity rate (at the lowest rate tried when none meets the SLO; its `step_shapes`
    /// counts the shapes lowered over the whole search, whose memo every rate shares).
    pub at_capacity: ServingResult,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_gpu: f64,
    /// `None` without a price.
    pub cost_per_million_output_tokens: Option<f64>,
    /// Every rate tried, in order.
    pub probes: Vec<Probe>,
}

/// Capacities of every deployment, ranked (best first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub scenario: String,
    /// The SLO searched against.
    pub slo: crate::serving::config::Slo,
    pub tolerance: f64,
    pub price_per_gpu_hour: Option<f64>,
    /// `cost per million output tokens` or `output tokens/s per GPU`.
    pub ranked_by: String,
    pub deployments: Vec<Capacity>,
}

/// What the capacities are ranked by: cost with a price, output tokens/s per GPU without.
pub fn ranked_by(price: Option<f64>) -> String {
    if price.is_some() {
        "cost per million output tokens".into()
    } else {
        "output tokens/s per GPU (no price_per_gpu_hour)".into()
    }
}

/// The stream's rate, or why the rate cannot be searched.
pub fn base_rate(s: &Scenario) -> Result<f64, String> {
    let cfg = s
        .serving
        .as_ref()
        .ok_or("not a serving scenario (workload.mode is not \"serving\")")?;
    if cfg.slo.is_none() {
        return Err(
            "capacity search needs an SLO to search against: add [slo] with ttft_ms and/or \
             tpot_ms (and percentile, default 90), e.g.\n[slo]\nttft_ms = 1000.0\ntpot_ms = 50.0"
                .into(),
        );
    }
    match cfg.requests.arrival {
        Arrival::Poisson { rate_per_s } | Arrival::Gamma { rate_per_s, .. } => Ok(rate_per_s),
        Arrival::Trace => Err(
            "capacity search varies the arrival rate: workload.serving.arrival must be \"poisson\" or \
             \"gamma\" (a trace's lengths can still be used with dist = \"trace\")"
                .into(),
        ),
    }
}

/// Requests a stream of `s` at `rate` holds, about.
fn expected_requests(s: &Scenario, rate: f64) -> f64 {
    let Some(c) = &s.serving else { return 0.0 };
    let by_time = c.requests.duration_s.map_or(f64::INFINITY, |d| rate * d);
    by_time.min(c.requests.max_requests.map_or(f64::INFINITY, |n| n as f64))
}

/// `s` with its stream at `rate`.
pub fn at_rate(s: &Scenario, rate: f64) -> Scenario {
    let mut s = s.clone();
    if let Some(c) = s.serving.as_mut() {
        match &mut c.requests.arrival {
            Arrival::Poisson { rate_per_s } | Arrival::Gamma { rate_per_s, .. } => {
                *rate_per_s = rate
            }
            Arrival::Trace => {}
        }
    }
    s
}

/// The price per GPU-hour the ranking uses: the cluster's, else `[serving]`'s.
pub fn price(s: &Scenario) -> Option<f64> {
    s.cluster
        .price_per_gpu_hour
        .or(s.serving.as_ref().and_then(|c| c.price_per_gpu_hour))
}

/// Searches every deployment's capacity (deployments in parallel, each search sequential).
pub fn capacity(
    s: &Scenario,
    trace: Option<&[TraceRequest]>,
    cost: Option<&dyn CostModel>,
) -> Result<CapacityReport, String> {
    let rate = base_rate(s)?;
    let cfg = s.serving.as_ref().expect("checked");
    let roofline = s.cluster.roofline();
    let cost: &dyn CostModel = cost.unwrap_or(&roofline);
    let price = price(s);
    let mut out = deployments(s)
        .par_iter()
        .map(|d| search(s, d, trace, cost, rate, cfg.capacity_tolerance, price))
        .collect::<Vec<_>>()
        // The first deployment's error in scenario order, whichever thread met one first.
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
    rank(&mut out, price.is_some());
    Ok(CapacityReport {
        scenario: s.name.clone(),
        slo: cfg.slo.expect("checked"),
        tolerance: cfg.capacity_tolerance,
        price_per_gpu_hour: price,
        ranked_by: ranked_by(price),
        deployments: out,
    })
}

/// Best first: met before missed; then the cheapest per million output tokens (with a price) or the most
/// output tokens/s per GPU; the scenario's order on a tie.
pub fn rank(c: &mut [Capacity], by_cost: bool) {
    c.sort_by(|a, b| {
        let key = |x: &Capacity| {
            if x.rate_per_s.is_none() {
                return f64::INFINITY;
            }
            match (by_cost, x.cost_per_million_output_tokens) {
                (true, Some(c)) => c,
                _ => -x.output_tokens_per_s_per_gpu,
            }
        };
        key(a).total_cmp(&key(b))
    });
}

/// One deployment's capacity (see the module doc).
pub fn search(
    s: &Scenario,
    d: &Deployment,
    trace: Option<&[TraceRequest]>,
    cost: &dyn CostModel,
    rate: f64,
    tolerance: f64,
    price: Option<f64>,
) -> Result<Capacity, String> {
    search_with_memos(s, d, trace, cost, rate, tolerance, price, &mut Vec::new())
}

/// [`search`] with the pools' step-time memos kept by the caller, so that later runs of the same
/// deployment at other rates (the report's latency curves) reuse the shapes the search lowered. Memo keys
/// are quantised shapes priced as such, so a memo changes no result, only how often a shape is lowered.
#[allow(clippy::too_many_arguments)]
pub fn search_with_memos(
    s: &Scenario,
    d: &Deployment,
    trace: Option<&[TraceRequest]>,
    cost: &dyn CostModel,
    rate: f64,
    tolerance: f64,
    price: Option<f64>,
    memos: &mut Vec<crate::serving::step_cost::Memo>,
) -> Result<Capacity, String> {
    let mut probes = Vec::new();
    let mut runs: Vec<(f64, ServingResult)> = Vec::new();
    // Step times depend on the batch, not the rate: one memo per pool serves every rate.
    let mut eval = |r: f64| -> Result<bool, String> {
        let sr = at_rate(s, r);
        let cfg = sr.serving.as_ref().expect("serving");
        let requests = arrivals::requests(&cfg.requests, sr.seed, trace)?;
        let mut res = serve_with_memos(&sr, d, &requests, cost, memos)?;
        res.records = Vec::new();
        let g = res.metrics.goodput.expect("an SLO");
        probes.push(Probe {
            rate_per_s: r,
            attainment: g.attainment,
            met: g.met,
        });
        runs.push((r, res));
        Ok(g.met)
    };
    let (mut lo, mut hi) = (None, None);
    if eval(rate)? {
        lo = Some(rate);
        let mut r = rate;
        for _ in 0..MAX_SCALINGS {
            r *= 2.0;
            // A stream limited by its duration grows with the rate: stop before it passes the largest run.
            if expected_requests(s, r) > MAX_REQUESTS as f64 {
                break;
            }
            if eval(r)? {
                lo = Some(r);
            } else {
                hi = Some(r);
                break;
            }
        }
    } else {
        hi = Some(rate);
        let mut r = rate;
        for _ in 0..MAX_SCALINGS {
            r /= 2.0;
            if eval(r)? {
                lo = Some(r);
                break;
            }
            hi = Some(r);
        }
    }
    if let (Some(mut l), Some(mut h)) = (lo, hi) {
        while h - l > tolerance * h {
            let m = 0.5 * (l + h);
            if eval(m)? {
                l = m;
            } else {
                h = m;
            }
        }
        (lo, hi) = (Some(l), Some(h));
    }
    let at = lo.unwrap_or_else(|| {
        probes
            .iter()
            .map(|p| p.rate_per_s)
            .fold(f64::INFINITY, f64::min)
    });
    let at_capacity = runs
        .into_iter()
        .find(|(r, _)| *r == at)
        .map(|(_, x)| x)
        .expect("the capacity rate was run");
    let th = at_capacity.metrics.throughput;
    let gpus = at_capacity.gpus;
    let cost_per_m = match (price, lo) {
        (Some(p), Some(_)) if th.output_tokens_per_s > 0.0 => {
            Some(gpus as f64 * p / 3600.0 / th.output_tokens_per_s * 1e6)
        }
        _ => None,
    };
    Ok(Capacity {
        deployment: d.name.clone(),
        kind: at_capacity.kind.clone(),
        gpus,
        rate_per_s: lo,
        breaks_at_per_s: hi,
        output_tokens_per_s: th.output_tokens_per_s,
        output_tokens_per_s_per_gpu: th.output_tokens_per_s_per_gpu,
        cost_per_million_output_tokens: cost_per_m,
        at_capacity,
        probes,
    })
}
