//! Collectives on the topology, at the analytic (bottleneck-link α–β) fidelity.
//!
//! All-to-all(v): every (source, destination) pair's bytes are put on the links of its route; each link then
//! needs `load / bandwidth`. A transfer finishes after its route latency plus the busiest link it crosses
//! (links are fluid-shared, so a link drains all its flows together), and a rank's part of the collective
//! ends when every transfer it sends or receives has finished. A skewed all-to-all is therefore held by its
//! most loaded link, not by the average, and every rank that sends to a hot rank waits on that rank's
//! inbound link. All-reduce: hierarchical ring (intra-node reduce-scatter, inter-node ring, intra-node
//! all-gather) over the route bandwidths.

use crate::topology::{Port, Topology};
use serde::{Deserialize, Serialize};

/// What held a rank's part of a collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Compute,
    InboundLink,
    OutboundLink,
    Network,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Compute => "compute",
            Cause::InboundLink => "inbound link",
            Cause::OutboundLink => "outbound link",
            Cause::Network => "network",
        }
    }
}

/// One rank's part of an all-to-all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTransfer {
    /// Seconds from the collective's start until this rank's sends and receives are done.
    pub time_s: f64,
    /// The rank whose port is the busiest link this rank waited on.
    pub holder: usize,
    pub cause: Cause,
    /// How much longer that link was busy than the mean GPU port (0 when balanced).
    pub excess_s: f64,
}

/// Reusable buffers for all-to-all evaluation.
#[derive(Debug, Default)]
pub struct AllToAllScratch {
    load: Vec<f64>,
    busy: Vec<f64>,
    touched: Vec<u32>,
}

/// Outcome of one all-to-all.
#[derive(Debug, Clone, Default)]
pub struct AllToAllOutcome {
    pub per_rank: Vec<RankTransfer>,
    /// Bytes carried per link (indexed by link id; links not crossed are 0).
    pub link_bytes_total: f64,
    /// Bytes that left their source GPU.
    pub network_bytes: f64,
}

/// Evaluates an all-to-all(v) among `ranks` (global GPU ids); `bytes[i * n + j]` is what participant i sends
/// to participant j (the diagonal stays on the GPU and costs nothing).
pub fn all_to_all(
    topo: &Topology,
    ranks: &[usize],
    bytes: &[f64],
    s: &mut AllToAllScratch,
) -> AllToAllOutcome {
    let n = ranks.len();
    debug_assert_eq!(bytes.len(), n * n);
    if s.load.len() != topo.links.len() {
        s.load = vec![0.0; topo.links.len()];
        s.busy = vec![0.0; topo.links.len()];
    }
    for &l in &s.touched {
        s.load[l as usize] = 0.0;
        s.busy[l as usize] = 0.0;
    }
    s.touched.clear();
    let mut network_bytes = 0.0;
    let mut link_bytes_total = 0.0;
    for i in 0..n {
        for j in 0..n {
            let b = bytes[i * n + j];
            if i == j || b <= 0.0 {
                continue;
            }
            network_bytes += b;
            for &l in topo.route(ranks[i], ranks[j]) {
                if s.load[l as usize] == 0.0 {
                    s.touched.push(l);
                }
                s.load[l as usize] += b;
                link_bytes_total += b;
            }
        }
    }
    for &l in &s.touched {
        let link = &topo.links[l as usize];
        s.busy[l as usize] = s.load[l as usize] / link.bytes_per_s;
    }
    // Mean busy time of the participants' ports of each (kind, direction), idle ports included: the
    // yardstick for how much longer than an average port the binding link was busy.
    let mut port_mean: Vec<((crate::topology::LinkKind, bool), f64, usize)> = Vec::new();
    for &r in ranks {
        for &l in topo.gpu_ports(r) {
            let link = &topo.links[l as usize];
            let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
            match port_mean.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => {
                    e.1 += s.busy[l as usize];
                    e.2 += 1;
                }
                None => port_mean.push((key, s.busy[l as usize], 1)),
            }
        }
    }
    let mean_of = |l: u32| {
        let link = &topo.links[l as usize];
        let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
        port_mean
            .iter()
            .find(|(k, _, _)| *k == key)
            .map_or(0.0, |(_, sum, n)| sum / *n as f64)
    };

    let mut per_rank = Vec::with_capacity(n);
    for i in 0..n {
        let mut best = RankTransfer {
            time_s: 0.0,
            holder: ranks[i],
            cause: Cause::Network,
            excess_s: 0.0,
        };
        let mut best_link = None;
        let mut consider = |src: usize, dst: usize, best: &mut RankTransfer| {
            let route = topo.route(src, dst);
            let mut worst = 0.0f64;
            let mut worst_link = u32::MAX;
            for &l in route {
                if s.busy[l as usize] > worst {
                    worst = s.busy[l as usize];
                    worst_link = l;
                }
            }
            let t = topo.route_latency_s(src, dst) + worst;
            if t > best.time_s {
                best.time_s = t;
                best_link = Some(worst_link);
            }
        };
        for j in 0..n {
            if i == j {
                continue;
            }
            if bytes[i * n + j] > 0.0 {
                consider(ranks[i], ranks[j], &mut best);
            }
            if bytes[j * n + i] > 0.0 {
                consider(ranks[j], ranks[i], &mut best);
            }
        }
        if let Some(l) = best_link.filter(|&l| l != u32::MAX) {
            let link = &topo.links[l as usize];
            let (holder, cause) = match link.gpu_port {
                Some(Port::Egress(g)) => (g, Cause::OutboundLink),
                Some(Port::Ingress(g)) => (g, Cause::InboundLink),
                None => (ranks[i], Cause::Network),
            };
            best.holder = holder;
            best.cause = cause;
            let excess = s.busy[l as usize] - mean_of(l);
            // Below a part per million of the link's busy time is rounding, not imbalance.
            best.excess_s = if excess > 1e-6 * s.busy[l as usize] {
                excess
            } else {
                0.0
            };
        }
        per_rank.push(best);
    }
    AllToAllOutcome {
        per_rank,
        link_bytes_total,
        network_bytes,
    }
}

/// Time of an all-reduce of `bytes` among `ranks` (hierarchical ring).
pub fn all_reduce_s(topo: &Topology, ranks: &[usize], bytes: f64) -> f64 {
    if ranks.len() < 2 || bytes <= 0.0 {
        return 0.0;
    }
    let mut per_node: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &r in ranks {
        per_node.entry(topo.node_of(r)).or_default().push(r);
    }
    let nodes = per_node.len();
    let local = per_node.values().map(Vec::len).max().unwrap_or(1);
    let mut t = 0.0;
    if local > 1 {
        let (a, b) = per_node
            .values()
            .find(|v| v.len() > 1)
            .map(|v| (v[0], v[1]))
            .expect("a node with two ranks");
        let bw = topo.route_bandwidth(a, b);
        let lat = topo.route_latency_s(a, b);
        let l = local as f64;
        // Reduce-scatter and all-gather inside the node (a full ring all-reduce when it is the only node).
        t += 2.0 * (l - 1.0) / l * bytes / bw + 2.0 * (l - 1.0) * lat;
    }
    if nodes > 1 {
        let firsts: Vec<usize> = per_node.values().map(|v| v[0]).collect();
        let bw = topo.route_bandwidth(firsts[0], firsts[1]);
        let lat = topo.route_latency_s(firsts[0], firsts[1]);
        let n = nodes as f64;
        let shard = bytes / local as f64;
        t += 2.0 * (n - 1.0) / n * shard / bw + 2.0 * (n - 1.0) * lat;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::cluster::cluster_preset;

    fn ideal(g: usize, gbs: f64, alpha_us: f64) -> Topology {
        let mut c = cluster_preset("ideal").unwrap();
        c.gpus_per_node = g;
        c.ideal_link_gbytes_per_s = gbs;
        c.ideal_latency_us = alpha_us;
        Topology::build(&c)
    }

    #[test]
    fn uniform_all_to_all_on_ideal_switch_is_alpha_plus_bytes_over_b() {
        let topo = ideal(8, 100.0, 10.0);
        let ranks: Vec<usize> = (0..8).collect();
        let per_pair = 1e6;
        let bytes: Vec<f64> = (0..64)
            .map(|i| if i / 8 == i % 8 { 5e6 } else { per_pair })
            .collect();
        let mut s = AllToAllScratch::default();
        let out = all_to_all(&topo, &ranks, &bytes, &mut s);
        let expect = 10e-6 + 7.0 * per_pair / 100e9;
        for r in &out.per_rank {
            assert!(
                (r.time_s - expect).abs() / expect < 1e-9,
                "{} vs {}",
                r.time_s,
                expect
            );
            assert_eq!(r.excess_s, 0.0);
        }
        // Conservation: each off-diagonal byte crosses exactly two links (up, down).
        assert!((out.network_bytes - 56.0 * per_pair).abs() < 1e-3);
        assert!((out.link_bytes_total - 2.0 * 56.0 * per_pair).abs() < 1e-3);
    }

    #[test]
    fn hot_receiver_holds_everyone_on_its_inbound_link() {
        let topo = ideal(4, 100.0, 0.0);
        let ranks: Vec<usize> = (0..4).collect();
        let mut bytes = vec![1e6; 16];
        for i in 0..4 {
            bytes[i * 4 + 2] = 3e6; // everyone sends 3× to rank 2
        }
        let mut s = AllToAllScratch::default();
        let out = all_to_all(&topo, &ranks, &bytes, &mut s);
        for r in &out.per_rank {
            assert_eq!(r.holder, 2);
            assert_eq!(r.cause, Cause::InboundLink);
            assert!((r.time_s - 9e6 / 100e9).abs() < 1e-12);
            assert!(r.excess_s > 0.0);
        }
    }

    #[test]
    fn all_reduce_ring_on_ideal_switch() {
        let topo = ideal(4, 100.0, 0.0);
        let t = all_reduce_s(&topo, &[0, 1, 2, 3], 8e9);
        assert!((t - 2.0 * 3.0 / 4.0 * 8e9 / 100e9).abs() < 1e-9);
        // Doubling bandwidth halves it.
        let t2 = all_reduce_s(&ideal(4, 200.0, 0.0), &[0, 1, 2, 3], 8e9);
        assert!((t / t2 - 2.0).abs() < 1e-9);
    }
}
