//! How far hedging could go against bursts that no history forecasts.
//!
//! On a synthetic workload with bursts (`Dynamics::burst_prob`: one expert, drawn at random, multiplies its
//! load for one iteration), a plan made from the past cannot know which expert bursts next. The most it can
//! know is the present burst-free state and the burst law itself. This module plans with exactly that at
//! the harness's re-plan points ([`super::ceiling`]): the robust planner ([`super::robust`]) given, as its scenarios, the
//! generator's exact state at the last iteration before the plan (probability `1 − p`) and that state with
//! each expert in turn burst (probability `p / experts` each), so its objective is the expected maximum GPU
//! load under the true law. Judged like the harness (each later iteration and layer on its own, a fresh plan
//! every `replan_every` iterations, moves free), it shows the ceiling of hedging: where it does not clear a
//! margin over EPLB, no plan made from the past will.

use super::ceiling::{judge_at_replans, of_synthetic_workloads};
use super::harness::{Setup, SyntheticWorkload};
use super::judged::Judged;
use super::robust::{RobustOptions, Samples, fresh};
use super::search::PlaceOptions;
use serde::Serialize;

/// One bursty workload judged with plans that know the present and the burst law.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurstCeiling {
    pub workload: String,
    /// Iterations between the re-plan points (the harness setup's).
    pub replan_every: usize,
    /// Plans given the exact burst-free state only.
    pub exact_state: Judged,
    /// Plans given the exact state and the burst law (see the module doc).
    pub burst_law: Judged,
    /// EPLB from the mean load of the harness's history window, re-planned at the same points.
    pub eplb: Judged,
}

/// The scenarios of the burst law around `state`: the state itself with probability `1 − prob`, and the
/// state with expert `e` multiplied by `factor` with probability `prob / experts`, for every `e`.
pub fn burst_scenarios(state: &[f64], prob: f64, factor: f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let experts = state.len();
    let mut loads = vec![state.to_vec()];
    let mut weight = vec![1.0 - prob];
    for e in 0..experts {
        let mut v = state.to_vec();
        v[e] *= factor;
        loads.push(v);
        weight.push(prob / experts as f64);
    }
    (loads, weight)
}

/// [`BurstCeiling`] of `w` under the harness setup `s`; `None` when `w` has no bursts.
pub fn burst_ceiling(w: &SyntheticWorkload, s: &Setup) -> Option<BurstCeiling> {
    let d = w.dynamics;
    if d.burst_prob <= 0.0 {
        return None;
    }
    let o = RobustOptions::new(PlaceOptions::new(s.gpus, s.slots_per_gpu, s.gpus_per_node));
    let judged = judge_at_replans(w, s, |p| {
        let exact = Samples::new(&[p.state], s.gpus, 1, f64::INFINITY);
        let (loads, weight) = burst_scenarios(p.state, d.burst_prob, d.burst_factor);
        let law = Samples::from_scenarios(&loads, &weight, s.gpus);
        match (exact, law) {
            (Some(exact), Some(law)) => {
                vec![fresh(&exact, &o).placement, fresh(&law, &o).placement]
            }
            _ => Vec::new(),
        }
    });
    let [exact_state, burst_law, eplb] = <[Judged; 3]>::try_from(judged).ok()?;
    Some(BurstCeiling {
        workload: w.name.clone(),
        replan_every: s.replan_every.max(1),
        exact_state,
        burst_law,
        eplb,
    })
}

/// [`burst_ceiling`] of every synthetic workload of the harness that has bursts, with its setup.
pub fn burst_ceilings() -> Vec<BurstCeiling> {
    of_synthetic_workloads(burst_ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_law_weighs_the_calm_state_and_each_expert_bursting() {
        let (loads, weight) = burst_scenarios(&[1.0, 2.0, 3.0], 0.3, 4.0);
        assert_eq!(loads.len(), 4);
        assert_eq!(loads[0], vec![1.0, 2.0, 3.0]);
        assert_eq!(loads[2], vec![1.0, 8.0, 3.0]);
        assert!((weight.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((weight[0] - 0.7).abs() < 1e-12 && (weight[3] - 0.1).abs() < 1e-12);
    }
}
