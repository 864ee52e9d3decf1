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
    // Max-heap of (load per replica, lower id first).
    let mut heap: std::collections::BinaryHeap<(LoadKey, std::cmp::Reverse<usize>)> = (0..loads
        .len())
        .map(|e| (LoadKey(loads[e]), std::cmp::Reverse(e)))
        .collect();
    for _ in loads.len()..slots {
        let (_, std::cmp::Reverse(e)) = heap.pop().expect("at least one expert");
        counts[e] += 1;
        heap.push((LoadKey(loads[e] / counts[e] as f64), std::cmp::Reverse(e)));
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
    // The lightest GPU with a free slot (ties to the lower id), from a heap of (load, GPU).
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(LoadKey, usize)>> = (0..gpus)
        .map(|g| std::cmp::Reverse((LoadKey(0.0), g)))
        .collect();
    let mut gpu_experts: Vec<Vec<usize>> = vec![Vec::with_capacity(slots_per_gpu); gpus];
    for (load, e) in replicas {
        let std::cmp::Reverse((LoadKey(l), g)) = heap.pop().expect("slots = replicas");
        gpu_experts[g].push(e);
        if gpu_experts[g].len() < slots_per_gpu {
            heap.push(std::cmp::Reverse((LoadKey(l + load), g)));
        }
    }
    LayerPlacement { gpu_experts }
}

/// A total order on loads for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoadKey(f64);
impl Eq for LoadKey {}
impl PartialOrd for LoadKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for LoadKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
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
    fn packs_onto_the_lightest_gpu_with_a_free_slot() {
        // Replicas 8, 8, 5, 4 (expert 0 split 16/2) onto 2 GPUs × 2 slots: 8 → g0, 8 → g1, 5 → g0 (tie, lower
        // id), 4 → g1.
        let p = eplb(&[16.0, 5.0, 4.0], 2, 2);
        assert_eq!(p.gpu_experts, vec![vec![0, 1], vec![0, 2]]);
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
