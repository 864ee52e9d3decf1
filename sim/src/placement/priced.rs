//! Re-plans priced in seconds: copies move only when the time saved over the next window exceeds the time
//! the move costs.
//!
//! The decision itself is [`replan_pays`] / [`choose`]: pure functions of the seconds a move costs and the
//! seconds it saves, however those are computed. [`Price`] is the simple model the `place` command and the
//! evaluation harness use: a moved copy costs its bytes (weights, and in training the optimizer state) over
//! the link that carries it, GPUs receiving in parallel; one unit of the expected maximum GPU load (in
//! mean GPU loads) costs the expert work and the dispatch/combine of a mean GPU's tokens (the most loaded GPU
//! computes, receives and sends in proportion to its load), every iteration of the window. The
//! simulator can instead pass closures that price moves on its topology and savings with its step model.

use super::LayerPlacement;
use super::robust::{Candidate, CandidateKind, Samples};
use crate::scenario::cluster::Cluster;
use crate::scenario::model::Model;
use moesim_calibrate::CostModel;

/// Whether a move that costs `move_s` seconds and saves `saved_s` seconds over the window should happen.
pub fn replan_pays(move_s: f64, saved_s: f64) -> bool {
    saved_s > move_s
}

/// The candidate with the largest net saving (`saved_s − move_s`), if any pays; `None` keeps the placement
/// in force. Candidates of kind [`CandidateKind::Keep`] are skipped (they are what `None` means).
pub fn choose(
    candidates: &[Candidate],
    move_s: impl Fn(&Candidate) -> f64,
    saved_s: impl Fn(&Candidate) -> f64,
) -> Option<&Candidate> {
    candidates
        .iter()
        .filter(|c| c.kind != CandidateKind::Keep)
        .filter_map(|c| {
            let (m, s) = (move_s(c), saved_s(c));
            replan_pays(m, s).then_some((s - m, c))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Over how many iterations the seconds a re-plan saves are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionWindow {
    /// Every iteration left in the run: the plan stays until a re-plan replaces it, and its gain is taken to
    /// hold as long.
    RestOfRun,
    /// As long as the pattern the plan adapts to is expected to hold ([`Samples::persistence`], from the
    /// layer's backtested half-life), at most the rest of the run: under drift the present that a move
    /// adapts to fades, and with it what the move gains.
    Persistence,
}

impl DecisionWindow {
    /// The window's iterations when `left` iterations remain and the plan is made from `smp`.
    pub fn iterations(self, left: usize, smp: &Samples) -> usize {
        match self {
            DecisionWindow::RestOfRun => left,
            DecisionWindow::Persistence => (left as f64).min(smp.persistence().ceil()) as usize,
        }
    }
}

/// The simple price of moves and of imbalance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Seconds to bring one expert copy onto a GPU from another node.
    pub seconds_per_copy: f64,
    /// Seconds to bring one copy from a GPU in the same node (when the previous plan has one there).
    pub seconds_per_copy_local: f64,
    pub gpus_per_node: usize,
    /// Seconds per iteration that one unit of maximum GPU load (in mean GPU loads) costs: the expert work
    /// of a mean GPU's tokens (the slowest GPU sets the pace of the layer).
    pub seconds_per_unit: f64,
    /// Iterations the plan serves before the next re-plan.
    pub window: usize,
}

impl Price {
    /// Seconds to move from `prev` to `next`: GPUs receive in parallel, each its new copies in turn, from
    /// a GPU of its own node when `prev` has a copy there, else over the network.
    pub fn move_s(&self, prev: &LayerPlacement, next: &LayerPlacement) -> f64 {
        let per = self.gpus_per_node.max(1);
        next.gpu_experts
            .iter()
            .zip(&prev.gpu_experts)
            .enumerate()
            .map(|(t, (now, before))| {
                let node = t / per;
                let near = &prev.gpu_experts[node * per..((node + 1) * per).min(prev.gpus())];
                now.iter()
                    .filter(|e| !before.contains(e))
                    .map(|e| {
                        if near.iter().any(|s| s.contains(e)) {
                            self.seconds_per_copy_local
                        } else {
                            self.seconds_per_copy
                        }
                    })
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// Seconds saved over the window by lowering the expected maximum GPU load from `before` to `after`.
    pub fn saved_s(&self, before: f64, after: f64) -> f64 {
        (before - after) * self.seconds_per_unit * self.window as f64
    }

    /// The least drop of the expected maximum that pays for one swap across nodes (each of two GPUs
    /// receives a copy).
    pub fn swap_need(&self) -> f64 {
        self.seconds_per_copy / (self.seconds_per_unit * self.window.max(1) as f64)
    }

    /// Picks among re-plan candidates (the first being the placement in force); `None` keeps it.
    pub fn choose<'c>(
        &self,
        prev: &LayerPlacement,
        candidates: &'c [Candidate],
    ) -> Option<&'c Candidate> {
        let before = candidates
            .iter()
            .find(|c| c.kind == CandidateKind::Keep)
            .map(|c| c.objective)?;
        choose(
            candidates,
            |c| self.move_s(prev, &c.placement),
            |c| self.saved_s(before, c.objective),
        )
    }

    /// The price for experts of `shape` on `cluster`, an EP group of `ep_gpus` GPUs with `gpus_per_node` of
    /// them per node: a copy's weights (plus `optimizer_bytes_per_param` per parameter in training) over
    /// one GPU's NIC from another node, or over NVLink inside the node. One unit of maximum GPU load costs
    /// what a mean GPU's `tokens_per_gpu` routed tokens per layer cost on the slowest GPU: their expert work
    /// (forward, or forward and backward in training: 3×, priced by `cost`) and their dispatch and combine
    /// (forward, and their gradients in training: 2×), which the most loaded GPU receives and sends in
    /// proportion to its load — over its NIC for the share that comes from other nodes, over NVLink for
    /// the rest (tokens routed uniformly over the group's GPUs).
    #[allow(clippy::too_many_arguments)]
    pub fn for_experts(
        shape: ExpertShape,
        cluster: &Cluster,
        cost: &dyn CostModel,
        ep_gpus: usize,
        gpus_per_node: usize,
        tokens_per_gpu: u64,
        optimizer_bytes_per_param: Option<f64>,
        window: usize,
    ) -> Self {
        let params = shape.matrices * shape.d_model * shape.d_ff;
        let bytes =
            params as f64 * (shape.dtype_bytes as f64 + optimizer_bytes_per_param.unwrap_or(0.0));
        let link = moesim_calibrate::datasheet::gbits_to_bytes_per_s(cluster.nic_gbits_per_s);
        let seconds_per_copy = cluster.nic_latency_us * 1e-6 + bytes / link;
        let seconds_per_copy_local =
            cluster.nvlink_latency_us * 1e-6 + bytes / (cluster.nvlink_gbytes_per_s * 1e9);
        let (d, f, dt) = (shape.d_model, shape.d_ff, shape.dtype_bytes);
        let forward = (shape.matrices - 1) as f64 * cost.gemm_s(tokens_per_gpu, f, d, dt)
            + cost.gemm_s(tokens_per_gpu, d, f, dt);
        let passes = if optimizer_bytes_per_param.is_some() {
            3.0
        } else {
            1.0
        };
        // Dispatch and combine: each routed token's activations once each way.
        let ep = ep_gpus.max(1) as f64;
        let per_node = (gpus_per_node.max(1) as f64).min(ep);
        let remote = (ep - per_node) / ep;
        let local = (per_node - 1.0) / ep;
        let token_bytes = tokens_per_gpu as f64 * (shape.d_model * dt as u64) as f64;
        // A share that uses no link costs nothing, whatever that link's bandwidth (a single node may have
        // no NIC).
        let over = |share: f64, bytes_per_s: f64| {
            if share > 0.0 {
                share * token_bytes / bytes_per_s
            } else {
                0.0
            }
        };
        let exchange = 2.0 * (over(remote, link) + over(local, cluster.nvlink_gbytes_per_s * 1e9));
        let comm_passes = if optimizer_bytes_per_param.is_some() {
            2.0
        } else {
            1.0
        };
        Price {
            seconds_per_copy,
            seconds_per_copy_local,
            gpus_per_node,
            seconds_per_unit: forward * passes + exchange * comm_passes,
            window,
        }
    }
}

/// The shape of one routed expert (what moving and running it costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertShape {
    pub d_model: u64,
    pub d_ff: u64,
    /// Weight matrices (3 for SwiGLU).
    pub matrices: u64,
    pub dtype_bytes: u32,
}

impl From<&Model> for ExpertShape {
    fn from(m: &Model) -> Self {
        ExpertShape {
            d_model: m.d_model,
            d_ff: m.expert_d_ff,
            matrices: m.expert_matrices,
            dtype_bytes: m.dtype_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(kind: CandidateKind, objective: f64, gpu_experts: Vec<Vec<usize>>) -> Candidate {
        Candidate {
            placement: LayerPlacement { gpu_experts },
            objective,
            kind,
        }
    }

    #[test]
    fn a_move_happens_only_when_its_saving_exceeds_its_cost() {
        assert!(replan_pays(1.0, 1.5));
        assert!(!replan_pays(1.0, 1.0));
        let prev = vec![vec![0, 1], vec![2, 3]];
        let c = vec![
            cand(CandidateKind::Keep, 1.5, prev.clone()),
            // One copy onto each GPU: 1 copy-time.
            cand(CandidateKind::Adjusted, 1.3, vec![vec![0, 2], vec![1, 3]]),
        ];
        let price = |seconds_per_copy| Price {
            seconds_per_copy,
            seconds_per_copy_local: seconds_per_copy,
            gpus_per_node: 1,
            seconds_per_unit: 1.0,
            window: 10,
        };
        let p = LayerPlacement { gpu_experts: prev };
        // Saving 0.2 × 1 s × 10 iterations = 2 s.
        assert!(price(1.9).choose(&p, &c).is_some());
        assert!(price(2.1).choose(&p, &c).is_none());
    }

    #[test]
    fn copies_from_the_same_node_cost_less() {
        let price = Price {
            seconds_per_copy: 10.0,
            seconds_per_copy_local: 1.0,
            gpus_per_node: 2,
            seconds_per_unit: 1.0,
            window: 1,
        };
        let prev = LayerPlacement {
            gpu_experts: vec![vec![0], vec![1], vec![2], vec![3]],
        };
        // GPU 0 takes expert 1 from GPU 1 (same node); GPU 2 takes expert 0 from node 0.
        let next = LayerPlacement {
            gpu_experts: vec![vec![1], vec![1], vec![0], vec![3]],
        };
        assert_eq!(price.move_s(&prev, &next), 10.0);
        let local = LayerPlacement {
            gpu_experts: vec![vec![1], vec![0], vec![2], vec![3]],
        };
        assert_eq!(price.move_s(&prev, &local), 1.0);
    }

    #[test]
    fn the_largest_net_saving_wins() {
        let prev = vec![vec![0, 1], vec![2, 3]];
        let c = vec![
            cand(CandidateKind::Keep, 2.0, prev.clone()),
            cand(CandidateKind::Adjusted, 1.8, vec![vec![0, 2], vec![1, 3]]),
            // Saves more but moves two copies onto each GPU.
            cand(CandidateKind::Fresh, 1.7, vec![vec![2, 3], vec![0, 1]]),
        ];
        let p = LayerPlacement { gpu_experts: prev };
        let cheap = Price {
            seconds_per_copy: 0.1,
            seconds_per_copy_local: 0.1,
            gpus_per_node: 1,
            seconds_per_unit: 1.0,
            window: 10,
        };
        assert_eq!(cheap.choose(&p, &c).unwrap().kind, CandidateKind::Fresh);
        let dear = Price {
            seconds_per_copy: 1.2,
            seconds_per_copy_local: 1.2,
            gpus_per_node: 1,
            seconds_per_unit: 1.0,
            window: 10,
        };
        assert_eq!(dear.choose(&p, &c).unwrap().kind, CandidateKind::Adjusted);
    }

    #[test]
    fn a_unit_of_imbalance_costs_the_expert_work_and_the_exchange_of_a_mean_gpus_tokens() {
        let cluster = crate::scenario::cluster::cluster_preset("dgx-h100").expect("preset");
        let cost = cluster.roofline();
        let shape = ExpertShape {
            d_model: 2048,
            d_ff: 1408,
            matrices: 3,
            dtype_bytes: 2,
        };
        let tokens = 4096 * 6;
        let price = |ep, training: bool| {
            Price::for_experts(
                shape,
                &cluster,
                &cost,
                ep,
                8,
                tokens,
                training.then_some(12.0),
                10,
            )
            .seconds_per_unit
        };
        let gemms = 2.0 * cost.gemm_s(tokens, 1408, 2048, 2) + cost.gemm_s(tokens, 2048, 1408, 2);
        let bytes = tokens as f64 * 2048.0 * 2.0;
        let nic = moesim_calibrate::datasheet::gbits_to_bytes_per_s(cluster.nic_gbits_per_s);
        let nvlink = cluster.nvlink_gbytes_per_s * 1e9;
        // 16 GPUs, 8 per node: half of a GPU's tokens cross nodes, 7/16 stay on other GPUs of its node.
        let exchange = 2.0 * (0.5 * bytes / nic + 7.0 / 16.0 * bytes / nvlink);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b;
        assert!(close(price(16, false), gemms + exchange));
        assert!(close(price(16, true), 3.0 * gemms + 2.0 * exchange));
        // One node: nothing crosses a NIC, and a node without one does not make the price undefined.
        let one_node = 2.0 * (7.0 / 8.0 * bytes / nvlink);
        assert!(close(price(8, false), gemms + one_node));
        let mut no_nic = cluster.clone();
        no_nic.nic_gbits_per_s = 0.0;
        let p = Price::for_experts(shape, &no_nic, &cost, 8, 8, tokens, None, 10);
        assert!(close(p.seconds_per_unit, gemms + one_node));
    }
}
