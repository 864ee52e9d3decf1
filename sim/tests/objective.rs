//! The objective's quality constraint: tokens/s counts every token of the batch, dropped assignments
//! included, so a strategy that drops most of its work looks fastest. `objective.max_dropped_fraction`
//! (default 1 %) keeps such a strategy from being chosen, by `plan` and by `plan --search`.

use moesim_sim::plan::{Exclusion, choose, exclusion};
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;
use moesim_sim::search::{ranking, search};

/// OLMoE (64 experts, top-8) on one DGX H100 with perfectly balanced routing: every rank sends
/// 1024 × 8 / 64 = 128 tokens to every expert.
const TEXT: &str = r#"
name = "drops"
[model]
preset = "olmoe-1b-7b"
layers = 2
seq_len = 1024
micro_batch = 1
[cluster]
preset = "dgx-h100"
nodes = 1
[workload]
iterations = 2
skew = { distribution = "balanced" }
[[strategy]]
name = "ep8"
kind = "ep"
ep_size = 8
[[strategy]]
name = "ep8-cf0.3"
kind = "ep"
ep_size = 8
capacity_factor = 0.3
"#;

fn run(overrides: &[&str]) -> (moesim_sim::Scenario, moesim_sim::result::SimulationReport) {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let s = parse_scenario("drops.toml", TEXT, &o).unwrap();
    let report = simulate_scenario(
        &s,
        &synthetic_routing(&s),
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    );
    (s, report)
}

fn by_name<'a>(results: &'a [StrategyResult], name: &str) -> &'a StrategyResult {
    results.iter().find(|r| r.strategy == name).unwrap()
}

#[test]
fn a_candidate_dropping_70_percent_is_faster_but_not_chosen() {
    let (s, report) = run(&[]);
    assert_eq!(s.objective.max_dropped_fraction, 0.01, "the default");
    let (keep, drop) = (
        by_name(&report.results, "ep8"),
        by_name(&report.results, "ep8-cf0.3"),
    );
    // Hand count: an EP group of 8 ranks routes 8 × 8192 = 65536 assignments, so each expert may keep
    // ⌈0.3 × 65536 / 64⌉ = 308 of its 1024; each source keeps ⌊128 × 308 / 1024⌋ = 38 of 128 per expert.
    assert_eq!(drop.dropped_fraction, 90.0 / 128.0);
    assert_eq!(keep.dropped_fraction, 0.0);
    // The reason for the constraint: the dropping strategy does less work, so it is faster.
    assert!(
        drop.tokens_per_s > keep.tokens_per_s,
        "{} vs {}",
        drop.tokens_per_s,
        keep.tokens_per_s
    );
    assert!(!drop.oom && !keep.oom);
    assert_eq!(
        exclusion(drop, &s),
        Some(Exclusion::Drops {
            fraction: 90.0 / 128.0,
            limit: 0.01
        })
    );
    assert_eq!(exclusion(keep, &s), None);
    assert_eq!(choose(&report, &s), Some(0), "ep8, which drops nothing");
    assert_eq!(ranking(&report, &s), vec![0, 1]);
}

#[test]
fn a_looser_constraint_lets_the_dropping_candidate_win() {
    let (s, report) = run(&["objective.max_dropped_fraction=0.75"]);
    assert_eq!(choose(&report, &s), Some(1));
    assert_eq!(ranking(&report, &s), vec![1, 0]);
}

#[test]
fn nothing_is_chosen_when_every_candidate_drops_too_much() {
    let (s, report) = run(&["strategy.0.capacity_factor=0.5"]);
    assert!(report.results.iter().all(|r| r.dropped_fraction > 0.01));
    assert_eq!(choose(&report, &s), None);
}

#[test]
fn the_search_never_chooses_a_candidate_above_the_constraint() {
    let (s, _) = run(&[]);
    let routing = synthetic_routing(&s);
    let (expanded, report) = search(
        &s,
        &routing,
        None,
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    );
    // ep8-cf0.3 expands to capacity factors 0.3, 0.45, 0.6 and none, at EP 1, 2, 4 and 8.
    let dropping: Vec<&StrategyResult> = report
        .results
        .iter()
        .filter(|r| r.dropped_fraction > 0.01)
        .collect();
    assert!(dropping.len() >= 12, "{}", dropping.len());
    let best_dropping = dropping.iter().map(|r| r.tokens_per_s).fold(0.0, f64::max);
    let chosen = report.chosen.as_deref().expect("a candidate fits");
    let chosen = by_name(&report.results, chosen);
    assert!(chosen.dropped_fraction <= 0.01, "{}", chosen.strategy);
    assert!(
        best_dropping > chosen.tokens_per_s,
        "a dropping candidate is faster, so the constraint decided"
    );
    let order = ranking(&report, &expanded);
    let allowed = report
        .results
        .iter()
        .filter(|r| exclusion(r, &expanded).is_none())
        .count();
    assert!(
        order[..allowed]
            .iter()
            .all(|&i| exclusion(&report.results[i], &expanded).is_none())
    );
    assert_eq!(report.results[order[0]].strategy, chosen.strategy);
}
