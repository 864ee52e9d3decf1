//! One FSSDP iteration lowered into operations: the sparse collectives of the plan, optional calibration,
//! dispatch and all-to-alls per (micro-batch, layer), then the operation graph (forward with spAG beside the
//! dense compute, backward with spRS and re-gathers beside the dense backward, dense all-reduce and the
//! owners' optimizer step), run on the engine.

use super::materialize::{LayerPlacement, materialize};
use super::{FssdpIteration, FssdpModel, FssdpWorkspace};
use crate::collective::{Collectives, all_to_all};
use crate::collective_sparse::{SparseKind, SparseOutcome, sparse_collective, sparse_spec};
use crate::engine::{OpId, Stream, to_ms};
use crate::iteration::IterationGraph;
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use crate::strategy::blocks::{self, Speeds};
use crate::strategy::record::IterationRecord;
use crate::strategy::shared::{experts_forward_s, optimizer_s};
use moesim_traces::IterationRouting;

/// One (micro-batch, MoE layer): its dispatch and combine all-to-alls over the layer's shard group, and
/// each of the group's GPUs' routed-expert forward seconds.
pub(super) type Cell = (CollectiveSpec, CollectiveSpec, Vec<f64>);

/// What an iteration's routing leaves on each GPU (indexed by GPU).
pub(super) struct RoutedFacts {
    pub tokens_received: Vec<u64>,
    pub peak_layer_tokens: Vec<u64>,
    /// The most one in-flight chunk of one micro-batch leaves routed on the GPU.
    pub activation_tokens: Vec<u64>,
    pub routed: u64,
}

/// An FSSDP iteration's routing facts and sparse collectives as lowered, before its graph runs (see
/// [`FssdpModel::finish`]).
pub(super) struct Lowered {
    pub facts: RoutedFacts,
    /// (copies materialized beyond the owners, the most one GPU holds at once).
    pub copies: (usize, usize),
    /// Per MoE layer: its spAG and spRS.
    pub spag: Vec<(SparseOutcome, CollectiveSpec)>,
    pub sprs: Vec<(SparseOutcome, CollectiveSpec)>,
    /// Per layer: the extra critical-path gather calibration added.
    pub calibrated: Vec<Option<(SparseOutcome, CollectiveSpec)>>,
    pub reshard_bytes: f64,
}

/// A sparse collective whose part on rank r starts after `deps[r]`; returns its operations.
pub(super) fn sparse_ops(
    graph: &mut IterationGraph,
    deps: &[Option<OpId>],
    spec: &CollectiveSpec,
    phase: Phase,
) -> Vec<OpId> {
    if spec.parts.is_empty() {
        return Vec::new();
    }
    graph
        .collective(phase, spec.clone(), |_, p| deps[p.rank as usize])
        .collect()
}

impl FssdpModel<'_> {
    /// One layer's dense work on every GPU, its forward or (`backward`) its backward (see
    /// [`FssdpModel::dense_layer_on`]).
    fn dense_layer(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        moe: bool,
        backward: bool,
        speeds: &Speeds,
    ) {
        let all = &self.stage_gpus[0];
        let ring = self.tp.as_ref().map(|tp| &tp.ring);
        self.dense_layer_on(graph, prev, all, ring, moe, backward, speeds);
    }

    /// One layer's dense work on `gpus`, its forward or (`backward`) its backward: twice the forward's
    /// GEMMs, attention's extra score work and what selective recomputation reruns. Without TP one
    /// operation; with TP the attention block and, in a dense layer or beside shared experts, the MLP
    /// block, each between the TP groups' sequence-parallel all-gather and reduce-scatter (`ring`: one such
    /// ring over every TP group of `gpus`); an MoE layer's router and routed experts take the sequence shard
    /// as it is, as `strategy/ep/pipelined.rs` lowers them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dense_layer_on(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        gpus: &[usize],
        ring: Option<&CollectiveSpec>,
        moe: bool,
        backward: bool,
        speeds: &Speeds,
    ) {
        let compute = |graph: &mut IterationGraph, prev: &mut [Option<OpId>], secs: f64| {
            blocks::dense(
                graph,
                prev,
                gpus.iter().copied(),
                secs,
                speeds,
                Phase::DenseCompute,
            )
        };
        let (Some(tp), Some(ring)) = (&self.tp, ring) else {
            let d = self.dense_fwd_s[moe as usize];
            let secs = if backward {
                2.0 * d + self.attention_bwd_extra_s + self.selective_s[moe as usize]
            } else {
                d
            };
            return compute(graph, prev, secs);
        };
        let ring = |graph: &mut IterationGraph, prev: &mut [Option<OpId>]| {
            blocks::collective(graph, prev, Phase::TensorParallel, ring.clone(), &[]);
        };
        let between_rings = |graph: &mut IterationGraph, prev: &mut [Option<OpId>], secs: f64| {
            ring(graph, prev);
            compute(graph, prev, secs);
            ring(graph, prev);
        };
        let (attention, mlp) = tp.blocks[moe as usize];
        let mlp_between_rings = !moe || self.scenario.model.shared_experts > 0;
        let scale = if backward { 2.0 } else { 1.0 };
        let mlp_block = |graph: &mut IterationGraph, prev: &mut [Option<OpId>]| {
            if mlp_between_rings {
                between_rings(graph, prev, scale * mlp);
            } else {
                compute(graph, prev, scale * mlp);
            }
        };
        if backward {
            let selective = self.selective_s[moe as usize];
            if selective > 0.0 {
                compute(graph, prev, selective);
            }
            mlp_block(graph, prev);
            between_rings(graph, prev, 2.0 * attention + self.attention_bwd_extra_s);
        } else {
            between_rings(graph, prev, attention);
            mlp_block(graph, prev);
        }
    }

    /// Layer `l`'s sparse collective of `kind` for plan `p`: each materialized expert's `bytes` between its
    /// owner and its copies, on the GPUs of the layer's shard group.
    pub(super) fn spag(
        &self,
        l: usize,
        p: &LayerPlacement,
        owners: &[u32],
        bytes: f64,
        kind: SparseKind,
        ws: &mut FssdpWorkspace,
    ) -> (SparseOutcome, CollectiveSpec) {
        let gpus = self.layer_gpus(l);
        ws.batch.clear();
        for (e, &o) in owners.iter().enumerate() {
            let h = p.holders(e);
            if h.len() > 1 {
                ws.batch.push(
                    gpus[o as usize],
                    bytes,
                    h[1..].iter().map(|&r| gpus[r as usize]),
                );
            }
        }
        self.sparse(kind, ws)
    }

    /// Moves the weights and optimizer state of every expert whose owner changed at iteration `it` (a new
    /// re-sharding epoch) from its old owner to its new one: an all-to-all over every GPU, and its bytes.
    pub(super) fn reshard(
        &self,
        it: usize,
        ws: &mut FssdpWorkspace,
    ) -> Option<(CollectiveSpec, f64)> {
        if it == 0 || self.epoch(it) == self.epoch(it - 1) {
            return None;
        }
        let s = self.scenario;
        let g = s.cluster.gpus();
        let (old, new) = (self.owners(it - 1), self.owners(it));
        let per_expert = s.model.expert_params() as f64
            * (s.model.dtype_bytes as f64 + s.training.optimizer_bytes_per_param);
        let mut bytes = vec![0.0; g * g];
        let mut moved = 0.0;
        for (i, (&a, &b)) in old.iter().zip(new).enumerate() {
            if a != b {
                let gpus = self.layer_gpus(i / self.experts);
                bytes[gpus[a as usize] * g + gpus[b as usize]] += per_expert;
                moved += per_expert;
            }
        }
        let all: Vec<usize> = (0..g).collect();
        let comms = Collectives::new(self.topo, s.cluster.network);
        let (spec, _) = comms.all_to_all(&all, &bytes, Stream::Comm, &mut ws.a2a);
        Some((spec, moved))
    }

    /// Prices the batch in `ws` and makes it a collective.
    fn sparse(&self, kind: SparseKind, ws: &mut FssdpWorkspace) -> (SparseOutcome, CollectiveSpec) {
        let out = sparse_collective(self.topo, &ws.batch, kind, &mut ws.sparse);
        let spec = sparse_spec(
            self.topo,
            &out,
            &ws.batch,
            &ws.sparse,
            self.scenario.cluster.network,
            Stream::Comm,
        );
        (out, spec)
    }

    /// Predicted MoE-block latency of one (micro-batch, layer) on `p`: slowest expert compute plus dispatch
    /// and combine, for calibration.
    fn predict(
        &self,
        l: usize,
        counts: &[u32],
        p: &LayerPlacement,
        ws: &mut FssdpWorkspace,
    ) -> f64 {
        let s = self.scenario;
        let (g, e) = (self.ranks, self.experts);
        ws.dispatch.run(
            counts,
            p,
            g,
            self.gpus_per_node,
            s.model.token_bytes() as f64,
        );
        let d = all_to_all(
            self.topo,
            self.layer_gpus(l),
            &ws.dispatch.bytes,
            &mut ws.a2a,
        );
        let a2a = d.per_rank.iter().map(|x| x.time_s).fold(0.0, f64::max);
        let compute = (0..g)
            .map(|r| experts_forward_s(s, self.cost, &ws.dispatch.tokens[r * e..(r + 1) * e]))
            .fold(0.0, f64::max);
        3.0 * compute + 4.0 * a2a
    }

    /// Calibration (`calibrate = true`): per layer, the plan recomputed on the iteration's actual loads; its
    /// extra copies join `plan` (a critical-path spAG after the gate, returned per layer) only where the
    /// predicted MoE-block time they save over the iteration's micro-batches exceeds that spAG.
    pub(super) fn calibrate(
        &self,
        it: usize,
        routing: &IterationRouting,
        plan: &mut [LayerPlacement],
        owners: &[u32],
        ws: &mut FssdpWorkspace,
    ) -> Vec<Option<(SparseOutcome, CollectiveSpec)>> {
        let (e, moe_layers) = (self.experts, self.moe_layers);
        let mut calibrated = vec![None::<(SparseOutcome, CollectiveSpec)>; moe_layers];
        if !self.knobs.calibrate {
            return calibrated;
        }
        for l in 0..moe_layers {
            let own = &owners[l * e..(l + 1) * e];
            let actual = &self.loads[it.min(self.loads.len() - 1)][l * e..(l + 1) * e];
            let cal = materialize(
                actual,
                own,
                self.ranks,
                self.gpus_per_node,
                self.overlap_degree,
                self.knobs.memory_cap_experts,
            );
            // The extra copies: those in the calibrated plan the forecast plan lacks.
            let gpus = self.layer_gpus(l);
            ws.batch.clear();
            for (x, &o) in own.iter().enumerate() {
                let extra: Vec<usize> = cal.holders(x)[1..]
                    .iter()
                    .map(|&r| r as usize)
                    .filter(|&r| !plan[l].holds(x, r))
                    .map(|r| gpus[r])
                    .collect();
                if !extra.is_empty() {
                    ws.batch.push(gpus[o as usize], self.expert_bytes, extra);
                }
            }
            if ws.batch.is_empty() {
                continue;
            }
            let extra = self.sparse(SparseKind::AllGather, ws);
            let mut merged = plan[l].clone();
            for x in 0..e {
                for &r in &cal.holders(x)[1..] {
                    merged.add(x, r as usize);
                }
            }
            let (mut before, mut after) = (0.0, 0.0);
            for mb in 0..routing.shape.micro_batches {
                let counts = routing.layer_counts(mb, l);
                before += self.predict(l, counts, &plan[l], ws);
                after += self.predict(l, counts, &merged, ws);
            }
            if after + extra.0.time_s < before {
                plan[l] = merged;
                calibrated[l] = Some(extra);
            }
        }
        calibrated
    }

    /// Everything an iteration's lowering starts from: the plan in force (calibrated where asked), its
    /// sparse collectives and copies, the cells and routing facts (`chunks` as in [`FssdpModel::route`]),
    /// the owners, and a fresh graph whose GPUs first move re-sharded experts (`prev`: each GPU's last op),
    /// with the iteration's speeds.
    #[allow(clippy::type_complexity)]
    pub(super) fn prepare(
        &self,
        it: usize,
        routing: &IterationRouting,
        chunks: &[Vec<usize>],
        ws: &mut FssdpWorkspace,
    ) -> (Lowered, Vec<Cell>, Vec<u32>, Vec<Option<OpId>>, Speeds) {
        let s = self.scenario;
        let (n, e) = (s.cluster.gpus(), self.experts);
        let owners = self.owners(it).to_vec();
        let mut plan = self.plan(it);
        let calibrated = self.calibrate(it, routing, &mut plan, &owners, ws);
        let sparse = |kind: SparseKind, bytes: f64, ws: &mut FssdpWorkspace| {
            (0..self.moe_layers)
                .map(|l| self.spag(l, &plan[l], &owners[l * e..(l + 1) * e], bytes, kind, ws))
                .collect::<Vec<(SparseOutcome, CollectiveSpec)>>()
        };
        let spag = sparse(SparseKind::AllGather, self.expert_bytes, ws);
        let sprs = sparse(SparseKind::ReduceScatter, self.grad_bytes, ws);
        let copies = self.copies(&plan);
        let (cells, facts) = self.route(routing, &plan, chunks, ws);
        let speeds = Speeds::of(s, it, n);
        ws.graph.reset(n, &s.cluster);
        let mut prev: Vec<Option<OpId>> = vec![None; n];
        let mut reshard_bytes = 0.0;
        if let Some((spec, bytes)) = self.reshard(it, ws) {
            reshard_bytes = bytes;
            blocks::collective(&mut ws.graph, &mut prev, Phase::Reshard, spec, &[]);
        }
        let lowered = Lowered {
            facts,
            copies,
            spag,
            sprs,
            calibrated,
            reshard_bytes,
        };
        (lowered, cells, owners, prev, speeds)
    }

    /// Dispatch, all-to-alls and expert compute of every (micro-batch, MoE layer) on the layer's shard group
    /// (`cells[mb * layers + l]`), and what the routing leaves on each GPU; `chunks` are the groups of MoE
    /// layers whose activations one micro-batch keeps in flight together (all of them without a pipeline, a
    /// model stage's with one).
    pub(super) fn route(
        &self,
        routing: &IterationRouting,
        plan: &[LayerPlacement],
        chunks: &[Vec<usize>],
        ws: &mut FssdpWorkspace,
    ) -> (Vec<Cell>, RoutedFacts) {
        let s = self.scenario;
        let (n, e) = (s.cluster.gpus(), self.experts);
        let mbs = routing.shape.micro_batches;
        let token_bytes = s.model.token_bytes() as f64;
        let comms = Collectives::new(self.topo, s.cluster.network);
        let mut cells: Vec<Cell> = Vec::with_capacity(mbs * plan.len());
        // Per cell: tokens each GPU of the group received.
        let mut received: Vec<Vec<u64>> = Vec::with_capacity(mbs * plan.len());
        let mut facts = RoutedFacts {
            tokens_received: vec![0; n],
            peak_layer_tokens: vec![0; n],
            activation_tokens: vec![0; n],
            routed: 0,
        };
        for mb in 0..mbs {
            for (l, placement) in plan.iter().enumerate() {
                let gpus = self.layer_gpus(l);
                let counts = routing.layer_counts(mb, l);
                facts.routed += counts.iter().map(|&c| c as u64).sum::<u64>();
                ws.dispatch.run(
                    counts,
                    placement,
                    self.ranks,
                    self.gpus_per_node,
                    token_bytes,
                );
                let (d, priced) =
                    comms.all_to_all(gpus, &ws.dispatch.bytes, Stream::Comm, &mut ws.a2a);
                let (c, _) =
                    comms.all_to_all_mirrored(gpus, &priced, &ws.dispatch.bytes, Stream::Comm);
                let mut expert_s = Vec::with_capacity(gpus.len());
                let mut got = Vec::with_capacity(gpus.len());
                for (j, &g) in gpus.iter().enumerate() {
                    let local = &ws.dispatch.tokens[j * e..(j + 1) * e];
                    let recv: u64 = local.iter().map(|&x| x as u64).sum();
                    facts.tokens_received[g] += recv;
                    facts.peak_layer_tokens[g] = facts.peak_layer_tokens[g].max(recv);
                    expert_s.push(experts_forward_s(s, self.cost, local));
                    got.push(recv);
                }
                cells.push((d, c, expert_s));
                received.push(got);
            }
        }
        for layers in chunks {
            let Some(&l0) = layers.first() else {
                continue;
            };
            for mb in 0..mbs {
                for (j, &g) in self.layer_gpus(l0).iter().enumerate() {
                    let chunk: u64 = layers
                        .iter()
                        .map(|&l| received[mb * plan.len() + l][j])
                        .sum();
                    facts.activation_tokens[g] = facts.activation_tokens[g].max(chunk);
                }
            }
        }
        (cells, facts)
    }

    /// Copies `plan` materializes beyond the owners (all layers), and the most one GPU holds at once: one
    /// layer's with re-materialization (freed after each use), else its shard group's layers' together.
    pub(super) fn copies(&self, plan: &[LayerPlacement]) -> (usize, usize) {
        let n = self.scenario.cluster.gpus();
        let materialized = plan.iter().map(LayerPlacement::materialized).sum();
        let (mut per_layer, mut per_gpu) = (vec![0usize; n], vec![0usize; n]);
        let mut peak_layer = 0;
        for (l, p) in plan.iter().enumerate() {
            let gpus = self.layer_gpus(l);
            per_layer.fill(0);
            for x in 0..self.experts {
                for &r in &p.holders(x)[1..] {
                    per_layer[gpus[r as usize]] += 1;
                }
            }
            for g in 0..n {
                per_gpu[g] += per_layer[g];
                peak_layer = peak_layer.max(per_layer[g]);
            }
        }
        let peak = if self.knobs.rematerialize {
            peak_layer
        } else {
            per_gpu.iter().copied().max().unwrap_or(0)
        };
        (materialized, peak)
    }

    /// Runs the lowered iteration's graph and gathers its figures: the spAG time not hidden behind the dense
    /// compute it overlaps, and the sparse collectives' bytes (every gather and reduce repeated per
    /// micro-batch with re-materialization).
    pub(super) fn finish(
        &self,
        graph: &mut IterationGraph,
        mbs: usize,
        l: Lowered,
        overlaps: Vec<(Vec<OpId>, Vec<OpId>)>,
    ) -> FssdpIteration {
        let outcome = graph.analyse(Some(self.topo));
        let finish = |ops: &[OpId]| {
            ops.iter()
                .map(|&o| graph.engine.timing(o).finish)
                .max()
                .unwrap_or(0)
        };
        let exposed: u64 = overlaps
            .iter()
            .map(|(dense, gather)| finish(gather).saturating_sub(finish(dense)))
            .sum();
        let remat = self.knobs.rematerialize;
        let repeat = if remat { 2.0 * mbs as f64 } else { 1.0 };
        let sprs_repeat = if remat { mbs as f64 } else { 1.0 };
        let bytes =
            |x: &[(SparseOutcome, CollectiveSpec)]| x.iter().map(|x| x.0.bytes).sum::<f64>();
        let calibrated_bytes: f64 = l
            .calibrated
            .iter()
            .flatten()
            .map(|x| x.0.bytes * repeat)
            .sum();
        FssdpIteration {
            base: IterationRecord {
                outcome,
                tokens_received: l.facts.tokens_received,
                peak_layer_tokens: l.facts.peak_layer_tokens,
                activation_tokens: l.facts.activation_tokens,
                routed: l.facts.routed,
                dropped: 0,
            },
            materialized: l.copies.0,
            peak_materialized_on_rank: l.copies.1,
            spag_bytes: repeat * bytes(&l.spag) + calibrated_bytes,
            sprs_bytes: sprs_repeat * bytes(&l.sprs),
            exposed_spag_s: to_ms(exposed) * 1e-3,
            calibrated: l.calibrated.iter().flatten().count(),
            reshard_bytes: l.reshard_bytes,
        }
    }

    /// Simulates one iteration.
    pub fn simulate_iteration(&self, it: usize, ws: &mut FssdpWorkspace) -> FssdpIteration {
        let shape = self.routing.shape();
        let mut routing = ws
            .routing
            .take()
            .unwrap_or_else(|| IterationRouting::zeros(shape));
        self.routing.fill_iteration(it, &mut routing);
        let out = match &self.pipe {
            Some(pipe) => self.lower_pipelined(pipe, it, &routing, ws),
            None => self.lower_and_run(it, &routing, ws),
        };
        ws.routing = Some(routing);
        out
    }

    fn lower_and_run(
        &self,
        it: usize,
        routing: &IterationRouting,
        ws: &mut FssdpWorkspace,
    ) -> FssdpIteration {
        let s = self.scenario;
        let (g, moe_layers) = (self.ranks, self.moe_layers);
        let mbs = routing.shape.micro_batches;
        let remat = self.knobs.rematerialize;
        // Every layer's activations stay in flight until the micro-batch's backward.
        let (lw, cells, owners, mut prev, speeds) =
            self.prepare(it, routing, &[(0..moe_layers).collect()], ws);
        let all = &self.stage_gpus[0];
        let graph = &mut ws.graph;
        let layers = s.model.layers;
        let first_moe = s.model.first_dense_layers;
        // (dense ops, spAG ops) per overlapped gather, to measure exposure after the run.
        let mut overlaps: Vec<(Vec<OpId>, Vec<OpId>)> = Vec::new();
        let mut sprs_ops: Vec<OpId> = Vec::new();
        // Activation checkpointing keeps each layer's input only: the whole layer's forward (its MoE block's
        // all-to-alls and experts included) runs again before its backward.
        let recompute = s.training.activation_checkpointing;
        // A layer's dense forward on every GPU (run again before its backward under recomputation).
        let dense_forward = |graph: &mut IterationGraph, prev: &mut [Option<OpId>], moe: bool| {
            self.dense_layer(graph, prev, moe, false, &speeds)
        };
        for mb in 0..mbs {
            for layer in 0..layers {
                let moe = layer >= first_moe;
                let before = prev.clone();
                dense_forward(graph, &mut prev, moe);
                if moe {
                    let l = layer - first_moe;
                    let mut gather = if mb == 0 || remat {
                        sparse_ops(graph, &before, &lw.spag[l].1, Phase::Spag)
                    } else {
                        Vec::new()
                    };
                    if !gather.is_empty() {
                        overlaps.push((prev.iter().flatten().copied().collect(), gather.clone()));
                    }
                    if let Some(extra) = lw.calibrated[l].as_ref().filter(|_| mb == 0 || remat) {
                        // The calibrated copies are known only after the gate: on the critical path.
                        let deps = prev.clone();
                        gather.extend(sparse_ops(graph, &deps, &extra.1, Phase::Spag));
                    }
                    let cell = &cells[mb * moe_layers + l];
                    blocks::collective(graph, &mut prev, Phase::Dispatch, cell.0.clone(), &gather);
                    blocks::experts(graph, &mut prev, all, &cell.2, 1.0, &speeds);
                    blocks::collective(graph, &mut prev, Phase::Combine, cell.1.clone(), &[]);
                }
            }
            blocks::dense(
                graph,
                &mut prev,
                0..g,
                self.head.forward_s(),
                &speeds,
                Phase::DenseCompute,
            );
            let mut before = prev.clone();
            blocks::dense(
                graph,
                &mut prev,
                0..g,
                self.head.backward_s(),
                &speeds,
                Phase::DenseCompute,
            );
            for layer in (0..layers).rev() {
                let moe = layer >= first_moe;
                if recompute {
                    dense_forward(graph, &mut prev, moe);
                }
                if moe {
                    let l = layer - first_moe;
                    // Re-gather beside the dense backward that precedes this MoE block.
                    let gather = if remat {
                        let dense: Vec<OpId> = prev.iter().flatten().copied().collect();
                        let ops = sparse_ops(graph, &before, &lw.spag[l].1, Phase::Spag);
                        if !ops.is_empty() {
                            overlaps.push((dense, ops.clone()));
                        }
                        ops
                    } else {
                        Vec::new()
                    };
                    let cell = &cells[mb * moe_layers + l];
                    // The recomputed forward (of the whole layer, or of the checkpointed MoE block)
                    // needs the (re-gathered) copies too.
                    let gather = if recompute || s.training.recompute_modules.moe {
                        blocks::collective(
                            graph,
                            &mut prev,
                            Phase::Dispatch,
                            cell.0.clone(),
                            &gather,
                        );
                        blocks::experts(graph, &mut prev, all, &cell.2, 1.0, &speeds);
                        blocks::collective(graph, &mut prev, Phase::Combine, cell.1.clone(), &[]);
                        Vec::new()
                    } else {
                        gather
                    };
                    blocks::collective(graph, &mut prev, Phase::Combine, cell.0.clone(), &gather);
                    blocks::experts(graph, &mut prev, all, &cell.2, 2.0, &speeds);
                    blocks::collective(graph, &mut prev, Phase::Dispatch, cell.1.clone(), &[]);
                    if mb + 1 == mbs || remat {
                        let deps = prev.clone();
                        sprs_ops.extend(sparse_ops(graph, &deps, &lw.sprs[l].1, Phase::Sprs));
                    }
                }
                before = prev.clone();
                self.dense_layer(graph, &mut prev, moe, true, &speeds);
            }
        }
        // FSSDP is a training strategy: every iteration ends with the dense all-reduce and the owners' step.
        {
            let tail = graph.barrier(sprs_ops.iter().copied());
            let chains = [prev.clone(), vec![Some(tail); g]];
            let synced = blocks::grad_sync(graph, &chains, self.grad_sync.iter().cloned());
            // A TP rank updates its 1/tp of the dense weights, sharded over its data-parallel group by ZeRO.
            let tp = self.tp_size();
            let dense_on_rank = s.model.dense_params() as f64 / tp as f64;
            let updated_dense = if s.training.zero_stage >= 1 {
                dense_on_rank / (g / tp) as f64
            } else {
                dense_on_rank
            };
            let owned = self.owned_per_gpu(&owners);
            blocks::optimizer(
                graph,
                &synced,
                |r| {
                    optimizer_s(
                        s,
                        self.cost,
                        updated_dense + owned[r] as f64 * s.model.expert_params() as f64,
                    )
                },
                &speeds,
            );
        }
        self.finish(graph, mbs, lw, overlaps)
    }
}
