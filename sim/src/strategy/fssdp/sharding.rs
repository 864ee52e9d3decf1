//! FSSDP ownership: which rank owns (stores the one global copy of the weights and optimizer state of)
//! each expert of each MoE layer.
//!
//! Homogeneous sharding gives every layer's experts to ranks contiguously (rank r owns experts
//! `r·E/G ..` of every layer, or one expert per `G/E` ranks when there are fewer experts than ranks).
//! Heterogeneous sharding (Hecate) re-assigns owners across layers from the load forecast: every rank gets
//! the same number of expert slots over all layers (so it may own none or all experts of one layer), and
//! experts are placed coldest first, each on the least-loaded node, then its least-loaded rank, with a free
//! slot. Cold experts are rarely materialized, so their tokens all go to their owner: spreading them evenly
//! matters most, while hot experts are replicated by the materialization plan anyway.

/// Owners of every (layer, expert): `owners[layer * experts + expert]`.
pub type Owners = Vec<u32>;

/// Homogeneous (contiguous) sharding.
pub fn homogeneous(layers: usize, experts: usize, ranks: usize) -> Owners {
    let mut out = Vec::with_capacity(layers * experts);
    for _ in 0..layers {
        for e in 0..experts {
            out.push((e * ranks / experts) as u32);
        }
    }
    out
}

/// Heterogeneous sharding from per-(layer, expert) forecast loads.
pub fn heterogeneous(
    load: &[f64],
    layers: usize,
    experts: usize,
    ranks: usize,
    gpus_per_node: usize,
) -> Owners {
    let n = layers * experts;
    debug_assert_eq!(load.len(), n);
    let nodes = ranks.div_ceil(gpus_per_node);
    // Equal slots per rank over all layers (the first `n % ranks` ranks get one more).
    let mut free: Vec<usize> = (0..ranks)
        .map(|r| n / ranks + usize::from(r < n % ranks))
        .collect();
    let mut rank_load = vec![0.0f64; ranks];
    let mut node_load = vec![0.0f64; nodes];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)));
    let mut owners = vec![0u32; n];
    for i in order {
        let node = (0..nodes)
            .filter(|&nd| {
                (nd * gpus_per_node..((nd + 1) * gpus_per_node).min(ranks)).any(|r| free[r] > 0)
            })
            .min_by(|&a, &b| node_load[a].total_cmp(&node_load[b]).then(a.cmp(&b)))
            .expect("slots cover every expert");
        let rank = (node * gpus_per_node..((node + 1) * gpus_per_node).min(ranks))
            .filter(|&r| free[r] > 0)
            .min_by(|&a, &b| rank_load[a].total_cmp(&rank_load[b]).then(a.cmp(&b)))
            .expect("node has a free slot");
        owners[i] = rank as u32;
        free[rank] -= 1;
        rank_load[rank] += load[i];
        node_load[node] += load[i];
    }
    owners
}

/// Experts each rank owns over all layers.
pub fn owned_per_rank(owners: &[u32], ranks: usize) -> Vec<usize> {
    let mut out = vec![0; ranks];
    for &o in owners {
        out[o as usize] += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homogeneous_is_contiguous_and_handles_fewer_experts_than_ranks() {
        assert_eq!(homogeneous(1, 4, 2), vec![0, 0, 1, 1]);
        assert_eq!(homogeneous(1, 2, 4), vec![0, 2]);
    }

    #[test]
    fn heterogeneous_keeps_equal_slots_and_balances_load() {
        // 2 layers × 4 experts over 4 ranks on 2 nodes: 2 slots each.
        let load = [10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0];
        let owners = heterogeneous(&load, 2, 4, 4, 2);
        assert_eq!(owned_per_rank(&owners, 4), vec![2, 2, 2, 2]);
        // The two hot experts end up on different nodes.
        assert_ne!(owners[0] / 2, owners[7] / 2);
    }
}
