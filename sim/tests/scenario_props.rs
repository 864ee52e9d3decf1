//! Issue 18, property tests: the scenario parser with any `--set` overrides (extreme integers, non-finite
//! and huge floats, wrong types) returns a scenario or an error, never panics, and a scenario it accepts
//! is within the limits checked before a run.

use moesim_sim::scenario::limits;
use moesim_sim::scenario::parse_scenario;
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "workload.iterations",
    "workload.micro_batches",
    "workload.skew.s",
    "workload.dynamics.drift_sigma",
    "workload.dynamics.burst_factor",
    "workload.dynamics.burst_prob",
    "workload.dynamics.rotate_every",
    "workload.plan_until",
    "model.layers",
    "model.experts",
    "model.top_k",
    "model.d_model",
    "model.seq_len",
    "model.micro_batch",
    "model.first_dense_layers",
    "cluster.nodes",
    "cluster.gpus_per_node",
    "cluster.nic_latency_us",
    "cluster.launch_overhead_us",
    "cluster.compute_noise_cv",
    "cluster.peak_tflops",
    "cluster.comm_sm_fraction",
    "training.optimizer_bytes_per_param",
    "training.zero_stage",
    "strategy.0.ep_size",
    "strategy.0.capacity_factor",
    "strategy.0.overlap_micro_batches",
    "strategy.3.slots_per_gpu",
    "strategy.3.replan_interval",
    "objective.memory_limit_gib",
    "objective.max_dropped_fraction",
    "limits.max_work",
    "limits.max_memory_gib",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        (0u64..64).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        prop::sample::select(vec![
            "nan", "inf", "-inf", "1e308", "-0.0", "0.5", "\"x\"", "[1, 2]", "true"
        ])
        .prop_map(String::from),
    ]
}

fn overrides() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k}={v}")),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_overrides_give_a_scenario_within_limits_or_an_error(sets in overrides()) {
        let text = include_str!("../../scenarios/quickstart.toml");
        match parse_scenario("quickstart.toml", text, &sets) {
            Ok(s) => {
                let cost = limits::estimate(&s);
                prop_assert!(cost.work.is_finite() && cost.memory_bytes.is_finite());
                prop_assert!(s.cluster.gpus() <= limits::MAX_GPUS);
                prop_assert!(s.model.top_k <= s.model.experts);
                prop_assert!(s.cluster.compute_noise_cv.is_finite());
            }
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                // An error after overrides names the file.
                prop_assert!(e.to_string().starts_with("quickstart.toml"));
            }
        }
    }

    #[test]
    fn any_bytes_as_a_scenario_are_an_error_or_a_scenario(text in "\\PC{0,200}") {
        let _ = parse_scenario("fuzz.toml", &text, &[]);
    }
}
