//! Stragglers from per-rank speed, and the step-time distribution.

use crate::common;
use common::{run, scenario};
use moesim_sim::collective::Cause;

#[test]
fn a_slow_gpu_is_named_with_compute_as_the_cause() {
    let s = scenario(
        "ideal-switch.toml",
        &["cluster.slow_ranks=[{ rank = 3, speed = 0.5 }]"],
    );
    let r = &run(&s)[0];
    assert_eq!(r.stragglers.len(), 1, "{:?}", r.stragglers);
    assert_eq!(r.stragglers[0].rank, 3);
    assert_eq!(r.stragglers[0].cause, Cause::Compute);
    assert!((r.stragglers[0].critical_share - 1.0).abs() < 1e-12);
    // Half speed doubles that rank's compute, and everyone else waits for it.
    let base = &run(&scenario("ideal-switch.toml", &[]))[0];
    assert!(
        (r.breakdown_ms["expert_compute"] / base.breakdown_ms["expert_compute"] - 2.0).abs() < 1e-6
    );
    assert!(r.per_rank[0].idle_ms > r.per_rank[3].idle_ms);
}

#[test]
fn noise_spreads_the_step_time_distribution() {
    let quiet = &run(&scenario(
        "quickstart.toml",
        &["workload.iterations=12", "cluster.compute_noise_cv=0"],
    ))[1];
    let noisy = &run(&scenario(
        "quickstart.toml",
        &["workload.iterations=12", "cluster.compute_noise_cv=0.2"],
    ))[1];
    let d = noisy.step_time_ms;
    assert!(d.p50 <= d.p90 && d.p90 <= d.p99 && d.p99 <= d.max);
    let spread = |d: moesim_sim::stats::Distribution| (d.max - d.p50) / d.p50;
    assert!(spread(noisy.step_time_ms) > spread(quiet.step_time_ms));
    // The slowest draw per iteration holds everyone: noise makes the mean step longer, never shorter.
    assert!(noisy.step_time_ms.mean > quiet.step_time_ms.mean);
}

#[test]
fn breakdown_adds_up_to_the_step_time() {
    for r in run(&scenario("quickstart.toml", &["workload.iterations=4"])) {
        let sum: f64 = r.breakdown_ms.values().sum();
        assert!(
            (sum - r.step_time_ms.mean).abs() < 1e-6 * r.step_time_ms.mean,
            "{}: {sum} vs {}",
            r.strategy,
            r.step_time_ms.mean
        );
    }
}
