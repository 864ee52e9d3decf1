//! Tensor and pipeline parallelism of an EP strategy: the resolved knobs and their validation.
//!
//! Ranks are laid out as Megatron-Core lays them out ([`RankOrder`]). By default (`tp-ep-dp-pp`, Megatron-Core's
//! `tp-cp-ep-dp-pp`) tensor-parallel ranks are innermost (inside a node), then data-parallel ranks, then
//! pipeline stages outermost, so that pipeline stage `k` holds the consecutive GPUs `[k·S, (k+1)·S)` with
//! `S = GPUs / pp`. Expert parallelism is carved from a stage's `S = dp × tp` GPUs (Megatron-Core's "MoE
//! parallel folding"): EP groups are `ep_size` consecutive ranks of a stage, and tokens reach the MoE block
//! sequence-parallel (each TP rank dispatches its `1/tp` of the micro-batch's tokens), which Megatron-Core
//! requires of MoE models with TP > 1. With `rank_order = "tp-ep-pp-dp"` (Megatron's `--use-tp-pp-dp-mapping`)
//! the pipeline dimension moves inside the data-parallel one: see [`Parallel::gpu`].

use super::file::{Mode, StrategyKind, StrategySection, WorkloadSection};
use super::model::Model;
use super::{Resolver, ScenarioError};
use serde::{Deserialize, Serialize};

/// The pipeline schedule (see `crate::pipeline::schedule`).
pub use crate::pipeline::schedule::ScheduleKind as PipelineSchedule;

/// Which dimension follows the tensor- and expert-parallel ones in the GPU numbering, and so which
/// communication stays inside a node: Megatron-Core's `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RankOrder {
    /// `tp-ep-dp-pp` (Megatron-Core's default `tp-cp-ep-dp-pp`): a stage's data-parallel ranks (and the EP
    /// groups carved from them) are consecutive GPUs and pipeline stages outermost. EP all-to-alls and
    /// gradient all-reduces stay as local as the stage allows; pipeline sends cross nodes once a stage
    /// fills a node.
    #[default]
    #[serde(rename = "tp-ep-dp-pp", alias = "tp-cp-ep-dp-pp")]
    PipelineOutermost,
    /// `tp-ep-pp-dp` (Megatron's `--use-tp-pp-dp-mapping`, `tp-cp-ep-pp-dp`): units of `lcm(ep_size ×
    /// etp, tp)` GPUs (whole TP groups and expert blocks), then pipeline stages, then data-parallel
    /// replicas outermost. Pipeline sends stay inside a node while `unit × pp` GPUs fit one; data-parallel
    /// gradient rings, and EP groups wider than a unit, stride across nodes. Megatron-Core itself accepts
    /// this order for MoE models only when `ep_size × etp = tp` (its expert and dense grids must agree on
    /// the pipeline groups); moesim lays out the general case the same way.
    #[serde(rename = "tp-ep-pp-dp", alias = "tp-cp-ep-pp-dp")]
    DataOutermost,
}

impl RankOrder {
    pub fn name(self) -> &'static str {
        match self {
            RankOrder::PipelineOutermost => "tp-ep-dp-pp",
            RankOrder::DataOutermost => "tp-ep-pp-dp",
        }
    }
}

/// Tensor and pipeline parallelism of one strategy (both 1: plain EP × DP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parallel {
    /// Tensor-parallel degree (attention and dense MLPs split Megatron-style, sequence-parallel).
    pub tp: usize,
    /// Pipeline-parallel degree: pipeline ranks.
    pub pp: usize,
    /// Expert tensor-parallel degree: each routed expert's FFN split column/row-wise over `etp` GPUs that
    /// receive the same tokens (Megatron-Core's `expert_tensor_parallel_size`).
    #[serde(default = "one")]
    pub etp: usize,
    pub schedule: PipelineSchedule,
    /// Model chunks per pipeline rank (interleaved 1F1B; 1 otherwise).
    pub virtual_stages: usize,
    /// Layers of each model stage (`pp × virtual_stages` stages; GPipe, 1F1B and DualPipe: `pp`).
    pub stage_layers: Vec<usize>,
    /// How (pipeline rank, rank within the stage) map to GPUs.
    #[serde(default)]
    pub rank_order: RankOrder,
}

fn one() -> usize {
    1
}

impl Default for Parallel {
    fn default() -> Self {
        Parallel {
            tp: 1,
            pp: 1,
            etp: 1,
            schedule: PipelineSchedule::default(),
            virtual_stages: 1,
            stage_layers: Vec::new(),
            rank_order: RankOrder::default(),
        }
    }
}

impl Parallel {
    /// No tensor, expert-tensor or pipeline parallelism: the plain EP lowering.
    pub fn is_single(&self) -> bool {
        self.tp == 1 && self.pp == 1 && self.etp == 1
    }

    /// GPUs of one stage that hold whole EP groups of `ep_size` expert-tensor-parallel groups each.
    pub fn expert_block(&self, ep_size: usize) -> usize {
        ep_size * self.etp.max(1)
    }

    /// GPUs of a stage simulated as its representative unit: whole TP groups and whole expert blocks.
    pub fn unit(&self, ep_size: usize) -> usize {
        lcm(self.expert_block(ep_size), self.tp)
    }

    /// GPUs of one pipeline stage (`dp × tp`).
    pub fn stage_gpus(&self, gpus: usize) -> usize {
        gpus / self.pp.max(1)
    }

    /// The GPU of rank `j` (TP innermost, then EP/DP: `j = dp_index × tp + tp_index`) of pipeline rank `r`'s
    /// stage, on `gpus` GPUs with units of `unit` GPUs ([`Parallel::unit`]).
    pub fn gpu(&self, gpus: usize, unit: usize, r: usize, j: usize) -> usize {
        match self.rank_order {
            RankOrder::PipelineOutermost => r * self.stage_gpus(gpus) + j,
            RankOrder::DataOutermost => (j / unit) * unit * self.pp.max(1) + r * unit + j % unit,
        }
    }

    /// Data-parallel replicas of the dense (attention) parameters.
    pub fn dp(&self, gpus: usize) -> usize {
        self.stage_gpus(gpus) / self.tp.max(1)
    }

    /// The pipeline schedule this layout runs for `micro_batches` micro-batches in `mode`: the
    /// configured schedule in training, its forwards only in inference.
    pub fn run_schedule(
        &self,
        mode: Mode,
        micro_batches: usize,
    ) -> Result<crate::pipeline::schedule::Schedule, crate::pipeline::schedule::ScheduleError> {
        let schedule = crate::pipeline::schedule::Schedule::build(
            self.schedule,
            self.pp,
            self.virtual_stages,
            micro_batches,
        )?;
        Ok(match mode {
            Mode::Training => schedule,
            _ => schedule.forward_only(),
        })
    }

    /// Model stages: `pp × virtual_stages`.
    pub fn model_stages(&self) -> usize {
        self.pp * self.virtual_stages
    }

    /// The layers `[first, end)` of model stage `k`.
    pub fn layers_of(&self, k: usize) -> std::ops::Range<usize> {
        let first: usize = self.stage_layers[..k].iter().sum();
        first..first + self.stage_layers[k]
    }

    /// Megatron's default split: the embedding and the output head each count as one layer
    /// (`account_for_embedding_in_pipeline_split`, `account_for_loss_in_pipeline_split`), and the
    /// `layers + 2` units are spread as evenly as possible over the stages, the extra units on the last.
    pub fn default_split(layers: usize, stages: usize) -> Vec<usize> {
        let units = layers + 2;
        let mut out: Vec<usize> = (0..stages)
            .map(|k| (k + 1) * units / stages - k * units / stages)
            .collect();
        out[0] = out[0].saturating_sub(1);
        let last = stages - 1;
        out[last] = out[last].saturating_sub(1);
        out
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Least common multiple (the GPUs of a stage that hold whole EP and TP groups).
pub fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}

impl Resolver<'_> {
    /// Resolves `tp`, `pp`, `pipeline_schedule`, `virtual_stages` and `stage_layers` of strategy `i`;
    /// returns them with the EP size (its default is the stage's GPUs, at most the experts).
    pub(super) fn parallel(
        &self,
        i: usize,
        s: &StrategySection,
        m: &Model,
        gpus: usize,
        gpus_per_node: usize,
        w: &WorkloadSection,
    ) -> Result<Parallel, ScenarioError> {
        let (mode, trace, micro_batches) = (w.mode, w.trace.is_some(), w.micro_batches);
        let p = |f: &str| format!("strategy[{i}].{f}");
        let tp = s.tp.unwrap_or(1);
        let pp = s.pp.unwrap_or(1);
        let etp = s.etp.unwrap_or(1);
        for (f, v) in [("tp", tp), ("pp", pp), ("etp", etp)] {
            if v == 0 || !gpus.is_multiple_of(v) {
                return Err(self.error(
                    &p(f),
                    format!("{f} = {v} must divide the GPU count ({gpus})"),
                    "expected a divisor of the GPU count",
                ));
            }
        }
        if !gpus.is_multiple_of(tp * pp) {
            return Err(self.error(
                &p("tp"),
                format!("tp × pp = {} must divide the GPU count ({gpus})", tp * pp),
                "expected tp × pp to divide the GPUs",
            ));
        }
        let pipelined = pp > 1;
        let knobs = [
            ("pipeline_schedule", s.pipeline_schedule.is_some()),
            ("virtual_stages", s.virtual_stages.is_some()),
            ("stage_layers", s.stage_layers.is_some()),
            ("rank_order", s.rank_order.is_some()),
        ];
        if !pipelined && let Some((knob, _)) = knobs.iter().find(|(_, set)| *set) {
            return Err(self.error(
                &p(knob),
                format!("`{knob}` needs pipeline parallelism (pp > 1)"),
                "set pp or remove this knob",
            ));
        }
        if etp > 1 && !matches!(s.kind, StrategyKind::Ep | StrategyKind::EpReplicated) {
            return Err(self.error(
                &p("etp"),
                format!(
                    "expert tensor parallelism splits each expert copy of an EP rank over its GPUs: kind = \"ep\" or \"ep-replicated\" only (this entry is {:?})",
                    s.kind
                ),
                "expected etp = 1 for this kind",
            ));
        }
        if tp * pp * etp > 1 {
            let f = if pp > 1 {
                "pp"
            } else if tp > 1 {
                "tp"
            } else {
                "etp"
            };
            // FSSDP composes with tensor parallelism (its dense layers split over TP groups, every GPU a
            // shard owner and a token source) and with a pipeline (each stage's GPUs shard its layers'
            // experts), not with DualPipe, whose model stages live on two pipeline ranks (their experts
            // would need two shardings).
            if s.kind == StrategyKind::Fssdp && pp > 1 {
                if s.pipeline_schedule == Some(PipelineSchedule::DualPipe) {
                    return Err(self.error(
                        &p("pipeline_schedule"),
                        "DualPipe holds each model stage on two pipeline ranks; kind = \"fssdp\" shards a stage's experts over one rank's GPUs",
                        "expected gpipe, 1f1b or interleaved for this kind",
                    ));
                }
                let (stage, per_node) = (gpus / pp, gpus_per_node.max(1));
                if !(stage.is_multiple_of(per_node) || per_node.is_multiple_of(stage)) {
                    return Err(self.error(
                        &p("pp"),
                        format!(
                            "a pipeline stage of {stage} GPUs splits nodes of {per_node} GPUs unevenly; FSSDP dispatches to copies by node"
                        ),
                        "expected the stage's GPUs to be whole nodes or a divisor of a node",
                    ));
                }
            }
            if !matches!(
                s.kind,
                StrategyKind::Ep | StrategyKind::EpReplicated | StrategyKind::Fssdp
            ) {
                return Err(self.error(
                    &p(f),
                    format!(
                        "tensor and pipeline parallelism compose with kind = \"ep\", \"ep-replicated\" and \"fssdp\" so far (this entry is {:?})",
                        s.kind
                    ),
                    "expected tp = 1 and pp = 1 for this kind",
                ));
            }
            if mode == Mode::Serving {
                return Err(self.error(
                    &p(f),
                    "tensor and pipeline parallelism are modelled for training, prefill and decode, not yet for serving (its scheduler splits each step's batch over single-GPU ranks)",
                    "expected tp = 1 and pp = 1 in serving",
                ));
            }
            if mode != Mode::Training
                && let Some(kind) = s.pipeline_schedule
                && !matches!(kind, PipelineSchedule::Gpipe | PipelineSchedule::OneFOneB)
            {
                return Err(self.error(
                    &p("pipeline_schedule"),
                    format!(
                        "`{}` orders backward passes; inference runs the forwards only, micro-batch after micro-batch through the stages",
                        kind.name()
                    ),
                    "expected gpipe or 1f1b (both are the same forward pipeline without a backward), or no schedule",
                ));
            }
            if trace {
                return Err(self.error(
                    &p(f),
                    "tensor and pipeline parallelism replay synthetic routing only so far: a trace's sources are one GPU each, not one TP rank's share of a micro-batch",
                    "expected no workload.trace with tp or pp above 1",
                ));
            }
            if s.overlap_micro_batches.unwrap_or(1) > 1 {
                return Err(self.error(
                    &p("overlap_micro_batches"),
                    "splitting micro-batches into overlapped parts is not modelled with tensor or pipeline parallelism (DualPipe overlaps a forward chunk with a backward chunk instead)",
                    "expected 1 with tp or pp above 1",
                ));
            }
            // Decode steps one token per sequence; prefill and training take whole sequences.
            let (tokens, what) = match mode {
                Mode::Decode => (
                    m.micro_batch,
                    "model.micro_batch: decode steps one token per sequence",
                ),
                _ => (
                    m.seq_len * m.micro_batch,
                    "model.seq_len × model.micro_batch",
                ),
            };
            if tp > 1 && !tokens.is_multiple_of(tp as u64) {
                return Err(self.error(
                    &p("tp"),
                    format!(
                        "sequence parallelism splits a micro-batch's {tokens} tokens ({what}) over the tp = {tp} ranks evenly"
                    ),
                    format!("expected tp to divide {what}"),
                ));
            }
        }
        let schedule = s.pipeline_schedule.unwrap_or_default();
        let virtual_stages = s.virtual_stages.unwrap_or(1);
        if pipelined {
            use crate::pipeline::schedule::{Schedule, ScheduleError};
            if let Err(e) = Schedule::build(schedule, pp, virtual_stages, micro_batches) {
                let field = match e {
                    ScheduleError::VirtualStages { .. } | ScheduleError::TooFewChunks { .. } => {
                        p("virtual_stages")
                    }
                    ScheduleError::OddRanks { .. } => p("pp"),
                    ScheduleError::Empty { .. }
                    | ScheduleError::Indivisible { .. }
                    | ScheduleError::DualPipeMicroBatches { .. } => "workload.micro_batches".into(),
                };
                return Err(self.error(
                    &field,
                    e.to_string(),
                    format!("does not fit the {} schedule", schedule.name()),
                ));
            }
        }
        let stages = pp * virtual_stages;
        let stage_layers = match &s.stage_layers {
            Some(v) => {
                if v.len() != stages || v.iter().sum::<usize>() != m.layers {
                    return Err(self.error(
                        &p("stage_layers"),
                        format!(
                            "{} stages holding {} layers",
                            v.len(),
                            v.iter().sum::<usize>()
                        ),
                        format!(
                            "expected {stages} layer counts (pp × virtual_stages) summing to the model's {} layers",
                            m.layers
                        ),
                    ));
                }
                v.clone()
            }
            None => Parallel::default_split(m.layers, stages),
        };
        // The first stage may hold the embedding alone and the last the output head alone (Megatron's split
        // when the units divide evenly, e.g. 94 layers + 2 over 96 stages); a stage between them needs layers.
        let inner = stages.saturating_sub(2);
        if stage_layers.iter().skip(1).take(inner).any(|&l| l == 0) {
            return Err(self.error(
                &p("pp"),
                format!(
                    "{stages} model stages for {} layers leave a stage between the first and the last without layers",
                    m.layers
                ),
                "expected fewer stages",
            ));
        }
        Ok(Parallel {
            tp,
            pp,
            etp,
            schedule,
            virtual_stages,
            stage_layers,
            rank_order: s.rank_order.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(tp: usize, pp: usize, order: RankOrder) -> Parallel {
        Parallel {
            tp,
            pp,
            rank_order: order,
            ..Parallel::default()
        }
    }

    #[test]
    fn both_orders_number_every_gpu_once() {
        for order in [RankOrder::PipelineOutermost, RankOrder::DataOutermost] {
            for (tp, pp, unit, gpus) in [
                (1, 2, 4, 16),
                (2, 4, 4, 32),
                (2, 2, 2, 8),
                (1, 16, 64, 2048),
            ] {
                let par = layout(tp, pp, order);
                let mut seen = vec![false; gpus];
                for r in 0..pp {
                    for j in 0..gpus / pp {
                        let g = par.gpu(gpus, unit, r, j);
                        assert!(!seen[g], "{order:?}: GPU {g} twice");
                        seen[g] = true;
                    }
                }
                assert!(seen.iter().all(|&s| s));
            }
        }
    }

    #[test]
    fn data_outermost_is_megatrons_tp_pp_dp_mapping() {
        // Megatron's order `tp-pp-dp` with tp = 2, pp = 2 on 8 GPUs: rank = tp_i + 2·(pp_i + 2·dp_i), so the
        // pipeline groups are {0, 2}, {1, 3}, {4, 6}, {5, 7} and stage 0 holds GPUs 0, 1, 4, 5.
        let par = layout(2, 2, RankOrder::DataOutermost);
        let stage = |r: usize| -> Vec<usize> { (0..4).map(|j| par.gpu(8, 2, r, j)).collect() };
        assert_eq!(stage(0), vec![0, 1, 4, 5]);
        assert_eq!(stage(1), vec![2, 3, 6, 7]);
        // The default keeps a stage's GPUs consecutive: {0..4}, {4..8}.
        let par = layout(2, 2, RankOrder::PipelineOutermost);
        assert_eq!(
            (0..4).map(|j| par.gpu(8, 2, 1, j)).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
    }
}
