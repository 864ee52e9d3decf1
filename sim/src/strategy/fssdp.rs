//! Fully sharded sparse data parallelism (FSSDP, from Hecate), training. This file holds the run-wide model
//! (forecast, ownership epochs, plans, memory, figures); `lower` turns one iteration into operations.
//!
//! Every expert of every MoE layer has one owner rank that stores its weights, gradient and optimizer state
//! (one global copy, [`sharding`]). Each iteration and layer, a materialization plan ([`mod@materialize`]) from a
//! moving-average load forecast decides which other ranks get a temporary copy; SparseAllGather (spAG, per-
//! expert broadcasts, [`crate::collective_sparse`]) delivers them while the layer's dense compute runs, tokens
//! go to the nearest copy ([`dispatch`]), and in backward SparseReduceScatter (spRS, per-expert reduces) sums
//! the replicas' gradients back to the owners while the dense backward runs. Owners then step the optimizer.
//!
//! Lowering per rank (two streams, Compute and Comm; the Comm stream is FIFO, so spAG, all-to-alls and spRS
//! queue behind each other as they share the network):
//! forward layer l: `dense_l ∥ spAG_l` → barrier → dispatch → experts → barrier → combine;
//! backward layer l: dispatch' → experts (2×) → combine' → `spRS_l ∥ dense'_l`; with re-materialization,
//! copies are freed after forward and `spAG_l` runs again in backward beside the dense backward that precedes
//! layer l's MoE block. Optional calibration re-plans on the actual gate output and adds a critical-path spAG
//! when the predicted expert and all-to-all time saved exceeds it. Heterogeneous re-sharding every
//! `reshard_interval` iterations moves owners' weights and optimizer state (charged as an all-to-all at the
//! start of the iteration). Training ends with the dense gradient all-reduce and the owners' optimizer step.
//!
//! The forecast of iteration i averages the loads of iterations `i−w .. i−1`; before iteration 0 the
//! workload is taken as stationary (history = iteration 0), i.e. the simulated window starts warm.

pub mod dispatch;
mod lower;
pub mod materialize;
mod pipelined;
pub mod sharding;

use crate::collective::AllToAllScratch;
use crate::collective_sparse::{SparseBatch, SparseScratch};
use crate::engine::to_ms;
use crate::iteration::IterationGraph;
use crate::memory::{GIB, MemoryBreakdown, ParamsOnRank, RoutedTokens, rank_memory};
use crate::phase::Phase;
use crate::result::StrategyResult;
use crate::scenario::knobs::FssdpKnobs;
use crate::scenario::{Scenario, Strategy};
use crate::strategy::ep::EpModel;
use crate::strategy::model::StrategyModel;
use crate::strategy::output_head::OutputHead;
use crate::strategy::record::{IterationRecord, routed_tokens};
use crate::strategy::shared::{attention_backward_extra_s, dense_forward_s, dense_forward_tp_s};
use crate::strategy::stage_memory::{StageParams, stage_memory};
use crate::topology::Topology;
use dispatch::Dispatch;
use materialize::{LayerPlacement, materialize, overlap_degree};
use moesim_calibrate::CostModel;
use moesim_traces::{IterationRouting, RoutingSource};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sharding::Owners;

/// Everything about an FSSDP run that does not change between iterations.
pub struct FssdpModel<'a> {
    pub scenario: &'a Scenario,
    pub knobs: &'a FssdpKnobs,
    pub topo: &'a Topology,
    pub cost: &'a dyn CostModel,
    pub routing: &'a dyn RoutingSource,
    /// GPUs that shard a layer's experts: every GPU, or with a pipeline the GPUs of one stage.
    ranks: usize,
    /// Per pipeline rank: its stage's GPUs (a layer's shard rank j is GPU `stage_gpus[r][j]`); one list of
    /// every GPU without a pipeline.
    stage_gpus: Vec<Vec<usize>>,
    /// Per MoE layer: the pipeline rank that holds it (0 without a pipeline).
    layer_rank: Vec<usize>,
    /// With pipeline parallelism: its schedule and per-stage figures ([`pipelined`]).
    pipe: Option<pipelined::Pipeline>,
    gpus_per_node: usize,
    experts: usize,
    moe_layers: usize,
    /// The overlap degree t in use.
    pub overlap_degree: usize,
    /// Tensor parallelism of the dense layers (1: none); see [`TensorParallel`].
    tp: Option<TensorParallel>,
    /// [dense layer, MoE layer]: the dense forward of one micro-batch on one GPU (one TP rank's share).
    dense_fwd_s: [f64; 2],
    /// What selective recomputation adds to each [dense, MoE] layer's backward (norms, MLA up-projections,
    /// core attention, a dense MLP, an MoE block's router and shared experts).
    selective_s: [f64; 2],
    /// What attention's backward adds beyond twice the forward.
    attention_bwd_extra_s: f64,
    /// The output head of one micro-batch (projection and, in training, the loss).
    head: OutputHead,
    /// The dense gradient all-reduce's stages.
    grad_sync: Vec<crate::network::CollectiveSpec>,
    expert_bytes: f64,
    grad_bytes: f64,
    /// Per iteration: forward loads per (layer, expert), summed over micro-batches.
    loads: Vec<Vec<f64>>,
    /// Owners per re-sharding epoch.
    epochs: Vec<Owners>,
}

/// FSSDP's dense layers split over tensor-parallel groups of `tp` consecutive GPUs (Megatron's column/row
/// split with sequence parallelism, as `strategy/ep/pipelined.rs` lowers it): every GPU holds `1/tp` of the
/// dense weights and a `1/tp` sequence shard of each micro-batch, which it routes to the experts' copies
/// itself (experts stay whole: FSSDP shards them over every GPU, as expert TP 1).
struct TensorParallel {
    tp: usize,
    /// [dense layer, MoE layer]: (attention block, MLP block) forward seconds on one TP rank.
    blocks: [(f64, f64); 2],
    /// One sequence-parallel all-gather of a micro-batch's activations over every TP group (a
    /// reduce-scatter moves the same ring traffic), on the auxiliary communication stream so that it never
    /// queues behind the sparse collectives on the main one.
    ring: crate::network::CollectiveSpec,
    /// The pipeline-free schedule (one micro-batch's activations in flight) the stage memory model takes.
    parallel: crate::scenario::parallel::Parallel,
    schedule: crate::pipeline::schedule::Schedule,
}

/// Per-iteration buffers, reused across iterations on one thread.
#[derive(Default)]
pub struct FssdpWorkspace {
    pub(crate) graph: IterationGraph,
    routing: Option<IterationRouting>,
    a2a: AllToAllScratch,
    sparse: SparseScratch,
    batch: SparseBatch,
    dispatch: Dispatch,
}

/// One FSSDP iteration's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FssdpIteration {
    pub base: IterationRecord,
    /// Expert copies materialized beyond the owners, summed over layers.
    pub materialized: usize,
    /// The most copies one rank holds at once (all layers, or one layer with re-materialization).
    pub peak_materialized_on_rank: usize,
    pub spag_bytes: f64,
    pub sprs_bytes: f64,
    /// Time spAGs held the dispatch barrier beyond the dense compute they overlap.
    pub exposed_spag_s: f64,
    /// Layers (× micro-batches) where calibration added a critical-path spAG.
    pub calibrated: usize,
    pub reshard_bytes: f64,
}

/// FSSDP figures of a run, for the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FssdpStats {
    /// Expert copies materialized per MoE layer (all ranks together), mean over layers and iterations.
    pub materialized_per_layer_mean: f64,
    /// SparseAllGather bytes delivered per iteration (re-gathers included), mean.
    pub spag_bytes: u64,
    /// SparseReduceScatter bytes per iteration, mean.
    pub sprs_bytes: u64,
    /// spAG time not hidden behind dense compute, per iteration, mean.
    pub exposed_spag_ms: f64,
    /// spRS time on the critical path per iteration, mean.
    pub sprs_critical_ms: f64,
    pub overlap_degree: usize,
    pub memory_cap_experts: usize,
    pub rematerialize: bool,
    /// Most experts (all layers) one rank owns.
    pub owned_experts_max: usize,
    /// Most materialized copies one rank holds at once.
    pub materialized_on_rank_max: usize,
    /// Weights and gradient buffers of those copies.
    pub materialized_gib: f64,
    /// Layers per iteration re-planned by calibration, mean.
    pub calibrated_layers_mean: f64,
    /// Bytes moved by heterogeneous re-sharding per iteration, mean.
    pub reshard_bytes: u64,
}

impl<'a> FssdpModel<'a> {
    pub fn new(
        scenario: &'a Scenario,
        strategy: &'a Strategy,
        topo: &'a Topology,
        cost: &'a dyn CostModel,
        routing: &'a dyn RoutingSource,
    ) -> Self {
        let s = scenario;
        let knobs = strategy
            .fssdp
            .as_ref()
            .expect("an fssdp strategy has FSSDP knobs");
        let m = &s.model;
        let gpus = s.cluster.gpus();
        let pipe = (strategy.parallel.pp > 1).then(|| pipelined::Pipeline::new(s, strategy, topo));
        let ranks = strategy.parallel.stage_gpus(gpus);
        let (stage_gpus, layer_rank) = match &pipe {
            Some(p) => (p.stage_gpus.clone(), p.moe_rank.clone()),
            None => (vec![(0..gpus).collect()], vec![0; m.moe_layers()]),
        };
        let gpus_per_node = s.cluster.gpus_per_node;
        let experts = m.experts;
        let moe_layers = m.moe_layers();
        let t = s.tokens_per_rank();
        let tp_size = strategy.parallel.tp.max(1);
        let comms = crate::collective::Collectives::new(topo, s.cluster.network);
        let tp = (tp_size > 1).then(|| {
            let blocks = [
                dense_forward_tp_s(s, cost, false, t, tp_size as u64),
                dense_forward_tp_s(s, cost, true, t, tp_size as u64),
            ];
            // Every TP group of the cluster (a pipeline prices its stages' own, see [`pipelined`]).
            let rings: Vec<Vec<usize>> = (0..gpus / tp_size)
                .map(|k| (k * tp_size..(k + 1) * tp_size).collect())
                .collect();
            let act_bytes = (t * m.d_model * m.dtype_bytes as u64) as f64;
            let ring = comms.rings(
                &rings,
                act_bytes,
                1.0,
                &mut AllToAllScratch::default(),
                crate::engine::Stream::CommAux,
            );
            let parallel = strategy.parallel.clone();
            let schedule = parallel
                .run_schedule(s.workload.mode, s.workload.micro_batches)
                .expect("a validated scenario's schedule builds");
            TensorParallel {
                tp: tp_size,
                blocks,
                ring,
                parallel,
                schedule,
            }
        });
        let dense_fwd_s = match &tp {
            None => [
                dense_forward_s(s, cost, false),
                dense_forward_s(s, cost, true),
            ],
            Some(tp) => tp.blocks.map(|(attention, mlp)| attention + mlp),
        };
        let attention_bwd_extra_s = attention_backward_extra_s(s, cost, t, tp_size as u64);
        let selective_s =
            crate::strategy::shared::selective_recompute_s(s, cost, t, tp_size as u64);
        let head = OutputHead::new(s, cost, t, tp_size as u64);
        let expert_bytes = m.expert_bytes() as f64;
        let grad_bytes = m.expert_params() as f64 * s.training.grad_bytes_per_param;
        // A copy travels between the GPUs of a layer's shard group: across nodes when it spans several.
        let bandwidth = if ranks > gpus_per_node {
            topo.route_bandwidth(0, gpus_per_node)
        } else if ranks > 1 {
            topo.route_bandwidth(0, 1)
        } else {
            0.0
        };
        let overlap_degree = knobs
            .overlap_degree
            .unwrap_or_else(|| overlap_degree(dense_fwd_s[1], bandwidth, expert_bytes, experts));
        let zero3 = if s.training.zero_stage >= 3 { 1.5 } else { 1.0 };
        let dense_grad_bytes = m.dense_params() as f64 * s.training.grad_bytes_per_param * zero3;
        // Dense gradients: all-reduced over every GPU, or with TP over each TP index's data-parallel group
        // (its `1/tp` of them; the groups are disjoint, so their collectives run side by side).
        // (With a pipeline each stage synchronises its own, see [`pipelined`].)
        let tp_groups = if pipe.is_some() { 0 } else { tp_size };
        let grad_sync: Vec<crate::network::CollectiveSpec> = (0..tp_groups)
            .flat_map(|j| {
                let group: Vec<usize> = (0..ranks / tp_size).map(|i| i * tp_size + j).collect();
                comms.all_reduce(
                    &group,
                    dense_grad_bytes / tp_size as f64,
                    crate::engine::Stream::Comm,
                    &mut AllToAllScratch::default(),
                )
            })
            .collect();
        let iterations = s.workload.iterations.min(routing.iterations());
        let loads: Vec<Vec<f64>> = (0..iterations)
            .into_par_iter()
            .map(|it| {
                let r = routing.iteration(it);
                let mut out = vec![0.0; moe_layers * experts];
                for mb in 0..r.shape.micro_batches {
                    for l in 0..moe_layers {
                        for (e, v) in r.expert_loads(mb, l).into_iter().enumerate() {
                            out[l * experts + e] += v as f64;
                        }
                    }
                }
                out
            })
            .collect();
        let mut model = FssdpModel {
            scenario,
            knobs,
            topo,
            cost,
            routing,
            ranks,
            stage_gpus,
            layer_rank,
            pipe,
            gpus_per_node,
            experts,
            moe_layers,
            overlap_degree,
            tp,
            dense_fwd_s,
            selective_s,
            attention_bwd_extra_s,
            head,
            grad_sync,
            expert_bytes,
            grad_bytes,
            loads,
            epochs: Vec::new(),
        };
        let mut epochs = vec![sharding::homogeneous(moe_layers, experts, ranks)];
        let n = knobs.reshard_interval;
        if n > 0 {
            let mut k = 1;
            while k * n < iterations {
                let f = model.forecast_all(k * n);
                epochs.push(model.heterogeneous(&f));
                k += 1;
            }
        }
        model.epochs = epochs;
        model
    }

    /// Forecast loads of every (layer, expert) for iteration `it`: the mean of the previous window.
    fn forecast_all(&self, it: usize) -> Vec<f64> {
        let w = self.knobs.forecast_window;
        let mut f = vec![0.0; self.moe_layers * self.experts];
        for j in 0..w {
            let src = it
                .saturating_sub(j + 1)
                .min(self.loads.len().saturating_sub(1));
            for (a, b) in f.iter_mut().zip(&self.loads[src]) {
                *a += b / w as f64;
            }
        }
        f
    }

    /// Hecate's heterogeneous sharding from `forecast`, per pipeline rank over the layers it holds (equal
    /// expert slots per GPU over those layers).
    fn heterogeneous(&self, forecast: &[f64]) -> sharding::Owners {
        let e = self.experts;
        let mut owners = vec![0u32; self.moe_layers * e];
        for r in 0..self.stage_gpus.len() {
            let layers: Vec<usize> = (0..self.moe_layers)
                .filter(|&l| self.layer_rank[l] == r)
                .collect();
            if layers.is_empty() {
                continue;
            }
            let sub: Vec<f64> = layers
                .iter()
                .flat_map(|&l| forecast[l * e..(l + 1) * e].iter().copied())
                .collect();
            let own =
                sharding::heterogeneous(&sub, layers.len(), e, self.ranks, self.gpus_per_node);
            for (i, &l) in layers.iter().enumerate() {
                owners[l * e..(l + 1) * e].copy_from_slice(&own[i * e..(i + 1) * e]);
            }
        }
        owners
    }

    /// The GPUs of MoE layer `l`'s shard group (shard rank j is the j-th).
    fn layer_gpus(&self, l: usize) -> &[usize] {
        &self.stage_gpus[self.layer_rank[l]]
    }

    /// Experts each GPU owns over all layers under `owners`.
    fn owned_per_gpu(&self, owners: &[u32]) -> Vec<usize> {
        let mut out = vec![0; self.scenario.cluster.gpus()];
        for (i, &o) in owners.iter().enumerate() {
            out[self.layer_gpus(i / self.experts)[o as usize]] += 1;
        }
        out
    }

    fn epoch(&self, it: usize) -> usize {
        match self.knobs.reshard_interval {
            0 => 0,
            n => (it / n).min(self.epochs.len() - 1),
        }
    }

    /// Owners in force during iteration `it`.
    pub fn owners(&self, it: usize) -> &[u32] {
        &self.epochs[self.epoch(it)]
    }

    /// The materialization plan of every MoE layer for iteration `it`.
    pub fn plan(&self, it: usize) -> Vec<LayerPlacement> {
        let f = self.forecast_all(it);
        let owners = self.owners(it);
        let e = self.experts;
        let m = self.knobs.memory_cap_experts;
        (0..self.moe_layers)
            .map(|l| {
                materialize(
                    &f[l * e..(l + 1) * e],
                    &owners[l * e..(l + 1) * e],
                    self.ranks,
                    self.gpus_per_node,
                    self.overlap_degree,
                    m,
                )
            })
            .collect()
    }

    /// Parameters on the rank that owns the most experts (before materialized copies).
    pub fn params_on_rank(&self) -> ParamsOnRank {
        let s = self.scenario;
        let owned = self.owned_experts_max();
        let tp = self.tp_size();
        ParamsOnRank {
            dense: s.model.dense_params() as f64 / tp as f64,
            experts: owned as f64 * s.model.expert_params() as f64,
            dense_replicas: (self.ranks / tp) as f64,
            expert_replicas: 1.0,
        }
    }

    /// GPUs per tensor-parallel group (1 without TP).
    pub fn tp_size(&self) -> usize {
        self.tp.as_ref().map_or(1, |tp| tp.tp)
    }

    /// The most experts one rank owns over all layers, in any epoch.
    pub fn owned_experts_max(&self) -> usize {
        self.epochs
            .iter()
            .flat_map(|o| self.owned_per_gpu(o))
            .max()
            .unwrap_or(0)
    }

    /// Memory of the peak rank: its owned experts' full state, plus weights and gradient buffers of
    /// `materialized` copies, plus activations for `routed` tokens.
    pub fn memory(&self, routed: RoutedTokens, materialized: usize) -> MemoryBreakdown {
        let s = self.scenario;
        let mut mem = match &self.tp {
            _ if self.pipe.is_some() => self.pipelined_memory(routed),
            None => rank_memory(s, self.params_on_rank(), routed),
            // With TP, as a pipeline-free stage: one TP rank's parameters, activations of its sequence
            // shard (one micro-batch in flight).
            Some(tp) => {
                let p = self.params_on_rank();
                let params = StageParams {
                    dense: p.dense,
                    experts: p.experts,
                    dense_replicas: p.dense_replicas,
                    expert_replicas: p.expert_replicas,
                    layers_per_chunk: s.model.layers as f64,
                };
                stage_memory(s, &tp.parallel, &tp.schedule, &[params], routed)
            }
        };
        let p = materialized as f64 * s.model.expert_params() as f64;
        mem.params_gib += p * s.model.dtype_bytes as f64 / GIB;
        mem.grads_gib += p * s.training.grad_bytes_per_param / GIB;
        mem.total_gib = mem.params_gib
            + mem.grads_gib
            + mem.optimizer_gib
            + mem.activations_gib
            + mem.kv_cache_gib;
        mem
    }

    /// Bytes of weights and gradient buffers of `copies` materialized experts.
    pub fn materialized_gib(&self, copies: usize) -> f64 {
        let s = self.scenario;
        copies as f64
            * s.model.expert_params() as f64
            * (s.model.dtype_bytes as f64 + s.training.grad_bytes_per_param)
            / GIB
    }

    /// Owner placement of the first MoE layer (in force at iteration 0), as experts per GPU (with a
    /// pipeline, the GPUs of the first layer's stage own them all).
    pub fn placement(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.scenario.cluster.gpus()];
        if self.moe_layers == 0 {
            return out;
        }
        let gpus = self.layer_gpus(0);
        for (e, &o) in self.epochs[0][..self.experts].iter().enumerate() {
            out[gpus[o as usize]].push(e);
        }
        out
    }

    /// Aggregates iterations into the FSSDP figures of the result.
    pub fn stats(&self, runs: &[FssdpIteration]) -> FssdpStats {
        let n = runs.len().max(1) as f64;
        let peak = runs
            .iter()
            .map(|r| r.peak_materialized_on_rank)
            .max()
            .unwrap_or(0);
        FssdpStats {
            materialized_per_layer_mean: runs.iter().map(|r| r.materialized as f64).sum::<f64>()
                / n
                / self.moe_layers as f64,
            spag_bytes: (runs.iter().map(|r| r.spag_bytes).sum::<f64>() / n).round() as u64,
            sprs_bytes: (runs.iter().map(|r| r.sprs_bytes).sum::<f64>() / n).round() as u64,
            exposed_spag_ms: runs.iter().map(|r| r.exposed_spag_s).sum::<f64>() / n * 1e3,
            sprs_critical_ms: runs
                .iter()
                .map(|r| to_ms(r.base.outcome.breakdown[Phase::Sprs.index()]))
                .sum::<f64>()
                / n,
            overlap_degree: self.overlap_degree,
            memory_cap_experts: self.knobs.memory_cap_experts,
            rematerialize: self.knobs.rematerialize,
            owned_experts_max: self.owned_experts_max(),
            materialized_on_rank_max: peak,
            materialized_gib: self.materialized_gib(peak),
            calibrated_layers_mean: runs.iter().map(|r| r.calibrated as f64).sum::<f64>() / n,
            reshard_bytes: (runs.iter().map(|r| r.reshard_bytes).sum::<f64>() / n).round() as u64,
        }
    }
}

/// The routing shape FSSDP needs (the same as EP's: per source rank and expert).
pub fn routing_shape(s: &Scenario) -> moesim_traces::RoutingShape {
    EpModel::routing_shape(s)
}

impl StrategyModel for FssdpModel<'_> {
    type Workspace = FssdpWorkspace;
    type Iteration = FssdpIteration;

    fn iterations(&self) -> usize {
        self.loads.len()
    }

    fn simulate(&self, it: usize, ws: &mut FssdpWorkspace) -> FssdpIteration {
        self.simulate_iteration(it, ws)
    }

    fn record(it: &FssdpIteration) -> &IterationRecord {
        &it.base
    }

    fn graph(ws: &mut FssdpWorkspace) -> &mut IterationGraph {
        &mut ws.graph
    }

    fn extra_phases(&self) -> &'static [Phase] {
        if self.tp.is_some() {
            &[
                Phase::Spag,
                Phase::Sprs,
                Phase::Reshard,
                Phase::TensorParallel,
            ]
        } else {
            &[Phase::Spag, Phase::Sprs, Phase::Reshard]
        }
    }

    fn finish(&self, runs: &[FssdpIteration], result: &mut StrategyResult) {
        let stats = self.stats(runs);
        result.memory = self.memory(
            routed_tokens(runs.iter().map(|r| &r.base)),
            stats.materialized_on_rank_max,
        );
        result.memory_peak_gib = result.memory.total_gib;
        result.placement = self.placement();
        result.fssdp = Some(stats);
    }
}
