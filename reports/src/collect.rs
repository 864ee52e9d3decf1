//! Everything one scenario's report shows, simulated and gathered: the strategies' results, per-rank
//! figures per iteration, routing load under each placement, and the capacity curve.

use crate::capacity::{CapacityPoint, capacity_curve};
use crate::inputs::{InputError, Inputs};
use crate::load::{LoadStats, load_stats};
use crate::trace::chrome_trace;
use moesim_sim::Scenario;
use moesim_sim::engine::to_ms;
use moesim_sim::memory::{RoutedTokens, rank_memory};
use moesim_sim::plan::choose;
use moesim_sim::result::SimulationReport;
use moesim_sim::runner::RunOptions;
use moesim_sim::strategy::ep::{params_on_rank, slots_per_rank};
use moesim_sim::timeline::iteration_timelines;
use moesim_traces::RoutingSource;
use serde::{Deserialize, Serialize};

/// Where a scenario came from, so that a report can be reproduced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The scenario file as named on the command line.
    pub file: String,
    /// Its text.
    pub text: String,
    /// `--set` overrides applied to it.
    pub overrides: Vec<String>,
    /// One line about the routing workload (`RoutingSource::describe`).
    pub workload: String,
    /// FNV-1a 64 of the routing counts of every simulated iteration, in hex.
    pub workload_checksum: String,
    /// Which cost model priced the operations.
    pub cost_profile: String,
    pub moesim_version: String,
}

/// Per-rank values of every iteration of one strategy: `[rank][iteration]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RankIterations {
    pub busy_ms: Vec<Vec<f64>>,
    pub tokens: Vec<Vec<f64>>,
    /// Per rank: peak memory (GiB) over the iterations, where the strategy's memory model is known
    /// per rank (EP: the same parameters on every rank, activations sized by the rank's own peak routed
    /// tokens); empty otherwise. Its maximum is the strategy's `memory_peak_gib`.
    pub memory_gib: Vec<f64>,
}

/// What to compute besides the plain simulation.
#[derive(Debug, Clone, Default)]
pub struct CollectOptions {
    /// Node counts of the capacity curve (none: no curve).
    pub capacity_nodes: Vec<usize>,
}

/// One scenario, simulated and gathered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioData {
    pub scenario: Scenario,
    pub inputs: Provenance,
    pub report: SimulationReport,
    /// Index of the strategy `plan` would choose (`None`: all out of memory).
    pub chosen: Option<usize>,
    /// Per strategy, when the strategy kind supports per-iteration timelines.
    pub rank_iterations: Vec<Option<RankIterations>>,
    /// Per strategy, when it has a placement.
    #[serde(skip)]
    pub loads: Vec<Option<LoadStats>>,
    pub capacity: Vec<CapacityPoint>,
    /// Offloading: hit rate and TPOT per cache policy and size (empty without an offloading strategy).
    #[serde(default)]
    pub cache_curve: Vec<crate::cache_curve::CachePoint>,
    /// Chrome trace of the first iterations of the chosen strategy (or the first), when its kind has
    /// timelines.
    #[serde(skip)]
    pub trace: Option<(String, serde_json::Value)>,
}

/// How many iterations the report's timeline shows.
pub const TRACE_ITERATIONS: usize = 1;

/// FNV-1a over the routing counts of the first `iterations` iterations: two reports with the same
/// checksum saw the same tokens go to the same experts.
pub fn workload_checksum(routing: &dyn RoutingSource, iterations: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for it in 0..iterations.min(routing.iterations()) {
        for c in routing.iteration(it).counts {
            for b in c.to_le_bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    format!("{h:016x}")
}

/// Simulates the resolved `inputs` (scenario, routing, per-token routing, cost model) and gathers what
/// its report shows. `progress` is called once per simulated iteration.
pub fn collect(
    inputs: &Inputs,
    opts: &CollectOptions,
    moesim_version: &str,
    progress: Option<&(dyn Fn() + Sync)>,
) -> Result<ScenarioData, InputError> {
    let s = inputs.scenario.clone();
    let routing = inputs.routing.as_ref();
    let cost = inputs.cost();
    let run = RunOptions {
        timing: false,
        progress,
    };
    let mut report = inputs.simulate(run)?;
    let cache_curve = if s
        .strategies
        .iter()
        .any(|st| st.kind == moesim_sim::scenario::file::StrategyKind::Offload)
    {
        let synthetic = moesim_sim::strategy::offload::tokens::TokenRouting::synthetic(&s);
        let roofline = s.cluster.roofline();
        crate::cache_curve::cache_curve(
            &s,
            cost.unwrap_or(&roofline),
            inputs.tokens.as_deref().unwrap_or(&synthetic),
        )
    } else {
        Vec::new()
    };
    let chosen = choose(&report, &s);
    report.chosen = chosen.map(|i| report.results[i].strategy.clone());
    let rank_iterations = s
        .strategies
        .iter()
        .zip(&report.results)
        .map(|(st, r)| {
            let tl = iteration_timelines(&s, st, routing, cost, 0..r.iterations).ok()?;
            let ranks = s.cluster.gpus();
            Some(RankIterations {
                busy_ms: (0..ranks)
                    .map(|k| tl.iter().map(|t| to_ms(t.busy[k])).collect())
                    .collect(),
                tokens: (0..ranks)
                    .map(|k| tl.iter().map(|t| t.tokens_received[k] as f64).collect())
                    .collect(),
                memory_gib: if r.kind == "ep" || r.kind == "ep-replicated" {
                    let params = params_on_rank(&s, slots_per_rank(&s, st));
                    (0..ranks)
                        .map(|k| {
                            let routed = RoutedTokens {
                                peak_layer: tl
                                    .iter()
                                    .map(|t| t.peak_layer_tokens[k])
                                    .max()
                                    .unwrap_or(0)
                                    as f64,
                                all_layers: tl
                                    .iter()
                                    .map(|t| t.activation_tokens[k])
                                    .max()
                                    .unwrap_or(0)
                                    as f64,
                            };
                            rank_memory(&s, params, routed).total_gib
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
        })
        .collect();
    let loads = report
        .results
        .iter()
        .map(|r| (!r.placement.is_empty()).then(|| load_stats(routing, r.iterations, &r.placement)))
        .collect();
    let shown = chosen.unwrap_or(0);
    let trace = s.strategies.get(shown).and_then(|st| {
        let n = report.results[shown].iterations.min(TRACE_ITERATIONS);
        let tl = iteration_timelines(&s, st, routing, cost, 0..n).ok()?;
        Some((
            st.name.clone(),
            chrome_trace(&st.name, s.cluster.gpus(), &tl),
        ))
    });
    let capacity = if opts.capacity_nodes.is_empty() {
        Vec::new()
    } else {
        capacity_curve(inputs, &opts.capacity_nodes, progress)?
    };
    Ok(ScenarioData {
        inputs: Provenance {
            file: inputs.file.display().to_string(),
            text: inputs.text.clone(),
            overrides: inputs.overrides.clone(),
            workload: routing.describe(),
            workload_checksum: workload_checksum(routing, s.workload.iterations),
            cost_profile: inputs.cost_label.clone(),
            moesim_version: moesim_version.to_string(),
        },
        scenario: s,
        report,
        chosen,
        rank_iterations,
        loads,
        capacity,
        cache_curve,
        trace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::runner::synthetic_routing;
    use moesim_sim::scenario::parse_scenario;

    const TEXT: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 3
seq_len = 1024
[cluster]
preset = "dgx-h100"
nodes = 2
compute_noise_cv = 0.03
[workload]
iterations = 3
skew = { distribution = "zipf", s = 1.1 }
[[strategy]]
name = "ep16"
kind = "ep"
ep_size = 16
[[strategy]]
name = "ep8"
kind = "ep"
ep_size = 8
capacity_factor = 1.5
"#;

    fn data() -> ScenarioData {
        let inputs = Inputs::resolve("c.toml".as_ref(), TEXT.into(), vec![], None).unwrap();
        collect(&inputs, &CollectOptions::default(), "t", None).unwrap()
    }

    #[test]
    fn per_rank_views_agree_with_the_aggregates() {
        let d = data();
        for (r, ri) in d.report.results.iter().zip(&d.rank_iterations) {
            let ri = ri.as_ref().expect("EP has timelines");
            assert_eq!(ri.busy_ms.len(), 16);
            let peak = ri.memory_gib.iter().copied().fold(0.0, f64::max);
            assert!(
                (peak - r.memory_peak_gib).abs() < 1e-9,
                "{}: {peak} vs {}",
                r.strategy,
                r.memory_peak_gib
            );
            assert!(
                ri.memory_gib.iter().any(|m| *m < peak),
                "skewed routing: not every GPU is the fullest"
            );
            for (k, summary) in r.per_rank.iter().enumerate() {
                let busy = ri.busy_ms[k].iter().sum::<f64>() / 3.0;
                let tokens = ri.tokens[k].iter().sum::<f64>() / 3.0;
                assert!((busy - summary.busy_ms).abs() <= 1e-9 * summary.busy_ms);
                assert!(
                    (tokens - summary.tokens_received).abs()
                        <= 1e-9 * summary.tokens_received.max(1.0)
                );
            }
        }
        assert_eq!(
            d.chosen.map(|i| d.report.results[i].strategy.clone()),
            d.report.chosen
        );
        assert!(d.trace.is_some());
        assert!(d.capacity.is_empty());
    }

    #[test]
    fn the_checksum_follows_the_routing() {
        let s = parse_scenario("c.toml", TEXT, &[]).unwrap();
        let other = parse_scenario("c.toml", TEXT, &["seed=1".into()]).unwrap();
        let a = workload_checksum(&synthetic_routing(&s), 3);
        assert_eq!(a, workload_checksum(&synthetic_routing(&s), 3));
        assert_ne!(a, workload_checksum(&synthetic_routing(&other), 3));
        assert_ne!(a, workload_checksum(&synthetic_routing(&s), 2));
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn a_profile_prices_the_report_as_it_prices_simulate() {
        // An A100 profile on the H100 cluster: slower GEMMs than the cluster's own roofline.
        let o = vec!["cluster.profile=a100-datasheet".to_string()];
        let with = Inputs::resolve("c.toml".as_ref(), TEXT.into(), o, None).unwrap();
        let without = Inputs::resolve("c.toml".as_ref(), TEXT.into(), vec![], None).unwrap();
        let d = collect(&with, &CollectOptions::default(), "t", None).unwrap();
        assert!(
            d.inputs.cost_profile.starts_with("profile a100-datasheet"),
            "{}",
            d.inputs.cost_profile
        );
        let run = RunOptions {
            timing: false,
            progress: None,
        };
        let direct = with.simulate(run).unwrap();
        let roofline = without.simulate(run).unwrap();
        for ((r, x), y) in d
            .report
            .results
            .iter()
            .zip(&direct.results)
            .zip(&roofline.results)
        {
            assert_eq!(r.step_time_ms.mean, x.step_time_ms.mean, "{}", r.strategy);
            // The profile is not the roofline: the report would differ had it ignored the profile.
            assert_ne!(r.step_time_ms.mean, y.step_time_ms.mean, "{}", r.strategy);
        }
    }
}
