//! Placing every layer of a model from a load history, in parallel, with the EPLB baseline beside it.

use super::eplb::eplb;
use super::forecast::{Forecast, forecast};
use super::judged::Judged;
use super::search::{PlaceOptions, place_with_history};
use super::{LayerPlacement, balancedness};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Tokens per (iteration, layer, expert), oldest iteration first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadHistory {
    pub layers: usize,
    pub experts: usize,
    /// `iterations[i][layer][expert]`.
    pub iterations: Vec<Vec<Vec<f64>>>,
}

/// Knobs of a whole-model placement.
#[derive(Debug, Clone, Copy)]
pub struct ModelPlaceOptions {
    pub place: PlaceOptions,
    pub forecast: Forecast,
    /// Past iterations the refinement replays (0: plan on the forecast alone).
    pub history_samples: usize,
}

/// One layer's plan and its figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerPlan {
    pub layer: usize,
    pub placement: LayerPlacement,
    pub baseline: LayerPlacement,
    /// Balancedness on the forecast.
    pub balancedness: f64,
    pub baseline_balancedness: f64,
}

/// Plans every layer on the history's iterations `..until` (all when `None`).
pub fn plan_layers(h: &LoadHistory, o: &ModelPlaceOptions, until: Option<usize>) -> Vec<LayerPlan> {
    let seen = &h.iterations[..until.unwrap_or(h.iterations.len()).min(h.iterations.len())];
    (0..h.layers)
        .into_par_iter()
        .map(|layer| {
            let past: Vec<&[f64]> = seen.iter().map(|it| it[layer].as_slice()).collect();
            let (mean, _) = forecast(&past, o.forecast);
            let samples = &past[past.len().saturating_sub(o.history_samples)..];
            let placement = place_with_history(&mean, samples, &o.place, None);
            let baseline = eplb(&mean, o.place.gpus, o.place.slots_per_gpu);
            LayerPlan {
                layer,
                balancedness: balancedness(&placement.gpu_loads(&mean)),
                baseline_balancedness: balancedness(&baseline.gpu_loads(&mean)),
                placement,
                baseline,
            }
        })
        .collect()
}

/// A layer's plan by the robust planner, with planned token shares when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RobustLayerPlan {
    pub plan: LayerPlan,
    /// `shares[g][i]`: the fraction of expert `gpu_experts[g][i]`'s tokens its copy on GPU g serves.
    pub shares: Option<Vec<Vec<f64>>>,
    /// Expected maximum GPU load (mean 1) over the history's iterations, even split.
    pub expected_max: f64,
}

/// Plans every layer with the robust planner ([`super::robust`]) on the history's iterations `..until`,
/// with EPLB from their mean beside it; plans token shares when `shares` is set.
pub fn plan_layers_robust(
    h: &LoadHistory,
    o: &super::robust::RobustOptions,
    until: Option<usize>,
    shares: bool,
) -> Vec<RobustLayerPlan> {
    use super::robust::{Samples, fresh, plan_shares};
    let seen = &h.iterations[..until.unwrap_or(h.iterations.len()).min(h.iterations.len())];
    (0..h.layers)
        .into_par_iter()
        .map(|layer| {
            let past: Vec<&[f64]> = seen.iter().map(|it| it[layer].as_slice()).collect();
            let smp = o
                .samples(&past, o.place.gpus)
                .unwrap_or_else(|| Samples::uniform(h.experts, o.place.gpus));
            let (mean, _) = if past.is_empty() {
                (vec![1.0; h.experts], Vec::new())
            } else {
                forecast(&past, Forecast::MovingAverage { window: usize::MAX })
            };
            let c = fresh(&smp, o);
            let baseline = eplb(&mean, o.place.gpus, o.place.slots_per_gpu);
            let shares = shares
                .then(|| plan_shares(&c.placement, &smp, 4 * o.place.gpus * o.place.slots_per_gpu));
            RobustLayerPlan {
                plan: LayerPlan {
                    layer,
                    balancedness: balancedness(&c.placement.gpu_loads(&mean)),
                    baseline_balancedness: balancedness(&baseline.gpu_loads(&mean)),
                    placement: c.placement,
                    baseline,
                },
                shares,
                expected_max: c.objective,
            }
        })
        .collect()
}

/// Balancedness of `plans` (ours, baseline) on every (iteration, layer) of the iterations `from..` of the
/// history: its median, 10th percentile and mean.
pub fn evaluate(h: &LoadHistory, plans: &[LayerPlan], from: usize) -> Option<(Judged, Judged)> {
    let later = h.iterations.get(from..).filter(|l| !l.is_empty())?;
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for it in later {
        for p in plans {
            ours.push(balancedness(&p.placement.gpu_loads(&it[p.layer])));
            base.push(balancedness(&p.baseline.gpu_loads(&it[p.layer])));
        }
    }
    Some((Judged::of(ours), Judged::of(base)))
}
