//! Per-operation timelines of chosen iterations: what ran where and when, for timeline export
//! (Chrome/Perfetto) and for the per-iteration, per-rank views that [`crate::result::StrategyResult`]
//! aggregates away.
//!
//! The runner keeps only aggregates. [`iteration_timelines`] re-simulates the chosen iterations of one
//! strategy through the same [`StrategyModel`] the runner uses (same model, routing and seed-derived
//! noise, so the same operation graph) and returns every operation the engine executed with its rank,
//! stream, phase, start and finish, and under the flow backend every flow with the links it crossed. Each
//! iteration's times start at zero, as in the runner; a caller that lays iterations end to end offsets them
//! by the preceding step times. Barriers (zero-length synchronisation points on no stream) are left out.

use crate::collective::Cause;
pub use crate::engine::Stream;
use crate::engine::{OpId, SimTime};
use crate::network::FlowRecord;
use crate::phase::Phase;
use crate::scenario::{Scenario, Strategy, StrategyParams};
use crate::strategy::ep::EpModel;
use crate::strategy::fssdp::FssdpModel;
use crate::strategy::model::StrategyModel;
use crate::strategy::offload::OffloadModel;
use crate::strategy::offload::tokens::TokenRouting;
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

/// One flow on one link, as it ran (flow backend).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkUse {
    /// The link's id and its name (`gpu3→nvswitch0`, `leaf2→spine`, ...).
    pub link: u32,
    pub name: String,
    pub src: usize,
    pub dst: usize,
    pub bytes: f64,
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
    /// Flow backend: every flow on every link it crossed (empty under the analytic backend).
    pub links: Vec<LinkUse>,
    /// Per rank: compute-stream busy time, as the runner counts it.
    pub busy: Vec<SimTime>,
    /// Per rank: tokens its experts received, summed over layers and micro-batches.
    pub tokens_received: Vec<u64>,
    /// Per rank: the most tokens its experts received in one MoE layer (one layer's working set).
    pub peak_layer_tokens: Vec<u64>,
    /// Per rank: the most tokens its experts received over all MoE layers of one micro-batch.
    pub activation_tokens: Vec<u64>,
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
}

/// The stream's name in exported timelines.
pub fn stream_name(stream: Stream) -> &'static str {
    stream.name()
}

/// Re-simulates `iterations` of `strategy` and returns their operations; iterations run in parallel and
/// come back in order. `cost` defaults to the cluster's datasheet roofline, as in the runner. Offloading
/// strategies replay the scenario's synthetic per-token routing.
pub fn iteration_timelines(
    s: &Scenario,
    strategy: &Strategy,
    routing: &dyn RoutingSource,
    cost: Option<&dyn CostModel>,
    iterations: Range<usize>,
) -> Result<Vec<IterationTimeline>, TimelineError> {
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost = cost.unwrap_or(&roofline);
    match strategy.params() {
        StrategyParams::Ep | StrategyParams::EpReplicated(_) => {
            let model = EpModel::new(s, strategy, &topo, cost, routing);
            timelines(&model, &topo, iterations)
        }
        StrategyParams::Fssdp(_) => {
            let model = FssdpModel::new(s, strategy, &topo, cost, routing);
            timelines(&model, &topo, iterations)
        }
        StrategyParams::Offload(knobs) => {
            let tokens = TokenRouting::synthetic(s);
            let model = OffloadModel::new(s, knobs, cost, &tokens)
                .unwrap_or_else(|e| panic!("expert cache replay: {e}"));
            timelines(&model, &topo, iterations)
        }
    }
}

/// Timelines of `iterations` of any strategy model.
pub fn timelines<M: StrategyModel>(
    model: &M,
    topo: &Topology,
    iterations: Range<usize>,
) -> Result<Vec<IterationTimeline>, TimelineError> {
    let available = model.iterations();
    if iterations.start >= iterations.end || iterations.end > available {
        return Err(TimelineError::OutOfRange {
            start: iterations.start,
            end: iterations.end,
            available,
        });
    }
    Ok(iterations
        .into_par_iter()
        .map_init(M::Workspace::default, |ws, it| {
            M::graph(ws).record_flows(true);
            let run = model.simulate(it, ws);
            let rec = M::record(&run);
            let graph = M::graph(ws);
            let ops = (0..graph.info.len() as OpId)
                .filter_map(|op| {
                    let r = graph.engine.resource_of(op)?;
                    let t = graph.engine.timing(op);
                    Some(TimedOp {
                        rank: r.rank as usize,
                        stream: r.stream,
                        phase: graph.info[op as usize].phase,
                        start: t.start,
                        finish: t.finish,
                    })
                })
                .collect();
            let links = link_uses(topo, graph.flow_records());
            IterationTimeline {
                iteration: it,
                step: rec.outcome.step,
                ops,
                links,
                busy: rec.outcome.busy.clone(),
                tokens_received: rec.tokens_received.clone(),
                peak_layer_tokens: rec.peak_layer_tokens.clone(),
                activation_tokens: rec.activation_tokens.clone(),
                straggler: rec.outcome.straggler,
            }
        })
        .collect())
}

/// Every flow on every link of its route.
fn link_uses(topo: &Topology, flows: &[FlowRecord]) -> Vec<LinkUse> {
    let mut out = Vec::new();
    for f in flows {
        for &l in topo.route(f.src as usize, f.dst as usize) {
            let link = &topo.links[l as usize];
            out.push(LinkUse {
                link: l,
                name: format!("{}→{}", device_name(link.from), device_name(link.to)),
                src: f.src as usize,
                dst: f.dst as usize,
                bytes: f.bytes,
                start: f.start,
                finish: f.drained,
            });
        }
    }
    out
}

fn device_name(d: crate::topology::Device) -> String {
    use crate::topology::Device;
    match d {
        Device::Gpu(g) => format!("gpu{g}"),
        Device::NodeSwitch(n) => format!("switch{n}"),
        Device::Leaf(r) => format!("leaf{r}"),
        Device::Spine => "spine".into(),
        Device::IdealSwitch => "switch".into(),
    }
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
