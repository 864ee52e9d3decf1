//! How many of a source's tokens a destination needs when an all-to-all sends one copy per token per GPU
//! (or per node) instead of one per (token, expert): the deduplication of DeepEP's normal kernels.
//!
//! Routing is known as counts, not per token, so the share is estimated. Without a group limit a token's
//! picks are taken as independent: a destination holding experts the source picks with probabilities `p_e`
//! is needed by `1 − Π (1 − p_e)` of its tokens. With group-limited routing ([`RouterGroups`]) a token
//! first picks `max_groups_per_token` groups: group g with probability `r_g` (the source's expected picks per
//! group, water-filled to sum to the limit with none above 1, as for experts), then experts inside the picked
//! groups with probabilities `p_e / r_g`; a destination is needed by
//! `1 − Π_g (1 − r_g · (1 − Π_{e ∈ g here} (1 − p_e / r_g)))` of its tokens. The limit is what caps the
//! nodes a token reaches (at most 4 for DeepSeek-V3), and so the bytes a hierarchical dispatch puts on NICs.

use crate::scenario::model::RouterGroups;
use moesim_traces::synthetic::pick_probabilities;

/// Per group, the probability that a token of a source picks it, from the source's expected picks per
/// expert (`p[e]`, summing to top-k); all 1 without a limit.
pub fn group_pick_probabilities(p: &[f64], routing: RouterGroups) -> Vec<f64> {
    if !routing.limits() {
        return vec![1.0; routing.groups];
    }
    let per = p.len() / routing.groups;
    let w: Vec<f64> = p.chunks(per).map(|g| g.iter().sum()).collect();
    if w.iter().sum::<f64>() <= 0.0 {
        return vec![0.0; routing.groups];
    }
    pick_probabilities(&w, routing.max_groups_per_token)
}

/// Probability that a token misses one copy it picks with probability `p` once its group `r` is picked.
/// Products of these over a destination's copies (per group) are what [`needed_share`] takes: a product,
/// not a sum of logarithms, because the all-to-alls of a 2048-GPU pipeline price millions of them.
pub fn miss(p: f64, r: f64) -> f64 {
    if r <= 0.0 {
        return 1.0;
    }
    (1.0 - (p / r).min(1.0)).max(0.0)
}

/// The share of a source's tokens a destination needs, from per-group products of [`miss`] over the
/// copies it holds (`miss[g]`, 1 for a group it holds none of) and the group pick probabilities `r`.
pub fn needed_share(miss: &[f64], r: &[f64]) -> f64 {
    if let ([m], [r]) = (miss, r)
        && *r >= 1.0
    {
        return 1.0 - m;
    }
    let none: f64 = miss
        .iter()
        .zip(r)
        .map(|(&m, &r)| 1.0 - r * (1.0 - m))
        .product();
    1.0 - none
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_per_token_on_two_nodes_halves_the_remote_share() {
        // 16 experts in 2 groups of 8 (one per node), top-4, every expert equally popular: p = 4/16.
        let p = vec![0.25; 16];
        let limited = RouterGroups {
            groups: 2,
            max_groups_per_token: 1,
        };
        let r = group_pick_probabilities(&p, limited);
        assert_eq!(r, vec![0.5, 0.5]);
        // The remote node holds group 1: picked by half the tokens, and then each of its 8 experts with
        // probability 0.25 / 0.5 = 0.5, so it is needed by 0.5 · (1 − 0.5^8) of them.
        let held = [1.0, miss(0.25, r[1]).powi(8)];
        let limited_share = needed_share(&held, &r);
        assert!((limited_share - 0.5 * (1.0 - 0.5f64.powi(8))).abs() < 1e-12);
        // Without the limit: 1 − 0.75^8 of the tokens, 0.90 against 0.50.
        let free = RouterGroups::NONE;
        let r1 = group_pick_probabilities(&p, free);
        let share = needed_share(&[miss(0.25, r1[0]).powi(8)], &r1);
        assert!((share - (1.0 - 0.75f64.powi(8))).abs() < 1e-12);
        assert!(limited_share < 0.56 * share);
    }

    #[test]
    fn a_node_holding_two_groups_is_needed_if_either_is() {
        // Four groups of 2, two per token, equally popular: r = 0.5 each; a node with all of groups 0 and 1,
        // whose experts are certain once their group is picked (p / r = 1), is needed unless neither group is:
        // 1 − 0.5 · 0.5.
        let p = vec![0.5; 8];
        let rg = RouterGroups {
            groups: 4,
            max_groups_per_token: 2,
        };
        let r = group_pick_probabilities(&p, rg);
        assert_eq!(r, vec![0.5; 4]);
        let m = miss(0.5, 0.5).powi(2);
        assert_eq!(m, 0.0);
        assert!((needed_share(&[m, m, 1.0, 1.0], &r) - 0.75).abs() < 1e-12);
    }
}
