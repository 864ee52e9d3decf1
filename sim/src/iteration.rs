//! One iteration as an operation graph, and what its run tells: step time, the critical path broken into
//! phases, the straggler, and per-rank busy time.
//!
//! Strategies lower an iteration into an [`IterationGraph`] (operations tagged with [`OpInfo`]); the graph
//! runs on the [`Engine`] and [`IterationGraph::analyse`] walks the critical path.
//!
//! Straggler attribution: every operation carries an *excess*, how much longer it took than the average
//! rank's corresponding operation (its own compute, or the busiest link it waited on versus the mean port).
//! Along the critical path the excess is summed per holding rank; the iteration's straggler is the rank with
//! the largest sum, and its cause the kind of excess that dominated. A balanced iteration has no straggler.

use crate::collective::Cause;
use crate::engine::{Engine, OpId, ResourceId, SimTime};
use crate::phase::Phase;

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
    /// A rank's part of a collective: held by the owner of the busiest link it waited on.
    pub fn transfer(phase: Phase, rank: usize, t: &crate::collective::RankTransfer) -> Self {
        OpInfo {
            phase,
            rank: rank as u32,
            holder: t.holder as u32,
            cause: t.cause,
            excess: crate::engine::ps(t.excess_s),
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
    streams_per_rank: usize,
    deps: Vec<OpId>,
}

/// The result of one simulated iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct IterationOutcome {
    pub step: SimTime,
    pub breakdown: [SimTime; Phase::COUNT],
    pub straggler: Option<(usize, Cause)>,
    pub events: u64,
    /// Per rank: time its compute stream was busy.
    pub busy: Vec<SimTime>,
}

/// Which stream of a rank an operation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Compute = 0,
    Comm = 1,
    Copy = 2,
}

impl IterationGraph {
    /// Empties the graph for an iteration on `ranks` ranks with `streams_per_rank` streams each.
    pub fn reset(&mut self, ranks: usize, streams_per_rank: usize) {
        self.engine.clear();
        self.engine.set_resources(ranks * streams_per_rank);
        self.info.clear();
        self.ranks = ranks;
        self.streams_per_rank = streams_per_rank;
    }

    pub fn resource(&self, rank: usize, stream: Stream) -> ResourceId {
        (stream as usize * self.ranks + rank) as ResourceId
    }

    /// Adds an operation on `rank`'s `stream` after `deps`.
    pub fn op(
        &mut self,
        rank: usize,
        stream: Stream,
        duration: SimTime,
        info: OpInfo,
        deps: &[OpId],
    ) -> OpId {
        let id = self
            .engine
            .add_op(Some(self.resource(rank, stream)), duration);
        self.info.push(info);
        for &d in deps {
            self.engine.add_dep(d, id);
        }
        id
    }

    /// Adds a zero-duration synchronisation point after all of `deps`.
    pub fn barrier(&mut self, deps: impl IntoIterator<Item = OpId>) -> OpId {
        let id = self.engine.add_op(None, 0);
        self.info.push(OpInfo::barrier());
        self.deps.clear();
        self.deps.extend(deps);
        for i in 0..self.deps.len() {
            self.engine.add_dep(self.deps[i], id);
        }
        id
    }

    /// Runs the graph and analyses its critical path.
    pub fn analyse(&mut self) -> IterationOutcome {
        let step = self.engine.run();
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
        let mut busy = vec![0; self.ranks];
        for op in 0..self.info.len() {
            let info = self.info[op];
            let r = self.engine.resource_of(op as OpId);
            if let Some(r) = r
                && (r as usize) < self.ranks
            {
                busy[info.rank as usize] += self.engine.duration(op as OpId);
            }
        }
        IterationOutcome {
            step,
            breakdown,
            straggler,
            events: self.engine.events(),
            busy,
        }
    }
}
