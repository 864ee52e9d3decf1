//! The MoE model being run: its shape, and the presets scenarios start from.

use serde::{Deserialize, Serialize};

/// A fully resolved model description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    /// Transformer layers in total (dense and MoE).
    pub layers: usize,
    /// The first `first_dense_layers` layers have a dense FFN instead of experts (DeepSeek-V3: 3).
    pub first_dense_layers: usize,
    pub d_model: u64,
    /// Hidden width of one routed expert.
    pub expert_d_ff: u64,
    /// Hidden width of the dense FFN in the first dense layers.
    pub dense_d_ff: u64,
    /// Routed experts per MoE layer.
    pub experts: usize,
    pub top_k: usize,
    /// Always-active shared experts per MoE layer (DeepSeekMoE), each as wide as a routed expert.
    pub shared_experts: usize,
    /// Weight matrices per expert: 3 for SwiGLU (gate, up, down), 2 for a GELU FFN.
    pub expert_matrices: u64,
    /// Attention parameters per layer (Q, K, V, O projections; MLA or GQA shapes folded in).
    pub attn_params_per_layer: u64,
    /// KV-cache bytes per token per layer (decode reads this for every context token).
    pub kv_bytes_per_token_per_layer: u64,
    /// Key/value heads the cache holds per token: the heads for MHA, the KV groups for GQA, 1 for MLA
    /// (its compressed latent serves every head). Tensor parallelism splits the cache over
    /// `min(tp, kv_heads)` shards and replicates it beyond (see [`Model::kv_shards`]); 0 means MHA (the
    /// attention heads).
    #[serde(default)]
    pub kv_heads: u64,
    pub vocab: u64,
    /// Bytes per parameter and activation element (2 for bf16).
    pub dtype_bytes: u32,
    pub seq_len: u64,
    /// Sequences per rank per micro-batch.
    pub micro_batch: u64,
    /// Attention heads and head dimensions: what the score and value FLOPs are counted from.
    pub attention: Attention,
    /// Element type of the routed experts' GEMMs (weights and inputs): bf16, or fp8 with its own peak.
    #[serde(default)]
    pub expert_dtype: Dtype,
    /// Element type of the dense layers' linear GEMMs — attention projections, dense FFNs, shared experts
    /// (not the core attention, the router or the output head): bf16, or fp8 with its own peak, its
    /// activations cast on the way in and, for inference, its weights stored in one byte (DeepSeek-V3 trains
    /// and serves every linear layer in FP8, §3.3).
    #[serde(default)]
    pub dense_dtype: Dtype,
    /// Group-limited routing (DeepSeek-V3: experts in 8 groups, each token picks its top 4 groups first).
    #[serde(default)]
    pub routing: RouterGroups,
    /// Multi-token-prediction modules trained beside the model (DeepSeek-V3: 1, §2.2 of arXiv 2412.19437):
    /// each predicts one more future token with a projection of `2·d_model` to `d_model`, one more
    /// Transformer block (an MoE layer here) and the shared output head. Training runs them; inference
    /// drops them (or uses them to draft tokens, which moesim does not model).
    #[serde(default)]
    pub mtp_depth: usize,
    /// MLA's low-rank query and key/value latents (DeepSeek-V3: 1536 and 512; 0 for GQA/MHA): what its
    /// up-projections expand into per-head queries, keys and values (see `crate::activations`).
    #[serde(default)]
    pub q_lora_rank: u64,
    #[serde(default)]
    pub kv_lora_rank: u64,
}

/// A router that limits each token to a few expert groups: the experts are split into `groups` equal,
/// consecutive groups, a token first picks `max_groups_per_token` of them and then its top-k experts inside
/// those. With experts laid out in order over the GPUs, a group lives on one node (or a few), so this bounds
/// the nodes a token's copies reach (DeepSeek-V3's node-limited routing: 8 groups, 4 per token, §2.1.2 of
/// arXiv 2412.19437).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGroups {
    pub groups: usize,
    pub max_groups_per_token: usize,
}

impl RouterGroups {
    /// No limit: one group holding every expert.
    pub const NONE: RouterGroups = RouterGroups {
        groups: 1,
        max_groups_per_token: 1,
    };

    /// Whether the router limits tokens to fewer groups than there are.
    pub fn limits(&self) -> bool {
        self.max_groups_per_token < self.groups
    }
}

impl Default for RouterGroups {
    fn default() -> Self {
        RouterGroups::NONE
    }
}

/// An element type of a tensor or a GEMM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dtype {
    #[default]
    Bf16,
    /// FP8 (E4M3) values with one FP32 scale per [`FP8_SCALE_BLOCK`] elements (DeepSeek-V3's recipe).
    Fp8,
}

impl Dtype {
    /// Bytes per element (scales not counted: see [`fp8_scaled_bytes`]).
    pub fn bytes(self) -> u32 {
        match self {
            Dtype::Bf16 => 2,
            Dtype::Fp8 => 1,
        }
    }
}

/// The attention shape that sets its FLOPs: `heads` query heads, each scoring keys of `qk_head_dim`
/// elements and mixing values of `v_head_dim` elements. MHA and GQA share keys and values among heads
/// (which changes the KV cache, not the FLOPs); MLA decompresses a low-rank KV into per-head keys of the
/// no-position part plus a shared rotary part (DeepSeek-V3: 128 + 64 = 192) and values of 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    pub heads: u64,
    pub qk_head_dim: u64,
    pub v_head_dim: u64,
}

impl Attention {
    /// Multi-head attention over `d_model` with heads of `head_dim`.
    pub fn mha(d_model: u64, head_dim: u64) -> Self {
        Attention {
            heads: (d_model / head_dim).max(1),
            qk_head_dim: head_dim,
            v_head_dim: head_dim,
        }
    }

    /// Forward FLOPs of the scores (Q·Kᵀ) and the value mix (P·V) for `queries` queries that each attend to
    /// `keys` keys: 2 · heads · (qk + v) · queries · keys.
    pub fn score_flops(&self, queries: f64, keys: f64) -> f64 {
        2.0 * self.heads as f64 * (self.qk_head_dim + self.v_head_dim) as f64 * queries * keys
    }

    /// Keys one query attends to on average under a causal mask over a sequence of `seq` tokens:
    /// query i sees i + 1 keys, so the mean is (seq + 1) / 2.
    pub fn causal_mean_keys(seq: u64) -> f64 {
        (seq as f64 + 1.0) / 2.0
    }
}

impl Model {
    /// Whether attention is MLA (low-rank latents expanded per head), not GQA or MHA.
    pub fn is_mla(&self) -> bool {
        self.q_lora_rank > 0 || self.kv_lora_rank > 0
    }

    /// Shards a `tp`-way tensor-parallel group splits the KV cache into: each rank holds `kv_heads / tp`
    /// heads while `tp` divides them (Megatron, vLLM), one head (replicated) beyond; MLA's single latent is
    /// replicated on every rank.
    pub fn kv_shards(&self, tp: u64) -> u64 {
        let heads = if self.kv_heads == 0 {
            self.attention.heads
        } else {
            self.kv_heads
        };
        tp.min(heads).max(1)
    }

    pub fn moe_layers(&self) -> usize {
        self.layers - self.first_dense_layers
    }

    /// Parameters of one routed expert.
    pub fn expert_params(&self) -> u64 {
        self.expert_matrices * self.d_model * self.expert_d_ff
    }

    /// Bytes of one routed expert's weights.
    pub fn expert_bytes(&self) -> u64 {
        self.expert_params() * self.dtype_bytes as u64
    }

    /// Parameters that every data-parallel rank holds a copy of (everything but the routed experts).
    pub fn dense_params(&self) -> u64 {
        let l = self.layers as u64;
        let attn = l * self.attn_params_per_layer;
        let dense_ffn = self.first_dense_layers as u64 * 3 * self.d_model * self.dense_d_ff;
        let moe = self.moe_layers() as u64;
        let shared = moe * self.shared_experts as u64 * self.expert_params();
        let gates = moe * self.d_model * self.experts as u64;
        let embeddings = 2 * self.vocab * self.d_model;
        attn + dense_ffn + shared + gates + embeddings
    }

    /// Dense parameters of the multi-token-prediction modules (each: an MoE layer's attention, shared
    /// experts and router, and its `2·d_model × d_model` projection; embedding and head are shared).
    pub fn mtp_dense_params(&self) -> u64 {
        let layer = self.attn_params_per_layer
            + self.shared_experts as u64 * self.expert_params()
            + self.d_model * self.experts as u64;
        self.mtp_depth as u64 * (layer + 2 * self.d_model * self.d_model)
    }

    /// All parameters.
    pub fn total_params(&self) -> u64 {
        self.dense_params() + self.moe_layers() as u64 * self.experts as u64 * self.expert_params()
    }

    /// Bytes one token occupies on the wire in an all-to-all (its hidden state).
    pub fn token_bytes(&self) -> u64 {
        self.d_model * self.dtype_bytes as u64
    }

    /// Bytes per element of the routed experts' GEMMs.
    /// Bytes per element of the dense linear GEMMs (see `dense_dtype`).
    pub fn dense_gemm_bytes(&self) -> u32 {
        match self.dense_dtype {
            Dtype::Bf16 => self.dtype_bytes,
            Dtype::Fp8 => 1,
        }
    }

    pub fn expert_gemm_bytes(&self) -> u32 {
        match self.expert_dtype {
            Dtype::Bf16 => self.dtype_bytes,
            Dtype::Fp8 => 1,
        }
    }
}

/// Elements per FP32 scale in fine-grained FP8 quantisation: DeepSeek-V3 quantises activations in 1 × 128
/// tiles (technical report §3.3.2) and DeepEP's FP8 dispatch carries one 4-byte scale per 128 elements.
pub const FP8_SCALE_BLOCK: u64 = 128;

/// Bytes of a vector of `elements` values in FP8 (one byte each) with one FP32 scale per
/// [`FP8_SCALE_BLOCK`] elements: what an FP8 dispatch puts on the wire for one token.
pub fn fp8_scaled_bytes(elements: u64) -> u64 {
    elements + 4 * elements.div_ceil(FP8_SCALE_BLOCK)
}

/// Names of the model presets.
pub const MODEL_PRESETS: &[&str] = &[
    "mixtral-8x7b",
    "deepseek-v3",
    "qwen3-30b-a3b",
    "qwen3-235b-a22b",
    "olmoe-1b-7b",
    "gpt-moe-s",
];

/// A Qwen3 MoE model: every layer MoE, 128 routed experts (SwiGLU), top-8, no shared expert, GQA with 4 KV
/// heads of 128, vocabulary 151,936 (the family's config.json files); `heads` query heads of 128.
fn qwen3_moe(
    name: &str,
    layers: usize,
    d_model: u64,
    heads: u64,
    expert_d_ff: u64,
    dense_d_ff: u64,
) -> Model {
    let (q, kv) = (heads * 128, 4 * 128);
    Model {
        name: name.into(),
        layers,
        first_dense_layers: 0,
        d_model,
        expert_d_ff,
        dense_d_ff,
        experts: 128,
        top_k: 8,
        shared_experts: 0,
        expert_matrices: 3,
        attn_params_per_layer: d_model * q + 2 * d_model * kv + q * d_model,
        kv_bytes_per_token_per_layer: 2 * kv * 2,
        kv_heads: 4,
        vocab: 151936,
        dtype_bytes: 2,
        seq_len: 4096,
        micro_batch: 1,
        attention: Attention {
            heads,
            qk_head_dim: 128,
            v_head_dim: 128,
        },
        expert_dtype: Dtype::Bf16,
        dense_dtype: Dtype::Bf16,
        routing: RouterGroups::NONE,
        mtp_depth: 0,
        q_lora_rank: 0,
        kv_lora_rank: 0,
    }
}

/// A model preset by name.
pub fn model_preset(name: &str) -> Option<Model> {
    let m = match name {
        // 32 layers, GQA 32 query / 8 KV heads of 128.
        "mixtral-8x7b" => Model {
            name: name.into(),
            layers: 32,
            first_dense_layers: 0,
            d_model: 4096,
            expert_d_ff: 14336,
            dense_d_ff: 14336,
            experts: 8,
            top_k: 2,
            shared_experts: 0,
            expert_matrices: 3,
            attn_params_per_layer: 4096 * (4096 + 2 * 1024) + 4096 * 4096,
            kv_bytes_per_token_per_layer: 2 * 1024 * 2,
            kv_heads: 8,
            vocab: 32000,
            dtype_bytes: 2,
            seq_len: 4096,
            micro_batch: 1,
            attention: Attention::mha(4096, 128),
            expert_dtype: Dtype::Bf16,
            dense_dtype: Dtype::Bf16,
            routing: RouterGroups::NONE,
            mtp_depth: 0,
            q_lora_rank: 0,
            kv_lora_rank: 0,
        },
        // 61 layers, first 3 dense (FFN 18432), 256 routed + 1 shared expert of 2048, top-8, MLA attention
        // (q_lora 1536, kv_lora 512, 128 heads of 128+64): about 187 M attention parameters per layer.
        "deepseek-v3" => Model {
            name: name.into(),
            layers: 61,
            first_dense_layers: 3,
            d_model: 7168,
            expert_d_ff: 2048,
            dense_d_ff: 18432,
            experts: 256,
            top_k: 8,
            shared_experts: 1,
            expert_matrices: 3,
            attn_params_per_layer: 7168 * 1536
                + 1536 * 128 * 192
                + 7168 * (512 + 64)
                + 512 * 128 * 256
                + 128 * 128 * 7168,
            kv_bytes_per_token_per_layer: (512 + 64) * 2,
            kv_heads: 1,
            vocab: 129280,
            dtype_bytes: 2,
            seq_len: 4096,
            micro_batch: 1,
            attention: Attention {
                heads: 128,
                qk_head_dim: 128 + 64,
                v_head_dim: 128,
            },
            expert_dtype: Dtype::Bf16,
            dense_dtype: Dtype::Bf16,
            routing: RouterGroups {
                groups: 8,
                max_groups_per_token: 4,
            },
            mtp_depth: 1,
            q_lora_rank: 1536,
            kv_lora_rank: 512,
        },
        // 48 layers, 128 experts of 768, top-8, GQA 32 query / 4 KV heads of 128.
        "qwen3-30b-a3b" => qwen3_moe(name, 48, 2048, 32, 768, 6144),
        // Qwen3-235B-A22B (its Hugging Face config.json; Megatron-MoE-ModelZoo's
        // model_configs/benchmarking/Qwen3-235B-A22B.yaml): 94 layers, all MoE, 128 experts of 1536,
        // top-8, GQA 64 query / 4 KV heads of 128 (the heads are 8192 wide, twice d_model).
        "qwen3-235b-a22b" => qwen3_moe(name, 94, 4096, 64, 1536, 12288),
        // 16 layers, 64 experts of 1024, top-8, MHA.
        "olmoe-1b-7b" => Model {
            name: name.into(),
            layers: 16,
            first_dense_layers: 0,
            d_model: 2048,
            expert_d_ff: 1024,
            dense_d_ff: 8192,
            experts: 64,
            top_k: 8,
            shared_experts: 0,
            expert_matrices: 3,
            attn_params_per_layer: 4 * 2048 * 2048,
            kv_bytes_per_token_per_layer: 2 * 2048 * 2,
            kv_heads: 16,
            vocab: 50304,
            dtype_bytes: 2,
            seq_len: 4096,
            micro_batch: 1,
            attention: Attention::mha(2048, 128),
            expert_dtype: Dtype::Bf16,
            dense_dtype: Dtype::Bf16,
            routing: RouterGroups::NONE,
            mtp_depth: 0,
            q_lora_rank: 0,
            kv_lora_rank: 0,
        },
        // Hecate's GPT-MoE-S: d 768, 12 layers, 64 experts, top-2, GELU experts of width 2·d, sequence 2048.
        "gpt-moe-s" => Model {
            name: name.into(),
            layers: 12,
            first_dense_layers: 0,
            d_model: 768,
            expert_d_ff: 1536,
            dense_d_ff: 3072,
            experts: 64,
            top_k: 2,
            shared_experts: 0,
            expert_matrices: 2,
            attn_params_per_layer: 4 * 768 * 768,
            kv_bytes_per_token_per_layer: 2 * 768 * 2,
            kv_heads: 12,
            vocab: 50257,
            dtype_bytes: 2,
            seq_len: 2048,
            micro_batch: 8,
            attention: Attention::mha(768, 64),
            expert_dtype: Dtype::Bf16,
            dense_dtype: Dtype::Bf16,
            routing: RouterGroups::NONE,
            mtp_depth: 0,
            q_lora_rank: 0,
            kv_lora_rank: 0,
        },
        _ => return None,
    };
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_tokens_carry_one_fp32_scale_per_128_elements() {
        // DeepSeek-V3's hidden state: 7168 one-byte values and 56 four-byte scales.
        assert_eq!(fp8_scaled_bytes(7168), 7168 + 56 * 4);
        // A partial last block still needs its scale.
        assert_eq!(fp8_scaled_bytes(129), 129 + 2 * 4);
        // Against bf16 the wire shrinks to (1 + 4/128) / 2 of the bytes.
        let ratio = fp8_scaled_bytes(7168) as f64 / (2.0 * 7168.0);
        assert!((ratio - (1.0 + 4.0 / 128.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn mla_attention_flops_are_counted_from_heads_and_head_dims() {
        // DeepSeek-V3, by hand: 128 heads, each a 192-wide Q·Kᵀ (128 no-position + 64 rotary) and a
        // 128-wide P·V, 2 FLOPs per multiply-add: 2 · 128 · (192 + 128) = 81 920 FLOPs per (query, key).
        let d = model_preset("deepseek-v3").unwrap();
        assert_eq!(d.attention.score_flops(1.0, 1.0), 81_920.0);
        // A causal 4096-token sequence: every query sees (4096 + 1) / 2 keys on average.
        let keys = Attention::causal_mean_keys(4096);
        assert_eq!(keys, 2048.5);
        let flops = d.attention.score_flops(4096.0, keys);
        assert_eq!(flops, 81_920.0 * 4096.0 * 2048.5);
        // The old count, 2 · t · s · d_model, was 2.86× short for MLA (40 960 / 14 336).
        let old = 2.0 * 4096.0 * 4096.0 * 7168.0;
        assert!((flops / old - 40_960.0 / 14_336.0 * 2048.5 / 2048.0).abs() < 1e-12);
        // For MHA and GQA (Mixtral: 32 heads of 128 = d_model) the causal count equals the old one.
        let m = model_preset("mixtral-8x7b").unwrap();
        assert_eq!(m.attention.score_flops(1.0, 1.0), 4.0 * 4096.0);
    }

    #[test]
    fn presets_match_published_sizes() {
        // Mixtral-8x7B: 46.7 B parameters.
        let m = model_preset("mixtral-8x7b").unwrap();
        assert!(
            (m.total_params() as f64 / 1e9 - 46.7).abs() < 0.5,
            "{}",
            m.total_params()
        );
        // DeepSeek-V3: 671 B parameters (without the MTP module).
        let d = model_preset("deepseek-v3").unwrap();
        assert!(
            (d.total_params() as f64 / 1e9 - 671.0).abs() < 12.0,
            "{}",
            d.total_params()
        );
        // A bf16 SwiGLU Mixtral expert is 352 MB, a DeepSeek-V3 expert 88 MB.
        assert_eq!(m.expert_bytes(), 3 * 4096 * 14336 * 2);
        assert!((d.expert_bytes() as f64 / 1e6 - 88.1).abs() < 0.2);
        // Qwen3-30B-A3B: 30.5 B; OLMoE-1B-7B: 6.9 B.
        let q = model_preset("qwen3-30b-a3b").unwrap();
        assert!(
            (q.total_params() as f64 / 1e9 - 30.5).abs() < 1.0,
            "{}",
            q.total_params()
        );
        let o = model_preset("olmoe-1b-7b").unwrap();
        assert!(
            (o.total_params() as f64 / 1e9 - 6.9).abs() < 0.3,
            "{}",
            o.total_params()
        );
        for name in MODEL_PRESETS {
            assert!(model_preset(name).is_some());
        }
    }
}
