//! Serving benchmark: `cargo bench -p moesim-sim --bench serving`.
//!
//! One hour of traffic at 10 requests/s (about 36 000 requests) on a 16-GPU deployment: Mixtral-8x7B on
//! two DGX H100 nodes, DP-attention with EP8 (two expert-parallel groups), every step priced by the EP
//! lowering through the step-shape memo. The target is ≤ 10 s on the 2-core build machine.

use moesim_sim::Scenario;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::serving::simulate_serving;

fn main() {
    divan::main();
}

fn scenario(overrides: &[&str]) -> Scenario {
    let path = format!(
        "{}/../scenarios/serving-mixtral.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("scenario");
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    parse_scenario(&path, &text, &overrides).expect("valid scenario")
}

/// The whole hour, from an empty memo (each sample lowers its shapes afresh).
#[divan::bench(sample_count = 3, sample_size = 1)]
fn one_hour_at_10_per_s_on_16_gpus() {
    let mut s = scenario(&["cluster.nodes=2", "workload.serving.duration_s=3600"]);
    s.strategies.truncate(1);
    let r = simulate_serving(&s, None, None).expect("serves");
    assert!(r.results[0].metrics.completed > 30_000);
    divan::black_box(r);
}
