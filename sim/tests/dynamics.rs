//! `workload.dynamics`: synthetic popularity that drifts and rotates over iterations reaches the simulator.

use crate::common;
use common::{run, scenario};
use moesim_sim::runner::synthetic_routing;
use moesim_traces::RoutingSource;

#[test]
fn drifting_popularity_changes_the_hot_experts_between_iterations() {
    let still = scenario("quickstart.toml", &["workload.iterations=12"]);
    let moving = scenario(
        "quickstart.toml",
        &[
            "workload.iterations=12",
            "workload.dynamics={ drift_sigma = 0.8, drift_persistence = 0.5, rotate_every = 3 }",
        ],
    );
    let hottest = |s: &moesim_sim::Scenario, it: usize| {
        let loads = synthetic_routing(s).iteration(it).expert_loads(0, 0);
        (0..loads.len()).max_by_key(|&e| loads[e]).unwrap()
    };
    assert!((0..12).all(|it| hottest(&still, it) == hottest(&still, 0)));
    assert!((0..12).any(|it| hottest(&moving, it) != hottest(&moving, 0)));
    // The straggler moves with the hot expert: static EP sees more than one straggling rank.
    let ep = run(&moving)
        .into_iter()
        .find(|r| r.strategy == "ep16")
        .unwrap();
    assert!(ep.stragglers.len() > 1, "{:?}", ep.stragglers);
}

#[test]
fn invalid_dynamics_point_at_the_field() {
    let e = common::scenario_error(
        "quickstart.toml",
        "workload.dynamics={ drift_persistence = 2.0 }",
    );
    assert!(e.contains("workload.dynamics"), "{e}");
}
