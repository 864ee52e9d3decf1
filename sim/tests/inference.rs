//! Inference steps: prefill and decode run forward only, with KV cache memory and no gradient work.

use crate::common;
use common::{run, scenario};

#[test]
fn decode_is_forward_only_and_counts_one_token_per_sequence() {
    let s = scenario(
        "quickstart.toml",
        &[
            "workload.mode=decode",
            "workload.iterations=3",
            "model.micro_batch=64",
        ],
    );
    assert_eq!(s.tokens_per_rank(), 64);
    for r in run(&s) {
        assert_eq!(r.breakdown_ms["grad_sync"], 0.0);
        assert_eq!(r.breakdown_ms["optimizer"], 0.0);
        assert_eq!(r.memory.grads_gib, 0.0);
        assert_eq!(r.memory.optimizer_gib, 0.0);
        // KV cache: 64 sequences × 4096 context × 16 layers × 8 KiB per token and layer.
        let kv = 64.0 * 4096.0 * 16.0 * (2.0 * 2048.0 * 2.0) / (1u64 << 30) as f64;
        assert!(
            (r.memory.kv_cache_gib - kv).abs() < 1e-9,
            "{}",
            r.memory.kv_cache_gib
        );
        let tokens = 16.0 * 64.0;
        assert!(
            (r.tokens_per_s - tokens / (r.step_time_ms.mean * 1e-3)).abs() < 1e-6 * r.tokens_per_s
        );
    }
}

#[test]
fn prefill_is_cheaper_than_a_training_step_on_the_same_batch() {
    let train = &run(&scenario("quickstart.toml", &["workload.iterations=2"]))[1];
    let prefill = &run(&scenario(
        "quickstart.toml",
        &["workload.iterations=2", "workload.mode=prefill"],
    ))[1];
    // Forward only: roughly a third of forward + backward, plus no gradient synchronisation.
    assert!(prefill.step_time_ms.mean < 0.5 * train.step_time_ms.mean);
    assert!(prefill.breakdown_ms["expert_compute"] < 0.5 * train.breakdown_ms["expert_compute"]);
}

#[test]
fn decode_holds_the_kv_cache_of_every_micro_batch() {
    // Two micro-batches of 64 sequences are 128 sequences in flight: twice one micro-batch's cache, as the
    // pipelined stages count it.
    let kv = |m: &str| {
        let s = scenario(
            "quickstart.toml",
            &[
                "workload.mode=decode",
                "workload.iterations=1",
                "model.micro_batch=64",
                m,
            ],
        );
        run(&s)[0].memory.kv_cache_gib
    };
    let (one, two) = (
        kv("workload.micro_batches=1"),
        kv("workload.micro_batches=2"),
    );
    assert!(one > 0.0);
    assert!((two - 2.0 * one).abs() < 1e-9 * one, "{one} vs {two}");
}
