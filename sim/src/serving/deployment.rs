//! A deployment served end to end: its pools of engine instances side by side in time order, the router
//! that hands requests to instances, and (disaggregated) the KV-cache transfer from prefill to decode.
//!
//! - **Routing: least-loaded.** An arriving request goes to the entry pool's instance (co-located or
//!   prefill) holding the fewest requests (waiting plus running); on a tie, the one given the fewest
//!   requests so far, then the lowest index (idle instances take turns); a prefilled
//!   request goes to the decode instance holding the fewest requests, those whose KV cache is on its way
//!   included. Least-loaded rather than round-robin because output lengths vary: round-robin piles long
//!   requests on one instance by chance, which no serving router does.
//! - **Disaggregation.** A prefill instance computes the prompt and produces the first token (its
//!   sequence then leaves the instance and frees its blocks); the prompt's KV cache
//!   (`prompt × layers × kv_bytes_per_token_per_layer`, the model's attention layout: GQA heads or MLA's
//!   compressed latent) is sent to the decode instance, which admits it as a decoding sequence and
//!   generates the remaining tokens. A request with one output token ends at prefill.
//! - **KV transfer, α–β over the topology.** Instances are placed on consecutive GPUs of the scenario's
//!   node type, prefill pool first; a transfer runs from a GPU of the prefill instance to the GPU of the
//!   same local index in the decode instance, over the topology's route between them (NVLink inside a
//!   node, NICs between nodes): `α + bytes / β` with α the route's latency and β its bottleneck bandwidth
//!   (datasheet × efficiency). Each GPU of a prefill instance sends one KV cache at a time, FIFO, and a
//!   transfer takes the GPU that is free first: the instance's transfers share its NICs (or NVLinks).
//! - **Time to first token** is the prefill instance's first token: it is produced there and streamed to
//!   the client at once (DistServe and Splitwise count it so); the transfer and the decode instance's
//!   admission delay the second token, so they count in TPOT and latency, and each request records its
//!   transfer time.
//! - The event loop takes, at every turn, the earliest of: the next arrival, the next transfer to
//!   complete, and the next step of any instance (arrivals and transfers first on a tie, then instances in
//!   pool and index order), so the run is deterministic.

use crate::scenario::Scenario;
use crate::serving::arrivals::Request;
use crate::serving::config::{Layout, Pool};
use crate::serving::instance::{Engine, Entry, InstanceRun, Served, Stalled, unserved};
use crate::serving::kv;
use crate::serving::step_cost::{Memo, StepCost};
use crate::topology::Topology;
use moesim_calibrate::CostModel;

/// One instance of a pool: its run and the requests it took.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRun {
    /// Per instance, its figures (their `served` is empty: the pool's requests are in `served`).
    pub instances: Vec<InstanceRun>,
    /// Every request of the run as this pool saw it (untouched when it never came here).
    pub served: Vec<Served>,
    /// KV-cache blocks of one instance.
    pub kv_blocks: u64,
    /// Distinct step shapes lowered (the pool's memo).
    pub step_shapes: usize,
}

/// Where a request went.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Placement {
    /// Entry-pool instance (co-located or prefill); `None` before it arrives.
    pub instance: Option<usize>,
    /// Decode instance (disaggregated, more than one output token).
    pub decode_instance: Option<usize>,
    /// KV transfer: prefill end → KV cache at the decode instance (waiting for a free GPU included).
    pub transfer_start_s: Option<f64>,
    pub transfer_end_s: Option<f64>,
}

/// A deployment's run: each request's outcome over the pools, and each pool's.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRun {
    /// Per request: first scheduled and first token on the entry pool, finish where it finished,
    /// preemptions over both pools.
    pub served: Vec<Served>,
    pub placement: Vec<Placement>,
    /// Entry pool first (co-located or prefill), then decode.
    pub pools: Vec<PoolRun>,
}

/// A pool's own scenario: the cluster cut to one instance (`nodes × gpus_per_node` of the node type), the
/// pool's strategy and engine settings.
pub fn pool_scenario(s: &Scenario, pool: &Pool) -> Scenario {
    let mut p = s.clone();
    p.cluster.nodes = pool.nodes;
    p.cluster.gpus_per_node = pool.gpus_per_node;
    let g = pool.gpus_per_instance();
    p.cluster.slow_ranks.retain(|r| r.rank < g);
    p.strategies = vec![pool.strategy.clone()];
    if let Some(c) = p.serving.as_mut() {
        c.engine = pool.engine;
        c.deployments.clear();
    }
    p
}

/// The KV bytes of a prompt of `tokens` tokens.
pub fn kv_bytes(s: &Scenario, tokens: u64) -> f64 {
    tokens as f64 * kv::kv_bytes_per_token(s)
}

/// The cluster holding every instance of `layout`, prefill pool first, on consecutive GPUs of the node type.
pub fn placement_topology(s: &Scenario, layout: &Layout) -> Topology {
    let gpus: usize = layout.pools().iter().map(|p| p.gpus()).sum();
    let mut c = s.cluster.clone();
    c.nodes = gpus.div_ceil(c.gpus_per_node).max(1);
    c.slow_ranks.clear();
    Topology::build(&c)
}

/// Seconds of a KV transfer of `bytes` from GPU `src` to GPU `dst` of `topo`: α + bytes / β.
pub fn transfer_s(topo: &Topology, src: usize, dst: usize, bytes: f64) -> f64 {
    topo.route_latency_s(src, dst) + bytes / topo.route_bandwidth(src, dst)
}

/// Serves `requests` (arrival order) on `layout`, each pool's steps priced by its strategy's lowering.
pub fn run(
    s: &Scenario,
    layout: &Layout,
    requests: &[Request],
    cost: &dyn CostModel,
) -> Result<DeploymentRun, String> {
    run_with_memos(s, layout, requests, cost, &mut Vec::new())
}

/// [`run`], each pool's step times starting from `memos` (per pool, from an earlier run of the same
/// scenario and layout; empty: none) and left there for the next.
pub fn run_with_memos(
    s: &Scenario,
    layout: &Layout,
    requests: &[Request],
    cost: &dyn CostModel,
    memos: &mut Vec<Memo>,
) -> Result<DeploymentRun, String> {
    let pools = layout.pools();
    let scenarios: Vec<Scenario> = pools.iter().map(|p| pool_scenario(s, p)).collect();
    let topos: Vec<Topology> = scenarios
        .iter()
        .map(|p| Topology::build(&p.cluster))
        .collect();
    let mut blocks = Vec::new();
    for (ps, pool) in scenarios.iter().zip(&pools) {
        blocks.push(match pool.engine.kv_blocks {
            Some(b) => b,
            None => kv::capacity_blocks(
                ps,
                &ps.strategies[0],
                pool.engine.block_size,
                pool.engine.gpu_memory_utilization,
            )?,
        });
    }
    let mut costs: Vec<StepCost> = scenarios
        .iter()
        .zip(&topos)
        .zip(&pools)
        .enumerate()
        .map(|(k, ((ps, topo), pool))| {
            StepCost::new(ps, &ps.strategies[0], topo, cost, pool.engine.shape_bits)
                .with_memo(memos.get_mut(k).map(std::mem::take).unwrap_or_default())
        })
        .collect();
    let disaggregated = matches!(layout, Layout::Disaggregated { .. });
    let placement_topo = disaggregated.then(|| placement_topology(s, layout));
    let mut engines: Vec<Vec<Engine>> = pools
        .iter()
        .zip(&blocks)
        .map(|(p, &b)| (0..p.instances).map(|_| Engine::new(p.engine, b)).collect())
        .collect();
    let mut served: Vec<Vec<Served>> = pools.iter().map(|_| unserved(requests)).collect();
    let mut placement = vec![Placement::default(); requests.len()];
    // Disaggregated: per prefill instance, when each of its GPUs is free to send; per decode instance,
    // the KV caches on their way to it; transfers in flight by (end, request).
    let (gp, gd) = (
        pools[0].gpus_per_instance(),
        pools.get(1).map_or(0, |p| p.gpus_per_instance()),
    );
    let mut lanes: Vec<Vec<f64>> = vec![vec![0.0; gp]; pools[0].instances];
    let mut inflight: Vec<usize> = vec![0; pools.get(1).map_or(0, |p| p.instances)];
    let mut transfers: std::collections::BTreeSet<(Time, usize)> = Default::default();
    // Requests each instance has been given, per pool (the router's tie-break).
    let mut taken: Vec<Vec<usize>> = pools.iter().map(|p| vec![0; p.instances]).collect();
    let mut next = 0;
    let stalled = |e: Stalled, k: usize| format!("{} pool: {e}", role(layout, k));
    loop {
        // The earliest step of any instance (pool and index order on a tie).
        let mut step: Option<(f64, usize, usize)> = None;
        for (k, pool) in engines.iter().enumerate() {
            for (i, e) in pool.iter().enumerate() {
                if let Some(t) = e.next_step_s()
                    && step.is_none_or(|(b, _, _)| t < b)
                {
                    step = Some((t, k, i));
                }
            }
        }
        let arrival = (next < requests.len()).then(|| requests[next].arrival_s);
        let transfer = transfers.first().copied();
        let ext = match (arrival, transfer) {
            (Some(a), Some((t, _))) => Some(a.min(t.0)),
            (a, t) => a.or(t.map(|x| x.0.0)),
        };
        if let Some(x) = ext
            && step.is_none_or(|(t, _, _)| x <= t)
        {
            if arrival == Some(x) {
                let r = &requests[next];
                let outputs = if disaggregated { 1 } else { r.output_tokens };
                // A request the decode instances can never hold is refused before it is prefilled.
                if disaggregated && r.output_tokens > 1 {
                    let need = (r.prompt_tokens + r.output_tokens - 1)
                        .div_ceil(pools[1].engine.block_size);
                    if need > blocks[1] {
                        served[0][next].rejected = true;
                        next += 1;
                        continue;
                    }
                }
                let i = least_loaded(engines[0].iter().map(|e| e.load()), &mut taken[0]);
                placement[next].instance = Some(i);
                engines[0][i].arrive(next, r, Entry::Prompt { outputs }, x, &mut served[0]);
                next += 1;
            } else {
                let (t, req) = transfers.pop_first().expect("a transfer");
                let d = placement[req].decode_instance.expect("routed");
                inflight[d] -= 1;
                engines[1][d].arrive(req, &requests[req], Entry::Transferred, t.0, &mut served[1]);
            }
            continue;
        }
        let Some((_, k, i)) = step else {
            break;
        };
        let left = engines[k][i]
            .step(&mut served[k], &mut |b| costs[k].seconds(b))
            .map_err(|e| stalled(e, k))?;
        if k == 0 && disaggregated {
            let topo = placement_topo.as_ref().expect("disaggregated");
            for req in left {
                let r = &requests[req];
                if r.output_tokens <= 1 {
                    continue;
                }
                let done = served[0][req].finish_s.expect("prefilled");
                let d = least_loaded(
                    engines[1].iter().zip(&inflight).map(|(e, &f)| e.load() + f),
                    &mut taken[1],
                );
                let lane = least_loaded_f(&lanes[i]);
                let start = done.max(lanes[i][lane]);
                let src = i * gp + lane;
                let dst = pools[0].instances * gp + d * gd + lane % gd;
                let end = start + transfer_s(topo, src, dst, kv_bytes(s, r.prompt_tokens));
                lanes[i][lane] = end;
                inflight[d] += 1;
                placement[req].decode_instance = Some(d);
                placement[req].transfer_start_s = Some(done);
                placement[req].transfer_end_s = Some(end);
                transfers.insert((Time(end), req));
            }
        }
    }
    // Merge the pools' views of each request.
    let mut merged = served[0].clone();
    if disaggregated {
        for (m, d) in merged.iter_mut().zip(&served[1]) {
            m.preemptions += d.preemptions;
            m.rejected |= d.rejected;
            if m.request.output_tokens > 1 {
                m.finish_s = d.finish_s;
            }
        }
    }
    let pools = engines
        .iter()
        .zip(served)
        .zip(&blocks)
        .zip(&costs)
        .map(|(((pool, sv), &b), c)| PoolRun {
            instances: pool.iter().map(|e| e.finish(Vec::new())).collect(),
            served: sv,
            kv_blocks: b,
            step_shapes: c.shapes(),
        })
        .collect();
    *memos = costs.into_iter().map(StepCost::into_memo).collect();
    Ok(DeploymentRun {
        served: merged,
        placement,
        pools,
    })
}

/// Name of pool `k` of a layout.
pub fn role(layout: &Layout, k: usize) -> &'static str {
    match (layout, k) {
        (Layout::Colocated { .. }, _) => "co-located",
        (Layout::Disaggregated { .. }, 0) => "prefill",
        _ => "decode",
    }
}

/// Index of the smallest load; on a tie the instance given the fewest requests so far, then the first
/// (so that idle instances take turns). Counts the choice in `taken`.
fn least_loaded(loads: impl Iterator<Item = usize>, taken: &mut [usize]) -> usize {
    let i = loads
        .enumerate()
        .min_by_key(|&(i, l)| (l, taken[i], i))
        .map_or(0, |(i, _)| i);
    taken[i] += 1;
    i
}

fn least_loaded_f(free: &[f64]) -> usize {
    let mut best = 0;
    for (i, &t) in free.iter().enumerate() {
        if t < free[best] {
            best = i;
        }
    }
    best
}

/// A time, totally ordered (times are finite).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Time(f64);

impl Eq for Time {}
impl PartialOrd for Time {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Time {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}
