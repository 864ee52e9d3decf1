//! One iteration as an operation graph, and what its run tells: step time, the critical path broken into
//! phases, the straggler, per-rank busy time, and communication exposed on (or hidden from) the step.
//!
//! Strategies lower an iteration into an [`IterationGraph`] (operations tagged with [`OpInfo`]); the graph
//! runs on the [`Engine`] with the scenario's network backend and [`IterationGraph::analyse`] walks the
//! critical path.
//!
//! Straggler attribution: every operation carries an *excess*, how much longer it took than the average
//! rank's corresponding operation (its own compute, or the busiest link it waited on versus the mean port).
//! Along the critical path the excess is summed per holding rank; the iteration's straggler is the rank with
//! the largest sum, and its cause the kind of excess that dominated. A balanced iteration has no straggler.
//!
//! Exposed and hidden communication: per rank, the time its communication streams (collectives, copies)
//! were busy, split into the part during which its compute stream was also busy (hidden) and the rest
//! (exposed); the outcome reports the mean over ranks.

use crate::collective::Cause;
pub use crate::engine::Stream;
use crate::engine::{Engine, OpId, Resource, SimTime};
use crate::network::{
    AnalyticNetwork, CollectiveSpec, FlowNetwork, FlowRecord, NetworkKind, PartSpec,
};
use crate::phase::Phase;
use crate::scenario::cluster::Cluster;
use crate::topology::Topology;
use std::ops::Range;
use std::sync::Arc;

/// What an operation is, for analysis.
#[derive(Debug, Clone, Copy)]
pub struct OpInfo {
    pub phase: Phase,
    /// The rank that executes it (`u32::MAX` for barriers).
    pub rank: u32,
    /// The rank held responsible for its excess.
    pub holder: u32,
    pub cause: Cause,
    /// Time beyond the average rank's corresponding operation.
    pub excess: SimTime,
}

impl OpInfo {
    /// Work on `rank` held by itself.
    pub fn compute(phase: Phase, rank: usize, excess: SimTime) -> Self {
        OpInfo {
            phase,
            rank: rank as u32,
            holder: rank as u32,
            cause: Cause::Compute,
            excess,
        }
    }

    pub fn barrier() -> Self {
        OpInfo {
            phase: Phase::Barrier,
            rank: u32::MAX,
            holder: u32::MAX,
            cause: Cause::Compute,
            excess: 0,
        }
    }
}

/// An iteration's operations, built by a strategy.
#[derive(Debug, Default)]
pub struct IterationGraph {
    pub engine: Engine,
    pub info: Vec<OpInfo>,
    ranks: usize,
    network: NetworkKind,
    record_flows: bool,
    flow_records: Vec<FlowRecord>,
    flows: u64,
    network_bytes: f64,
    phase_bytes: [f64; Phase::COUNT],
    deps: Vec<OpId>,
}

/// The result of one simulated iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationOutcome {
    pub step: SimTime,
    pub breakdown: [SimTime; Phase::COUNT],
    pub straggler: Option<(usize, Cause)>,
    pub events: u64,
    /// Flows the flow backend ran (0 under the analytic backend).
    pub flows: u64,
    /// Per rank: time its compute stream was busy.
    pub busy: Vec<SimTime>,
    /// Mean over ranks: communication time not overlapped by the rank's compute.
    pub comm_exposed: SimTime,
    /// Mean over ranks: communication time overlapped by the rank's compute.
    pub comm_hidden: SimTime,
    /// Bytes that left their GPU in the iteration's collectives.
    pub network_bytes: f64,
    /// The same bytes by the phase of their collective.
    pub phase_bytes: [f64; Phase::COUNT],
}

impl IterationGraph {
    /// Empties the graph for an iteration on the cluster's `ranks` ranks: priced by its network backend,
    /// communication kernels taking its `comm_sm_fraction` of the SMs while they run, its streams'
    /// priorities.
    pub fn reset(&mut self, ranks: usize, cluster: &Cluster) {
        self.reset_with(ranks, cluster.network, cluster.comm_sm_fraction);
        self.engine.set_stream_priorities(cluster.stream_priority);
    }

    /// [`IterationGraph::reset`] with an explicit backend and SM share (priorities as last set).
    pub fn reset_with(&mut self, ranks: usize, network: NetworkKind, comm_sm_fraction: f64) {
        self.engine.reset(ranks, comm_sm_fraction);
        self.info.clear();
        self.ranks = ranks;
        self.network = network;
        self.flow_records.clear();
        self.network_bytes = 0.0;
        self.phase_bytes = [0.0; Phase::COUNT];
    }

    /// Keep every flow's record (flow backend) for per-link timelines.
    pub fn record_flows(&mut self, on: bool) {
        self.record_flows = on;
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    pub fn network(&self) -> NetworkKind {
        self.network
    }

    /// Flows of the last run, if recorded.
    pub fn flow_records(&self) -> &[FlowRecord] {
        &self.flow_records
    }

    /// Adds work of `duration` on `rank`'s `stream` after `deps`.
    pub fn op(
        &mut self,
        rank: usize,
        stream: Stream,
        duration: SimTime,
        info: OpInfo,
        deps: &[OpId],
    ) -> OpId {
        let id = self.engine.add_work(Resource::new(rank, stream), duration);
        self.info.push(info);
        for &d in deps {
            self.engine.add_dep(d, id);
        }
        id
    }

    /// Adds a zero-duration synchronisation point after all of `deps`.
    pub fn barrier(&mut self, deps: impl IntoIterator<Item = OpId>) -> OpId {
        let id = self.engine.add_barrier();
        self.info.push(OpInfo::barrier());
        self.deps.clear();
        self.deps.extend(deps);
        for i in 0..self.deps.len() {
            self.engine.add_dep(self.deps[i], id);
        }
        id
    }

    /// Adds a collective of `phase`; part `i` (`spec.parts[i]`) starts after `deps(i, part)`. Returns the
    /// parts' operations, in part order. A spec shared by several collectives (an `Arc`) is not copied.
    pub fn collective<D: IntoIterator<Item = OpId>>(
        &mut self,
        phase: Phase,
        spec: impl Into<Arc<CollectiveSpec>>,
        mut deps: impl FnMut(usize, &PartSpec) -> D,
    ) -> Range<OpId> {
        let spec = spec.into();
        self.info.extend(spec.parts.iter().map(|p| OpInfo {
            phase,
            rank: p.rank,
            holder: p.holder,
            cause: p.cause,
            excess: p.excess,
        }));
        self.network_bytes += spec.bytes;
        self.phase_bytes[phase.index()] += spec.bytes;
        let ops = self.engine.add_collective(Arc::clone(&spec));
        for (op, (i, part)) in ops.clone().zip(spec.parts.iter().enumerate()) {
            for d in deps(i, part) {
                self.engine.add_dep(d, op);
            }
        }
        ops
    }

    /// Runs the graph and analyses its critical path. The flow backend needs the topology its
    /// collectives' routes come from; without one (a graph with no transfers) the analytic backend runs.
    pub fn analyse(&mut self, topo: Option<&Topology>) -> IterationOutcome {
        let step = match (self.network, topo) {
            (NetworkKind::Analytic, _) | (NetworkKind::Flow, None) => {
                self.engine.run(&mut AnalyticNetwork::default())
            }
            (NetworkKind::Flow, Some(topo)) => {
                let mut net = FlowNetwork::new(topo).recording(self.record_flows);
                let step = self.engine.run(&mut net);
                self.flows = net.flows_started();
                self.flow_records.clear();
                self.flow_records.extend_from_slice(net.records());
                step
            }
        };
        let flows = if self.network == NetworkKind::Flow {
            self.flows
        } else {
            0
        };
        let mut breakdown = [0; Phase::COUNT];
        let mut excess_by_rank: Vec<(SimTime, [SimTime; 4])> = vec![(0, [0; 4]); self.ranks];
        if let Some(last) = self.engine.last_op() {
            let mut at = Some(last);
            while let Some(op) = at {
                let t = self.engine.timing(op);
                let info = self.info[op as usize];
                breakdown[info.phase.index()] += t.finish - t.start;
                if info.excess > 0 && (info.holder as usize) < self.ranks {
                    let e = &mut excess_by_rank[info.holder as usize];
                    e.0 += info.excess;
                    e.1[info.cause as usize] += info.excess;
                }
                at = t.critical_pred;
            }
        }
        let straggler = excess_by_rank
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 > 0)
            .max_by_key(|(r, e)| (e.0, std::cmp::Reverse(*r)))
            .map(|(r, e)| {
                let causes = [
                    Cause::Compute,
                    Cause::InboundLink,
                    Cause::OutboundLink,
                    Cause::Network,
                ];
                let (ci, _) =
                    e.1.iter()
                        .enumerate()
                        .max_by_key(|(i, v)| (**v, std::cmp::Reverse(*i)))
                        .expect("4");
                (r, causes[ci])
            });
        let (mut busy, mut exposed, mut hidden) = (Vec::with_capacity(self.ranks), 0u128, 0u128);
        for a in self.engine.activity() {
            busy.push(a.compute);
            exposed += a.exposed as u128;
            hidden += a.hidden as u128;
        }
        let n = self.ranks.max(1) as u128;
        IterationOutcome {
            step,
            breakdown,
            straggler,
            events: self.engine.events(),
            flows,
            busy,
            comm_exposed: (exposed / n) as SimTime,
            comm_hidden: (hidden / n) as SimTime,
            network_bytes: self.network_bytes,
            phase_bytes: self.phase_bytes,
        }
    }
}
