//! Collectives lowered into transfers, shared by every strategy: all-to-all(v) (direct, or hierarchical as
//! DeepEP's normal kernels run it), ring and hierarchical all-reduce, reduce-scatter, all-gather and
//! point-to-point sends. Each builder returns [`CollectiveSpec`]s: parts with their analytic
//! (bottleneck-link α–β) durations and straggler attribution, plus the flows the flow backend runs.
//!
//! Analytic pricing: every flow's bytes load the links of its route; a flow finishes after its latency plus
//! the busiest link it crosses (links are fluid-shared, so a link drains all its flows together), and a
//! rank's part ends when every flow it sends or receives has finished. A skewed all-to-all is therefore held
//! by its most loaded link, not by the average. The direct all-to-all of a byte matrix aggregates link loads
//! per tier (GPU port, NIC, spine) instead of walking each pair's route: the same numbers, much faster
//! (a test checks both against each other).

use crate::engine::{SimTime, Stream, ps};
use crate::network::{CollectiveSpec, FlowSpec, NetworkKind, PartSpec};
use crate::topology::{LinkKind, Port, Topology};
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

/// How an all-to-all moves tokens (`a2a` of a strategy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum A2aAlgorithm {
    /// Every (token, expert) copy goes straight to its GPU.
    #[default]
    Direct,
    /// One copy per destination node over the NIC (to the same-rail GPU there), forwarded over NVLink to
    /// the GPUs of that node; tokens deduplicated per node and per GPU.
    Hierarchical,
}

/// One rank's part of a collective at the analytic fidelity.
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

impl RankTransfer {
    pub fn idle(rank: usize) -> Self {
        RankTransfer {
            time_s: 0.0,
            holder: rank,
            cause: Cause::Network,
            excess_s: 0.0,
        }
    }

    /// This rank's part as the engine runs it.
    pub fn part(&self, rank: usize, stream: Stream) -> PartSpec {
        PartSpec {
            rank: rank as u32,
            stream,
            analytic: ps(self.time_s),
            holder: self.holder as u32,
            cause: self.cause,
            excess: ps(self.excess_s),
        }
    }
}

/// Reusable buffers for collective pricing.
#[derive(Debug, Default)]
pub struct AllToAllScratch {
    load: Vec<f64>,
    busy: Vec<f64>,
    /// Links [`price_transfers_scaled`] loaded, so the next call zeroes only them (a large topology has
    /// far more links than one group's transfers cross).
    touched: Vec<u32>,
    /// Whether `load` may hold bytes on links `touched` does not list (a dense pass wrote it).
    dense: bool,
    /// Position of each GPU among non-consecutive participants, offset by the lowest GPU id.
    index: Vec<u32>,
}

/// Outcome of one all-to-all at the analytic fidelity.
#[derive(Debug, Clone, Default)]
pub struct AllToAllOutcome {
    pub per_rank: Vec<RankTransfer>,
    /// Bytes summed over every link crossed.
    pub link_bytes_total: f64,
    /// Bytes that left their source GPU.
    pub network_bytes: f64,
    /// Bytes that crossed a NIC (left their node).
    pub nic_bytes: f64,
}

impl AllToAllOutcome {
    /// The outcome of the transposed all-to-all (every flow reversed: a combine after its dispatch). On a
    /// topology whose links have the same capacity both ways and whose routes have the same latency both
    /// ways (every preset), each flow's time is unchanged and each rank keeps the same set of flows, so
    /// per-rank times and holders are the same, with inbound and outbound causes swapped.
    pub fn mirrored(&self) -> AllToAllOutcome {
        let mut out = self.clone();
        for t in &mut out.per_rank {
            t.cause = match t.cause {
                Cause::InboundLink => Cause::OutboundLink,
                Cause::OutboundLink => Cause::InboundLink,
                c => c,
            };
        }
        out
    }
}

/// A transfer to price: bytes from `src` to `dst` (global GPUs), `messages` route latencies in sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    pub src: usize,
    pub dst: usize,
    pub bytes: f64,
    pub messages: f64,
}

/// Mean busy time of the participants' GPU ports per (link kind, egress?): the yardstick for how much
/// longer than an average port the binding link was busy.
fn port_means(
    topo: &Topology,
    ranks: &[usize],
    busy: impl Fn(u32) -> f64,
) -> Vec<((LinkKind, bool), f64)> {
    let mut acc: Vec<((LinkKind, bool), f64, usize)> = Vec::new();
    for &r in ranks {
        for &l in topo.gpu_ports(r) {
            let link = &topo.links[l as usize];
            let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
            match acc.iter_mut().find(|(k, _, _)| *k == key) {
                Some(e) => {
                    e.1 += busy(l);
                    e.2 += 1;
                }
                None => acc.push((key, busy(l), 1)),
            }
        }
    }
    acc.into_iter().map(|(k, s, n)| (k, s / n as f64)).collect()
}

/// Attribution of a part held by link `l` (busy `busy_l`).
fn attribute(
    topo: &Topology,
    rank: usize,
    l: u32,
    busy_l: f64,
    means: &[((LinkKind, bool), f64)],
    t: &mut RankTransfer,
) {
    let link = &topo.links[l as usize];
    let (holder, cause) = match link.gpu_port {
        Some(Port::Egress(g)) => (g, Cause::OutboundLink),
        Some(Port::Ingress(g)) => (g, Cause::InboundLink),
        None => (rank, Cause::Network),
    };
    let key = (link.kind, matches!(link.gpu_port, Some(Port::Egress(_))));
    let mean = means
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(0.0, |(_, m)| *m);
    t.holder = holder;
    t.cause = cause;
    let excess = busy_l - mean;
    // Below a part per million of the link's busy time is rounding, not imbalance.
    t.excess_s = if excess > 1e-6 * busy_l { excess } else { 0.0 };
}

/// Prices arbitrary transfers among `ranks` (global GPUs) by walking their routes: per rank of `ranks`,
/// when its sends and receives are done. Ranks of a transfer that are not in `ranks` are ignored.
pub fn price_transfers(
    topo: &Topology,
    ranks: &[usize],
    transfers: &[Transfer],
    s: &mut AllToAllScratch,
) -> AllToAllOutcome {
    price_transfers_scaled(topo, ranks, transfers, &[1.0], s)
        .pop()
        .expect("one scale")
}

/// [`price_transfers`] of the same transfers with every byte count multiplied by each of `scales` (an FP8
/// dispatch beside its BF16 twin), in one walk of the routes: link loads scale with the bytes, so each
/// transfer's binding link is the same at every scale and only its time changes.
pub fn price_transfers_scaled(
    topo: &Topology,
    ranks: &[usize],
    transfers: &[Transfer],
    scales: &[f64],
    s: &mut AllToAllScratch,
) -> Vec<AllToAllOutcome> {
    if s.dense || s.load.len() != topo.links.len() {
        s.load.clear();
        s.load.resize(topo.links.len(), 0.0);
        s.touched.clear();
        s.dense = false;
    } else {
        for l in s.touched.drain(..) {
            s.load[l as usize] = 0.0;
        }
    }
    let mut base = AllToAllOutcome::default();
    for t in transfers {
        if t.bytes <= 0.0 || t.src == t.dst {
            continue;
        }
        base.network_bytes += t.bytes;
        if topo.node_of(t.src) != topo.node_of(t.dst) {
            base.nic_bytes += t.bytes;
        }
        for &l in topo.route(t.src, t.dst) {
            let x = &mut s.load[l as usize];
            if *x == 0.0 {
                s.touched.push(l);
            }
            *x += t.bytes;
            base.link_bytes_total += t.bytes;
        }
    }
    // Participants' positions: arithmetic for a run of consecutive GPUs, else a table over their span.
    let consecutive = ranks.iter().enumerate().all(|(i, &r)| r == ranks[0] + i);
    let lowest = ranks.iter().copied().min().unwrap_or(0);
    if !consecutive {
        let span = ranks.iter().copied().max().unwrap_or(0) + 1 - lowest;
        s.index.clear();
        s.index.resize(span, u32::MAX);
        for (i, &r) in ranks.iter().enumerate() {
            let slot = &mut s.index[r - lowest];
            if *slot == u32::MAX {
                *slot = i as u32;
            }
        }
    }
    // Each loaded link's busy time, once (the walk below asks for it at every hop of every route).
    for &l in &s.touched {
        s.load[l as usize] /= topo.links[l as usize].capacity();
    }
    let (busy_s, index) = (&s.load, &s.index);
    let busy = |l: u32| busy_s[l as usize];
    let unscaled_means = port_means(topo, ranks, busy);
    let index_of = |g: usize| {
        if consecutive {
            g.checked_sub(ranks[0]).filter(|&i| i < ranks.len())
        } else {
            g.checked_sub(lowest)
                .and_then(|o| index.get(o))
                .filter(|&&i| i != u32::MAX)
                .map(|&i| i as usize)
        }
    };
    let mut outs: Vec<AllToAllOutcome> = scales
        .iter()
        .map(|&k| AllToAllOutcome {
            per_rank: ranks.iter().map(|&r| RankTransfer::idle(r)).collect(),
            link_bytes_total: base.link_bytes_total * k,
            network_bytes: base.network_bytes * k,
            nic_bytes: base.nic_bytes * k,
        })
        .collect();
    let mut binding = vec![u32::MAX; ranks.len() * scales.len()];
    for t in transfers {
        if t.bytes <= 0.0 || t.src == t.dst {
            continue;
        }
        let (mut worst, mut worst_link) = (0.0f64, u32::MAX);
        for &l in topo.route(t.src, t.dst) {
            if busy(l) > worst {
                worst = busy(l);
                worst_link = l;
            }
        }
        let latency = t.messages * topo.route_latency_s(t.src, t.dst);
        for g in [t.src, t.dst] {
            let Some(i) = index_of(g) else { continue };
            for (k, (out, &scale)) in outs.iter_mut().zip(scales).enumerate() {
                let time = latency + scale * worst;
                if time > out.per_rank[i].time_s {
                    out.per_rank[i].time_s = time;
                    binding[k * ranks.len() + i] = worst_link;
                }
            }
        }
    }
    for (k, (out, &scale)) in outs.iter_mut().zip(scales).enumerate() {
        let means: Vec<_> = unscaled_means
            .iter()
            .map(|&(key, m)| (key, m * scale))
            .collect();
        for (i, &l) in binding[k * ranks.len()..(k + 1) * ranks.len()]
            .iter()
            .enumerate()
        {
            if l != u32::MAX {
                attribute(
                    topo,
                    ranks[i],
                    l,
                    scale * busy(l),
                    &means,
                    &mut out.per_rank[i],
                );
            }
        }
    }
    outs
}

/// Evaluates a direct all-to-all(v) among `ranks` (global GPU ids); `bytes[i * n + j]` is what participant
/// i sends to participant j (the diagonal stays on the GPU and costs nothing). Link loads are aggregated
/// per tier: a GPU's local port (NVLink/PCIe/ideal switch), its NIC, and its rail's spine uplinks.
pub fn all_to_all(
    topo: &Topology,
    ranks: &[usize],
    bytes: &[f64],
    s: &mut AllToAllScratch,
) -> AllToAllOutcome {
    let n = ranks.len();
    debug_assert_eq!(bytes.len(), n * n);
    match node_blocks(topo, ranks) {
        Some(block) => all_to_all_blocked(topo, ranks, bytes, block, s),
        None => all_to_all_pairs(topo, ranks, bytes, s),
    }
}

/// [`all_to_all`] for any participants: every pair's route class decided one by one.
fn all_to_all_pairs(
    topo: &Topology,
    ranks: &[usize],
    bytes: &[f64],
    s: &mut AllToAllScratch,
) -> AllToAllOutcome {
    let n = ranks.len();
    s.load.clear();
    s.load.resize(topo.links.len(), 0.0);
    s.dense = true;
    let gpn = topo.gpus_per_node();
    let ports: Vec<_> = ranks.iter().map(|&r| topo.ports(r)).collect();
    let nodes: Vec<usize> = ranks.iter().map(|&r| r / gpn).collect();
    let rails: Vec<usize> = ranks.iter().map(|&r| r % gpn).collect();
    let spine: Vec<Option<(u32, u32)>> = (0..gpn).map(|r| topo.spine_links(r)).collect();
    let local = |i: usize, j: usize| nodes[i] == nodes[j] || ports[i].nic_out == u32::MAX;
    let mut out = AllToAllOutcome::default();
    {
        let load = &mut s.load;
        for i in 0..n {
            let row = &bytes[i * n..(i + 1) * n];
            let (mut local_out, mut nic_out, mut spine_out) = (0.0, 0.0, 0.0);
            for (j, &b) in row.iter().enumerate() {
                if j == i || b <= 0.0 {
                    continue;
                }
                if local(i, j) {
                    local_out += b;
                    load[ports[j].local_in as usize] += b;
                } else {
                    nic_out += b;
                    load[ports[j].nic_in as usize] += b;
                    if rails[i] != rails[j]
                        && let (Some(_), Some((_, down))) = (spine[rails[i]], spine[rails[j]])
                    {
                        spine_out += b;
                        load[down as usize] += b;
                    }
                }
            }
            if local_out > 0.0 {
                load[ports[i].local_out as usize] += local_out;
            }
            if nic_out > 0.0 {
                load[ports[i].nic_out as usize] += nic_out;
            }
            if spine_out > 0.0
                && let Some((up, _)) = spine[rails[i]]
            {
                load[up as usize] += spine_out;
            }
            out.network_bytes += local_out + nic_out;
            out.nic_bytes += nic_out;
            out.link_bytes_total += 2.0 * (local_out + nic_out + spine_out);
        }
    }
    s.busy.clear();
    s.busy.extend(
        s.load
            .iter()
            .zip(&topo.links)
            .map(|(&l, link)| l / link.capacity()),
    );
    let busy = &s.busy;
    let means = port_means(topo, ranks, |l| busy[l as usize]);
    // Per participant: its ports' (busy, link) by tier; per rail: the spine links'.
    let port = |l: u32| {
        if l == u32::MAX {
            (0.0, u32::MAX)
        } else {
            (busy[l as usize], l)
        }
    };
    let out_local: Vec<(f64, u32)> = ports.iter().map(|p| port(p.local_out)).collect();
    let in_local: Vec<(f64, u32)> = ports.iter().map(|p| port(p.local_in)).collect();
    let out_nic: Vec<(f64, u32)> = ports.iter().map(|p| port(p.nic_out)).collect();
    let in_nic: Vec<(f64, u32)> = ports.iter().map(|p| port(p.nic_in)).collect();
    let up: Vec<(f64, u32)> = spine
        .iter()
        .map(|x| x.map_or((0.0, u32::MAX), |(u, _)| port(u)))
        .collect();
    let down: Vec<(f64, u32)> = spine
        .iter()
        .map(|x| x.map_or((0.0, u32::MAX), |(_, d)| port(d)))
        .collect();
    let worse = |a: (f64, u32), b: (f64, u32)| if b.0 > a.0 { b } else { a };
    // The busiest link on the route i → j, in route order (NIC out, spine up, spine down, NIC in), the
    // earlier link winning ties as when walking the route.
    let route_link = |i: usize, j: usize| -> (f64, u32) {
        let none = (0.0, u32::MAX);
        if local(i, j) {
            worse(worse(none, out_local[i]), in_local[j])
        } else if rails[i] != rails[j] && spine[rails[i]].is_some() && spine[rails[j]].is_some() {
            worse(
                worse(worse(worse(none, out_nic[i]), up[rails[i]]), down[rails[j]]),
                in_nic[j],
            )
        } else {
            worse(worse(none, out_nic[i]), in_nic[j])
        }
    };
    // Busy seconds only, for the hot loop: per receiver its local and NIC ingress, the latter with its
    // rail's spine downlink folded in for cross-rail routes.
    let inl: Vec<f64> = in_local.iter().map(|x| x.0).collect();
    let inn: Vec<f64> = in_nic.iter().map(|x| x.0).collect();
    let inn_down: Vec<f64> = (0..n).map(|j| inn[j].max(down[rails[j]].0)).collect();
    let has_spine = spine.iter().all(Option::is_some);
    // One pass over the flows in row-major order: a flow's time (latency plus the busiest link on its
    // route) counts for both its sender and its receiver, a later flow winning only when strictly later.
    let mut best: Vec<(f64, usize, usize)> = vec![(0.0, usize::MAX, usize::MAX); n];
    for i in 0..n {
        let row = &bytes[i * n..(i + 1) * n];
        let (ol, on, su) = (out_local[i].0, out_nic[i].0, up[rails[i]].0);
        let lat = topo.route_latencies_from(ranks[i]);
        let contiguous = ranks[n - 1] + 1 - ranks[0] == n;
        for (j, &b) in row.iter().enumerate() {
            if j == i || b <= 0.0 {
                continue;
            }
            let busiest = if nodes[j] == nodes[i] || ports[i].nic_out == u32::MAX {
                ol.max(inl[j])
            } else if rails[j] != rails[i] && has_spine {
                on.max(su).max(inn_down[j])
            } else {
                on.max(inn[j])
            };
            let l = if contiguous {
                lat[ranks[0] + j]
            } else {
                lat[ranks[j]]
            };
            let time = l + busiest;
            if time > best[i].0 {
                best[i] = (time, i, j);
            }
            if time > best[j].0 {
                best[j] = (time, i, j);
            }
        }
    }
    let best: Vec<(f64, u32)> = best
        .into_iter()
        .map(|(t, a, b)| {
            if a == usize::MAX {
                (t, u32::MAX)
            } else {
                (t, route_link(a, b).1)
            }
        })
        .collect();
    out.per_rank = best
        .iter()
        .enumerate()
        .map(|(i, &(time, link))| {
            let mut t = RankTransfer::idle(ranks[i]);
            t.time_s = time;
            if link != u32::MAX {
                attribute(topo, ranks[i], link, busy[link as usize], &means, &mut t);
            }
            t
        })
        .collect();
    out
}

/// The block size when `ranks` are consecutive GPUs laid out in whole nodes (or inside one node), as EP
/// groups are: then a row's destinations split into its own node's block and the other nodes' blocks, and
/// the all-to-all needs no per-pair route classification.
fn node_blocks(topo: &Topology, ranks: &[usize]) -> Option<usize> {
    let n = ranks.len();
    let gpn = topo.gpus_per_node();
    if n == 0 || ranks.iter().enumerate().any(|(k, &r)| r != ranks[0] + k) {
        return None;
    }
    if ranks[0] / gpn == ranks[n - 1] / gpn {
        return Some(n);
    }
    let nics = ranks.iter().all(|&r| topo.ports(r).nic_out != u32::MAX);
    let spines = (0..gpn).filter(|&r| topo.spine_links(r).is_some()).count();
    let uniform_spine = spines == 0 || spines == gpn;
    (ranks[0].is_multiple_of(gpn) && n.is_multiple_of(gpn) && nics && uniform_spine).then_some(gpn)
}

/// The first index holding the largest positive value, and that value; `(0.0, usize::MAX)` if none is
/// positive. Scanned in independent lanes (each keeps its first maximum), then the lanes are merged.
fn first_latest(times: &[f64]) -> (f64, usize) {
    const LANES: usize = 4;
    // Indices as f64 (exact below 2^53) so that both selects share one comparison mask.
    let (mut best, mut at) = ([0.0f64; LANES], [f64::INFINITY; LANES]);
    let chunks = times.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut index = [0.0, 1.0, 2.0, 3.0];
    for chunk in chunks {
        for l in 0..LANES {
            let later = chunk[l] > best[l];
            best[l] = if later { chunk[l] } else { best[l] };
            at[l] = if later { index[l] } else { at[l] };
            index[l] += LANES as f64;
        }
    }
    let mut out = (0.0, usize::MAX);
    for l in 0..LANES {
        let j = if at[l].is_finite() {
            at[l] as usize
        } else {
            usize::MAX
        };
        if best[l] > out.0 || (best[l] == out.0 && j < out.1) {
            out = (best[l], j);
        }
    }
    let base = times.len() - rest.len();
    for (k, &x) in rest.iter().enumerate() {
        if x > out.0 {
            out = (x, base + k);
        }
    }
    out
}

/// [`all_to_all`] for node-aligned consecutive participants: the same sums, block by block, with
/// branch-free inner loops. Per-link sums keep the per-pair pass's order; a row's remote total is summed by
/// rail, so it can differ from the per-pair pass in the last bit unless the bytes are whole numbers (token
/// counts times a whole token size, as every EP dispatch is), where every order gives the same bits. A
/// rank's winning flow is the first in row-major order among those with its latest finish, exactly as the
/// per-pair pass picks it.
fn all_to_all_blocked(
    topo: &Topology,
    ranks: &[usize],
    bytes: &[f64],
    block: usize,
    s: &mut AllToAllScratch,
) -> AllToAllOutcome {
    let n = ranks.len();
    let gpn = topo.gpus_per_node();
    let multi_node = block < n;
    let ports: Vec<_> = ranks.iter().map(|&r| topo.ports(r)).collect();
    let spine: Vec<Option<(u32, u32)>> = (0..gpn).map(|r| topo.spine_links(r)).collect();
    let has_spine = spine.iter().all(Option::is_some);
    let rail = |i: usize| ranks[i] % gpn;
    let mut out = AllToAllOutcome::default();
    // Pass 1: inbound bytes per participant and tier, outbound per row, spine downlinks per rail.
    let (mut local_in, mut nic_in) = (vec![0.0f64; n], vec![0.0f64; n]);
    let mut down = vec![0.0f64; gpn];
    let (mut local_out, mut nic_out, mut spine_out) =
        (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    // Per-rail sums of one row's remote sends (a rank's rail is its index in its block).
    let mut rail_sum = vec![0.0f64; block];
    for i in 0..n {
        let row = &bytes[i * n..(i + 1) * n];
        let a = i / block * block;
        let mut lo = 0.0;
        for j in a..a + block {
            let b = if j == i { 0.0 } else { row[j].max(0.0) };
            local_in[j] += b;
            lo += b;
        }
        local_out[i] = lo;
        if multi_node {
            let ri = rail(i);
            rail_sum.fill(0.0);
            for start in (0..n).step_by(block).filter(|&st| st != a) {
                let sent = &row[start..start + block];
                for ((into, acc), &b) in nic_in[start..start + block]
                    .iter_mut()
                    .zip(rail_sum.iter_mut())
                    .zip(sent)
                {
                    let b = b.max(0.0);
                    *into += b;
                    *acc += b;
                }
            }
            if has_spine {
                // Every rail but the sender's own leaves over the spine.
                for (r, (d, &x)) in down.iter_mut().zip(&rail_sum).enumerate() {
                    if r != ri {
                        *d += x;
                    }
                }
            }
            nic_out[i] = rail_sum.iter().sum();
            spine_out[i] = if has_spine {
                rail_sum
                    .iter()
                    .enumerate()
                    .filter(|&(r, _)| r != ri)
                    .map(|(_, &x)| x)
                    .sum()
            } else {
                0.0
            };
        }
    }
    s.load.clear();
    s.load.resize(topo.links.len(), 0.0);
    s.dense = true;
    {
        let load = &mut s.load;
        // The same additions as the per-pair pass: a link's bytes in row-major order of its flows.
        for i in 0..n {
            if local_in[i] > 0.0 {
                load[ports[i].local_in as usize] += local_in[i];
            }
            if nic_in[i] > 0.0 {
                load[ports[i].nic_in as usize] += nic_in[i];
            }
            if local_out[i] > 0.0 {
                load[ports[i].local_out as usize] += local_out[i];
            }
            if nic_out[i] > 0.0 {
                load[ports[i].nic_out as usize] += nic_out[i];
            }
            if spine_out[i] > 0.0
                && let Some((up, _)) = spine[rail(i)]
            {
                load[up as usize] += spine_out[i];
            }
            out.network_bytes += local_out[i] + nic_out[i];
            out.nic_bytes += nic_out[i];
            out.link_bytes_total += 2.0 * (local_out[i] + nic_out[i] + spine_out[i]);
        }
        for (r, &d) in down.iter().enumerate() {
            if d > 0.0
                && let Some((_, dl)) = spine[r]
            {
                load[dl as usize] += d;
            }
        }
    }
    s.busy.clear();
    s.busy.extend(
        s.load
            .iter()
            .zip(&topo.links)
            .map(|(&l, link)| l / link.capacity()),
    );
    let busy = &s.busy;
    let port = |l: u32| if l == u32::MAX { 0.0 } else { busy[l as usize] };
    let inl: Vec<f64> = ports.iter().map(|p| port(p.local_in)).collect();
    let inn: Vec<f64> = ports.iter().map(|p| port(p.nic_in)).collect();
    let down_busy: Vec<f64> = spine
        .iter()
        .map(|x| x.map_or(0.0, |(_, d)| busy[d as usize]))
        .collect();
    let inn_down: Vec<f64> = (0..n).map(|j| inn[j].max(down_busy[rail(j)])).collect();
    // Pass 2: every flow's finish (latency plus the busiest link on its route); per rank, the first flow in
    // row-major order with the latest finish, as sender (row) and as receiver (column).
    // Receivers as columns (latest finish, first row reaching it) so the scan over a row is branch-free.
    // Rows are kept as f64 (exact below 2^53, −1 for none) so that both selects share one comparison mask.
    let (mut recv_time, mut recv_row) = (vec![0.0f64; n], vec![-1.0f64; n]);
    let mut as_sender: Vec<(f64, usize)> = vec![(0.0, usize::MAX); n];
    let mut t = vec![-1.0f64; n];
    for i in 0..n {
        let row = &bytes[i * n..(i + 1) * n];
        let lat = &topo.route_latencies_from(ranks[i])[ranks[0]..ranks[0] + n];
        let a = i / block * block;
        let ol = port(ports[i].local_out);
        for j in a..a + block {
            t[j] = lat[j] + ol.max(inl[j]);
        }
        if multi_node {
            let on = port(ports[i].nic_out);
            let up = spine[rail(i)].map_or(0.0, |(u, _)| busy[u as usize]);
            let ri = rail(i);
            // Other rails cross the spine; the sender's own rail goes NIC to NIC (fixed up per block).
            let (base, inbound) = if has_spine {
                (on.max(up), &inn_down)
            } else {
                (on, &inn)
            };
            for start in (0..n).step_by(block).filter(|&st| st != a) {
                for ((tj, &l), &b) in t[start..start + block]
                    .iter_mut()
                    .zip(&lat[start..start + block])
                    .zip(&inbound[start..start + block])
                {
                    // Busy times are never NaN: a plain comparison lets the loop run in vector lanes.
                    *tj = l + if b > base { b } else { base };
                }
                let j = start + ri;
                t[j] = lat[j] + on.max(inn[j]);
            }
        }
        t[i] = -1.0;
        for (tj, &b) in t.iter_mut().zip(row) {
            *tj = if b > 0.0 { *tj } else { -1.0 };
        }
        for ((&time, rt), rr) in t.iter().zip(recv_time.iter_mut()).zip(recv_row.iter_mut()) {
            let later = time > *rt;
            *rt = if later { time } else { *rt };
            *rr = if later { i as f64 } else { *rr };
        }
        as_sender[i] = first_latest(&t);
    }
    let as_receiver: Vec<(f64, usize)> = recv_time
        .into_iter()
        .zip(recv_row)
        .map(|(time, row)| (time, if row < 0.0 { usize::MAX } else { row as usize }))
        .collect();
    let ports_of = |i: usize, j: usize| -> u32 {
        // The busiest link on the route i → j in route order, the earlier winning ties.
        let worse = |a: (f64, u32), l: u32| {
            if l != u32::MAX && busy[l as usize] > a.0 {
                (busy[l as usize], l)
            } else {
                a
            }
        };
        let none = (0.0, u32::MAX);
        if i / block == j / block {
            worse(worse(none, ports[i].local_out), ports[j].local_in).1
        } else if rail(i) != rail(j) && has_spine {
            let (u, _) = spine[rail(i)].expect("spine");
            let (_, d) = spine[rail(j)].expect("spine");
            worse(
                worse(worse(worse(none, ports[i].nic_out), u), d),
                ports[j].nic_in,
            )
            .1
        } else {
            worse(worse(none, ports[i].nic_out), ports[j].nic_in).1
        }
    };
    let means = port_means(topo, ranks, |l| busy[l as usize]);
    out.per_rank = (0..n)
        .map(|k| {
            let (st, sj) = as_sender[k];
            let (rt, ri) = as_receiver[k];
            // Row-major order: receiver flows from earlier rows, then this row's sends, then later rows.
            let pair = match (sj != usize::MAX, ri != usize::MAX) {
                (false, false) => None,
                (true, false) => Some((st, k, sj)),
                (false, true) => Some((rt, ri, k)),
                (true, true) => {
                    if rt > st || (rt == st && ri < k) {
                        Some((rt, ri, k))
                    } else {
                        Some((st, k, sj))
                    }
                }
            };
            let mut tr = RankTransfer::idle(ranks[k]);
            if let Some((time, a, b)) = pair {
                tr.time_s = time;
                let link = ports_of(a, b);
                if link != u32::MAX {
                    attribute(topo, ranks[k], link, busy[link as usize], &means, &mut tr);
                }
            }
            tr
        })
        .collect();
    out
}

/// Builds collectives for one network backend: flows are attached only when the flow backend runs them.
#[derive(Debug, Clone, Copy)]
pub struct Collectives<'t> {
    pub topo: &'t Topology,
    pub network: NetworkKind,
}

impl<'t> Collectives<'t> {
    pub fn new(topo: &'t Topology, network: NetworkKind) -> Self {
        Collectives { topo, network }
    }

    fn with_flows(&self) -> bool {
        self.network == NetworkKind::Flow
    }

    /// The spec of transfers among `ranks`, priced analytically, parts on `stream`.
    fn spec(
        &self,
        ranks: &[usize],
        priced: &AllToAllOutcome,
        transfers: impl Iterator<Item = Transfer>,
        stream: Stream,
    ) -> CollectiveSpec {
        let parts = ranks
            .iter()
            .zip(&priced.per_rank)
            .map(|(&r, t)| t.part(r, stream))
            .collect();
        let flows = if self.with_flows() {
            let index_of =
                |g: usize| ranks.iter().position(|&r| r == g).expect("participant") as u32;
            transfers
                .filter(|t| t.bytes > 0.0 && t.src != t.dst)
                .map(|t| FlowSpec {
                    src_part: index_of(t.src),
                    dst_part: index_of(t.dst),
                    src: t.src as u32,
                    dst: t.dst as u32,
                    bytes: t.bytes,
                    latency: ps(t.messages * self.topo.route_latency_s(t.src, t.dst)),
                })
                .collect()
        } else {
            Vec::new()
        };
        CollectiveSpec {
            parts,
            flows,
            bytes: priced.network_bytes,
        }
    }

    /// Transfers priced together as one collective.
    pub fn transfers(
        &self,
        ranks: &[usize],
        transfers: &[Transfer],
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> (CollectiveSpec, AllToAllOutcome) {
        let priced = price_transfers(self.topo, ranks, transfers, s);
        let spec = self.spec(ranks, &priced, transfers.iter().copied(), stream);
        (spec, priced)
    }

    /// Transfers priced together at each of `scales` (every byte count multiplied), in one pass: see
    /// [`price_transfers_scaled`].
    pub fn transfers_scaled(
        &self,
        ranks: &[usize],
        transfers: &[Transfer],
        scales: &[f64],
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> Vec<(CollectiveSpec, AllToAllOutcome)> {
        price_transfers_scaled(self.topo, ranks, transfers, scales, s)
            .into_iter()
            .zip(scales)
            .map(|(priced, &k)| {
                let scaled = transfers.iter().map(|t| Transfer {
                    bytes: t.bytes * k,
                    ..*t
                });
                (self.spec(ranks, &priced, scaled, stream), priced)
            })
            .collect()
    }

    /// The reverse of transfers priced by [`Collectives::transfers`] (every transfer's source and
    /// destination swapped: a combine after its dispatch), priced by mirroring them (see
    /// [`AllToAllOutcome::mirrored`]).
    pub fn transfers_mirrored(
        &self,
        ranks: &[usize],
        forward: &AllToAllOutcome,
        transfers: &[Transfer],
        stream: Stream,
    ) -> (CollectiveSpec, AllToAllOutcome) {
        let priced = forward.mirrored();
        let reversed = transfers.iter().map(|t| Transfer {
            src: t.dst,
            dst: t.src,
            ..*t
        });
        (self.spec(ranks, &priced, reversed, stream), priced)
    }

    /// A direct all-to-all(v) of a byte matrix (see [`all_to_all`]).
    pub fn all_to_all(
        &self,
        ranks: &[usize],
        bytes: &[f64],
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> (CollectiveSpec, AllToAllOutcome) {
        let priced = all_to_all(self.topo, ranks, bytes, s);
        let n = ranks.len();
        let spec = self.spec(
            ranks,
            &priced,
            (0..n * n).map(|k| Transfer {
                src: ranks[k / n],
                dst: ranks[k % n],
                bytes: bytes[k],
                messages: 1.0,
            }),
            stream,
        );
        (spec, priced)
    }

    /// The combine of a dispatch of `bytes` priced by [`Collectives::all_to_all`]: every flow reversed,
    /// priced by mirroring the dispatch (see [`AllToAllOutcome::mirrored`]).
    pub fn all_to_all_mirrored(
        &self,
        ranks: &[usize],
        dispatch: &AllToAllOutcome,
        bytes: &[f64],
        stream: Stream,
    ) -> (CollectiveSpec, AllToAllOutcome) {
        let priced = dispatch.mirrored();
        let n = ranks.len();
        let spec = self.spec(
            ranks,
            &priced,
            (0..n * n).map(|k| Transfer {
                src: ranks[k % n],
                dst: ranks[k / n],
                bytes: bytes[k],
                messages: 1.0,
            }),
            stream,
        );
        (spec, priced)
    }

    /// A hierarchical all-to-all: `to_gpu[i * n + j]` bytes from participant i for GPU j (deduplicated per
    /// GPU), `to_node[i * n + j]` bytes from participant i for the node of participant j (deduplicated per
    /// node; only the entry of the first participant on each node is read). Inside a node a source sends
    /// straight to each GPU; to another node it sends once over its NIC to the participant with its own
    /// rail there (or the node's first participant), which forwards over NVLink. Both stages run at once
    /// (DeepEP pipelines them in chunks), so a part lasts as long as its slowest stage.
    pub fn hierarchical_all_to_all(
        &self,
        ranks: &[usize],
        to_gpu: &[f64],
        to_node: &[f64],
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> (CollectiveSpec, AllToAllOutcome) {
        let transfers = hierarchical_transfers(self.topo, ranks, to_gpu, to_node);
        self.transfers(ranks, &transfers, stream, s)
    }

    /// Stages of an all-reduce of `bytes` among `ranks`: a ring inside one node; across nodes the
    /// hierarchical form (intra-node ring reduce-scatter, one ring per rail across nodes over the shard,
    /// intra-node ring all-gather) when every node holds the same number of participants, else one ring.
    pub fn all_reduce(
        &self,
        ranks: &[usize],
        bytes: f64,
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> Vec<CollectiveSpec> {
        // A GPU holding two copies (EPLB may place them) reduces them locally first.
        let mut unique = ranks.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let ranks = &unique[..];
        if ranks.len() < 2 || bytes <= 0.0 {
            return Vec::new();
        }
        let groups = node_groups(self.topo, ranks);
        let local = groups[0].len();
        if groups.len() == 1 || groups.iter().any(|g| g.len() != local) {
            return vec![self.ring(ranks, bytes, 2.0, s, stream)];
        }
        let mut stages = Vec::new();
        if local > 1 {
            stages.push(self.rings(&groups, bytes, 1.0, s, stream));
        }
        let rails: Vec<Vec<usize>> = (0..local)
            .map(|k| groups.iter().map(|g| g[k]).collect())
            .collect();
        stages.push(self.rings(&rails, bytes / local as f64, 2.0, s, stream));
        if local > 1 {
            stages.push(self.rings(&groups, bytes, 1.0, s, stream));
        }
        stages
    }

    /// Several all-reduces launched together (an NCCL group call, as frameworks launch their gradient
    /// buckets): each `(ranks, bytes)` bucket is a ring over its ranks (node order, so it crosses each node
    /// boundary once), all priced as one collective whose rings share links. A rank in several buckets
    /// carries all their traffic on its ports at once.
    pub fn grouped_all_reduce(
        &self,
        buckets: &[(Vec<usize>, f64)],
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> Option<CollectiveSpec> {
        let mut transfers = Vec::new();
        let mut all: Vec<usize> = Vec::new();
        for (ranks, bytes) in buckets {
            let mut ring = ranks.clone();
            ring.sort_unstable();
            ring.dedup();
            let n = ring.len();
            if n < 2 || *bytes <= 0.0 {
                continue;
            }
            all.extend_from_slice(&ring);
            let steps = 2.0 * (n as f64 - 1.0);
            for k in 0..n {
                transfers.push(Transfer {
                    src: ring[k],
                    dst: ring[(k + 1) % n],
                    bytes: steps / n as f64 * bytes,
                    messages: steps,
                });
            }
        }
        all.sort_unstable();
        all.dedup();
        (!all.is_empty()).then(|| self.transfers(&all, &transfers, stream, s).0)
    }

    /// A ring reduce-scatter of `bytes` (each rank ends with `bytes / n`).
    pub fn reduce_scatter(
        &self,
        ranks: &[usize],
        bytes: f64,
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> CollectiveSpec {
        self.ring(ranks, bytes, 1.0, s, stream)
    }

    /// A ring all-gather of `bytes` in all (each rank contributes `bytes / n`).
    pub fn all_gather(
        &self,
        ranks: &[usize],
        bytes: f64,
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> CollectiveSpec {
        self.ring(ranks, bytes, 1.0, s, stream)
    }

    /// A point-to-point send of `bytes` from `src` to `dst` (pipeline stages).
    pub fn send(
        &self,
        src: usize,
        dst: usize,
        bytes: f64,
        stream: Stream,
        s: &mut AllToAllScratch,
    ) -> CollectiveSpec {
        let t = [Transfer {
            src,
            dst,
            bytes,
            messages: 1.0,
        }];
        self.transfers(&[src, dst], &t, stream, s).0
    }

    /// One ring over `ranks` moving `passes × (n−1)/n × bytes` from each rank to its successor in
    /// `passes × (n−1)` steps (1 pass: reduce-scatter or all-gather; 2: all-reduce).
    fn ring(
        &self,
        ranks: &[usize],
        bytes: f64,
        passes: f64,
        s: &mut AllToAllScratch,
        stream: Stream,
    ) -> CollectiveSpec {
        self.rings(&[ranks.to_vec()], bytes, passes, s, stream)
    }

    /// Several disjoint rings priced together (they share links): `passes` 1 is a reduce-scatter or an
    /// all-gather of `bytes` on each ring, 2 an all-reduce.
    pub fn rings(
        &self,
        rings: &[Vec<usize>],
        bytes: f64,
        passes: f64,
        s: &mut AllToAllScratch,
        stream: Stream,
    ) -> CollectiveSpec {
        let mut transfers = Vec::new();
        let mut all = Vec::new();
        for ring in rings {
            let n = ring.len();
            all.extend_from_slice(ring);
            if n < 2 {
                continue;
            }
            let steps = passes * (n as f64 - 1.0);
            for k in 0..n {
                transfers.push(Transfer {
                    src: ring[k],
                    dst: ring[(k + 1) % n],
                    bytes: steps / n as f64 * bytes,
                    messages: steps,
                });
            }
        }
        self.transfers(&all, &transfers, stream, s).0
    }
}

/// Participants grouped by node, in node order (ranks ascending inside a node).
fn node_groups(topo: &Topology, ranks: &[usize]) -> Vec<Vec<usize>> {
    let mut per_node: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &r in ranks {
        per_node.entry(topo.node_of(r)).or_default().push(r);
    }
    per_node
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .collect()
}

/// The transfers of a hierarchical all-to-all (see [`Collectives::hierarchical_all_to_all`]).
///
/// For each source `i` in order: its same-node transfers (destinations ascending), then per remote node in
/// the order the node first appears among `ranks`, the copy to the node's relay (the GPU on the source's
/// rail, else the node's first) and the relay's forwards to the node's other GPUs (ascending). Node
/// membership, first GPUs and relays are looked up once, not searched per pair.
pub fn hierarchical_transfers(
    topo: &Topology,
    ranks: &[usize],
    to_gpu: &[f64],
    to_node: &[f64],
) -> Vec<Transfer> {
    let n = ranks.len();
    let node: Vec<usize> = ranks.iter().map(|&r| topo.node_of(r)).collect();
    let rail: Vec<usize> = ranks.iter().map(|&r| topo.rail_of(r)).collect();
    // Nodes in order of first appearance, each with its members (indices ascending).
    let mut nodes: Vec<(usize, Vec<usize>)> = Vec::new();
    for (k, &y) in node.iter().enumerate() {
        match nodes.iter_mut().find(|(x, _)| *x == y) {
            Some((_, members)) => members.push(k),
            None => nodes.push((y, vec![k])),
        }
    }
    let mut out = Vec::new();
    for i in 0..n {
        let row = i * n;
        for j in 0..n {
            if i != j && node[i] == node[j] && to_gpu[row + j] > 0.0 {
                out.push(Transfer {
                    src: ranks[i],
                    dst: ranks[j],
                    bytes: to_gpu[row + j],
                    messages: 1.0,
                });
            }
        }
        for (y, members) in &nodes {
            if *y == node[i] {
                continue;
            }
            let first = members[0];
            let relay = members
                .iter()
                .copied()
                .find(|&k| rail[k] == rail[i])
                .unwrap_or(first);
            let b = to_node[row + first];
            if b > 0.0 {
                out.push(Transfer {
                    src: ranks[i],
                    dst: ranks[relay],
                    bytes: b,
                    messages: 1.0,
                });
            }
            for &k in members.iter().filter(|&&k| k != relay) {
                if to_gpu[row + k] > 0.0 {
                    out.push(Transfer {
                        src: ranks[relay],
                        dst: ranks[k],
                        bytes: to_gpu[row + k],
                        messages: 1.0,
                    });
                }
            }
        }
    }
    out
}

/// Time of an all-reduce of `bytes` among `ranks` at the analytic fidelity (its stages one after another).
pub fn all_reduce_s(topo: &Topology, ranks: &[usize], bytes: f64) -> f64 {
    let c = Collectives::new(topo, NetworkKind::Analytic);
    let mut s = AllToAllScratch::default();
    c.all_reduce(ranks, bytes, Stream::Comm, &mut s)
        .iter()
        .map(|spec| spec.parts.iter().map(|p| p.analytic).max().unwrap_or(0))
        .sum::<SimTime>() as f64
        * 1e-12
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

    fn dgx(nodes: usize) -> Topology {
        let mut c = cluster_preset("dgx-h100").unwrap();
        c.nodes = nodes;
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

    /// A skewed n × n byte matrix with zeros, from a multiplicative hash of the index: one entry in
    /// `zero_every` (about) is 0, the others up to 1000 × `scale`.
    fn hashed_matrix(n: usize, mul: u64, zero_every: u64, scale: f64) -> Vec<f64> {
        (0..n * n)
            .map(|k| {
                let h = (k as u64).wrapping_mul(mul) >> 40;
                if h.is_multiple_of(zero_every) {
                    0.0
                } else {
                    (h % 1000) as f64 * scale
                }
            })
            .collect()
    }

    /// Per rank: the same time and excess (within `tol` seconds), holder and cause.
    fn assert_same_parts(a: &AllToAllOutcome, b: &AllToAllOutcome, tol: f64) {
        for (x, y) in a.per_rank.iter().zip(&b.per_rank) {
            assert!((x.time_s - y.time_s).abs() < tol, "{x:?} vs {y:?}");
            assert_eq!((x.holder, x.cause), (y.holder, y.cause));
            assert!((x.excess_s - y.excess_s).abs() < tol);
        }
    }

    #[test]
    fn tier_aggregation_equals_walking_every_route() {
        // Two and four DGX nodes, a skewed matrix with zeros: the fast path and the route walk agree.
        for nodes in [2, 4] {
            let topo = dgx(nodes);
            let n = topo.gpus();
            let ranks: Vec<usize> = (0..n).collect();
            let bytes = hashed_matrix(n, 0x9e37_79b9_7f4a_7c15, 7, 1e4);
            let mut s = AllToAllScratch::default();
            let fast = all_to_all(&topo, &ranks, &bytes, &mut s);
            let transfers: Vec<Transfer> = (0..n * n)
                .map(|k| Transfer {
                    src: k / n,
                    dst: k % n,
                    bytes: bytes[k],
                    messages: 1.0,
                })
                .collect();
            let slow = price_transfers(&topo, &ranks, &transfers, &mut s);
            assert!((fast.network_bytes - slow.network_bytes).abs() < 1e-3);
            assert!((fast.link_bytes_total - slow.link_bytes_total).abs() < 1e-3);
            assert!((fast.nic_bytes - slow.nic_bytes).abs() < 1e-3);
            assert_same_parts(&fast, &slow, 1e-12);
        }
    }

    #[test]
    fn node_blocks_give_the_same_bits_as_the_per_pair_pass() {
        // Whole nodes, one node, and a group inside a node: with whole-number bytes (every EP dispatch) the
        // blocked pass is the per-pair pass, bit for bit, holders and causes included (ties broken the same
        // way: a uniform matrix has many).
        for (nodes, range) in [(4, 0..32), (4, 8..24), (2, 0..8), (2, 2..6), (1, 0..8)] {
            let topo = dgx(nodes);
            let ranks: Vec<usize> = range.collect();
            let n = ranks.len();
            assert!(node_blocks(&topo, &ranks).is_some());
            for bytes in [
                hashed_matrix(n, 0x9e37_79b9_7f4a_7c15, 7, 1e4),
                vec![1e6; n * n],
            ] {
                let mut s = AllToAllScratch::default();
                let fast = all_to_all_blocked(
                    &topo,
                    &ranks,
                    &bytes,
                    node_blocks(&topo, &ranks).unwrap(),
                    &mut s,
                );
                let slow = all_to_all_pairs(&topo, &ranks, &bytes, &mut s);
                assert_eq!(fast.network_bytes, slow.network_bytes);
                assert_eq!(fast.nic_bytes, slow.nic_bytes);
                assert_eq!(fast.link_bytes_total, slow.link_bytes_total);
                assert_eq!(fast.per_rank, slow.per_rank);
            }
        }
        // Fractional bytes (deduplicated shares): rows are summed in another order, so within rounding.
        for (nodes, range) in [(4, 0..32), (2, 0..16)] {
            let topo = dgx(nodes);
            let ranks: Vec<usize> = range.collect();
            let n = ranks.len();
            let bytes: Vec<f64> = hashed_matrix(n, 0x2545_f491_4f6c_dd1d, 5, 1.0)
                .into_iter()
                .enumerate()
                .map(|(k, b)| b * 1e4 / (1.0 + (k % 13) as f64 / 7.0))
                .collect();
            let mut s = AllToAllScratch::default();
            let block = node_blocks(&topo, &ranks).unwrap();
            let fast = all_to_all_blocked(&topo, &ranks, &bytes, block, &mut s);
            let slow = all_to_all_pairs(&topo, &ranks, &bytes, &mut s);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs());
            assert!(close(fast.network_bytes, slow.network_bytes));
            assert!(close(fast.nic_bytes, slow.nic_bytes));
            assert!(close(fast.link_bytes_total, slow.link_bytes_total));
            assert_same_parts(&fast, &slow, 1e-15);
        }
        // Not node-aligned: the per-pair pass.
        assert!(node_blocks(&dgx(2), &[4, 5, 6, 7, 8, 9, 10, 11]).is_none());
        assert!(node_blocks(&dgx(2), &[0, 2]).is_none());
    }

    #[test]
    fn a_transposed_all_to_all_is_its_mirror() {
        for nodes in [1, 2, 4] {
            let topo = dgx(nodes);
            let n = topo.gpus();
            let ranks: Vec<usize> = (0..n).collect();
            let bytes = hashed_matrix(n, 0x2545_f491_4f6c_dd1d, 5, 3e3);
            let mut t = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    t[j * n + i] = bytes[i * n + j];
                }
            }
            let mut s = AllToAllScratch::default();
            let d = all_to_all(&topo, &ranks, &bytes, &mut s);
            let direct = all_to_all(&topo, &ranks, &t, &mut s);
            let mirror = d.mirrored();
            assert!((direct.network_bytes - mirror.network_bytes).abs() < 1e-3);
            assert_same_parts(&direct, &mirror, 1e-15);
        }
    }

    /// Hierarchical transfers of a skewed dispatch among `ranks` (deduplicated shares below the copies).
    fn skewed_hierarchical(topo: &Topology, ranks: &[usize]) -> Vec<Transfer> {
        let n = ranks.len();
        let to_gpu = hashed_matrix(n, 0x9e37_79b9_7f4a_7c15, 7, 1e4);
        let to_node: Vec<f64> = to_gpu.iter().map(|&b| 1.5 * b).collect();
        hierarchical_transfers(topo, ranks, &to_gpu, &to_node)
    }

    #[test]
    fn reversed_hierarchical_transfers_are_their_mirror() {
        // The combine of a hierarchical dispatch (every relay and forward reversed) priced by walking its
        // routes equals the dispatch mirrored, on whole nodes and on a group that starts mid-node.
        for (nodes, range) in [(2, 0..16), (4, 0..32), (4, 4..28)] {
            let topo = dgx(nodes);
            let ranks: Vec<usize> = range.collect();
            let transfers = skewed_hierarchical(&topo, &ranks);
            let reversed: Vec<Transfer> = transfers
                .iter()
                .map(|t| Transfer {
                    src: t.dst,
                    dst: t.src,
                    ..*t
                })
                .collect();
            let mut s = AllToAllScratch::default();
            let forward = price_transfers(&topo, &ranks, &transfers, &mut s);
            let walked = price_transfers(&topo, &ranks, &reversed, &mut s);
            let mirror = forward.mirrored();
            assert!((walked.network_bytes - mirror.network_bytes).abs() < 1e-3);
            assert!((walked.nic_bytes - mirror.nic_bytes).abs() < 1e-3);
            // Times agree exactly. The binding link may differ where two links of a rank's transfer are
            // equally busy (a relay's NIC out and the receiver's NIC in carry the same one transfer on two
            // nodes): the walk keeps the first on the route, whose order the reversal flips.
            for (w, m) in walked.per_rank.iter().zip(&mirror.per_rank) {
                assert!((w.time_s - m.time_s).abs() < 1e-15, "{w:?} vs {m:?}");
            }
            let same = (walked.per_rank.iter().zip(&mirror.per_rank))
                .filter(|(w, m)| (w.holder, w.cause) == (m.holder, m.cause))
                .count();
            assert!(same > 0, "no rank keeps its attribution");
        }
    }

    #[test]
    fn scaled_pricing_equals_pricing_the_scaled_transfers() {
        // One walk at scales 1 and 0.53 (an FP8 dispatch beside its BF16 twin) against pricing each
        // scaled set on its own: the same per-rank times, holders, causes and bytes.
        let topo = dgx(4);
        let ranks: Vec<usize> = (0..32).collect();
        let transfers = skewed_hierarchical(&topo, &ranks);
        let mut s = AllToAllScratch::default();
        let both = price_transfers_scaled(&topo, &ranks, &transfers, &[1.0, 0.53], &mut s);
        assert_eq!(both.len(), 2);
        for (out, k) in both.iter().zip([1.0, 0.53]) {
            let scaled: Vec<Transfer> = transfers
                .iter()
                .map(|t| Transfer {
                    bytes: t.bytes * k,
                    ..*t
                })
                .collect();
            let alone = price_transfers(&topo, &ranks, &scaled, &mut s);
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs());
            assert!(close(out.network_bytes, alone.network_bytes));
            assert!(close(out.nic_bytes, alone.nic_bytes));
            assert!(close(out.link_bytes_total, alone.link_bytes_total));
            assert_same_parts(out, &alone, 1e-15);
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

    #[test]
    fn hierarchical_all_reduce_is_three_stages_of_known_size() {
        // 2 nodes × 8: intra RS (7/8·B over NVLink), per-rail ring over the shard (2·1/2·B/8 over the NIC),
        // intra AG (7/8·B), each plus its steps' latencies.
        let topo = dgx(2);
        let ranks: Vec<usize> = (0..16).collect();
        let b = 8e9;
        let nv = topo.route_bandwidth(0, 1);
        let nic = topo.route_bandwidth(0, 8);
        let (lat_nv, lat_nic) = (topo.route_latency_s(0, 1), topo.route_latency_s(0, 8));
        let expect = 2.0 * (7.0 / 8.0 * b / nv + 7.0 * lat_nv) + (b / 8.0 / nic + 2.0 * lat_nic);
        let t = all_reduce_s(&topo, &ranks, b);
        assert!((t - expect).abs() / expect < 1e-9, "{t} vs {expect}");
    }

    #[test]
    fn hierarchical_all_to_all_sends_each_token_over_the_nic_once_per_node() {
        // 2 nodes × 8 GPUs. Rank 0 has 100 tokens (1 KB each); every token goes to 4 experts, all on
        // GPUs 8..12 of node 1 (two experts on GPU 8, one each on 9 and 10). Direct sends 400 copies over
        // the NIC; hierarchical sends 100 (one per token to node 1), then forwards 100 to each of 9 and 10.
        let topo = dgx(2);
        let ranks: Vec<usize> = (0..16).collect();
        let n = 16;
        let tok = 1024.0;
        let mut copies = vec![0.0; n * n];
        copies[8] = 200.0 * tok;
        copies[9] = 100.0 * tok;
        copies[10] = 100.0 * tok;
        let mut to_gpu = vec![0.0; n * n];
        to_gpu[8] = 100.0 * tok;
        to_gpu[9] = 100.0 * tok;
        to_gpu[10] = 100.0 * tok;
        let mut to_node = vec![0.0; n * n];
        to_node[8] = 100.0 * tok; // node 1's first participant stands for the node
        let c = Collectives::new(&topo, NetworkKind::Flow);
        let mut s = AllToAllScratch::default();
        let (_, direct) = c.all_to_all(&ranks, &copies, Stream::Comm, &mut s);
        let (spec, hier) =
            c.hierarchical_all_to_all(&ranks, &to_gpu, &to_node, Stream::Comm, &mut s);
        assert_eq!(direct.nic_bytes, 400.0 * tok);
        assert_eq!(hier.nic_bytes, 100.0 * tok);
        // The NIC copy lands on GPU 8 (rank 0's rail on node 1), which forwards to 9 and 10 over NVLink.
        let nic: Vec<_> = spec.flows.iter().filter(|f| f.src == 0).collect();
        assert_eq!(nic.len(), 1);
        assert_eq!((nic[0].dst, nic[0].bytes), (8, 100.0 * tok));
        let fwd: f64 = spec
            .flows
            .iter()
            .filter(|f| f.src == 8)
            .map(|f| f.bytes)
            .sum();
        assert_eq!(fwd, 200.0 * tok);
        assert!(hier.per_rank[0].time_s < direct.per_rank[0].time_s);
    }
}
