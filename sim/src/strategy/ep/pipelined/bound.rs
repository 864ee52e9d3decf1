//! A lower bound on a pipelined EP iteration, from its schedule and one micro-batch's balanced routing,
//! without running the engine: what the layout search uses to order layouts and to skip those that cannot
//! beat the best one simulated.
//!
//! Why it bounds (the analytic network, no compute noise, balanced routing — the search's estimate
//! scenario): the lowering issues each task's steps as one dependency chain per GPU (`prev`), so a GPU's
//! task takes at least the sum of its steps' durations (compute at the rank's speed, each collective at
//! least its own part's analytic duration); a DualPipe pair runs two chains on one compute stream, so it
//! takes at least the longer chain and at least both chains' compute. A rank's slots run in order. Before its
//! first task, the forward of the same micro-batch on every earlier model stage must have run; after its
//! last (input) backward, the backward of every earlier model stage must still run; after its last task,
//! the gradient synchronisation of that task's model stage (other stages' may run beside earlier work) and
//! the optimizer step. Every duration is summed in the engine's own integer
//! picoseconds, so the bound and the engine agree exactly on a chain with no waits.

use super::{Lowering, Pipelined, Step, uniform_cells_only};
use crate::engine::{SimTime, ps};
use crate::pipeline::schedule::{Pass, Slot, Task};
use crate::strategy::ep::{EpModel, EpWorkspace};
use moesim_traces::IterationRouting;
use std::collections::HashMap;
use std::rc::Rc;

/// A pipelined iteration's lower bound and its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepBound {
    /// Seconds.
    pub seconds: f64,
    /// Operations the engine would run for the iteration (steps × simulated GPUs), a measure of what
    /// simulating it costs.
    pub operations: usize,
}

/// A task's lanes per GPU of its unit, and the operations it puts in the graph.
type TaskLanes = (Vec<Lane>, usize);

/// One GPU's share of a list of steps: the whole chain, and its compute alone.
#[derive(Default, Clone, Copy)]
struct Lane {
    chain: SimTime,
    compute: SimTime,
}

impl EpModel<'_> {
    /// See the module documentation. `routing` is one micro-batch's balanced routing (for every
    /// micro-batch).
    pub(in crate::strategy::ep) fn step_bound_of(
        &self,
        pipe: &Pipelined,
        routing: &IterationRouting,
    ) -> StepBound {
        let mut ws = EpWorkspace::default();
        let mut lowering = uniform_cells_only(self, pipe, routing, &mut ws);
        let unit = pipe.unit;
        let sched = &pipe.schedule;
        let mut operations = 0usize;
        // Every micro-batch routes alike, so a task's lanes depend on its rank, model stage and pass only.
        let mut memo: HashMap<(usize, usize, Pass), Rc<TaskLanes>> = HashMap::new();
        let mut lanes_of = |lowering: &mut Lowering, r: usize, t: Task| {
            memo.entry((r, t.model_stage, t.pass))
                .or_insert_with(|| {
                    let steps = lowering.steps(r, t);
                    Rc::new((lanes(lowering, r, &steps), steps_operations(&steps, unit)))
                })
                .clone()
        };
        let mut bound: SimTime = 0;
        for r in 0..sched.ranks {
            let mut total = vec![0 as SimTime; unit];
            for slot in &sched.per_rank[r] {
                match *slot {
                    Slot::Single(t) => {
                        let l = lanes_of(&mut lowering, r, t);
                        operations += l.1;
                        for (x, l) in total.iter_mut().zip(&l.0) {
                            *x += l.chain;
                        }
                    }
                    Slot::Overlapped { forward, backward } => {
                        let f = lanes_of(&mut lowering, r, forward);
                        let b = lanes_of(&mut lowering, r, backward);
                        operations += f.1 + b.1;
                        for (x, (a, b)) in total.iter_mut().zip(f.0.iter().zip(&b.0)) {
                            *x += (a.compute + b.compute).max(a.chain).max(b.chain);
                        }
                    }
                }
            }
            // Per model stage, the least chain of one task over its GPUs.
            let mut stage_min = |lowering: &mut Lowering, task: Task| -> SimTime {
                let r = sched.rank_of(task.model_stage, task.mb);
                let l = lanes_of(lowering, r, task);
                l.0.iter().map(|l| l.chain).min().unwrap_or(0)
            };
            let first = sched.per_rank[r].first().and_then(|s| s.tasks().next());
            let last = sched.per_rank[r].last().and_then(|s| s.tasks().last());
            let start: SimTime = first.map_or(0, |t| {
                (0..t.model_stage)
                    .map(|k| stage_min(&mut lowering, Task::new(t.mb, k, Pass::Forward)))
                    .sum()
            });
            let tail: SimTime = last
                .filter(|t| matches!(t.pass, Pass::Backward | Pass::BackwardInput))
                .map_or(0, |t| {
                    (0..t.model_stage)
                        .map(|k| stage_min(&mut lowering, Task::new(t.mb, k, t.pass)))
                        .sum()
                });
            let graph = &lowering.graph_ranks[r];
            let mut sync = vec![0 as SimTime; unit];
            // Only the stage whose last task this is must synchronise after it: the others' buckets may
            // have run beside this rank's later work.
            let last_stage = last.map(|t| t.model_stage);
            for (_, specs) in pipe.grad_sync[r]
                .iter()
                .filter(|(k, _)| Some(*k) == last_stage)
            {
                for spec in specs {
                    add_parts(spec, graph[0], &mut sync);
                }
            }
            for (j, (x, sync)) in total.iter().zip(&sync).enumerate() {
                let g = graph[j];
                let sync = sync + ps(pipe.optimizer_s[r] * lowering.speeds.slow[g]);
                bound = bound.max(start + x + tail.max(sync));
            }
        }
        StepBound {
            seconds: bound as f64 * 1e-12,
            operations,
        }
    }
}

/// Per GPU of pipeline rank `r`'s unit: its chain and compute through `steps`, as the engine times them.
fn lanes(lowering: &Lowering, r: usize, steps: &[Step]) -> Vec<Lane> {
    let graph = &lowering.graph_ranks[r];
    let slow = &lowering.speeds.slow;
    let mut out = vec![Lane::default(); graph.len()];
    let mut comm = vec![0 as SimTime; graph.len()];
    for step in steps {
        match step {
            Step::Compute(secs, _) => {
                for (lane, &g) in out.iter_mut().zip(graph) {
                    lane.compute += ps(secs * slow[g]);
                }
            }
            Step::Experts(secs, scale) => {
                for ((lane, &g), &t) in out.iter_mut().zip(graph).zip(secs) {
                    lane.compute += ps(t * slow[g] * scale);
                }
            }
            Step::Collectives(specs, _) => {
                for spec in specs {
                    add_parts(spec, graph[0], &mut comm);
                }
            }
        }
    }
    for (lane, c) in out.iter_mut().zip(comm) {
        lane.chain = lane.compute + c;
    }
    out
}

/// Adds each part's analytic duration of a collective to its graph rank's entry of `out` (the unit's
/// graph ranks start at `first`; parts of other ranks are ignored).
/// A rank with several parts waits for the longest.
fn add_parts(spec: &crate::network::CollectiveSpec, first: usize, out: &mut [SimTime]) {
    let mut longest = vec![0 as SimTime; out.len()];
    for p in &spec.parts {
        if let Some(x) = (p.rank as usize)
            .checked_sub(first)
            .and_then(|j| longest.get_mut(j))
        {
            *x = (*x).max(p.analytic);
        }
    }
    for (o, l) in out.iter_mut().zip(longest) {
        *o += l;
    }
}

/// Operations `steps` put in the graph on a unit of `unit` GPUs (a collective: one per part).
fn steps_operations(steps: &[Step], unit: usize) -> usize {
    steps
        .iter()
        .map(|s| match s {
            Step::Compute(..) | Step::Experts(..) => unit,
            Step::Collectives(specs, _) => specs.iter().map(|c| c.parts.len()).sum(),
        })
        .sum()
}
