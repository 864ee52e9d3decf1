//! Costs every strategy shares: dense compute per layer, rank speed, the gradient all-reduce.

use crate::engine::{SimTime, ps};
use crate::scenario::Scenario;
use crate::scenario::file::Mode;
use moesim_calibrate::CostModel;
use moesim_traces::rng::rng_for;
use rand_distr::{Distribution, LogNormal};

/// Forward dense work of one layer on one rank (attention projections and scores, the gate, shared experts,
/// and the dense FFN of the first dense layers), nominal speed.
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
    let mut time = cost.gemm_s(t, m.attn_params_per_layer / d, d, dt);
    match s.workload.mode {
        // Causal attention over the sequence: 2·t·s·d FLOPs for scores and values together.
        Mode::Training | Mode::Prefill => time += cost.gemm_s(t, m.seq_len, d, dt),
        // Decode reads the whole KV cache of every sequence.
        Mode::Decode => {
            let kv =
                m.micro_batch as f64 * m.seq_len as f64 * m.kv_bytes_per_token_per_layer as f64
                    / parts as f64;
            time += cost.memory_bound_s(kv)
        }
    }
    if moe_layer {
        time += cost.gemm_s(t, m.experts as u64, d, dt);
        for _ in 0..m.shared_experts {
            time += swiglu_s(cost, t, d, m.expert_d_ff, m.expert_matrices, dt);
        }
    } else {
        time += swiglu_s(cost, t, d, m.dense_d_ff, 3, dt);
    }
    time
}

/// One FFN over `t` tokens: `matrices − 1` up-projections d→f and one down-projection f→d.
pub fn swiglu_s(cost: &dyn CostModel, t: u64, d: u64, f: u64, matrices: u64, dt: u32) -> f64 {
    (matrices - 1) as f64 * cost.gemm_s(t, f, d, dt) + cost.gemm_s(t, d, f, dt)
}

/// Routed-expert forward time of one rank: grouped GEMMs over its local experts' token counts.
pub fn experts_forward_s(
    s: &Scenario,
    cost: &dyn CostModel,
    tokens_per_local_expert: &[u32],
) -> f64 {
    let m = &s.model;
    let (d, f, dt) = (m.d_model, m.expert_d_ff, m.dtype_bytes);
    (m.expert_matrices - 1) as f64 * cost.grouped_gemm_s(tokens_per_local_expert, f, d, dt)
        + cost.grouped_gemm_s(tokens_per_local_expert, d, f, dt)
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
