//! The pieces every strategy's lowering is built from, written once: per-rank speeds, dense work, a
//! collective stage, an expert-compute stage, gradient synchronisation and the optimizer step.
//!
//! Each piece appends operations to an [`IterationGraph`] and advances `prev`, the last operation of each
//! rank in one chain of work (one chain per overlapped part of a micro-batch). Stages are emitted for every
//! part before the next stage starts (stage-major order), so that with two parts the streams see
//! DeepSeek's two-micro-batch schedule: part A's all-to-all is issued before part B's compute, and runs on
//! the communication stream while B computes.

use crate::engine::{OpId, Stream, ps};
use crate::iteration::{IterationGraph, OpInfo};
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use crate::scenario::Scenario;
use crate::strategy::shared::rank_slowdown;
use std::sync::Arc;

/// Per-rank compute slowdowns of one iteration, and their mean.
#[derive(Debug, Clone)]
pub struct Speeds {
    pub slow: Vec<f64>,
    pub mean: f64,
}

impl Speeds {
    pub fn of(s: &Scenario, iteration: usize, ranks: usize) -> Self {
        let slow: Vec<f64> = (0..ranks).map(|r| rank_slowdown(s, iteration, r)).collect();
        let mean = slow.iter().sum::<f64>() / ranks.max(1) as f64;
        Speeds { slow, mean }
    }
}

/// `seconds` of work (nominal speed) on each of `ranks`' compute streams after its `prev`.
pub fn dense(
    graph: &mut IterationGraph,
    prev: &mut [Option<OpId>],
    ranks: impl IntoIterator<Item = usize>,
    seconds: f64,
    speeds: &Speeds,
    phase: Phase,
) {
    for r in ranks {
        let slow = speeds.slow[r];
        let excess = ps(seconds * (slow - speeds.mean).max(0.0));
        let info = OpInfo::compute(phase, r, excess);
        prev[r] = Some(graph.op(
            r,
            Stream::Compute,
            ps(seconds * slow),
            info,
            prev[r].as_slice(),
        ));
    }
}

/// A collective whose part for rank `spec.parts[i].rank` starts after that rank's `prev` and `extra`.
pub fn collective(
    graph: &mut IterationGraph,
    prev: &mut [Option<OpId>],
    phase: Phase,
    spec: impl Into<Arc<CollectiveSpec>>,
    extra: &[OpId],
) {
    let spec = spec.into();
    let ops = graph.collective(phase, Arc::clone(&spec), |_, p| {
        prev[p.rank as usize]
            .into_iter()
            .chain(extra.iter().copied())
    });
    for (p, op) in spec.parts.iter().zip(ops) {
        prev[p.rank as usize] = Some(op);
    }
}

/// Routed-expert compute on each of `ranks`: `seconds[i]` nominal for `ranks[i]`, times `scale` (2 for the
/// backward pass); the excess is against the group's mean.
pub fn experts(
    graph: &mut IterationGraph,
    prev: &mut [Option<OpId>],
    ranks: &[usize],
    seconds: &[f64],
    scale: f64,
    speeds: &Speeds,
) {
    let mean = ranks
        .iter()
        .zip(seconds)
        .map(|(&r, &t)| t * speeds.slow[r])
        .sum::<f64>()
        / ranks.len().max(1) as f64;
    for (&r, &t) in ranks.iter().zip(seconds) {
        let secs = t * speeds.slow[r] * scale;
        let excess = ps((secs - mean * scale).max(0.0));
        let info = OpInfo::compute(Phase::ExpertCompute, r, excess);
        prev[r] = Some(graph.op(r, Stream::Compute, ps(secs), info, prev[r].as_slice()));
    }
}

/// `prev[g]` becomes an operation after both `prev[g]` and `ready[g]` (a pipeline task's GPUs waiting for
/// their input as well as for their own last operation).
pub fn join(
    graph: &mut IterationGraph,
    ranks: &[usize],
    prev: &mut [Option<OpId>],
    ready: &[Option<OpId>],
) {
    for &g in ranks {
        prev[g] = match (prev[g], ready[g]) {
            (Some(a), Some(b)) => Some(graph.barrier([a, b])),
            (a, b) => a.or(b),
        };
    }
}

/// Per pipeline rank, per model stage it holds: (stage, its gradient synchronisation in issue order).
pub type StageGradSync = Vec<Vec<(usize, Vec<CollectiveSpec>)>>;

/// The gradient synchronisation due after `task`, when `task` is the one after which its model stage's
/// gradients are final (`last_grads`: such tasks and their pipeline ranks): that rank and the stage's specs.
pub fn due_grad_sync<'a>(
    last_grads: &std::collections::HashMap<crate::pipeline::schedule::Task, usize>,
    grad_sync: &'a StageGradSync,
    task: crate::pipeline::schedule::Task,
) -> Option<(usize, &'a [CollectiveSpec])> {
    let &r = last_grads.get(&task)?;
    let (_, specs) = grad_sync[r].iter().find(|(k, _)| *k == task.model_stage)?;
    Some((r, specs))
}

/// A pipeline stage's gradient synchronisation once its gradients are final: `specs` one after another on
/// the stage's GPUs (`gpus`) after `after`, beside whatever the GPUs do next; `synced[g]` becomes each
/// GPU's last synchronisation op (for the optimizer to wait on).
pub fn stage_grad_sync(
    graph: &mut IterationGraph,
    specs: &[CollectiveSpec],
    after: &[Option<OpId>],
    gpus: &[usize],
    synced: &mut [Option<OpId>],
) {
    let mut chain = after.to_vec();
    for spec in specs {
        collective(graph, &mut chain, Phase::GradSync, spec.clone(), &[]);
    }
    for &g in gpus {
        if chain[g] != after[g] {
            synced[g] = chain[g];
        }
    }
}

/// Gradient synchronisation: `specs` run one after another on each participating rank, after all of the
/// rank's chains (`chains[k][rank]`) have finished; returns each rank's last operation.
pub fn grad_sync(
    graph: &mut IterationGraph,
    chains: &[Vec<Option<OpId>>],
    specs: impl IntoIterator<Item = CollectiveSpec>,
) -> Vec<Option<OpId>> {
    let ranks = graph.ranks();
    let mut last: Vec<Option<OpId>> = vec![None; ranks];
    let mut joined: Vec<Vec<OpId>> = (0..ranks)
        .map(|r| chains.iter().filter_map(|c| c[r]).collect())
        .collect();
    for spec in specs {
        let parts: Vec<usize> = spec.parts.iter().map(|p| p.rank as usize).collect();
        let ops = graph.collective(Phase::GradSync, spec, |i, _| joined[parts[i]].clone());
        for (r, op) in parts.into_iter().zip(ops) {
            last[r] = Some(op);
            joined[r] = vec![op];
        }
    }
    for r in 0..ranks {
        if last[r].is_none() {
            last[r] = joined[r].last().copied();
        }
    }
    last
}

/// The optimizer step on every rank after `after[rank]`: `seconds(rank)` nominal.
pub fn optimizer(
    graph: &mut IterationGraph,
    after: &[Option<OpId>],
    seconds: impl Fn(usize) -> f64,
    speeds: &Speeds,
) -> Vec<Option<OpId>> {
    (0..graph.ranks())
        .map(|r| {
            let info = OpInfo::compute(Phase::Optimizer, r, 0);
            Some(graph.op(
                r,
                Stream::Compute,
                ps(seconds(r) * speeds.slow[r]),
                info,
                after[r].as_slice(),
            ))
        })
        .collect()
}
