//! Regressions found by issue 13 (a new user's pass over the documented commands).

use crate::common;

/// Pre-gating predicted an expert that a short run never requested, and the cache replay indexed past its
/// table (a panic in `moesim plan` on a 2-step decode).
#[test]
fn a_short_decode_with_pregating_prefetch_does_not_panic() {
    for steps in [1, 2, 3, 5] {
        let s = common::scenario(
            "offload-mixtral.toml",
            &[&format!("workload.iterations={steps}")],
        );
        let results = common::run(&s);
        let pregate = results
            .iter()
            .find(|r| r.strategy == "lru-4-pregate")
            .unwrap();
        let o = pregate.offload.as_ref().unwrap();
        assert_eq!(o.steps, steps);
        assert!((0.0..=1.0).contains(&o.hit_rate));
    }
}
