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
//!
//! `ep-replicated` gives every GPU `slots_per_gpu` expert slots and places copies of hot experts from a load
//! forecast (`crate::placement`): the first window uses a plan for uniform load, and every
//! `replan_interval` iterations a new plan is made from the loads of all earlier iterations. A source's
//! tokens for an expert split over its copies (evenly, or within the source's node first). Moving copies
//! costs their weights (and, in training, optimizer state) over the network at the start of the iteration
//! that uses the new plan (phase `rebalance`); copies of an expert all-reduce their gradients.

use crate::collective::{AllToAllScratch, Cause, RankTransfer, all_reduce_s, all_to_all};
use crate::engine::{OpId, SimTime, ps};
use crate::iteration::{IterationGraph, IterationOutcome, OpInfo, Stream};
use crate::memory::{MemoryBreakdown, ParamsOnRank, rank_memory};
use crate::phase::Phase;
use crate::placement::forecast::{Forecast, forecast};
use crate::placement::search::{PlaceOptions, place_with_history};
use crate::placement::{LayerPlacement, eplb::eplb};
use crate::scenario::file::Mode;
use crate::scenario::file::{PlacementMethod, TokenSplit};
use crate::scenario::{Scenario, Strategy};
use crate::strategy::layout::{LayerLayout, Layout};
use crate::strategy::shared::{
    dense_forward_s, experts_forward_s, optimizer_s, rank_slowdown, scaled,
};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{IterationRouting, RoutingShape, RoutingSource};
use rayon::prelude::*;

/// Everything about an EP run that does not change between iterations.
pub struct EpModel<'a> {
    pub scenario: &'a Scenario,
    pub strategy: &'a Strategy,
    pub topo: &'a Topology,
    pub cost: &'a dyn CostModel,
    pub routing: &'a dyn RoutingSource,
    ep_size: usize,
    slots_per_gpu: usize,
    token_split: TokenSplit,
    /// Iterations each layout serves.
    window: usize,
    /// One layout per planning window.
    layouts: Vec<Layout>,
    /// Per window: seconds each group rank spends receiving moved copies before the window's first iteration.
    rebalance_s: Vec<Vec<f64>>,
    /// Per window: expert copies moved at its start (all layers, one group).
    moved_copies: Vec<usize>,
    dense_fwd_s: [f64; 2],
    lm_head_s: f64,
    /// Per window: gradient synchronisation seconds.
    grad_sync_s: Vec<f64>,
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
    tokens_at: Vec<u32>,
    slot_tokens: Vec<u32>,
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
        let m = &s.model;
        let experts = m.experts;
        let moe_layers = m.moe_layers();
        let rep = strategy.replication;
        let slots_per_gpu = rep.map_or(experts / ep_size, |r| r.slots_per_gpu);
        let iterations = s.workload.iterations.min(routing.iterations());
        let window = rep.map_or(usize::MAX, |r| r.replan_interval);
        let windows = if rep.is_some() {
            iterations.div_ceil(window).max(1)
        } else {
            1
        };
        let gpus_per_node = s.cluster.gpus_per_node.min(ep_size);

        // Placements: static EP is contiguous; replicated EP plans window 0 for uniform load, then each
        // window from the loads of every earlier iteration (all groups share one placement).
        let mut placements: Vec<Vec<LayerPlacement>> = Vec::with_capacity(windows);
        if let Some(r) = rep {
            let history: Vec<Vec<Vec<f64>>> = (0..((windows - 1) * window).min(iterations))
                .into_par_iter()
                .map(|it| {
                    let routing_it = routing.iteration(it);
                    (0..moe_layers)
                        .map(|l| {
                            let mut loads = vec![0.0; experts];
                            for mb in 0..routing_it.shape.micro_batches {
                                for (e, x) in routing_it.expert_loads(mb, l).into_iter().enumerate()
                                {
                                    loads[e] += x as f64;
                                }
                            }
                            loads
                        })
                        .collect()
                })
                .collect();
            let mut o = PlaceOptions::new(ep_size, r.slots_per_gpu, gpus_per_node);
            // A dispatch that serves tokens inside their node needs the same number of copies per node.
            o.node_balanced = r.token_split == TokenSplit::LocalFirst;
            for w in 0..windows {
                let seen = &history[..(w * window).min(history.len())];
                let layer_plans: Vec<LayerPlacement> = (0..moe_layers)
                    .into_par_iter()
                    .map(|l| {
                        let past: Vec<&[f64]> = seen.iter().map(|it| it[l].as_slice()).collect();
                        let mean = if past.is_empty() {
                            vec![1.0; experts]
                        } else {
                            forecast(
                                &past,
                                Forecast::MovingAverage {
                                    window: r.forecast_window.unwrap_or(usize::MAX),
                                },
                            )
                            .0
                        };
                        let prev = placements.last().map(|p: &Vec<LayerPlacement>| &p[l]);
                        match r.method {
                            PlacementMethod::Eplb => eplb(&mean, ep_size, r.slots_per_gpu),
                            PlacementMethod::Moesim => {
                                let recent = &past[past.len().saturating_sub(if ep_size <= 64 {
                                    16
                                } else {
                                    0
                                })..];
                                place_with_history(&mean, recent, &o, prev)
                            }
                        }
                    })
                    .collect();
                placements.push(layer_plans);
            }
        } else {
            placements.push(vec![
                LayerPlacement::contiguous(experts, ep_size);
                moe_layers
            ]);
        }
        let layouts: Vec<Layout> = placements
            .iter()
            .map(|ls| Layout {
                layers: ls
                    .iter()
                    .map(|p| LayerLayout::from_placement(p, experts))
                    .collect(),
            })
            .collect();

        // Moving copies between windows: weights, plus gradients' optimizer state in training.
        let training = s.workload.mode == Mode::Training;
        let move_bytes = m.expert_params() as f64
            * (m.dtype_bytes as f64
                + if training {
                    s.training.optimizer_bytes_per_param
                } else {
                    0.0
                });
        let mut rebalance_s = vec![vec![0.0; ep_size]];
        let mut moved_copies = vec![0usize];
        for w in 1..placements.len() {
            let mut per_rank = vec![0.0; ep_size];
            let mut moved = 0;
            for (l, now) in placements[w].iter().enumerate() {
                let before = &placements[w - 1][l];
                for (t, slots) in now.gpu_experts.iter().enumerate() {
                    let mut had = before.gpu_experts[t].clone();
                    for &e in slots {
                        if let Some(i) = had.iter().position(|&x| x == e) {
                            had.swap_remove(i);
                            continue;
                        }
                        moved += 1;
                        // From the nearest previous holder (same node if any).
                        let holders = &layouts[w - 1].layers[l].replicas[e];
                        let src = holders
                            .iter()
                            .copied()
                            .find(|&h| h / gpus_per_node == t / gpus_per_node)
                            .or_else(|| holders.first().copied())
                            .unwrap_or(t);
                        if src != t {
                            per_rank[t] += topo.route_latency_s(src, t)
                                + move_bytes / topo.route_bandwidth(src, t);
                        }
                    }
                }
            }
            rebalance_s.push(per_rank);
            moved_copies.push(moved);
        }

        let dense_fwd_s = [
            dense_forward_s(s, cost, false),
            dense_forward_s(s, cost, true),
        ];
        let lm_head_s = cost.gemm_s(s.tokens_per_rank(), m.vocab, m.d_model, m.dtype_bytes);
        let p = params_on_rank(s, slots_per_gpu);
        let (grad_sync_s, optimizer_time) = if training {
            let t = &s.training;
            let zero3 = if t.zero_stage >= 3 { 1.5 } else { 1.0 };
            let all: Vec<usize> = (0..g).collect();
            let dense = all_reduce_s(topo, &all, p.dense * t.grad_bytes_per_param * zero3);
            let expert_bytes = m.expert_params() as f64 * t.grad_bytes_per_param * zero3;
            let groups = g / ep_size;
            let per_window = layouts
                .iter()
                .map(|layout| {
                    // Every copy of an expert (in every group) all-reduces its gradient. Gradients with the
                    // same set of copies share one bucketed all-reduce (as DDP buckets them); a rank runs
                    // its buckets one after another and the slowest rank sets the pace.
                    let mut buckets: std::collections::BTreeMap<&[usize], f64> = Default::default();
                    for ll in &layout.layers {
                        for holders in &ll.replicas {
                            *buckets.entry(holders.as_slice()).or_default() += expert_bytes;
                        }
                    }
                    let mut per_rank = vec![0.0f64; ep_size];
                    for (holders, bytes) in buckets {
                        let copies: Vec<usize> = (0..groups)
                            .flat_map(|k| holders.iter().map(move |&h| k * ep_size + h))
                            .collect();
                        let t = all_reduce_s(topo, &copies, bytes);
                        for &h in holders {
                            per_rank[h] += t;
                        }
                    }
                    dense + per_rank.into_iter().fold(0.0, f64::max)
                })
                .collect();
            let updated = if t.zero_stage >= 1 {
                p.dense / p.dense_replicas + p.experts / p.expert_replicas
            } else {
                p.dense + p.experts
            };
            (per_window, optimizer_s(s, cost, updated))
        } else {
            (vec![0.0; layouts.len()], 0.0)
        };
        EpModel {
            scenario,
            strategy,
            topo,
            cost,
            routing,
            ep_size,
            slots_per_gpu,
            token_split: rep.map_or(TokenSplit::Even, |r| r.token_split),
            window,
            layouts,
            rebalance_s,
            moved_copies,
            dense_fwd_s,
            lm_head_s,
            grad_sync_s,
            optimizer_s: optimizer_time,
        }
    }

    fn window_of(&self, iteration: usize) -> usize {
        (iteration / self.window).min(self.layouts.len() - 1)
    }

    /// Expert copies moved at each re-plan (window starts after the first).
    pub fn moved_copies_per_replan(&self) -> &[usize] {
        &self.moved_copies[1..]
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

    /// Experts on each rank of one EP group, per MoE layer, in the last planning window.
    pub fn placement_per_layer(&self) -> Vec<Vec<Vec<usize>>> {
        self.layouts
            .last()
            .expect("a layout")
            .layers
            .iter()
            .map(|l| l.slots.clone())
            .collect()
    }

    /// Experts on each rank of one EP group in the first MoE layer of the last window.
    pub fn placement(&self) -> Vec<Vec<usize>> {
        self.placement_per_layer()
            .into_iter()
            .next()
            .unwrap_or_default()
    }

    /// Memory of the rank with the most routed tokens.
    pub fn memory(&self, peak_layer_tokens: u64) -> MemoryBreakdown {
        rank_memory(
            self.scenario,
            params_on_rank(self.scenario, self.slots_per_gpu),
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
        let window = self.window_of(iteration);
        let layout = &self.layouts[window];
        let first_of_window = window > 0 && iteration == window * self.window;
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
                    ws.tokens_at.clear();
                    ws.tokens_at.resize(ep * experts, 0);
                    let gpn = s.cluster.gpus_per_node;
                    let node_of = |r: usize| (start + r) / gpn;
                    for i in 0..ep {
                        for e in 0..experts {
                            let c = ws.kept[i * experts + e];
                            let (bytes, tokens_at) = (&mut ws.bytes, &mut ws.tokens_at);
                            layout.layers[layer].split(
                                i,
                                e,
                                c,
                                self.token_split,
                                node_of,
                                |t, share| {
                                    tokens_at[t * experts + e] += share;
                                    bytes[i * ep + t] += share as f64 * token_bytes;
                                },
                            );
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
                        ws.slot_tokens.clear();
                        ws.slot_tokens.extend(
                            layout.layers[layer].slots[i]
                                .iter()
                                .map(|&e| ws.tokens_at[i * experts + e]),
                        );
                        let recv: u64 = ws.slot_tokens.iter().map(|&x| x as u64).sum();
                        tokens_received[r] += recv;
                        peak_layer_tokens[r] = peak_layer_tokens[r].max(recv);
                        ws.expert_s[cell] = experts_forward_s(s, self.cost, &ws.slot_tokens);
                    }
                }
            }
        }

        // Lower into operations.
        let graph = &mut ws.graph;
        graph.reset(g, 2);
        ws.prev.clear();
        ws.prev.resize(g, None);
        if first_of_window {
            for r in 0..g {
                let secs = self.rebalance_s[window][r % ep];
                let info = OpInfo {
                    phase: Phase::Rebalance,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::InboundLink,
                    excess: 0,
                };
                ws.prev[r] = Some(graph.op(r, Stream::Comm, ps(secs), info, &[]));
            }
        }
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
            for (r, &slowdown) in slow.iter().enumerate() {
                let info = OpInfo {
                    phase: Phase::GradSync,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Network,
                    excess: 0,
                };
                let sync = graph.op(r, Stream::Comm, ps(self.grad_sync_s[window]), info, &[b]);
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
                    scaled(self.optimizer_s, slowdown),
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
                let info = OpInfo::transfer(first_phase, r, &t);
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
                let info = OpInfo::transfer(second_phase, r, &t);
                prev[r] = Some(graph.op(r, Stream::Comm, ps(t.time_s), info, &[b2]));
            }
        }
    }

    /// Simulated time per iteration spent in the gradient all-reduce in the first window.
    pub fn grad_sync_time(&self) -> SimTime {
        ps(self.grad_sync_s[0])
    }
}

/// Expert slots per rank and MoE layer of an EP strategy (static or replicated).
pub fn slots_per_rank(s: &Scenario, strategy: &Strategy) -> usize {
    strategy
        .replication
        .map_or(s.model.experts / strategy.ep_size.max(1), |r| {
            r.slots_per_gpu
        })
}

/// Parameters on one rank holding `slots` experts per MoE layer.
pub fn params_on_rank(s: &Scenario, slots: usize) -> ParamsOnRank {
    let m = &s.model;
    let g = s.cluster.gpus();
    ParamsOnRank {
        dense: m.dense_params() as f64,
        experts: (m.moe_layers() * slots) as f64 * m.expert_params() as f64,
        dense_replicas: g as f64,
        // Mean copies per expert across the cluster.
        expert_replicas: (g * slots) as f64 / m.experts as f64,
    }
}
