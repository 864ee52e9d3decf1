//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use moesim_sim::Scenario;
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;

/// Loads `scenarios/NAME` from the repository with `--set` style overrides.
pub fn scenario(name: &str, overrides: &[&str]) -> Scenario {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    parse_scenario(&path, &text, &o).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Simulates a scenario on its synthetic workload without wall-clock fields.
pub fn run(s: &Scenario) -> Vec<StrategyResult> {
    simulate_scenario(
        s,
        &synthetic_routing(s),
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    )
    .results
}
