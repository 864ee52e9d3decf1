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
    /// EP with replication: expert copies (and their optimizer state) moved to a new placement.
    Rebalance,
}

impl Phase {
    pub const REPORTED: [Phase; 7] = [
        Phase::DenseCompute,
        Phase::Dispatch,
        Phase::ExpertCompute,
        Phase::Combine,
        Phase::GradSync,
        Phase::Optimizer,
        Phase::Rebalance,
    ];
    pub const COUNT: usize = 8;

    pub fn name(self) -> &'static str {
        match self {
            Phase::DenseCompute => "dense_compute",
            Phase::Dispatch => "dispatch",
            Phase::ExpertCompute => "expert_compute",
            Phase::Combine => "combine",
            Phase::GradSync => "grad_sync",
            Phase::Optimizer => "optimizer",
            Phase::Barrier => "barrier",
            Phase::Rebalance => "rebalance",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}
