//! Hecate's sparse collectives at the analytic (bottleneck-link α–β) fidelity.
//!
//! SparseAllGather (spAG) is a batch of per-expert broadcasts, one per moved expert, from its owner to the
//! ranks that materialize it; SparseReduceScatter (spRS) is the mirror batch of per-expert reduces of the
//! replicas' gradients back to the owner. Each broadcast runs as a pipelined chain (as NCCL's ring broadcast
//! does): owner → the targets on its own node → the targets of the next node, and so on, so every target
//! receives the expert's bytes once, every hop carries them once and the chain crosses each involved node
//! boundary once. A reduce is the same chain with every hop reversed.
//!
//! All hops of the batch load the links of their routes together (links are fluid-shared, as in the
//! all-to-all model); a hop finishes after the chain's latency up to it plus the busiest link it crosses.
//! A rank's part ends when every hop it sends or receives has finished.

use crate::collective::{Cause, RankTransfer};
use crate::engine::{Stream, ps};
use crate::network::{CollectiveSpec, FlowSpec, NetworkKind};
use crate::topology::{Port, Topology};

/// A batch of per-expert broadcasts (or reduces), built with [`SparseBatch::push`].
#[derive(Debug, Default, Clone)]
pub struct SparseBatch {
    owners: Vec<u32>,
    bytes: Vec<f64>,
    target_offsets: Vec<usize>,
    targets: Vec<u32>,
}

impl SparseBatch {
    pub fn clear(&mut self) {
        self.owners.clear();
        self.bytes.clear();
        self.target_offsets.clear();
        self.targets.clear();
    }

    /// Adds one expert: `bytes` from `owner` to each of `targets` (the owner itself is skipped).
    pub fn push(&mut self, owner: usize, bytes: f64, targets: impl IntoIterator<Item = usize>) {
        if self.target_offsets.is_empty() {
            self.target_offsets.push(0);
        }
        self.owners.push(owner as u32);
        self.bytes.push(bytes);
        self.targets.extend(
            targets
                .into_iter()
                .filter(|&t| t != owner)
                .map(|t| t as u32),
        );
        self.target_offsets.push(self.targets.len());
    }

    /// Experts in the batch.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Bytes delivered: each expert's bytes times its number of targets.
    pub fn delivered_bytes(&self) -> f64 {
        (0..self.len())
            .map(|i| self.bytes[i] * (self.target_offsets[i + 1] - self.target_offsets[i]) as f64)
            .sum()
    }

    fn targets_of(&self, i: usize) -> &[u32] {
        &self.targets[self.target_offsets[i]..self.target_offsets[i + 1]]
    }
}

/// Reusable buffers.
#[derive(Debug, Default)]
pub struct SparseScratch {
    load: Vec<f64>,
    touched: Vec<u32>,
    chain: Vec<u32>,
    /// (src, dst, chain latency before this hop).
    hops: Vec<(u32, u32, f64)>,
}

/// Outcome of one sparse collective.
#[derive(Debug, Clone, Default)]
pub struct SparseOutcome {
    /// Per global rank (all ranks of the topology): its part of the batch; 0 s when it takes no part.
    pub per_rank: Vec<RankTransfer>,
    /// Bytes delivered to targets (spAG) or to owners' reductions (spRS).
    pub bytes: f64,
    /// Bytes summed over every link crossed.
    pub link_bytes_total: f64,
    /// Bytes that crossed a node boundary.
    pub inter_node_bytes: f64,
    /// The slowest rank's time.
    pub time_s: f64,
}

/// Direction of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseKind {
    /// Per-expert broadcasts from owners to targets.
    AllGather,
    /// Per-expert reduces from targets (replicas) to owners.
    ReduceScatter,
}

/// Evaluates a batch of per-expert broadcasts or reduces on `topo`.
pub fn sparse_collective(
    topo: &Topology,
    batch: &SparseBatch,
    kind: SparseKind,
    s: &mut SparseScratch,
) -> SparseOutcome {
    let g = topo.gpus();
    if s.load.len() != topo.links.len() {
        s.load = vec![0.0; topo.links.len()];
    }
    for &l in &s.touched {
        s.load[l as usize] = 0.0;
    }
    s.touched.clear();
    s.hops.clear();
    let mut out = SparseOutcome {
        per_rank: vec![
            RankTransfer {
                time_s: 0.0,
                holder: 0,
                cause: Cause::Network,
                excess_s: 0.0,
            };
            g
        ],
        bytes: batch.delivered_bytes(),
        ..Default::default()
    };
    for (r, t) in out.per_rank.iter_mut().enumerate() {
        t.holder = r;
    }
    for i in 0..batch.len() {
        let owner = batch.owners[i] as usize;
        let bytes = batch.bytes[i];
        if bytes <= 0.0 || batch.targets_of(i).is_empty() {
            continue;
        }
        chain_order(topo, owner, batch.targets_of(i), &mut s.chain);
        let mut lat = 0.0;
        for w in s.chain.windows(2) {
            let (a, b) = match kind {
                SparseKind::AllGather => (w[0], w[1]),
                SparseKind::ReduceScatter => (w[1], w[0]),
            };
            s.hops.push((a, b, lat));
            lat += topo.route_latency_s(a as usize, b as usize);
            if topo.node_of(a as usize) != topo.node_of(b as usize) {
                out.inter_node_bytes += bytes;
            }
            for &l in topo.route(a as usize, b as usize) {
                if s.load[l as usize] == 0.0 {
                    s.touched.push(l);
                }
                s.load[l as usize] += bytes;
                out.link_bytes_total += bytes;
            }
        }
    }
    let busy = |l: u32| s.load[l as usize] / topo.links[l as usize].bytes_per_s;
    // Mean busy time of GPU ports per (kind, direction): the yardstick for a hot port's excess.
    let mut port_mean: Vec<((crate::topology::LinkKind, bool), f64, usize)> = Vec::new();
    for r in 0..g {
        for &l in topo.gpu_ports(r) {
            let link = &topo.links[l as usize];
            let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
            match port_mean.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => {
                    e.1 += busy(l);
                    e.2 += 1;
                }
                None => port_mean.push((key, busy(l), 1)),
            }
        }
    }
    let mut binding: Vec<u32> = vec![u32::MAX; g];
    for &(a, b, lat0) in &s.hops {
        let route = topo.route(a as usize, b as usize);
        let (mut worst, mut worst_link) = (0.0f64, u32::MAX);
        for &l in route {
            if busy(l) > worst {
                worst = busy(l);
                worst_link = l;
            }
        }
        let t = lat0 + topo.route_latency_s(a as usize, b as usize) + worst;
        for r in [a as usize, b as usize] {
            if t > out.per_rank[r].time_s {
                out.per_rank[r].time_s = t;
                binding[r] = worst_link;
            }
        }
        out.time_s = out.time_s.max(t);
    }
    for (r, &l) in binding.iter().enumerate() {
        if l == u32::MAX {
            continue;
        }
        let link = &topo.links[l as usize];
        let (holder, cause) = match link.gpu_port {
            Some(Port::Egress(x)) => (x, Cause::OutboundLink),
            Some(Port::Ingress(x)) => (x, Cause::InboundLink),
            None => (r, Cause::Network),
        };
        let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
        let mean = port_mean
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(0.0, |(_, sum, n)| sum / *n as f64);
        let excess = busy(l) - mean;
        let t = &mut out.per_rank[r];
        t.holder = holder;
        t.cause = cause;
        t.excess_s = if excess > 1e-6 * busy(l) { excess } else { 0.0 };
    }
    out
}

/// The batch last priced with `s` as a collective: one part per rank that sends or receives a hop, and
/// (for the flow backend) one flow per hop, delivered after the chain's latency up to and through it.
pub fn sparse_spec(
    topo: &Topology,
    out: &SparseOutcome,
    batch: &SparseBatch,
    s: &SparseScratch,
    network: NetworkKind,
    stream: Stream,
) -> CollectiveSpec {
    let g = topo.gpus();
    let mut part_of = vec![u32::MAX; g];
    let mut parts = Vec::new();
    for &(a, b, _) in &s.hops {
        for r in [a as usize, b as usize] {
            if part_of[r] == u32::MAX {
                part_of[r] = 0;
            }
        }
    }
    for (r, slot) in part_of.iter_mut().enumerate() {
        if *slot != u32::MAX {
            *slot = parts.len() as u32;
            parts.push(out.per_rank[r].part(r, stream));
        }
    }
    let flows = if network == NetworkKind::Flow {
        // Hops were pushed expert by expert in batch order; recover each hop's bytes the same way.
        let mut flows = Vec::with_capacity(s.hops.len());
        let mut hop = 0;
        for i in 0..batch.len() {
            let bytes = batch.bytes[i];
            if bytes <= 0.0 || batch.targets_of(i).is_empty() {
                continue;
            }
            let mut targets: Vec<u32> = batch.targets_of(i).to_vec();
            targets.sort_unstable();
            targets.dedup();
            for _ in 0..targets.len() {
                let (a, b, lat0) = s.hops[hop];
                hop += 1;
                flows.push(FlowSpec {
                    src_part: part_of[a as usize],
                    dst_part: part_of[b as usize],
                    src: a,
                    dst: b,
                    bytes,
                    latency: ps(lat0 + topo.route_latency_s(a as usize, b as usize)),
                });
            }
        }
        debug_assert_eq!(hop, s.hops.len());
        flows
    } else {
        Vec::new()
    };
    CollectiveSpec {
        parts,
        flows,
        bytes: out.bytes,
    }
}

/// The chain of one broadcast: the owner, its node's targets, then each other node's targets in node order
/// starting after the owner's node (ranks ascending within a node).
fn chain_order(topo: &Topology, owner: usize, targets: &[u32], chain: &mut Vec<u32>) {
    chain.clear();
    chain.push(owner as u32);
    let nodes = topo.node_of(topo.gpus() - 1) + 1;
    let home = topo.node_of(owner);
    let start = chain.len();
    chain.extend_from_slice(targets);
    chain[start..].sort_unstable_by_key(|&t| {
        let n = topo.node_of(t as usize);
        ((n + nodes - home) % nodes, t)
    });
    chain.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::cluster::cluster_preset;

    fn dgx(nodes: usize) -> Topology {
        let mut c = cluster_preset("dgx-a100").unwrap();
        c.nodes = nodes;
        // Links at their datasheet rate: the bounds below are stated in datasheet bandwidths.
        (c.nvlink_efficiency, c.nic_efficiency) = (1.0, 1.0);
        Topology::build(&c)
    }

    #[test]
    fn one_broadcast_to_every_rank_costs_bytes_over_the_slowest_hop() {
        let topo = dgx(2);
        let mut b = SparseBatch::default();
        b.push(0, 1e8, 0..16);
        let mut s = SparseScratch::default();
        let out = sparse_collective(&topo, &b, SparseKind::AllGather, &mut s);
        assert_eq!(out.bytes, 15.0 * 1e8);
        // The chain crosses from node 0 to node 1 once.
        assert_eq!(out.inter_node_bytes, 1e8);
        let nic = topo.route_bandwidth(7, 8);
        assert!(out.time_s > 1e8 / nic && out.time_s < 1e8 / nic + 1e-4);
        // A reduce moves the same bytes in the other direction and takes as long.
        let red = sparse_collective(&topo, &b, SparseKind::ReduceScatter, &mut s);
        assert_eq!(red.bytes, out.bytes);
        assert!((red.time_s - out.time_s).abs() < 1e-12);
    }

    #[test]
    fn broadcasts_from_one_owner_share_its_egress() {
        let topo = dgx(1);
        let mut s = SparseScratch::default();
        let mut one = SparseBatch::default();
        one.push(0, 1e9, [1]);
        let t1 = sparse_collective(&topo, &one, SparseKind::AllGather, &mut s).time_s;
        let mut four = SparseBatch::default();
        for t in 1..5 {
            four.push(0, 1e9, [t]);
        }
        let out = sparse_collective(&topo, &four, SparseKind::AllGather, &mut s);
        assert!(
            (out.time_s / t1 - 4.0).abs() < 0.01,
            "{} vs {}",
            out.time_s,
            t1
        );
        assert_eq!(out.per_rank[0].holder, 0);
        assert_eq!(out.per_rank[0].cause, Cause::OutboundLink);
        assert_eq!(out.per_rank[7].time_s, 0.0);
    }
}
