//! Conservation: every routed token is received (or dropped, when a capacity factor says so), and bytes on
//! the wire add up.

use crate::common;
use common::{run, scenario};

#[test]
fn every_routed_token_is_received_by_an_expert() {
    let s = scenario("quickstart.toml", &["workload.iterations=3"]);
    let results = run(&s);
    let assignments_per_iteration = (s.cluster.gpus() as u64
        * s.tokens_per_rank()
        * s.model.top_k as u64
        * s.model.moe_layers() as u64) as f64;
    for r in &results {
        let received: f64 = r.per_rank.iter().map(|p| p.tokens_received).sum();
        let kept = assignments_per_iteration * (1.0 - r.dropped_fraction);
        assert!(
            (received - kept).abs() < 1e-6 * kept,
            "{}: {received} vs {kept}",
            r.strategy
        );
        if r.strategy.contains("cf") {
            assert!(r.dropped_fraction > 0.0);
        } else {
            assert_eq!(r.dropped_fraction, 0.0);
        }
    }
}

#[test]
fn network_bytes_equal_the_tokens_that_leave_their_gpu() {
    // Balanced routing: each rank keeps exactly 1/ep_size of its assignments local.
    let s = scenario("ideal-switch.toml", &[]);
    let r = &run(&s)[0];
    let g = s.cluster.gpus() as f64;
    let leaving = g
        * s.tokens_per_rank() as f64
        * s.model.top_k as f64
        * (1.0 - 1.0 / g)
        * s.model.token_bytes() as f64;
    // Prefill: a dispatch and a combine per MoE layer (one layer here), each moving the same bytes.
    let expect = 2.0 * leaving * s.model.moe_layers() as f64;
    assert!(
        (r.network_bytes_per_iteration - expect).abs() < 1e-6 * expect,
        "{} vs {expect}",
        r.network_bytes_per_iteration
    );
}

#[test]
fn training_network_bytes_add_backward_all_to_alls_and_the_gradient_ring() {
    // Training doubles the all-to-alls (the backward pass reverses both), and the dense gradients'
    // ring all-reduce over g ranks sends 2·(g−1)/g of the gradient bytes from every rank.
    let s = scenario(
        "ideal-switch.toml",
        &["workload.mode=\"training\"", "training.zero_stage=0"],
    );
    let r = &run(&s)[0];
    let g = s.cluster.gpus() as f64;
    let a2a = g
        * s.tokens_per_rank() as f64
        * s.model.top_k as f64
        * (1.0 - 1.0 / g)
        * s.model.token_bytes() as f64;
    let grads = s.model.dense_params() as f64 * s.training.grad_bytes_per_param;
    let expect = 4.0 * a2a * s.model.moe_layers() as f64 + 2.0 * (g - 1.0) * grads;
    assert!(
        (r.network_bytes_per_iteration - expect).abs() < 1e-6 * expect,
        "{} vs {expect}",
        r.network_bytes_per_iteration
    );
}

#[test]
fn capacity_factor_caps_every_expert() {
    let s = scenario(
        "quickstart.toml",
        &["workload.iterations=2", "strategy.2.capacity_factor=1.0"],
    );
    let r = run(&s)
        .into_iter()
        .find(|r| r.strategy == "ep16-cf1.25")
        .unwrap();
    // With capacity 1.0 and one expert group over all ranks holding 4 experts each, no rank receives more
    // than 4 × the mean per-expert load.
    let mean_per_expert = (s.cluster.gpus() as u64 * s.tokens_per_rank() * s.model.top_k as u64)
        as f64
        / s.model.experts as f64;
    let cap_per_rank_per_layer = 4.0 * mean_per_expert.ceil();
    for p in &r.per_rank {
        assert!(p.tokens_received <= cap_per_rank_per_layer * s.model.moe_layers() as f64 + 1e-9);
    }
}

#[test]
fn fp8_experts_dispatch_fp8_tokens_forward_and_keep_the_rest_in_the_model_dtype() {
    // DeepSeek-V3 §3.3.2 / DeepEP: tokens are quantised to FP8 (one FP32 scale per 128 elements) before
    // the forward dispatch; the forward combine and both backward all-to-alls stay in the model's dtype.
    // So of training's four all-to-alls per MoE layer, one shrinks by fp8_scaled_bytes(d) / token_bytes.
    let sets = [
        "workload.mode=\"training\"",
        "training.zero_stage=0",
        "cluster.peak_fp8_tflops=2000",
    ];
    let bf16 = scenario("ideal-switch.toml", &sets);
    let fp8 = scenario(
        "ideal-switch.toml",
        &[&sets[..], &["model.expert_dtype=\"fp8\""]].concat(),
    );
    let g = bf16.cluster.gpus() as f64;
    let a2a = g
        * bf16.tokens_per_rank() as f64
        * bf16.model.top_k as f64
        * (1.0 - 1.0 / g)
        * bf16.model.token_bytes() as f64
        * bf16.model.moe_layers() as f64;
    let ratio = moesim_sim::scenario::model::fp8_scaled_bytes(bf16.model.d_model) as f64
        / bf16.model.token_bytes() as f64;
    assert!(ratio > 0.5 && ratio < 0.52, "{ratio}");
    let saved =
        run(&bf16)[0].network_bytes_per_iteration - run(&fp8)[0].network_bytes_per_iteration;
    let expect = (1.0 - ratio) * a2a;
    assert!(
        (saved - expect).abs() < 1e-6 * expect,
        "{saved} vs {expect}"
    );
}
