//! The cluster as a graph: GPUs, NVSwitch/PCIe switches, leaf and spine switches, and directed links with
//! bandwidth and latency. Every GPU pair gets a route (the links a transfer crosses), precomputed once.
//!
//! GPUs never forward traffic: routes may start and end at a GPU but not pass through one.

use crate::scenario::cluster::{Cluster, Fabric};
use moesim_calibrate::datasheet::gbits_to_bytes_per_s;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a graph node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Device {
    Gpu(usize),
    /// NVSwitch (or PCIe switch) of a node.
    NodeSwitch(usize),
    /// Leaf switch of a rail (rail r connects NIC r of every node).
    Leaf(usize),
    Spine,
    /// The single switch of the ideal fabric.
    IdealSwitch,
}

/// What kind of wire a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LinkKind {
    NvLink,
    Pcie,
    Nic,
    Spine,
    Ideal,
}

/// A directed link.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub from: Device,
    pub to: Device,
    pub kind: LinkKind,
    pub bytes_per_s: f64,
    pub latency_s: f64,
    /// The GPU whose port this is, if it is a GPU's own egress or ingress.
    pub gpu_port: Option<Port>,
    /// Achievable fraction of `bytes_per_s` (protocol and kernel overheads).
    pub efficiency: f64,
}

impl Link {
    /// Achievable bytes per second: datasheet bandwidth times efficiency.
    pub fn capacity(&self) -> f64 {
        self.bytes_per_s * self.efficiency
    }
}

/// A GPU's port links by tier (`u32::MAX` where it has none): what the aggregated all-to-all loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPorts {
    /// Egress and ingress towards the node switch (NVLink/PCIe) or the ideal switch.
    pub local_out: u32,
    pub local_in: u32,
    /// Egress and ingress of its NIC (to and from its rail's leaf).
    pub nic_out: u32,
    pub nic_in: u32,
}

/// A GPU's own port: traffic leaving it (egress) or arriving at it (ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Port {
    Egress(usize),
    Ingress(usize),
}

/// The cluster graph with precomputed GPU-to-GPU routes.
#[derive(Debug, Clone)]
pub struct Topology {
    pub graph: DiGraph<Device, usize>,
    pub links: Vec<Link>,
    gpus: usize,
    gpus_per_node: usize,
    route_links: Vec<u32>,
    route_offsets: Vec<u32>,
    route_latency_s: Vec<f64>,
    gpu_ports: Vec<Vec<u32>>,
    ports: Vec<GpuPorts>,
    /// Per rail: leaf → spine and spine → leaf links (empty without a spine).
    spine_up: Vec<u32>,
    spine_down: Vec<u32>,
}

impl Topology {
    /// Builds the graph of a cluster and routes every GPU pair.
    pub fn build(c: &Cluster) -> Topology {
        let mut b = Builder {
            graph: DiGraph::new(),
            links: Vec::new(),
            nvlink_efficiency: c.nvlink_efficiency,
            nic_efficiency: c.nic_efficiency,
        };
        let gpus = c.gpus();
        let gpu_nodes: Vec<NodeIndex> = (0..gpus)
            .map(|g| b.graph.add_node(Device::Gpu(g)))
            .collect();
        match c.fabric {
            Fabric::Ideal => {
                let sw = b.graph.add_node(Device::IdealSwitch);
                let bw = c.ideal_link_gbytes_per_s * 1e9;
                // The whole end-to-end latency α sits on the way in, so a transfer costs α + bytes / B.
                for (g, &n) in gpu_nodes.iter().enumerate() {
                    b.link(
                        n,
                        sw,
                        LinkKind::Ideal,
                        bw,
                        c.ideal_latency_us * 1e-6,
                        Some(Port::Egress(g)),
                    );
                    b.link(sw, n, LinkKind::Ideal, bw, 0.0, Some(Port::Ingress(g)));
                }
            }
            Fabric::RailOptimized | Fabric::Pcie => {
                let kind = if c.fabric == Fabric::Pcie {
                    LinkKind::Pcie
                } else {
                    LinkKind::NvLink
                };
                let intra_bw = c.nvlink_gbytes_per_s * 1e9;
                let intra_lat = c.nvlink_latency_us * 1e-6 / 2.0;
                for node in 0..c.nodes {
                    let sw = b.graph.add_node(Device::NodeSwitch(node));
                    for local in 0..c.gpus_per_node {
                        let g = node * c.gpus_per_node + local;
                        b.link(
                            gpu_nodes[g],
                            sw,
                            kind,
                            intra_bw,
                            intra_lat,
                            Some(Port::Egress(g)),
                        );
                        b.link(
                            sw,
                            gpu_nodes[g],
                            kind,
                            intra_bw,
                            intra_lat,
                            Some(Port::Ingress(g)),
                        );
                    }
                }
                if c.nodes > 1 {
                    let nic_bw = gbits_to_bytes_per_s(c.nic_gbits_per_s);
                    let nic_lat = c.nic_latency_us * 1e-6 / 2.0;
                    let leaves: Vec<NodeIndex> = (0..c.gpus_per_node)
                        .map(|r| b.graph.add_node(Device::Leaf(r)))
                        .collect();
                    for (g, &n) in gpu_nodes.iter().enumerate() {
                        let leaf = leaves[g % c.gpus_per_node];
                        b.link(
                            n,
                            leaf,
                            LinkKind::Nic,
                            nic_bw,
                            nic_lat,
                            Some(Port::Egress(g)),
                        );
                        b.link(
                            leaf,
                            n,
                            LinkKind::Nic,
                            nic_bw,
                            nic_lat,
                            Some(Port::Ingress(g)),
                        );
                    }
                    if c.gpus_per_node > 1 {
                        let spine = b.graph.add_node(Device::Spine);
                        let up = nic_bw * c.nodes as f64 / c.spine_oversubscription;
                        for &leaf in &leaves {
                            b.link(leaf, spine, LinkKind::Spine, up, 0.5e-6, None);
                            b.link(spine, leaf, LinkKind::Spine, up, 0.5e-6, None);
                        }
                    }
                }
            }
        }
        let (route_links, route_offsets, route_latency_s) = route_all(&b, &gpu_nodes);
        let mut gpu_ports = vec![Vec::new(); gpus];
        let none = GpuPorts {
            local_out: u32::MAX,
            local_in: u32::MAX,
            nic_out: u32::MAX,
            nic_in: u32::MAX,
        };
        let mut ports = vec![none; gpus];
        let mut spine_up = vec![u32::MAX; c.gpus_per_node];
        let mut spine_down = vec![u32::MAX; c.gpus_per_node];
        for (id, l) in b.links.iter().enumerate() {
            let id32 = id as u32;
            if let Some(Port::Egress(g) | Port::Ingress(g)) = l.gpu_port {
                gpu_ports[g].push(id32);
            }
            match (l.gpu_port, l.kind) {
                (Some(Port::Egress(g)), LinkKind::Nic) => ports[g].nic_out = id32,
                (Some(Port::Ingress(g)), LinkKind::Nic) => ports[g].nic_in = id32,
                (Some(Port::Egress(g)), _) => ports[g].local_out = id32,
                (Some(Port::Ingress(g)), _) => ports[g].local_in = id32,
                (None, LinkKind::Spine) => match (l.from, l.to) {
                    (Device::Leaf(r), Device::Spine) => spine_up[r] = id32,
                    (Device::Spine, Device::Leaf(r)) => spine_down[r] = id32,
                    _ => {}
                },
                _ => {}
            }
        }
        Topology {
            gpu_ports,
            ports,
            spine_up,
            spine_down,
            graph: b.graph,
            links: b.links,
            gpus,
            gpus_per_node: c.gpus_per_node,
            route_links,
            route_offsets,
            route_latency_s,
        }
    }

    pub fn gpus(&self) -> usize {
        self.gpus
    }

    pub fn node_of(&self, gpu: usize) -> usize {
        gpu / self.gpus_per_node
    }

    /// The links a transfer from `src` to `dst` crosses, in order (empty when `src == dst`).
    pub fn route(&self, src: usize, dst: usize) -> &[u32] {
        let i = src * self.gpus + dst;
        &self.route_links[self.route_offsets[i] as usize..self.route_offsets[i + 1] as usize]
    }

    /// The GPU's own egress and ingress links.
    pub fn gpu_ports(&self, gpu: usize) -> &[u32] {
        &self.gpu_ports[gpu]
    }

    /// The GPU's port links by tier.
    pub fn ports(&self, gpu: usize) -> GpuPorts {
        self.ports[gpu]
    }

    /// GPUs per node (one node on the ideal fabric).
    pub fn gpus_per_node(&self) -> usize {
        self.gpus_per_node
    }

    /// The rail (NIC index inside its node) of a GPU.
    pub fn rail_of(&self, gpu: usize) -> usize {
        gpu % self.gpus_per_node
    }

    /// Leaf → spine and spine → leaf links of a rail, if the fabric has a spine.
    pub fn spine_links(&self, rail: usize) -> Option<(u32, u32)> {
        let (u, d) = (self.spine_up[rail], self.spine_down[rail]);
        (u != u32::MAX).then_some((u, d))
    }

    /// Nodes in the cluster.
    pub fn nodes(&self) -> usize {
        self.gpus / self.gpus_per_node
    }

    /// Sum of link latencies along the route.
    pub fn route_latency_s(&self, src: usize, dst: usize) -> f64 {
        self.route_latency_s[src * self.gpus + dst]
    }

    /// Route latencies from `src` to every GPU, indexed by destination.
    pub fn route_latencies_from(&self, src: usize) -> &[f64] {
        &self.route_latency_s[src * self.gpus..(src + 1) * self.gpus]
    }

    /// Bottleneck achievable bandwidth along the route.
    pub fn route_bandwidth(&self, src: usize, dst: usize) -> f64 {
        self.route(src, dst)
            .iter()
            .map(|&l| self.links[l as usize].capacity())
            .fold(f64::INFINITY, f64::min)
    }
}

struct Builder {
    graph: DiGraph<Device, usize>,
    links: Vec<Link>,
    nvlink_efficiency: f64,
    nic_efficiency: f64,
}

impl Builder {
    fn link(
        &mut self,
        a: NodeIndex,
        b: NodeIndex,
        kind: LinkKind,
        bw: f64,
        lat: f64,
        port: Option<Port>,
    ) {
        let id = self.links.len();
        let efficiency = match kind {
            LinkKind::NvLink | LinkKind::Pcie => self.nvlink_efficiency,
            LinkKind::Nic => self.nic_efficiency,
            LinkKind::Spine | LinkKind::Ideal => 1.0,
        };
        self.links.push(Link {
            efficiency,
            from: self.graph[a],
            to: self.graph[b],
            kind,
            bytes_per_s: bw,
            latency_s: lat,
            gpu_port: port,
        });
        self.graph.add_edge(a, b, id);
    }
}

/// Shortest (by latency, then hops) routes from every GPU, never transiting another GPU. Hand-written
/// Dijkstra because petgraph's returns distances only and we need the edges of each path.
fn route_all(b: &Builder, gpu_nodes: &[NodeIndex]) -> (Vec<u32>, Vec<u32>, Vec<f64>) {
    let n = b.graph.node_count();
    let g = gpu_nodes.len();
    let mut links = Vec::new();
    let mut offsets = Vec::with_capacity(g * g + 1);
    let mut latency = Vec::with_capacity(g * g);
    offsets.push(0u32);
    // Cost in integer picoseconds plus a tiny per-hop term so equal-latency ties break toward fewer hops.
    let cost = |l: &Link| (l.latency_s * 1e12).round() as u64 * 1024 + 1;
    let mut dist = vec![u64::MAX; n];
    let mut pred_edge: Vec<Option<usize>> = vec![None; n];
    let mut path = Vec::new();
    for &src in gpu_nodes {
        dist.fill(u64::MAX);
        pred_edge.fill(None);
        dist[src.index()] = 0;
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((0u64, src.index())));
        while let Some(Reverse((d, u))) = heap.pop() {
            if d > dist[u] {
                continue;
            }
            let un = NodeIndex::new(u);
            if un != src && matches!(b.graph[un], Device::Gpu(_)) {
                continue;
            }
            for e in b.graph.edges(un) {
                let v = e.target().index();
                let nd = d + cost(&b.links[*e.weight()]);
                if nd < dist[v] {
                    dist[v] = nd;
                    pred_edge[v] = Some(*e.weight());
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        for &dst in gpu_nodes {
            path.clear();
            let mut at = dst;
            while at != src {
                let Some(l) = pred_edge[at.index()] else {
                    break;
                };
                path.push(l as u32);
                // Edge indices equal link ids: both are assigned in insertion order.
                at = b
                    .graph
                    .edge_endpoints(petgraph::graph::EdgeIndex::new(l))
                    .expect("edge")
                    .0;
            }
            path.reverse();
            latency.push(path.iter().map(|&l| b.links[l as usize].latency_s).sum());
            links.extend_from_slice(&path);
            offsets.push(links.len() as u32);
        }
    }
    (links, offsets, latency)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::cluster::cluster_preset;

    #[test]
    fn dgx_routes_stay_in_node_or_cross_rails() {
        let mut c = cluster_preset("dgx-h100").unwrap();
        c.nodes = 2;
        let t = Topology::build(&c);
        assert_eq!(t.gpus(), 16);
        // Same node: up to the NVSwitch and down.
        let r = t.route(0, 3);
        assert_eq!(r.len(), 2);
        assert!(
            r.iter()
                .all(|&l| t.links[l as usize].kind == LinkKind::NvLink)
        );
        // Same rail, other node: NIC up to the rail's leaf, down to the peer.
        let r = t.route(1, 9);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|&l| t.links[l as usize].kind == LinkKind::Nic));
        // Other rail, other node: through the spine.
        let r = t.route(1, 10);
        assert_eq!(r.len(), 4);
        assert_eq!(t.links[r[0] as usize].gpu_port, Some(Port::Egress(1)));
        assert_eq!(t.links[r[3] as usize].gpu_port, Some(Port::Ingress(10)));
        assert!(t.route(5, 5).is_empty());
        // Routes run at the links' achievable rates: datasheet times the preset's efficiencies.
        assert!((t.route_bandwidth(0, 9) - 50e9 * c.nic_efficiency).abs() < 1.0);
        assert!((t.route_bandwidth(0, 1) - 450e9 * c.nvlink_efficiency).abs() < 1.0);
    }

    #[test]
    fn ideal_switch_has_alpha_on_every_route() {
        let mut c = cluster_preset("ideal").unwrap();
        c.gpus_per_node = 4;
        let t = Topology::build(&c);
        for s in 0..4 {
            for d in 0..4 {
                if s != d {
                    assert_eq!(t.route(s, d).len(), 2);
                    assert!((t.route_latency_s(s, d) - 10e-6).abs() < 1e-15);
                }
            }
        }
    }
}
