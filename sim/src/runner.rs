//! Runs a scenario: every strategy, every iteration (in parallel, deterministically), and aggregates —
//! one generic loop over [`StrategyModel`] for every strategy kind.
//!
//! Iterations are independent (each ends at the optimizer's synchronisation), so they run on rayon's pool;
//! results are collected in iteration order, so output does not depend on the thread count.

use crate::collective::Cause;
use crate::engine::{SimTime, to_ms};
use crate::forecast::{self, ForecastRouting};
use crate::memory::MemoryBreakdown;
use crate::network::NetworkKind;
use crate::phase::Phase;
use crate::result::{IterationSummary, RankSummary, SimulationReport, Straggler, StrategyResult};
use crate::scenario::file::StrategyKind;
use crate::scenario::{Scenario, Strategy, StrategyParams};
use crate::stats::Distribution;
use crate::strategy::ep::EpModel;
use crate::strategy::fssdp::FssdpModel;
use crate::strategy::model::StrategyModel;
use crate::strategy::offload::OffloadModel;
use crate::strategy::offload::tokens::TokenRouting;
use crate::strategy::record::IterationRecord;
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{RoutingSource, SyntheticRouting, SyntheticSpec};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Mutex;
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
    synthetic_routing_shaped(s, EpModel::routing_shape(s))
}

/// The scenario's synthetic workload drawn for `shape` (a strategy with tensor or pipeline parallelism
/// needs one stage's token sources, see [`EpModel::routing_shape_for`]).
pub fn synthetic_routing_shaped(
    s: &Scenario,
    shape: moesim_traces::RoutingShape,
) -> SyntheticRouting {
    SyntheticRouting::with_dynamics(
        shape,
        s.workload.iterations,
        SyntheticSpec {
            skew: s.workload.skew,
            seed: s.seed,
            shuffle_per_layer: s.workload.shuffle_per_layer,
        },
        s.workload.dynamics,
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
    simulate_scenario_with_tokens(s, routing, None, cost, opts)
        .expect("synthetic per-token routing fits its own scenario")
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
    assert_eq!(
        routing.shape(),
        EpModel::routing_shape(s),
        "routing workload shape does not match the scenario"
    );
    // Tensor and pipeline parallelism draw the scenario's synthetic workload for their own token sources
    // (validation refuses them a trace).
    let own;
    let routing: &dyn RoutingSource = if strategy.parallel.is_single() {
        routing
    } else {
        own = synthetic_routing_shaped(s, EpModel::routing_shape_for(s, strategy));
        &own
    };
    match strategy.params() {
        StrategyParams::Ep | StrategyParams::EpReplicated(_) => {
            let model = EpModel::new(s, strategy, topo, cost, routing);
            let mut result = run(&model, s, strategy, opts);
            let iterations = model.iterations();
            result.forecast = s
                .workload
                .plan_until
                .filter(|&u| u < iterations)
                .map(|until| {
                    // The predictor sees iterations before `until` and draws the rest; its compute noise is
                    // its own.
                    let mut predicted_scenario = s.clone();
                    predicted_scenario.seed =
                        moesim_traces::rng::derive_seed(s.seed, &[0x7072_6564]);
                    let forecast_routing =
                        ForecastRouting::fit(routing, until, predicted_scenario.seed);
                    let predictor =
                        EpModel::new(&predicted_scenario, strategy, topo, cost, &forecast_routing);
                    let predicted = run_iterations(&predictor, until..iterations, opts);
                    forecast::compare(
                        until,
                        &predicted.iter().map(summary).collect::<Vec<_>>(),
                        &result.per_iteration[until..],
                    )
                });
            result
        }
        StrategyParams::Fssdp(_) => {
            let model = FssdpModel::new(s, strategy, topo, cost, routing);
            run(&model, s, strategy, opts)
        }
        StrategyParams::Offload(_) => {
            let tokens = TokenRouting::synthetic(s);
            simulate_offload(s, strategy, cost, &tokens, opts)
        }
    }
}

/// Runs every iteration of `model` and aggregates them into a result.
pub fn run<M: StrategyModel>(
    model: &M,
    s: &Scenario,
    strategy: &Strategy,
    opts: RunOptions,
) -> StrategyResult {
    let started = Instant::now();
    let runs = run_iterations(model, 0..model.iterations(), opts);
    let mut result = summarize(
        s,
        strategy,
        runs.iter().map(M::record),
        model.extra_phases(),
        model.rank_gpus(),
    );
    model.finish(&runs, &mut result);
    result.oom = result.memory_peak_gib > s.objective.memory_limit_gib;
    result.sim_seconds = opts.timing.then(|| started.elapsed().as_secs_f64());
    result
}

/// Simulates iterations `range` of a model in parallel, collected in order.
pub fn run_iterations<M: StrategyModel>(
    model: &M,
    range: std::ops::Range<usize>,
    opts: RunOptions,
) -> Vec<M::Iteration> {
    // One workspace per pool thread, kept for the whole run: `map_init` would build one per stolen job,
    // re-allocating every buffer (an iteration's routing alone is a layer × rank × expert array).
    let workspaces: Vec<Mutex<M::Workspace>> = (0..rayon::current_num_threads())
        .map(|_| Mutex::new(M::Workspace::default()))
        .collect();
    range
        .into_par_iter()
        .map(|it| {
            let slot = rayon::current_thread_index().unwrap_or(0) % workspaces.len();
            // A poisoned lock only means another iteration panicked; its buffers are reset on use.
            let mut ws = workspaces[slot]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = model.simulate(it, &mut ws);
            if let Some(p) = opts.progress {
                p();
            }
            r
        })
        .collect()
}

/// One iteration's summary line.
fn summary(r: &IterationRecord) -> IterationSummary {
    IterationSummary {
        step_ms: to_ms(r.outcome.step),
        critical_rank: r.outcome.straggler.map(|x| x.0),
        cause: r.outcome.straggler.map(|x| x.1),
    }
}

/// Simulates every strategy of a scenario like [`simulate_scenario`], with offloading strategies replaying
/// `tokens` (a per-token trace the caller read) instead of the scenario's synthetic per-token routing.
/// Fails, before simulating anything, when `tokens` does not fit the model.
pub fn simulate_scenario_with_tokens(
    s: &Scenario,
    routing: &dyn RoutingSource,
    tokens: Option<&TokenRouting>,
    cost: Option<&dyn CostModel>,
    opts: RunOptions,
) -> Result<SimulationReport, String> {
    if let Some(t) = tokens {
        t.check(s.model.moe_layers(), s.model.experts)?;
    }
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost = cost.unwrap_or(&roofline);
    // Offloading strategies share one per-token routing: the caller's, or one synthetic draw.
    let synthetic = (tokens.is_none()
        && s.strategies
            .iter()
            .any(|st| st.kind == StrategyKind::Offload))
    .then(|| TokenRouting::synthetic(s));
    let tokens = tokens.or(synthetic.as_ref());
    let results = s
        .strategies
        .iter()
        .map(|st| match (st.kind, tokens) {
            (StrategyKind::Offload, Some(t)) => simulate_offload(s, st, cost, t, opts),
            _ => simulate_strategy(s, st, &topo, cost, routing, opts),
        })
        .collect();
    Ok(SimulationReport {
        scenario: s.name.clone(),
        results,
        chosen: None,
    })
}

/// Simulates an offloading strategy on per-token routing.
///
/// Panics if the routing does not fit the model (see [`TokenRouting::check`]; the scenario's own synthetic
/// routing always fits).
pub fn simulate_offload(
    s: &Scenario,
    strategy: &Strategy,
    cost: &dyn CostModel,
    tokens: &TokenRouting,
    opts: RunOptions,
) -> StrategyResult {
    if let Err(e) = tokens.check(s.model.moe_layers(), s.model.experts) {
        panic!("{e}");
    }
    let StrategyParams::Offload(knobs) = strategy.params() else {
        panic!("strategy `{}` is not an offloading strategy", strategy.name)
    };
    // Steps are deduplicated and split to the cache's capacity, so the replay cannot refuse them.
    let model = OffloadModel::new(s, knobs, cost, tokens)
        .unwrap_or_else(|e| panic!("expert cache replay: {e}"));
    run(&model, s, strategy, opts)
}

/// The result's kind string (the JSON interface).
pub fn kind_name(kind: StrategyKind) -> &'static str {
    match kind {
        StrategyKind::Ep => "ep",
        StrategyKind::EpReplicated => "ep-replicated",
        StrategyKind::Fssdp => "fssdp",
        StrategyKind::Offload => "offload",
    }
}

/// Aggregates per-iteration records into a result; the strategy's [`StrategyModel::finish`] adds memory,
/// placement and its own figures.
fn summarize<'r>(
    s: &Scenario,
    strategy: &Strategy,
    runs: impl Iterator<Item = &'r IterationRecord> + Clone,
    extra_phases: &[Phase],
    rank_gpus: Option<&[usize]>,
) -> StrategyResult {
    // Ranks of the iteration graph, reported by the GPU each one simulates.
    let g = rank_gpus.map_or(s.cluster.gpus(), <[usize]>::len);
    let gpu = |q: usize| rank_gpus.map_or(q, |v| v[q]);
    let count = runs.clone().count();
    let n = count.max(1) as f64;
    let step_ms: Vec<f64> = runs.clone().map(|r| to_ms(r.outcome.step)).collect();
    let step_time_ms = Distribution::of(&step_ms);
    let mean_ms = |f: &dyn Fn(&IterationRecord) -> SimTime| {
        runs.clone().map(|r| to_ms(f(r))).sum::<f64>() / n
    };
    let breakdown_ms: BTreeMap<String, f64> = Phase::REPORTED
        .iter()
        .chain(extra_phases)
        .map(|p| {
            (
                p.name().to_string(),
                mean_ms(&|r: &IterationRecord| r.outcome.breakdown[p.index()]),
            )
        })
        .collect();

    let mut straggles: BTreeMap<usize, BTreeMap<Cause, usize>> = BTreeMap::new();
    for r in runs.clone() {
        if let Some((rank, cause)) = r.outcome.straggler {
            *straggles
                .entry(gpu(rank))
                .or_default()
                .entry(cause)
                .or_default() += 1;
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

    let per_rank = (0..g)
        .map(|rank| {
            let busy = runs
                .clone()
                .map(|r| to_ms(r.outcome.busy[rank]))
                .sum::<f64>()
                / n;
            RankSummary {
                rank: gpu(rank),
                tokens_received: runs
                    .clone()
                    .map(|r| r.tokens_received[rank] as f64)
                    .sum::<f64>()
                    / n,
                busy_ms: busy,
                idle_ms: step_time_ms.mean - busy,
            }
        })
        .collect();
    let per_iteration: Vec<IterationSummary> = runs
        .clone()
        .map(|r| {
            let mut it = summary(r);
            it.critical_rank = it.critical_rank.map(gpu);
            it
        })
        .collect();
    let routed: u64 = runs.clone().map(|r| r.routed).sum();
    let dropped: u64 = runs.clone().map(|r| r.dropped).sum();
    let tokens_per_s = if step_time_ms.mean > 0.0 {
        strategy.tokens_per_iteration(s) as f64 / (step_time_ms.mean * 1e-3)
    } else {
        0.0
    };
    StrategyResult {
        strategy: strategy.name.clone(),
        kind: kind_name(strategy.kind).into(),
        iterations: count,
        step_time_ms,
        breakdown_ms,
        comm_exposed_ms: mean_ms(&|r: &IterationRecord| r.outcome.comm_exposed),
        comm_hidden_ms: mean_ms(&|r: &IterationRecord| r.outcome.comm_hidden),
        network: kind_network(s),
        stragglers,
        memory_peak_gib: 0.0,
        oom: false,
        tokens_per_s,
        events: runs.clone().map(|r| r.outcome.events).sum(),
        flows: runs.clone().map(|r| r.outcome.flows).sum(),
        sim_seconds: None,
        memory: MemoryBreakdown::default(),
        warmup_iterations: 0,
        steady_step_time_ms: None,
        dropped_fraction: if routed > 0 {
            dropped as f64 / routed as f64
        } else {
            0.0
        },
        network_bytes_per_iteration: runs.clone().map(|r| r.outcome.network_bytes).sum::<f64>() / n,
        per_rank,
        per_iteration,
        placement: Vec::new(),
        ep_size: strategy.ep_size,
        overlap_micro_batches: strategy.overlap_micro_batches,
        fssdp: None,
        offload: None,
        replication: None,
        forecast: None,
    }
}

fn kind_network(s: &Scenario) -> String {
    match s.cluster.network {
        NetworkKind::Analytic => "analytic",
        NetworkKind::Flow => "flow",
    }
    .into()
}
