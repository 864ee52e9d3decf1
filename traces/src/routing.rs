//! The routing data model shared by generators, trace readers and the simulator.

use serde::{Deserialize, Serialize};

/// The dimensions of a routing workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingShape {
    /// Number of MoE layers (dense layers carry no routing).
    pub moe_layers: usize,
    /// Routed experts per MoE layer (shared experts are not routed).
    pub experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Source ranks (GPUs holding tokens).
    pub ranks: usize,
    /// Micro-batches per iteration.
    pub micro_batches: usize,
    /// Tokens each rank holds per micro-batch.
    pub tokens_per_rank: u64,
}

impl RoutingShape {
    /// Number of counters in one iteration.
    pub fn cells(&self) -> usize {
        self.micro_batches * self.moe_layers * self.ranks * self.experts
    }
}

/// One iteration's routing: `counts[mb][layer][rank][expert]` tokens, flattened row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IterationRouting {
    pub shape: RoutingShape,
    pub counts: Vec<u32>,
}

impl IterationRouting {
    /// An all-zero iteration of the given shape.
    pub fn zeros(shape: RoutingShape) -> Self {
        IterationRouting {
            shape,
            counts: vec![0; shape.cells()],
        }
    }

    fn offset(&self, mb: usize, layer: usize) -> usize {
        (mb * self.shape.moe_layers + layer) * self.shape.ranks * self.shape.experts
    }

    /// Tokens that `rank` routes to each expert in (`mb`, `layer`).
    pub fn rank_counts(&self, mb: usize, layer: usize, rank: usize) -> &[u32] {
        let e = self.shape.experts;
        let o = self.offset(mb, layer) + rank * e;
        &self.counts[o..o + e]
    }

    /// Mutable access to one rank's counts.
    pub fn rank_counts_mut(&mut self, mb: usize, layer: usize, rank: usize) -> &mut [u32] {
        let e = self.shape.experts;
        let o = self.offset(mb, layer) + rank * e;
        &mut self.counts[o..o + e]
    }

    /// The `[rank][expert]` matrix of (`mb`, `layer`), flattened.
    pub fn layer_counts(&self, mb: usize, layer: usize) -> &[u32] {
        let o = self.offset(mb, layer);
        &self.counts[o..o + self.shape.ranks * self.shape.experts]
    }

    /// Mutable access to the `[rank][expert]` matrix of (`mb`, `layer`).
    pub fn layer_counts_mut(&mut self, mb: usize, layer: usize) -> &mut [u32] {
        let o = self.offset(mb, layer);
        let n = self.shape.ranks * self.shape.experts;
        &mut self.counts[o..o + n]
    }

    /// Tokens each expert receives from all ranks in (`mb`, `layer`).
    pub fn expert_loads(&self, mb: usize, layer: usize) -> Vec<u64> {
        let mut loads = vec![0u64; self.shape.experts];
        for row in self
            .layer_counts(mb, layer)
            .chunks_exact(self.shape.experts)
        {
            for (l, &c) in loads.iter_mut().zip(row) {
                *l += c as u64;
            }
        }
        loads
    }

    /// All routed assignments in this iteration.
    pub fn total_assignments(&self) -> u64 {
        self.counts.iter().map(|&c| c as u64).sum()
    }
}

/// Anything that can produce routing, one iteration at a time.
///
/// `fill_iteration` must be a pure function of the iteration index so that iterations can be produced in
/// parallel and in any order with identical results.
pub trait RoutingSource: Send + Sync {
    fn shape(&self) -> RoutingShape;
    /// Number of iterations available.
    fn iterations(&self) -> usize;
    /// Writes iteration `iteration` into `out` (whose shape equals [`RoutingSource::shape`]).
    fn fill_iteration(&self, iteration: usize, out: &mut IterationRouting);
    /// One line for reports: what this workload is.
    fn describe(&self) -> String;

    /// Convenience: a freshly allocated iteration.
    fn iteration(&self, iteration: usize) -> IterationRouting {
        let mut out = IterationRouting::zeros(self.shape());
        self.fill_iteration(iteration, &mut out);
        out
    }
}
