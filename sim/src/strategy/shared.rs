//! Costs every strategy shares: dense compute per layer, rank speed, the gradient all-reduce.

use crate::activations;
use crate::engine::{SimTime, ps};
use crate::scenario::Scenario;
use crate::scenario::file::Mode;
use crate::scenario::model::{Attention, Dtype};
use moesim_calibrate::CostModel;
use moesim_traces::rng::rng_for;
use rand_distr::{Distribution, LogNormal};

/// Forward dense work of one layer on one rank (attention projections and scores, the gate, shared experts,
/// the dense FFN of the first dense layers, and the non-GEMM kernels around them), nominal speed.
pub fn dense_forward_s(s: &Scenario, cost: &dyn CostModel, moe_layer: bool) -> f64 {
    dense_forward_tokens_s(s, cost, moe_layer, s.tokens_per_rank(), 1)
}

/// [`dense_forward_s`] for `t` tokens of a rank's micro-batch split into `parts` parts (decode reads
/// `1/parts` of the KV cache per part).
pub fn dense_forward_tokens_s(
    s: &Scenario,
    cost: &dyn CostModel,
    moe_layer: bool,
    t: u64,
    parts: usize,
) -> f64 {
    let m = &s.model;
    let d = m.d_model;
    let dt = m.dtype_bytes;
    let dg = m.dense_gemm_bytes();
    let mut time = cost.gemm_s(t, m.attn_params_per_layer / d, d, dg) + dense_cast_s(s, cost, t, d);
    match s.workload.mode {
        // Causal attention over the sequence: every query scores and mixes (s + 1) / 2 keys on average, over
        // every head's key and value widths (MHA, GQA and MLA alike; see `Attention::score_flops`). Priced
        // as one GEMM with those FLOPs: t queries × mean keys × heads · (qk + v).
        Mode::Training | Mode::Prefill => time += attention_scores_s(s, cost, t, m.attention.heads),
        // Decode reads the whole KV cache of every sequence.
        Mode::Decode => {
            let kv =
                m.micro_batch as f64 * m.seq_len as f64 * m.kv_bytes_per_token_per_layer as f64
                    / parts as f64;
            time += cost.memory_bound_s(kv)
        }
        // A serving step mixes both: its prefill chunks score against their keys (earlier chunks' context
        // plus their own causal prefix), priced as the prefill GEMM above with the step's mean keys; its
        // decoding sequences read their KV cache as decode does. A lone prompt from position 0 is exactly a
        // prefill step, and a batch of decodes exactly a decode step.
        Mode::Serving => {
            time += serving_attention_s(s, cost, &s.workload.step.unwrap_or_default(), parts)
        }
    }
    if moe_layer {
        time += cost.gemm_s(t, m.experts as u64, d, dt);
        for _ in 0..m.shared_experts {
            time += swiglu_s(cost, t, d, m.expert_d_ff, m.expert_matrices, dg);
            time += activation_s(cost, t, m.expert_d_ff, m.expert_matrices, dt);
            time += dense_cast_s(s, cost, t, d + m.expert_d_ff);
        }
    } else {
        time += swiglu_s(cost, t, d, m.dense_d_ff, 3, dg);
        time += activation_s(cost, t, m.dense_d_ff, 3, dt);
        time += dense_cast_s(s, cost, t, d + m.dense_d_ff);
    }
    time + non_gemm_s(s, cost, t, moe_layer)
}

/// Causal attention's score and mix GEMMs for `t` queries over `heads` heads: every query scores and mixes
/// (s + 1) / 2 keys on average, over every head's key and value widths (MHA, GQA and MLA alike; see
/// `Attention::score_flops`), priced as one GEMM with those FLOPs: t queries × mean keys × heads · (qk + v).
fn attention_scores_s(s: &Scenario, cost: &dyn CostModel, t: u64, heads: u64) -> f64 {
    let m = &s.model;
    let keys = Attention::causal_mean_keys(m.seq_len);
    let width = heads * (m.attention.qk_head_dim + m.attention.v_head_dim);
    let mut per_rank = m.attention;
    per_rank.heads = heads;
    let flops = per_rank.score_flops(t as f64, keys);
    let n = (flops / (2.0 * t.max(1) as f64 * width as f64))
        .round()
        .max(1.0) as u64;
    cost.gemm_s(t, n, width, m.dtype_bytes)
}

/// What attention's backward costs beyond twice its forward, for `t` tokens of a micro-batch on one of
/// `tp` tensor-parallel ranks. A layer's backward is priced as twice its forward (one GEMM for the input
/// gradient, one for the weight gradient, per forward GEMM), but fused attention keeps no score matrix: its
/// backward recomputes `QKᵀ` and then computes `dV`, `dP`, `dQ` and `dK`, five matrix products to the
/// forward's two (FlashAttention-2, Dao 2023, §3.1; the same in FlashAttention-3 and FlashMLA), 2.5× the
/// forward's score FLOPs. All of it is input gradient (attention has no weights). 0 outside training.
pub fn attention_backward_extra_s(s: &Scenario, cost: &dyn CostModel, t: u64, tp: u64) -> f64 {
    if s.workload.mode != Mode::Training {
        return 0.0;
    }
    0.5 * attention_scores_s(s, cost, t, s.model.attention.heads.div_ceil(tp.max(1)))
}

/// A multi-token-prediction module's projection (`2·d_model` in, `d_model` out, DeepSeek-V3 §2.2) for `t`
/// tokens on one of `tp` tensor-parallel ranks, with its input cast under FP8 dense linears.
pub fn mtp_projection_s(s: &Scenario, cost: &dyn CostModel, t: u64, tp: u64) -> f64 {
    let d = s.model.d_model;
    let dg = s.model.dense_gemm_bytes();
    cost.gemm_s(t, d.div_ceil(tp.max(1)), 2 * d, dg) + dense_cast_s(s, cost, t, 2 * d)
}

/// With FP8 dense linears (`model.dense_dtype`), casting a GEMM's `t × k` input to FP8: bf16 in, one byte
/// plus a scale per 128 out, 3 bytes of traffic per element (as for FP8 experts); 0 in bf16.
fn dense_cast_s(s: &Scenario, cost: &dyn CostModel, t: u64, k: u64) -> f64 {
    if s.model.dense_dtype == Dtype::Fp8 && t > 0 {
        cost.memory_bound_s(3.0 * t as f64 * k as f64)
    } else {
        0.0
    }
}

/// Attention scores and values of one layer of a serving step on one rank, one of `parts` overlapped parts:
/// its prefill chunks priced as the prefill GEMM with the step's mean keys per prefill token (earlier
/// chunks' context plus each token's causal prefix), its decoding sequences reading their KV cache as
/// decode does. A lone prompt from position 0 is exactly a prefill step, a batch of decodes exactly a
/// decode step.
pub fn serving_attention_s(
    s: &Scenario,
    cost: &dyn CostModel,
    step: &crate::serving::step_cost::StepShape,
    parts: usize,
) -> f64 {
    let m = &s.model;
    let mut time = 0.0;
    let p = step.prefill_tokens.div_ceil(parts as u64);
    if p > 0 {
        let keys = step.prefill_key_pairs as f64 / step.prefill_tokens as f64;
        let width = m.attention.heads * (m.attention.qk_head_dim + m.attention.v_head_dim);
        let flops = m.attention.score_flops(p as f64, keys);
        let n = (flops / (2.0 * p as f64 * width as f64)).round().max(1.0) as u64;
        time += cost.gemm_s(p, n, width, m.dtype_bytes);
    }
    if step.decode_kv_tokens > 0 {
        let kv =
            step.decode_kv_tokens as f64 * m.kv_bytes_per_token_per_layer as f64 / parts as f64;
        time += cost.memory_bound_s(kv);
    }
    time
}

/// One layer's dense forward on one rank of a `tp`-way tensor-parallel group (training, prefill or
/// decode), split into its attention block and its MLP block (the gate and shared experts of an MoE layer,
/// or the dense FFN), for a micro-batch of `t` tokens (the whole group's). Megatron's column/row split gives each rank `1/tp` of
/// the heads and of the FFN width over all `t` tokens (attention projections divide evenly when `tp`
/// divides the KV heads); with sequence parallelism the norms, residuals, router and permutations run on
/// the rank's `t/tp` tokens, and the router's GEMM is replicated over them. With `tp = 1` the sum is
/// [`dense_forward_tokens_s`] (training, prefill and decode).
pub fn dense_forward_tp_s(
    s: &Scenario,
    cost: &dyn CostModel,
    moe_layer: bool,
    t: u64,
    tp: u64,
) -> (f64, f64) {
    let m = &s.model;
    let d = m.d_model;
    let dt = m.dtype_bytes;
    let dg = m.dense_gemm_bytes();
    let shard = t.div_ceil(tp);
    let mut attention = cost.gemm_s(t, (m.attn_params_per_layer / d).div_ceil(tp), d, dg)
        + dense_cast_s(s, cost, t, d);
    attention += match s.workload.mode {
        // Decode reads the KV cache of every sequence of the micro-batch, each rank its heads' share (MLA's
        // latent whole on every rank, see `Model::kv_shards`).
        Mode::Decode => cost.memory_bound_s(
            m.micro_batch as f64 * m.seq_len as f64 * m.kv_bytes_per_token_per_layer as f64
                / m.kv_shards(tp) as f64,
        ),
        _ => attention_scores_s(s, cost, t, m.attention.heads.div_ceil(tp)),
    };
    attention += non_gemm_s(s, cost, shard, moe_layer);
    let mut mlp = 0.0;
    if moe_layer {
        mlp += cost.gemm_s(shard, m.experts as u64, d, dt);
        let f = m.expert_d_ff.div_ceil(tp);
        for _ in 0..m.shared_experts {
            mlp += swiglu_s(cost, t, d, f, m.expert_matrices, dg);
            mlp += activation_s(cost, t, f, m.expert_matrices, dt);
            mlp += dense_cast_s(s, cost, t, d + f);
        }
    } else {
        let f = m.dense_d_ff.div_ceil(tp);
        mlp += swiglu_s(cost, t, d, f, 3, dg);
        mlp += activation_s(cost, t, f, 3, dt);
        mlp += dense_cast_s(s, cost, t, d + f);
    }
    (attention, mlp)
}

/// The memory-bound kernels of one layer's dense part over `t` tokens, each a kernel launch plus its HBM
/// traffic (read and write): two RMSNorms (t·d in, t·d out), two residual adds (two t·d in, one out), and
/// in an MoE layer the router's softmax and top-k over t × experts FP32 logits, the permutation that
/// gathers each token's top-k copies (t·k·d in and out) and the un-permutation that sums them back with
/// their weights (t·k·d in, t·d out).
pub fn non_gemm_s(s: &Scenario, cost: &dyn CostModel, t: u64, moe_layer: bool) -> f64 {
    let m = &s.model;
    let (t, d, b) = (t as f64, m.d_model as f64, m.dtype_bytes as f64);
    let mut time =
        2.0 * cost.memory_bound_s(2.0 * t * d * b) + 2.0 * cost.memory_bound_s(3.0 * t * d * b);
    if moe_layer {
        let k = m.top_k as f64;
        time += cost.memory_bound_s(2.0 * t * m.experts as f64 * 4.0);
        time += cost.memory_bound_s(2.0 * t * k * d * b);
        time += cost.memory_bound_s((t * k + t) * d * b);
    }
    time
}

/// What selective recomputation (`training.recompute_modules`) adds to one layer's backward on one of `tp`
/// tensor-parallel ranks over a micro-batch's `t` tokens (the norms over its `t/tp` shard), as [dense
/// layer, MoE layer]: the RMSNorms again (each a launch plus reading its input and writing its output),
/// MLA's up-projection GEMMs, core attention's forward (`core_attn`), a dense layer's MLP forward (`mlp`),
/// and an MoE layer's router, shared experts and token permutations (`moe`; its dispatch, routed experts
/// and combine are the strategy's to lower). Zero outside training and under full recomputation (which
/// reruns the whole layer instead). The experts' activation alone (`moe_act`) is priced per GPU with its
/// tokens, beside the experts.
pub fn selective_recompute_s(s: &Scenario, cost: &dyn CostModel, t: u64, tp: u64) -> [f64; 2] {
    if s.workload.mode != Mode::Training || s.training.activation_checkpointing {
        return [0.0; 2];
    }
    let rc = s.training.recompute_modules;
    let w = activations::recompute_work(&s.model, tp, rc);
    let shard = t.div_ceil(tp) as f64;
    let mut time = 0.0;
    if w.norm_kernels > 0 {
        let per_kernel = w.norm_bytes_per_token * shard / w.norm_kernels as f64;
        time += w.norm_kernels as f64 * cost.memory_bound_s(per_kernel);
    }
    for (columns, inner) in w.gemms {
        if columns > 0 && inner > 0 {
            time += cost.gemm_s(t, columns, inner, s.model.dense_gemm_bytes());
        }
    }
    if rc.core_attn {
        time += attention_scores_s(s, cost, t, s.model.attention.heads.div_ceil(tp.max(1)));
    }
    let mut out = [time; 2];
    if rc.mlp {
        out[0] += dense_forward_tp_s(s, cost, false, t, tp).1;
    }
    if rc.moe {
        let shard = t.div_ceil(tp.max(1));
        out[1] += dense_forward_tp_s(s, cost, true, t, tp).1 + non_gemm_s(s, cost, shard, true)
            - non_gemm_s(s, cost, shard, false);
    }
    out
}

/// The activation between an FFN's up- and down-projections over `t` tokens of width `f`: SwiGLU reads
/// the gate and up outputs and writes their product (3·t·f elements), GELU reads and writes t·f.
pub fn activation_s(cost: &dyn CostModel, t: u64, f: u64, matrices: u64, dt: u32) -> f64 {
    if t == 0 {
        return 0.0;
    }
    let elements = if matrices == 3 { 3.0 } else { 2.0 } * t as f64 * f as f64;
    cost.memory_bound_s(elements * dt as f64)
}

/// One FFN over `t` tokens: `matrices − 1` up-projections d→f and one down-projection f→d.
pub fn swiglu_s(cost: &dyn CostModel, t: u64, d: u64, f: u64, matrices: u64, dt: u32) -> f64 {
    (matrices - 1) as f64 * cost.gemm_s(t, f, d, dt) + cost.gemm_s(t, d, f, dt)
}

/// Routed-expert forward time of one rank: grouped GEMMs over its local experts' token counts in the
/// experts' dtype, the activation between them, and with FP8 experts the casts of both GEMMs' inputs
/// (bf16 in, one byte plus a scale per 128 elements out: 3 bytes of traffic per element).
pub fn experts_forward_s(
    s: &Scenario,
    cost: &dyn CostModel,
    tokens_per_local_expert: &[u32],
) -> f64 {
    experts_forward_width_s(s, cost, tokens_per_local_expert, s.model.expert_d_ff)
}

/// [`experts_forward_s`] for experts `f` wide: one GPU's slice of each expert under expert tensor
/// parallelism (`expert_d_ff / etp` of the up-projections' columns and the down-projection's rows).
pub fn experts_forward_width_s(
    s: &Scenario,
    cost: &dyn CostModel,
    tokens_per_local_expert: &[u32],
    f: u64,
) -> f64 {
    let m = &s.model;
    let (d, dt) = (m.d_model, m.expert_gemm_bytes());
    let total: u64 = tokens_per_local_expert.iter().map(|&t| t as u64).sum();
    let mut time = (m.expert_matrices - 1) as f64
        * cost.grouped_gemm_s(tokens_per_local_expert, f, d, dt)
        + cost.grouped_gemm_s(tokens_per_local_expert, d, f, dt)
        + activation_s(cost, total, f, m.expert_matrices, m.dtype_bytes);
    if m.expert_dtype == Dtype::Fp8 && total > 0 {
        time += cost.memory_bound_s(3.0 * total as f64 * (d + f) as f64);
    }
    time
}

/// Multiplier on a rank's compute time in one iteration: 1 / speed, times log-normal noise of mean 1.
pub fn rank_slowdown(s: &Scenario, iteration: usize, rank: usize) -> f64 {
    let base = 1.0 / s.cluster.speed_of(rank);
    let cv = s.cluster.compute_noise_cv;
    if cv <= 0.0 {
        return base;
    }
    let sigma2 = (1.0 + cv * cv).ln();
    let dist = LogNormal::new(-sigma2 / 2.0, sigma2.sqrt()).expect("finite sigma");
    let mut rng = rng_for(s.seed, &[0x006e_6f69_7365, iteration as u64, rank as u64]);
    base * dist.sample(&mut rng)
}

/// Scales seconds by a slowdown and converts to simulated time.
pub fn scaled(seconds: f64, slowdown: f64) -> SimTime {
    ps(seconds * slowdown)
}

/// Optimizer step on one rank: read and write weights, gradients and optimizer state once.
pub fn optimizer_s(s: &Scenario, cost: &dyn CostModel, params_updated: f64) -> f64 {
    let t = &s.training;
    let bytes = params_updated
        * (s.model.dtype_bytes as f64 + t.grad_bytes_per_param + t.optimizer_bytes_per_param);
    cost.memory_bound_s(2.0 * bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;
    use moesim_calibrate::Roofline;

    /// A scenario on the ideal cluster (100 % efficiency, no launch cost, unbounded HBM: every kernel is
    /// FLOPs over peak, memory-bound kernels are free), `extra` lines appended to its model table.
    fn ideal(model: &str, mode: &str, extra: &str) -> Scenario {
        let text = format!(
            "name = \"t\"\n[model]\npreset = \"{model}\"\nseq_len = 4096\nmicro_batch = 1\n{extra}\n\
             [cluster]\npreset = \"ideal\"\ngpus_per_node = 8\npeak_tflops = 1000.0\n\
             [workload]\nmode = \"{mode}\"\niterations = 1\n[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n"
        );
        parse_scenario("t.toml", &text, &[]).unwrap()
    }

    #[test]
    fn deepseek_v3_dense_forward_is_its_hand_counted_flops_over_the_peak() {
        let s = ideal("deepseek-v3", "prefill", "");
        let cost = s.cluster.roofline();
        let m = &s.model;
        let t = 4096.0;
        // Projections (every attention parameter once per token), MLA scores and values over the mean
        // causal context (128 heads × (192 + 128) × 2 FLOPs × (4096 + 1) / 2 keys), the gate, one shared
        // SwiGLU expert of 2048: 2·t·params each.
        let attn_proj = 2.0 * t * (m.attn_params_per_layer / m.d_model * m.d_model) as f64;
        let scores = 2.0 * 128.0 * 320.0 * t * 2048.5;
        let gate = 2.0 * t * 7168.0 * 256.0;
        let shared = 2.0 * t * 3.0 * 7168.0 * 2048.0;
        let expect = (attn_proj + scores + gate + shared) / 1e15;
        let got = dense_forward_s(&s, &cost, true);
        // The attention GEMM counts whole keys: 2048.5 rounds to 2049 (a 2.4e-4 share of the scores).
        assert!((got - expect).abs() / expect < 1e-4, "{got} vs {expect}");
    }

    #[test]
    fn non_gemm_kernels_are_their_bytes_over_hbm_plus_one_launch_each() {
        let s = ideal("mixtral-8x7b", "training", "");
        let mut cost: Roofline = s.cluster.roofline();
        cost.hbm_gbytes_per_s = 1000.0;
        cost.launch_overhead_us = 5.0;
        let (t, d, k, e) = (4096.0, 4096.0, 2.0, 8.0);
        // Norms 2 × 2·t·d, residuals 2 × 3·t·d, router 2·t·E FP32, permute 2·t·k·d, unpermute (t·k + t)·d
        // (bf16 elements of 2 bytes), seven launches.
        let bytes = 2.0 * (2.0 * 2.0 * t * d)
            + 2.0 * (3.0 * 2.0 * t * d)
            + 2.0 * t * e * 4.0
            + 2.0 * 2.0 * t * k * d
            + 2.0 * (t * k + t) * d;
        let expect = bytes / 1e12 + 7.0 * 5e-6;
        let got = non_gemm_s(&s, &cost, 4096, true);
        assert!((got - expect).abs() < 1e-12, "{got} vs {expect}");
        // A dense layer has only the norms and residuals.
        let dense = non_gemm_s(&s, &cost, 4096, false);
        let expect = (2.0 * (2.0 * 2.0 * t * d) + 2.0 * (3.0 * 2.0 * t * d)) / 1e12 + 4.0 * 5e-6;
        assert!((dense - expect).abs() < 1e-12);
    }

    #[test]
    fn fp8_experts_run_at_the_fp8_peak_plus_their_input_casts() {
        // On an H100 roofline a large expert batch is compute-bound: FP8 halves the GEMM time and adds the
        // casts of t·(d + f) elements at 3 bytes each.
        let text = "name = \"t\"\n[model]\npreset = \"deepseek-v3\"\n\
            [cluster]\npreset = \"dgx-h100\"\n[workload]\nmode = \"training\"\niterations = 1\n\
            [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n";
        let bf16 = parse_scenario("t.toml", text, &[]).unwrap();
        let fp8 = parse_scenario("t.toml", text, &["model.expert_dtype=\"fp8\"".into()]).unwrap();
        let cost = bf16.cluster.roofline();
        let tokens = [8192u32, 8192];
        let a = experts_forward_s(&bf16, &cost, &tokens);
        let b = experts_forward_s(&fp8, &cost, &tokens);
        let act = activation_s(&cost, 16384, 2048, 3, 2);
        let cast = cost.memory_bound_s(3.0 * 16384.0 * (7168.0 + 2048.0));
        let gemm = |s: &Scenario| {
            let dt = s.model.expert_gemm_bytes();
            2.0 * cost.grouped_gemm_s(&tokens, 2048, 7168, dt)
                + cost.grouped_gemm_s(&tokens, 7168, 2048, dt)
        };
        assert!((a - (gemm(&bf16) + act)).abs() < 1e-12);
        assert!((b - (gemm(&fp8) + act + cast)).abs() < 1e-12);
        let launches = 3.0 * cost.launch_overhead_s();
        let ratio = (gemm(&bf16) - launches) / (gemm(&fp8) - launches);
        // H100: 1979 dense FP8 TFLOP/s against 989 bf16.
        assert!((ratio - 1979.0 / 989.0).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn fp8_dense_linears_change_only_the_projections_and_ffns_and_add_their_casts() {
        // DeepSeek-V3 decoding 64 tokens on an H100: every linear GEMM reads its weights (memory-bound),
        // so FP8 halves it; the gate, the KV-cache read and the non-GEMM kernels stay as they are.
        let text = "name = \"t\"\n[model]\npreset = \"deepseek-v3\"\nseq_len = 4096\nmicro_batch = 64\n\
            [cluster]\npreset = \"dgx-h100\"\n[workload]\nmode = \"decode\"\niterations = 1\n\
            [[strategy]]\nname = \"ep\"\nkind = \"ep\"\n";
        let bf16 = parse_scenario("t.toml", text, &[]).unwrap();
        let fp8 = parse_scenario("t.toml", text, &["model.dense_dtype=\"fp8\"".into()]).unwrap();
        let cost = bf16.cluster.roofline();
        let (t, d) = (64u64, 7168u64);
        let m = &bf16.model;
        let linears = |dt: u32| {
            cost.gemm_s(t, m.attn_params_per_layer / d, d, dt)
                + swiglu_s(&cost, t, d, m.expert_d_ff, 3, dt)
        };
        let casts = cost.memory_bound_s(3.0 * (t * d) as f64)
            + cost.memory_bound_s(3.0 * (t * (d + m.expert_d_ff)) as f64);
        let a = dense_forward_tokens_s(&bf16, &cost, true, t, 1);
        let b = dense_forward_tokens_s(&fp8, &cost, true, t, 1);
        let expect = a - linears(2) + linears(1) + casts;
        assert!((b - expect).abs() < 1e-12, "{b} vs {expect}");
        // Weights dominate a 64-token decode step's linears: FP8 halves them (one byte per element).
        let launches = 4.0 * cost.launch_overhead_s();
        let ratio = (linears(1) - launches) / (linears(2) - launches);
        assert!((0.49..0.51).contains(&ratio), "{ratio}");
    }
}
