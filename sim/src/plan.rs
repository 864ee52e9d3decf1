//! Choosing a strategy under the scenario's objective, and the plan file that records the choice.

use crate::result::{SimulationReport, StrategyResult};
use crate::scenario::Scenario;
use crate::scenario::file::Metric;
use crate::stats::Distribution;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a result may not be chosen under the scenario's objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exclusion {
    /// Its peak memory per GPU exceeds `objective.memory_limit_gib`.
    OutOfMemory { peak_gib: f64, limit_gib: f64 },
    /// It drops more (token, expert) assignments than `objective.max_dropped_fraction` allows.
    Drops { fraction: f64, limit: f64 },
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exclusion::OutOfMemory {
                peak_gib,
                limit_gib,
            } => write!(f, "out of memory, {peak_gib:.1} GiB > {limit_gib:.1} GiB"),
            Exclusion::Drops { fraction, limit } => write!(
                f,
                "drops {:.1}% of assignments, more than the {}% allowed",
                100.0 * fraction,
                100.0 * limit
            ),
        }
    }
}

/// Why `r` may not be chosen under `s`'s objective (memory first), or `None` when it may.
pub fn exclusion(r: &StrategyResult, s: &Scenario) -> Option<Exclusion> {
    if r.oom {
        return Some(Exclusion::OutOfMemory {
            peak_gib: r.memory_peak_gib,
            limit_gib: s.objective.memory_limit_gib,
        });
    }
    (r.dropped_fraction > s.objective.max_dropped_fraction).then_some(Exclusion::Drops {
        fraction: r.dropped_fraction,
        limit: s.objective.max_dropped_fraction,
    })
}

/// The objective's score of a result: lower is better.
pub fn score(r: &StrategyResult, metric: Metric) -> f64 {
    match metric {
        Metric::TokensPerS => -r.tokens_per_s,
        Metric::StepTimeMean => r.step_time_ms.mean,
        Metric::StepTimeP50 => r.step_time_ms.p50,
        Metric::StepTimeP99 => r.step_time_ms.p99,
    }
}

/// The index of the best strategy that fits in memory and drops at most `objective.max_dropped_fraction`
/// of its assignments, or `None` if none does. Ties go to the strategy listed first.
pub fn choose(report: &SimulationReport, s: &Scenario) -> Option<usize> {
    report
        .results
        .iter()
        .enumerate()
        .filter(|(_, r)| exclusion(r, s).is_none())
        .min_by(|(i, a), (j, b)| {
            score(a, s.objective.metric)
                .total_cmp(&score(b, s.objective.metric))
                .then(i.cmp(j))
        })
        .map(|(i, _)| i)
}

/// What `plan` writes: the chosen strategy, its parameters and placement, and what moesim predicts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub moesim_version: String,
    pub scenario: String,
    pub seed: u64,
    pub objective: Metric,
    pub chosen: String,
    pub kind: String,
    pub parameters: PlanParameters,
    /// Experts on each rank of one EP group.
    pub placement: PlanPlacement,
    pub predicted: Prediction,
    /// The scenario as resolved (presets merged), so the plan can be reproduced and validated.
    pub resolved_scenario: Scenario,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanParameters {
    pub ep_size: usize,
    pub capacity_factor: Option<f64>,
    /// EP with replication: slots, re-plan interval, forecast window, placement method, token split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<crate::scenario::Replication>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fssdp: Option<crate::scenario::knobs::FssdpKnobs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<crate::scenario::knobs::OffloadKnobs>,
    /// Tensor and pipeline parallelism (`tp`, `pp`, schedule, virtual stages, layers per stage); absent
    /// for plain EP × DP.
    #[serde(
        default,
        skip_serializing_if = "crate::scenario::parallel::Parallel::is_single"
    )]
    pub parallel: crate::scenario::parallel::Parallel,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanPlacement {
    pub gpus: usize,
    pub ep_size: usize,
    /// `gpu_experts[i]`: experts on rank i of every EP group (first MoE layer for ep-replicated).
    pub gpu_experts: Vec<Vec<usize>>,
    /// EP with replication: `gpu_experts_per_layer[layer][i]`, the final plan of every MoE layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_experts_per_layer: Option<Vec<Vec<Vec<usize>>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prediction {
    pub step_time_ms: Distribution,
    pub tokens_per_s: f64,
    pub memory_peak_gib: f64,
    /// Fraction of (token, expert) assignments dropped by the capacity factor.
    #[serde(default)]
    pub dropped_fraction: f64,
    pub breakdown_ms: BTreeMap<String, f64>,
    /// Per rank: expert tokens received per iteration (mean), for validation on hardware.
    pub tokens_received_per_rank: Vec<f64>,
}

/// The plan for result `chosen` of `report`.
pub fn make_plan(s: &Scenario, report: &SimulationReport, chosen: usize) -> Plan {
    let r = &report.results[chosen];
    let st = &s.strategies[chosen];
    Plan {
        moesim_version: env!("CARGO_PKG_VERSION").into(),
        scenario: s.name.clone(),
        seed: s.seed,
        objective: s.objective.metric,
        chosen: r.strategy.clone(),
        kind: r.kind.clone(),
        parameters: PlanParameters {
            ep_size: st.ep_size,
            capacity_factor: st.capacity_factor,
            replication: st.replication,
            fssdp: st.fssdp.clone(),
            offload: st.offload.clone(),
            parallel: st.parallel.clone(),
        },
        placement: PlanPlacement {
            gpus: s.cluster.gpus(),
            ep_size: r.ep_size,
            gpu_experts: r.placement.clone(),
            gpu_experts_per_layer: r
                .replication
                .as_ref()
                .map(|x| x.placement_per_layer.clone()),
        },
        predicted: Prediction {
            step_time_ms: r.step_time_ms,
            tokens_per_s: r.tokens_per_s,
            memory_peak_gib: r.memory_peak_gib,
            dropped_fraction: r.dropped_fraction,
            breakdown_ms: r.breakdown_ms.clone(),
            tokens_received_per_rank: r.per_rank.iter().map(|p| p.tokens_received).collect(),
        },
        resolved_scenario: s.clone(),
    }
}
