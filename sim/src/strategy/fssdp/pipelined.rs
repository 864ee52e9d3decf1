//! FSSDP composed with pipeline parallelism (`pp` of an `fssdp` strategy; GPipe, 1F1B or interleaved 1F1B).
//!
//! Each pipeline stage's GPUs shard the experts of the MoE layers the stage holds, as FSSDP without a
//! pipeline shards them over every GPU: shard rank j of a layer is GPU j of its stage (`Parallel::gpu`),
//! each GPU owns experts of its stage's layers only, and materialized copies, tokens, spAG and spRS stay
//! inside the stage. Every GPU of a stage takes its own micro-batch (the stage's data parallelism), so the
//! routing has one token source per GPU of a stage (with TP, each GPU routes its `1/tp` sequence shard,
//! and each stage's dense layers run between the sequence-parallel rings of its TP groups, as without a
//! pipeline). The whole cluster is simulated (no representative unit: a layer's copies and tokens span its
//! stage).
//!
//! Calibration (`calibrate = true`) re-plans each layer on the iteration's actual loads as without a
//! pipeline; its extra copies are gathered on the critical path after the layer's first dense forward.
//!
//! Per task (`crate::pipeline::emit` drives them in the schedule's order):
//! forward of a model stage, per layer: `dense ∥ spAG` (the layer's first forward of the iteration, or
//! every forward with re-materialization; the first layer's gather may start while the stage still waits
//! for its input) → dispatch → experts → combine; the last model stage adds the output head.
//! Backward, per layer in reverse: recomputation where asked, the re-gather beside the preceding dense
//! backward with re-materialization, then the MoE block's gradients (combine', experts 2×, dispatch') and
//! the dense backward; the task after which the stage's gradients are final issues each layer's spRS right
//! after its MoE block (beside the dense backward that follows) and then the stage's dense all-reduce over
//! its GPUs on the auxiliary stream. The iteration ends with each GPU's optimizer step over its owned
//! experts and its ZeRO share of its stage's dense parameters.

use super::lower::{Cell, sparse_ops};
use super::{FssdpIteration, FssdpModel, FssdpWorkspace};
use crate::collective::{AllToAllScratch, Collectives};
use crate::collective_sparse::SparseOutcome;
use crate::engine::{OpId, Stream};
use crate::iteration::IterationGraph;
use crate::memory::{MemoryBreakdown, RoutedTokens};
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use crate::pipeline::emit::{StageLowering, emit};
use crate::pipeline::schedule::{Pass, Schedule, Task};
use crate::scenario::parallel::Parallel;
use crate::scenario::{Scenario, Strategy};
use crate::strategy::blocks::{self, Speeds, join};
use crate::strategy::shared::optimizer_s;
use crate::strategy::stage_memory::{StageParams, model_stage_params, stage_memory, stage_params};
use crate::topology::Topology;
use moesim_traces::IterationRouting;
use std::collections::HashMap;

/// The fixed parts of a pipelined FSSDP run.
pub(crate) struct Pipeline {
    pub par: Parallel,
    pub schedule: Schedule,
    /// Per pipeline rank: the GPUs of its stage, in shard-rank order.
    pub stage_gpus: Vec<Vec<usize>>,
    /// Per MoE layer: the pipeline rank that holds it.
    pub moe_rank: Vec<usize>,
    /// Per pipeline rank with TP: one sequence-parallel all-gather of a micro-batch's activations over
    /// every TP group of its stage (a reduce-scatter moves the same ring traffic), on the auxiliary stream.
    tp_ring: Vec<Option<CollectiveSpec>>,
    /// Per pipeline rank, per model stage it holds: (stage, its dense gradients' all-reduce over the
    /// stage's GPUs, per TP index over its data-parallel group).
    grad_sync: blocks::StageGradSync,
    /// The task after which each (pipeline rank, model stage)'s gradients are final: its last backward.
    last_grads: HashMap<Task, usize>,
    /// Per pipeline rank: dense parameters one GPU updates (its ZeRO share of the stage's).
    dense_updated: Vec<f64>,
    /// Bytes one GPU sends to its peer on the next stage per micro-batch (its sequence shard's activations).
    send_bytes: f64,
    /// Per pipeline rank: its stages' dense parameters (experts are counted per owner, see
    /// [`FssdpModel::pipelined_memory`]).
    params: Vec<StageParams>,
}

impl Pipeline {
    pub fn new(s: &Scenario, strategy: &Strategy, topo: &Topology) -> Self {
        let par = strategy.parallel.clone();
        let m = &s.model;
        let g = s.cluster.gpus();
        let stage = par.stage_gpus(g);
        let schedule = par
            .run_schedule(s.workload.mode, s.workload.micro_batches)
            .expect("a validated scenario's schedule builds");
        let stage_gpus: Vec<Vec<usize>> = (0..par.pp)
            .map(|r| (0..stage).map(|j| par.gpu(g, stage, r, j)).collect())
            .collect();
        let mut moe_rank = vec![0; m.moe_layers()];
        for r in 0..par.pp {
            for k in schedule.stages_on(r) {
                for l in par.layers_of(k).filter(|&l| l >= m.first_dense_layers) {
                    moe_rank[l - m.first_dense_layers] = r;
                }
            }
        }
        let t = &s.training;
        let zero3 = if t.zero_stage >= 3 { 1.5 } else { 1.0 };
        let comms = Collectives::new(topo, s.cluster.network);
        let mut scratch = AllToAllScratch::default();
        let tp = par.tp;
        let act_bytes = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
        let tp_ring = stage_gpus
            .iter()
            .map(|gpus| {
                (tp > 1).then(|| {
                    let rings: Vec<Vec<usize>> = gpus.chunks(tp).map(<[usize]>::to_vec).collect();
                    comms.rings(&rings, act_bytes, 1.0, &mut scratch, Stream::CommAux)
                })
            })
            .collect();
        // A model stage's dense gradients (one TP rank's share) over each TP index's data-parallel group:
        // disjoint groups, side by side.
        let grad_sync = (0..par.pp)
            .map(|r| {
                schedule
                    .stages_on(r)
                    .into_iter()
                    .map(|k| {
                        let (dense, _) = model_stage_params(s, &par, 0, k);
                        let bytes = dense * t.grad_bytes_per_param * zero3;
                        let specs = (0..tp)
                            .flat_map(|j| {
                                let group: Vec<usize> =
                                    stage_gpus[r].iter().skip(j).step_by(tp).copied().collect();
                                comms.all_reduce(&group, bytes, Stream::CommAux, &mut scratch)
                            })
                            .collect();
                        (k, specs)
                    })
                    .collect()
            })
            .collect();
        let mut last_grads = HashMap::new();
        for (r, slots) in schedule.per_rank.iter().enumerate() {
            let mut last: HashMap<usize, Task> = HashMap::new();
            for task in slots.iter().flat_map(|slot| slot.tasks()) {
                if matches!(task.pass, Pass::Backward | Pass::BackwardWeight) {
                    last.insert(task.model_stage, task);
                }
            }
            last_grads.extend(last.into_values().map(|task| (task, r)));
        }
        let params = stage_params(s, &par, 0, &schedule);
        let dense_updated = params
            .iter()
            .map(|p| {
                if t.zero_stage >= 1 {
                    p.dense / (stage / tp) as f64
                } else {
                    p.dense
                }
            })
            .collect();
        Pipeline {
            par,
            schedule,
            stage_gpus,
            moe_rank,
            tp_ring,
            grad_sync,
            last_grads,
            dense_updated,
            send_bytes: act_bytes / tp as f64,
            params,
        }
    }
}

/// The lowering the schedule's emitter drives for one iteration.
struct Lowering<'m, 'a> {
    model: &'m FssdpModel<'a>,
    pipe: &'m Pipeline,
    /// `cells[mb * moe_layers + l]`.
    cells: &'m [Cell],
    spag: &'m [CollectiveSpec],
    sprs: &'m [CollectiveSpec],
    /// Per MoE layer: calibration's extra copies, gathered on the critical path after the dense compute.
    calibrated: &'m [Option<(SparseOutcome, CollectiveSpec)>],
    speeds: &'m Speeds,
    /// Per MoE layer: whether its copies were gathered this iteration.
    gathered: Vec<bool>,
    /// (the dense ops, the spAG ops) of each overlapped gather, to measure exposure after the run.
    overlaps: Vec<(Vec<OpId>, Vec<OpId>)>,
    sprs_ops: Vec<OpId>,
    /// Per GPU: the last op of its stage's dense gradient all-reduce.
    synced: Vec<Option<OpId>>,
}

impl Lowering<'_, '_> {
    /// A dense op of `secs` on the stage's GPUs (the output head).
    fn dense(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        gpus: &[usize],
        secs: f64,
    ) {
        blocks::dense(
            graph,
            prev,
            gpus.iter().copied(),
            secs,
            self.speeds,
            Phase::DenseCompute,
        );
    }

    /// One layer's dense forward or backward on pipeline rank `r`'s stage (between its TP rings with TP).
    fn dense_layer(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        r: usize,
        moe: bool,
        backward: bool,
    ) {
        let gpus = &self.pipe.stage_gpus[r];
        let ring = self.pipe.tp_ring[r].as_ref();
        self.model
            .dense_layer_on(graph, prev, gpus, ring, moe, backward, self.speeds);
    }

    /// The routed part of an MoE block on the stage: `first` all-to-all (after `gather`), the experts at
    /// `scale` × their forward seconds, then `second`.
    #[allow(clippy::too_many_arguments)]
    fn moe_block(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        gpus: &[usize],
        cell: &Cell,
        backward: bool,
        scale: f64,
        gather: &[OpId],
    ) {
        let (first, second) = if backward {
            ((Phase::Combine, &cell.0), (Phase::Dispatch, &cell.1))
        } else {
            ((Phase::Dispatch, &cell.0), (Phase::Combine, &cell.1))
        };
        blocks::collective(graph, prev, first.0, first.1.clone(), gather);
        blocks::experts(graph, prev, gpus, &cell.2, scale, self.speeds);
        blocks::collective(graph, prev, second.0, second.1.clone(), &[]);
    }

    fn is_final(&self, task: Task) -> bool {
        self.pipe.last_grads.contains_key(&task)
    }

    fn forward(
        &mut self,
        graph: &mut IterationGraph,
        r: usize,
        task: Task,
        prev: &mut [Option<OpId>],
        waiting: &[Option<OpId>],
    ) {
        let model = self.model;
        let gpus = &self.pipe.stage_gpus[r];
        let first_moe = model.scenario.model.first_dense_layers;
        let remat = model.knobs.rematerialize;
        let mut before = waiting.to_vec();
        for layer in self.pipe.par.layers_of(task.model_stage) {
            let moe = layer >= first_moe;
            self.dense_layer(graph, prev, r, moe, false);
            if moe {
                let l = layer - first_moe;
                let gathers = !self.gathered[l] || remat;
                let mut gather = if gathers {
                    sparse_ops(graph, &before, &self.spag[l], Phase::Spag)
                } else {
                    Vec::new()
                };
                self.gathered[l] = true;
                if !gather.is_empty() {
                    let dense = gpus.iter().filter_map(|&g| prev[g]).collect();
                    self.overlaps.push((dense, gather.clone()));
                }
                if let Some(extra) = self.calibrated[l].as_ref().filter(|_| gathers) {
                    // The calibrated copies are known only after the gate: on the critical path.
                    let deps = prev.to_vec();
                    gather.extend(sparse_ops(graph, &deps, &extra.1, Phase::Spag));
                }
                let cell = &self.cells[task.mb * model.moe_layers + l];
                self.moe_block(graph, prev, gpus, cell, false, 1.0, &gather);
            }
            before = prev.to_vec();
        }
        if task.model_stage + 1 == self.pipe.par.model_stages() {
            self.dense(graph, prev, gpus, model.head.forward_s());
        }
    }

    /// A whole backward (input and weight gradients) of the task's model stage.
    fn backward(
        &mut self,
        graph: &mut IterationGraph,
        r: usize,
        task: Task,
        prev: &mut [Option<OpId>],
    ) {
        let model = self.model;
        let gpus = &self.pipe.stage_gpus[r];
        let s = model.scenario;
        let first_moe = s.model.first_dense_layers;
        let remat = model.knobs.rematerialize;
        let recompute = s.training.activation_checkpointing;
        // Gradients are final after this task: spRS each layer's copies back to their owners.
        let reduce = self.is_final(task);
        if task.model_stage + 1 == self.pipe.par.model_stages() {
            self.dense(graph, prev, gpus, model.head.backward_s());
        }
        let mut before = prev.to_vec();
        for layer in self.pipe.par.layers_of(task.model_stage).rev() {
            let moe = layer >= first_moe;
            if recompute {
                self.dense_layer(graph, prev, r, moe, false);
            }
            if moe {
                let l = layer - first_moe;
                // Re-gather beside the dense backward that precedes this MoE block.
                let mut gather = Vec::new();
                if remat {
                    gather = sparse_ops(graph, &before, &self.spag[l], Phase::Spag);
                    if !gather.is_empty() {
                        let dense = gpus.iter().filter_map(|&g| prev[g]).collect();
                        self.overlaps.push((dense, gather.clone()));
                    }
                }
                let cell = &self.cells[task.mb * model.moe_layers + l];
                // The recomputed forward (of the whole layer, or of the checkpointed MoE block) needs the
                // (re-gathered) copies too.
                if recompute || s.training.recompute_modules.moe {
                    self.moe_block(graph, prev, gpus, cell, false, 1.0, &gather);
                    gather.clear();
                }
                self.moe_block(graph, prev, gpus, cell, true, 2.0, &gather);
                if reduce || remat {
                    let ops = sparse_ops(graph, prev, &self.sprs[l], Phase::Sprs);
                    self.sprs_ops.extend(ops);
                }
            }
            before = prev.to_vec();
            self.dense_layer(graph, prev, r, moe, true);
        }
    }

    /// After the task that makes a model stage's gradients final, its dense all-reduce over the stage's
    /// GPUs on the auxiliary stream, beside whatever comes next.
    fn sync_if_final(&mut self, graph: &mut IterationGraph, task: Task, after: &[Option<OpId>]) {
        let Some((r, specs)) =
            blocks::due_grad_sync(&self.pipe.last_grads, &self.pipe.grad_sync, task)
        else {
            return;
        };
        blocks::stage_grad_sync(
            graph,
            specs,
            after,
            &self.pipe.stage_gpus[r],
            &mut self.synced,
        );
    }
}

impl StageLowering for Lowering<'_, '_> {
    fn gpus(&self, rank: usize) -> &[usize] {
        &self.pipe.stage_gpus[rank]
    }

    fn task(
        &mut self,
        graph: &mut IterationGraph,
        rank: usize,
        task: Task,
        prev: &mut [Option<OpId>],
        ready: &[Option<OpId>],
    ) {
        // What a GPU did before its input arrived: a first gather may run while it waits.
        let waiting = prev.to_vec();
        join(graph, &self.pipe.stage_gpus[rank], prev, ready);
        match task.pass {
            Pass::Forward => self.forward(graph, rank, task, prev, &waiting),
            Pass::Backward => self.backward(graph, rank, task, prev),
            Pass::BackwardInput | Pass::BackwardWeight => unreachable!(
                "only DualPipe splits backward passes, and validation refuses it for kind = \"fssdp\""
            ),
        }
        self.sync_if_final(graph, task, prev);
    }

    fn send_bytes(&self, _task: Task) -> f64 {
        self.pipe.send_bytes
    }
}

impl FssdpModel<'_> {
    /// One pipelined FSSDP iteration.
    pub(super) fn lower_pipelined(
        &self,
        pipe: &Pipeline,
        it: usize,
        routing: &IterationRouting,
        ws: &mut FssdpWorkspace,
    ) -> FssdpIteration {
        let s = self.scenario;
        let (n, moe_layers) = (s.cluster.gpus(), self.moe_layers);
        let mbs = routing.shape.micro_batches;
        // A model stage's MoE layers are one chunk of activations in flight.
        let first_moe = s.model.first_dense_layers;
        let chunks: Vec<Vec<usize>> = (0..pipe.par.model_stages())
            .map(|k| {
                pipe.par
                    .layers_of(k)
                    .filter(|&l| l >= first_moe)
                    .map(|l| l - first_moe)
                    .collect()
            })
            .collect();
        let (lw, cells, owners, mut prev, speeds) = self.prepare(it, routing, &chunks, ws);
        let comms = Collectives::new(self.topo, s.cluster.network);
        let spag_specs: Vec<CollectiveSpec> = lw.spag.iter().map(|x| x.1.clone()).collect();
        let sprs_specs: Vec<CollectiveSpec> = lw.sprs.iter().map(|x| x.1.clone()).collect();
        let mut lowering = Lowering {
            model: self,
            pipe,
            cells: &cells,
            spag: &spag_specs,
            sprs: &sprs_specs,
            calibrated: &lw.calibrated,
            speeds: &speeds,
            gathered: vec![false; moe_layers],
            overlaps: Vec::new(),
            sprs_ops: Vec::new(),
            synced: vec![None; n],
        };
        let mut scratch = AllToAllScratch::default();
        let graph = &mut ws.graph;
        emit(
            graph,
            &pipe.schedule,
            &comms,
            &mut scratch,
            &mut lowering,
            &mut prev,
        )
        .expect("a built schedule emits");
        let Lowering {
            overlaps,
            sprs_ops,
            synced,
            ..
        } = lowering;
        // The optimizer step after the GPU's last task, its stage's dense all-reduce and every spRS.
        let tail = (!sprs_ops.is_empty()).then(|| graph.barrier(sprs_ops.iter().copied()));
        let done: Vec<Option<OpId>> = (0..n)
            .map(|g| {
                let deps: Vec<OpId> = [prev[g], synced[g], tail].into_iter().flatten().collect();
                match deps.len() {
                    0 => None,
                    1 => Some(deps[0]),
                    _ => Some(graph.barrier(deps)),
                }
            })
            .collect();
        let owned = self.owned_per_gpu(&owners);
        let rank_of_gpu = |g: usize| pipe.stage_gpus.iter().position(|l| l.contains(&g));
        let updated: Vec<f64> = (0..n)
            .map(|g| {
                let dense = rank_of_gpu(g).map_or(0.0, |r| pipe.dense_updated[r]);
                dense + owned[g] as f64 * s.model.expert_params() as f64
            })
            .collect();
        blocks::optimizer(
            graph,
            &done,
            |g| optimizer_s(s, self.cost, updated[g]),
            &speeds,
        );
        self.finish(graph, mbs, lw, overlaps)
    }

    /// Memory of the most loaded GPU of a pipelined run: each pipeline rank's dense parameters (ZeRO over
    /// its stage) and owned experts' full state, the activations its schedule keeps in flight (see
    /// [`stage_memory`]), before the materialized copies [`FssdpModel::memory`] adds.
    pub(super) fn pipelined_memory(&self, routed: RoutedTokens) -> MemoryBreakdown {
        let pipe = self.pipe.as_ref().expect("a pipelined FSSDP run");
        let s = self.scenario;
        let owned: Vec<usize> = (0..pipe.stage_gpus.len())
            .map(|r| {
                self.epochs
                    .iter()
                    .flat_map(|o| {
                        let per_gpu = self.owned_per_gpu(o);
                        pipe.stage_gpus[r].iter().map(move |&g| per_gpu[g])
                    })
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let params: Vec<StageParams> = pipe
            .params
            .iter()
            .zip(&owned)
            .map(|(p, &o)| StageParams {
                experts: o as f64 * s.model.expert_params() as f64,
                expert_replicas: 1.0,
                ..*p
            })
            .collect();
        stage_memory(s, &pipe.par, &pipe.schedule, &params, routed)
    }
}
