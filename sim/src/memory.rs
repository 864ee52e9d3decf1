//! Memory per rank: parameters, gradients, optimizer state, activations and KV cache.
//!
//! Training (bytes per parameter): weights `dtype_bytes`, gradients `grad_bytes_per_param`, optimizer
//! `optimizer_bytes_per_param` (12 for mixed-precision Adam: ≥ 6× the bf16 weights). ZeRO stage 1 shards the
//! optimizer state over the data-parallel replicas of each parameter, stage 2 also the gradients, stage 3
//! also the weights. Dense parameters are replicated on every rank; a routed expert on `gpus / ep_size`
//! ranks. Activations per layer and token are counted module by module from the model's shapes
//! (`crate::activations`: norms, queries/keys/values as fused attention keeps them, FFN intermediates,
//! router logits, and `(2·d + 3·d_ff)·dtype` bytes per routed copy), less what selective recomputation
//! drops; full activation checkpointing keeps only each layer's input (2·d bytes per token) plus one
//! layer's working set.

use crate::activations;
use crate::scenario::Scenario;
use crate::scenario::file::Mode;
use crate::scenario::recompute::RecomputeModules;
use serde::{Deserialize, Serialize};

pub const GIB: f64 = (1u64 << 30) as f64;

/// One rank's memory, in GiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryBreakdown {
    pub params_gib: f64,
    pub grads_gib: f64,
    pub optimizer_gib: f64,
    pub activations_gib: f64,
    pub kv_cache_gib: f64,
    pub total_gib: f64,
}

/// Parameters held by one rank, split by how many ranks replicate them.
#[derive(Debug, Clone, Copy)]
pub struct ParamsOnRank {
    /// Parameters replicated on every rank (attention, dense FFN, shared experts, gates, embeddings).
    pub dense: f64,
    /// Parameters of routed experts on this rank.
    pub experts: f64,
    /// Data-parallel replicas of the dense parameters.
    pub dense_replicas: f64,
    /// Replicas of each routed expert.
    pub expert_replicas: f64,
}

/// Routed tokens a rank's activations hold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoutedTokens {
    /// The most its experts received in one MoE layer (one layer's working set).
    pub peak_layer: f64,
    /// The most its experts received over all MoE layers of one micro-batch (stored for backward without
    /// checkpointing). Each rank's own per-layer tokens: the hot rank changes from layer to layer.
    pub all_layers: f64,
}

/// Weights of an inference rank: the dense parts in the model's dtype, the routed experts in their own
/// element type (FP8 experts are served as FP8 weights, one byte each; in training the optimizer's copies
/// dominate and the weights count in the model's dtype).
pub(crate) fn inference_params_bytes(s: &Scenario, p: ParamsOnRank) -> f64 {
    p.dense * s.model.dtype_bytes as f64 + p.experts * s.model.expert_dtype.bytes() as f64
}

/// Bytes one routed token copy keeps for the expert's backward: its input and output (2·d) and the FFN's
/// intermediates (3·f for SwiGLU), in the model's dtype (see [`crate::activations`]).
pub fn routed_token_bytes(s: &Scenario) -> f64 {
    routed_token_slice_bytes(s, 1)
}

/// [`routed_token_bytes`] on one GPU of an `etp`-way expert-tensor-parallel group: the token's input and
/// output whole, the FFN's intermediates `1/etp` as wide.
pub fn routed_token_slice_bytes(s: &Scenario, etp: usize) -> f64 {
    activations::kept(&s.model, true, etp, RecomputeModules::NONE).per_routed_copy
}

/// One layer's full activations over `tokens` of a rank plus the routed copies its experts received: the
/// working set of the largest layer (see [`crate::activations`]).
pub fn layer_activation_bytes(s: &Scenario, tokens: f64, peak_routed_tokens: f64) -> f64 {
    activations::working_set(&s.model, 1, tokens, peak_routed_tokens)
}

/// What a training rank keeps of every layer of one micro-batch over `tokens` of its shard with the
/// scenario's selective recomputation (`training.recompute_modules`), its experts receiving `routed` copies
/// over all of them (`etp`-way expert slices).
pub fn stored_layers_bytes(
    s: &Scenario,
    dense_layers: f64,
    moe_layers: f64,
    tokens: f64,
    routed: f64,
    etp: usize,
) -> f64 {
    let rc = s.training.recompute_modules;
    let dense = activations::kept(&s.model, false, etp, rc);
    let moe = activations::kept(&s.model, true, etp, rc);
    tokens * (dense_layers * dense.per_token + moe_layers * moe.per_token)
        + routed * moe.per_routed_copy
}

/// Weights, gradients and optimizer state of a training rank holding `p`, in GiB, each sharded over its
/// parameters' replicas from its ZeRO stage on (optimizer from 1, gradients from 2, weights from 3).
pub fn training_state_gib(s: &Scenario, p: ParamsOnRank) -> (f64, f64, f64) {
    let t = &s.training;
    let shard = |replicas: f64, from_stage: u8| {
        if t.zero_stage >= from_stage {
            replicas
        } else {
            1.0
        }
    };
    let per_param = |bytes: f64, from_stage: u8| {
        bytes
            * (p.dense / shard(p.dense_replicas, from_stage)
                + p.experts / shard(p.expert_replicas, from_stage))
    };
    (
        per_param(s.model.dtype_bytes as f64, 3) / GIB,
        per_param(t.grad_bytes_per_param, 2) / GIB,
        per_param(t.optimizer_bytes_per_param, 1) / GIB,
    )
}

/// Memory of a rank that holds `p` parameters and whose experts receive `routed` tokens.
pub fn rank_memory(s: &Scenario, p: ParamsOnRank, routed: RoutedTokens) -> MemoryBreakdown {
    let peak_routed_tokens = routed.peak_layer;
    let m = &s.model;
    let dtype = m.dtype_bytes as f64;
    let d = m.d_model as f64;
    let tokens = s.tokens_per_rank() as f64;
    let layers = m.layers as f64;
    let layer_full = layer_activation_bytes(s, tokens, peak_routed_tokens);
    let mut out = MemoryBreakdown::default();
    match s.workload.mode {
        Mode::Training => {
            let t = &s.training;
            (out.params_gib, out.grads_gib, out.optimizer_gib) = training_state_gib(s, p);
            // The loss over the vocabulary keeps its softmax until the backward; its transient buffer takes
            // the place of a layer's working set while it runs.
            let (kept, transient) =
                crate::strategy::output_head::loss_memory_bytes(s, tokens as u64, 1);
            let act = if t.activation_checkpointing {
                layers * tokens * 2.0 * d * dtype + kept + layer_full.max(transient)
            } else {
                let dense_layers = m.first_dense_layers.min(m.layers) as f64;
                stored_layers_bytes(
                    s,
                    dense_layers,
                    layers - dense_layers,
                    tokens,
                    routed.all_layers.max(peak_routed_tokens),
                    1,
                ) + kept
                    + transient
            };
            // Micro-batches run one after another: one micro-batch's activations are live at a time.
            out.activations_gib = act / GIB;
        }
        // A serving step holds the KV cache of the sequences it decodes (their share on this rank).
        Mode::Serving => {
            out.params_gib = inference_params_bytes(s, p) / GIB;
            out.activations_gib = layer_full / GIB;
            let context = s.workload.step.map_or(0, |st| st.decode_kv_tokens) as f64;
            out.kv_cache_gib = context * layers * m.kv_bytes_per_token_per_layer as f64 / GIB;
        }
        // Prefill and decode hold the KV cache of every micro-batch's sequences: an iteration serves each
        // micro-batch in turn and each keeps its cache (as the pipelined stages count it).
        Mode::Prefill | Mode::Decode => {
            out.params_gib = inference_params_bytes(s, p) / GIB;
            out.activations_gib = layer_full / GIB;
            let sequences = m.micro_batch as f64 * s.workload.micro_batches.max(1) as f64;
            let context = sequences * m.seq_len as f64;
            out.kv_cache_gib = context * layers * m.kv_bytes_per_token_per_layer as f64 / GIB;
        }
    }
    out.total_gib =
        out.params_gib + out.grads_gib + out.optimizer_gib + out.activations_gib + out.kv_cache_gib;
    out
}
