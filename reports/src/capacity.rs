//! Capacity curves: the scenario simulated at several cluster sizes, per strategy — the answer to "how many
//! GPUs for the target throughput".
//!
//! Each point is an ordinary simulation of the scenario with `--set cluster.nodes=N` added to its
//! overrides. Strategies without an `ep_size` follow the cluster (`min(GPUs, experts)`), as they do in the
//! scenario itself. A strategy whose `ep_size` (given or defaulted) does not divide both the GPU count and
//! the expert count at a size has no point there: its EP groups would not tile the cluster, and the
//! scenario itself would not resolve at that size.

use crate::inputs::{InputError, Inputs};
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_offload, simulate_strategy};
use moesim_sim::scenario::file::StrategyKind;
use moesim_sim::scenario::overrides::apply_override;
use moesim_sim::scenario::{Objective, parse_scenario};
use moesim_sim::topology::Topology;
use serde::{Deserialize, Serialize};

/// One strategy at one cluster size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityPoint {
    pub nodes: usize,
    pub gpus: usize,
    pub strategy: String,
    pub kind: String,
    pub step_time_ms_mean: f64,
    pub step_time_ms_p99: f64,
    pub tokens_per_s: f64,
    /// Fraction of (token, expert) assignments dropped by a capacity factor.
    #[serde(default)]
    pub dropped_fraction: f64,
    /// Memory of the GPU with the most (GiB).
    pub memory_peak_gib: f64,
    /// `gpus × memory_peak_gib`: what the whole cluster must hold, at most.
    pub total_memory_gib: f64,
    pub memory_limit_gib: f64,
    /// The objective's quality constraint (`objective.max_dropped_fraction`).
    #[serde(default = "default_max_dropped")]
    pub max_dropped_fraction: f64,
    pub oom: bool,
}

fn default_max_dropped() -> f64 {
    moesim_sim::scenario::DEFAULT_MAX_DROPPED_FRACTION
}

impl CapacityPoint {
    /// The point of `r`, simulated on `nodes` nodes of `gpus` GPUs in total.
    pub fn of(r: &StrategyResult, nodes: usize, gpus: usize, objective: &Objective) -> Self {
        CapacityPoint {
            nodes,
            gpus,
            strategy: r.strategy.clone(),
            kind: r.kind.clone(),
            step_time_ms_mean: r.step_time_ms.mean,
            step_time_ms_p99: r.step_time_ms.p99,
            tokens_per_s: r.tokens_per_s,
            dropped_fraction: r.dropped_fraction,
            memory_peak_gib: r.memory_peak_gib,
            total_memory_gib: r.memory_peak_gib * gpus as f64,
            memory_limit_gib: objective.memory_limit_gib,
            max_dropped_fraction: objective.max_dropped_fraction,
            oom: r.oom,
        }
    }
}

/// The node counts a capacity curve visits by default: from one node up to four times the scenario's.
pub fn default_node_counts(scenario_nodes: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [
        1,
        scenario_nodes / 2,
        scenario_nodes,
        2 * scenario_nodes,
        4 * scenario_nodes,
    ]
    .into_iter()
    .filter(|&n| n >= 1)
    .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Simulates the scenario of `inputs` at every node count, on the same routing workload (its trace
/// replayed onto each size, or its synthetic workload drawn at each size), per-token routing and cost
/// model; points come back ordered by node count, then by strategy order. `progress` is called once per
/// simulated iteration.
pub fn capacity_curve(
    inputs: &Inputs,
    node_counts: &[usize],
    progress: Option<&(dyn Fn() + Sync)>,
) -> Result<Vec<CapacityPoint>, InputError> {
    // The scenario as given: its GPUs per node and experts do not change with the node count.
    let (file, text, overrides) = (
        inputs.file.display().to_string(),
        inputs.text.as_str(),
        &inputs.overrides,
    );
    let base = &inputs.scenario;
    let (gpus_per_node, experts) = (base.cluster.gpus_per_node, base.model.experts);
    let mut doc: toml::Table = toml::from_str(text).unwrap_or_default();
    for o in overrides {
        apply_override(&mut doc, o).expect("the scenario parsed with these overrides");
    }
    let entries: Vec<toml::Value> = doc
        .get("strategy")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    let mut points = Vec::new();
    for &nodes in node_counts {
        let gpus = nodes * gpus_per_node;
        // Strategies whose EP degree (given, or the default min(GPUs, experts)) does not tile this cluster
        // have no point at this size; FSSDP and offloading have no EP degree and always fit.
        let fits = |e: &toml::Value| {
            let kind = e.get("kind").and_then(|k| k.as_str()).unwrap_or("ep");
            if kind != "ep" && kind != "ep-replicated" {
                return true;
            }
            let ep = e
                .get("ep_size")
                .and_then(|x| x.as_integer())
                .unwrap_or(gpus.min(experts) as i64);
            ep > 0
                && gpus.is_multiple_of(ep as usize)
                && (kind == "ep-replicated" || experts.is_multiple_of(ep as usize))
        };
        let kept: Vec<toml::Value> = entries.iter().filter(|e| fits(e)).cloned().collect();
        if kept.is_empty() {
            continue;
        }
        let mut at_size = doc.clone();
        at_size.insert("strategy".into(), toml::Value::Array(kept));
        apply_override(&mut at_size, &format!("cluster.nodes={nodes}")).expect("a table");
        let text_at_size = toml::to_string(&at_size).expect("a TOML table serialises");
        let s = parse_scenario(&file, &text_at_size, &[])?;
        let topo = Topology::build(&s.cluster);
        let roofline = s.cluster.roofline();
        let cost = inputs.cost().unwrap_or(&roofline);
        let routing = inputs.routing_for(&s)?;
        let opts = RunOptions {
            timing: false,
            progress,
        };
        for st in &s.strategies {
            let r = match (st.kind, inputs.tokens.as_deref()) {
                (StrategyKind::Offload, Some(t)) => simulate_offload(&s, st, cost, t, opts),
                _ => simulate_strategy(&s, st, &topo, cost, routing.as_ref(), opts),
            };
            points.push(CapacityPoint::of(&r, s.cluster.nodes, gpus, &s.objective));
        }
    }
    Ok(points)
}

/// The fewest GPUs at which `strategy` reaches `tokens_per_s` without running out of memory or dropping
/// more assignments than the objective allows.
pub fn gpus_for(points: &[CapacityPoint], strategy: &str, tokens_per_s: f64) -> Option<usize> {
    points
        .iter()
        .filter(|p| {
            p.strategy == strategy
                && !p.oom
                && p.dropped_fraction <= p.max_dropped_fraction
                && p.tokens_per_s >= tokens_per_s
        })
        .map(|p| p.gpus)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::runner::{simulate_scenario, synthetic_routing};

    fn curve(overrides: &[&str], nodes: &[usize]) -> Vec<CapacityPoint> {
        let o = overrides.iter().map(|s| s.to_string()).collect();
        let inputs = Inputs::resolve("c.toml".as_ref(), TEXT.into(), o, None).unwrap();
        capacity_curve(&inputs, nodes, None).unwrap()
    }

    const TEXT: &str = r#"
[model]
preset = "olmoe-1b-7b"
layers = 2
seq_len = 1024
[cluster]
preset = "dgx-h100"
nodes = 2
[workload]
iterations = 3
skew = { distribution = "zipf", s = 0.8 }
[[strategy]]
name = "ep16"
kind = "ep"
ep_size = 16
[[strategy]]
name = "ep8"
kind = "ep"
ep_size = 8
[[strategy]]
name = "auto"
kind = "ep"
"#;

    #[test]
    fn points_equal_separate_simulations_at_those_sizes() {
        let points = curve(&[], &[1, 2, 4]);
        for nodes in [1usize, 2, 4] {
            let s = parse_scenario(
                "c.toml",
                &TEXT.replace("nodes = 2", &format!("nodes = {nodes}")),
                &[],
            );
            // At one node ep16 cannot tile 8 GPUs: the scenario itself is invalid there.
            let s = match s {
                Ok(s) => s,
                Err(_) => {
                    assert_eq!(nodes, 1);
                    parse_scenario(
                        "c.toml",
                        TEXT,
                        &["cluster.nodes=1".into(), "strategy.0.ep_size=8".into()],
                    )
                    .unwrap()
                }
            };
            let report = simulate_scenario(
                &s,
                &synthetic_routing(&s),
                None,
                RunOptions {
                    timing: false,
                    progress: None,
                },
            );
            let at: Vec<&CapacityPoint> = points.iter().filter(|p| p.nodes == nodes).collect();
            let expected: Vec<CapacityPoint> = report
                .results
                .iter()
                .filter(|r| !(nodes == 1 && r.strategy == "ep16"))
                .map(|r| CapacityPoint::of(r, nodes, s.cluster.gpus(), &s.objective))
                .collect();
            assert_eq!(at.len(), expected.len(), "nodes {nodes}");
            for (a, e) in at.iter().zip(&expected) {
                assert_eq!(*a, e);
            }
        }
    }

    #[test]
    fn more_gpus_never_lower_total_memory() {
        let points = curve(&[], &[1, 2, 4, 8]);
        for name in ["ep16", "ep8", "auto"] {
            let curve: Vec<&CapacityPoint> = points.iter().filter(|p| p.strategy == name).collect();
            assert!(curve.len() >= 3, "{name}");
            assert!(curve.windows(2).all(|w| w[0].gpus < w[1].gpus));
            for w in curve.windows(2) {
                assert!(
                    w[1].total_memory_gib >= w[0].total_memory_gib,
                    "{name}: {} GiB at {} GPUs, {} GiB at {} GPUs",
                    w[0].total_memory_gib,
                    w[0].gpus,
                    w[1].total_memory_gib,
                    w[1].gpus
                );
            }
        }
    }

    #[test]
    fn sizes_where_a_strategy_cannot_tile_leave_only_that_strategy_out() {
        // Three nodes: 24 GPUs. ep16 does not divide 24; the default min(24, 64) = 24 does not divide 64.
        let points = curve(&[], &[3]);
        let names: Vec<&str> = points.iter().map(|p| p.strategy.as_str()).collect();
        assert_eq!(names, ["ep8"]);
        assert_eq!(points[0].gpus, 24);
    }

    #[test]
    fn an_ep_size_set_by_override_is_respected() {
        let points = curve(&["strategy.auto.ep_size=16"], &[1, 2]);
        assert!(!points.iter().any(|p| p.nodes == 1 && p.strategy == "auto"));
        assert!(points.iter().any(|p| p.nodes == 2 && p.strategy == "auto"));
    }

    #[test]
    fn strategies_that_do_not_tile_are_left_out_and_gpus_for_finds_the_smallest() {
        let points = curve(&[], &[1, 2]);
        assert!(!points.iter().any(|p| p.nodes == 1 && p.strategy == "ep16"));
        assert!(points.iter().any(|p| p.nodes == 1 && p.strategy == "ep8"));
        let one_node = points
            .iter()
            .find(|p| p.nodes == 1 && p.strategy == "ep8")
            .unwrap();
        let two_nodes = points
            .iter()
            .find(|p| p.nodes == 2 && p.strategy == "ep8")
            .unwrap();
        assert!(!one_node.oom && !two_nodes.oom);
        // Any throughput one node reaches needs 8 GPUs; more than one node reaches needs 16.
        assert_eq!(gpus_for(&points, "ep8", one_node.tokens_per_s), Some(8));
        if two_nodes.tokens_per_s > one_node.tokens_per_s {
            assert_eq!(gpus_for(&points, "ep8", two_nodes.tokens_per_s), Some(16));
        }
        assert_eq!(gpus_for(&points, "ep8", f64::INFINITY), None);
        assert_eq!(default_node_counts(2), vec![1, 2, 4, 8]);
        assert_eq!(default_node_counts(1), vec![1, 2, 4]);
    }

    /// A scenario that names a trace: every capacity point replays it (onto its cluster size), so the
    /// point at the scenario's own size equals `simulate` on the same inputs.
    #[test]
    fn capacity_points_replay_the_scenarios_trace() {
        use moesim_traces::tokengen::TokenModel;
        let dir = tempfile::tempdir().unwrap();
        let model = TokenModel {
            layers: 2,
            experts: 64,
            top_k: 8,
            skew: moesim_traces::Skew::Zipf { s: 1.4 },
            shuffle_per_layer: true,
            locality: 0.0,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
            drift: Default::default(),
            seed: 9,
        };
        let trace = moesim_traces::Trace::Tokens(model.generate(16, 1024).unwrap());
        moesim_traces::native::write_native(&dir.path().join("t.moetrace"), &trace).unwrap();
        let text = TEXT.replace("[workload]\n", "[workload]\ntrace = \"t.moetrace\"\n");
        let file = dir.path().join("c.toml");
        let inputs = Inputs::resolve(&file, text.clone(), vec![], None).unwrap();
        let synthetic = Inputs::resolve(
            &file,
            text.replace("trace = \"t.moetrace\"\n", ""),
            vec![],
            None,
        )
        .unwrap();
        let points = capacity_curve(&inputs, &[2], None).unwrap();
        let run = RunOptions {
            timing: false,
            progress: None,
        };
        let direct = inputs.simulate(run).unwrap();
        let drawn = synthetic.simulate(run).unwrap();
        assert_eq!(points.len(), direct.results.len());
        for ((p, r), s) in points.iter().zip(&direct.results).zip(&drawn.results) {
            assert_eq!(p.step_time_ms_mean, r.step_time_ms.mean, "{}", p.strategy);
            assert_ne!(p.step_time_ms_mean, s.step_time_ms.mean, "{}", p.strategy);
        }
    }

    #[test]
    fn gpus_for_skips_sizes_that_drop_more_than_allowed() {
        let point = |gpus: usize, dropped_fraction: f64| CapacityPoint {
            nodes: gpus / 8,
            gpus,
            strategy: "x".into(),
            kind: "ep".into(),
            step_time_ms_mean: 1.0,
            step_time_ms_p99: 1.0,
            tokens_per_s: 100.0,
            dropped_fraction,
            memory_peak_gib: 1.0,
            total_memory_gib: gpus as f64,
            memory_limit_gib: 80.0,
            max_dropped_fraction: 0.01,
            oom: false,
        };
        let points = [point(8, 0.5), point(16, 0.005)];
        assert_eq!(gpus_for(&points, "x", 100.0), Some(16));
        assert_eq!(gpus_for(&points[..1], "x", 100.0), None);
    }
}
