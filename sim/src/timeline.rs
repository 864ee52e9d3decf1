//! Per-operation timelines of chosen iterations: what ran where and when, for timeline export
//! (Chrome/Perfetto) and for the per-iteration, per-rank views that [`crate::result::StrategyResult`]
//! aggregates away.
//!
//! The runner keeps only aggregates. [`iteration_timelines`] re-simulates the chosen iterations of one
//! strategy exactly as the runner does (same model, routing and seed-derived noise, so the same operation
//! graph), and returns every operation with its rank, stream, phase, start and finish. Each iteration's
//! times start at zero, as in the runner; a caller that lays iterations end to end offsets them by the
//! preceding step times. Barriers (zero-length synchronisation points on no stream) are left out.

use crate::collective::Cause;
use crate::engine::{OpId, SimTime};
use crate::iteration::Stream;
use crate::phase::Phase;
use crate::scenario::file::StrategyKind;
use crate::scenario::{Scenario, Strategy};
use crate::strategy::ep::{EpModel, EpWorkspace};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::RoutingSource;
use rayon::prelude::*;
use std::ops::Range;

/// One operation as it ran.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedOp {
    pub rank: usize,
    pub stream: Stream,
    pub phase: Phase,
    pub start: SimTime,
    pub finish: SimTime,
}

/// One simulated iteration, operation by operation.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationTimeline {
    pub iteration: usize,
    /// The iteration's step time (makespan), as the runner reports it.
    pub step: SimTime,
    /// Operations in the order the strategy added them.
    pub ops: Vec<TimedOp>,
    /// Per rank: compute-stream busy time, as the runner counts it.
    pub busy: Vec<SimTime>,
    /// Per rank: tokens its experts received, summed over layers and micro-batches.
    pub tokens_received: Vec<u64>,
    /// Per rank: the most tokens its experts received in one MoE layer (what its activations must hold).
    pub peak_layer_tokens: Vec<u64>,
    /// The iteration's straggler and why, if it was not balanced.
    pub straggler: Option<(usize, Cause)>,
}

/// Why a timeline cannot be produced.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimelineError {
    #[error("iterations {start}..{end} are outside the workload's 0..{available}")]
    OutOfRange {
        start: usize,
        end: usize,
        available: usize,
    },
    #[error("strategy `{0}`: timelines are available for EP strategies only so far")]
    Unsupported(String),
}

/// The stream's name in exported timelines.
pub fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Compute => "compute",
        Stream::Comm => "comm",
        Stream::Copy => "copy",
    }
}

/// Re-simulates `iterations` of `strategy` and returns their operations; iterations run in parallel and
/// come back in order. `cost` defaults to the cluster's datasheet roofline, as in the runner.
pub fn iteration_timelines(
    s: &Scenario,
    strategy: &Strategy,
    routing: &dyn RoutingSource,
    cost: Option<&dyn CostModel>,
    iterations: Range<usize>,
) -> Result<Vec<IterationTimeline>, TimelineError> {
    let available = s.workload.iterations.min(routing.iterations());
    if iterations.start >= iterations.end || iterations.end > available {
        return Err(TimelineError::OutOfRange {
            start: iterations.start,
            end: iterations.end,
            available,
        });
    }
    if !matches!(strategy.kind, StrategyKind::Ep | StrategyKind::EpReplicated) {
        return Err(TimelineError::Unsupported(strategy.name.clone()));
    }
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost = cost.unwrap_or(&roofline);
    let model = EpModel::new(s, strategy, &topo, cost, routing);
    let ranks = s.cluster.gpus();
    Ok(iterations
        .into_par_iter()
        .map_init(EpWorkspace::default, |ws, it| {
            let run = model.simulate_iteration(it, ws);
            let graph = ws.graph();
            let ops = (0..graph.info.len() as OpId)
                .filter_map(|op| {
                    let resource = graph.engine.resource_of(op)? as usize;
                    let stream = match resource / ranks {
                        0 => Stream::Compute,
                        1 => Stream::Comm,
                        _ => Stream::Copy,
                    };
                    let t = graph.engine.timing(op);
                    Some(TimedOp {
                        rank: resource % ranks,
                        stream,
                        phase: graph.info[op as usize].phase,
                        start: t.start,
                        finish: t.finish,
                    })
                })
                .collect();
            IterationTimeline {
                iteration: it,
                step: run.outcome.step,
                ops,
                busy: run.outcome.busy,
                tokens_received: run.tokens_received,
                peak_layer_tokens: run.peak_layer_tokens,
                straggler: run.outcome.straggler,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::to_ms;
    use crate::runner::{RunOptions, simulate_scenario, synthetic_routing};
    use crate::scenario::parse_scenario;

    const SCENARIO: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 3
seq_len = 512
[cluster]
preset = "dgx-h100"
compute_noise_cv = 0.05
[workload]
iterations = 4
skew = { distribution = "zipf", s = 1.0 }
[[strategy]]
name = "ep8"
kind = "ep"
"#;

    #[test]
    fn timelines_reproduce_the_runners_iterations() {
        let s = parse_scenario("t.toml", SCENARIO, &[]).unwrap();
        let routing = synthetic_routing(&s);
        let report = simulate_scenario(&s, &routing, None, RunOptions::default());
        let r = &report.results[0];
        let tl = iteration_timelines(&s, &s.strategies[0], &routing, None, 0..4).unwrap();
        assert_eq!(tl.len(), 4);
        for (t, summary) in tl.iter().zip(&r.per_iteration) {
            assert_eq!(to_ms(t.step), summary.step_ms);
            assert_eq!(t.straggler.map(|x| x.0), summary.critical_rank);
            let last = t.ops.iter().map(|o| o.finish).max().unwrap();
            assert_eq!(last, t.step);
            for rank in 0..s.cluster.gpus() {
                let compute: SimTime = t
                    .ops
                    .iter()
                    .filter(|o| o.rank == rank && o.stream == Stream::Compute)
                    .map(|o| o.finish - o.start)
                    .sum();
                assert_eq!(compute, t.busy[rank]);
            }
        }
        for (rank, summary) in r.per_rank.iter().enumerate() {
            let mean = tl.iter().map(|t| to_ms(t.busy[rank])).sum::<f64>() / 4.0;
            assert!((mean - summary.busy_ms).abs() < 1e-9 * summary.busy_ms.max(1.0));
        }
    }

    #[test]
    fn operations_on_one_stream_never_overlap() {
        let s = parse_scenario("t.toml", SCENARIO, &[]).unwrap();
        let routing = synthetic_routing(&s);
        let tl = iteration_timelines(&s, &s.strategies[0], &routing, None, 1..2).unwrap();
        let mut ops = tl[0].ops.clone();
        ops.sort_by_key(|o| (o.rank, o.stream as u8, o.start, o.finish));
        for w in ops.windows(2) {
            if (w[0].rank, w[0].stream) == (w[1].rank, w[1].stream) {
                assert!(w[0].finish <= w[1].start, "{:?} overlaps {:?}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn rejects_iterations_outside_the_workload() {
        let s = parse_scenario("t.toml", SCENARIO, &[]).unwrap();
        let routing = synthetic_routing(&s);
        let err = iteration_timelines(&s, &s.strategies[0], &routing, None, 2..9).unwrap_err();
        assert_eq!(
            err,
            TimelineError::OutOfRange {
                start: 2,
                end: 9,
                available: 4
            }
        );
        assert!(iteration_timelines(&s, &s.strategies[0], &routing, None, 3..3).is_err());
    }
}
