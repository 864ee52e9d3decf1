//! Tensor and pipeline parallelism in inference (prefill and decode), through the whole strategy: the
//! forward pipeline's fill and drain, Megatron's tensor-parallel traffic without a backward, the KV cache
//! split over a TP group by its KV heads (and MLA's latent, which is not split), and the refusals.

use crate::common;

use common::{ep_iteration as iteration, rel};
use moesim_calibrate::CostModel;
use moesim_sim::Scenario;
use moesim_sim::phase::Phase;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::shared::dense_forward_tp_s;

/// `preset`'s shapes (8 layers) on 8 GPUs of an ideal roofline with links so fast that communication is
/// negligible; balanced routing, no noise, a negligible output head.
fn ideal(mode: &str, preset: &str, strategy: &str, micro_batches: usize, extra: &str) -> Scenario {
    ideal_with(mode, preset, strategy, micro_batches, extra, &[])
}

/// [`ideal`] with `--set` overrides.
fn ideal_with(
    mode: &str,
    preset: &str,
    strategy: &str,
    micro_batches: usize,
    extra: &str,
    overrides: &[&str],
) -> Scenario {
    let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
    let text = format!(
        "name = \"inf\"\nseed = 3\n[model]\npreset = \"{preset}\"\nlayers = 8\nfirst_dense_layers = 0\n\
         vocab = 8\nseq_len = 1024\nmicro_batch = 8\nmtp_depth = 0\n{extra}\n[cluster]\npreset = \"ideal\"\n\
         gpus_per_node = 8\npeak_tflops = 1000.0\nideal_link_gbytes_per_s = 1e9\nideal_latency_us = 0.0\n\
         [workload]\nmode = \"{mode}\"\niterations = 1\nmicro_batches = {micro_batches}\n\
         skew = {{ distribution = \"balanced\" }}\n[[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
    );
    parse_scenario("inf.toml", &text, &overrides).unwrap_or_else(|e| panic!("{e:?}"))
}

fn step_ms(s: &Scenario) -> f64 {
    common::run(s)[0].step_time_ms.mean
}

#[test]
fn a_forward_pipeline_fills_and_drains_in_m_plus_p_minus_1_stage_times() {
    // Inference runs the forwards only: with equal stages of F each, m micro-batches through p stages
    // take (m + p − 1)·F, and one micro-batch p·F.
    let p = 4.0;
    for mode in ["prefill", "decode"] {
        let pp4 = "pp = 4\nep_size = 2\nstage_layers = [2, 2, 2, 2]";
        let one = step_ms(&ideal(mode, "mixtral-8x7b", pp4, 1, ""));
        for m in [2usize, 5, 8] {
            let step = step_ms(&ideal(mode, "mixtral-8x7b", pp4, m, ""));
            let expect = (m as f64 + p - 1.0) * one / p;
            assert!(
                rel(step, expect) < 1e-3,
                "{mode} m = {m}: {step} vs {expect}"
            );
        }
        // GPipe and 1F1B are the same forward pipeline.
        let gpipe = step_ms(&ideal(
            mode,
            "mixtral-8x7b",
            &format!("{pp4}\npipeline_schedule = \"gpipe\""),
            4,
            "",
        ));
        let one_f_one_b = step_ms(&ideal(mode, "mixtral-8x7b", pp4, 4, ""));
        assert_eq!(gpipe, one_f_one_b);
    }
}

#[test]
fn inference_tensor_parallel_traffic_is_megatrons_forward_count() {
    // Forward only: per layer one all-gather and one reduce-scatter around attention (Mixtral's MoE block
    // takes the sequence shard through the all-to-all), each ring sending (tp−1)/tp of the micro-batch's
    // t·d activations from every GPU of the simulated unit (lcm(ep, tp) GPUs).
    for mode in ["prefill", "decode"] {
        for (tp, ep) in [(2usize, 2usize), (4, 4), (8, 8)] {
            let s = ideal(
                mode,
                "mixtral-8x7b",
                &format!("tp = {tp}\nep_size = {ep}"),
                3,
                "",
            );
            let rec = iteration(&s);
            let m = &s.model;
            let act = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
            let per_gpu = (tp as f64 - 1.0) / tp as f64 * act;
            let expect = m.layers as f64 * 3.0 * 2.0 * per_gpu * tp.max(ep) as f64;
            let got = rec.outcome.phase_bytes[Phase::TensorParallel.index()];
            assert!(rel(got, expect) < 1e-9, "{mode} tp {tp}: {got} vs {expect}");
            // Nothing flows backwards.
            assert_eq!(rec.outcome.phase_bytes[Phase::GradSync.index()], 0.0);
        }
    }
}

#[test]
fn decode_attention_reads_each_ranks_share_of_the_kv_cache() {
    // In decode only the KV cache read depends on the context length (the GEMMs and kernels see the
    // micro-batch's tokens): doubling seq_len adds one more cache's read, kv / min(tp, kv_heads) bytes per
    // rank: split over GQA's KV heads (Mixtral: 8), whole on every rank for MLA's latent (DeepSeek-V3).
    for (preset, kv_heads) in [("mixtral-8x7b", 8u64), ("deepseek-v3", 1)] {
        // A finite HBM (the ideal preset's is infinite).
        let hbm = ["cluster.hbm_gbytes_per_s=3350"];
        let short = ideal_with("decode", preset, "tp = 2\nep_size = 2", 1, "", &hbm);
        let long = ideal_with("decode", preset, "tp = 2\nep_size = 2", 1, "", &hbm);
        let long = Scenario {
            model: moesim_sim::scenario::model::Model {
                seq_len: 2048,
                ..long.model
            },
            ..long
        };
        let cost = short.cluster.roofline();
        let m = &short.model;
        assert_eq!(m.kv_heads, kv_heads);
        let kv = (m.micro_batch * m.seq_len * m.kv_bytes_per_token_per_layer) as f64;
        let t = short.tokens_per_rank();
        for tp in [1u64, 2, 4, 8] {
            let added = dense_forward_tp_s(&long, &cost, true, t, tp).0
                - dense_forward_tp_s(&short, &cost, true, t, tp).0;
            let expect = cost.memory_bound_s(2.0 * kv / tp.min(kv_heads) as f64)
                - cost.memory_bound_s(kv / tp.min(kv_heads) as f64);
            assert!(
                rel(added, expect) < 1e-9,
                "{preset} tp {tp}: {added} vs {expect}"
            );
        }
    }
}

#[test]
fn the_kv_cache_splits_over_a_tp_group_by_kv_heads_not_for_mla() {
    for (preset, shards) in [("mixtral-8x7b", 2.0), ("deepseek-v3", 1.0)] {
        let kv = |strategy: &str| {
            let s = ideal("decode", preset, strategy, 1, "");
            common::run(&s)[0].memory.kv_cache_gib
        };
        // One GPU's cache with the micro-batch's sequences on it (EP, DP attention) and with the same
        // sequences on a TP pair.
        let alone = kv("ep_size = 2");
        let pair = kv("tp = 2\nep_size = 2");
        assert!(alone > 0.0);
        assert!(
            rel(pair, alone / shards) < 1e-9,
            "{preset}: {pair} vs {alone}/{shards}"
        );
    }
    // Pipeline stages hold their own layers' caches, of every micro-batch in flight.
    let one = {
        let s = ideal("decode", "mixtral-8x7b", "pp = 2\nep_size = 4", 1, "");
        common::run(&s)[0].memory.kv_cache_gib
    };
    let two = {
        let s = ideal("decode", "mixtral-8x7b", "pp = 2\nep_size = 4", 2, "");
        common::run(&s)[0].memory.kv_cache_gib
    };
    assert!(rel(two, 2.0 * one) < 1e-9, "{two} vs 2 × {one}");
    let whole = {
        let s = ideal("decode", "mixtral-8x7b", "ep_size = 8", 1, "");
        common::run(&s)[0].memory.kv_cache_gib
    };
    assert!(rel(one, whole / 2.0) < 1e-9, "{one} vs {whole}/2");
}

#[test]
fn inference_layouts_that_cannot_run_are_refused_naming_their_field() {
    let err = |mode: &str, strategy: &str, micro_batch: u64| {
        let text = format!(
            "name = \"inf\"\n[model]\npreset = \"mixtral-8x7b\"\nseq_len = 1024\nmicro_batch = {micro_batch}\n\
             [cluster]\npreset = \"dgx-h100\"\nnodes = 1\n[workload]\nmode = \"{mode}\"\niterations = 1\n\
             micro_batches = 4\n[[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
        );
        let e = parse_scenario("inf.toml", &text, &[]).expect_err("refused");
        format!("{e}")
    };
    let e = err("decode", "tp = 4\nep_size = 8", 2);
    assert!(
        e.contains("strategy[0].tp") && e.contains("micro_batch"),
        "{e}"
    );
    let e = err(
        "decode",
        "pp = 2\nep_size = 4\npipeline_schedule = \"dual-pipe\"",
        4,
    );
    assert!(e.contains("strategy[0].pipeline_schedule"), "{e}");
    let e = err("serving", "tp = 2\nep_size = 8", 4);
    assert!(e.contains("strategy[0].tp") && e.contains("serving"), "{e}");
    // A decode batch the TP group divides runs.
    let text = "name = \"inf\"\n[model]\npreset = \"mixtral-8x7b\"\nseq_len = 1024\nmicro_batch = 8\n\
                [cluster]\npreset = \"dgx-h100\"\nnodes = 1\n[workload]\nmode = \"decode\"\niterations = 1\n\
                [[strategy]]\nname = \"s\"\nkind = \"ep\"\ntp = 4\nep_size = 8\n";
    parse_scenario("inf.toml", text, &[]).expect("runs");
}
