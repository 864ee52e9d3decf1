//! What every strategy reports for one simulated iteration: the run's outcome and its routing facts.

use crate::iteration::IterationOutcome;

/// One iteration's outcome with its routing facts.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationRecord {
    pub outcome: IterationOutcome,
    /// Per rank: tokens its experts received, summed over layers and micro-batches.
    pub tokens_received: Vec<u64>,
    /// Per rank: the most tokens its experts received in one MoE layer.
    pub peak_layer_tokens: Vec<u64>,
    /// Per rank: the most tokens its experts received over every MoE layer of one micro-batch that it keeps
    /// at once (what its stored activations must hold without checkpointing): all of them, or under a
    /// pipeline one model chunk's.
    pub activation_tokens: Vec<u64>,
    pub routed: u64,
    pub dropped: u64,
}

impl IterationRecord {
    /// Step time in milliseconds.
    pub fn step_ms(&self) -> f64 {
        crate::engine::to_ms(self.outcome.step)
    }
}

/// Routed tokens the busiest rank's activations hold over a run.
pub fn routed_tokens<'r>(
    runs: impl Iterator<Item = &'r IterationRecord>,
) -> crate::memory::RoutedTokens {
    let mut out = crate::memory::RoutedTokens::default();
    for r in runs {
        for &t in &r.peak_layer_tokens {
            out.peak_layer = out.peak_layer.max(t as f64);
        }
        for &t in &r.activation_tokens {
            out.all_layers = out.all_layers.max(t as f64);
        }
    }
    out
}
