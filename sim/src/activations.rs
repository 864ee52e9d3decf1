//! What one Transformer layer keeps for its backward, module by module, from the model's shapes, and what
//! selective recomputation (`training.recompute_modules`) drops from it and costs.
//!
//! Counted per token of a rank's sequence shard: under tensor parallelism (sequence-parallel) a rank keeps
//! the norms' tensors for `t/tp` tokens and its `1/tp` of the heads' and FFN columns' tensors for all `t`
//! tokens, the same count per shard token. In the model's dtype `b` unless said:
//! - **norms**: the two RMSNorms' inputs (2·d, always kept) and outputs (2·d: the inputs of the attention
//!   projections and of the MLP/router); MLA adds its two latents (`q_lora + kv_lora`), each kept as its
//!   norm's input and again as its output. `layernorm` recomputes the outputs.
//! - **attention**: queries, keys and values as fused attention takes them — `heads·qk` queries, keys and
//!   values per KV head for MHA/GQA, per head for MLA after its up-projections (`mla_up_proj` recomputes
//!   these from the latents) — its output (`heads·v`, the output projection's input) and its log-sum-exp
//!   (one FP32 value per head; fused attention keeps no score matrix). `core_attn` checkpoints the fused
//!   kernel: its inputs and output stay (the projections keep them), its log-sum-exp goes.
//! - **FFN** of a dense layer or the shared experts: the up-projections' outputs (2·f for SwiGLU, f for
//!   GELU) and the activation's output (f); the router's FP32 logits over the experts. `mlp` checkpoints a
//!   dense layer's MLP (its input stays, as a norm's output).
//! - **each routed copy** on its expert's GPU: its permuted input and its output (2·d), the up-projections'
//!   and the activation's outputs (3·f/etp for SwiGLU). `moe_act` recomputes the activation's output;
//!   `moe` checkpoints the whole MoE block, which then keeps only its input: no routed copy, no router
//!   logits, no shared-expert intermediates.
//!
//! No dropout masks (MoE pre-training runs without dropout). Korthikanti et al. (2022)'s 34·d bytes per token
//! of a bf16 GPT layer is this count for MHA with a 4·d GELU MLP, plus two 1-byte dropout masks.

use crate::scenario::model::Model;
use crate::scenario::recompute::RecomputeModules;

/// Bytes one layer keeps for its backward.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kept {
    /// Per token of the rank's sequence shard: everything but the routed copies.
    pub per_token: f64,
    /// Per routed token copy on an expert GPU (an `etp`-th of the FFN's intermediates).
    pub per_routed_copy: f64,
}

/// What a dense (`moe == false`) or MoE layer of `m` keeps with `recompute` dropped, experts split over
/// `etp` GPUs.
pub fn kept(m: &Model, moe: bool, etp: usize, recompute: RecomputeModules) -> Kept {
    let (d, b) = (m.d_model as f64, m.dtype_bytes as f64);
    let a = &m.attention;
    let (heads, qk, v) = (a.heads as f64, a.qk_head_dim as f64, a.v_head_dim as f64);
    let latents = (m.q_lora_rank + m.kv_lora_rank) as f64;
    // Norms: inputs always; outputs (and MLA's latent norms' outputs) unless recomputed.
    let mut elements = 2.0 * d + latents;
    if !recompute.layernorm {
        elements += 2.0 * d + latents;
    }
    // Queries, keys and values: per KV head for MHA/GQA, per head for MLA (its up-projections' outputs).
    let kv_heads = if m.is_mla() || m.kv_heads == 0 {
        heads
    } else {
        m.kv_heads as f64
    };
    if !(recompute.mla_up_proj && m.is_mla()) {
        elements += heads * qk + kv_heads * (qk + v);
    }
    elements += heads * v;
    let mut bytes = elements * b;
    // Core attention's own saved tensor beside its inputs and output (which the projections keep): the
    // per-head log-sum-exp, dropped when it is checkpointed.
    if !recompute.core_attn {
        bytes += heads * 4.0;
    }
    // The FFN's up-projections' and activation's outputs over `f` columns.
    let ffn = |f: f64, matrices: u64| if matrices == 3 { 3.0 * f } else { 2.0 * f };
    // A checkpointed MoE block keeps its input only (a norm's output, counted above): no router logits,
    // shared experts' intermediates or routed copies.
    if moe && !recompute.moe {
        bytes += m.experts as f64 * 4.0;
        let shared = (m.shared_experts as u64 * m.expert_d_ff) as f64;
        bytes += ffn(shared, m.expert_matrices) * b;
    } else if !moe && !recompute.mlp {
        bytes += ffn(m.dense_d_ff as f64, 3) * b;
    }
    let f = m.expert_d_ff.div_ceil(etp.max(1) as u64) as f64;
    let mut copy = 2.0 * d + ffn(f, m.expert_matrices);
    if moe && recompute.moe_act {
        copy -= f;
    }
    Kept {
        per_token: bytes,
        per_routed_copy: if moe && !recompute.moe { copy * b } else { 0.0 },
    }
}

/// The most one layer of `m` keeps with nothing recomputed: one layer's working set in backward, for
/// `tokens` of the shard and `routed` copies on the GPU.
pub fn working_set(m: &Model, etp: usize, tokens: f64, routed: f64) -> f64 {
    let full = |moe| kept(m, moe, etp, RecomputeModules::NONE);
    let moe = m.layers > m.first_dense_layers;
    let dense = m.first_dense_layers > 0;
    let moe_bytes = if moe {
        let k = full(true);
        tokens * k.per_token + routed * k.per_routed_copy
    } else {
        0.0
    };
    let dense_bytes = if dense {
        tokens * full(false).per_token
    } else {
        0.0
    };
    moe_bytes.max(dense_bytes)
}

/// Dense-part FLOPs and bytes recomputation adds to one layer's backward per token of the shard on a
/// `tp`-way group: the norms read and written again (2·d each, and MLA's latents), and MLA's up-projections
/// (`q_lora → heads·qk`, `kv_lora → heads·(qk + v)`, the rotary part counted with the keys).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RecomputeWork {
    /// Bytes of the norm kernels (read input, write output) over the shard's tokens.
    pub norm_bytes_per_token: f64,
    /// Number of norm kernels launched.
    pub norm_kernels: usize,
    /// (output columns, inner dimension) of each up-projection GEMM, columns split over TP.
    pub gemms: [(u64, u64); 2],
}

/// What `recompute` adds to one layer's backward (see [`RecomputeWork`]).
pub fn recompute_work(m: &Model, tp: u64, recompute: RecomputeModules) -> RecomputeWork {
    let mut w = RecomputeWork::default();
    let b = m.dtype_bytes as f64;
    if recompute.layernorm {
        w.norm_bytes_per_token = 2.0 * (2.0 * m.d_model as f64) * b;
        w.norm_kernels = 2;
        if m.is_mla() {
            w.norm_bytes_per_token += 2.0 * (m.q_lora_rank + m.kv_lora_rank) as f64 * b;
            w.norm_kernels += 2;
        }
    }
    if recompute.mla_up_proj && m.is_mla() {
        let a = &m.attention;
        let heads = a.heads.div_ceil(tp);
        w.gemms = [
            (heads * a.qk_head_dim, m.q_lora_rank),
            (heads * (a.qk_head_dim + a.v_head_dim), m.kv_lora_rank),
        ];
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::model::model_preset;

    #[test]
    fn an_mha_layer_keeps_korthikantis_count_with_its_own_ffn() {
        // Korthikanti et al.'s layer in bf16: the norms' inputs 4·d bytes, attention 10·d (QKV input, Q and
        // K, V, the output projection's input; their 11·d has a dropout mask more), the MLP's input 2·d, and
        // the FFN's intermediates. A dense layer's FFN here is SwiGLU: gate, up and product, 3·f elements.
        let mut m = model_preset("gpt-moe-s").unwrap();
        m.kv_heads = 0;
        m.attention = crate::scenario::model::Attention::mha(m.d_model, 64);
        m.dtype_bytes = 2;
        let k = kept(&m, false, 1, RecomputeModules::NONE);
        let (d, f) = (m.d_model as f64, m.dense_d_ff as f64);
        // Beside the count, one FP32 log-sum-exp per head.
        let lse = m.attention.heads as f64 * 4.0;
        let expect = 4.0 * d + 10.0 * d + 2.0 * d + 3.0 * f * 2.0;
        assert!(
            (k.per_token - lse - expect).abs() < 1e-9,
            "{k:?} vs {expect}"
        );
        assert_eq!(k.per_routed_copy, 0.0);
    }

    #[test]
    fn deepseek_v3_selective_recomputation_drops_its_norms_up_projections_and_swiglu_outputs() {
        let m = model_preset("deepseek-v3").unwrap();
        let none = kept(&m, true, 1, RecomputeModules::NONE);
        let d = 7168.0;
        // Queries 128 × 192, keys 128 × 192, values 128 × 128 after the up-projections: 65,536 elements.
        let qkv = 128.0 * (192.0 + 192.0 + 128.0);
        let norms = RecomputeModules {
            layernorm: true,
            ..RecomputeModules::NONE
        };
        let up = RecomputeModules {
            mla_up_proj: true,
            ..RecomputeModules::NONE
        };
        let act = RecomputeModules {
            moe_act: true,
            ..RecomputeModules::NONE
        };
        assert_eq!(
            none.per_token - kept(&m, true, 1, norms).per_token,
            (2.0 * d + 1536.0 + 512.0) * 2.0
        );
        assert_eq!(none.per_token - kept(&m, true, 1, up).per_token, qkv * 2.0);
        // A routed copy keeps 2·d + 3·f; the activation's output f is recomputed.
        assert_eq!(none.per_routed_copy, (2.0 * d + 3.0 * 2048.0) * 2.0);
        assert_eq!(
            kept(&m, true, 1, act).per_routed_copy,
            (2.0 * d + 2.0 * 2048.0) * 2.0
        );
        // The up-projections are MLA's: a GQA model has none to recompute.
        let mixtral = model_preset("mixtral-8x7b").unwrap();
        assert_eq!(
            kept(&mixtral, true, 1, up),
            kept(&mixtral, true, 1, RecomputeModules::NONE)
        );
        let w = recompute_work(&m, 1, up);
        assert_eq!(w.gemms, [(128 * 192, 1536), (128 * 320, 512)]);
    }

    #[test]
    fn gqa_keeps_keys_and_values_per_kv_head() {
        // Mixtral: 32 query heads, 8 KV heads of 128: Q 4096, K 1024, V 1024, output 4096 per token.
        let m = model_preset("mixtral-8x7b").unwrap();
        let k = kept(&m, true, 1, RecomputeModules::NONE);
        let d = 4096.0;
        let expect = (4.0 * d + 4096.0 + 1024.0 + 1024.0 + 4096.0) * 2.0 + 32.0 * 4.0 + 8.0 * 4.0;
        assert_eq!(k.per_token, expect);
    }
}
