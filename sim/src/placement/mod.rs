//! Expert placement with replication: which experts (and how many copies of each) sit on which GPU.
//!
//! A [`LayerPlacement`] gives every GPU exactly `slots_per_gpu` experts. An expert's tokens are split evenly
//! over its replicas (what a runtime must implement to realise the predicted balance), so a GPU's load is
//! the sum of `load[e] / replicas[e]` over its slots. Builders:
//! - [`eplb::eplb`]: the built-in baseline, DeepSeek's EPLB (greedy replication, then greedy packing;
//!   blind to duplicates, the network and the previous plan);
//! - [`search::place`]: moesim's planner (duplicate-free, node-spread packing, local search, refinement on
//!   past iterations, incremental re-planning that keeps experts where they are unless moving pays); small
//!   fresh instances are also solved exactly by [`milp::assign`] and the better plan kept.

pub mod burst_ceiling;
pub mod ceiling;
pub mod eplb;
pub mod forecast;
pub mod harness;
pub mod iterations;
pub mod judged;
pub mod milp;
pub mod plan_layers;
pub mod priced;
pub mod robust;
pub mod rotation_ceiling;
pub mod search;

use serde::{Deserialize, Serialize};

/// One MoE layer's placement: `gpu_experts[g]` lists the experts in GPU g's slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPlacement {
    pub gpu_experts: Vec<Vec<usize>>,
}

impl LayerPlacement {
    /// Static EP: expert e on GPU `e / (experts / gpus)`, one copy each.
    pub fn contiguous(experts: usize, gpus: usize) -> Self {
        let per = experts / gpus;
        LayerPlacement {
            gpu_experts: (0..gpus)
                .map(|g| (g * per..(g + 1) * per).collect())
                .collect(),
        }
    }

    pub fn gpus(&self) -> usize {
        self.gpu_experts.len()
    }

    /// For every expert, the GPUs holding a copy (ascending; a GPU listed twice holds two copies).
    pub fn replicas(&self, experts: usize) -> Vec<Vec<usize>> {
        let mut r = vec![Vec::new(); experts];
        for (g, slots) in self.gpu_experts.iter().enumerate() {
            for &e in slots {
                r[e].push(g);
            }
        }
        r
    }

    /// Per-GPU load when each expert's tokens split evenly over its copies.
    pub fn gpu_loads(&self, loads: &[f64]) -> Vec<f64> {
        let mut copies = vec![0usize; loads.len()];
        for slots in &self.gpu_experts {
            for &e in slots {
                copies[e] += 1;
            }
        }
        self.gpu_experts
            .iter()
            .map(|slots| slots.iter().map(|&e| loads[e] / copies[e] as f64).sum())
            .collect()
    }

    /// Whether some GPU holds two copies of one expert (a wasted slot).
    pub fn has_duplicates(&self) -> bool {
        self.gpu_experts.iter().any(|slots| {
            let mut s = slots.clone();
            s.sort_unstable();
            s.windows(2).any(|w| w[0] == w[1])
        })
    }

    /// Expert copies that must be moved onto a GPU to go from `prev` to this placement.
    pub fn moves_from(&self, prev: &LayerPlacement) -> usize {
        self.gpu_experts
            .iter()
            .zip(&prev.gpu_experts)
            .map(|(now, before)| {
                let mut before = before.clone();
                now.iter()
                    .filter(|e| match before.iter().position(|b| b == *e) {
                        Some(i) => {
                            before.swap_remove(i);
                            false
                        }
                        None => true,
                    })
                    .count()
            })
            .sum()
    }

    /// Whether every expert has at least one copy.
    pub fn covers(&self, experts: usize) -> bool {
        self.replicas(experts).iter().all(|r| !r.is_empty())
    }
}

/// Per-GPU load when the copy in GPU g's slot i serves `shares[g][i]` of its expert's tokens.
pub fn gpu_loads_with_shares(p: &LayerPlacement, shares: &[Vec<f64>], loads: &[f64]) -> Vec<f64> {
    p.gpu_experts
        .iter()
        .zip(shares)
        .map(|(slots, sh)| slots.iter().zip(sh).map(|(&e, &x)| loads[e] * x).sum())
        .collect()
}

/// Mean GPU load over the maximum (1.0 is perfect balance).
pub fn balancedness(gpu_loads: &[f64]) -> f64 {
    let max = gpu_loads.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return 1.0;
    }
    gpu_loads.iter().sum::<f64>() / gpu_loads.len() as f64 / max
}

/// Balancedness of one placement on one layer's loads.
pub fn placement_balancedness(p: &LayerPlacement, loads: &[f64]) -> f64 {
    balancedness(&p.gpu_loads(loads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_split_evenly_over_copies() {
        let p = LayerPlacement {
            gpu_experts: vec![vec![0, 1], vec![0, 2]],
        };
        assert_eq!(p.gpu_loads(&[10.0, 3.0, 4.0]), vec![8.0, 9.0]);
        assert!((balancedness(&[8.0, 9.0]) - 8.5 / 9.0).abs() < 1e-12);
        assert!(!p.has_duplicates());
        assert!(
            LayerPlacement {
                gpu_experts: vec![vec![0, 0]]
            }
            .has_duplicates()
        );
        assert_eq!(p.replicas(3), vec![vec![0, 1], vec![0], vec![1]]);
    }

    #[test]
    fn moves_count_new_copies_only() {
        let a = LayerPlacement {
            gpu_experts: vec![vec![0, 1], vec![2, 3]],
        };
        let b = LayerPlacement {
            gpu_experts: vec![vec![1, 0], vec![2, 0]],
        };
        assert_eq!(b.moves_from(&a), 1);
        assert_eq!(a.moves_from(&a), 0);
    }
}
