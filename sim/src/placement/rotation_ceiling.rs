//! How far hedging could go against a hot spot that moves where no history shows.
//!
//! On a synthetic workload with rotation (`Dynamics::rotate_every`: every so many iterations the whole
//! popularity moves on by one expert id), the iterations after a move, before the next re-plan, run on a
//! plan made for the old popularity. A plan made from the past could know *when* the next move comes (the
//! period shows in the history) but not *where* the popularity goes, unless it exploits the generator's
//! expert-id adjacency, which no real router has: under a move to an unknown place, each expert's new load
//! is another expert's old one, drawn without knowing which.
//!
//! This module plans, at the harness's re-plan points ([`super::ceiling`]), with the most a plan from the
//! past could know: the generator's exact present state, the exact time of the next move, and that the
//! move permutes the state to an unknown place. Its scenarios are the state with probability `1 − q` and
//! [`PERMUTATIONS`] random permutations of it with `q / PERMUTATIONS` each, `q` the share of the iterations
//! until the next re-plan that come after a move (0 where none does, so the plan is the exact-state plan).
//! The foresight plan is given where the popularity goes (the state moved on by one id, with the same `q`):
//! it shows what knowing the direction, and only that, would add. Where the hedged plan does not clear a
//! margin over EPLB, no plan made from the past will, except one that reads the direction off the
//! generator's id order.

use super::ceiling::{judge_at_replans, of_synthetic_workloads};
use super::harness::{Setup, SyntheticWorkload};
use super::judged::Judged;
use super::robust::{RobustOptions, Samples, fresh};
use super::search::PlaceOptions;
use moesim_traces::rng::rng_for;
use rand::seq::SliceRandom;
use serde::Serialize;

/// Random permutations standing for a move to an unknown place.
pub const PERMUTATIONS: usize = 64;

/// Seed of the permutations' random streams (one stream per layer and re-plan point, so the figures do
/// not depend on the thread count).
const SEED: u64 = 0x005e_ed70_7a7e;

/// One rotating workload judged with plans that know the present and when the hot spot moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RotationCeiling {
    pub workload: String,
    /// Iterations between the re-plan points (the harness setup's).
    pub replan_every: usize,
    /// Plans given the exact state only.
    pub exact_state: Judged,
    /// Plans given the exact state, when the next move comes, and that it goes to an unknown place.
    pub unknown_place: Judged,
    /// Plans given the exact state, when the next move comes, and where it goes (foresight).
    pub known_place: Judged,
    /// EPLB from the mean load of the harness's history window, re-planned at the same points.
    pub eplb: Judged,
}

/// Share of the iterations `t..end` (at most `every` of them) that come after a move the state at `t − 1`
/// has not seen, for a popularity that moves every `period` iterations.
pub fn share_after_a_move(t: usize, every: usize, end: usize, period: usize) -> f64 {
    let last = (t + every).min(end);
    if period == 0 || t == 0 || last <= t {
        return 0.0;
    }
    let moved = (t..last)
        .filter(|&i| i / period != (t - 1) / period)
        .count();
    moved as f64 / (last - t) as f64
}

/// The scenarios of a move to an unknown place: `state` with probability `1 − q`, and `draws` random
/// permutations of it with probability `q / draws` each.
pub fn unknown_place_scenarios(
    state: &[f64],
    q: f64,
    draws: usize,
    rng: &mut impl rand::Rng,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut loads = vec![state.to_vec()];
    let mut weight = vec![1.0 - q];
    for _ in 0..draws {
        let mut moved = state.to_vec();
        moved.shuffle(rng);
        loads.push(moved);
        weight.push(q / draws as f64);
    }
    (loads, weight)
}

/// `state` after the generator's next move: every expert takes the load of the one before it in id order.
pub fn moved_on_by_one(state: &[f64]) -> Vec<f64> {
    let e = state.len();
    (0..e).map(|i| state[(i + e - 1) % e]).collect()
}

/// [`RotationCeiling`] of `w` under the harness setup `s`; `None` when `w` does not rotate.
pub fn rotation_ceiling(w: &SyntheticWorkload, s: &Setup) -> Option<RotationCeiling> {
    let period = w.dynamics.rotate_every;
    if period == 0 {
        return None;
    }
    let o = RobustOptions::new(PlaceOptions::new(s.gpus, s.slots_per_gpu, s.gpus_per_node));
    let end = (s.history + s.judged).min(w.history.iterations.len());
    let judged = judge_at_replans(w, s, |p| {
        let q = share_after_a_move(p.t, s.replan_every.max(1), end, period);
        let mut rng = rng_for(SEED, &[p.layer as u64, p.t as u64]);
        let (loads, weight) = unknown_place_scenarios(p.state, q, PERMUTATIONS, &mut rng);
        let known = [p.state.to_vec(), moved_on_by_one(p.state)];
        let plans = [
            Samples::new(&[p.state], s.gpus, 1, f64::INFINITY),
            Samples::from_scenarios(&loads, &weight, s.gpus),
            Samples::from_scenarios(&known, &[1.0 - q, q], s.gpus),
        ];
        plans
            .iter()
            .map(|smp| smp.as_ref().map(|smp| fresh(smp, &o).placement))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    });
    let [exact_state, unknown_place, known_place, eplb] = <[Judged; 4]>::try_from(judged).ok()?;
    Some(RotationCeiling {
        workload: w.name.clone(),
        replan_every: s.replan_every.max(1),
        exact_state,
        unknown_place,
        known_place,
        eplb,
    })
}

/// [`rotation_ceiling`] of every synthetic workload of the harness that rotates, with its setup.
pub fn rotation_ceilings() -> Vec<RotationCeiling> {
    of_synthetic_workloads(rotation_ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_after_a_move_for_the_iterations_past_the_period_boundary() {
        // Period 20, re-plans every 10: the plan at 60 serves 60..70, all after the move at 60; the plan at
        // 70 serves 70..80 with nothing new; a plan at 55 serves 55..65, half after the move.
        assert_eq!(share_after_a_move(60, 10, 150, 20), 1.0);
        assert_eq!(share_after_a_move(70, 10, 150, 20), 0.0);
        assert_eq!(share_after_a_move(55, 10, 150, 20), 0.5);
        // The end of the run cuts the window; no period, no move.
        assert_eq!(share_after_a_move(58, 10, 61, 20), 1.0 / 3.0);
        assert_eq!(share_after_a_move(60, 10, 150, 0), 0.0);
    }

    #[test]
    fn an_unknown_place_keeps_the_loads_and_weighs_the_state_and_its_permutations() {
        let state = [1.0, 2.0, 3.0, 4.0];
        let mut rng = rng_for(1, &[]);
        let (loads, weight) = unknown_place_scenarios(&state, 0.25, 8, &mut rng);
        assert_eq!(loads.len(), 9);
        assert_eq!(loads[0], state.to_vec());
        for l in &loads {
            let mut sorted = l.clone();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(sorted, state.to_vec(), "a permutation of the state");
        }
        assert!(loads[1..].iter().any(|l| l.as_slice() != state));
        assert!((weight.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((weight[0] - 0.75).abs() < 1e-12);
        assert_eq!(moved_on_by_one(&state), vec![4.0, 1.0, 2.0, 3.0]);
    }
}
