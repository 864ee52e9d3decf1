//! Judging plans that know more than any history: the shared loop of the hedging ceilings.
//!
//! A ceiling ([`super::burst_ceiling`], [`super::rotation_ceiling`]) asks how far a plan could go on a
//! synthetic workload if it knew the generator's exact present state and the law of what no history
//! forecasts. Each is judged exactly like the harness ([`super::harness`]): a fresh plan at every re-plan
//! point of the judged window, each later iteration and layer judged on its own, moves free, and EPLB
//! from the mean of the same history window re-planned at the same points.

use super::LayerPlacement;
use super::balancedness;
use super::eplb::eplb;
use super::forecast::{Forecast, forecast};
use super::harness::{Setup, SyntheticWorkload};
use super::judged::Judged;
use rayon::prelude::*;

/// What a ceiling's plans are given at one re-plan point.
pub struct ReplanPoint<'a> {
    pub layer: usize,
    /// The first iteration the plan serves.
    pub t: usize,
    /// The generator's exact burst-free expected loads at iteration `t − 1`.
    pub state: &'a [f64],
}

/// Judges, for each plan `plans_at` returns at every re-plan point, each later iteration and layer until
/// the next re-plan point; the last entry is EPLB from the history window's mean. `plans_at` must return
/// the same number of plans at every point (an empty list skips the point).
pub fn judge_at_replans<F>(w: &SyntheticWorkload, s: &Setup, plans_at: F) -> Vec<Judged>
where
    F: Fn(&ReplanPoint) -> Vec<LayerPlacement> + Sync,
{
    let h = &w.history;
    let start = s.history.min(h.iterations.len()).max(1);
    let end = (start + s.judged).min(h.iterations.len());
    let every = s.replan_every.max(1);
    let per_layer: Vec<Vec<Vec<f64>>> = (0..h.layers)
        .into_par_iter()
        .map(|layer| {
            let mut out: Vec<Vec<f64>> = Vec::new();
            for t in (start..end).step_by(every) {
                let point = ReplanPoint {
                    layer,
                    t,
                    state: &w.state.iterations[t - 1][layer],
                };
                let mut plans = plans_at(&point);
                if plans.is_empty() {
                    continue;
                }
                let past: Vec<&[f64]> = h.iterations[t.saturating_sub(s.history)..t]
                    .iter()
                    .map(|it| it[layer].as_slice())
                    .collect();
                let mean = forecast(&past, Forecast::MovingAverage { window: usize::MAX }).0;
                plans.push(eplb(&mean, s.gpus, s.slots_per_gpu));
                out.resize(plans.len(), Vec::new());
                for it in &h.iterations[t..(t + every).min(end)] {
                    for (v, p) in out.iter_mut().zip(&plans) {
                        v.push(balancedness(&p.gpu_loads(&it[layer])));
                    }
                }
            }
            out
        })
        .collect();
    let plans = per_layer.iter().map(Vec::len).max().unwrap_or(0);
    (0..plans)
        .map(|i| {
            Judged::of(
                per_layer
                    .iter()
                    .flat_map(|l| l.get(i).cloned().unwrap_or_default())
                    .collect(),
            )
        })
        .collect()
}

/// `ceiling` of every synthetic workload of the harness it applies to (`None`: it does not), each with its
/// harness setup.
pub fn of_synthetic_workloads<T>(
    ceiling: impl Fn(&SyntheticWorkload, &Setup) -> Option<T>,
) -> Vec<T> {
    super::harness::synthetic_workloads()
        .iter()
        .filter_map(|w| ceiling(w, &w.setup()))
        .collect()
}
