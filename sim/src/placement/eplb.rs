//! The baseline every production MoE runtime ships: DeepSeek's EPLB, global form.
//!
//! Per layer: start with one replica per expert; give each of the `slots − experts` extra slots to the
//! expert with the highest load per replica; then pack replicas (load ÷ replica count each), heaviest first,
//! onto the GPU with the least load that still has a free slot. It minimises the maximum GPU load assuming
//! an even token split, but ignores the network, the previous plan (new plans move nearly every expert) and
//! may put two replicas of one expert on the same GPU. Reimplemented here from its published description so
//! that `moesim place` can show its figures beside moesim's own.

use super::LayerPlacement;

/// Replica counts: the EPLB greedy (extra slots to the highest load per replica; ties to the lower id).
pub fn replica_counts(loads: &[f64], slots: usize) -> Vec<usize> {
    let mut counts = vec![1usize; loads.len()];
    for _ in loads.len()..slots {
        let e = (0..loads.len())
            .max_by(|&a, &b| {
                (loads[a] / counts[a] as f64)
                    .total_cmp(&(loads[b] / counts[b] as f64))
                    .then(b.cmp(&a))
            })
            .expect("at least one expert");
        counts[e] += 1;
    }
    counts
}

/// EPLB placement of one layer on `gpus` GPUs with `slots_per_gpu` slots each.
pub fn eplb(loads: &[f64], gpus: usize, slots_per_gpu: usize) -> LayerPlacement {
    let counts = replica_counts(loads, gpus * slots_per_gpu);
    let mut replicas: Vec<(f64, usize)> = counts
        .iter()
        .enumerate()
        .flat_map(|(e, &c)| std::iter::repeat_n((loads[e] / c as f64, e), c))
        .collect();
    replicas.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut gpu_load = vec![0.0f64; gpus];
    let mut gpu_experts: Vec<Vec<usize>> = vec![Vec::with_capacity(slots_per_gpu); gpus];
    for (load, e) in replicas {
        let g = (0..gpus)
            .filter(|&g| gpu_experts[g].len() < slots_per_gpu)
            .min_by(|&a, &b| gpu_load[a].total_cmp(&gpu_load[b]).then(a.cmp(&b)))
            .expect("slots = replicas");
        gpu_load[g] += load;
        gpu_experts[g].push(e);
    }
    LayerPlacement { gpu_experts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hottest_expert_gets_the_extra_slots() {
        assert_eq!(
            replica_counts(&[100.0, 10.0, 10.0, 10.0], 6),
            vec![3, 1, 1, 1]
        );
    }

    #[test]
    fn fills_every_slot_and_can_duplicate() {
        // One very hot expert among few GPUs: EPLB's packing puts two of its replicas on one GPU.
        let p = eplb(&[1000.0, 1.0, 1.0, 1.0], 2, 4);
        assert!(p.gpu_experts.iter().all(|s| s.len() == 4));
        assert!(p.covers(4));
        assert!(p.has_duplicates());
    }
}
