//! Emitting a [`Schedule`] onto an [`IterationGraph`]: every slot in one global order, stages connected by
//! point-to-point sends.
//!
//! Why an order matters at all: the engine runs each stream in issue order (as CUDA does), and a send is a
//! collective whose parts sit on a stream of both the sender and the receiver. As PyTorch gives each NCCL
//! point-to-point peer pair its own stream, a GPU has one stream per pipeline neighbour
//! (`Stream::PipePrev`, `Stream::PipeNext`): its sends to and receives from one neighbour are interleaved
//! there in the order they were issued, and transfers with the two neighbours do not wait for each other.
//! Issuing a receive long before its data exists would hold up the same peer's sends behind it. So slots
//! are issued in the order they would *finish* under estimated durations (a list schedule, like Dijkstra
//! by finish time), which is always a valid dependency order and, when the estimates are right, puts every
//! stream in the order its transfers happen. Estimates come from [`StageLowering::estimate_s`], or default
//! to F = 1, B = 2, B-input = W = 1 with sends almost free.

use super::schedule::{Pass, Schedule, Slot, Task};
use crate::collective::{AllToAllScratch, Collectives, Transfer};
use crate::engine::{OpId, Stream};
use crate::iteration::IterationGraph;
use crate::network::CollectiveSpec;
use crate::phase::Phase;
use std::collections::HashMap;

/// What a strategy supplies so a schedule can be emitted onto an IterationGraph.
pub trait StageLowering {
    /// Graph ranks (GPUs) of pipeline rank `rank` (all pipeline ranks have the same count; index i of one
    /// rank's GPUs sends to index i of the next).
    fn gpus(&self, rank: usize) -> &[usize];

    /// The topology GPU that graph rank `graph_rank` simulates (identity unless the graph holds a subset
    /// of the cluster, as a representative unit per stage).
    fn gpu_of(&self, graph_rank: usize) -> usize {
        graph_rank
    }

    /// A collective priced on topology GPUs, renumbered to graph ranks (see [`StageLowering::gpu_of`]).
    fn to_graph(&self, spec: CollectiveSpec) -> CollectiveSpec {
        spec
    }

    /// Emits `task` on the GPUs of pipeline rank `rank`. Each GPU's first op must follow `prev[gpu]` and,
    /// where present, `ready[gpu]` (the receive of its input); advances `prev[gpu]` to the task's last op.
    /// `prev` and `ready` are indexed by graph rank.
    fn task(
        &mut self,
        graph: &mut IterationGraph,
        rank: usize,
        task: Task,
        prev: &mut [Option<OpId>],
        ready: &[Option<OpId>],
    );

    /// DualPipe's overlapped pair; the default emits the forward, then the backward.
    #[allow(clippy::too_many_arguments)]
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
        self.task(graph, rank, forward, prev, ready_forward);
        self.task(graph, rank, backward, prev, ready_backward);
    }

    /// Bytes one GPU sends to its peer GPU on the next pipeline rank for `task`'s output (activations
    /// after a forward, input gradients after a backward / backward-input).
    fn send_bytes(&self, task: Task) -> f64;

    /// Estimated seconds of `task` on pipeline rank `rank`, used only to choose the issue order (see the
    /// module doc). When every task has an estimate, sends are estimated by their analytic price too;
    /// otherwise uniform defaults (F 1, B 2, B-input 1, W 1, sends almost free) order the slots.
    fn estimate_s(&self, rank: usize, task: Task) -> Option<f64> {
        let _ = (rank, task);
        None
    }
}

/// Default relative durations when the lowering gives no estimates: B = 2F, split evenly into B-input and W.
fn default_weight(pass: Pass) -> f64 {
    match pass {
        Pass::Forward | Pass::BackwardInput | Pass::BackwardWeight => 1.0,
        Pass::Backward => 2.0,
    }
}

/// Without estimates, a send counts as this fraction of a forward: enough to break ties the way real
/// sends do (a consumer on another rank starts a little after its producer finishes), too little to
/// reorder anything else.
const DEFAULT_HOP: f64 = 1e-6;

/// What a task's input is: the previous stage's activations or the next stage's gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Edge {
    Activation,
    Gradient,
}

/// The cross-stage input a task consumes, as (micro-batch, consuming model stage, kind), if any.
fn input_of(task: Task, stages: usize) -> Option<(usize, usize, Edge)> {
    match task.pass {
        Pass::Forward if task.model_stage > 0 => {
            Some((task.mb, task.model_stage, Edge::Activation))
        }
        Pass::Backward | Pass::BackwardInput if task.model_stage + 1 < stages => {
            Some((task.mb, task.model_stage, Edge::Gradient))
        }
        _ => None,
    }
}

/// The input `task`'s output feeds, as (micro-batch, consuming model stage, kind), if any.
fn output_of(task: Task, stages: usize) -> Option<(usize, usize, Edge)> {
    match task.pass {
        Pass::Forward if task.model_stage + 1 < stages => {
            Some((task.mb, task.model_stage + 1, Edge::Activation))
        }
        Pass::Backward | Pass::BackwardInput if task.model_stage > 0 => {
            Some((task.mb, task.model_stage - 1, Edge::Gradient))
        }
        _ => None,
    }
}

/// Tasks on the same pipeline rank that `task` needs first (they must come earlier in that rank's order).
fn local_needs(task: Task) -> Option<Task> {
    match task.pass {
        Pass::Forward => None,
        Pass::Backward | Pass::BackwardInput => Some(Task {
            pass: Pass::Forward,
            ..task
        }),
        Pass::BackwardWeight => Some(Task {
            pass: Pass::BackwardInput,
            ..task
        }),
    }
}

/// Emits every slot of `schedule` in one global order that respects every cross-stage dependency
/// (forward of stage k+1 after forward of k's send arrives; backward of stage k after backward of k+1; the
/// last stage's backward after its own forward; BackwardWeight after its BackwardInput), rank order kept
/// inside each pipeline rank. Sends are point-to-point `Collectives` transfers (each GPU i of the sending
/// stage to GPU i of the receiving stage, one collective per task output) on each side's stream for that
/// peer (`Stream::PipeNext` / `Stream::PipePrev`), phase
/// `Phase::PipelineSend`, issued right after the producing task. `prev` is per graph rank (the chain to
/// continue); returns nothing, `prev` is advanced. Errors (a schedule that cannot make progress) are a
/// bug: return Err with a message.
///
/// A receive's part has no dependency of its own: it waits on the receiver's stream for that peer for its
/// sender (a posted receive). The sender's part follows the producing task's last op on its GPU.
pub fn emit(
    graph: &mut IterationGraph,
    schedule: &Schedule,
    comms: &Collectives,
    scratch: &mut AllToAllScratch,
    lowering: &mut impl StageLowering,
    prev: &mut [Option<OpId>],
) -> Result<(), String> {
    let p = schedule.ranks;
    let stages = schedule.model_stages;
    let n = graph.ranks();
    if prev.len() < n {
        return Err(format!(
            "prev has {} entries for {n} graph ranks",
            prev.len()
        ));
    }
    if schedule.per_rank.len() != p {
        return Err(format!(
            "the schedule lists {} ranks, not {p}",
            schedule.per_rank.len()
        ));
    }
    let width = lowering.gpus(0).len();
    for r in 0..p {
        let gpus = lowering.gpus(r);
        if gpus.len() != width {
            return Err(format!(
                "pipeline rank {r} has {} GPUs, rank 0 has {width}: every stage needs the same count",
                gpus.len()
            ));
        }
        if let Some(&g) = gpus.iter().find(|&&g| g >= n) {
            return Err(format!("pipeline rank {r} lists GPU {g} of {n}"));
        }
        for q in 0..r {
            if let Some(g) = gpus.iter().find(|g| lowering.gpus(q).contains(g)) {
                return Err(format!("GPU {g} is in pipeline ranks {q} and {r}"));
            }
        }
    }
    // Where each task runs: (pipeline rank, slot index).
    let mut at: HashMap<Task, (usize, usize)> = HashMap::new();
    for (r, i, t) in schedule.tasks() {
        if at.insert(t, (r, i)).is_some() {
            return Err(format!("{t:?} is scheduled twice"));
        }
    }
    for (&t, &(r, i)) in &at {
        if let Some(need) = local_needs(t) {
            // The last stage's backward needs its own forward; a forward on another rank is a cross-stage
            // input handled by the send, so only same-rank order is checked here.
            match at.get(&need) {
                Some(&(rn, j)) if rn == r && j > i => {
                    return Err(format!("{t:?} comes before {need:?} on pipeline rank {r}"));
                }
                Some(_) => {}
                None => return Err(format!("{t:?} has no {need:?} in the schedule")),
            }
        }
    }
    // The producer of each cross-stage input.
    let mut producer: HashMap<(usize, usize, Edge), Task> = HashMap::new();
    for &t in at.keys() {
        if let Some(key) = output_of(t, stages) {
            producer.insert(key, t);
        }
    }

    // Each send's collective, priced once, and its analytic seconds, keyed by the input it carries.
    let mut sends: HashMap<(usize, usize, Edge), CollectiveSpec> = HashMap::new();
    let mut hops: HashMap<(usize, usize, Edge), f64> = HashMap::new();
    for (r, _, t) in schedule.tasks() {
        let Some(key) = output_of(t, stages) else {
            continue;
        };
        let to = schedule.rank_of(key.1, key.0);
        if to == r {
            continue;
        }
        let bytes = lowering.send_bytes(t);
        // Priced on the GPUs the graph ranks simulate, then renumbered to graph ranks.
        let gpus = |rank: usize| -> Vec<usize> {
            lowering
                .gpus(rank)
                .iter()
                .map(|&g| lowering.gpu_of(g))
                .collect()
        };
        let (src, dst) = (gpus(r), gpus(to));
        let transfers: Vec<Transfer> = src
            .iter()
            .zip(&dst)
            .map(|(&s, &d)| Transfer {
                src: s,
                dst: d,
                bytes,
                messages: 1.0,
            })
            .collect();
        let ranks: Vec<usize> = src.iter().chain(&dst).copied().collect();
        let (spec, priced) = comms.transfers(&ranks, &transfers, Stream::PipeNext, scratch);
        let mut spec = lowering.to_graph(spec);
        // Each side on its stream for this peer: the sender's towards `to`, the receiver's towards `r`.
        let (towards_to, towards_r) = if to > r {
            (Stream::PipeNext, Stream::PipePrev)
        } else {
            (Stream::PipePrev, Stream::PipeNext)
        };
        let senders = lowering.gpus(r);
        for part in &mut spec.parts {
            part.stream = if senders.contains(&(part.rank as usize)) {
                towards_to
            } else {
                towards_r
            };
        }
        let time = priced.per_rank.iter().map(|t| t.time_s).fold(0.0, f64::max);
        sends.insert(key, spec);
        hops.insert(key, time);
    }
    // Estimated duration of every slot, for the issue order only.
    let seconds = schedule
        .tasks()
        .all(|(r, _, t)| lowering.estimate_s(r, t).is_some());
    let slot_cost: Vec<Vec<f64>> = (0..p)
        .map(|r| {
            schedule.per_rank[r]
                .iter()
                .map(|s| {
                    s.tasks()
                        .map(|t| match seconds {
                            true => lowering.estimate_s(r, t).unwrap_or(0.0),
                            false => default_weight(t.pass),
                        })
                        .sum()
                })
                .collect()
        })
        .collect();

    // Virtual finish time of every emitted task's output, and where it ran.
    let mut done: HashMap<Task, (f64, usize)> = HashMap::new();
    let mut next = vec![0usize; p];
    let mut free = vec![0.0f64; p];
    // Receives already issued, per consuming input: the receiver part on each graph rank.
    let mut received: HashMap<(usize, usize, Edge), Vec<Option<OpId>>> = HashMap::new();
    let total: usize = schedule.per_rank.iter().map(Vec::len).sum();
    for _ in 0..total {
        // The head slot of each rank whose inputs have all been issued; pick the earliest to finish.
        let mut best: Option<(f64, usize)> = None;
        for r in 0..p {
            let Some(slot) = schedule.per_rank[r].get(next[r]) else {
                continue;
            };
            let mut start = free[r];
            let mut ready = true;
            for t in slot.tasks() {
                if let Some(key) = input_of(t, stages) {
                    let Some(src) = producer.get(&key) else {
                        return Err(format!("nothing produces the input of {t:?}"));
                    };
                    match done.get(src) {
                        Some(&(finish, rank)) => {
                            let hop = match (rank == r, seconds) {
                                (true, _) => 0.0,
                                (false, true) => hops.get(&key).copied().unwrap_or(0.0),
                                (false, false) => DEFAULT_HOP,
                            };
                            start = start.max(finish + hop);
                        }
                        None => ready = false,
                    }
                }
            }
            if !ready {
                continue;
            }
            let finish = start + slot_cost[r][next[r]];
            if best.is_none_or(|(f, _)| finish < f) {
                best = Some((finish, r));
            }
        }
        let Some((finish, r)) = best else {
            let stuck: Vec<String> = (0..p)
                .filter_map(|r| {
                    schedule.per_rank[r]
                        .get(next[r])
                        .map(|s| format!("rank {r} at {s:?}"))
                })
                .collect();
            return Err(format!(
                "the {} schedule cannot make progress: {}",
                schedule.kind.name(),
                stuck.join(", ")
            ));
        };
        let slot = schedule.per_rank[r][next[r]];
        next[r] += 1;
        free[r] = finish;
        // Each input is consumed once: its receives leave the table.
        let ready_of = |received: &mut HashMap<_, Vec<Option<OpId>>>, t: Task| {
            input_of(t, stages)
                .and_then(|key| received.remove(&key))
                .unwrap_or_else(|| vec![None; n])
        };
        match slot {
            Slot::Single(t) => {
                let ready = ready_of(&mut received, t);
                lowering.task(graph, r, t, prev, &ready);
            }
            Slot::Overlapped { forward, backward } => {
                let rf = ready_of(&mut received, forward);
                let rb = ready_of(&mut received, backward);
                lowering.overlapped(graph, r, forward, backward, prev, &rf, &rb);
            }
        }
        // Outputs leave once the slot is done (an overlapped pair's both after the pair, as DualPipe sends
        // them after `_forward_backward_compute_chunk`).
        for t in slot.tasks() {
            done.insert(t, (finish, r));
            let Some(key) = output_of(t, stages) else {
                continue;
            };
            let Some(spec) = sends.remove(&key) else {
                continue;
            };
            let ranks: Vec<usize> = spec.parts.iter().map(|part| part.rank as usize).collect();
            let ops = graph.collective(Phase::PipelineSend, spec, |i, part| {
                if i < width {
                    prev[part.rank as usize]
                } else {
                    None
                }
            });
            let mut recv = vec![None; n];
            for (&g, op) in ranks[width..].iter().zip(ops.skip(width)) {
                recv[g] = Some(op);
            }
            received.insert(key, recv);
        }
    }
    Ok(())
}
