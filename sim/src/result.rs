//! Simulation results: plain data that the CLI, reports and TUI all read.

use crate::collective::Cause;
use crate::memory::MemoryBreakdown;
use crate::stats::Distribution;
pub use crate::strategy::fssdp::FssdpStats;
pub use crate::strategy::offload::OffloadStats;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// All strategies of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulationReport {
    pub scenario: String,
    pub results: Vec<StrategyResult>,
    /// Set by `plan`: the strategy chosen under the objective.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
}

/// One strategy's simulated run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub kind: String,
    pub iterations: usize,
    pub step_time_ms: Distribution,
    /// Mean milliseconds per iteration on the critical path, per phase.
    pub breakdown_ms: BTreeMap<String, f64>,
    /// Mean over ranks and iterations: communication time (collectives, copies) during which the rank's
    /// compute stream was idle — what the step waits on.
    #[serde(default)]
    pub comm_exposed_ms: f64,
    /// Mean over ranks and iterations: communication time overlapped by the rank's own compute.
    #[serde(default)]
    pub comm_hidden_ms: f64,
    /// The network backend that priced transfers (`analytic` or `flow`).
    #[serde(default)]
    pub network: String,
    /// Ranks that were the iteration's straggler, most often first.
    pub stragglers: Vec<Straggler>,
    pub memory_peak_gib: f64,
    pub oom: bool,
    pub tokens_per_s: f64,
    pub events: u64,
    /// Flows the flow backend simulated (0 under the analytic backend).
    #[serde(default)]
    pub flows: u64,
    /// Wall-clock seconds this simulation took (absent with `--no-timing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_seconds: Option<f64>,
    /// Memory of the rank with the peak, by kind.
    pub memory: MemoryBreakdown,
    /// Fraction of routed tokens dropped by the capacity factor.
    pub dropped_fraction: f64,
    /// Iterations at the start that run before the strategy's steady state (ep-replicated: the first
    /// re-plan window, planned for uniform load). `step_time_ms` includes them; `steady_step_time_ms`
    /// does not.
    #[serde(default)]
    pub warmup_iterations: usize,
    /// Step time over the iterations after the warm-up (absent when the strategy has no warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_step_time_ms: Option<Distribution>,
    /// Bytes per iteration that left their GPU in every collective: forward and backward all-to-alls,
    /// gradient synchronisation, sparse collectives, re-sharding and moved expert copies.
    pub network_bytes_per_iteration: f64,
    pub per_rank: Vec<RankSummary>,
    pub per_iteration: Vec<IterationSummary>,
    /// Experts on each rank of one EP group (the same in every group and layer for static EP).
    pub placement: Vec<Vec<usize>>,
    pub ep_size: usize,
    /// Parts each micro-batch was split into for communication/compute overlap.
    #[serde(default = "one")]
    pub overlap_micro_batches: usize,
    /// FSSDP figures (kind "fssdp" only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fssdp: Option<FssdpStats>,
    /// Offloading figures (kind "offload" only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<OffloadStats>,
    /// EP with replication: the final plan per MoE layer and what re-planning cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationResult>,
    /// Straggler prediction for the window after `workload.plan_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<crate::forecast::ForecastResult>,
}

/// What an `ep-replicated` run placed and moved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicationResult {
    pub slots_per_gpu: usize,
    pub replan_interval: usize,
    pub method: crate::scenario::file::PlacementMethod,
    pub token_split: crate::scenario::file::TokenSplit,
    /// Expert copies moved (all layers, one EP group) at each re-plan.
    pub moved_copies_per_replan: Vec<usize>,
    /// `placement_per_layer[layer][rank]`: experts on each rank of one EP group in the final plan.
    pub placement_per_layer: Vec<Vec<Vec<usize>>>,
}

/// A rank that held iterations up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Straggler {
    pub rank: usize,
    /// Fraction of iterations in which this rank was the straggler.
    pub critical_share: f64,
    /// What held it most often.
    pub cause: Cause,
}

/// Per-rank means over iterations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankSummary {
    pub rank: usize,
    /// Tokens its experts received per iteration.
    pub tokens_received: f64,
    /// Compute-stream busy time per iteration.
    pub busy_ms: f64,
    /// Step time minus busy time.
    pub idle_ms: f64,
}

/// One iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IterationSummary {
    pub step_ms: f64,
    /// The straggler of this iteration, if it was not balanced.
    pub critical_rank: Option<usize>,
    pub cause: Option<Cause>,
}

fn one() -> usize {
    1
}
