//! Strategy and knob search: every strategy of the scenario is a family, expanded over its knobs; every
//! candidate is simulated (in parallel) and ranked by the scenario's objective, within the memory limit.
//!
//! Families and knobs searched:
//! - `ep` in training (synthetic routing): parallel layouts, see [`crate::layout_search`] (TP, PP, EP,
//!   schedule, micro-batches under the global batch, checkpointing, ZeRO stage, capacity factor), pruned
//!   by a memory lower bound and by dominance before simulating;
//! - `ep` otherwise: EP degree (each divisor of both the GPU and the expert count); capacity factor only where the
//!   scenario's strategy drops tokens (its factor c, then 1.5·c, 2·c and no dropping: the search never
//!   drops more tokens than the user allowed);
//! - `ep-replicated`: EP degree, slots per GPU (from the minimum to twice it), re-plan interval (5, 10,
//!   25), forecast window (5 iterations, all), token split (even, local-first), placement (moesim, EPLB);
//! - `fssdp`: memory cap m (half, as given, double), re-materialization (off, on), forecast window (5, 20);
//! - `offload`: cache experts per layer (five sizes from top-k to all), policy (LRU, LFU, LRFU — Belady
//!   needs the future and is a bound, not a candidate), prefetch (none, pre-gating), miss handling (fetch,
//!   auto: fetch or compute on the CPU, whichever is faster).
//!
//! Candidates are named by their knobs (`ep8-cf1.25`, `ep-replicated/ep16-s8-r10-wall-local-moesim`);
//! families that expand to the same candidate contribute it once.
//!
//! Candidates that drop more than `objective.max_dropped_fraction` of their assignments are simulated and
//! shown but never chosen, and rank after every candidate the objective allows (as do those out of memory).

use crate::layout_search::{self, Estimate, Fate, FromBelow, Layout, Probes, Pruned, Simulated};
use crate::plan::{choose, exclusion, score};
use crate::result::{SimulationReport, StrategyResult};
use crate::runner::{RunOptions, simulate_strategy, synthetic_routing};
use crate::scenario::file::{PlacementMethod, StrategyKind, TokenSplit};
use crate::scenario::{Replication, Scenario, Strategy};
use crate::strategy::ep::EpModel;
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::RoutingSource;
use rayon::prelude::*;

/// The candidates a scenario's strategies expand to, in a fixed order: the knob families', then every
/// layout's strategy (a layout also sets micro-batches, checkpointing and the ZeRO stage: see
/// [`layouts`]).
pub fn candidates(s: &Scenario) -> Vec<Strategy> {
    let mut out = families(s);
    out.extend(layouts(s).into_iter().map(|l| l.strategy));
    out
}

/// The layouts of every strategy that expands to layouts, each name once, in a fixed order.
pub fn layouts(s: &Scenario) -> Vec<Layout> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Layout> = s
        .strategies
        .iter()
        .flat_map(|base| layout_search::layouts(s, base))
        .collect();
    out.retain(|l| seen.insert(l.strategy.name.clone()));
    out
}

/// The candidates of the knob families (strategies that do not expand to layouts).
fn families(s: &Scenario) -> Vec<Strategy> {
    let g = s.cluster.gpus();
    let e = s.model.experts;
    let divisors = |n: usize| (1..=n).filter(move |d| n.is_multiple_of(*d));
    let mut out = Vec::new();
    for base in &s.strategies {
        if layout_search::expands_to_layouts(s, base) {
            continue;
        }
        match base.kind {
            StrategyKind::Ep => {
                let factors: Vec<Option<f64>> = match base.capacity_factor {
                    None => vec![None],
                    Some(c) => vec![Some(c), Some(1.5 * c), Some(2.0 * c), None],
                };
                for ep in divisors(g).filter(|d| e.is_multiple_of(*d)) {
                    for &cf in &factors {
                        let cf_name = cf.map_or(String::new(), |c| format!("-cf{c}"));
                        out.push(Strategy {
                            name: format!("ep{ep}{cf_name}"),
                            kind: StrategyKind::Ep,
                            ep_size: ep,
                            capacity_factor: cf,
                            overlap_micro_batches: 1,
                            a2a: Default::default(),
                            replication: None,
                            fssdp: None,
                            offload: None,
                            parallel: Default::default(),
                        });
                    }
                }
            }
            StrategyKind::EpReplicated => {
                for ep in divisors(g).filter(|d| *d > 1) {
                    let min = e.div_ceil(ep);
                    let max = (2 * min).min(e);
                    let step = (max - min).div_ceil(5).max(1);
                    for slots in (min..=max).step_by(step) {
                        for replan in [5, 10, 25] {
                            for window in [5, usize::MAX] {
                                for split in [TokenSplit::Even, TokenSplit::LocalFirst] {
                                    for method in [PlacementMethod::Moesim, PlacementMethod::Eplb] {
                                        let w = if window == usize::MAX {
                                            "all".to_string()
                                        } else {
                                            window.to_string()
                                        };
                                        out.push(Strategy {
                                            name: format!(
                                                "ep-replicated/ep{ep}-s{slots}-r{replan}-w{w}-{}-{}",
                                                if split == TokenSplit::Even { "even" } else { "local" },
                                                if method == PlacementMethod::Moesim { "moesim" } else { "eplb" }
                                            ),
                                            kind: StrategyKind::EpReplicated,
                                            ep_size: ep,
                                            capacity_factor: None,
                                            overlap_micro_batches: 1,
                                            a2a: Default::default(),
                                            replication: Some(Replication {
                                                slots_per_gpu: slots,
                                                replan_interval: replan,
                                                forecast_window: (window != usize::MAX).then_some(window),
                                                method,
                                                token_split: split,
                                                replan_gain: Default::default(),
                                            }),
                                            fssdp: None,
                                            offload: None,
                                            parallel: Default::default(),
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
            StrategyKind::Fssdp => {
                let k = base
                    .fssdp
                    .clone()
                    .expect("an fssdp strategy has fssdp knobs");
                for cap in [
                    (k.memory_cap_experts / 2).max(1),
                    k.memory_cap_experts,
                    2 * k.memory_cap_experts,
                ] {
                    for remat in [false, true] {
                        for window in [5, 20] {
                            let mut knobs = k.clone();
                            knobs.memory_cap_experts = cap.min(e);
                            knobs.rematerialize = remat;
                            knobs.forecast_window = window;
                            out.push(Strategy {
                                name: format!(
                                    "fssdp/m{}-w{window}{}",
                                    knobs.memory_cap_experts,
                                    if remat { "-remat" } else { "" }
                                ),
                                fssdp: Some(knobs),
                                ..base.clone()
                            });
                        }
                    }
                }
            }
            StrategyKind::Offload => {
                let k = base
                    .offload
                    .clone()
                    .expect("an offload strategy has offloading knobs");
                let top_k = s.model.top_k;
                let sizes: Vec<usize> = {
                    let mut v: Vec<usize> = (0..=4).map(|i| top_k + (e - top_k) * i / 4).collect();
                    v.dedup();
                    v
                };
                use crate::scenario::knobs::{MissAction, Prefetch};
                use moesim_traces::CachePolicy;
                // Belady needs the future: a bound, not a policy a runtime can run, so it is not searched.
                for size in sizes {
                    for policy in [CachePolicy::Lru, CachePolicy::Lfu, CachePolicy::Lrfu] {
                        for prefetch in [Prefetch::None, Prefetch::Pregate] {
                            for miss in [MissAction::Fetch, MissAction::Auto] {
                                let mut knobs = k.clone();
                                knobs.cache_experts_per_layer = size;
                                knobs.policy = policy;
                                knobs.prefetch = prefetch;
                                knobs.miss_action = miss;
                                out.push(Strategy {
                                    name: format!(
                                        "offload/c{size}-{}-{}-{}",
                                        serde_json::to_value(policy)
                                            .ok()
                                            .and_then(|v| v.as_str().map(String::from))
                                            .unwrap_or_default(),
                                        if prefetch == Prefetch::None {
                                            "noprefetch"
                                        } else {
                                            "pregate"
                                        },
                                        if miss == MissAction::Fetch {
                                            "fetch"
                                        } else {
                                            "auto"
                                        }
                                    ),
                                    offload: Some(knobs),
                                    ..base.clone()
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.name.clone()));
    out
}

/// What a search did: the results of every simulated candidate, and the fate of every layout.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    /// The scenario whose strategies are the simulated candidates, in report order (the family candidates,
    /// then the simulated layouts). A layout's own micro-batches, checkpointing and ZeRO stage are in
    /// `layouts`: use [`SearchOutcome::scenario_of`] for the scenario a result was simulated on.
    pub scenario: Scenario,
    pub report: SimulationReport,
    /// Every layout expanded, and what became of it.
    pub layouts: Vec<(Layout, Fate)>,
    /// Per layout (same order): the schedule's lower bound, where the search computed one.
    pub bounds: Vec<Option<FromBelow>>,
    /// Per layout (same order): its balanced-routing estimate, where the search made one.
    pub estimates: Vec<Option<Estimate>>,
}

impl SearchOutcome {
    /// The layout result `i` simulates, if it is one.
    pub fn layout_of(&self, i: usize) -> Option<&Layout> {
        self.layouts
            .iter()
            .find(|(_, f)| *f == Fate::Simulated(i))
            .map(|(l, _)| l)
    }

    /// The scenario result `i` was simulated on, with its strategy as the only one (for a plan).
    pub fn scenario_of(&self, i: usize) -> Scenario {
        match self.layout_of(i) {
            Some(l) => l.scenario(&self.scenario),
            None => {
                let mut s = self.scenario.clone();
                s.strategies = vec![self.scenario.strategies[i].clone()];
                s
            }
        }
    }

    /// The plan of result `i`, made on the scenario it was simulated on.
    pub fn plan(&self, i: usize) -> crate::plan::Plan {
        let report = SimulationReport {
            scenario: self.report.scenario.clone(),
            results: vec![self.report.results[i].clone()],
            chosen: Some(self.report.results[i].strategy.clone()),
        };
        crate::plan::make_plan(&self.scenario_of(i), &report, 0)
    }

    /// Layouts pruned, with why.
    pub fn pruned(&self) -> impl Iterator<Item = (&Layout, &Pruned)> {
        self.layouts.iter().filter_map(|(l, f)| match f {
            Fate::Pruned(p) => Some((l, p)),
            Fate::Simulated(_) => None,
        })
    }
}

/// Simulates every candidate; returns them as a report (in candidate order) with the chosen one set, and
/// the scenario whose strategies are the candidates (so a plan can be made from it). See [`search_all`]
/// for the layouts' fates and per-layout scenarios.
pub fn search(
    s: &Scenario,
    routing: &dyn RoutingSource,
    tokens: Option<&crate::strategy::offload::tokens::TokenRouting>,
    cost: Option<&dyn CostModel>,
    opts: RunOptions,
) -> (Scenario, SimulationReport) {
    let o = search_all(s, routing, tokens, cost, opts);
    (o.scenario, o.report)
}

/// Simulates the family candidates, and the layouts that survive pruning (wave by wave, see
/// [`layout_search::run_waves`]), each layout on its own copy of the scenario and its own synthetic
/// routing, for the scenario's iterations. `opts.progress` ticks once per candidate simulated or pruned.
///
/// Offloading candidates replay `tokens` (a per-token trace the caller read) when given, else the
/// scenario's synthetic per-token routing.
pub fn search_all(
    s: &Scenario,
    routing: &dyn RoutingSource,
    tokens: Option<&crate::strategy::offload::tokens::TokenRouting>,
    cost: Option<&dyn CostModel>,
    opts: RunOptions,
) -> SearchOutcome {
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost = cost.unwrap_or(&roofline);
    let quiet = RunOptions {
        progress: None,
        ..opts
    };
    let tick = || {
        if let Some(p) = opts.progress {
            p();
        }
    };
    let mut expanded = s.clone();
    expanded.strategies = families(s);
    let mut results: Vec<StrategyResult> = expanded
        .strategies
        .par_iter()
        .map(|st| {
            let r = match (st.kind, tokens) {
                (StrategyKind::Offload, Some(t)) => {
                    crate::runner::simulate_offload(&expanded, st, cost, t, quiet)
                }
                _ => simulate_strategy(&expanded, st, &topo, cost, routing, quiet),
            };
            tick();
            r
        })
        .collect();
    let layouts = layouts(s);
    let metric = s.objective.metric;
    let estimate = |batch: &[usize]| -> Vec<Option<Estimate>> {
        batch
            .par_iter()
            .map(|&i| {
                let l = &layouts[i];
                let es = layout_search::estimate_scenario(s, l)?;
                let r = simulate_strategy(
                    &es,
                    &l.strategy,
                    &topo,
                    cost,
                    &synthetic_routing(&es),
                    quiet,
                );
                Some(Estimate {
                    score: score(&r, metric),
                    step_ms: r.step_time_ms.mean,
                    memory_gib: r.memory_peak_gib,
                    oom: r.oom,
                })
            })
            .collect()
    };
    let bound = |batch: &[usize]| -> Vec<Option<FromBelow>> {
        batch
            .par_iter()
            .map(|&i| {
                let l = &layouts[i];
                let es = layout_search::estimate_scenario(s, l)?;
                let b = EpModel::pipelined_step_bound(&es, &l.strategy, &topo, cost)?;
                let step_ms = b.seconds * 1e3;
                Some(FromBelow {
                    score: layout_search::step_score(&es, &l.strategy, step_ms),
                    step_ms,
                    operations: b.operations,
                })
            })
            .collect()
    };
    let simulate = |wave: &[usize]| {
        let simulated: Vec<StrategyResult> = wave
            .par_iter()
            .map(|&i| {
                let l = &layouts[i];
                let ls = l.scenario(s);
                let r = simulate_strategy(
                    &ls,
                    &l.strategy,
                    &topo,
                    cost,
                    &synthetic_routing(&ls),
                    quiet,
                );
                tick();
                r
            })
            .collect();
        simulated
            .into_iter()
            .map(|r| {
                let simulated = Simulated {
                    index: results.len(),
                    fits: !r.oom,
                    score: exclusion(&r, s).is_none().then(|| score(&r, metric)),
                    step_ms: r.step_time_ms.mean,
                };
                results.push(r);
                simulated
            })
            .collect()
    };
    let (fates, know) = layout_search::run_waves(
        s,
        &layouts,
        Probes {
            bound,
            estimate,
            simulate,
        },
    );
    // Layout results in layout order (waves simulate them out of order).
    let first = expanded.strategies.len();
    let mut order: Vec<usize> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Simulated(i) => Some(*i),
            Fate::Pruned(_) => None,
        })
        .collect();
    let mut by_index: Vec<Option<StrategyResult>> = results.drain(first..).map(Some).collect();
    let mut renumber = vec![0; by_index.len()];
    for (k, i) in order.iter_mut().enumerate() {
        renumber[*i - first] = first + k;
        results.push(by_index[*i - first].take().expect("each result once"));
    }
    let layouts: Vec<(Layout, Fate)> = layouts
        .into_iter()
        .zip(fates)
        .map(|(l, f)| match f {
            Fate::Simulated(i) => (l, Fate::Simulated(renumber[i - first])),
            pruned => {
                tick();
                (l, pruned)
            }
        })
        .collect();
    expanded.strategies.extend(
        layouts
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Simulated(_)))
            .map(|(l, _)| l.strategy.clone()),
    );
    let mut report = SimulationReport {
        scenario: s.name.clone(),
        results,
        chosen: None,
    };
    report.chosen = choose(&report, &expanded).map(|i| report.results[i].strategy.clone());
    SearchOutcome {
        scenario: expanded,
        report,
        layouts,
        bounds: know.bounds,
        estimates: know.estimates,
    }
}

/// Indices of the results ranked best first under the objective: those the objective allows (they fit
/// in memory and drop at most `objective.max_dropped_fraction`) first, then those it excludes.
pub fn ranking(report: &SimulationReport, s: &Scenario) -> Vec<usize> {
    let metric = s.objective.metric;
    let excluded = |r: &StrategyResult| exclusion(r, s).is_some();
    let mut idx: Vec<usize> = (0..report.results.len()).collect();
    idx.sort_by(|&a, &b| {
        let (ra, rb) = (&report.results[a], &report.results[b]);
        excluded(ra)
            .cmp(&excluded(rb))
            .then(score(ra, metric).total_cmp(&score(rb, metric)))
            .then(a.cmp(&b))
    });
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_scenario;

    #[test]
    fn quickstart_expands_to_hundreds_of_valid_candidates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/quickstart.toml");
        let s = parse_scenario(path, &std::fs::read_to_string(path).unwrap(), &[]).unwrap();
        let c = candidates(&s);
        assert!(c.len() >= 500, "{}", c.len());
        let mut names: Vec<&str> = c.iter().map(|x| x.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), c.len(), "unique names");
        for st in &c {
            let g = s.cluster.gpus();
            assert!(g.is_multiple_of(st.ep_size));
            if let Some(r) = st.replication {
                assert!(
                    r.slots_per_gpu * st.ep_size >= s.model.experts
                        && r.slots_per_gpu <= s.model.experts
                );
            }
        }
    }
}
