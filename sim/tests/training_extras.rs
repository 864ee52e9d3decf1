//! Training work beyond "twice the forward": attention's backward (five matrix products to the forward's
//! two) and DeepSeek-V3's multi-token-prediction modules, checked as FLOPs over peak on the ideal roofline.

use crate::common;
use common::{run, scenario};
use moesim_sim::Scenario;
use moesim_sim::scenario::model::{Attention, model_preset};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

/// One Mixtral layer trained on the ideal switch (exact roofline, no launch cost, unbounded HBM), one
/// micro-batch, balanced routing.
fn training(extra: &[&str]) -> Scenario {
    let mut o = vec!["workload.mode=training", "workload.micro_batches=1"];
    o.extend_from_slice(extra);
    scenario("ideal-switch.toml", &o)
}

/// FLOPs of one token's dense forward GEMMs in a Mixtral MoE layer (attention projections and router) and
/// of its output head, and of its attention scores and mixing (causal, `(s + 1) / 2` keys on average).
fn per_token_flops(s: &Scenario) -> (f64, f64, f64) {
    let m = &s.model;
    let layer = 2.0 * m.attn_params_per_layer as f64 + 2.0 * (m.d_model * m.experts as u64) as f64;
    let head = 2.0 * (m.vocab * m.d_model) as f64;
    let keys = Attention::causal_mean_keys(m.seq_len);
    let heads = m.attention.heads as f64;
    let scores = 2.0 * keys * heads * (m.attention.qk_head_dim + m.attention.v_head_dim) as f64;
    (layer, head, scores)
}

#[test]
fn attention_backward_is_two_and_a_half_forwards_of_its_scores() {
    let s = training(&[]);
    let r = &run(&s)[0];
    let (layer, head, scores) = per_token_flops(&s);
    let t = s.tokens_per_rank() as f64;
    // Forward + backward: 3× every GEMM with weights, 1 + 2.5 = 3.5× the score and mixing products.
    let flops = t * (3.0 * (layer + head) + 3.5 * scores);
    let expect_ms = flops / (s.cluster.peak_tflops * 1e12) * 1e3;
    let got = r.breakdown_ms["dense_compute"];
    assert!(rel(got, expect_ms) < 1e-4, "{got} vs {expect_ms}");
    // With 3× the scores (the old count) the figure would be off by far more than the tolerance.
    let old = t * 3.0 * (layer + head + scores) / (s.cluster.peak_tflops * 1e12) * 1e3;
    assert!(rel(got, old) > 1e-2);
}

#[test]
fn a_multi_token_prediction_module_adds_a_projection_a_block_and_the_head() {
    let base = training(&[]);
    let with = training(&["model.mtp_depth=1"]);
    assert_eq!(with.model.mtp_depth, 1);
    let (r0, r1) = (&run(&base)[0], &run(&with)[0]);
    let (layer, head, scores) = per_token_flops(&base);
    let d = base.model.d_model as f64;
    let t = base.tokens_per_rank() as f64;
    // The module: a 2d → d projection, one more MoE layer's dense part and the shared head, each trained.
    let extra = t * (3.0 * (2.0 * 2.0 * d * d + layer + head) + 3.5 * scores);
    let expect_ms = extra / (base.cluster.peak_tflops * 1e12) * 1e3;
    let got = r1.breakdown_ms["dense_compute"] - r0.breakdown_ms["dense_compute"];
    assert!(rel(got, expect_ms) < 1e-4, "{got} vs {expect_ms}");
    // Its MoE block is routed as the last layer: one layer's experts and all-to-alls again.
    for phase in ["expert_compute", "dispatch", "combine"] {
        let (a, b) = (r0.breakdown_ms[phase], r1.breakdown_ms[phase]);
        assert!(rel(b, 2.0 * a) < 1e-6, "{phase}: {b} vs 2 × {a}");
    }
    // Inference drops the modules.
    let prefill = scenario("ideal-switch.toml", &["model.mtp_depth=1"]);
    let plain = scenario("ideal-switch.toml", &[]);
    assert_eq!(
        run(&prefill)[0].breakdown_ms["dense_compute"],
        run(&plain)[0].breakdown_ms["dense_compute"]
    );
}

#[test]
fn deepseek_v3_trains_one_mtp_module_of_about_fourteen_billion_parameters() {
    let m = model_preset("deepseek-v3").unwrap();
    assert_eq!(m.mtp_depth, 1);
    // The released checkpoint: 671 B main-model and 14 B MTP weights (the MTP file carries its own copy
    // of the embedding and head, which training shares with the main model).
    let experts = (m.experts as u64 * m.expert_params()) as f64;
    let shared_copies = 2.0 * (m.vocab * m.d_model) as f64;
    let mtp = m.mtp_dense_params() as f64 + experts + shared_copies;
    assert!((mtp / 1e9 - 14.0).abs() < 0.7, "{}", mtp / 1e9);
    // Its projection: 2·7168 in, 7168 out.
    let layer_dense = m.attn_params_per_layer
        + m.shared_experts as u64 * m.expert_params()
        + m.d_model * m.experts as u64;
    assert_eq!(m.mtp_dense_params() - layer_dense, 2 * 7168 * 7168);
}
