//! The paged KV cache: fixed-size blocks of `block_size` tokens, handed out as sequences grow and all
//! returned when a sequence finishes or is preempted (vLLM's PagedAttention block manager, counted: which
//! physical block a sequence holds does not change its cost).
//!
//! Capacity comes from the memory model: on every rank, the share `gpu_memory_utilization` of its memory
//! less its weights (routed experts in their own element type: FP8 experts take a byte per weight) and the
//! activations of the largest step ([`crate::memory::rank_memory`]), divided by
//! the KV bytes of a block (`block_size × layers × kv_bytes_per_token_per_layer`, the model's attention
//! layout: MHA, GQA or MLA's compressed latent). Attention is data-parallel across the instance's ranks
//! (DP-attention), so the instance's cache is the sum of its ranks' caches.

use crate::memory::{GIB, RoutedTokens, rank_memory};
use crate::scenario::{Scenario, Strategy};
use crate::strategy::ep::{params_on_rank, slots_per_rank};

/// Block accounting of one instance's KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagedKv {
    pub block_size: u64,
    pub capacity: u64,
    pub used: u64,
}

impl PagedKv {
    pub fn new(block_size: u64, capacity: u64) -> Self {
        PagedKv {
            block_size,
            capacity,
            used: 0,
        }
    }

    /// Blocks that hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(self.block_size)
    }

    pub fn free(&self) -> u64 {
        self.capacity - self.used
    }

    /// Grows a sequence holding `held` blocks to hold `tokens` tokens; false (and nothing taken) when the
    /// cache lacks the blocks.
    pub fn grow(&mut self, held: &mut u64, tokens: u64) -> bool {
        let need = self.blocks_for(tokens).saturating_sub(*held);
        if need > self.free() {
            return false;
        }
        self.used += need;
        *held += need;
        true
    }

    /// Returns a sequence's blocks.
    pub fn release(&mut self, held: &mut u64) {
        self.used -= *held;
        *held = 0;
    }
}

/// KV bytes one token takes over all layers.
pub fn kv_bytes_per_token(s: &Scenario) -> f64 {
    s.model.layers as f64 * s.model.kv_bytes_per_token_per_layer as f64
}

/// The instance's KV-cache capacity in blocks from the memory model (see the module doc), or why there is
/// none (the weights and activations leave no room).
pub fn capacity_blocks(
    s: &Scenario,
    strategy: &Strategy,
    block_size: u64,
    utilization: f64,
) -> Result<u64, String> {
    let g = s.cluster.gpus();
    // The largest step: its tokens on each rank, each routed to top_k experts (the mean rank's share).
    let t = s.tokens_per_rank() as f64 * s.model.top_k as f64;
    let p = params_on_rank(s, slots_per_rank(s, strategy));
    let mem = rank_memory(
        s,
        p,
        RoutedTokens {
            peak_layer: t,
            all_layers: t,
        },
    );
    let budget = s.cluster.gpu_memory_gib * utilization;
    let free_gib = budget - mem.params_gib - mem.activations_gib;
    let block_bytes = block_size as f64 * kv_bytes_per_token(s);
    let per_rank = (free_gib * GIB / block_bytes).floor();
    if per_rank.is_nan() || per_rank < 1.0 {
        return Err(format!(
            "strategy `{}`: no room for a KV cache: {:.2} GiB of weights and {:.2} GiB of activations per GPU \
             against {:.2} GiB usable ({} GiB × gpu_memory_utilization {utilization}); use more GPUs, a \
             larger ep_size, or set serving.kv_blocks",
            strategy.name, mem.params_gib, mem.activations_gib, budget, s.cluster.gpu_memory_gib
        ));
    }
    Ok((per_rank * g as f64).min(1e15) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_as_sequences_grow_and_refused_past_capacity() {
        let mut kv = PagedKv::new(16, 4);
        let mut a = 0;
        assert!(kv.grow(&mut a, 16));
        assert_eq!((a, kv.used), (1, 1));
        assert!(kv.grow(&mut a, 17));
        assert_eq!((a, kv.used), (2, 2));
        let mut b = 0;
        assert!(!kv.grow(&mut b, 48), "3 blocks do not fit in the 2 left");
        assert_eq!((b, kv.used), (0, 2));
        assert!(kv.grow(&mut b, 32));
        kv.release(&mut a);
        assert_eq!((a, kv.used, kv.free()), (0, 2, 2));
    }
}
