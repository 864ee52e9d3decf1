//! Memory per rank against the formula in `memory.rs`.

mod common;
use common::{run, scenario};
use moesim_sim::memory::GIB;

#[test]
fn training_memory_matches_the_formula() {
    let s = scenario(
        "quickstart.toml",
        &[
            "workload.iterations=1",
            "training.zero_stage=0",
            "cluster.compute_noise_cv=0",
        ],
    );
    let r = &run(&s)[0]; // ep16: 4 experts per rank per layer, dense replicated on 16 ranks
    let m = &s.model;
    let experts = (m.moe_layers() * 4) as f64 * m.expert_params() as f64;
    let params = m.dense_params() as f64 + experts;
    // bf16 weights (2), bf16 grads (2), Adam (12): 16 bytes per parameter without ZeRO.
    assert!((r.memory.params_gib - 2.0 * params / GIB).abs() < 1e-9);
    assert!((r.memory.optimizer_gib - 12.0 * params / GIB).abs() < 1e-9);
    // ZeRO-1 shards the optimizer: dense over 16 replicas, experts over 1 (EP over all ranks).
    let s1 = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "training.zero_stage=1"],
    );
    let r1 = &run(&s1)[0];
    let opt1 = 12.0 * (m.dense_params() as f64 / 16.0 + experts) / GIB;
    assert!((r1.memory.optimizer_gib - opt1).abs() < 1e-9);
    assert!(r1.memory.total_gib < r.memory.total_gib);
}

#[test]
fn oom_is_flagged_against_the_memory_limit() {
    let s = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "objective.memory_limit_gib=1"],
    );
    assert!(run(&s).iter().all(|r| r.oom));
    let s = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "objective.memory_limit_gib=1000"],
    );
    assert!(run(&s).iter().all(|r| !r.oom));
}
