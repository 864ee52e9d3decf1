//! Closed-form checks on the ideal switch: the simulator must reproduce α–β and FLOPs/peak exactly.

use crate::common;
use common::{run, scenario};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// Bytes leaving one GPU in the balanced ideal scenario's dispatch: each rank keeps 1/8 of its assignments.
fn ideal_bytes_leaving_one_gpu(s: &moesim_sim::Scenario) -> f64 {
    let m = &s.model;
    let assignments = s.tokens_per_rank() as f64 * m.top_k as f64;
    assignments * (1.0 - 1.0 / s.cluster.gpus() as f64) * m.token_bytes() as f64
}

#[test]
fn uniform_dispatch_on_ideal_switch_is_alpha_plus_bytes_over_bandwidth() {
    let s = scenario("ideal-switch.toml", &[]);
    let r = &run(&s)[0];
    let alpha = s.cluster.ideal_latency_us * 1e-6;
    let b = s.cluster.ideal_link_gbytes_per_s * 1e9;
    let expect_ms = (alpha + ideal_bytes_leaving_one_gpu(&s) / b) * 1e3;
    // One MoE layer, prefill: one dispatch and one combine per iteration on the critical path.
    assert!(
        rel(r.breakdown_ms["dispatch"], expect_ms) < 0.005,
        "{} vs {}",
        r.breakdown_ms["dispatch"],
        expect_ms
    );
    assert!(rel(r.breakdown_ms["combine"], expect_ms) < 0.005);
    // Balanced: nobody straggles.
    assert!(r.stragglers.is_empty(), "{:?}", r.stragglers);
}

#[test]
fn expert_compute_on_ideal_roofline_is_flops_over_peak() {
    let s = scenario("ideal-switch.toml", &[]);
    let r = &run(&s)[0];
    let m = &s.model;
    // Each GPU holds one expert and receives tokens_per_rank × top_k tokens (8 ranks × 1/8 each).
    let tokens = s.tokens_per_rank() as f64 * m.top_k as f64;
    let flops = 3.0 * 2.0 * tokens * m.d_model as f64 * m.expert_d_ff as f64;
    let expect_ms = flops / (s.cluster.peak_tflops * 1e12) * 1e3;
    assert!(
        rel(r.breakdown_ms["expert_compute"], expect_ms) < 1e-6,
        "{} vs {}",
        r.breakdown_ms["expert_compute"],
        expect_ms
    );
}

#[test]
fn doubling_bandwidth_halves_the_transfer_term() {
    let s1 = scenario("ideal-switch.toml", &[]);
    let s2 = scenario(
        "ideal-switch.toml",
        &["cluster.ideal_link_gbytes_per_s=200"],
    );
    let alpha_ms = s1.cluster.ideal_latency_us * 1e-3;
    let t1 = run(&s1)[0].breakdown_ms["dispatch"] - alpha_ms;
    let t2 = run(&s2)[0].breakdown_ms["dispatch"] - alpha_ms;
    assert!(rel(t1 / t2, 2.0) < 1e-3, "{t1} / {t2}");
}

#[test]
fn skewed_routing_is_slower_and_names_the_rank_with_the_hottest_expert() {
    let balanced = scenario("ideal-switch.toml", &[]);
    let skewed = scenario(
        "ideal-switch.toml",
        &["workload.skew={ distribution = \"zipf\", s = 1.5 }"],
    );
    let rb = &run(&balanced)[0];
    let rs = &run(&skewed)[0];
    assert!(
        rs.step_time_ms.mean > 1.5 * rb.step_time_ms.mean,
        "{} vs {}",
        rs.step_time_ms.mean,
        rb.step_time_ms.mean
    );
    // The hottest expert over the run, and the rank that holds it (one expert per GPU here).
    let routing = moesim_sim::runner::synthetic_routing(&skewed);
    use moesim_traces::RoutingSource;
    let loads = routing.iteration(0).expert_loads(0, 0);
    let hottest = (0..loads.len()).max_by_key(|&e| loads[e]).unwrap();
    let owner = rs
        .placement
        .iter()
        .position(|experts| experts.contains(&hottest))
        .unwrap();
    assert_eq!(rs.stragglers[0].rank, owner, "{:?}", rs.stragglers);
    assert!(rs.stragglers[0].critical_share > 0.99);
    // The hot rank receives the most tokens and idles the least.
    let hot = &rs.per_rank[owner];
    assert!(
        rs.per_rank
            .iter()
            .all(|p| p.tokens_received <= hot.tokens_received)
    );
    assert!(rs.per_rank.iter().all(|p| p.idle_ms >= hot.idle_ms - 1e-9));
}

#[test]
fn a_rank_receiving_three_times_the_tokens_waits_three_times_on_its_link_and_compute() {
    // Hand-built routing: everyone sends 3× as many tokens to expert 5 as to any other expert.
    use moesim_sim::runner::{RunOptions, simulate_scenario};
    use moesim_traces::{IterationRouting, RoutingShape, RoutingSource};
    struct Hot(RoutingShape);
    impl RoutingSource for Hot {
        fn shape(&self) -> RoutingShape {
            self.0
        }
        fn iterations(&self) -> usize {
            1
        }
        fn fill_iteration(&self, _: usize, out: &mut IterationRouting) {
            for r in 0..self.0.ranks {
                let c = out.rank_counts_mut(0, 0, r);
                c.fill(100);
                c[5] = 300;
            }
        }
        fn describe(&self) -> String {
            "hot expert 5".into()
        }
    }
    let s = scenario(
        "ideal-switch.toml",
        &["workload.iterations=1", "cluster.ideal_latency_us=0"],
    );
    let shape = moesim_sim::strategy::ep::EpModel::routing_shape(&s);
    let r = &simulate_scenario(
        &s,
        &Hot(shape),
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    )
    .results[0];
    // Rank 5's inbound link carries 7 × 300 tokens; an even rank's 7 × 100.
    let tb = s.model.token_bytes() as f64;
    let b = s.cluster.ideal_link_gbytes_per_s * 1e9;
    assert!(rel(r.breakdown_ms["dispatch"], 7.0 * 300.0 * tb / b * 1e3) < 1e-6);
    // Expert compute: rank 5 runs 8 × 300 tokens, three times an even rank's 8 × 100.
    let per_token = 3.0 * 2.0 * s.model.d_model as f64 * s.model.expert_d_ff as f64
        / (s.cluster.peak_tflops * 1e12);
    assert!(rel(r.breakdown_ms["expert_compute"], 2400.0 * per_token * 1e3) < 1e-6);
    assert_eq!(r.stragglers[0].rank, 5);
    assert_eq!(r.per_rank[5].tokens_received, 2400.0);
    assert_eq!(r.per_rank[0].tokens_received, 800.0);
}
