//! One FSSDP iteration lowered into operations: the sparse collectives of the plan, optional calibration,
//! dispatch and all-to-alls per (micro-batch, layer), then the operation graph (forward with spAG beside the
//! dense compute, backward with spRS and re-gathers beside the dense backward, dense all-reduce and the
//! owners' optimizer step), run on the engine.

use super::materialize::{LayerPlacement, materialize};
use super::{FssdpIteration, FssdpModel, FssdpWorkspace, sharding};
use crate::collective::{Cause, RankTransfer, all_to_all};
use crate::collective_sparse::{SparseKind, SparseOutcome, sparse_collective};
use crate::engine::{OpId, ps, to_ms};
use crate::iteration::{IterationGraph, OpInfo, Stream};
use crate::phase::Phase;
use crate::strategy::ep::EpIteration;
use crate::strategy::shared::{experts_forward_s, optimizer_s, rank_slowdown, scaled};
use moesim_traces::IterationRouting;

impl FssdpModel<'_> {
    fn spag(
        &self,
        p: &LayerPlacement,
        owners: &[u32],
        bytes: f64,
        kind: SparseKind,
        ws: &mut FssdpWorkspace,
    ) -> SparseOutcome {
        ws.batch.clear();
        for (e, &o) in owners.iter().enumerate() {
            let h = p.holders(e);
            if h.len() > 1 {
                ws.batch
                    .push(o as usize, bytes, h[1..].iter().map(|&r| r as usize));
            }
        }
        sparse_collective(self.topo, &ws.batch, kind, &mut ws.sparse)
    }

    /// Predicted MoE-block latency of one (micro-batch, layer) on `p`: slowest expert compute plus dispatch
    /// and combine, for calibration.
    fn predict(&self, counts: &[u32], p: &LayerPlacement, ws: &mut FssdpWorkspace) -> f64 {
        let s = self.scenario;
        let (g, e) = (self.ranks, self.experts);
        ws.dispatch.run(
            counts,
            p,
            g,
            self.gpus_per_node,
            s.model.token_bytes() as f64,
        );
        let all: Vec<usize> = (0..g).collect();
        let d = all_to_all(self.topo, &all, &ws.dispatch.bytes, &mut ws.a2a);
        let a2a = d.per_rank.iter().map(|x| x.time_s).fold(0.0, f64::max);
        let compute = (0..g)
            .map(|r| experts_forward_s(s, self.cost, &ws.dispatch.tokens[r * e..(r + 1) * e]))
            .fold(0.0, f64::max);
        3.0 * compute + 4.0 * a2a
    }

    /// Simulates one iteration.
    pub fn simulate_iteration(&self, it: usize, ws: &mut FssdpWorkspace) -> FssdpIteration {
        let shape = self.routing.shape();
        let mut routing = ws
            .routing
            .take()
            .unwrap_or_else(|| IterationRouting::zeros(shape));
        self.routing.fill_iteration(it, &mut routing);
        let out = self.lower_and_run(it, &routing, ws);
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
        let (g, e, moe_layers) = (self.ranks, self.experts, self.moe_layers);
        let mbs = routing.shape.micro_batches;
        let remat = self.knobs.rematerialize;
        let token_bytes = s.model.token_bytes() as f64;
        let slow: Vec<f64> = (0..g).map(|r| rank_slowdown(s, it, r)).collect();
        let mean_slow = slow.iter().sum::<f64>() / g as f64;
        let owners = self.owners(it).to_vec();
        let mut plan = self.plan(it);

        // Calibration: re-plan on the iteration's actual loads where the extra spAG pays for itself.
        let mut calibrated = vec![None::<SparseOutcome>; moe_layers];
        let mut calibrated_count = 0;
        if self.knobs.calibrate {
            for l in 0..moe_layers {
                let own = &owners[l * e..(l + 1) * e];
                let actual = &self.loads[it.min(self.loads.len() - 1)][l * e..(l + 1) * e];
                let cal = materialize(
                    actual,
                    own,
                    g,
                    self.gpus_per_node,
                    self.overlap_degree,
                    self.knobs.memory_cap_experts,
                );
                // The extra copies: those in the calibrated plan the forecast plan lacks.
                ws.batch.clear();
                for (x, &o) in own.iter().enumerate() {
                    let extra: Vec<usize> = cal.holders(x)[1..]
                        .iter()
                        .map(|&r| r as usize)
                        .filter(|&r| !plan[l].holds(x, r))
                        .collect();
                    if !extra.is_empty() {
                        ws.batch.push(o as usize, self.expert_bytes, extra);
                    }
                }
                if ws.batch.is_empty() {
                    continue;
                }
                let extra =
                    sparse_collective(self.topo, &ws.batch, SparseKind::AllGather, &mut ws.sparse);
                let mut merged = plan[l].clone();
                for x in 0..e {
                    for &r in &cal.holders(x)[1..] {
                        merged.add(x, r as usize);
                    }
                }
                let (mut before, mut after) = (0.0, 0.0);
                for mb in 0..mbs {
                    let counts = routing.layer_counts(mb, l);
                    before += self.predict(counts, &plan[l], ws);
                    after += self.predict(counts, &merged, ws);
                }
                if after + extra.time_s < before {
                    plan[l] = merged;
                    calibrated[l] = Some(extra);
                    calibrated_count += 1;
                }
            }
        }

        // Sparse collectives per layer.
        let spag: Vec<SparseOutcome> = (0..moe_layers)
            .map(|l| {
                self.spag(
                    &plan[l],
                    &owners[l * e..(l + 1) * e],
                    self.expert_bytes,
                    SparseKind::AllGather,
                    ws,
                )
            })
            .collect();
        let sprs: Vec<SparseOutcome> = (0..moe_layers)
            .map(|l| {
                self.spag(
                    &plan[l],
                    &owners[l * e..(l + 1) * e],
                    self.grad_bytes,
                    SparseKind::ReduceScatter,
                    ws,
                )
            })
            .collect();
        let materialized: usize = plan.iter().map(LayerPlacement::materialized).sum();
        let mut per_rank_layer = vec![0usize; g];
        let mut per_rank_sum = vec![0usize; g];
        let mut peak_layer = 0;
        for p in &plan {
            per_rank_layer.fill(0);
            for x in 0..e {
                for &r in &p.holders(x)[1..] {
                    per_rank_layer[r as usize] += 1;
                }
            }
            for r in 0..g {
                per_rank_sum[r] += per_rank_layer[r];
                peak_layer = peak_layer.max(per_rank_layer[r]);
            }
        }
        let peak_materialized = if remat {
            peak_layer
        } else {
            per_rank_sum.iter().copied().max().unwrap_or(0)
        };

        // Dispatch, all-to-alls and expert compute per (micro-batch, layer, rank).
        let cells = mbs * moe_layers * g;
        let idle = RankTransfer {
            time_s: 0.0,
            holder: 0,
            cause: Cause::Network,
            excess_s: 0.0,
        };
        let mut disp = vec![idle; cells];
        let mut comb = vec![idle; cells];
        let mut expert_s = vec![0.0; cells];
        let mut tokens_received = vec![0u64; g];
        let mut peak_layer_tokens = vec![0u64; g];
        let (mut routed, mut network_bytes) = (0u64, 0.0);
        let all: Vec<usize> = (0..g).collect();
        for mb in 0..mbs {
            for (l, placement) in plan.iter().enumerate() {
                let counts = routing.layer_counts(mb, l);
                routed += counts.iter().map(|&c| c as u64).sum::<u64>();
                ws.dispatch
                    .run(counts, placement, g, self.gpus_per_node, token_bytes);
                ws.bytes_t.clear();
                ws.bytes_t.resize(g * g, 0.0);
                for i in 0..g {
                    for j in 0..g {
                        ws.bytes_t[j * g + i] = ws.dispatch.bytes[i * g + j];
                    }
                }
                let d = all_to_all(self.topo, &all, &ws.dispatch.bytes, &mut ws.a2a);
                network_bytes += d.network_bytes;
                let c = all_to_all(self.topo, &all, &ws.bytes_t, &mut ws.a2a);
                for r in 0..g {
                    let cell = (mb * moe_layers + l) * g + r;
                    disp[cell] = d.per_rank[r];
                    comb[cell] = c.per_rank[r];
                    let local = &ws.dispatch.tokens[r * e..(r + 1) * e];
                    let recv: u64 = local.iter().map(|&x| x as u64).sum();
                    tokens_received[r] += recv;
                    peak_layer_tokens[r] = peak_layer_tokens[r].max(recv);
                    expert_s[cell] = experts_forward_s(s, self.cost, local);
                }
            }
        }

        // Lower into operations.
        let graph = &mut ws.graph;
        graph.reset(g, 2);
        let mut prev: Vec<Option<OpId>> = vec![None; g];
        let mut reshard_bytes = 0.0;
        if it > 0 && self.epoch(it) != self.epoch(it - 1) {
            // Owners changed: move weights and optimizer state from old to new owners.
            let old = self.owners(it - 1);
            let per_expert = s.model.expert_params() as f64
                * (s.model.dtype_bytes as f64 + s.training.optimizer_bytes_per_param);
            let mut bytes = vec![0.0; g * g];
            for (&a, &b) in old.iter().zip(owners.iter()) {
                if a != b {
                    bytes[a as usize * g + b as usize] += per_expert;
                    reshard_bytes += per_expert;
                }
            }
            let x = all_to_all(self.topo, &all, &bytes, &mut ws.a2a);
            for (r, (t, p)) in x.per_rank.iter().zip(prev.iter_mut()).enumerate() {
                let info = OpInfo::transfer(Phase::Reshard, r, t);
                *p = Some(graph.op(r, Stream::Comm, ps(t.time_s), info, &[]));
            }
            let b = graph.barrier(prev.iter().flatten().copied());
            prev.fill(Some(b));
        }
        let layers = s.model.layers;
        let first_moe = s.model.first_dense_layers;
        let dense_op = |graph: &mut IterationGraph,
                        prev: &mut Vec<Option<OpId>>,
                        seconds: f64|
         -> Vec<Option<OpId>> {
            let before = prev.clone();
            for r in 0..g {
                let info = OpInfo {
                    phase: Phase::DenseCompute,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Compute,
                    excess: ps(seconds * (slow[r] - mean_slow).max(0.0)),
                };
                prev[r] = Some(graph.op(
                    r,
                    Stream::Compute,
                    scaled(seconds, slow[r]),
                    info,
                    prev[r].as_slice(),
                ));
            }
            before
        };
        let sparse_ops = |graph: &mut IterationGraph,
                          deps: &[Option<OpId>],
                          out: &SparseOutcome,
                          phase: Phase|
         -> Vec<OpId> {
            let mut ops = Vec::new();
            for (r, (t, dep)) in out.per_rank.iter().zip(deps).enumerate() {
                if t.time_s <= 0.0 {
                    continue;
                }
                let info = OpInfo {
                    phase,
                    rank: r as u32,
                    holder: t.holder as u32,
                    cause: t.cause,
                    excess: ps(t.excess_s),
                };
                ops.push(graph.op(r, Stream::Comm, ps(t.time_s), info, dep.as_slice()));
            }
            ops
        };
        // (dense ops, spAG ops) per overlapped gather, to measure exposure after the run.
        let mut overlaps: Vec<(Vec<OpId>, Vec<OpId>)> = Vec::new();
        let mut sprs_ops: Vec<OpId> = Vec::new();
        for mb in 0..mbs {
            for layer in 0..layers {
                let moe = layer >= first_moe;
                let before = dense_op(graph, &mut prev, self.dense_fwd_s[moe as usize]);
                if moe {
                    let l = layer - first_moe;
                    let mut gather = if mb == 0 || remat {
                        sparse_ops(graph, &before, &spag[l], Phase::Spag)
                    } else {
                        Vec::new()
                    };
                    let dense: Vec<OpId> = prev.iter().flatten().copied().collect();
                    if !gather.is_empty() {
                        overlaps.push((dense.clone(), gather.clone()));
                    }
                    if let Some(extra) = calibrated[l].as_ref().filter(|_| mb == 0 || remat) {
                        // The calibrated copies are known only after the gate: on the critical path.
                        let deps: Vec<Option<OpId>> = prev.clone();
                        gather.extend(sparse_ops(graph, &deps, extra, Phase::Spag));
                    }
                    let cell0 = (mb * moe_layers + l) * g;
                    self.moe_block(
                        graph, &mut prev, &gather, cell0, 1.0, &slow, &disp, &comb, &expert_s,
                        false,
                    );
                }
            }
            dense_op(graph, &mut prev, self.lm_head_s);
            let mut before = dense_op(graph, &mut prev, 2.0 * self.lm_head_s);
            let recompute = if s.training.activation_checkpointing {
                1.0
            } else {
                0.0
            };
            for layer in (0..layers).rev() {
                let moe = layer >= first_moe;
                if moe {
                    let l = layer - first_moe;
                    // Re-gather beside the dense backward that precedes this MoE block.
                    let gather = if remat {
                        let dense: Vec<OpId> = prev.iter().flatten().copied().collect();
                        let ops = sparse_ops(graph, &before, &spag[l], Phase::Spag);
                        if !ops.is_empty() {
                            overlaps.push((dense, ops.clone()));
                        }
                        ops
                    } else {
                        Vec::new()
                    };
                    let cell0 = (mb * moe_layers + l) * g;
                    self.moe_block(
                        graph, &mut prev, &gather, cell0, 2.0, &slow, &disp, &comb, &expert_s, true,
                    );
                    if mb + 1 == mbs || remat {
                        let deps = prev.clone();
                        sprs_ops.extend(sparse_ops(graph, &deps, &sprs[l], Phase::Sprs));
                    }
                }
                before = dense_op(
                    graph,
                    &mut prev,
                    (2.0 + recompute) * self.dense_fwd_s[moe as usize],
                );
            }
        }
        // FSSDP is a training strategy: every iteration ends with the dense all-reduce and the owners' step.
        {
            let b = graph.barrier(
                prev.iter()
                    .flatten()
                    .copied()
                    .chain(sprs_ops.iter().copied()),
            );
            let updated_dense = if s.training.zero_stage >= 1 {
                s.model.dense_params() as f64 / g as f64
            } else {
                s.model.dense_params() as f64
            };
            let owned = sharding::owned_per_rank(&owners, g);
            for r in 0..g {
                let info = OpInfo {
                    phase: Phase::GradSync,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Network,
                    excess: 0,
                };
                let sync = graph.op(r, Stream::Comm, ps(self.grad_sync_s), info, &[b]);
                let secs = optimizer_s(
                    s,
                    self.cost,
                    updated_dense + owned[r] as f64 * s.model.expert_params() as f64,
                );
                let info = OpInfo {
                    phase: Phase::Optimizer,
                    rank: r as u32,
                    holder: r as u32,
                    cause: Cause::Compute,
                    excess: 0,
                };
                prev[r] = Some(graph.op(r, Stream::Compute, scaled(secs, slow[r]), info, &[sync]));
            }
        }
        let outcome = graph.analyse();
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
        let repeat = if remat { 2.0 * mbs as f64 } else { 1.0 };
        let sprs_repeat = if remat { mbs as f64 } else { 1.0 };
        FssdpIteration {
            base: EpIteration {
                outcome,
                tokens_received,
                peak_layer_tokens,
                routed,
                dropped: 0,
                network_bytes,
            },
            materialized,
            peak_materialized_on_rank: peak_materialized,
            spag_bytes: repeat * spag.iter().map(|x| x.bytes).sum::<f64>()
                + calibrated
                    .iter()
                    .flatten()
                    .map(|x| x.bytes * if remat { 2.0 * mbs as f64 } else { 1.0 })
                    .sum::<f64>(),
            sprs_bytes: sprs_repeat * sprs.iter().map(|x| x.bytes).sum::<f64>(),
            exposed_spag_s: to_ms(exposed) * 1e-3,
            calibrated: calibrated_count,
            reshard_bytes,
        }
    }

    /// One MoE block over all ranks (forward, or backward with `backward`): barrier on the ranks' last ops
    /// and `gather` → dispatch → expert compute → barrier → combine.
    #[allow(clippy::too_many_arguments)]
    fn moe_block(
        &self,
        graph: &mut IterationGraph,
        prev: &mut [Option<OpId>],
        gather: &[OpId],
        cell0: usize,
        compute_scale: f64,
        slow: &[f64],
        dispatch: &[RankTransfer],
        combine: &[RankTransfer],
        expert_s: &[f64],
        backward: bool,
    ) {
        let g = self.ranks;
        let (first_phase, second_phase) = if backward {
            (Phase::Combine, Phase::Dispatch)
        } else {
            (Phase::Dispatch, Phase::Combine)
        };
        let b = graph.barrier(prev.iter().flatten().copied().chain(gather.iter().copied()));
        let mut ops = Vec::with_capacity(g);
        for r in 0..g {
            let t = dispatch[cell0 + r];
            let info = OpInfo::transfer(first_phase, r, &t);
            ops.push(graph.op(r, Stream::Comm, ps(t.time_s), info, &[b]));
        }
        let mean = (0..g).map(|r| expert_s[cell0 + r] * slow[r]).sum::<f64>() / g as f64;
        for r in 0..g {
            let secs = expert_s[cell0 + r] * slow[r] * compute_scale;
            let info = OpInfo {
                phase: Phase::ExpertCompute,
                rank: r as u32,
                holder: r as u32,
                cause: Cause::Compute,
                excess: ps((secs - mean * compute_scale).max(0.0)),
            };
            ops[r] = graph.op(r, Stream::Compute, ps(secs), info, &[ops[r]]);
        }
        let b2 = graph.barrier(ops.iter().copied());
        for r in 0..g {
            let t = combine[cell0 + r];
            let info = OpInfo::transfer(second_phase, r, &t);
            prev[r] = Some(graph.op(r, Stream::Comm, ps(t.time_s), info, &[b2]));
        }
    }
}
