//! The simulator's integration tests, one module per file beside this one, built as one test binary. As 29
//! binaries each compiled and linked the simulator's generics on its own: their times in the test profile
//! summed to about 110 s (cargo `--timings`, 2026-12-04, two shared cores), against about 20 s (33 s of
//! CPU) for this one. `autotests = false` in
//! `sim/Cargo.toml` makes this the only test target, so a new file here must be declared below;
//! [`every_test_file_is_a_module_of_this_binary`] fails until it is.

mod common;

mod closed_form;
mod conservation;
mod dynamics;
mod expert_tensor_parallel;
mod forecast;
mod fssdp;
mod fssdp_pipeline;
mod fssdp_tensor_parallel;
mod group_limited;
mod inference;
mod inference_parallel;
mod issue13;
mod memory;
mod network;
mod objective;
mod offload;
mod overlap;
mod pipeline_schedules;
mod pipeline_strategy;
mod placement_harness;
mod placement_real;
mod quickstart_workload;
mod rank_order;
mod recompute;
mod replication;
mod routing_samples;
mod scenario_props;
mod stragglers;
mod training_extras;

/// A test file not declared as a module above would never be compiled, and its tests would silently not
/// run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(dir.join("integration.rs")).expect("tests/integration.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("a tests/ entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs")
            && stem != "integration"
            && !this.lines().any(|l| l == format!("mod {stem};"))
        {
            missing.push(stem.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "tests/*.rs not declared in tests/integration.rs (never built, never run): {missing:?}"
    );
}
