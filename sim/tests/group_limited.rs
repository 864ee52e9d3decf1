//! Group-limited routing (`model.routing_groups`, `model.max_groups_per_token`) in the hierarchical
//! all-to-all, and its validation.

use crate::common;

use common::run;
use moesim_sim::scenario::parse_scenario;

/// Prefill (no gradient traffic: the all-to-alls are all the network carries) of two OLMoE layers on two
/// DGX nodes, EP-16 with the hierarchical all-to-all, balanced routing.
const FIXTURE: &str = r#"
seed = 5
[model]
preset = "olmoe-1b-7b"
layers = 2
seq_len = 1024
micro_batch = 1
[cluster]
preset = "dgx-h100"
nodes = 2
[workload]
mode = "prefill"
iterations = 1
skew = { distribution = "balanced" }
[[strategy]]
name = "ep16"
kind = "ep"
ep_size = 16
a2a = "hierarchical"
"#;

fn ep16_bytes(overrides: &[&str]) -> f64 {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let s = parse_scenario("group-limited.toml", FIXTURE, &o).unwrap();
    let results = run(&s);
    let ep16 = results.iter().find(|r| r.strategy == "ep16").unwrap();
    ep16.network_bytes_per_iteration
}

#[test]
fn one_group_per_token_keeps_tokens_on_one_node() {
    // OLMoE's 64 experts over two DGX nodes (EP-16, 4 experts per GPU): experts 0–31 live on node 0, which
    // is group 0 of 2. Balanced routing, top-8: a source picks each expert with probability 1/8. Per source
    // token, the hierarchical dispatch carries one copy to the remote node over the NIC and one to each of
    // the 14 other GPUs that needs it over NVLink (7 on its own node, 7 forwarded on the remote node); the
    // combine mirrors it.
    // - Unlimited: a GPU is needed with probability 1 − (7/8)^4, the remote node with 1 − (7/8)^32.
    // - One group per token: a group is picked with probability 1/2, then each of its experts with 1/4; a
    //   GPU is needed with probability (1 − (3/4)^4)/2, the remote node with (1 − (3/4)^32)/2.
    let free = ep16_bytes(&[]);
    let limited = ep16_bytes(&["model.routing_groups=2", "model.max_groups_per_token=1"]);
    let same = ep16_bytes(&["model.routing_groups=2", "model.max_groups_per_token=2"]);
    assert_eq!(free, same, "a limit as wide as the groups changes nothing");
    let per_token = |node: f64, gpu: f64| node + 14.0 * gpu;
    let expected = per_token(
        0.5 * (1.0 - 0.75f64.powi(32)),
        0.5 * (1.0 - 0.75f64.powi(4)),
    ) / per_token(1.0 - 0.875f64.powi(32), 1.0 - 0.875f64.powi(4));
    let ratio = limited / free;
    assert!((ratio - expected).abs() < 1e-3, "{ratio} vs {expected}");
}

#[test]
fn inconsistent_group_limits_are_refused_naming_the_field() {
    for (set, field) in [
        ("model.routing_groups=7", "model.routing_groups"),
        ("model.max_groups_per_token=3", "model.max_groups_per_token"),
    ] {
        let o = vec![set.to_string(), "model.routing_groups=64".to_string()];
        let o = if field == "model.routing_groups" {
            vec![set.to_string()]
        } else {
            // 64 groups of 1 expert: 3 groups per token cannot hold top-8.
            o
        };
        let err = parse_scenario("group-limited.toml", FIXTURE, &o).unwrap_err();
        let text = format!("{err:?}");
        assert!(text.contains(field), "{set}: {text}");
    }
}
