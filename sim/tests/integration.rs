//! The simulator's integration tests, one module per file beside this one, built as one test binary. As 29
//! binaries each compiled and linked the simulator's generics on its own: their times in the test profile
//! summed to about 110 s (cargo `--timings`, 2026-12-04, two shared cores), against about 20 s (33 s of
//! CPU) for this one. `autotests = false` in
//! `sim/Cargo.toml` makes this the only test target, so a new file here must be declared below; the root
//! crate's `every_test_file_is_built` (`tests/integration.rs`) fails until it is.

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
