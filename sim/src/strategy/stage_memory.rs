//! Memory of a pipelined (tensor- and/or pipeline-parallel) EP rank, as pure functions of the scenario and
//! the strategy: the pipelined lowering reports it with the routed tokens it simulated, and the layout
//! search bounds it from below (routed tokens at their balanced mean) to prune layouts before simulating.
//!
//! Per pipeline rank: the parameters of its model stages (dense ones split over the TP group, routed
//! experts over the EP group), gradients and optimizer state by ZeRO stage over their data-parallel
//! (dense) and expert-data-parallel (experts) replicas, and the activations of the micro-batches the
//! schedule keeps in flight on it (each a chunk of its layers over its sequence shard) plus one layer's
//! working set.

use crate::memory::{
    GIB, MemoryBreakdown, ParamsOnRank, RoutedTokens, rank_memory, training_state_gib,
};
use crate::pipeline::schedule::Schedule;
use crate::scenario::file::Mode;
use crate::scenario::parallel::Parallel;
use crate::scenario::{Scenario, Strategy};

/// Parameters of one pipeline rank's GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageParams {
    /// Dense parameters (attention, dense MLPs, shared experts, gates, embedding or head) on one TP rank.
    pub dense: f64,
    /// Routed-expert parameters on one GPU.
    pub experts: f64,
    /// Data-parallel replicas of the dense parameters (`dp = S / tp`), the ZeRO group.
    pub dense_replicas: f64,
    /// Copies of each expert in a stage (mean; `S / ep_size` without replication), the experts' ZeRO group.
    pub expert_replicas: f64,
    /// Layers whose activations one in-flight micro-batch leaves on the rank (mean over its chunks).
    pub layers_per_chunk: f64,
}

impl StageParams {
    /// What one GPU of the stage holds, as the memory model counts it.
    pub fn on_rank(&self) -> ParamsOnRank {
        ParamsOnRank {
            dense: self.dense,
            experts: self.experts,
            dense_replicas: self.dense_replicas,
            expert_replicas: self.expert_replicas,
        }
    }
}

/// Parameters of model stage `k` of `par` on one of its GPUs: (dense parameters on one TP rank, routed-expert
/// parameters), each GPU holding `slots_per_gpu` expert copies per MoE layer. The first stage holds the
/// embedding, the last the output head and, in training, the multi-token-prediction modules.
pub fn model_stage_params(
    s: &Scenario,
    par: &Parallel,
    slots_per_gpu: usize,
    k: usize,
) -> (f64, f64) {
    let m = &s.model;
    let tp = par.tp as f64;
    let layers: Vec<usize> = par.layers_of(k).collect();
    let moe = layers
        .iter()
        .filter(|&&l| l >= m.first_dense_layers)
        .count();
    let dense_layers = layers.len() - moe;
    let per_layer_dense = |is_moe: bool| -> f64 {
        let mlp = if is_moe {
            m.shared_experts as f64 * m.expert_params() as f64
                + (m.experts as u64 * m.d_model) as f64
        } else {
            3.0 * (m.d_model * m.dense_d_ff) as f64
        };
        (m.attn_params_per_layer as f64 + mlp) / tp
    };
    let embedding = (m.vocab * m.d_model) as f64 / tp;
    let mut dense =
        moe as f64 * per_layer_dense(true) + dense_layers as f64 * per_layer_dense(false);
    if k == 0 {
        dense += embedding;
    }
    let mut mtp = 0;
    if k == par.model_stages() - 1 {
        dense += embedding;
        if s.workload.mode == Mode::Training {
            mtp = m.mtp_depth;
            dense += m.mtp_dense_params() as f64 / tp;
        }
    }
    // Expert tensor parallelism gives each GPU a 1/etp slice of its EP rank's experts.
    let experts =
        ((moe + mtp) * slots_per_gpu) as f64 * m.expert_params() as f64 / par.etp.max(1) as f64;
    (dense, experts)
}

/// The MoE layers of model stage `k`.
pub fn moe_layers_of(s: &Scenario, par: &Parallel, k: usize) -> usize {
    par.layers_of(k)
        .filter(|&l| l >= s.model.first_dense_layers)
        .count()
}

/// Parameters of every pipeline rank of `par` under `schedule` (the sum of its model stages'), each GPU
/// holding `slots_per_gpu` expert copies per MoE layer (`experts / ep_size` without replication).
pub fn stage_params(
    s: &Scenario,
    par: &Parallel,
    slots_per_gpu: usize,
    schedule: &Schedule,
) -> Vec<StageParams> {
    let m = &s.model;
    let stage_gpus = par.stage_gpus(s.cluster.gpus());
    (0..par.pp)
        .map(|r| {
            let stages = schedule.stages_on(r);
            let (mut dense, mut experts) = (0.0, 0.0);
            for &k in &stages {
                let (d, e) = model_stage_params(s, par, slots_per_gpu, k);
                dense += d;
                experts += e;
            }
            let layers: usize = stages.iter().map(|&k| par.layers_of(k).len()).sum();
            StageParams {
                dense,
                experts,
                dense_replicas: (stage_gpus / par.tp) as f64,
                // Mean copies of an expert (slice) in the stage: one per EP group without replication.
                expert_replicas: (stage_gpus * slots_per_gpu) as f64
                    / (m.experts.max(1) * par.etp.max(1)) as f64,
                layers_per_chunk: layers as f64 / stages.len().max(1) as f64,
            }
        })
        .collect()
}

/// Memory of the most loaded pipeline rank's GPU when its experts receive at most `routed.peak_layer`
/// tokens in one MoE layer of one micro-batch and at most `routed.all_layers` over the MoE layers of one
/// model chunk of one micro-batch (what an in-flight chunk keeps: a sum over its layers, not its busiest
/// layer times their number).
pub fn stage_memory(
    s: &Scenario,
    par: &Parallel,
    schedule: &Schedule,
    params: &[StageParams],
    routed: RoutedTokens,
) -> MemoryBreakdown {
    let peak_routed_tokens = routed.peak_layer;
    let m = &s.model;
    let t = &s.training;
    let dtype = m.dtype_bytes as f64;
    let d = m.d_model as f64;
    let shard = s.tokens_per_rank() as f64 / par.tp as f64;
    let mut worst = MemoryBreakdown::default();
    if s.workload.mode != Mode::Training {
        // Inference: weights, one layer's working set, and the KV cache of every micro-batch's sequences
        // (all resident: each pipeline stage serves every micro-batch in turn) over the rank's layers, split
        // over the TP group by KV heads (see `Model::kv_shards`).
        let layer_full =
            crate::activations::working_set(&s.model, par.etp, shard, peak_routed_tokens);
        let sequences = (s.model.micro_batch * s.workload.micro_batches as u64) as f64;
        let per_layer_kv = sequences * m.seq_len as f64 * m.kv_bytes_per_token_per_layer as f64
            / m.kv_shards(par.tp as u64) as f64;
        for (r, p) in params.iter().enumerate() {
            let layers: usize = schedule
                .stages_on(r)
                .iter()
                .map(|&k| par.layers_of(k).len())
                .sum();
            let params_bytes = crate::memory::inference_params_bytes(s, p.on_rank());
            let mut out = MemoryBreakdown {
                params_gib: params_bytes / GIB,
                activations_gib: layer_full / GIB,
                kv_cache_gib: layers as f64 * per_layer_kv / GIB,
                ..MemoryBreakdown::default()
            };
            out.total_gib = out.params_gib + out.activations_gib + out.kv_cache_gib;
            if out.total_gib > worst.total_gib {
                worst = out;
            }
        }
        return worst;
    }
    for (r, p) in params.iter().enumerate() {
        let in_flight = schedule.peak_in_flight(r) as f64;
        let layer_full =
            crate::activations::working_set(&s.model, par.etp, shard, peak_routed_tokens);
        // What an in-flight chunk keeps between its forward and backward: each layer's input under full
        // checkpointing, else everything but what selective recomputation drops (its layers taken as MoE
        // layers, or dense ones if heavier, and the routed copies of the busiest chunk).
        let layers = p.layers_per_chunk;
        let stored_per_chunk = if t.activation_checkpointing {
            layers * shard * 2.0 * d * dtype
        } else {
            let stored = |dense: f64, moe: f64, routed: f64| {
                crate::memory::stored_layers_bytes(s, dense, moe, shard, routed, par.etp)
            };
            let moe = stored(0.0, layers, routed.all_layers);
            if s.model.first_dense_layers > 0 {
                moe.max(stored(layers, 0.0, 0.0))
            } else {
                moe
            }
        };
        // The rank that ends the model runs the loss over the vocabulary: it keeps each in-flight
        // micro-batch's softmax until that micro-batch's backward, and the loss's transient buffer takes the
        // place of a layer's working set while it runs.
        let last = par.model_stages() - 1;
        let (kept, transient) = if schedule.stages_on(r).contains(&last) {
            let (k, t) = crate::strategy::output_head::loss_memory_bytes(
                s,
                s.tokens_per_rank(),
                par.tp as u64,
            );
            (schedule.peak_in_flight_of(r, last) as f64 * k, t)
        } else {
            (0.0, 0.0)
        };
        let act = in_flight * stored_per_chunk + kept + layer_full.max(transient);
        let (params_gib, grads_gib, optimizer_gib) = training_state_gib(s, p.on_rank());
        let mut out = MemoryBreakdown {
            params_gib,
            grads_gib,
            optimizer_gib,
            activations_gib: act / GIB,
            kv_cache_gib: 0.0,
            total_gib: 0.0,
        };
        out.total_gib = out.params_gib + out.grads_gib + out.optimizer_gib + out.activations_gib;
        if out.total_gib > worst.total_gib {
            worst = out;
        }
    }
    worst
}

/// A lower bound on the memory an `ep` training strategy's simulation reports for `s`, without
/// simulating: the same formulas with the routed tokens of the busiest rank replaced by their balanced
/// mean (every GPU sources its tokens × top-k assignments, so the most any GPU receives in one layer is at
/// least that mean). With a capacity factor (drops can leave a GPU below the mean) or null experts (fewer
/// assignments) the routed tokens are bounded by 0 instead.
///
/// `None` when the strategy's schedule does not build (the scenario would refuse it).
pub fn memory_lower_bound(s: &Scenario, strategy: &Strategy) -> Option<MemoryBreakdown> {
    let m = &s.model;
    let exact = strategy.capacity_factor.is_none() && s.workload.dynamics.null_expert_prob <= 0.0;
    let per_source = |tokens: f64| {
        if exact {
            tokens * m.top_k.min(m.experts) as f64
        } else {
            0.0
        }
    };
    let par = &strategy.parallel;
    if par.is_single() {
        let tokens = s.tokens_per_rank() as f64;
        let slots = crate::strategy::ep::slots_per_rank(s, strategy);
        let peak = per_source(tokens);
        let routed = RoutedTokens {
            peak_layer: peak,
            // The busiest rank's sum over layers is at least the mean rank's.
            all_layers: m.moe_layers() as f64 * peak,
        };
        return Some(rank_memory(
            s,
            crate::strategy::ep::params_on_rank(s, slots),
            routed,
        ));
    }
    let schedule = par
        .run_schedule(s.workload.mode, s.workload.micro_batches)
        .ok()?;
    let slots = crate::strategy::ep::slots_per_rank(s, strategy);
    let params = stage_params(s, par, slots, &schedule);
    let shard = s.tokens_per_rank() as f64 / par.tp as f64;
    // The busiest chunk's GPU received at least the mean GPU's share of the chunk with the most MoE layers.
    let most = (0..par.model_stages())
        .map(|k| moe_layers_of(s, par, k))
        .max()
        .unwrap_or(0);
    let routed = RoutedTokens {
        peak_layer: per_source(shard),
        all_layers: most as f64 * per_source(shard),
    };
    Some(stage_memory(s, par, &schedule, &params, routed))
}
