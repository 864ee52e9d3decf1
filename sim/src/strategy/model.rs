//! The strategy skeleton: what the generic runner and the timelines need from every strategy.
//!
//! A strategy model is built once per run (placements, plans, costs that do not change between
//! iterations); [`StrategyModel::simulate`] lowers one iteration onto its workspace's [`IterationGraph`]
//! with the shared blocks ([`crate::strategy::blocks`]) and runs it; [`StrategyModel::finish`] fills the
//! strategy's own figures (memory, placement, FSSDP or offloading statistics) into the common result.

use crate::iteration::IterationGraph;
use crate::phase::Phase;
use crate::result::StrategyResult;
use crate::strategy::record::IterationRecord;

/// One strategy's run, iteration by iteration.
pub trait StrategyModel: Sync {
    /// Buffers reused across iterations on one thread; holds the iteration's graph.
    type Workspace: Default + Send;
    /// One iteration's outcome with the strategy's own facts.
    type Iteration: Send;

    /// Iterations (or steps) the run simulates.
    fn iterations(&self) -> usize;
    /// Lowers and runs iteration `it`.
    fn simulate(&self, it: usize, ws: &mut Self::Workspace) -> Self::Iteration;
    /// The common part of an iteration's outcome.
    fn record(it: &Self::Iteration) -> &IterationRecord;
    /// The graph the last [`StrategyModel::simulate`] ran.
    fn graph(ws: &mut Self::Workspace) -> &mut IterationGraph;
    /// Phases this strategy reports beyond [`Phase::REPORTED`].
    fn extra_phases(&self) -> &'static [Phase] {
        &[]
    }
    /// The GPU each rank of the iteration graph simulates, where the graph holds a subset of the cluster
    /// (a representative unit per pipeline stage); `None`: rank `i` is GPU `i`.
    fn rank_gpus(&self) -> Option<&[usize]> {
        None
    }
    /// Fills memory, placement and the strategy's own statistics into `result`.
    fn finish(&self, runs: &[Self::Iteration], result: &mut StrategyResult);
}
