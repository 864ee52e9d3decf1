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

use crate::collective::{
    A2aAlgorithm, AllToAllScratch, Collectives, Transfer, hierarchical_transfers,
};
use crate::engine::{OpId, Stream};
use crate::iteration::IterationGraph;
use crate::memory::{MemoryBreakdown, ParamsOnRank, RoutedTokens, rank_memory};
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use crate::placement::forecast::{Forecast, forecast};
use crate::placement::priced::{ExpertShape, Price};
use crate::placement::robust::{RobustOptions, Samples, fresh, replan_candidates};
use crate::placement::search::PlaceOptions;
use crate::placement::{LayerPlacement, eplb::eplb};
use crate::result::StrategyResult;
use crate::scenario::file::Mode;
use crate::scenario::file::{PlacementMethod, StrategyKind, TokenSplit};
use crate::scenario::model::{Dtype, fp8_scaled_bytes};
use crate::scenario::{Scenario, Strategy};
use crate::strategy::blocks::{self, Speeds};
use crate::strategy::layout::{LayerLayout, Layout};
use crate::strategy::model::StrategyModel;
use crate::strategy::output_head::OutputHead;
use crate::strategy::reach;
use crate::strategy::record::{IterationRecord, routed_tokens};
use crate::strategy::shared::{
    activation_s, attention_backward_extra_s, dense_forward_tokens_s, experts_forward_s,
    mtp_projection_s, optimizer_s, selective_recompute_s,
};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{IterationRouting, RoutingShape, RoutingSource};
use rayon::prelude::*;
use std::sync::Arc;

pub mod pipelined;

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
    /// Per window: the copies moved before the window's first iteration, as one collective (all groups).
    rebalance: Vec<Option<CollectiveSpec>>,
    /// Per window: expert copies moved at its start (all layers, one group).
    moved_copies: Vec<usize>,
    /// Dense forward seconds of one overlapped part (attention layers without and with an MoE block).
    dense_fwd_s: [f64; 2],
    /// What selective recomputation adds to each [dense, MoE] layer's backward (norms, MLA up-projections,
    /// core attention, a dense MLP, an MoE block's router and shared experts).
    selective_s: [f64; 2],
    /// What attention's backward adds beyond twice the forward (one part).
    attention_bwd_extra_s: f64,
    /// The output head of one part (projection and, in training, the loss).
    head: OutputHead,
    /// A multi-token-prediction module's projection (one part).
    mtp_projection_s: f64,
    /// Per window: the gradient synchronisation's collectives, in the order every rank issues them.
    grad_sync: Vec<Vec<CollectiveSpec>>,
    optimizer_s: f64,
    /// Tensor and pipeline parallelism (`tp` or `pp` above 1): the pipelined lowering's fixed parts.
    pipelined: Option<pipelined::Pipelined>,
}

/// What one (micro-batch, layer, group, part) cell needs in the operation graph.
struct MoeCell {
    /// The forward dispatch (FP8 tokens with their scales when the experts run in FP8, as DeepEP does).
    /// (Shared, not copied, by the micro-batches that route alike.)
    dispatch: Arc<CollectiveSpec>,
    /// The backward's dispatch-direction all-to-all (the combine's gradient): always the model's dtype.
    dispatch_grad: Arc<CollectiveSpec>,
    combine: Arc<CollectiveSpec>,
    /// Per group rank: routed-expert forward seconds at nominal speed.
    expert_s: Vec<f64>,
    /// Per group rank: tokens each of its expert slots received (kept only under expert tensor
    /// parallelism, whose GPUs compute on their ETP group's tokens together).
    slot_tokens: Vec<Vec<u32>>,
    /// Per group rank: seconds of the experts' activation function run again in backward under selective
    /// recomputation (`moe_act`); empty otherwise.
    act_s: Vec<f64>,
}

/// Routing facts gathered while building cells.
struct CellFacts {
    window: usize,
    tokens_received: Vec<u64>,
    /// Per rank: tokens received in the current layer.
    layer_tokens: Vec<u64>,
    routed: u64,
    dropped: u64,
}

/// Dense work of every rank in every overlapped part's chain.
fn dense_all(
    graph: &mut IterationGraph,
    prev: &mut [Vec<Option<OpId>>],
    g: usize,
    seconds: f64,
    speeds: &Speeds,
) {
    for chain in prev.iter_mut() {
        blocks::dense(graph, chain, 0..g, seconds, speeds, Phase::DenseCompute);
    }
}

/// One MoE layer for every group, stage-major over the overlapped parts: the first all-to-all of every
/// part, then every part's experts, then the second all-to-all. Backward (`backward`): the combine's
/// gradient travels like a dispatch and the dispatch's like a combine, each under its forward phase's name,
/// with twice the expert compute.
fn moe_block(
    graph: &mut IterationGraph,
    prev: &mut [Vec<Option<OpId>>],
    cells: &[Vec<MoeCell>],
    groups: &[Vec<usize>],
    speeds: &Speeds,
    backward: bool,
) {
    let (first, second, scale) = if backward {
        (Phase::Combine, Phase::Dispatch, 2.0)
    } else {
        (Phase::Dispatch, Phase::Combine, 1.0)
    };
    for (ranks, parts) in groups.iter().zip(cells) {
        for (chain, cell) in prev.iter_mut().zip(parts) {
            let spec = if backward {
                &cell.dispatch_grad
            } else {
                &cell.dispatch
            };
            blocks::collective(graph, chain, first, Arc::clone(spec), &[]);
        }
        for (chain, cell) in prev.iter_mut().zip(parts) {
            if backward && !cell.act_s.is_empty() {
                blocks::experts(graph, chain, ranks, &cell.act_s, 1.0, speeds);
            }
            blocks::experts(graph, chain, ranks, &cell.expert_s, scale, speeds);
        }
        for (chain, cell) in prev.iter_mut().zip(parts) {
            blocks::collective(graph, chain, second, Arc::clone(&cell.combine), &[]);
        }
    }
}

/// Part `part` of `parts` of a count: an even split, the remainder spread over the first parts.
fn share(c: u32, part: usize, parts: usize) -> u32 {
    if parts == 1 {
        return c;
    }
    let (c, p, n) = (c as u64, part as u64, parts as u64);
    ((c * (p + 1)) / n - (c * p) / n) as u32
}

/// Per-iteration buffers, reused across iterations on one thread.
#[derive(Default)]
pub struct EpWorkspace {
    pub(crate) graph: IterationGraph,
    routing: Option<IterationRouting>,
    a2a: AllToAllScratch,
    kept: Vec<u32>,
    bytes: Vec<f64>,
    tokens_at: Vec<u32>,
    /// Static EP: tokens per expert (column sums) and what one source sends to each GPU.
    expert_load: Vec<u64>,
    to_gpu: Vec<u64>,
    slot_tokens: Vec<u32>,
    /// Hierarchical all-to-all: per (source, destination, group), the probability that a token misses all
    /// of the destination's copies (a product over them, see `reach`).
    miss_gpu: Vec<f64>,
    miss_node: Vec<f64>,
    /// Per (source, group): the probability that a token of the source picks the group.
    group_pick: Vec<f64>,
}

impl EpWorkspace {
    /// The operation graph of the last simulated iteration, with its timings (for timeline export).
    pub fn graph(&self) -> &IterationGraph {
        &self.graph
    }
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
                            // Fewer routing draws than micro-batches (`workload.routing_samples`): each
                            // draw stands for its share of them.
                            let drawn = routing_it.shape.micro_batches;
                            if drawn != s.workload.micro_batches {
                                let k = s.workload.micro_batches as f64 / drawn as f64;
                                loads.iter_mut().for_each(|x| *x *= k);
                            }
                            loads
                        })
                        .collect()
                })
                .collect();
            let mut o = PlaceOptions::new(ep_size, r.slots_per_gpu, gpus_per_node);
            // A dispatch that serves tokens inside their node needs the same number of copies per node.
            o.node_balanced = r.token_split == TokenSplit::LocalFirst;
            // Deterministic output: no deadline-bounded exact solve inside the simulator.
            o.exact_limit_s = 0.0;
            // Plans good across the history's iterations (not only for its mean); a re-plan moves copies
            // only when the seconds it saves (until the run ends, or while the layer's pattern holds:
            // `replan_gain`) exceed the seconds the move costs.
            let mut ro = RobustOptions::new(o);
            // Each plan serves one window: the half-life is read off the history for that horizon.
            ro.horizon = window;
            // The forecast window is the planner's memory too (older iterations are forgotten).
            ro.window = r.forecast_window.unwrap_or(usize::MAX);
            let training = s.workload.mode == Mode::Training;
            let price = Price::for_experts(
                ExpertShape::from(m),
                &s.cluster,
                cost,
                ep_size,
                gpus_per_node,
                s.tokens_per_rank() * s.workload.micro_batches as u64 * m.top_k as u64,
                training.then_some(s.training.optimizer_bytes_per_param),
                window,
            );
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
                                let smp = ro
                                    .samples(&past, ep_size)
                                    .unwrap_or_else(|| Samples::uniform(experts, ep_size));
                                match prev {
                                    None => fresh(&smp, &ro).placement,
                                    Some(prev) => {
                                        let price = Price {
                                            window: r
                                                .replan_gain
                                                .window()
                                                .iterations(iterations - w * window, &smp),
                                            ..price
                                        };
                                        let cands =
                                            replan_candidates(&smp, &ro, prev, price.swap_need());
                                        price
                                            .choose(prev, &cands)
                                            .map_or_else(|| prev.clone(), |c| c.placement.clone())
                                    }
                                }
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

        // Moving copies between windows: weights, plus gradients' optimizer state in training (a GPU of an
        // ETP group moves its 1/etp slice).
        let training = s.workload.mode == Mode::Training;
        let move_bytes = m.expert_params() as f64 / strategy.parallel.etp.max(1) as f64
            * (m.dtype_bytes as f64
                + if training {
                    s.training.optimizer_bytes_per_param
                } else {
                    0.0
                });
        let comms = Collectives::new(topo, s.cluster.network);
        let mut scratch = AllToAllScratch::default();
        let all: Vec<usize> = (0..g).collect();
        let groups = g / ep_size;
        let pipelined = (!strategy.parallel.is_single()).then(|| {
            pipelined::Pipelined::new(s, strategy, topo, cost, rep.map(|_| layouts.as_slice()))
        });
        // The GPUs of every EP group that holds MoE layer l's experts: every group without pipelining;
        // with it, the simulated groups of the pipeline ranks holding l's stage.
        let layer_groups: Vec<Vec<Vec<usize>>> = match &pipelined {
            None => vec![
                (0..groups)
                    .map(|k| (k * ep_size..(k + 1) * ep_size).collect())
                    .collect();
                moe_layers
            ],
            Some(pipe) => {
                // With expert tensor parallelism, one group per ETP index of each expert block (its GPUs
                // hold the same slice of every copy, and move that slice).
                let etp = strategy.parallel.etp.max(1);
                let block = ep_size * etp;
                let mut out = vec![Vec::new(); moe_layers];
                for r in 0..strategy.parallel.pp {
                    for l in pipe.moe_layers_on(s, r) {
                        for k in 0..pipe.unit() / block {
                            for j in 0..etp {
                                let group: Vec<usize> = (0..ep_size)
                                    .map(|e| pipe.gpu(r, k * block + e * etp + j))
                                    .collect();
                                if !out[l].contains(&group) {
                                    out[l].push(group);
                                }
                            }
                        }
                    }
                }
                out
            }
        };
        let mut rebalance = vec![None];
        let mut moved_copies = vec![0usize];
        for w in 1..placements.len() {
            let mut transfers = Vec::new();
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
                            for group in &layer_groups[l] {
                                transfers.push(Transfer {
                                    src: group[src],
                                    dst: group[t],
                                    bytes: move_bytes,
                                    messages: 1.0,
                                });
                            }
                        }
                    }
                }
            }
            rebalance.push((!transfers.is_empty()).then(|| {
                let spec = comms
                    .transfers(&all, &transfers, Stream::Comm, &mut scratch)
                    .0;
                match &pipelined {
                    Some(pipe) => pipe.to_graph(spec),
                    None => spec,
                }
            }));
            moved_copies.push(moved);
        }

        // Each overlapped part carries its share of the rank's tokens.
        let parts = strategy.overlap_micro_batches;
        let part_tokens = s.tokens_per_rank().div_ceil(parts as u64);
        let dense_fwd_s = [
            dense_forward_tokens_s(s, cost, false, part_tokens, parts),
            dense_forward_tokens_s(s, cost, true, part_tokens, parts),
        ];
        let attention_bwd_extra_s = attention_backward_extra_s(s, cost, part_tokens, 1);
        let selective_s = selective_recompute_s(s, cost, part_tokens, 1);
        let head = OutputHead::new(s, cost, part_tokens, 1);
        let mtp_projection_s = mtp_projection_s(s, cost, part_tokens, 1);
        let p = params_on_rank(s, slots_per_gpu);
        let (grad_sync, optimizer_time) = if training && pipelined.is_none() {
            let t = &s.training;
            let zero3 = if t.zero_stage >= 3 { 1.5 } else { 1.0 };
            let dense = comms.all_reduce(
                &all,
                p.dense * t.grad_bytes_per_param * zero3,
                Stream::Comm,
                &mut scratch,
            );
            let expert_bytes = m.expert_params() as f64 * t.grad_bytes_per_param * zero3;
            let per_window = layouts
                .iter()
                .map(|layout| {
                    // Every copy of an expert (in every group) all-reduces its gradient. Gradients with the
                    // same set of copies share one bucketed all-reduce (as DDP buckets them), issued in the
                    // same order on every rank.
                    let mut buckets: std::collections::BTreeMap<&[usize], f64> = Default::default();
                    for ll in &layout.layers {
                        for holders in &ll.replicas {
                            *buckets.entry(holders.as_slice()).or_default() += expert_bytes;
                        }
                    }
                    let mut specs = dense.clone();
                    let grouped: Vec<(Vec<usize>, f64)> = buckets
                        .into_iter()
                        .map(|(holders, bytes)| {
                            let copies: Vec<usize> = (0..groups)
                                .flat_map(|k| holders.iter().map(move |&h| k * ep_size + h))
                                .collect();
                            (copies, bytes)
                        })
                        .collect();
                    specs.extend(comms.grouped_all_reduce(&grouped, Stream::Comm, &mut scratch));
                    specs
                })
                .collect();
            let updated = if t.zero_stage >= 1 {
                p.dense / p.dense_replicas + p.experts / p.expert_replicas
            } else {
                p.dense + p.experts
            };
            (per_window, optimizer_s(s, cost, updated))
        } else {
            (vec![Vec::new(); layouts.len()], 0.0)
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
            rebalance,
            moved_copies,
            dense_fwd_s,
            selective_s,
            attention_bwd_extra_s,
            head,
            mtp_projection_s,
            grad_sync,
            optimizer_s: optimizer_time,
            pipelined,
        }
    }

    fn window_of(&self, iteration: usize) -> usize {
        (iteration / self.window).min(self.layouts.len() - 1)
    }

    /// Expert copies moved at each re-plan (window starts after the first).
    pub fn moved_copies_per_replan(&self) -> &[usize] {
        &self.moved_copies[1..]
    }

    /// A lower bound on one iteration of `strategy` (with tensor or pipeline parallelism; `None` without)
    /// under balanced routing, and the operations simulating it would take: see [`pipelined::bound`].
    /// With the analytic network and no compute noise it never exceeds the simulated step of balanced
    /// routing (the layout search's estimate).
    pub fn pipelined_step_bound(
        s: &Scenario,
        strategy: &Strategy,
        topo: &Topology,
        cost: &dyn CostModel,
    ) -> Option<pipelined::bound::StepBound> {
        if strategy.parallel.is_single() {
            return None;
        }
        let shape = RoutingShape {
            micro_batches: 1,
            ..Self::routing_shape_for(s, strategy)
        };
        let source = moesim_traces::SyntheticRouting::new(
            shape,
            1,
            moesim_traces::SyntheticSpec {
                skew: moesim_traces::Skew::Balanced,
                seed: s.seed,
                shuffle_per_layer: false,
            },
        );
        let model = EpModel::new(s, strategy, topo, cost, &source);
        let pipe = model.pipelined.as_ref()?;
        let mut routing = IterationRouting::zeros(shape);
        source.fill_iteration(0, &mut routing);
        Some(model.step_bound_of(pipe, &routing))
    }

    /// The routing shape `strategy` needs: with tensor or pipeline parallelism, the token sources of one
    /// stage's simulated unit (`lcm(ep_size × etp, tp)` GPUs, each holding `1/tp` of a micro-batch; FSSDP
    /// simulates every GPU, its `ep_size` being the GPU count).
    pub fn routing_shape_for(s: &Scenario, strategy: &Strategy) -> RoutingShape {
        let p = &strategy.parallel;
        if p.is_single() {
            return Self::routing_shape(s);
        }
        RoutingShape {
            ranks: p.unit(strategy.ep_size),
            tokens_per_rank: s.tokens_per_rank() / p.tp as u64,
            // EP's micro-batch m routes like draw m mod samples (`workload.routing_samples`); FSSDP draws
            // every micro-batch. (A layout or knob that lowers the micro-batches below the draws keeps one
            // per micro-batch.)
            micro_batches: match (s.workload.routing_samples, strategy.kind) {
                (Some(n), StrategyKind::Ep | StrategyKind::EpReplicated) => {
                    n.min(s.workload.micro_batches)
                }
                _ => s.workload.micro_batches,
            },
            ..Self::routing_shape(s)
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
    pub fn memory(&self, routed: RoutedTokens) -> MemoryBreakdown {
        if let Some(pipe) = &self.pipelined {
            return pipe.memory(self.scenario, routed);
        }
        rank_memory(
            self.scenario,
            params_on_rank(self.scenario, self.slots_per_gpu),
            routed,
        )
    }

    /// Simulates one iteration.
    pub fn simulate_iteration(&self, iteration: usize, ws: &mut EpWorkspace) -> IterationRecord {
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

    /// Dispatch and combine of one (micro-batch, layer, group, part): collectives and each group rank's
    /// expert seconds; adds to the routing facts.
    #[allow(clippy::too_many_arguments)]
    /// `cell_counts` are the group's (source, expert) counts; `ranks` its GPUs (for the topology) and
    /// `graph_ranks` their ranks in the iteration graph (for the routing facts).
    fn moe_cell(
        &self,
        cell_counts: &[u32],
        ranks: &[usize],
        graph_ranks: &[usize],
        layer: usize,
        part: usize,
        ws: &mut EpWorkspace,
        facts: &mut CellFacts,
    ) -> MoeCell {
        let s = self.scenario;
        let ep = self.ep_size;
        let experts = s.model.experts;
        let parts = self.strategy.overlap_micro_batches;
        let layout = &self.layouts[facts.window];
        // This part's share of each (source, expert) count: an even split with the remainder spread.
        let capacity = self.strategy.capacity_factor;
        // Counts used as they lie are totalled below, from the column sums when those are taken anyway.
        let as_they_lie = parts == 1 && capacity.is_none();
        let total: u64 = if as_they_lie {
            0
        } else if parts == 1 {
            cell_counts.iter().map(|&c| c as u64).sum()
        } else {
            ws.kept.clear();
            ws.kept
                .extend(cell_counts.iter().map(|&c| share(c, part, parts)));
            ws.kept.iter().map(|&c| c as u64).sum()
        };
        facts.routed += total;
        if let Some(cf) = capacity {
            if parts == 1 {
                ws.kept.clear();
                ws.kept.extend_from_slice(cell_counts);
            }
            let cap = (cf * total as f64 / experts as f64).ceil() as u64;
            for e in 0..experts {
                let load: u64 = (0..ep).map(|i| ws.kept[i * experts + e] as u64).sum();
                if load > cap {
                    for i in 0..ep {
                        let c = &mut ws.kept[i * experts + e];
                        let k = (*c as u64 * cap / load) as u32;
                        facts.dropped += (*c - k) as u64;
                        *c = k;
                    }
                }
            }
        }
        // Without a split or a capacity cut, the counts are used where they lie.
        let kept: &[u32] = if as_they_lie { cell_counts } else { &ws.kept };
        let token_bytes = s.model.token_bytes() as f64;
        let hierarchical = self.strategy.a2a == A2aAlgorithm::Hierarchical;
        // Static EP writes every entry below; the other paths add into zeros.
        ws.bytes.resize(ep * ep, 0.0);
        // Tokens of one source in this part: the rank's tokens split like the counts.
        // (A TP rank dispatches its sequence shard: 1/tp of the micro-batch.)
        let source_tokens =
            (s.tokens_per_rank() as f64 / (parts * self.strategy.parallel.tp) as f64).max(1.0);
        // Group-limited routing: per (source, group), the probability that a token picks the group.
        let routing = s.model.routing;
        let groups = if routing.limits() { routing.groups } else { 1 };
        let per_group = experts / groups;
        if hierarchical {
            ws.miss_gpu.clear();
            ws.miss_gpu.resize(ep * ep * groups, 1.0);
            ws.miss_node.clear();
            ws.miss_node.resize(ep * ep * groups, 1.0);
            ws.group_pick.clear();
            for i in 0..ep {
                let p: Vec<f64> = kept[i * experts..(i + 1) * experts]
                    .iter()
                    .map(|&c| c as f64 / source_tokens)
                    .collect();
                if routing.limits() {
                    ws.group_pick
                        .extend(reach::group_pick_probabilities(&p, routing));
                } else {
                    ws.group_pick.push(1.0);
                }
            }
        }
        let gpn = s.cluster.gpus_per_node;
        // Group ranks need not be consecutive GPUs (expert tensor parallelism strides an EP group).
        let node_of = |r: usize| ranks[r] / gpn;
        let single: Option<Vec<usize>> = (!hierarchical)
            .then(|| {
                layout.layers[layer]
                    .replicas
                    .iter()
                    .map(|r| if let [only] = r[..] { Some(only) } else { None })
                    .collect()
            })
            .flatten();
        // Tokens each GPU's experts receive: for static EP the column sums (`expert_load`), otherwise per
        // (GPU, expert) copy (`tokens_at`).
        ws.expert_load.clear();
        if let Some(owner) = &single {
            // One copy per expert (static EP): expert loads are column sums, and what source i sends to GPU t
            // is the sum of its counts for t's experts — integer sums, so the order of additions is free.
            ws.expert_load.resize(experts, 0);
            ws.to_gpu.resize(ep, 0);
            // The default layout gives GPU t the experts [t·per, (t+1)·per): sums of consecutive counts.
            let per = experts / ep;
            let blocked = per > 0
                && experts.is_multiple_of(ep)
                && owner.iter().enumerate().all(|(e, &t)| t == e / per);
            for i in 0..ep {
                let row = &kept[i * experts..(i + 1) * experts];
                for (l, &c) in ws.expert_load.iter_mut().zip(row) {
                    *l += c as u64;
                }
                let sent = &mut ws.bytes[i * ep..(i + 1) * ep];
                // Through i64: the same value (counts are far below 2^63), a cheaper conversion.
                if blocked && per == 1 {
                    for (b, &c) in sent.iter_mut().zip(row) {
                        *b = c as f64 * token_bytes;
                    }
                } else if blocked {
                    for (b, chunk) in sent.iter_mut().zip(row.chunks_exact(per)) {
                        let k: u64 = chunk.iter().map(|&c| c as u64).sum();
                        *b = k as i64 as f64 * token_bytes;
                    }
                } else {
                    ws.to_gpu.fill(0);
                    for (&t, &c) in owner.iter().zip(row) {
                        ws.to_gpu[t] += c as u64;
                    }
                    for (b, &k) in sent.iter_mut().zip(&ws.to_gpu) {
                        *b = k as i64 as f64 * token_bytes;
                    }
                }
            }
            if as_they_lie {
                facts.routed += ws.expert_load.iter().sum::<u64>();
            }
        } else {
            if as_they_lie {
                facts.routed += kept.iter().map(|&c| c as u64).sum::<u64>();
            }
            ws.bytes.fill(0.0);
            ws.tokens_at.clear();
            ws.tokens_at.resize(ep * experts, 0);
        }
        // The first participant of each destination's node (the node's entry in `miss_node`).
        let first_of: Vec<usize> = (0..ep)
            .map(|t| {
                (0..=t)
                    .find(|&q| node_of(q) == node_of(t))
                    .expect("t itself")
            })
            .collect();
        // One copy per expert under the hierarchical all-to-all (static EP): every token goes to its owner,
        // the split below without its per-expert call.
        let owners: Option<Vec<usize>> = if single.is_none() {
            layout.layers[layer]
                .replicas
                .iter()
                .map(|r| if let [only] = r[..] { Some(only) } else { None })
                .collect()
        } else {
            None
        };
        for i in (0..ep).filter(|_| single.is_none()) {
            if let Some(owner) = &owners {
                for (e, &t) in owner.iter().enumerate() {
                    let c = kept[i * experts + e];
                    if c == 0 {
                        continue;
                    }
                    ws.tokens_at[t * experts + e] += c;
                    ws.bytes[i * ep + t] += c as f64 * token_bytes;
                    if hierarchical {
                        let g = e / per_group;
                        let miss =
                            reach::miss(c as f64 / source_tokens, ws.group_pick[i * groups + g]);
                        ws.miss_gpu[(i * ep + t) * groups + g] *= miss;
                        ws.miss_node[(i * ep + first_of[t]) * groups + g] *= miss;
                    }
                }
                continue;
            }
            for e in 0..experts {
                let c = kept[i * experts + e];
                let (bytes, tokens_at, miss_gpu, miss_node, group_pick) = (
                    &mut ws.bytes,
                    &mut ws.tokens_at,
                    &mut ws.miss_gpu,
                    &mut ws.miss_node,
                    &ws.group_pick,
                );
                let g = e / per_group;
                layout.layers[layer].split(i, e, c, self.token_split, node_of, |t, sh| {
                    tokens_at[t * experts + e] += sh;
                    bytes[i * ep + t] += sh as f64 * token_bytes;
                    if hierarchical && sh > 0 {
                        // Probability that a token of source i does not pick this copy (once its group is
                        // picked), multiplied over the copies of a GPU (node) per group: see `reach`.
                        let miss =
                            reach::miss(sh as f64 / source_tokens, group_pick[i * groups + g]);
                        miss_gpu[(i * ep + t) * groups + g] *= miss;
                        miss_node[(i * ep + first_of[t]) * groups + g] *= miss;
                    }
                });
            }
        }
        let comms = Collectives::new(self.topo, s.cluster.network);
        // FP8 experts take FP8 tokens: the forward dispatch carries 1 byte per element plus one FP32 scale per
        // 128 (DeepSeek-V3 §3.3.2, DeepEP); combines and the backward stay in the model's dtype.
        let fp8_ratio = match s.model.expert_dtype {
            Dtype::Fp8 => fp8_scaled_bytes(s.model.d_model) as f64 / s.model.token_bytes() as f64,
            Dtype::Bf16 => 1.0,
        };
        let (dispatch, dispatch_grad, combine) = if hierarchical {
            let group_pick = &ws.group_pick;
            let dedup = |miss: &[f64], copies: &[f64]| -> Vec<f64> {
                miss.chunks_exact(groups)
                    .zip(copies)
                    .enumerate()
                    .map(|(k, (m, &c))| {
                        if m.iter().all(|&x| x == 1.0) {
                            0.0
                        } else {
                            let r = &group_pick[(k / ep) * groups..(k / ep + 1) * groups];
                            (source_tokens * reach::needed_share(m, r) * token_bytes).min(c)
                        }
                    })
                    .collect()
            };
            let to_gpu = dedup(&ws.miss_gpu, &ws.bytes);
            // A node's share is bounded by the copies sent to all of its GPUs.
            let mut node_copies = vec![0.0; ep * ep];
            for i in 0..ep {
                for t in 0..ep {
                    node_copies[i * ep + first_of[t]] += ws.bytes[i * ep + t];
                }
            }
            let to_node = dedup(&ws.miss_node, &node_copies);
            // One set of transfers: the FP8 forward moves the same copies scaled (priced in the same pass),
            // the combine reverses them.
            let transfers = hierarchical_transfers(self.topo, ranks, &to_gpu, &to_node);
            let scales: &[f64] = if fp8_ratio != 1.0 {
                &[1.0, fp8_ratio]
            } else {
                &[1.0]
            };
            let mut priced =
                comms.transfers_scaled(ranks, &transfers, scales, Stream::Comm, &mut ws.a2a);
            let d_fwd = (priced.len() == 2).then(|| priced.pop().expect("the FP8 dispatch").0);
            let d = priced.pop().expect("the unscaled dispatch");
            // The combine reduces each token's expert outputs on the way back: the reverse of the dispatch.
            let c = comms.transfers_mirrored(ranks, &d.1, &transfers, Stream::Comm);
            (d_fwd.unwrap_or_else(|| d.0.clone()), d.0, c.0)
        } else {
            let d = comms.all_to_all(ranks, &ws.bytes, Stream::Comm, &mut ws.a2a);
            let c = comms.all_to_all_mirrored(ranks, &d.1, &ws.bytes, Stream::Comm);
            let d_fwd = (fp8_ratio != 1.0).then(|| {
                let scaled: Vec<f64> = ws.bytes.iter().map(|&b| b * fp8_ratio).collect();
                comms
                    .all_to_all(ranks, &scaled, Stream::Comm, &mut ws.a2a)
                    .0
            });
            (d_fwd.unwrap_or_else(|| d.0.clone()), d.0, c.0)
        };
        let mut expert_s = Vec::with_capacity(ep);
        let mut act_s = Vec::new();
        let recompute_act = s.workload.mode == Mode::Training
            && !s.training.activation_checkpointing
            && s.training.recompute_modules.experts_activation_only();
        let keep_slots = self.strategy.parallel.etp > 1;
        let mut slot_tokens = Vec::new();
        for (i, &r) in graph_ranks.iter().enumerate() {
            ws.slot_tokens.clear();
            let slots = layout.layers[layer].slots[i].iter();
            if single.is_some() {
                ws.slot_tokens
                    .extend(slots.map(|&e| ws.expert_load[e] as u32));
            } else {
                ws.slot_tokens
                    .extend(slots.map(|&e| ws.tokens_at[i * experts + e]));
            }
            let recv: u64 = ws.slot_tokens.iter().map(|&x| x as u64).sum();
            facts.tokens_received[r] += recv;
            facts.layer_tokens[r] += recv;
            expert_s.push(experts_forward_s(s, self.cost, &ws.slot_tokens));
            if recompute_act {
                let m = &s.model;
                act_s.push(activation_s(
                    self.cost,
                    recv,
                    m.expert_d_ff,
                    m.expert_matrices,
                    m.dtype_bytes,
                ));
            }
            if keep_slots {
                slot_tokens.push(ws.slot_tokens.clone());
            }
        }
        MoeCell {
            dispatch: Arc::new(dispatch),
            dispatch_grad: Arc::new(dispatch_grad),
            combine: Arc::new(combine),
            expert_s,
            slot_tokens,
            act_s,
        }
    }

    fn lower_and_run(
        &self,
        iteration: usize,
        routing: &IterationRouting,
        ws: &mut EpWorkspace,
    ) -> IterationRecord {
        if let Some(pipe) = &self.pipelined {
            return self.lower_pipelined(pipe, iteration, routing, ws);
        }
        let s = self.scenario;
        let g = s.cluster.gpus();
        let ep = self.ep_size;
        let experts = s.model.experts;
        let shape = routing.shape;
        let (mbs, moe_layers) = (shape.micro_batches, shape.moe_layers);
        let parts = self.strategy.overlap_micro_batches;
        let speeds = Speeds::of(s, iteration, g);
        let window = self.window_of(iteration);
        let first_of_window = window > 0 && iteration == window * self.window;
        let group_ranks: Vec<Vec<usize>> = (0..g / ep)
            .map(|k| (k * ep..(k + 1) * ep).collect())
            .collect();
        let mut facts = CellFacts {
            window,
            tokens_received: vec![0; g],
            layer_tokens: vec![0; g],
            routed: 0,
            dropped: 0,
        };
        let mut peak_layer_tokens = vec![0u64; g];
        let mut activation_tokens = vec![0u64; g];

        ws.graph.reset(g, &s.cluster);
        // One chain of operations per overlapped part.
        let mut prev: Vec<Vec<Option<OpId>>> = vec![vec![None; g]; parts];
        if first_of_window && let Some(spec) = self.rebalance[window].clone() {
            let mut p = vec![None; g];
            blocks::collective(&mut ws.graph, &mut p, Phase::Rebalance, spec, &[]);
            for chain in &mut prev {
                chain.clone_from(&p);
            }
        }
        let layers = s.model.layers;
        let first_moe = s.model.first_dense_layers;
        let training = s.workload.mode == Mode::Training;
        // Activation checkpointing keeps each layer's input only: the whole layer's forward (its MoE block's
        // all-to-alls and experts included) runs again before its backward.
        let recompute = training && s.training.activation_checkpointing;
        // Selective recomputation of the MoE block (`moe`) reruns its dispatch, experts and combine too.
        let moe_recompute = training && s.training.recompute_modules.moe;
        for mb in 0..mbs {
            // Every (layer, group, part) cell of this micro-batch: forward and backward use the same routing.
            let before = facts.tokens_received.clone();
            let mut cells: Vec<Vec<Vec<MoeCell>>> = Vec::with_capacity(moe_layers);
            for layer in 0..moe_layers {
                facts.layer_tokens.fill(0);
                let counts = routing.layer_counts(mb, layer);
                let per_group = group_ranks
                    .iter()
                    .map(|ranks| {
                        (0..parts)
                            .map(|p| {
                                let rows = &counts[ranks[0] * experts..(ranks[0] + ep) * experts];
                                self.moe_cell(rows, ranks, ranks, layer, p, ws, &mut facts)
                            })
                            .collect()
                    })
                    .collect();
                for (peak, &t) in peak_layer_tokens.iter_mut().zip(&facts.layer_tokens) {
                    *peak = (*peak).max(t);
                }
                cells.push(per_group);
            }
            // One micro-batch's activations are live at a time: each rank's own tokens over every layer.
            for r in 0..g {
                activation_tokens[r] =
                    activation_tokens[r].max(facts.tokens_received[r] - before[r]);
            }
            let graph = &mut ws.graph;
            // Forward: per layer, each stage for every part before the next stage.
            for layer in 0..layers {
                let moe = layer >= first_moe;
                dense_all(graph, &mut prev, g, self.dense_fwd_s[moe as usize], &speeds);
                if moe {
                    moe_block(
                        graph,
                        &mut prev,
                        &cells[layer - first_moe],
                        &group_ranks,
                        &speeds,
                        false,
                    );
                }
            }
            dense_all(graph, &mut prev, g, self.head.forward_s(), &speeds);
            // Training runs the multi-token-prediction modules after the output head (DeepSeek-V3 §2.2):
            // a projection, one more MoE block (routed as the last MoE layer: traces have no routing for
            // it) and the shared head; their backward comes first.
            let mtp = if training { s.model.mtp_depth } else { 0 };
            let mtp_cells = cells.last().filter(|_| mtp > 0);
            let mtp_dense = self.mtp_projection_s + self.dense_fwd_s[mtp_cells.is_some() as usize];
            for _ in 0..mtp {
                dense_all(graph, &mut prev, g, mtp_dense, &speeds);
                if let Some(c) = mtp_cells {
                    moe_block(graph, &mut prev, c, &group_ranks, &speeds, false);
                }
                dense_all(graph, &mut prev, g, self.head.forward_s(), &speeds);
            }
            if training {
                for _ in 0..mtp {
                    dense_all(graph, &mut prev, g, self.head.backward_s(), &speeds);
                    if recompute {
                        dense_all(graph, &mut prev, g, mtp_dense, &speeds);
                    }
                    if let Some(c) = mtp_cells {
                        if recompute || moe_recompute {
                            moe_block(graph, &mut prev, c, &group_ranks, &speeds, false);
                        }
                        moe_block(graph, &mut prev, c, &group_ranks, &speeds, true);
                    }
                    let secs = 2.0 * mtp_dense
                        + self.attention_bwd_extra_s
                        + self.selective_s[mtp_cells.is_some() as usize];
                    dense_all(graph, &mut prev, g, secs, &speeds);
                }
                dense_all(graph, &mut prev, g, self.head.backward_s(), &speeds);
                for layer in (0..layers).rev() {
                    let moe = layer >= first_moe;
                    let dense_fwd = self.dense_fwd_s[moe as usize];
                    if recompute {
                        dense_all(graph, &mut prev, g, dense_fwd, &speeds);
                    }
                    if moe {
                        let c = &cells[layer - first_moe];
                        if recompute || moe_recompute {
                            moe_block(graph, &mut prev, c, &group_ranks, &speeds, false);
                        }
                        moe_block(graph, &mut prev, c, &group_ranks, &speeds, true);
                    }
                    let secs = 2.0 * dense_fwd
                        + self.attention_bwd_extra_s
                        + self.selective_s[moe as usize];
                    dense_all(graph, &mut prev, g, secs, &speeds);
                }
            }
        }
        if training {
            let graph = &mut ws.graph;
            let synced = blocks::grad_sync(graph, &prev, self.grad_sync[window].iter().cloned());
            blocks::optimizer(graph, &synced, |_| self.optimizer_s, &speeds);
        }
        let outcome = ws.graph.analyse(Some(self.topo));
        IterationRecord {
            outcome,
            tokens_received: facts.tokens_received,
            peak_layer_tokens,
            activation_tokens,
            routed: facts.routed,
            dropped: facts.dropped,
        }
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
    // Training also holds the multi-token-prediction modules (one MoE layer each).
    let mtp = if s.workload.mode == Mode::Training {
        m.mtp_depth
    } else {
        0
    };
    let dense_mtp = if mtp > 0 { m.mtp_dense_params() } else { 0 };
    ParamsOnRank {
        dense: (m.dense_params() + dense_mtp) as f64,
        experts: ((m.moe_layers() + mtp) * slots) as f64 * m.expert_params() as f64,
        dense_replicas: g as f64,
        // Mean copies per expert across the cluster.
        expert_replicas: (g * slots) as f64 / m.experts as f64,
    }
}

impl StrategyModel for EpModel<'_> {
    type Workspace = EpWorkspace;
    type Iteration = IterationRecord;

    fn iterations(&self) -> usize {
        self.scenario
            .workload
            .iterations
            .min(self.routing.iterations())
    }

    fn simulate(&self, it: usize, ws: &mut EpWorkspace) -> IterationRecord {
        self.simulate_iteration(it, ws)
    }

    fn record(it: &IterationRecord) -> &IterationRecord {
        it
    }

    fn graph(ws: &mut EpWorkspace) -> &mut IterationGraph {
        &mut ws.graph
    }

    fn rank_gpus(&self) -> Option<&[usize]> {
        self.pipelined.as_ref().map(|p| p.gpus())
    }

    fn extra_phases(&self) -> &'static [Phase] {
        let (pp, tp) = self
            .pipelined
            .as_ref()
            .map_or((1, 1), |p| (p.par.pp, p.par.tp));
        match (pp > 1, tp > 1, self.strategy.replication.is_some()) {
            (true, true, true) => &[Phase::PipelineSend, Phase::TensorParallel, Phase::Rebalance],
            (true, true, false) => &[Phase::PipelineSend, Phase::TensorParallel],
            (true, false, true) => &[Phase::PipelineSend, Phase::Rebalance],
            (true, false, false) => &[Phase::PipelineSend],
            (false, true, true) => &[Phase::TensorParallel, Phase::Rebalance],
            (false, true, false) => &[Phase::TensorParallel],
            (false, false, true) => &[Phase::Rebalance],
            (false, false, false) => &[],
        }
    }

    fn finish(&self, runs: &[IterationRecord], result: &mut StrategyResult) {
        result.memory = self.memory(routed_tokens(runs.iter()));
        result.memory_peak_gib = result.memory.total_gib;
        result.placement = self.placement();
        // Until the first re-plan the copies are placed for uniform load: a warm-up, reported apart.
        if let Some(r) = self.strategy.replication
            && runs.len() > r.replan_interval
        {
            let steady: Vec<f64> = runs[r.replan_interval..]
                .iter()
                .map(IterationRecord::step_ms)
                .collect();
            result.warmup_iterations = r.replan_interval;
            result.steady_step_time_ms = Some(crate::stats::Distribution::of(&steady));
        }
        result.replication = self
            .strategy
            .replication
            .map(|r| crate::result::ReplicationResult {
                slots_per_gpu: r.slots_per_gpu,
                replan_interval: r.replan_interval,
                method: r.method,
                token_split: r.token_split,
                moved_copies_per_replan: self.moved_copies_per_replan().to_vec(),
                placement_per_layer: self.placement_per_layer(),
            });
    }
}
