//! Straggler prediction: the window after `plan_until`, predicted from the routing before it.

use crate::common;
use common::{run, scenario};
use moesim_sim::stats::percentile;

#[test]
fn prediction_error_is_within_the_targets_and_names_the_straggler() {
    let s = scenario(
        "quickstart.toml",
        &[
            "workload.iterations=60",
            "workload.plan_until=30",
            "cluster.compute_noise_cv=0.1",
        ],
    );
    let results = run(&s);
    for r in &results {
        let f = r.forecast.as_ref().expect("forecast block");
        assert_eq!(f.plan_until, 30);
        assert!(
            f.error.p50 <= 0.05,
            "{}: p50 error {}",
            r.strategy,
            f.error.p50
        );
        assert!(
            f.error.p99 <= 0.10,
            "{}: p99 error {}",
            r.strategy,
            f.error.p99
        );
        // The realized figures are the simulated window's own.
        let mut later: Vec<f64> = r.per_iteration[30..].iter().map(|i| i.step_ms).collect();
        later.sort_by(f64::total_cmp);
        assert!((f.realized_step_time_ms.p50 - percentile(&later, 0.5)).abs() < 1e-9);
        // Confidence intervals bracket the predicted quantiles.
        let p = &f.predicted_step_time_ms;
        assert!(p.p50_ci[0] <= p.p50 && p.p50 <= p.p50_ci[1]);
        assert!(p.p99_ci[0] <= p.p99 && p.p99 <= p.p99_ci[1]);
        let total: f64 = f
            .predicted_critical_ranks
            .iter()
            .map(|c| c.probability)
            .sum();
        assert!(total <= 1.0 + 1e-9);
    }
    // Static EP's straggler is the rank with the hottest experts: predicted and realized agree.
    let ep = results.iter().find(|r| r.strategy == "ep16").unwrap();
    let f = ep.forecast.as_ref().unwrap();
    assert_eq!(
        f.predicted_critical_ranks[0].rank,
        f.realized_critical_ranks[0].rank
    );
}

#[test]
fn plan_until_must_leave_history_and_a_window() {
    let path = format!(
        "{}/../scenarios/quickstart.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    for bad in ["workload.plan_until=0", "workload.plan_until=30"] {
        let e = moesim_sim::scenario::parse_scenario(&path, &text, &[bad.into()]).unwrap_err();
        assert!(e.message.contains("workload.plan_until"), "{}", e.message);
    }
}
