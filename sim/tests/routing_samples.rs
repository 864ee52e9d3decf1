//! `workload.routing_samples`: fewer independent routing draws than micro-batches for the pipelined
//! lowerings. Micro-batch `m` routes like draw `m mod routing_samples`; the schedule, the tokens and the
//! bytes stay those of every micro-batch.

use crate::common;

use common::{ep_iteration, rel, run, scenario};
use moesim_sim::scenario::parse_scenario;

/// The Mixtral TP × EP × PP scenario's strategy `i` alone, with log-normal skew σ = 0.5 and `extra`
/// overrides.
fn mixtral(i: usize, extra: &[&str]) -> moesim_sim::Scenario {
    let mut o = vec!["workload.skew.sigma=0.5", "workload.iterations=2"];
    o.extend_from_slice(extra);
    let mut s = scenario("mixtral-tp-ep-pp.toml", &o);
    s.strategies = vec![s.strategies[i].clone()];
    s
}

#[test]
fn one_draw_per_micro_batch_is_the_default() {
    for i in [1, 2, 3] {
        let all = mixtral(i, &["workload.routing_samples=16"]);
        let default = mixtral(i, &[]);
        assert_eq!(
            serde_json::to_string(&run(&all)).unwrap(),
            serde_json::to_string(&run(&default)).unwrap(),
            "strategy {}",
            default.strategies[0].name
        );
    }
}

#[test]
fn every_micro_batch_still_routes_and_is_received() {
    // 1F1B (PP 4) and DualPipe (PP 4): each of the 16 micro-batches routes its tokens once per MoE layer,
    // whichever draw it shares.
    for i in [1, 2] {
        let s = mixtral(i, &[]);
        let unit = s.strategies[0].ep_size;
        let expected = (unit as u64 * s.tokens_per_rank())
            * (s.model.top_k * s.model.moe_layers() * s.workload.micro_batches) as u64;
        for samples in [1, 3, 16] {
            let few = mixtral(i, &[&format!("workload.routing_samples={samples}")]);
            let r = ep_iteration(&few);
            assert_eq!(r.routed, expected, "{samples} draws, strategy {i}");
            let received: u64 = r.tokens_received.iter().sum();
            assert_eq!(received, expected, "{samples} draws, strategy {i}");
        }
    }
}

#[test]
fn micro_batches_that_share_a_draw_route_alike() {
    // Two draws over 16 micro-batches: the even ones route like micro-batch 0, the odd ones like 1. With
    // every micro-batch routing like draw 0 (one draw), the per-rank received tokens are 16 times one
    // micro-batch's; with two draws they are 8 times each of two.
    let one = ep_iteration(&mixtral(1, &["workload.routing_samples=1"]));
    let two = ep_iteration(&mixtral(1, &["workload.routing_samples=2"]));
    assert!(one.tokens_received.iter().all(|&t| t % 16 == 0));
    assert!(two.tokens_received.iter().all(|&t| t % 8 == 0));
    assert_ne!(one.tokens_received, two.tokens_received);
}

#[test]
fn a_few_draws_give_the_step_of_every_draw() {
    // Sampling noise between micro-batches of 4,096 tokens each is small beside the skew they share:
    // a quarter of the draws moves the step by well under 1 % (DualPipe, 1F1B and TP 2 × PP 2).
    for i in [1, 2, 3] {
        let step = |s: &moesim_sim::Scenario| run(s)[0].step_time_ms.p50;
        let all = step(&mixtral(i, &[]));
        let few = step(&mixtral(i, &["workload.routing_samples=4"]));
        assert!(
            rel(few, all) < 0.01,
            "strategy {i}: {few} ms with 4 draws against {all} ms with 16"
        );
    }
}

#[test]
fn draws_outside_one_to_the_micro_batches_or_with_a_trace_are_refused() {
    let text = std::fs::read_to_string(format!(
        "{}/../scenarios/mixtral-tp-ep-pp.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for (set, want) in [
        (
            "workload.routing_samples=0",
            "between 1 and workload.micro_batches (16), got 0",
        ),
        (
            "workload.routing_samples=17",
            "between 1 and workload.micro_batches (16), got 17",
        ),
    ] {
        let e = parse_scenario("mixtral-tp-ep-pp.toml", &text, &[set.to_string()])
            .expect_err(set)
            .to_string();
        assert!(
            e.contains("workload.routing_samples") && e.contains(want),
            "{set}: {e}"
        );
    }
    let q = std::fs::read_to_string(format!(
        "{}/../scenarios/quickstart.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let with_trace = parse_scenario(
        "quickstart.toml",
        &q,
        &[
            "workload.trace=\"t.csv\"".to_string(),
            "workload.routing_samples=1".to_string(),
        ],
    );
    if let Err(e) = with_trace {
        assert!(e.to_string().contains("routing_samples"), "{e}");
    } else {
        panic!("routing_samples with a trace was accepted");
    }
}

#[test]
fn dsv3_2048s_few_draws_give_the_step_of_one_draw_per_micro_batch() {
    // The scenario's own setting (4 draws for 120 micro-batches) against every micro-batch drawn.
    let few = scenario("dsv3-2048.toml", &["workload.iterations=1"]);
    assert_eq!(few.workload.routing_samples, Some(4));
    let all = scenario(
        "dsv3-2048.toml",
        &["workload.iterations=1", "workload.routing_samples=120"],
    );
    let (a, b) = (&run(&all)[0], &run(&few)[0]);
    let d = rel(b.step_time_ms.p50, a.step_time_ms.p50);
    assert!(
        d < 1e-3,
        "{} ms with 4 draws against {} ms with 120",
        b.step_time_ms.p50,
        a.step_time_ms.p50
    );
    // Same schedule, same tokens and bytes: only which counts each micro-batch routes differ.
    assert_eq!(a.events, b.events);
    assert!(rel(b.network_bytes_per_iteration, a.network_bytes_per_iteration) < 1e-3);
}

#[test]
fn fssdp_under_a_pipeline_draws_every_micro_batch_whatever_the_setting() {
    // Hecate's scenario with FSSDP over PP 2 and 8 micro-batches: `routing_samples` is EP's; FSSDP's
    // result is the same with and without it, and simulates every micro-batch.
    let s = |extra: &[&str]| {
        let mut o = vec![
            "workload.micro_batches=8",
            "workload.iterations=2",
            "strategy.1.pp=2",
        ];
        o.extend_from_slice(extra);
        let mut s = scenario("hecate-gpt-moe-s.toml", &o);
        s.strategies = vec![s.strategies[1].clone()];
        s
    };
    let with = run(&s(&["workload.routing_samples=2"]));
    let without = run(&s(&[]));
    assert_eq!(
        serde_json::to_string(&with).unwrap(),
        serde_json::to_string(&without).unwrap()
    );
}

#[test]
fn replicated_ep_under_a_pipeline_plans_from_the_draws_it_was_given() {
    // Replicated EP over PP 4 with skewed routing and a re-plan every 2 iterations: with 2 draws for 8
    // micro-batches every token is still routed, the re-plans still move copies, and the step stays near
    // the step of one draw per micro-batch.
    let strategy =
        "pp = 4\nep_size = 2\nstage_layers = [2, 2, 2, 2]\nslots_per_gpu = 6\nreplan_interval = 2";
    let build = |samples: Option<usize>| {
        let mut s = common::skewed_over_slow_links(common::ideal_pipeline(
            "ep-replicated",
            strategy,
            8,
            "",
        ));
        s.workload.routing_samples = samples;
        s
    };
    let (all, few) = (build(None), build(Some(2)));
    let r = ep_iteration(&few);
    let expected = (2 * few.tokens_per_rank())
        * (few.model.top_k * few.model.moe_layers() * few.workload.micro_batches) as u64;
    assert_eq!(r.routed, expected);
    let (a, b) = (&run(&all)[0], &run(&few)[0]);
    for x in [a, b] {
        assert!(x.breakdown_ms["rebalance"] > 0.0, "{:?}", x.breakdown_ms);
    }
    assert!(
        rel(b.step_time_ms.p50, a.step_time_ms.p50) < 0.05,
        "{} ms with 2 draws against {} ms with 8",
        b.step_time_ms.p50,
        a.step_time_ms.p50
    );
}
