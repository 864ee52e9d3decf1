//! Helpers shared by the simulator's integration tests.
#![allow(dead_code)]

use moesim_sim::Scenario;
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;
use std::path::PathBuf;

/// Loads `scenarios/NAME` from the repository with `--set` style overrides.
pub fn scenario(name: &str, overrides: &[&str]) -> Scenario {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    parse_scenario(&path, &text, &o).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The error message `scenarios/NAME` with one `--set` override must be rejected with.
pub fn scenario_error(name: &str, set: &str) -> String {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    match parse_scenario(&path, &text, &[set.to_string()]) {
        Ok(_) => panic!("{path} with {set}: accepted"),
        Err(e) => e.message,
    }
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

/// The root of the real router traces: `$MOESIM_SHARED_TRACES` (relative to the workspace root), default
/// `../shared/traces` beside the workspace.
pub fn real_traces_root() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("MOESIM_SHARED_TRACES") {
        Some(p) => workspace.join(p),
        None => workspace.join("../shared/traces"),
    }
}

/// The real traces' folder `sub`. The tests that call this are marked
/// `#[cfg_attr(moesim_real_traces_missing, ignore = "…")]`, so without the traces they are reported as
/// ignored; reaching here without them (under CI, or after the traces were removed) fails the test.
pub fn shared_traces(sub: &str) -> PathBuf {
    let dir = real_traces_root().join(sub);
    assert!(
        dir.exists(),
        "the real router traces are missing at {} (required under CI; elsewhere rebuild so that these tests \
         are reported as ignored, e.g. `touch build.rs`)",
        dir.display()
    );
    dir
}

/// Iteration 0 of the scenario's first strategy, which must be `ep` (static or replicated, any layout),
/// simulated on its own synthetic routing: the record with its per-phase bytes and routed tokens.
pub fn ep_iteration(s: &Scenario) -> moesim_sim::strategy::record::IterationRecord {
    use moesim_sim::strategy::ep::{EpModel, EpWorkspace};
    let strategy = &s.strategies[0];
    let topo = moesim_sim::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let routing =
        moesim_sim::runner::synthetic_routing_shaped(s, EpModel::routing_shape_for(s, strategy));
    let model = EpModel::new(s, strategy, &topo, &cost, &routing);
    model.simulate_iteration(0, &mut EpWorkspace::default())
}

/// Mixtral's shapes (8 layers) on 8 GPUs of an ideal roofline whose links are so fast that communication
/// is negligible; balanced routing, no noise, a negligible output head; one strategy of kind `kind` with
/// the `strategy` lines, `extra` lines in `[model]`.
pub fn ideal_pipeline(kind: &str, strategy: &str, micro_batches: usize, extra: &str) -> Scenario {
    let text = format!(
        "name = \"pp\"\nseed = 3\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 8\nvocab = 8\nseq_len = 4096\n\
         micro_batch = 1\n{extra}\n[cluster]\npreset = \"ideal\"\ngpus_per_node = 8\npeak_tflops = 1000.0\n\
         ideal_link_gbytes_per_s = 1e9\nideal_latency_us = 0.0\n[workload]\nmode = \"training\"\n\
         iterations = 1\nmicro_batches = {micro_batches}\nskew = {{ distribution = \"balanced\" }}\n\
         [[strategy]]\nname = \"s\"\nkind = \"{kind}\"\n{strategy}\n"
    );
    parse_scenario("pp.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Asserts that `s` with 5 % compute noise gives the same JSON results on one thread as on two (each
/// iteration's noise is keyed by its index, never by the thread that runs it).
pub fn assert_same_on_one_and_two_threads(s: &Scenario) {
    let s = Scenario {
        cluster: moesim_sim::scenario::cluster::Cluster {
            compute_noise_cv: 0.05,
            ..s.cluster.clone()
        },
        ..s.clone()
    };
    let json = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool")
            .install(|| serde_json::to_string(&run(&s)).expect("results serialise"))
    };
    assert_eq!(json(1), json(2));
}

/// `s` over 4 iterations with skewed routing (log-normal σ = 1) and links of 100 GB/s, so that a moved
/// expert copy takes time to arrive.
pub fn skewed_over_slow_links(mut s: Scenario) -> Scenario {
    s.workload.skew = moesim_traces::Skew::LogNormal { sigma: 1.0 };
    s.cluster.ideal_link_gbytes_per_s = 100.0;
    s.workload.iterations = 4;
    s
}

/// Relative difference of `a` from `b`.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}
