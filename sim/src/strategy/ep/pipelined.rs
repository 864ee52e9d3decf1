//! Expert parallelism composed with tensor and pipeline parallelism (`tp`, `pp` of an `ep` strategy).
//!
//! Rank order (`Parallel::rank_order`, see `scenario/parallel.rs`): by default (Megatron-Core's
//! `tp-cp-ep-dp-pp`) pipeline rank `r` holds GPUs `[r·S, (r+1)·S)`, `S = GPUs / pp`; inside a stage, TP
//! groups are `tp` consecutive ranks and EP groups `ep_size` consecutive ranks (`Parallel::gpu` maps a
//! stage's rank to its GPU under either order). Data-parallel replicas of a stage are statistically alike
//! (same shapes, independent routing), so one **representative unit** of each stage is simulated: its first
//! `U = lcm(ep_size, tp)` ranks, which hold whole EP and TP groups. The iteration graph has `pp × U` ranks
//! (graph rank `r·U + j` is the GPU of stage `r`'s rank `j`); collectives are priced on the real topology over their real
//! groups (gradient rings span every data-parallel replica) and keep the parts of simulated GPUs. Under the
//! flow backend a kept part's transfers to or from an unsimulated GPU still cross their real links; the
//! traffic between two unsimulated GPUs (other replicas') is not simulated.
//!
//! One micro-batch on one model stage is a task of the pipeline schedule (`crate::pipeline`): per layer,
//! the attention block and the MLP block each run between a sequence-parallel all-gather and
//! reduce-scatter over the TP group (Megatron's SP: 2 all-gathers and 2 reduce-scatters of `t·d` elements
//! per dense layer and direction); an MoE layer's routed experts take the tokens of each TP rank's
//! sequence shard through the EP all-to-alls (no TP collective around them, as with ETP = 1). The first
//! stage embeds, the last computes the output head. Backward runs the layers in reverse with twice the
//! compute (after the whole layer's forward again, all-to-alls and experts included, under activation
//! checkpointing); DualPipe splits it into the input
//! gradient (with every communication) and the deferred weight gradient, and overlaps a forward chunk with
//! a backward chunk by interleaving their steps on the streams. Gradients synchronise per stage over its
//! data-parallel group (dense) and expert-data-parallel group (experts) after the stage's last task.

use super::{CellFacts, EpModel, EpWorkspace, MoeCell};
use crate::collective::{AllToAllScratch, Collectives};
use crate::engine::{OpId, Stream};
use crate::iteration::IterationGraph;
use crate::memory::{MemoryBreakdown, RoutedTokens};
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use crate::pipeline::emit::{StageLowering, emit};
use crate::pipeline::schedule::{Pass, Schedule, Task};
use crate::scenario::file::Mode;
use crate::scenario::parallel::Parallel;
use crate::scenario::{Scenario, Strategy};
use crate::strategy::blocks::{self, Speeds, join};
use crate::strategy::layout::Layout;
use crate::strategy::output_head::OutputHead;
use crate::strategy::record::IterationRecord;
use crate::strategy::shared::{
    activation_s, attention_backward_extra_s, dense_forward_tp_s, experts_forward_width_s,
    mtp_projection_s, optimizer_s, selective_recompute_s,
};
use crate::strategy::stage_memory::model_stage_params;
use crate::strategy::stage_memory::{StageParams, stage_memory, stage_params};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::IterationRouting;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub mod bound;

/// What a pipelined EP run keeps between iterations.
pub(super) struct Pipelined {
    pub par: Parallel,
    /// GPUs of one pipeline stage (S).
    stage_gpus: usize,
    /// Simulated GPUs per pipeline rank (U).
    pub unit: usize,
    /// GPU of each graph rank.
    gpu_of: Vec<usize>,
    /// Graph rank of each GPU (`u32::MAX`: not simulated).
    graph_of: Vec<u32>,
    pub schedule: Schedule,
    /// [dense layer, MoE layer]: (attention block, MLP block) forward seconds of one micro-batch on one
    /// TP rank.
    dense: [(f64, f64); 2],
    /// What one layer's attention backward adds beyond twice its forward, on one TP rank.
    attention_bwd_extra_s: f64,
    /// What selective recomputation adds to each [dense, MoE] layer's backward on one TP rank (norms,
    /// MLA's up-projections, core attention, a dense MLP, an MoE block's router and shared experts).
    selective_s: [f64; 2],
    /// The output head of one micro-batch on one TP rank (projection and, in training, the loss).
    head: OutputHead,
    /// Multi-token-prediction modules on the last stage in training (0 otherwise), each with its
    /// projection's seconds and one more block routed as `mtp_layer` (the model's last layer).
    mtp_depth: usize,
    mtp_projection_s: f64,
    mtp_layer: usize,
    /// Per pipeline rank: one sequence-parallel all-gather (a reduce-scatter moves the same ring traffic)
    /// of a micro-batch's activations over every TP group of its unit; `None` without TP.
    tp_ring: Vec<Option<Arc<CollectiveSpec>>>,
    /// Per pipeline rank, per model stage it holds: (stage, its gradient synchronisation in issue order, on
    /// graph ranks); with replicated experts, the dense part only.
    grad_sync: blocks::StageGradSync,
    /// The task after which each (pipeline rank, model stage)'s weight gradients are final: its last
    /// backward (or weight-gradient) task in the rank's order.
    last_grads: HashMap<Task, usize>,
    /// With replicated experts, per planning window: every rank's expert-gradient synchronisation (each
    /// expert's copies in the stage, bucketed by their GPUs as DDP buckets them).
    expert_sync: Vec<Vec<CollectiveSpec>>,
    /// Per pipeline rank: optimizer seconds.
    optimizer_s: Vec<f64>,
    /// Bytes one GPU sends to its peer on the next stage per micro-batch (its sequence shard's activations).
    send_bytes: f64,
    /// Per pipeline rank: parameters it holds (dense, experts) and their replicas for ZeRO sharding.
    params: Vec<StageParams>,
}

impl Pipelined {
    /// The fixed parts of `ep`'s pipelined lowering. `replicated`: the layouts of an `ep-replicated`
    /// strategy's planning windows (their expert copies' gradients synchronise over every copy).
    pub fn new(
        s: &Scenario,
        ep: &Strategy,
        topo: &Topology,
        cost: &dyn CostModel,
        replicated: Option<&[Layout]>,
    ) -> Self {
        let par = ep.parallel.clone();
        let m = &s.model;
        let g = s.cluster.gpus();
        let (pp, tp) = (par.pp, par.tp);
        let ep_size = ep.ep_size;
        let stage_gpus = par.stage_gpus(g);
        let unit = par.unit(ep_size);
        let mut gpu_of = Vec::with_capacity(pp * unit);
        let mut graph_of = vec![u32::MAX; g];
        for r in 0..pp {
            for j in 0..unit {
                let gpu = par.gpu(g, unit, r, j);
                graph_of[gpu] = gpu_of.len() as u32;
                gpu_of.push(gpu);
            }
        }
        let schedule = par
            .run_schedule(s.workload.mode, s.workload.micro_batches)
            .expect("a validated scenario's schedule builds");
        let t = s.tokens_per_rank();
        let dense = [
            dense_forward_tp_s(s, cost, false, t, tp as u64),
            dense_forward_tp_s(s, cost, true, t, tp as u64),
        ];
        let attention_bwd_extra_s = attention_backward_extra_s(s, cost, t, tp as u64);
        let selective_s = selective_recompute_s(s, cost, t, tp as u64);
        let head = OutputHead::new(s, cost, t, tp as u64);
        let comms = Collectives::new(topo, s.cluster.network);
        let mut scratch = AllToAllScratch::default();
        let act_bytes = (t * m.d_model * m.dtype_bytes as u64) as f64;
        let mut this = Pipelined {
            par,
            stage_gpus,
            unit,
            gpu_of,
            graph_of,
            schedule,
            dense,
            attention_bwd_extra_s,
            selective_s,
            head,
            mtp_depth: if s.workload.mode == Mode::Training {
                m.mtp_depth
            } else {
                0
            },
            mtp_projection_s: mtp_projection_s(s, cost, t, tp as u64),
            mtp_layer: m.layers - 1,
            tp_ring: Vec::new(),
            grad_sync: Vec::new(),
            last_grads: HashMap::new(),
            expert_sync: Vec::new(),
            optimizer_s: Vec::new(),
            send_bytes: act_bytes / tp as f64,
            params: Vec::new(),
        };
        let slots = super::slots_per_rank(s, ep);
        let params = stage_params(s, &this.par, slots, &this.schedule);
        for (r, &stage_params) in params.iter().enumerate() {
            let gpu = |j: usize| this.par.gpu(g, unit, r, j);
            let tp_ring = (tp > 1).then(|| {
                let rings: Vec<Vec<usize>> = (0..unit / tp)
                    .map(|k| (k * tp..(k + 1) * tp).map(gpu).collect())
                    .collect();
                Arc::new(this.to_graph(comms.rings(
                    &rings,
                    act_bytes,
                    1.0,
                    &mut scratch,
                    Stream::Comm,
                )))
            });
            this.tp_ring.push(tp_ring);
            // Parameters of the rank's model stages (shared with the layout search's memory bound).
            let StageParams {
                dense: dense_params,
                experts: expert_params,
                ..
            } = stage_params;
            let dp = stage_gpus / tp;
            // Expert blocks: `ep_size` EP ranks of `etp` GPUs each (one GPU per expert slice).
            let block = this.par.expert_block(ep_size);
            let edp = stage_gpus / block;
            // Gradients: dense over each TP index's data-parallel group, expert slices over each (EP,
            // ETP) index's expert-data-parallel group, every group of the unit in one grouped call.
            let t_ = &s.training;
            let zero3 = if t_.zero_stage >= 3 { 1.5 } else { 1.0 };
            // One bucket per model stage on the rank, issued on the auxiliary communication stream as
            // soon as the stage's last weight gradients exist (`last_grads`), beside later work.
            let mut per_stage = Vec::new();
            for k in this.schedule.stages_on(r) {
                let (dense, experts) = model_stage_params(s, &this.par, slots, k);
                let dense_groups: Vec<(Vec<usize>, f64)> = (0..tp)
                    .map(|j| {
                        let group = (0..dp).map(|i| gpu(i * tp + j)).collect();
                        (group, dense * t_.grad_bytes_per_param * zero3)
                    })
                    .collect();
                let expert_groups: Vec<(Vec<usize>, f64)> = if replicated.is_some() {
                    Vec::new()
                } else {
                    (0..block)
                        .map(|e| {
                            let group = (0..edp).map(|k| gpu(k * block + e)).collect();
                            (group, experts * t_.grad_bytes_per_param * zero3)
                        })
                        .collect()
                };
                let specs: Vec<CollectiveSpec> = [dense_groups, expert_groups]
                    .iter()
                    .filter_map(|b| comms.grouped_all_reduce(b, Stream::CommAux, &mut scratch))
                    .map(|spec| this.to_graph(spec))
                    .collect();
                per_stage.push((k, specs));
            }
            this.grad_sync.push(per_stage);
            let updated = if t_.zero_stage >= 1 {
                dense_params / dp as f64 + expert_params / stage_params.expert_replicas
            } else {
                dense_params + expert_params
            };
            this.optimizer_s.push(optimizer_s(s, cost, updated));
        }
        for (r, slots) in this.schedule.per_rank.iter().enumerate() {
            let mut last: HashMap<usize, Task> = HashMap::new();
            for t in slots.iter().flat_map(|slot| slot.tasks()) {
                if matches!(t.pass, Pass::Backward | Pass::BackwardWeight) {
                    last.insert(t.model_stage, t);
                }
            }
            this.last_grads.extend(last.into_values().map(|t| (t, r)));
        }
        if let Some(layouts) = replicated {
            // Each copy's slice (1/etp of it with expert tensor parallelism) all-reduces with the same
            // slice of the expert's other copies: those of its EP group and of every expert-data-parallel
            // block of the stage.
            let etp = this.par.etp.max(1);
            let block = ep_size * etp;
            let edp = stage_gpus / block;
            let expert_bytes = m.expert_params() as f64 / etp as f64
                * s.training.grad_bytes_per_param
                * if s.training.zero_stage >= 3 { 1.5 } else { 1.0 };
            for layout in layouts {
                let mut specs = Vec::new();
                for r in 0..pp {
                    let gpu = |j: usize| this.par.gpu(g, unit, r, j);
                    let mut buckets: std::collections::BTreeMap<&[usize], f64> = Default::default();
                    for l in this.moe_layers_on(s, r) {
                        for holders in &layout.layers[l].replicas {
                            *buckets.entry(holders.as_slice()).or_default() += expert_bytes;
                        }
                    }
                    let grouped: Vec<(Vec<usize>, f64)> = buckets
                        .into_iter()
                        .flat_map(|(holders, bytes)| {
                            (0..etp).map(move |j| {
                                let copies = (0..edp)
                                    .flat_map(|k| {
                                        holders.iter().map(move |&h| gpu(k * block + h * etp + j))
                                    })
                                    .collect();
                                (copies, bytes)
                            })
                        })
                        .collect();
                    specs.extend(
                        comms
                            .grouped_all_reduce(&grouped, Stream::Comm, &mut scratch)
                            .map(|spec| this.to_graph(spec)),
                    );
                }
                this.expert_sync.push(specs);
            }
        }
        this.params = params;
        this
    }

    /// The GPU of rank `j` of pipeline rank `r`'s stage (see [`Parallel::gpu`]).
    pub fn gpu(&self, r: usize, j: usize) -> usize {
        self.par.gpu(self.stage_gpus * self.par.pp, self.unit, r, j)
    }

    /// GPUs of a stage that are simulated (one unit of `lcm(ep_size, tp)`; the others repeat it).
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// MoE layers (0-based among MoE layers) whose experts pipeline rank `r` holds, the last stage's
    /// multi-token-prediction block counted as the last MoE layer again (it is placed like it).
    pub fn moe_layers_on(&self, s: &Scenario, r: usize) -> Vec<usize> {
        let m = &s.model;
        let mut out: Vec<usize> = self
            .schedule
            .stages_on(r)
            .iter()
            .flat_map(|&k| self.par.layers_of(k))
            .filter(|&l| l >= m.first_dense_layers)
            .map(|l| l - m.first_dense_layers)
            .collect();
        let last = self.par.model_stages() - 1;
        if s.workload.mode == Mode::Training
            && m.mtp_depth > 0
            && self.schedule.stages_on(r).contains(&last)
            && m.moe_layers() > 0
        {
            out.extend(std::iter::repeat_n(m.moe_layers() - 1, m.mtp_depth));
        }
        out
    }

    /// The GPU of each graph rank.
    pub fn gpus(&self) -> &[usize] {
        &self.gpu_of
    }

    /// Graph ranks in the simulated iteration.
    pub fn graph_ranks(&self) -> usize {
        self.gpu_of.len()
    }

    /// A collective priced on GPUs, restricted to the simulated GPUs and renumbered to graph ranks. A
    /// transfer with one simulated end keeps its links and is waited for by that end's part.
    pub(super) fn to_graph(&self, spec: CollectiveSpec) -> CollectiveSpec {
        let total = spec.parts.len().max(1);
        let mut index = vec![u32::MAX; spec.parts.len()];
        let mut parts = Vec::new();
        for (i, p) in spec.parts.iter().enumerate() {
            let q = self.graph_of[p.rank as usize];
            if q != u32::MAX {
                index[i] = parts.len() as u32;
                let holder = self.graph_of[p.holder as usize];
                parts.push(crate::network::PartSpec {
                    rank: q,
                    holder: if holder == u32::MAX { q } else { holder },
                    ..*p
                });
            }
        }
        let flows = spec
            .flows
            .iter()
            .filter_map(|f| {
                let (a, b) = (index[f.src_part as usize], index[f.dst_part as usize]);
                let (src_part, dst_part) = match (a, b) {
                    (u32::MAX, u32::MAX) => return None,
                    (u32::MAX, b) => (b, b),
                    (a, u32::MAX) => (a, a),
                    (a, b) => (a, b),
                };
                Some(crate::network::FlowSpec {
                    src_part,
                    dst_part,
                    ..*f
                })
            })
            .collect();
        CollectiveSpec {
            bytes: spec.bytes * parts.len() as f64 / total as f64,
            parts,
            flows,
        }
    }

    /// [`Pipelined::to_graph`] of a freshly priced spec (moved out of its `Arc`: it has no other owner).
    pub(super) fn to_graph_shared(&self, spec: Arc<CollectiveSpec>) -> Arc<CollectiveSpec> {
        Arc::new(self.to_graph(Arc::unwrap_or_clone(spec)))
    }

    /// Memory of the most loaded pipeline rank's GPU: its stages' parameters, gradients and optimizer
    /// state by ZeRO stage over their replicas, and the activations of the micro-batches the schedule keeps
    /// in flight on it (each a chunk of its layers over its sequence shard), plus routed tokens (see
    /// [`stage_memory`], which the layout search's lower bound shares).
    pub fn memory(&self, s: &Scenario, routed: RoutedTokens) -> MemoryBreakdown {
        stage_memory(s, &self.par, &self.schedule, &self.params, routed)
    }
}

/// One (micro-batch, MoE layer) on a pipeline rank's unit: its EP groups' all-to-alls, each GPU's
/// routed-expert seconds, and under expert tensor parallelism the rings that gather an ETP group's tokens
/// onto each of its GPUs (a reduce-scatter of the same size returns the outputs).
struct LayerCells {
    groups: Vec<MoeCell>,
    /// Per GPU of the unit, in unit order: routed-expert forward seconds at nominal speed.
    expert_s: Vec<f64>,
    /// One all-gather ring per ETP group of the unit (empty with `etp = 1`).
    etp_rings: Vec<Arc<CollectiveSpec>>,
    /// Per GPU of the unit: the experts' activation run again in backward (`moe_act`); empty otherwise.
    act_s: Vec<f64>,
    /// Per GPU of the unit: the routed tokens its experts hold (their activations).
    received: Vec<u64>,
}

/// One step of a task: work on every GPU of the pipeline rank, per-GPU expert work, or collectives.
enum Step {
    Compute(f64, Phase),
    Experts(Vec<f64>, f64),
    Collectives(Vec<Arc<CollectiveSpec>>, Phase),
}

/// The lowering the schedule's emitter drives for one iteration.
struct Lowering<'m, 'a> {
    model: &'m EpModel<'a>,
    pipe: &'m Pipelined,
    routing: &'m IterationRouting,
    ws_scratch: &'m mut EpWorkspace,
    facts: CellFacts,
    /// Per graph rank: the most tokens its experts received in one MoE layer.
    peak_layer_tokens: Vec<u64>,
    /// Per graph rank: the most tokens its experts received over the MoE layers of one model chunk of one
    /// micro-batch (what an in-flight chunk's activations hold).
    chunk_tokens: Vec<u64>,
    speeds: Speeds,
    /// Cells of (micro-batch, MoE layer), built at the forward and used by the backward.
    cells: HashMap<(usize, usize), Rc<LayerCells>>,
    /// Per MoE layer: whether its routing counts are the same in every micro-batch (balanced routing,
    /// as the layout search's estimates use). Such a layer's cells are priced once.
    uniform: Vec<bool>,
    /// Micro-batches of the iteration (the routing may hold fewer draws, see `workload.routing_samples`).
    micro_batches: usize,
    /// Per (pipeline rank, MoE layer, routing draw) that several micro-batches share (every micro-batch of
    /// a uniform layer; each draw of fewer draws than micro-batches): its cells and the routing facts one
    /// micro-batch adds (DualPipe places a layer on two pipeline ranks).
    shared_cells: HashMap<(usize, usize, usize), SharedCells>,
    graph_ranks: Vec<Vec<usize>>,
    /// Per graph rank: its last gradient-synchronisation op issued so far (each stage's as soon as its
    /// gradients are final).
    synced: Vec<Option<OpId>>,
}

/// Cells that several micro-batches share, priced once, and what each micro-batch adds to the routing facts.
type SharedCells = (Rc<LayerCells>, FactsDelta);

/// What one micro-batch's cells of a layer add to the routing facts (replayed for every micro-batch that
/// shares the cells, which are priced once).
struct FactsDelta {
    routed: u64,
    dropped: u64,
    /// (graph rank, tokens received).
    received: Vec<(usize, u64)>,
}

/// A lowering (iteration 0's speeds) whose every MoE layer routes in each micro-batch as `routing`'s
/// first: for [`bound`].
fn uniform_cells_only<'m, 'a>(
    model: &'m EpModel<'a>,
    pipe: &'m Pipelined,
    routing: &'m IterationRouting,
    ws: &'m mut EpWorkspace,
) -> Lowering<'m, 'a> {
    let speeds = Speeds::of(model.scenario, 0, pipe.graph_ranks());
    let uniform = vec![true; routing.shape.moe_layers];
    Lowering::new(model, pipe, routing, ws, speeds, uniform)
}

/// Per MoE layer of `routing`: whether every micro-batch routes exactly like the first.
fn uniform_layers(routing: &IterationRouting) -> Vec<bool> {
    let shape = routing.shape;
    (0..shape.moe_layers)
        .map(|l| {
            let first = routing.layer_counts(0, l);
            (1..shape.micro_batches).all(|mb| routing.layer_counts(mb, l) == first)
        })
        .collect()
}

impl<'m, 'a> Lowering<'m, 'a> {
    fn new(
        model: &'m EpModel<'a>,
        pipe: &'m Pipelined,
        routing: &'m IterationRouting,
        ws: &'m mut EpWorkspace,
        speeds: Speeds,
        uniform: Vec<bool>,
    ) -> Self {
        let n = pipe.graph_ranks();
        Lowering {
            model,
            pipe,
            routing,
            ws_scratch: ws,
            facts: CellFacts {
                window: 0,
                tokens_received: vec![0; n],
                layer_tokens: vec![0; n],
                routed: 0,
                dropped: 0,
            },
            peak_layer_tokens: vec![0; n],
            chunk_tokens: vec![0; n],
            speeds,
            cells: HashMap::new(),
            uniform,
            micro_batches: model.scenario.workload.micro_batches,
            shared_cells: HashMap::new(),
            synced: vec![None; n],
            graph_ranks: (0..pipe.par.pp)
                .map(|r| (r * pipe.unit..(r + 1) * pipe.unit).collect())
                .collect(),
        }
    }

    fn tp_steps(&self, r: usize, out: &mut Vec<Step>) {
        if let Some(spec) = &self.pipe.tp_ring[r] {
            out.push(Step::Collectives(
                vec![Arc::clone(spec)],
                Phase::TensorParallel,
            ));
        }
    }

    /// A block between the sequence-parallel all-gather and reduce-scatter (both present with TP).
    fn block(&self, r: usize, seconds: f64, out: &mut Vec<Step>) {
        self.tp_steps(r, out);
        out.push(Step::Compute(seconds, Phase::DenseCompute));
        self.tp_steps(r, out);
    }

    /// The MoE cells of (micro-batch, layer) for pipeline rank `r`'s EP groups.
    fn cells(&mut self, r: usize, mb: usize, layer: usize) -> Rc<LayerCells> {
        if !self.cells.contains_key(&(mb, layer)) {
            let moe_layer = layer - self.model.scenario.model.first_dense_layers;
            let draws = self.routing.shape.micro_batches;
            // The routing draw this micro-batch routes like: its own, the first (a uniform layer), or one
            // of fewer draws than micro-batches (`workload.routing_samples`).
            let draw = if self.uniform[moe_layer] {
                0
            } else {
                mb % draws
            };
            let own = !self.uniform[moe_layer] && draws == self.micro_batches;
            let cells = if own {
                Rc::new(self.build_cells(r, draw, layer))
            } else if let Some((cells, delta)) = self.shared_cells.get(&(r, moe_layer, draw)) {
                self.facts.routed += delta.routed;
                self.facts.dropped += delta.dropped;
                for &(g, t) in &delta.received {
                    self.facts.tokens_received[g] += t;
                }
                cells.clone()
            } else {
                let (routed, dropped) = (self.facts.routed, self.facts.dropped);
                let before = self.facts.tokens_received.clone();
                let cells = Rc::new(self.build_cells(r, draw, layer));
                let delta = FactsDelta {
                    routed: self.facts.routed - routed,
                    dropped: self.facts.dropped - dropped,
                    received: (self.facts.tokens_received.iter().zip(&before))
                        .enumerate()
                        .filter(|(_, (a, b))| a != b)
                        .map(|(g, (a, b))| (g, a - b))
                        .collect(),
                };
                self.shared_cells
                    .insert((r, moe_layer, draw), (cells.clone(), delta));
                cells
            };
            self.cells.insert((mb, layer), cells);
        }
        self.cells[&(mb, layer)].clone()
    }

    /// Prices the MoE cells of (micro-batch, layer) for pipeline rank `r`'s EP groups and adds their
    /// routing facts.
    ///
    /// A stage's expert blocks are `ep_size × etp` consecutive GPUs, ETP innermost (Megatron-Core's
    /// expert rank order): GPU `e·etp + j` of a block is slice `j` of EP rank `e`. The GPUs of one ETP index
    /// form an EP group that exchanges its own tokens through the all-to-all; then each ETP group gathers
    /// what its GPUs received, and every GPU runs its slice of the EP rank's experts over all of it.
    fn build_cells(&mut self, r: usize, mb: usize, layer: usize) -> LayerCells {
        let model = self.model;
        let s = model.scenario;
        let ep = model.ep_size;
        let experts = s.model.experts;
        let etp = self.pipe.par.etp.max(1);
        let block = ep * etp;
        let unit = self.pipe.unit;
        let moe_layer = layer - s.model.first_dense_layers;
        let counts = self.routing.layer_counts(mb, moe_layer);
        let pipe = self.pipe;
        let gpu = |u: usize| pipe.gpu(r, u);
        self.facts.layer_tokens.fill(0);
        let mut groups = Vec::new();
        let mut expert_s = vec![0.0; unit];
        let recompute_act = s.workload.mode == Mode::Training
            && !s.training.activation_checkpointing
            && s.training.recompute_modules.experts_activation_only();
        let mut act_s = if recompute_act {
            vec![0.0; unit]
        } else {
            Vec::new()
        };
        let mut slot_tokens: Vec<Vec<u32>> = vec![Vec::new(); unit];
        let mut rows: Vec<u32> = Vec::new();
        for k in 0..unit / block {
            for j in 0..etp {
                // Unit indices of the EP group of ETP index j in block k.
                let idx: Vec<usize> = (0..ep).map(|e| k * block + e * etp + j).collect();
                let gpus: Vec<usize> = idx.iter().map(|&u| gpu(u)).collect();
                let graph: Vec<usize> = gpus
                    .iter()
                    .map(|&g| self.pipe.graph_of[g] as usize)
                    .collect();
                let group_rows: &[u32] = if etp == 1 {
                    &counts[k * ep * experts..(k + 1) * ep * experts]
                } else {
                    rows.clear();
                    for &u in &idx {
                        rows.extend_from_slice(&counts[u * experts..(u + 1) * experts]);
                    }
                    &rows
                };
                let cell = model.moe_cell(
                    group_rows,
                    &gpus,
                    &graph,
                    moe_layer,
                    0,
                    self.ws_scratch,
                    &mut self.facts,
                );
                for (e, &u) in idx.iter().enumerate() {
                    expert_s[u] = cell.expert_s[e];
                    if recompute_act && etp == 1 {
                        act_s[u] = cell.act_s[e];
                    }
                    if etp > 1 {
                        slot_tokens[u] = cell.slot_tokens[e].clone();
                    }
                }
                groups.push(MoeCell {
                    dispatch: self.pipe.to_graph_shared(cell.dispatch),
                    dispatch_grad: self.pipe.to_graph_shared(cell.dispatch_grad),
                    combine: self.pipe.to_graph_shared(cell.combine),
                    expert_s: cell.expert_s,
                    slot_tokens: Vec::new(),
                    act_s: Vec::new(),
                });
            }
        }
        let mut etp_rings = Vec::new();
        if etp > 1 {
            let comms = Collectives::new(model.topo, s.cluster.network);
            let f = s.model.expert_d_ff.div_ceil(etp as u64);
            let token_bytes = (s.model.d_model * s.model.dtype_bytes as u64) as f64;
            for k in 0..unit / block {
                for e in 0..ep {
                    let members: Vec<usize> = (0..etp).map(|j| k * block + e * etp + j).collect();
                    // The group's tokens per expert slot, and the most any member received.
                    let mut union = vec![0u32; slot_tokens[members[0]].len()];
                    let mut most = 0u64;
                    for &u in &members {
                        for (x, &t) in union.iter_mut().zip(&slot_tokens[u]) {
                            *x += t;
                        }
                        most = most.max(slot_tokens[u].iter().map(|&t| t as u64).sum());
                    }
                    let secs = experts_forward_width_s(s, model.cost, &union, f);
                    let held: u64 = union.iter().map(|&t| t as u64).sum();
                    let m = &s.model;
                    let act = activation_s(model.cost, held, f, m.expert_matrices, m.dtype_bytes);
                    for &u in &members {
                        expert_s[u] = secs;
                        if recompute_act {
                            act_s[u] = act;
                        }
                        // Every member holds the group's tokens (its activations).
                        let g = self.pipe.graph_of[gpu(u)] as usize;
                        let own: u64 = slot_tokens[u].iter().map(|&t| t as u64).sum();
                        self.facts.layer_tokens[g] += held - own;
                    }
                    // Uneven shares gather as a ring of equal chunks of the largest (NCCL's all-gather
                    // takes equal chunks: the smaller ones are padded).
                    let ring: Vec<usize> = members.iter().map(|&u| gpu(u)).collect();
                    let spec = comms.rings(
                        &[ring],
                        etp as f64 * most as f64 * token_bytes,
                        1.0,
                        &mut AllToAllScratch::default(),
                        Stream::Comm,
                    );
                    etp_rings.push(Arc::new(self.pipe.to_graph(spec)));
                }
            }
        }
        for (peak, &t) in self
            .peak_layer_tokens
            .iter_mut()
            .zip(&self.facts.layer_tokens)
        {
            *peak = (*peak).max(t);
        }
        let received = (0..unit)
            .map(|u| self.facts.layer_tokens[self.pipe.graph_of[gpu(u)] as usize])
            .collect();
        LayerCells {
            groups,
            expert_s,
            etp_rings,
            act_s,
            received,
        }
    }

    fn steps(&mut self, r: usize, task: Task) -> Vec<Step> {
        let last = self.pipe.par.model_stages() - 1;
        let layers = self.pipe.par.layers_of(task.model_stage);
        let mtp = if task.model_stage == last {
            self.pipe.mtp_depth
        } else {
            0
        };
        let mut out = Vec::new();
        match task.pass {
            Pass::Forward => {
                for l in layers.clone() {
                    self.layer_forward(r, task.mb, l, &mut out);
                }
                self.note_chunk_tokens(r, task.mb, layers, mtp);
                if task.model_stage == last {
                    out.push(Step::Compute(
                        self.pipe.head.forward_s(),
                        Phase::DenseCompute,
                    ));
                }
                // The multi-token-prediction modules follow the output head on the last stage (§2.2):
                // projection, one more MoE block (routed as the last layer), the shared head.
                for _ in 0..mtp {
                    out.push(Step::Compute(
                        self.pipe.mtp_projection_s,
                        Phase::DenseCompute,
                    ));
                    self.layer_forward(r, task.mb, self.pipe.mtp_layer, &mut out);
                    out.push(Step::Compute(
                        self.pipe.head.forward_s(),
                        Phase::DenseCompute,
                    ));
                }
            }
            Pass::Backward | Pass::BackwardInput => {
                // The whole backward is 2× the forward's compute; its input-gradient half 1×.
                let scale = if task.pass == Pass::Backward {
                    2.0
                } else {
                    1.0
                };
                for _ in 0..mtp {
                    let head = self.head_backward_s(task.pass);
                    out.push(Step::Compute(head, Phase::DenseCompute));
                    self.layer_backward(r, task, self.pipe.mtp_layer, &mut out);
                    let proj = scale * self.pipe.mtp_projection_s;
                    out.push(Step::Compute(proj, Phase::DenseCompute));
                }
                if task.model_stage == last {
                    out.push(Step::Compute(
                        self.head_backward_s(task.pass),
                        Phase::DenseCompute,
                    ));
                }
                for l in layers.rev() {
                    self.layer_backward(r, task, l, &mut out);
                }
                if task.pass == Pass::Backward {
                    for l in self.pipe.par.layers_of(task.model_stage) {
                        self.cells.remove(&(task.mb, l));
                    }
                }
            }
            Pass::BackwardWeight => {
                // Weight gradients: one more forward's worth of GEMMs, no communication.
                let mut dense_s = 0.0;
                let mut experts: Vec<f64> = vec![0.0; self.pipe.unit];
                let mtp_layers = std::iter::repeat_n(self.pipe.mtp_layer, mtp);
                for l in mtp_layers.chain(layers.clone()) {
                    let (attn, mlp) = self.pipe.dense[self.is_moe(l) as usize];
                    // Less attention's score GEMMs, which have no weight gradient (twice the extra).
                    dense_s += attn + mlp - 2.0 * self.pipe.attention_bwd_extra_s;
                    if self.is_moe(l) {
                        let cells = self.cells(r, task.mb, l);
                        for (x, y) in experts.iter_mut().zip(&cells.expert_s) {
                            *x += y;
                        }
                    }
                }
                for l in layers {
                    self.cells.remove(&(task.mb, l));
                }
                if task.model_stage == last {
                    dense_s += (1 + mtp) as f64 * self.pipe.head.backward_weight_s()
                        + mtp as f64 * self.pipe.mtp_projection_s;
                }
                out.push(Step::Compute(dense_s, Phase::DenseCompute));
                out.push(Step::Experts(experts, 1.0));
            }
        }
        out
    }

    /// The routed experts at `scale` × their forward seconds, between the ETP groups' all-gather of the
    /// tokens their GPUs received and the reduce-scatter of the outputs (neither without ETP).
    fn experts_between_etp_rings(cells: &LayerCells, scale: f64, out: &mut Vec<Step>) {
        if !cells.etp_rings.is_empty() {
            out.push(Step::Collectives(
                cells.etp_rings.clone(),
                Phase::TensorParallel,
            ));
        }
        out.push(Step::Experts(cells.expert_s.clone(), scale));
        if !cells.etp_rings.is_empty() {
            out.push(Step::Collectives(
                cells.etp_rings.clone(),
                Phase::TensorParallel,
            ));
        }
    }

    fn is_moe(&self, l: usize) -> bool {
        l >= self.model.scenario.model.first_dense_layers
    }

    /// The output head's backward in `pass`: whole, or its input-gradient half (the loss's gradient and
    /// the projection's input gradient) where the schedule splits off the weight gradients.
    fn head_backward_s(&self, pass: Pass) -> f64 {
        if pass == Pass::Backward {
            self.pipe.head.backward_s()
        } else {
            self.pipe.head.backward_input_s()
        }
    }

    /// One layer's forward: attention, then the MLP or the MoE block (dispatch, experts, combine).
    /// Records what one forward chunk's MoE layers (and its multi-token-prediction blocks) leave routed on
    /// each GPU of pipeline rank `r`'s unit.
    fn note_chunk_tokens(
        &mut self,
        r: usize,
        mb: usize,
        layers: std::ops::Range<usize>,
        mtp: usize,
    ) {
        let unit = self.pipe.unit;
        let mut sum = vec![0u64; unit];
        let mtp_layers = std::iter::repeat_n(self.pipe.mtp_layer, mtp);
        let moe_layers: Vec<usize> = layers
            .chain(mtp_layers)
            .filter(|&l| self.is_moe(l))
            .collect();
        for l in moe_layers {
            let cells = self.cells(r, mb, l);
            for (x, &t) in sum.iter_mut().zip(&cells.received) {
                *x += t;
            }
        }
        for (u, &t) in sum.iter().enumerate() {
            let g = self.pipe.graph_of[self.pipe.gpu(r, u)] as usize;
            self.chunk_tokens[g] = self.chunk_tokens[g].max(t);
        }
    }

    fn layer_forward(&mut self, r: usize, mb: usize, l: usize, out: &mut Vec<Step>) {
        let shared = self.model.scenario.model.shared_experts > 0;
        let (attn, mlp) = self.pipe.dense[self.is_moe(l) as usize];
        self.block(r, attn, out);
        if !self.is_moe(l) {
            self.block(r, mlp, out);
            return;
        }
        if shared {
            self.block(r, mlp, out);
        } else {
            out.push(Step::Compute(mlp, Phase::DenseCompute));
        }
        let cells = self.cells(r, mb, l);
        Self::moe_block_forward(&cells, out);
    }

    /// An MoE block's routed part forward: dispatch, experts, combine.
    fn moe_block_forward(cells: &LayerCells, out: &mut Vec<Step>) {
        out.push(Step::Collectives(
            cells.groups.iter().map(|c| c.dispatch.clone()).collect(),
            Phase::Dispatch,
        ));
        Self::experts_between_etp_rings(cells, 1.0, out);
        out.push(Step::Collectives(
            cells.groups.iter().map(|c| c.combine.clone()).collect(),
            Phase::Combine,
        ));
    }

    /// One layer's backward (whole, or its input-gradient half): the MoE block's gradients travel back
    /// through the all-to-alls, then the MLP's and attention's. Under activation checkpointing only the
    /// layer's input was kept, so the whole layer's forward runs again first — attention, MLP, and the MoE
    /// block with its dispatch, experts and combine (Megatron-Core's full recomputation checkpoints whole
    /// Transformer layers, token dispatcher included) — as the memory model assumes.
    fn layer_backward(&mut self, r: usize, task: Task, l: usize, out: &mut Vec<Step>) {
        let s = self.model.scenario;
        if s.training.activation_checkpointing {
            self.layer_forward(r, task.mb, l, out);
        } else {
            let selective = self.pipe.selective_s[self.is_moe(l) as usize];
            if selective > 0.0 {
                out.push(Step::Compute(selective, Phase::DenseCompute));
            }
            // A checkpointed MoE block (`moe`) runs its dispatch, experts and combine again first.
            if self.is_moe(l) && s.training.recompute_modules.moe {
                let cells = self.cells(r, task.mb, l);
                Self::moe_block_forward(&cells, out);
            }
        }
        let scale = if task.pass == Pass::Backward {
            2.0
        } else {
            1.0
        };
        let shared = s.model.shared_experts > 0;
        let (attn, mlp) = self.pipe.dense[self.is_moe(l) as usize];
        if self.is_moe(l) {
            let cells = self.cells(r, task.mb, l);
            out.push(Step::Collectives(
                cells
                    .groups
                    .iter()
                    .map(|c| c.dispatch_grad.clone())
                    .collect(),
                Phase::Combine,
            ));
            if !cells.act_s.is_empty() {
                out.push(Step::Experts(cells.act_s.clone(), 1.0));
            }
            Self::experts_between_etp_rings(&cells, scale, out);
            out.push(Step::Collectives(
                cells.groups.iter().map(|c| c.combine.clone()).collect(),
                Phase::Dispatch,
            ));
            if shared {
                self.block(r, scale * mlp, out);
            } else {
                out.push(Step::Compute(scale * mlp, Phase::DenseCompute));
            }
        } else {
            self.block(r, scale * mlp, out);
        }
        // Attention's input gradient is all of its extra backward work (it has no weights).
        let extra = if task.pass == Pass::Backward {
            1.0
        } else {
            3.0
        };
        let secs = scale * attn + extra * self.pipe.attention_bwd_extra_s;
        self.block(r, secs, out);
    }

    /// After the task that makes a (pipeline rank, model stage)'s weight gradients final, that stage's
    /// gradient synchronisation, following `after` (the task's last ops), beside whatever comes next.
    fn sync_if_final(&mut self, graph: &mut IterationGraph, task: Task, after: &[Option<OpId>]) {
        let Some((r, specs)) =
            blocks::due_grad_sync(&self.pipe.last_grads, &self.pipe.grad_sync, task)
        else {
            return;
        };
        blocks::stage_grad_sync(graph, specs, after, &self.graph_ranks[r], &mut self.synced);
    }

    fn run(&self, graph: &mut IterationGraph, r: usize, prev: &mut [Option<OpId>], step: &Step) {
        let ranks = &self.graph_ranks[r];
        match step {
            Step::Compute(secs, phase) => blocks::dense(
                graph,
                prev,
                ranks.iter().copied(),
                *secs,
                &self.speeds,
                *phase,
            ),
            Step::Experts(secs, scale) => {
                blocks::experts(graph, prev, ranks, secs, *scale, &self.speeds)
            }
            Step::Collectives(specs, phase) => {
                for spec in specs {
                    blocks::collective(graph, prev, *phase, Arc::clone(spec), &[]);
                }
            }
        }
    }
}

impl StageLowering for Lowering<'_, '_> {
    fn gpus(&self, rank: usize) -> &[usize] {
        &self.graph_ranks[rank]
    }

    fn gpu_of(&self, graph_rank: usize) -> usize {
        self.pipe.gpu_of[graph_rank]
    }

    fn to_graph(&self, spec: CollectiveSpec) -> CollectiveSpec {
        self.pipe.to_graph(spec)
    }

    fn task(
        &mut self,
        graph: &mut IterationGraph,
        rank: usize,
        task: Task,
        prev: &mut [Option<OpId>],
        ready: &[Option<OpId>],
    ) {
        let ranks = self.graph_ranks[rank].clone();
        join(graph, &ranks, prev, ready);
        for step in self.steps(rank, task) {
            self.run(graph, rank, prev, &step);
        }
        self.sync_if_final(graph, task, prev);
    }

    fn overlapped(
        &mut self,
        graph: &mut IterationGraph,
        rank: usize,
        forward: Task,
        backward: Task,
        prev: &mut [Option<OpId>],
        ready_forward: &[Option<OpId>],
        ready_backward: &[Option<OpId>],
    ) {
        // Two chains on the same streams: issuing their steps alternately lets one chunk's all-to-all run
        // on the communication stream while the other computes (DualPipe's overlapped forward-backward).
        let ranks = self.graph_ranks[rank].clone();
        let mut back = prev.to_vec();
        join(graph, &ranks, prev, ready_forward);
        join(graph, &ranks, &mut back, ready_backward);
        let f = self.steps(rank, forward);
        let b = self.steps(rank, backward);
        for i in 0..f.len().max(b.len()) {
            if let Some(step) = f.get(i) {
                self.run(graph, rank, prev, step);
            }
            if let Some(step) = b.get(i) {
                self.run(graph, rank, &mut back, step);
            }
        }
        self.sync_if_final(graph, backward, &back);
        join(graph, &ranks, prev, &back);
    }

    fn send_bytes(&self, _task: Task) -> f64 {
        self.pipe.send_bytes
    }
}

impl EpModel<'_> {
    /// One iteration of a pipelined (and/or tensor-parallel) EP strategy.
    pub(super) fn lower_pipelined(
        &self,
        pipe: &Pipelined,
        iteration: usize,
        routing: &IterationRouting,
        ws: &mut EpWorkspace,
    ) -> IterationRecord {
        let s = self.scenario;
        let n = pipe.graph_ranks();
        let mut graph = std::mem::take(&mut ws.graph);
        graph.reset(n, &s.cluster);
        let mut lowering = Lowering::new(
            self,
            pipe,
            routing,
            ws,
            Speeds::of(s, iteration, n),
            uniform_layers(routing),
        );
        // Replicated experts: the window's placement, its copies moved at the window's start.
        let window = self.window_of(iteration);
        lowering.facts.window = window;
        let mut prev: Vec<Option<OpId>> = vec![None; n];
        if window > 0
            && iteration == window * self.window
            && let Some(spec) = self.rebalance[window].clone()
        {
            blocks::collective(&mut graph, &mut prev, Phase::Rebalance, spec, &[]);
        }
        let comms = Collectives::new(self.topo, s.cluster.network);
        let mut scratch = AllToAllScratch::default();
        emit(
            &mut graph,
            &pipe.schedule,
            &comms,
            &mut scratch,
            &mut lowering,
            &mut prev,
        )
        .expect("a built schedule emits");
        let training = s.workload.mode == Mode::Training;
        if training {
            // Each stage's dense and static-expert gradients were synchronised as they became final;
            // replicated experts' (bucketed by the window's copies) follow the last task.
            let early = std::mem::take(&mut lowering.synced);
            let done: Vec<Option<OpId>> = (0..n)
                .map(|g| match (prev[g], early[g]) {
                    (Some(a), Some(b)) => Some(graph.barrier([a, b])),
                    (a, b) => a.or(b),
                })
                .collect();
            let experts = pipe.expert_sync.get(window).into_iter().flatten().cloned();
            let synced = blocks::grad_sync(&mut graph, &[done], experts);
            let unit = pipe.unit;
            blocks::optimizer(
                &mut graph,
                &synced,
                |q| pipe.optimizer_s[q / unit],
                &lowering.speeds,
            );
        }
        let Lowering {
            facts,
            peak_layer_tokens,
            chunk_tokens,
            ..
        } = lowering;
        let outcome = graph.analyse(Some(self.topo));
        ws.graph = graph;
        IterationRecord {
            outcome,
            tokens_received: facts.tokens_received,
            peak_layer_tokens,
            // An in-flight chunk's routed tokens (the memory model multiplies by the chunks in flight).
            activation_tokens: chunk_tokens,
            routed: facts.routed,
            dropped: facts.dropped,
        }
    }
}
