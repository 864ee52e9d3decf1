//! Hecate's sparse materialization: which ranks hold a copy of each expert of a layer this iteration.
//!
//! From a load forecast `F` (tokens per expert), the overlap degree `t` and the memory cap `m`: if `t ≤ m`,
//! the top-`t` hot experts (forecast above [`HOT_FACTOR`] × the mean) are materialized on every rank (each rank receives at most `t` experts, which one
//! spAG hides behind the dense compute); otherwise the `G·m` slots are shared among experts in proportion
//! to their forecast load (water-filling: an expert has at most one copy per rank), and each expert's
//! replicas are spread over nodes that do not hold it yet, so that tokens find a copy on their own node, and
//! within that onto the rank with the least forecast load so far. The owner always holds its expert.

/// An expert counts as hot (worth a copy on every rank) above this multiple of the mean expert load.
pub const HOT_FACTOR: f64 = 1.1;

/// Where the experts of one layer live during one iteration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LayerPlacement {
    ranks: usize,
    /// `holds[e * ranks + r]`: rank r has expert e (owned or materialized).
    holds: Vec<bool>,
    /// Per expert: the ranks holding it, owner first.
    holders: Vec<Vec<u32>>,
}

impl LayerPlacement {
    /// Only the owners hold their experts.
    pub fn owners_only(owners: &[u32], ranks: usize) -> Self {
        let mut p = LayerPlacement {
            ranks,
            holds: vec![false; owners.len() * ranks],
            holders: owners.iter().map(|&o| vec![o]).collect(),
        };
        for (e, &o) in owners.iter().enumerate() {
            p.holds[e * ranks + o as usize] = true;
        }
        p
    }

    pub fn holds(&self, expert: usize, rank: usize) -> bool {
        self.holds[expert * self.ranks + rank]
    }

    /// The ranks holding `expert`, its owner first.
    pub fn holders(&self, expert: usize) -> &[u32] {
        &self.holders[expert]
    }

    pub fn experts(&self) -> usize {
        self.holders.len()
    }

    /// Copies beyond the owners (the experts spAG moves).
    pub fn materialized(&self) -> usize {
        self.holders.iter().map(|h| h.len() - 1).sum()
    }

    /// Copies beyond its own experts that `rank` holds.
    pub fn materialized_on(&self, rank: usize) -> usize {
        self.holders
            .iter()
            .filter(|h| h[0] as usize != rank && h.contains(&(rank as u32)))
            .count()
    }

    /// Gives `rank` a copy of `expert` (no-op if it has one).
    pub fn add(&mut self, expert: usize, rank: usize) {
        if !self.holds[expert * self.ranks + rank] {
            self.holds[expert * self.ranks + rank] = true;
            self.holders[expert].push(rank as u32);
        }
    }
}

/// The materialization plan of one layer.
///
/// `forecast[e]` is expert e's forecast load, `owners[e]` its owner, `t` the overlap degree, `m` the memory
/// cap, `gpus_per_node` the node size (ranks `n·gpus_per_node ..` form node n).
pub fn materialize(
    forecast: &[f64],
    owners: &[u32],
    ranks: usize,
    gpus_per_node: usize,
    t: usize,
    m: usize,
) -> LayerPlacement {
    let experts = owners.len();
    let mut p = LayerPlacement::owners_only(owners, ranks);
    let total: f64 = forecast.iter().sum();
    if t == 0 || m == 0 || ranks < 2 || total <= 0.0 {
        return p;
    }
    // Experts by forecast, hottest first (ties: lower id).
    let mut order: Vec<usize> = (0..experts).filter(|&e| forecast[e] > 0.0).collect();
    order.sort_by(|&a, &b| forecast[b].total_cmp(&forecast[a]).then(a.cmp(&b)));
    if t <= m {
        // Only hot experts: an average expert everywhere adds work to every rank and relieves none.
        let hot = HOT_FACTOR * total / experts as f64;
        for &e in order.iter().filter(|&&e| forecast[e] > hot).take(t) {
            for r in 0..ranks {
                p.add(e, r);
            }
        }
        return p;
    }
    // Share G·m slots in proportion to load, at most one copy per non-owner rank: water-filling, so the slots
    // a capped expert cannot use go to the others (largest remainders get the last ones).
    let slots = ranks * m;
    let cap = ranks - 1;
    let mut want = vec![0usize; experts];
    let mut capped = vec![false; experts];
    let mut exact = vec![0.0f64; experts];
    loop {
        let left = slots
            - want
                .iter()
                .zip(&capped)
                .filter(|(_, c)| **c)
                .map(|(w, _)| *w)
                .sum::<usize>();
        let load: f64 = (0..experts)
            .filter(|&e| !capped[e])
            .map(|e| forecast[e])
            .sum();
        if load <= 0.0 {
            break;
        }
        let mut changed = false;
        for e in 0..experts {
            if capped[e] {
                continue;
            }
            exact[e] = left as f64 * forecast[e] / load;
            if exact[e] >= cap as f64 {
                want[e] = cap;
                capped[e] = true;
                changed = true;
            }
        }
        if changed {
            continue;
        }
        for e in 0..experts {
            if !capped[e] {
                want[e] = exact[e].floor() as usize;
            }
        }
        let mut rest = left
            - (0..experts)
                .filter(|&e| !capped[e])
                .map(|e| want[e])
                .sum::<usize>();
        let mut by_remainder: Vec<usize> = (0..experts)
            .filter(|&e| !capped[e] && forecast[e] > 0.0)
            .collect();
        by_remainder.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        for &e in &by_remainder {
            if rest == 0 {
                break;
            }
            if want[e] < cap {
                want[e] += 1;
                rest -= 1;
            }
        }
        break;
    }
    let nodes = ranks.div_ceil(gpus_per_node);
    let mut free = vec![m; ranks];
    let mut node_holds = vec![false; nodes];
    // Forecast load per rank if every copy takes an equal share of its expert's tokens.
    let share = |e: usize| forecast[e] / (want[e].min(cap) + 1) as f64;
    let mut rank_load = vec![0.0f64; ranks];
    for e in 0..experts {
        rank_load[owners[e] as usize] += share(e);
    }
    for &e in &order {
        let k = want[e].min(cap);
        node_holds.fill(false);
        node_holds[owners[e] as usize / gpus_per_node] = true;
        for _ in 0..k {
            // A node without a copy first, then the least-loaded rank with a free slot, then the lowest rank.
            let best = (0..ranks)
                .filter(|&r| free[r] > 0 && !p.holds(e, r))
                .min_by(|&a, &b| {
                    node_holds[a / gpus_per_node]
                        .cmp(&node_holds[b / gpus_per_node])
                        .then(rank_load[a].total_cmp(&rank_load[b]))
                        .then(a.cmp(&b))
                });
            let Some(r) = best else { break };
            p.add(e, r);
            free[r] -= 1;
            rank_load[r] += share(e);
            node_holds[r / gpus_per_node] = true;
        }
    }
    p
}

/// Overlap degree `t`: experts whose bytes cross `bandwidth` during `dense_s` seconds of dense compute.
pub fn overlap_degree(dense_s: f64, bytes_per_s: f64, expert_bytes: f64, experts: usize) -> usize {
    if expert_bytes <= 0.0 {
        return experts;
    }
    ((dense_s * bytes_per_s / expert_bytes).floor().max(0.0) as usize).min(experts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_overlap_materializes_the_top_experts_everywhere() {
        let owners: Vec<u32> = (0..8).map(|e| e / 2).collect();
        let f = [1.0, 9.0, 1.0, 1.0, 5.0, 1.0, 1.0, 1.0];
        let p = materialize(&f, &owners, 4, 2, 2, 3);
        for r in 0..4 {
            assert!(p.holds(1, r) && p.holds(4, r));
        }
        assert_eq!(p.materialized(), 6);
        assert_eq!(p.holders(1)[0], 0);
        assert!(!p.holds(0, 3));
    }

    #[test]
    fn large_overlap_shares_slots_by_load_across_nodes() {
        // 8 ranks on 2 nodes, one expert per rank, m = 1: 8 slots.
        let owners: Vec<u32> = (0..8).collect();
        let mut f = vec![1.0; 8];
        f[0] = 9.0; // 9/16 of the load → 4.5 → 4 or 5 slots
        let p = materialize(&f, &owners, 8, 4, 8, 1);
        let copies = p.holders(0).len() - 1;
        assert!((4..=5).contains(&copies), "{copies}");
        // The first replica of expert 0 (owned on node 0) goes to node 1.
        assert!(p.holders(0)[1] >= 4);
        // No rank exceeds its cap.
        for r in 0..8 {
            assert!(p.materialized_on(r) <= 1);
        }
    }

    #[test]
    fn overlap_degree_is_dense_time_times_bandwidth_over_expert_bytes() {
        assert_eq!(overlap_degree(1e-3, 50e9, 4.7e6, 64), 10);
        assert_eq!(overlap_degree(1.0, 50e9, 4.7e6, 64), 64);
    }
}
