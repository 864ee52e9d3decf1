//! The phases an iteration's time is broken into.

use serde::{Deserialize, Serialize};

/// What an operation is doing. Backward operations carry the phase of their forward counterpart (the
/// backward of `combine` is reported under `combine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Attention, gate, shared experts and dense FFN layers.
    DenseCompute,
    /// Token all-to-all towards the experts.
    Dispatch,
    /// Routed expert GEMMs.
    ExpertCompute,
    /// Token all-to-all back from the experts.
    Combine,
    /// Data-parallel gradient synchronisation.
    GradSync,
    /// Optimizer step.
    Optimizer,
    /// Synchronisation points (zero duration).
    Barrier,
    /// FSSDP SparseAllGather: owners broadcast experts to the ranks that materialize them.
    Spag,
    /// FSSDP SparseReduceScatter: replicas' gradients reduced back to each expert's owner.
    Sprs,
    /// Offloading: expert weights copied from host memory or SSD to the GPU (demand fetch or prefetch).
    ExpertFetch,
    /// FSSDP heterogeneous re-sharding: owners' parameters and optimizer state moved to new owners.
    Reshard,
    /// EP with replication: expert copies (and their optimizer state) moved to a new placement.
    Rebalance,
    /// Pipeline parallelism: activations (forward) and their gradients (backward) sent between stages.
    PipelineSend,
    /// Tensor parallelism: the all-reduces (or reduce-scatters and all-gathers with sequence
    /// parallelism) inside a layer.
    TensorParallel,
}

impl Phase {
    /// Phases every result reports; `Spag`, `Sprs`, `Reshard` (FSSDP), `ExpertFetch` (offloading) and
    /// `Rebalance` (EP with replication) are reported only by the strategies that have them.
    pub const REPORTED: [Phase; 6] = [
        Phase::DenseCompute,
        Phase::Dispatch,
        Phase::ExpertCompute,
        Phase::Combine,
        Phase::GradSync,
        Phase::Optimizer,
    ];
    pub const COUNT: usize = 14;

    pub fn name(self) -> &'static str {
        match self {
            Phase::DenseCompute => "dense_compute",
            Phase::Dispatch => "dispatch",
            Phase::ExpertCompute => "expert_compute",
            Phase::Combine => "combine",
            Phase::GradSync => "grad_sync",
            Phase::Optimizer => "optimizer",
            Phase::Barrier => "barrier",
            Phase::Spag => "spag",
            Phase::Sprs => "sprs",
            Phase::ExpertFetch => "expert_fetch",
            Phase::Reshard => "reshard",
            Phase::Rebalance => "rebalance",
            Phase::PipelineSend => "pipeline_send",
            Phase::TensorParallel => "tensor_parallel",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
