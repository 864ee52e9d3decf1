//! Expert parallelism (static placement), training and inference.
//!
//! Ranks form EP groups of `ep_size` consecutive ranks; inside a group, rank i holds experts
//! `i·E/ep_size .. (i+1)·E/ep_size` (contiguous placement) and every group holds all experts (groups are
//! data-parallel replicas of each other). Per MoE layer, forward:
//! dense → dispatch all-to-all(v) → grouped expert GEMMs → combine all-to-all(v); backward runs the layers in
//! reverse with the all-to-alls reversed and twice the compute. Training ends with the gradient all-reduce
//! (dense parameters over all ranks, expert parameters over their replicas) and the optimizer step.
//! With a capacity factor, an expert keeps at most `capacity_factor × mean tokens per expert` of its group's
//! tokens (each source's share scaled down alike); the rest are dropped and neither sent nor computed.

use crate::collective::{AllToAllScratch, Cause, RankTransfer, all_reduce_s, all_to_all};
use crate::engine::{OpId, SimTime, ps};
use crate::iteration::{IterationGraph, IterationOutcome, OpInfo, Stream};
use crate::memory::{MemoryBreakdown, ParamsOnRank, rank_memory};
use crate::phase::Phase;
use crate::scenario::file::Mode;
use crate::scenario::{Scenario, Strategy};
use crate::strategy::shared::{
    dense_forward_s, experts_forward_s, optimizer_s, rank_slowdown, scaled,
};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{IterationRouting, RoutingShape, RoutingSource};

/// Everything about an EP run that does not change between iterations.
pub struct EpModel<'a> {
    pub scenario: &'a Scenario,
    pub strategy: &'a Strategy,
    pub topo: &'a Topology,
    pub cost: &'a dyn CostModel,
    pub routing: &'a dyn RoutingSource,
    ep_size: usize,
    experts_per_rank: usize,
    dense_fwd_s: [f64; 2],
    lm_head_s: f64,
    grad_sync_s: f64,
    optimizer_s: f64,
}

/// Per-iteration buffers, reused across iterations on one thread.
#[derive(Default)]
pub struct EpWorkspace {
    graph: IterationGraph,
    routing: Option<IterationRouting>,
    a2a: AllToAllScratch,
    kept: Vec<u32>,
    bytes: Vec<f64>,
    bytes_t: Vec<f64>,
    local_tokens: Vec<u32>,
    dispatch: Vec<RankTransfer>,
    combine: Vec<RankTransfer>,
    expert_s: Vec<f64>,
    prev: Vec<Option<OpId>>,
    scratch_ops: Vec<OpId>,
}

impl EpWorkspace {
    /// The operation graph of the last simulated iteration, with its timings (for timeline export).
    pub fn graph(&self) -> &IterationGraph {
        &self.graph
    }
}

/// One EP iteration's outcome with its routing facts.
#[derive(Debug, Clone, PartialEq)]
pub struct EpIteration {
    pub outcome: IterationOutcome,
    /// Per rank: tokens its experts received, summed over layers and micro-batches.
    pub tokens_received: Vec<u64>,
    /// Per rank: the most tokens its experts received in one MoE layer.
    pub peak_layer_tokens: Vec<u64>,
    pub routed: u64,
    pub dropped: u64,
    /// Bytes that crossed the network (left their source GPU) in forward all-to-alls.
    pub network_bytes: f64,
}

impl<'a> EpModel<'a> {
    pub fn new(
        scenario: &'a Scenario,
        strategy: &'a Strategy,
        topo: &'a Topology,
        cost: &'a dyn CostModel,
        routing: &'a dyn RoutingSource,
    ) -> Self {
        let s = scenario;
        let g = s.cluster.gpus();
        let ep_size = strategy.ep_size;
        let experts_per_rank = s.model.experts / ep_size;
        let dense_fwd_s = [
            dense_forward_s(s, cost, false),
            dense_forward_s(s, cost, true),
        ];
        let m = &s.model;
        let lm_head_s = cost.gemm_s(s.tokens_per_rank(), m.vocab, m.d_model, m.dtype_bytes);
        let p = params_on_rank(s, ep_size);
        let (grad_sync_s, optimizer_time) = if s.workload.mode == Mode::Training {
            let t = &s.training;
            let zero3 = if t.zero_stage >= 3 { 1.5 } else { 1.0 };
            let all: Vec<usize> = (0..g).collect();
            let dense = all_reduce_s(topo, &all, p.dense * t.grad_bytes_per_param * zero3);
            let replicas: Vec<usize> = (0..g).step_by(ep_size).collect();
            let experts = all_reduce_s(topo, &replicas, p.experts * t.grad_bytes_per_param * zero3);
            let updated = if t.zero_stage >= 1 {
                p.dense / p.dense_replicas + p.experts / p.expert_replicas
            } else {
                p.dense + p.experts
            };
            (dense + experts, optimizer_s(s, cost, updated))
        } else {
            (0.0, 0.0)
        };
        EpModel {
            scenario,
            strategy,
            topo,
            cost,
            routing,
            ep_size,
            experts_per_rank,
            dense_fwd_s,
            lm_head_s,
            grad_sync_s,
            optimizer_s: optimizer_time,
        }
    }

    /// The routing shape this strategy needs from its workload.
    pub fn routing_shape(s: &Scenario) -> RoutingShape {
        RoutingShape {
            moe_layers: s.model.moe_layers(),
            experts: s.model.experts,
            top_k: s.model.top_k,
            ranks: s.cluster.gpus(),
            micro_batches: s.workload.micro_batches,
            tokens_per_rank: s.tokens_per_rank(),
        }
    }

    /// Which GPU holds expert `e` for the group starting at rank `group_start`.
    pub fn owner(&self, group_start: usize, expert: usize) -> usize {
        group_start + expert / self.experts_per_rank
    }

    /// The static placement: experts on each rank of one EP group.
    pub fn placement(&self) -> Vec<Vec<usize>> {
        (0..self.ep_size)
            .map(|r| (r * self.experts_per_rank..(r + 1) * self.experts_per_rank).collect())
            .collect()
    }

    /// Memory of the rank with the most routed tokens.
    pub fn memory(&self, peak_layer_tokens: u64) -> MemoryBreakdown {
        rank_memory(
            self.scenario,
            params_on_rank(self.scenario, self.ep_size),
            peak_layer_tokens as f64,
        )
    }

    /// Simulates one iteration.
    pub fn simulate_iteration(&self, iteration: usize, ws: &mut EpWorkspace) -> EpIteration {
        let shape = self.routing.shape();
        let routing = ws
            .routing
            .get_or_insert_with(|| IterationRouting::zeros(shape));
        self.routing.fill_iteration(iteration, routing);
        let routing = ws.routing.take().expect("filled");
        let out = self.lower_and_run(iteration, &routing, ws);
        ws.routing = Some(routing);
        out
    }

    fn lower_and_run(
        &self,
        iteration: usize,
        routing: &IterationRouting,
        ws: &mut EpWorkspace,
    ) -> EpIteration {
        let s = self.scenario;
        let g = s.cluster.gpus();
        let ep = self.ep_size;
        let shape = routing.shape;
        let (mbs, moe_layers, experts) = (shape.micro_batches, shape.moe_layers, shape.experts);
        let token_bytes = s.model.token_bytes() as f64;
        let slow: Vec<f64> = (0..g).map(|r| rank_slowdown(s, iteration, r)).collect();
        let mean_slow = slow.iter().sum::<f64>() / g as f64;

        let cells = mbs * moe_layers * g;
        ws.dispatch.clear();
        ws.combine.clear();
        ws.expert_s.clear();
        let idle = RankTransfer {
            time_s: 0.0,
            holder: 0,
            cause: Cause::Network,
            excess_s: 0.0,
        };
        ws.dispatch.resize(cells, idle);
        ws.combine.resize(cells, idle);
        ws.expert_s.resize(cells, 0.0);
        let mut tokens_received = vec![0u64; g];
        let mut peak_layer_tokens = vec![0u64; g];
        let (mut routed, mut dropped, mut network_bytes) = (0u64, 0u64, 0.0f64);
        let group_ranks: Vec<Vec<usize>> = (0..g / ep)
            .map(|k| (k * ep..(k + 1) * ep).collect())
            .collect();

        for mb in 0..mbs {
            for layer in 0..moe_layers {
                let counts = routing.layer_counts(mb, layer);
                for ranks in &group_ranks {
                    let start = ranks[0];
                    // Tokens kept per (source in group, expert), after capacity dropping.
                    ws.kept.clear();
                    ws.kept
                        .extend_from_slice(&counts[start * experts..(start + ep) * experts]);
                    let total: u64 = ws.kept.iter().map(|&c| c as u64).sum();
                    routed += total;
                    if let Some(cf) = self.strategy.capacity_factor {
                        let cap = (cf * total as f64 / experts as f64).ceil() as u64;
                        for e in 0..experts {
                            let load: u64 = (0..ep).map(|i| ws.kept[i * experts + e] as u64).sum();
                            if load > cap {
                                for i in 0..ep {
                                    let c = &mut ws.kept[i * experts + e];
                                    let k = (*c as u64 * cap / load) as u32;
                                    dropped += (*c - k) as u64;
                                    *c = k;
                                }
                            }
                        }
                    }
                    ws.bytes.clear();
                    ws.bytes.resize(ep * ep, 0.0);
                    ws.local_tokens.clear();
                    ws.local_tokens.resize(experts, 0);
                    for i in 0..ep {
                        for e in 0..experts {
                            let c = ws.kept[i * experts + e];
                            ws.local_tokens[e] += c;
                            ws.bytes[i * ep + (self.owner(start, e) - start)] +=
                                c as f64 * token_bytes;
                        }
                    }
                    ws.bytes_t.clear();
                    ws.bytes_t.resize(ep * ep, 0.0);
                    for i in 0..ep {
                        for j in 0..ep {
                            ws.bytes_t[j * ep + i] = ws.bytes[i * ep + j];
                        }
                    }
                    let d = all_to_all(self.topo, ranks, &ws.bytes, &mut ws.a2a);
                    network_bytes += d.network_bytes;
                    let c = all_to_all(self.topo, ranks, &ws.bytes_t, &mut ws.a2a);
                    for (i, &r) in ranks.iter().enumerate() {
                        let cell = (mb * moe_layers + layer) * g + r;
                        ws.dispatch[cell] = d.per_rank[i];
                        ws.combine[cell] = c.per_rank[i];
                        let local = &ws.local_tokens
                            [i * self.experts_per_rank..(i + 1) * self.experts_per_rank];
                        let recv: u64 = local.iter().map(|&x| x as u64).sum();
                        tokens_received[r] += recv;
                        peak_layer_tokens[r] = peak_layer_tokens[r].max(recv);
                        ws.expert_s[cell] = experts_forward_s(s, self.cost, local);
                    }
                }
            }
        }

        // Lower into operations.
        let graph = &mut ws.graph;
        graph.reset(g, 2);
        ws.prev.clear();
        ws.prev.resize(g, None);
        let layers = s.model.layers;
        let first_moe = s.model.first_dense_layers;
        let training = s.workload.mode == Mode::Training;
        let dense_op = |graph: &mut IterationGraph, prev: &mut Vec<Option<OpId>>, seconds: f64| {
            for r in 0..g {
                let dur = scaled(seconds, slow[r]);
                let excess = ps(seconds * (slow[r] - mean_slow).max(0.0));
                let info = OpInfo {
                    phase: Phase::DenseCompute,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Compute,
                    excess,
                };
                prev[r] = Some(graph.op(r, Stream::Compute, dur, info, prev[r].as_slice()));
            }
        };
        for mb in 0..mbs {
            for layer in 0..layers {
                let moe = layer >= first_moe;
                dense_op(graph, &mut ws.prev, self.dense_fwd_s[moe as usize]);
                if moe {
                    let cell0 = (mb * moe_layers + layer - first_moe) * g;
                    self.moe_block(
                        graph,
                        &mut ws.prev,
                        &mut ws.scratch_ops,
                        &group_ranks,
                        cell0,
                        1.0,
                        &slow,
                        &ws.dispatch,
                        &ws.combine,
                        &ws.expert_s,
                        false,
                    );
                }
            }
            dense_op(graph, &mut ws.prev, self.lm_head_s);
            if training {
                dense_op(graph, &mut ws.prev, 2.0 * self.lm_head_s);
                let recompute = if s.training.activation_checkpointing {
                    1.0
                } else {
                    0.0
                };
                for layer in (0..layers).rev() {
                    let moe = layer >= first_moe;
                    if moe {
                        let cell0 = (mb * moe_layers + layer - first_moe) * g;
                        self.moe_block(
                            graph,
                            &mut ws.prev,
                            &mut ws.scratch_ops,
                            &group_ranks,
                            cell0,
                            2.0,
                            &slow,
                            &ws.dispatch,
                            &ws.combine,
                            &ws.expert_s,
                            true,
                        );
                    }
                    dense_op(
                        graph,
                        &mut ws.prev,
                        (2.0 + recompute) * self.dense_fwd_s[moe as usize],
                    );
                }
            }
        }
        if training {
            let b = graph.barrier(ws.prev.iter().flatten().copied());
            for r in 0..g {
                let info = OpInfo {
                    phase: Phase::GradSync,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Network,
                    excess: 0,
                };
                let sync = graph.op(r, Stream::Comm, ps(self.grad_sync_s), info, &[b]);
                let info = OpInfo {
                    phase: Phase::Optimizer,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Compute,
                    excess: 0,
                };
                ws.prev[r] = Some(graph.op(
                    r,
                    Stream::Compute,
                    scaled(self.optimizer_s, slow[r]),
                    info,
                    &[sync],
                ));
            }
        }
        let outcome = graph.analyse();
        EpIteration {
            outcome,
            tokens_received,
            peak_layer_tokens,
            routed,
            dropped,
            network_bytes,
        }
    }

    /// One MoE block (forward, or backward with `backward`): all-to-all, experts, all-to-all per group.
    #[allow(clippy::too_many_arguments)]
    fn moe_block(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        ops: &mut Vec<OpId>,
        groups: &[Vec<usize>],
        cell0: usize,
        compute_scale: f64,
        slow: &[f64],
        dispatch: &[RankTransfer],
        combine: &[RankTransfer],
        expert_s: &[f64],
        backward: bool,
    ) {
        // Forward: dispatch then combine. Backward: the combine's gradient travels like a dispatch (token
        // owners → experts) and the dispatch's gradient like a combine; each keeps its forward phase name.
        let (first, first_phase, second, second_phase) = if backward {
            (dispatch, Phase::Combine, combine, Phase::Dispatch)
        } else {
            (dispatch, Phase::Dispatch, combine, Phase::Combine)
        };
        for ranks in groups {
            let b = graph.barrier(ranks.iter().filter_map(|&r| prev[r]));
            ops.clear();
            for &r in ranks {
                let t = first[cell0 + r];
                let info = OpInfo {
                    phase: first_phase,
                    rank: r as u32,
                    holder: t.holder as u32,
                    cause: t.cause,
                    excess: ps(t.excess_s),
                };
                ops.push(graph.op(r, Stream::Comm, ps(t.time_s), info, &[b]));
            }
            let mean: f64 = ranks
                .iter()
                .map(|&r| expert_s[cell0 + r] * slow[r])
                .sum::<f64>()
                / ranks.len() as f64;
            for (i, &r) in ranks.iter().enumerate() {
                let secs = expert_s[cell0 + r] * slow[r] * compute_scale;
                let excess = ps((secs - mean * compute_scale).max(0.0));
                let info = OpInfo {
                    phase: Phase::ExpertCompute,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Compute,
                    excess,
                };
                ops[i] = graph.op(r, Stream::Compute, ps(secs), info, &[ops[i]]);
            }
            let b2 = graph.barrier(ops.iter().copied());
            for &r in ranks {
                let t = second[cell0 + r];
                let info = OpInfo {
                    phase: second_phase,
                    rank: r as u32,
                    holder: t.holder as u32,
                    cause: t.cause,
                    excess: ps(t.excess_s),
                };
                prev[r] = Some(graph.op(r, Stream::Comm, ps(t.time_s), info, &[b2]));
            }
        }
    }

    /// Simulated time per iteration spent in the gradient all-reduce (before overlap).
    pub fn grad_sync_time(&self) -> SimTime {
        ps(self.grad_sync_s)
    }
}

/// Parameters on one rank under EP with groups of `ep_size`.
pub fn params_on_rank(s: &Scenario, ep_size: usize) -> ParamsOnRank {
    let m = &s.model;
    let g = s.cluster.gpus();
    ParamsOnRank {
        dense: m.dense_params() as f64,
        experts: (m.moe_layers() * (m.experts / ep_size)) as f64 * m.expert_params() as f64,
        dense_replicas: g as f64,
        expert_replicas: (g / ep_size) as f64,
    }
}
