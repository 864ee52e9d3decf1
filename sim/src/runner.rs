//! Runs a scenario: every strategy, every iteration (in parallel, deterministically), and aggregates.
//!
//! Iterations are independent (each ends at the optimizer's synchronisation), so they run on rayon's pool;
//! results are collected in iteration order, so output does not depend on the thread count.

use crate::collective::Cause;
use crate::engine::to_ms;
use crate::forecast::{self, ForecastRouting};
use crate::iteration::IterationGraph;
use crate::memory::MemoryBreakdown;
use crate::phase::Phase;
use crate::result::{IterationSummary, RankSummary, SimulationReport, Straggler, StrategyResult};
use crate::scenario::file::StrategyKind;
use crate::scenario::{Scenario, Strategy};
use crate::stats::Distribution;
use crate::strategy::ep::{EpIteration, EpModel, EpWorkspace};
use crate::strategy::fssdp::{FssdpIteration, FssdpModel, FssdpWorkspace};
use crate::strategy::offload::tokens::TokenRouting;
use crate::strategy::offload::{self, OffloadModel, StepFacts};
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
    SyntheticRouting::with_dynamics(
        EpModel::routing_shape(s),
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
    let started = Instant::now();
    assert_eq!(
        routing.shape(),
        EpModel::routing_shape(s),
        "routing workload shape does not match the scenario"
    );
    let iterations = s.workload.iterations.min(routing.iterations());
    match strategy.kind {
        StrategyKind::Ep | StrategyKind::EpReplicated => {}
        StrategyKind::Fssdp => return simulate_fssdp(s, strategy, topo, cost, routing, opts),
        StrategyKind::Offload => {
            let tokens = TokenRouting::synthetic(s);
            return simulate_offload(s, strategy, cost, &tokens, opts);
        }
    }
    let model = EpModel::new(s, strategy, topo, cost, routing);
    let runs = run_ep_iterations(&model, 0..iterations, opts);
    let peak_tokens = runs
        .iter()
        .flat_map(|r| r.peak_layer_tokens.iter().copied())
        .max()
        .unwrap_or(0);
    let memory = model.memory(peak_tokens);
    let replicated = strategy.kind == StrategyKind::EpReplicated;
    let mut result = summarize(
        s,
        strategy,
        if replicated { "ep-replicated" } else { "ep" },
        &runs,
        memory,
        model.placement(),
        if replicated { &[Phase::Rebalance] } else { &[] },
        started,
        opts,
    );
    result.replication = strategy
        .replication
        .map(|r| crate::result::ReplicationResult {
            slots_per_gpu: r.slots_per_gpu,
            replan_interval: r.replan_interval,
            method: r.method,
            token_split: r.token_split,
            moved_copies_per_replan: model.moved_copies_per_replan().to_vec(),
            placement_per_layer: model.placement_per_layer(),
        });
    result.forecast = s
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
            let predicted = run_ep_iterations(&predictor, until..iterations, opts);
            forecast::compare(
                until,
                &summaries(&predicted),
                &result.per_iteration[until..],
            )
        });
    result
}

/// Simulates iterations `range` of an EP model in parallel, collected in order.
fn run_ep_iterations(
    model: &EpModel,
    range: std::ops::Range<usize>,
    opts: RunOptions,
) -> Vec<EpIteration> {
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

/// One summary line per iteration.
fn summaries(runs: &[EpIteration]) -> Vec<IterationSummary> {
    runs.iter()
        .map(|r| IterationSummary {
            step_ms: to_ms(r.outcome.step),
            critical_rank: r.outcome.straggler.map(|x| x.0),
            cause: r.outcome.straggler.map(|x| x.1),
        })
        .collect()
}

/// Simulates an FSSDP strategy.
pub fn simulate_fssdp(
    s: &Scenario,
    strategy: &Strategy,
    topo: &Topology,
    cost: &dyn CostModel,
    routing: &dyn RoutingSource,
    opts: RunOptions,
) -> StrategyResult {
    let started = Instant::now();
    let iterations = s.workload.iterations.min(routing.iterations());
    let model = FssdpModel::new(s, strategy, topo, cost, routing);
    let runs: Vec<FssdpIteration> = (0..iterations)
        .into_par_iter()
        .map_init(FssdpWorkspace::default, |ws, it| {
            let r = model.simulate_iteration(it, ws);
            if let Some(p) = opts.progress {
                p();
            }
            r
        })
        .collect();
    let stats = model.stats(&runs);
    let peak_tokens = runs
        .iter()
        .flat_map(|r| r.base.peak_layer_tokens.iter().copied())
        .max()
        .unwrap_or(0);
    let memory = model.memory(peak_tokens, stats.materialized_on_rank_max);
    let base: Vec<EpIteration> = runs.into_iter().map(|r| r.base).collect();
    let mut result = summarize(
        s,
        strategy,
        "fssdp",
        &base,
        memory,
        model.placement(),
        &[Phase::Spag, Phase::Sprs, Phase::Reshard],
        started,
        opts,
    );
    result.fssdp = Some(stats);
    result
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
    let started = Instant::now();
    if let Err(e) = tokens.check(s.model.moe_layers(), s.model.experts) {
        panic!("{e}");
    }
    let knobs = strategy
        .offload
        .as_ref()
        .expect("an offload strategy has offloading knobs");
    // Steps are deduplicated and split to the cache's capacity, so the replay cannot refuse them.
    let model = OffloadModel::new(s, knobs, cost, tokens)
        .unwrap_or_else(|e| panic!("expert cache replay: {e}"));
    let runs: Vec<(EpIteration, StepFacts)> = (0..model.steps())
        .into_par_iter()
        .map_init(IterationGraph::default, |graph, it| {
            let r = model.simulate_step(it, graph);
            if let Some(p) = opts.progress {
                p();
            }
            r
        })
        .collect();
    let (base, facts): (Vec<EpIteration>, Vec<StepFacts>) = runs.into_iter().unzip();
    let peak = base
        .iter()
        .flat_map(|r| r.peak_layer_tokens.first().copied())
        .max()
        .unwrap_or(0);
    let (memory, cache_gib) = model.memory(peak);
    let steps_ms: Vec<f64> = base.iter().map(offload::step_ms).collect();
    let stats = model.stats(&facts, &steps_ms, cache_gib);
    let mut result = summarize(
        s,
        strategy,
        "offload",
        &base,
        memory,
        vec![(0..s.model.experts).collect()],
        &[Phase::ExpertFetch],
        started,
        opts,
    );
    result.offload = Some(stats);
    result
}

/// Aggregates per-iteration records into a result.
#[allow(clippy::too_many_arguments)]
fn summarize(
    s: &Scenario,
    strategy: &Strategy,
    kind: &str,
    runs: &[EpIteration],
    memory: MemoryBreakdown,
    placement: Vec<Vec<usize>>,
    extra_phases: &[Phase],
    started: Instant,
    opts: RunOptions,
) -> StrategyResult {
    let g = s.cluster.gpus();
    let n = runs.len().max(1) as f64;
    let step_ms: Vec<f64> = runs.iter().map(|r| to_ms(r.outcome.step)).collect();
    let step_time_ms = Distribution::of(&step_ms);
    let breakdown_ms: BTreeMap<String, f64> = Phase::REPORTED
        .iter()
        .chain(extra_phases)
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
    for r in runs {
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
    let per_iteration = summaries(runs);
    let routed: u64 = runs.iter().map(|r| r.routed).sum();
    let dropped: u64 = runs.iter().map(|r| r.dropped).sum();
    let tokens_per_s = if step_time_ms.mean > 0.0 {
        s.tokens_per_iteration() as f64 / (step_time_ms.mean * 1e-3)
    } else {
        0.0
    };
    StrategyResult {
        strategy: strategy.name.clone(),
        kind: kind.into(),
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
        placement,
        ep_size: strategy.ep_size,
        fssdp: None,
        offload: None,
        replication: None,
        forecast: None,
    }
}
