//! Routing load as a report shows it: how unevenly each layer's tokens land on experts and on the GPUs of
//! a placement, and how many tokens each expert gets. Read straight from the routing workload, so it is
//! the same for every strategy kind that has a placement.

use moesim_traces::{IterationRouting, RoutingSource};

/// Load facts of one workload under one placement.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStats {
    /// Per MoE layer: mean over iterations, micro-batches and EP groups of (busiest GPU's tokens / mean).
    pub rank_imbalance: Vec<f64>,
    /// Per MoE layer: mean over iterations and micro-batches of (busiest expert's tokens / mean).
    pub expert_imbalance: Vec<f64>,
    /// Per expert: tokens per iteration, summed over layers, micro-batches and ranks.
    pub expert_tokens: Vec<f64>,
}

/// `max / mean` of `loads` (1 for all-zero loads).
pub fn imbalance(loads: &[u64]) -> f64 {
    let total: u64 = loads.iter().sum();
    if total == 0 || loads.is_empty() {
        return 1.0;
    }
    let max = *loads.iter().max().expect("non-empty") as f64;
    max * loads.len() as f64 / total as f64
}

/// Load statistics over the first `iterations` iterations of `routing`, for a placement of
/// `placement[i]` = experts on rank i of every EP group of `placement.len()` consecutive ranks. An empty
/// placement gives an empty `rank_imbalance`.
pub fn load_stats(
    routing: &dyn RoutingSource,
    iterations: usize,
    placement: &[Vec<usize>],
) -> LoadStats {
    let shape = routing.shape();
    let iterations = iterations.min(routing.iterations()).max(1);
    let ep = placement.len();
    let groups = if ep > 0 && shape.ranks.is_multiple_of(ep) {
        shape.ranks / ep
    } else {
        0
    };
    let mut rank_imbalance = vec![0.0; if groups > 0 { shape.moe_layers } else { 0 }];
    let mut expert_imbalance = vec![0.0; shape.moe_layers];
    let mut expert_tokens = vec![0.0; shape.experts];
    let mut it_routing = IterationRouting::zeros(shape);
    let mut rank_loads = vec![0u64; ep];
    for it in 0..iterations {
        routing.fill_iteration(it, &mut it_routing);
        for mb in 0..shape.micro_batches {
            for layer in 0..shape.moe_layers {
                let loads = it_routing.expert_loads(mb, layer);
                expert_imbalance[layer] += imbalance(&loads);
                for (t, l) in expert_tokens.iter_mut().zip(&loads) {
                    *t += *l as f64;
                }
                for g in 0..groups {
                    rank_loads.fill(0);
                    for src in g * ep..(g + 1) * ep {
                        let row = it_routing.rank_counts(mb, layer, src);
                        for (i, experts) in placement.iter().enumerate() {
                            rank_loads[i] += experts.iter().map(|&e| row[e] as u64).sum::<u64>();
                        }
                    }
                    rank_imbalance[layer] += imbalance(&rank_loads);
                }
            }
        }
    }
    let cells = (iterations * shape.micro_batches) as f64;
    for v in &mut expert_imbalance {
        *v /= cells;
    }
    for v in &mut rank_imbalance {
        *v /= cells * groups.max(1) as f64;
    }
    for v in &mut expert_tokens {
        *v /= iterations as f64;
    }
    LoadStats {
        rank_imbalance,
        expert_imbalance,
        expert_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_traces::{RoutingShape, Skew, SyntheticRouting, SyntheticSpec};

    fn routing(skew: Skew) -> SyntheticRouting {
        let shape = RoutingShape {
            moe_layers: 3,
            experts: 16,
            top_k: 2,
            ranks: 8,
            micro_batches: 2,
            tokens_per_rank: 512,
        };
        SyntheticRouting::new(
            shape,
            4,
            SyntheticSpec {
                skew,
                seed: 7,
                shuffle_per_layer: true,
            },
        )
    }

    fn contiguous(ep: usize, experts: usize) -> Vec<Vec<usize>> {
        let per = experts / ep;
        (0..ep)
            .map(|r| (r * per..(r + 1) * per).collect())
            .collect()
    }

    #[test]
    fn imbalance_is_max_over_mean() {
        assert_eq!(imbalance(&[1, 1, 1, 1]), 1.0);
        assert_eq!(imbalance(&[4, 0, 0, 0]), 4.0);
        assert_eq!(imbalance(&[0, 0]), 1.0);
        assert_eq!(imbalance(&[3, 1]), 1.5);
    }

    #[test]
    fn expert_tokens_add_up_to_every_assignment() {
        let r = routing(Skew::Zipf { s: 1.0 });
        let stats = load_stats(&r, 4, &contiguous(8, 16));
        let total: u64 = (0..4).map(|i| r.iteration(i).total_assignments()).sum();
        let sum: f64 = stats.expert_tokens.iter().sum();
        assert!((sum - total as f64 / 4.0).abs() < 1e-6);
        assert_eq!(stats.rank_imbalance.len(), 3);
    }

    #[test]
    fn skew_shows_as_imbalance_and_grouping_experts_evens_it_out() {
        let skewed = load_stats(&routing(Skew::Zipf { s: 1.2 }), 4, &contiguous(8, 16));
        let even = load_stats(&routing(Skew::Balanced), 4, &contiguous(8, 16));
        for l in 0..3 {
            assert!(skewed.expert_imbalance[l] > 1.5, "{skewed:?}");
            assert!(even.expert_imbalance[l] < 1.2, "{even:?}");
            // A rank holds two experts: its load is at most as uneven as its busiest expert's.
            assert!(skewed.rank_imbalance[l] <= skewed.expert_imbalance[l] + 1e-12);
            assert!(skewed.rank_imbalance[l] >= 1.0);
        }
        assert!(
            load_stats(&routing(Skew::Balanced), 4, &[])
                .rank_imbalance
                .is_empty()
        );
    }
}
