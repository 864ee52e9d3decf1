//! Runs a scenario: every strategy, every iteration (in parallel, deterministically), and aggregates.
//!
//! Iterations are independent (each ends at the optimizer's synchronisation), so they run on rayon's pool;
//! results are collected in iteration order, so output does not depend on the thread count.

use crate::collective::Cause;
use crate::engine::to_ms;
use crate::forecast::{self, ForecastRouting};
use crate::memory::MemoryBreakdown;
use crate::phase::Phase;
use crate::result::{IterationSummary, RankSummary, SimulationReport, Straggler, StrategyResult};
use crate::scenario::{Scenario, Strategy};
use crate::stats::Distribution;
use crate::strategy::ep::{EpModel, EpWorkspace};
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{RoutingSource, SyntheticRouting, SyntheticSpec};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::Instant;

/// Options that do not change what is simulated.
#[derive(Clone, Copy)]
pub struct RunOptions<'p> {
    /// Record wall-clock seconds per strategy (off for byte-reproducible output).
    pub timing: bool,
    /// Called once per simulated iteration (from any thread).
    pub progress: Option<&'p (dyn Fn() + Sync)>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            timing: true,
            progress: None,
        }
    }
}

/// The synthetic workload a scenario describes (used when it names no trace).
pub fn synthetic_routing(s: &Scenario) -> SyntheticRouting {
    SyntheticRouting::new(
        EpModel::routing_shape(s),
        s.workload.iterations,
        SyntheticSpec {
            skew: s.workload.skew,
            seed: s.seed,
            shuffle_per_layer: s.workload.shuffle_per_layer,
        },
    )
}

/// Simulates every strategy of a scenario on `routing`, priced by `cost` (the cluster's datasheet roofline
/// when `None`).
pub fn simulate_scenario(
    s: &Scenario,
    routing: &dyn RoutingSource,
    cost: Option<&dyn CostModel>,
    opts: RunOptions,
) -> SimulationReport {
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost = cost.unwrap_or(&roofline);
    let results = s
        .strategies
        .iter()
        .map(|st| simulate_strategy(s, st, &topo, cost, routing, opts))
        .collect();
    SimulationReport {
        scenario: s.name.clone(),
        results,
        chosen: None,
    }
}

/// Simulates iterations `range` of a model in parallel, in order.
fn run_iterations(
    model: &EpModel,
    range: std::ops::Range<usize>,
    opts: RunOptions,
) -> Vec<crate::strategy::ep::EpIteration> {
    range
        .into_par_iter()
        .map_init(EpWorkspace::default, |ws, it| {
            let r = model.simulate_iteration(it, ws);
            if let Some(p) = opts.progress {
                p();
            }
            r
        })
        .collect()
}

/// Simulates one strategy.
pub fn simulate_strategy(
    s: &Scenario,
    strategy: &Strategy,
    topo: &Topology,
    cost: &dyn CostModel,
    routing: &dyn RoutingSource,
    opts: RunOptions,
) -> StrategyResult {
    let started = Instant::now();
    assert_eq!(
        routing.shape(),
        EpModel::routing_shape(s),
        "routing workload shape does not match the scenario"
    );
    let iterations = s.workload.iterations.min(routing.iterations());
    let model = EpModel::new(s, strategy, topo, cost, routing);
    let runs = run_iterations(&model, 0..iterations, opts);
    let summaries = |runs: &[crate::strategy::ep::EpIteration]| -> Vec<IterationSummary> {
        runs.iter()
            .map(|r| IterationSummary {
                step_ms: to_ms(r.outcome.step),
                critical_rank: r.outcome.straggler.map(|x| x.0),
                cause: r.outcome.straggler.map(|x| x.1),
            })
            .collect()
    };
    let forecast = s
        .workload
        .plan_until
        .filter(|&u| u < iterations)
        .map(|until| {
            // The predictor sees iterations before `until` and draws the rest; its compute noise is its own.
            let mut predicted_scenario = s.clone();
            predicted_scenario.seed = moesim_traces::rng::derive_seed(s.seed, &[0x7072_6564]);
            let forecast_routing = ForecastRouting::fit(routing, until, predicted_scenario.seed);
            let predictor =
                EpModel::new(&predicted_scenario, strategy, topo, cost, &forecast_routing);
            let predicted = run_iterations(&predictor, until..iterations, opts);
            forecast::compare(until, &summaries(&predicted), &summaries(&runs[until..]))
        });
    let g = s.cluster.gpus();
    let n = runs.len().max(1) as f64;
    let step_ms: Vec<f64> = runs.iter().map(|r| to_ms(r.outcome.step)).collect();
    let step_time_ms = Distribution::of(&step_ms);
    let breakdown_ms: BTreeMap<String, f64> = Phase::REPORTED
        .iter()
        .map(|p| {
            (
                p.name().to_string(),
                runs.iter()
                    .map(|r| to_ms(r.outcome.breakdown[p.index()]))
                    .sum::<f64>()
                    / n,
            )
        })
        .collect();

    let mut straggles: BTreeMap<usize, BTreeMap<Cause, usize>> = BTreeMap::new();
    for r in &runs {
        if let Some((rank, cause)) = r.outcome.straggler {
            *straggles.entry(rank).or_default().entry(cause).or_default() += 1;
        }
    }
    let mut stragglers: Vec<Straggler> = straggles
        .iter()
        .map(|(&rank, causes)| {
            let total: usize = causes.values().sum();
            let cause = causes
                .iter()
                .max_by_key(|(c, k)| (**k, std::cmp::Reverse(**c)))
                .map(|(c, _)| *c)
                .expect("non-empty");
            Straggler {
                rank,
                critical_share: total as f64 / n,
                cause,
            }
        })
        .collect();
    stragglers.sort_by(|a, b| {
        b.critical_share
            .total_cmp(&a.critical_share)
            .then(a.rank.cmp(&b.rank))
    });

    let peak_tokens = runs
        .iter()
        .flat_map(|r| r.peak_layer_tokens.iter().copied())
        .max()
        .unwrap_or(0);
    let memory: MemoryBreakdown = model.memory(peak_tokens);
    let per_rank = (0..g)
        .map(|rank| {
            let busy = runs
                .iter()
                .map(|r| to_ms(r.outcome.busy[rank]))
                .sum::<f64>()
                / n;
            RankSummary {
                rank,
                tokens_received: runs
                    .iter()
                    .map(|r| r.tokens_received[rank] as f64)
                    .sum::<f64>()
                    / n,
                busy_ms: busy,
                idle_ms: step_time_ms.mean - busy,
            }
        })
        .collect();
    let per_iteration = summaries(&runs);
    let routed: u64 = runs.iter().map(|r| r.routed).sum();
    let dropped: u64 = runs.iter().map(|r| r.dropped).sum();
    let tokens_per_s = if step_time_ms.mean > 0.0 {
        s.tokens_per_iteration() as f64 / (step_time_ms.mean * 1e-3)
    } else {
        0.0
    };
    StrategyResult {
        strategy: strategy.name.clone(),
        kind: match strategy.kind {
            crate::scenario::file::StrategyKind::Ep => "ep",
            crate::scenario::file::StrategyKind::EpReplicated => "ep-replicated",
        }
        .into(),
        iterations: runs.len(),
        step_time_ms,
        breakdown_ms,
        stragglers,
        memory_peak_gib: memory.total_gib,
        oom: memory.total_gib > s.objective.memory_limit_gib,
        tokens_per_s,
        events: runs.iter().map(|r| r.outcome.events).sum(),
        sim_seconds: opts.timing.then(|| started.elapsed().as_secs_f64()),
        memory,
        dropped_fraction: if routed > 0 {
            dropped as f64 / routed as f64
        } else {
            0.0
        },
        network_bytes_per_iteration: runs.iter().map(|r| r.network_bytes).sum::<f64>() / n,
        per_rank,
        per_iteration,
        placement: model.placement(),
        ep_size: strategy.ep_size,
        replication: strategy
            .replication
            .map(|r| crate::result::ReplicationResult {
                slots_per_gpu: r.slots_per_gpu,
                replan_interval: r.replan_interval,
                method: r.method,
                token_split: r.token_split,
                moved_copies_per_replan: model.moved_copies_per_replan().to_vec(),
                placement_per_layer: model.placement_per_layer(),
            }),
        forecast,
    }
}
