//! Expert offloading (ExpertFlow, Pre-gated MoE, EdgeMoE, MoE-Infinity, Fiddler, mixtral-offloading),
//! inference: prefill and decode on one GPU whose experts live in host DRAM or on an NVMe SSD.
//!
//! The GPU keeps the dense weights and a cache of experts per layer (or one shared pool); the cache is
//! replayed once over the run ([`replay`], exact `moesim_traces::replay_cache` semantics), then each step is
//! timed on its own (in parallel) on three resources of the GPU: its compute stream, its host-to-device copy
//! engine (the PCIe link: prefetches and demand fetches queue on it in the order they are issued, so they
//! compete), and the host CPU (on the rank's Comm stream, which offloading does not otherwise use).
//!
//! Per step and MoE layer: dense compute (attention, gate) → hits run at once on the GPU; prefetched
//! experts run when their copy, issued when the previous layer's gate ran, has landed; demand misses are
//! fetched after the gate (pinned or pageable host memory; SSD reads are limited by the slower of the
//! drive and the link) or computed on the CPU (memory-bandwidth-bound at small batch), per the miss action
//! or, with `auto`, whichever is predicted faster for that expert. The next layer's prefetch is issued right
//! after this layer's gate, behind this layer's demand fetches. Expert bytes and GEMM weight traffic follow
//! each expert's bit-width.
//!
//! Several GPUs are modelled as independent replicas serving the same stream (throughput scales with them).

pub mod replay;
pub mod tokens;

use crate::collective::Cause;
use crate::engine::{OpId, Stream, ps};
use crate::iteration::{IterationGraph, OpInfo};
use crate::memory::{GIB, MemoryBreakdown, ParamsOnRank, RoutedTokens, rank_memory};
use crate::phase::Phase;
use crate::result::StrategyResult;
use crate::scenario::Scenario;
use crate::scenario::file::Mode;
use crate::scenario::knobs::{
    CopyStream, Dequant, Eviction, ExpertTier, HostMemory, MissAction, OffloadKnobs, Prefetch,
};
use crate::strategy::model::StrategyModel;
use crate::strategy::record::IterationRecord;
use crate::strategy::shared::{dense_forward_s, experts_forward_s};
use moesim_calibrate::{CopyKind, CostModel, datasheet};
use moesim_traces::CacheError;
use replay::{Replay, StepLayer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokens::TokenRouting;

/// Everything about an offloading run that does not change between steps.
pub struct OffloadModel<'a> {
    pub scenario: &'a Scenario,
    pub knobs: &'a OffloadKnobs,
    pub cost: &'a dyn CostModel,
    pub tokens: &'a TokenRouting,
    /// The cache over the run.
    pub replay: Replay,
    /// Tokens per step.
    pub per_step: usize,
    dense_s: [f64; 2],
    lm_head_s: f64,
    /// Bytes of each expert at its bit-width.
    expert_bytes: Vec<f64>,
}

/// One step's offloading facts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepFacts {
    pub fetched_bytes: f64,
    /// Bytes copied back to host memory by write-back eviction.
    pub written_back_bytes: f64,
    pub wasted_bytes: f64,
    pub demand_fetches: u64,
    pub prefetched: u64,
    pub cpu_experts: u64,
}

/// Offloading figures of a run, for the result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffloadStats {
    /// Cache hits / requested experts over all layers.
    pub hit_rate: f64,
    pub per_layer_hit_rate: Vec<f64>,
    /// Bytes copied to the GPU over the run (demand fetches, prefetches and wasted prefetches).
    pub bytes_fetched: u64,
    pub policy: String,
    pub cache_experts_per_layer: usize,
    pub cache_scope: String,
    pub prefetch: String,
    pub miss_action: String,
    /// Steps simulated (decode iterations or prefill chunks).
    pub steps: usize,
    /// Decode: time per output token (mean step time); prefill: time per chunk.
    pub tpot_ms: f64,
    /// Bytes read from each tier over the run.
    pub bytes_per_tier: BTreeMap<String, u64>,
    /// Bytes of prefetches the step did not need.
    pub wasted_prefetch_bytes: u64,
    /// Bytes copied back from the GPU to host memory by write-back eviction (`eviction = "write-back"`).
    #[serde(default)]
    pub bytes_written_back: u64,
    pub demand_fetches: u64,
    pub prefetched_experts: u64,
    pub cpu_experts: u64,
    /// GPU memory held by the expert cache (and the prefetch staging buffer).
    pub cache_gib: f64,
    /// Where the per-token routing came from.
    pub routing: String,
}

impl<'a> OffloadModel<'a> {
    /// Replays the cache over `tokens` and prepares the per-step costs.
    pub fn new(
        scenario: &'a Scenario,
        knobs: &'a OffloadKnobs,
        cost: &'a dyn CostModel,
        tokens: &'a TokenRouting,
    ) -> Result<Self, CacheError> {
        let s = scenario;
        let m = &s.model;
        let per_step = match s.workload.mode {
            Mode::Decode | Mode::Serving => m.micro_batch,
            Mode::Training | Mode::Prefill => m.micro_batch * m.seq_len,
        } as usize;
        let steps = s
            .workload
            .iterations
            .min(tokens.tokens().div_ceil(per_step.max(1)));
        let replay = replay::replay(tokens, steps, per_step, knobs, s.seed)?;
        let expert_bytes = (0..m.experts).map(|e| knobs.expert_bytes(m, e)).collect();
        Ok(OffloadModel {
            scenario,
            knobs,
            cost,
            tokens,
            replay,
            per_step,
            dense_s: [
                dense_forward_s(s, cost, false),
                dense_forward_s(s, cost, true),
            ],
            lm_head_s: cost.gemm_s(s.tokens_per_rank(), m.vocab, m.d_model, m.dtype_bytes),
            expert_bytes,
        })
    }

    pub fn steps(&self) -> usize {
        self.replay.steps
    }

    /// Copy time of `bytes` between pinned or pageable host memory (per the knob) and the GPU: the cost
    /// model's measured copy if it has one, else the PCIe latency plus the bytes at the link's rate (half
    /// of it from pageable memory, staged through a pinned bounce buffer).
    fn host_copy_s(&self, bytes: f64, to_device: bool) -> f64 {
        let (kind, factor) = match (self.knobs.host_memory, to_device) {
            (HostMemory::Pinned, true) => (CopyKind::H2dPinned, 1.0),
            (HostMemory::Pageable, true) => (CopyKind::H2dPageable, 0.5),
            (HostMemory::Pinned, false) => (CopyKind::D2hPinned, 1.0),
            (HostMemory::Pageable, false) => (CopyKind::D2hPageable, 0.5),
        };
        let link = self.scenario.cluster.pcie_gbytes_per_s * 1e9 * factor;
        self.cost
            .copy_s(bytes, kind)
            .unwrap_or_else(|| datasheet::PCIE_LATENCY_US * 1e-6 + bytes / link)
    }

    /// Host-to-GPU copy time of expert `e`.
    pub fn fetch_s(&self, e: usize) -> f64 {
        let c = &self.scenario.cluster;
        let bytes = self.expert_bytes[e];
        match self.knobs.expert_tier {
            ExpertTier::Dram => self.host_copy_s(bytes, true),
            // NVMe reads stream through the same link; the slower of the two sets the pace.
            ExpertTier::Ssd => {
                let factor = match self.knobs.host_memory {
                    HostMemory::Pinned => 1.0,
                    HostMemory::Pageable => 0.5,
                };
                let link = c.pcie_gbytes_per_s * 1e9 * factor;
                100e-6 + bytes / link.min(c.nvme_gbytes_per_s * 1e9)
            }
        }
    }

    /// Device-to-host copy time of the expert a fetch of `e` replaces (a slot of `e`'s size), when eviction
    /// writes back; zero when the GPU copy is simply overwritten.
    pub fn write_back_s(&self, e: usize) -> f64 {
        if self.knobs.eviction != Eviction::WriteBack {
            return 0.0;
        }
        self.host_copy_s(self.expert_bytes[e], false)
    }

    /// One fetch of expert `e` on the copy stream: the write-back of the expert it replaces (if any), then
    /// the copy in; both on one stream, so they add even though PCIe is full duplex.
    fn copy_in_s(&self, e: usize, facts: &mut StepFacts) -> f64 {
        let back = self.write_back_s(e);
        if back > 0.0 {
            facts.written_back_bytes += self.expert_bytes[e];
        }
        self.fetch_s(e) + back
    }

    /// GPU stream time of running expert `e` over `tokens` tokens: its kernels, or the framework's host time
    /// to issue them when that is longer (eager frameworks at small batch).
    fn expert_run_s(&self, e: usize, tokens: u32) -> f64 {
        self.gpu_expert_s(e, tokens).max(self.knobs.host.expert_s())
    }

    /// GPU time of expert `e` over `tokens` tokens at its bit-width. Fused dequantisation: the weight-read
    /// share of the GEMMs shrinks with the bits (dequantised in registers), the FLOPs do not.
    /// Materialised: each weight matrix is first dequantised by a memory-bound kernel that reads the packed
    /// bits and writes a full-width copy, which the full-width GEMMs then read.
    pub fn gpu_expert_s(&self, e: usize, tokens: u32) -> f64 {
        let s = self.scenario;
        let full = experts_forward_s(s, self.cost, &[tokens]);
        let full_bytes = s.model.expert_bytes() as f64;
        let ratio = self.expert_bytes[e] / full_bytes;
        if self.knobs.dequant == Dequant::Materialize && ratio < 1.0 {
            let matrices = s.model.expert_matrices as f64;
            let per_matrix = (self.expert_bytes[e] + full_bytes) / matrices;
            return full + matrices * self.cost.memory_bound_s(per_matrix);
        }
        let weights = self.cost.memory_bound_s(full_bytes) - self.cost.launch_overhead_s();
        let body = full - self.cost.launch_overhead_s();
        full - (1.0 - ratio).max(0.0) * body.min(weights).max(0.0)
    }

    /// Host CPU time of expert `e` over `tokens` tokens where its weights live: the slower of FLOPs at the
    /// CPU's peak and one pass over the weights at DRAM (or SSD) bandwidth, plus moving the tokens' hidden
    /// states over PCIe and back.
    pub fn cpu_expert_s(&self, e: usize, tokens: u32) -> f64 {
        let s = self.scenario;
        let c = &s.cluster;
        let flops = 2.0 * tokens as f64 * s.model.expert_params() as f64;
        let mem_bw = match self.knobs.expert_tier {
            ExpertTier::Dram => c.host_memory_gbytes_per_s,
            ExpertTier::Ssd => c.nvme_gbytes_per_s,
        } * 1e9;
        let compute = (flops / (c.cpu_tflops * 1e12)).max(self.expert_bytes[e] / mem_bw);
        let io = 2.0 * tokens as f64 * s.model.token_bytes() as f64 / (c.pcie_gbytes_per_s * 1e9);
        compute + io + 2.0 * datasheet::PCIE_LATENCY_US * 1e-6
    }

    fn on_cpu(&self, e: usize, tokens: u32) -> bool {
        match self.knobs.miss_action {
            MissAction::Fetch => false,
            MissAction::Cpu => true,
            MissAction::Auto => {
                self.cpu_expert_s(e, tokens)
                    < self.fetch_s(e) + self.write_back_s(e) + self.expert_run_s(e, tokens)
            }
        }
    }

    /// Tokens of step `i` that ask for each expert of `layer`.
    fn expert_tokens(&self, i: usize, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        out.resize(self.tokens.experts, 0);
        let hi = ((i + 1) * self.per_step).min(self.tokens.tokens());
        for t in i * self.per_step..hi {
            for &e in self.tokens.experts_of(t, layer) {
                out[e as usize] += 1;
            }
        }
    }

    /// Times step `i`.
    pub fn simulate_step(
        &self,
        i: usize,
        graph: &mut IterationGraph,
    ) -> (IterationRecord, StepFacts) {
        let s = self.scenario;
        let g = s.cluster.gpus();
        let moe_layers = self.replay.layers;
        let first = s.model.first_dense_layers;
        // One GPU: no communication kernels take SMs and no transfers share a link with another class.
        graph.reset_with(1, s.cluster.network, 0.0);
        let mut facts = StepFacts::default();
        let mut counts = Vec::new();
        let info = |phase: Phase| OpInfo {
            phase,
            rank: 0,
            holder: 0,
            cause: if phase == Phase::ExpertFetch {
                Cause::InboundLink
            } else {
                Cause::Compute
            },
            excess: 0,
        };
        let copies = match self.knobs.copy_stream {
            CopyStream::Dedicated => Stream::H2d,
            CopyStream::Compute => Stream::Compute,
        };
        let mut prev: Option<OpId> = None;
        // Prefetch copies in flight for the next MoE layer: (expert, copy op).
        let mut inflight: Vec<(u32, OpId)> = Vec::new();
        let mut received = 0u64;
        let mut peak = 0u64;
        for layer in 0..s.model.layers {
            let moe = layer >= first;
            let d = graph.op(
                0,
                Stream::Compute,
                ps(self.dense_s[moe as usize].max(self.knobs.host.layer_s())),
                info(Phase::DenseCompute),
                prev.as_slice(),
            );
            if !moe {
                prev = Some(d);
                continue;
            }
            let l = layer - first;
            let cell: &StepLayer = &self.replay.cells[i * moe_layers + l];
            self.expert_tokens(i, l, &mut counts);
            let tokens_here: u64 = counts.iter().map(|&c| c as u64).sum();
            received += tokens_here;
            peak = peak.max(tokens_here);
            let mut done: Vec<OpId> = vec![d];
            // Demand misses: fetched after the gate, or computed on the CPU.
            let mut fetched: Vec<(u32, OpId)> = Vec::new();
            for &e in &cell.demand {
                let c = counts[e as usize];
                if self.on_cpu(e as usize, c) {
                    facts.cpu_experts += 1;
                    done.push(graph.op(
                        0,
                        Stream::HostCpu,
                        ps(self.cpu_expert_s(e as usize, c)),
                        info(Phase::ExpertCompute),
                        &[d],
                    ));
                } else {
                    facts.demand_fetches += 1;
                    facts.fetched_bytes += self.expert_bytes[e as usize];
                    fetched.push((
                        e,
                        graph.op(
                            0,
                            copies,
                            ps(self.copy_in_s(e as usize, &mut facts)),
                            info(Phase::ExpertFetch),
                            &[d],
                        ),
                    ));
                }
            }
            // The next layer's prefetch, issued after this gate, behind this layer's demand fetches.
            let mut next_inflight = Vec::new();
            if l + 1 < moe_layers && self.knobs.prefetch != Prefetch::None {
                let next = &self.replay.cells[i * moe_layers + l + 1];
                for &e in next.prefetched.iter().chain(&next.wasted) {
                    facts.fetched_bytes += self.expert_bytes[e as usize];
                    let op = graph.op(
                        0,
                        copies,
                        ps(self.copy_in_s(e as usize, &mut facts)),
                        info(Phase::ExpertFetch),
                        &[d],
                    );
                    if next.wasted.contains(&e) {
                        facts.wasted_bytes += self.expert_bytes[e as usize];
                    } else {
                        next_inflight.push((e, op));
                    }
                }
            }
            // GPU expert compute in order of readiness: hits, prefetched, demand-fetched.
            for &e in &cell.hits {
                let t = self.expert_run_s(e as usize, counts[e as usize]);
                done.push(graph.op(0, Stream::Compute, ps(t), info(Phase::ExpertCompute), &[d]));
            }
            for &e in &cell.prefetched {
                facts.prefetched += 1;
                let copy = inflight.iter().find(|(x, _)| *x == e).map(|(_, op)| *op);
                let t = self.expert_run_s(e as usize, counts[e as usize]);
                let deps: Vec<OpId> = std::iter::once(d).chain(copy).collect();
                done.push(graph.op(0, Stream::Compute, ps(t), info(Phase::ExpertCompute), &deps));
            }
            for &(e, copy) in &fetched {
                let t = self.expert_run_s(e as usize, counts[e as usize]);
                done.push(graph.op(
                    0,
                    Stream::Compute,
                    ps(t),
                    info(Phase::ExpertCompute),
                    &[d, copy],
                ));
            }
            inflight = next_inflight;
            prev = Some(graph.barrier(done));
        }
        graph.op(
            0,
            Stream::Compute,
            ps(self.lm_head_s),
            info(Phase::DenseCompute),
            prev.as_slice(),
        );
        let mut outcome = graph.analyse(None);
        // Replicas: every GPU runs the same step.
        let busy = outcome.busy[0];
        outcome.busy = vec![busy; g];
        let iteration = IterationRecord {
            outcome,
            tokens_received: vec![received; g],
            peak_layer_tokens: vec![peak; g],
            activation_tokens: vec![peak; g],
            routed: received,
            dropped: 0,
        };
        (iteration, facts)
    }

    /// GPU memory: dense weights, KV cache and activations, plus the expert cache slots (sized for the
    /// largest expert), with a cache smaller than top-k a transient buffer for the rest of the running
    /// layer's experts, and, with prefetch, a staging buffer of one layer's top-k experts.
    pub fn memory(&self, peak_layer_tokens: u64) -> (MemoryBreakdown, f64) {
        let s = self.scenario;
        let p = ParamsOnRank {
            dense: s.model.dense_params() as f64,
            experts: 0.0,
            dense_replicas: 1.0,
            expert_replicas: 1.0,
        };
        let routed = RoutedTokens {
            peak_layer: peak_layer_tokens as f64,
            all_layers: peak_layer_tokens as f64,
        };
        let mut mem = rank_memory(s, p, routed);
        let largest = self.expert_bytes.iter().copied().fold(0.0, f64::max);
        let slots = self.knobs.cache_experts_per_layer * s.model.moe_layers()
            + s.model
                .top_k
                .saturating_sub(self.knobs.cache_experts_per_layer)
            + if self.knobs.prefetch == Prefetch::None {
                0
            } else {
                s.model.top_k
            };
        let cache = slots as f64 * largest / GIB;
        mem.params_gib += cache;
        mem.total_gib += cache;
        (mem, cache)
    }

    /// Aggregates the run's offloading figures.
    pub fn stats(&self, facts: &[StepFacts], steps_ms: &[f64], cache_gib: f64) -> OffloadStats {
        let k = self.knobs;
        let mut total = moesim_traces::CacheCounts::default();
        for c in &self.replay.counts {
            total.add(*c);
        }
        let fetched: f64 = facts.iter().map(|f| f.fetched_bytes).sum();
        let tier = match k.expert_tier {
            ExpertTier::Dram => "dram",
            ExpertTier::Ssd => "ssd",
        };
        let name = |v: &dyn erased::Named| v.name();
        OffloadStats {
            hit_rate: total.hit_rate(),
            per_layer_hit_rate: self.replay.counts.iter().map(|c| c.hit_rate()).collect(),
            bytes_fetched: fetched.round() as u64,
            policy: k.policy.name().to_string(),
            cache_experts_per_layer: k.cache_experts_per_layer,
            cache_scope: name(&k.cache_scope),
            prefetch: name(&k.prefetch),
            miss_action: name(&k.miss_action),
            steps: self.steps(),
            tpot_ms: if steps_ms.is_empty() {
                0.0
            } else {
                steps_ms.iter().sum::<f64>() / steps_ms.len() as f64
            },
            bytes_per_tier: BTreeMap::from([(tier.to_string(), fetched.round() as u64)]),
            wasted_prefetch_bytes: facts.iter().map(|f| f.wasted_bytes).sum::<f64>().round() as u64,
            bytes_written_back: facts
                .iter()
                .map(|f| f.written_back_bytes)
                .sum::<f64>()
                .round() as u64,
            demand_fetches: facts.iter().map(|f| f.demand_fetches).sum(),
            prefetched_experts: facts.iter().map(|f| f.prefetched).sum(),
            cpu_experts: facts.iter().map(|f| f.cpu_experts).sum(),
            cache_gib,
            routing: self.tokens.source.clone(),
        }
    }
}

/// Serde names of the knob enums, for reports.
mod erased {
    pub trait Named {
        fn name(&self) -> String;
    }
    impl<T: serde::Serialize> Named for T {
        fn name(&self) -> String {
            serde_json::to_value(self)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }
    }
}

/// Step time in milliseconds of an iteration record.
pub fn step_ms(r: &IterationRecord) -> f64 {
    r.step_ms()
}

impl StrategyModel for OffloadModel<'_> {
    type Workspace = IterationGraph;
    type Iteration = (IterationRecord, StepFacts);

    fn iterations(&self) -> usize {
        self.steps()
    }

    fn simulate(&self, it: usize, ws: &mut IterationGraph) -> (IterationRecord, StepFacts) {
        self.simulate_step(it, ws)
    }

    fn record(it: &(IterationRecord, StepFacts)) -> &IterationRecord {
        &it.0
    }

    fn graph(ws: &mut IterationGraph) -> &mut IterationGraph {
        ws
    }

    fn extra_phases(&self) -> &'static [Phase] {
        &[Phase::ExpertFetch]
    }

    fn finish(&self, runs: &[(IterationRecord, StepFacts)], result: &mut StrategyResult) {
        let peak = runs
            .iter()
            .flat_map(|r| r.0.peak_layer_tokens.first().copied())
            .max()
            .unwrap_or(0);
        let (memory, cache_gib) = self.memory(peak);
        let steps_ms: Vec<f64> = runs.iter().map(|r| r.0.step_ms()).collect();
        let facts: Vec<StepFacts> = runs.iter().map(|r| r.1.clone()).collect();
        result.memory = memory;
        result.memory_peak_gib = memory.total_gib;
        result.placement = vec![(0..self.scenario.model.experts).collect()];
        result.offload = Some(self.stats(&facts, &steps_ms, cache_gib));
    }
}
