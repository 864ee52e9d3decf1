//! Offloading: hit rate and time per output token against the expert-cache size, per policy.
//!
//! Each point is a separate simulation of the scenario's first offloading strategy with its cache policy
//! and size replaced (every other knob as written), on the same per-token routing as the report's
//! simulation. Belady is included as the optimal bound, not as a policy a runtime can run.

use moesim_calibrate::CostModel;
use moesim_sim::Scenario;
use moesim_sim::runner::{RunOptions, simulate_offload};
use moesim_sim::scenario::file::StrategyKind;
use moesim_sim::strategy::offload::tokens::TokenRouting;
use moesim_traces::CachePolicy;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One (policy, cache size) point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachePoint {
    pub strategy: String,
    pub policy: String,
    pub cache_experts_per_layer: usize,
    pub hit_rate: f64,
    pub tpot_ms: f64,
    pub bytes_fetched: u64,
}

/// Cache sizes from top-k to every expert: each size when there are at most 16, else 8 spread evenly.
pub fn cache_sizes(top_k: usize, experts: usize) -> Vec<usize> {
    if experts - top_k < 16 {
        return (top_k..=experts).collect();
    }
    let mut v: Vec<usize> = (0..8).map(|i| top_k + (experts - top_k) * i / 7).collect();
    v.dedup();
    v
}

/// The curve for the scenario's first offloading strategy (empty when it has none).
pub fn cache_curve(s: &Scenario, cost: &dyn CostModel, tokens: &TokenRouting) -> Vec<CachePoint> {
    let Some(base) = s
        .strategies
        .iter()
        .find(|st| st.kind == StrategyKind::Offload)
    else {
        return Vec::new();
    };
    let knobs = base
        .offload
        .clone()
        .expect("an offload strategy has offloading knobs");
    let policies = [
        CachePolicy::Lru,
        CachePolicy::Lfu,
        CachePolicy::Lrfu,
        CachePolicy::Belady,
    ];
    let grid: Vec<(CachePolicy, usize)> = policies
        .iter()
        .flat_map(|&p| {
            cache_sizes(s.model.top_k, s.model.experts)
                .into_iter()
                .map(move |n| (p, n))
        })
        .collect();
    grid.par_iter()
        .map(|&(policy, size)| {
            let mut st = base.clone();
            let mut k = knobs.clone();
            k.policy = policy;
            k.cache_experts_per_layer = size;
            st.offload = Some(k);
            let r = simulate_offload(
                s,
                &st,
                cost,
                tokens,
                RunOptions {
                    timing: false,
                    progress: None,
                },
            );
            let o = r.offload.expect("an offloading result");
            CachePoint {
                strategy: base.name.clone(),
                policy: o.policy,
                cache_experts_per_layer: size,
                hit_rate: o.hit_rate,
                tpot_ms: o.tpot_ms,
                bytes_fetched: o.bytes_fetched,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_top_k_to_all_experts() {
        assert_eq!(cache_sizes(2, 8), vec![2, 3, 4, 5, 6, 7, 8]);
        let v = cache_sizes(6, 64);
        assert_eq!((v[0], *v.last().unwrap(), v.len()), (6, 64, 8));
    }

    #[test]
    fn belady_bounds_every_policy_and_grows_with_the_cache() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scenarios/offload-mixtral.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let s =
            moesim_sim::scenario::parse_scenario(path, &text, &["workload.iterations=40".into()])
                .unwrap();
        let tokens = TokenRouting::synthetic(&s);
        let pts = cache_curve(&s, &s.cluster.roofline(), &tokens);
        assert_eq!(pts.len(), 4 * 7);
        for size in 2..=8 {
            let at = |p: &str| {
                pts.iter()
                    .find(|x| x.policy == p && x.cache_experts_per_layer == size)
                    .unwrap()
            };
            for p in ["lru", "lfu", "lrfu"] {
                assert!(
                    at("belady").hit_rate >= at(p).hit_rate - 1e-12,
                    "{p} at {size}"
                );
            }
        }
        let belady: Vec<f64> = (2..=8)
            .map(|n| {
                pts.iter()
                    .find(|x| x.policy == "belady" && x.cache_experts_per_layer == n)
                    .unwrap()
                    .hit_rate
            })
            .collect();
        assert!(belady.windows(2).all(|w| w[1] >= w[0] - 1e-12));
        // Everything cached: every request hits after the cold start, and fetches stop mattering.
        let full = pts
            .iter()
            .find(|x| x.policy == "lru" && x.cache_experts_per_layer == 8)
            .unwrap();
        let small = pts
            .iter()
            .find(|x| x.policy == "lru" && x.cache_experts_per_layer == 2)
            .unwrap();
        assert!(full.hit_rate > small.hit_rate && full.tpot_ms < small.tpot_ms);
    }
}
