//! moesim's placement: duplicate-free, node-spread, locally optimised, and stable across re-plans.
//!
//! 1. Replica counts: extra slots go to the expert with the highest forecast load per replica (as EPLB),
//!    but never more copies than GPUs, so no GPU needs two copies of one expert.
//! 2. Packing (fresh plan): replicas heaviest first onto the least-loaded GPU with a free slot that does not
//!    hold the expert yet, preferring a node that holds no copy (spread copies over nodes, so that a
//!    topology-aware dispatch keeps their tokens inside the node).
//!    Re-plan: start from the previous placement, take copies away from experts that need fewer (from their
//!    most loaded GPU) and give the freed slots to experts that need more; everything else stays put.
//! 3. Local search: repeatedly take the most loaded GPU and apply the swap of one of its experts with one
//!    expert elsewhere that lowers the pair's maximum the most; on a re-plan a swap must gain at least
//!    `move_gain` of the maximum load to be worth moving parameters and optimizer state.
//! 4. Refinement on history (when samples are given): swaps that lower the *average over past iterations*
//!    of each iteration's maximum GPU load (relative to its mean). The forecast mean hides which experts are
//!    hot together; past iterations show it, and later iterations resemble them.

use super::LayerPlacement;

/// Knobs of the planner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaceOptions {
    pub gpus: usize,
    pub slots_per_gpu: usize,
    pub gpus_per_node: usize,
    /// Upper bound on local-search swaps.
    pub max_swaps: usize,
    /// Minimum relative gain of the maximum GPU load for a swap during a re-plan.
    pub move_gain: f64,
    /// Give every replicated expert the same number of copies in every node (for a dispatch that serves
    /// tokens from copies inside their node): copy counts are 1 or multiples of the node count, copies are
    /// spread evenly, and swaps stay inside a node.
    pub node_balanced: bool,
    /// Seconds the exact MILP may spend on a small layer (0: heuristic only). Its answer within a deadline
    /// depends on the machine's speed, so the simulator, whose output must not, turns it off.
    pub exact_limit_s: f64,
}

impl PlaceOptions {
    pub fn new(gpus: usize, slots_per_gpu: usize, gpus_per_node: usize) -> Self {
        PlaceOptions {
            gpus,
            slots_per_gpu,
            gpus_per_node: gpus_per_node.max(1),
            max_swaps: 4 * gpus + 64,
            move_gain: 0.01,
            node_balanced: false,
            exact_limit_s: 2.0,
        }
    }

    fn nodes(&self) -> usize {
        self.gpus.div_ceil(self.gpus_per_node)
    }

    /// Copy counts for these options.
    pub fn replica_counts(&self, loads: &[f64]) -> Vec<usize> {
        let slots = self.gpus * self.slots_per_gpu;
        if self.node_balanced && self.nodes() > 1 {
            node_balanced_counts(loads, slots, self.gpus, self.nodes())
        } else {
            capped_replica_counts(loads, slots, self.gpus)
        }
    }
}

/// Replica counts summing to `slots`, at most `max_copies` each (EPLB's greedy under that cap).
pub fn capped_replica_counts(loads: &[f64], slots: usize, max_copies: usize) -> Vec<usize> {
    let mut counts = vec![1usize; loads.len()];
    let mut heap: std::collections::BinaryHeap<(OrdF64, std::cmp::Reverse<usize>)> = (0..loads
        .len())
        .map(|e| (OrdF64(loads[e]), std::cmp::Reverse(e)))
        .collect();
    let mut extra = slots.saturating_sub(loads.len());
    while extra > 0 {
        let Some((_, std::cmp::Reverse(e))) = heap.pop() else {
            break;
        };
        if counts[e] >= max_copies {
            continue;
        }
        counts[e] += 1;
        extra -= 1;
        heap.push((OrdF64(loads[e] / counts[e] as f64), std::cmp::Reverse(e)));
    }
    counts
}

/// Copy counts of 1 or a multiple of `nodes` (so copies split evenly over nodes), greedily to the highest
/// load per copy whose next step fits; slots left over (fewer than a step) go one by one as in
/// [`capped_replica_counts`].
pub fn node_balanced_counts(
    loads: &[f64],
    slots: usize,
    max_copies: usize,
    nodes: usize,
) -> Vec<usize> {
    let mut counts = vec![1usize; loads.len()];
    let mut left = slots.saturating_sub(loads.len());
    loop {
        let step = |c: usize| if c == 1 { nodes - 1 } else { nodes };
        let best = (0..loads.len())
            .filter(|&e| step(counts[e]) <= left && counts[e] + step(counts[e]) <= max_copies)
            .max_by(|&a, &b| {
                (loads[a] / counts[a] as f64)
                    .total_cmp(&(loads[b] / counts[b] as f64))
                    .then(b.cmp(&a))
            });
        let Some(e) = best else { break };
        left -= step(counts[e]);
        counts[e] += step(counts[e]);
    }
    // Leftover slots: single extra copies to the experts with the highest load per copy.
    let rest = capped_replica_counts(
        &loads
            .iter()
            .zip(&counts)
            .map(|(l, &c)| l / c as f64)
            .collect::<Vec<_>>(),
        loads.len() + left,
        max_copies,
    );
    counts
        .iter()
        .zip(rest)
        .map(|(&c, r)| (c + r - 1).min(max_copies))
        .collect()
}

/// A total order on finite loads for the heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF64(f64);
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

/// Places one layer with forecast `loads`; `prev` is the placement in force (kept where it pays).
///
/// Requires `experts ≤ gpus × slots_per_gpu`.
pub fn place(loads: &[f64], o: &PlaceOptions, prev: Option<&LayerPlacement>) -> LayerPlacement {
    place_with_history(loads, &[], o, prev)
}

/// [`place`], then refined against past iterations' loads (`samples`, each one layer's loads).
pub fn place_with_history(
    loads: &[f64],
    samples: &[&[f64]],
    o: &PlaceOptions,
    prev: Option<&LayerPlacement>,
) -> LayerPlacement {
    let mut p = place_on_forecast(loads, o, prev);
    if !samples.is_empty() {
        let counts = o.replica_counts(loads);
        refine_on_samples(&mut p.gpu_experts, &counts, samples, o, prev.is_some());
    }
    p
}

fn place_on_forecast(
    loads: &[f64],
    o: &PlaceOptions,
    prev: Option<&LayerPlacement>,
) -> LayerPlacement {
    let experts = loads.len();
    let slots = o.gpus * o.slots_per_gpu;
    assert!(
        experts <= slots,
        "{experts} experts do not fit in {slots} slots"
    );
    let counts = o.replica_counts(loads);
    let w: Vec<f64> = (0..experts).map(|e| loads[e] / counts[e] as f64).collect();
    if let Some(p) = prev
        .filter(|p| p.gpus() == o.gpus && p.gpu_experts.iter().all(|s| s.len() == o.slots_per_gpu))
    {
        let mut gpu = adjust(p, &counts, &w, o);
        local_search(&mut gpu, &w, o, true);
        return LayerPlacement { gpu_experts: gpu };
    }
    // Fresh plan: node-spread packing and plain longest-first packing, each improved; keep the better
    // (node spread on ties, since it lets a topology-aware dispatch keep tokens inside nodes).
    let mut best: Option<(f64, Vec<Vec<usize>>)> = None;
    let packings: &[bool] = if o.node_balanced {
        &[true]
    } else {
        &[true, false]
    };
    for &spread in packings {
        let mut gpu = pack(&counts, &w, o, spread);
        local_search(&mut gpu, &w, o, false);
        let max = gpu
            .iter()
            .map(|s| s.iter().map(|&e| w[e]).sum::<f64>())
            .fold(0.0, f64::max);
        if best.as_ref().is_none_or(|(m, _)| max < m * (1.0 - 1e-9)) {
            best = Some((max, gpu));
        }
    }
    let (heuristic_max, gpu) = best.expect("two candidates");
    // Small instances: the exact min-max assignment of the same copies, when it is strictly better.
    if !o.node_balanced
        && o.exact_limit_s > 0.0
        && let Some(exact) =
            super::milp::assign(&w, &counts, o.gpus, o.slots_per_gpu, o.exact_limit_s)
    {
        let max = exact
            .gpu_experts
            .iter()
            .map(|s| s.iter().map(|&e| w[e]).sum::<f64>())
            .fold(0.0, f64::max);
        if max < heuristic_max * (1.0 - 1e-9) {
            return exact;
        }
    }
    LayerPlacement { gpu_experts: gpu }
}

fn node(g: usize, o: &PlaceOptions) -> usize {
    g / o.gpus_per_node
}

fn pack(counts: &[usize], w: &[f64], o: &PlaceOptions, spread: bool) -> Vec<Vec<usize>> {
    let mut replicas: Vec<usize> = (0..counts.len())
        .flat_map(|e| std::iter::repeat_n(e, counts[e]))
        .collect();
    replicas.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
    let nodes = o.gpus.div_ceil(o.gpus_per_node);
    let mut load = vec![0.0f64; o.gpus];
    let mut gpu: Vec<Vec<usize>> = vec![Vec::with_capacity(o.slots_per_gpu); o.gpus];
    let mut node_copies = vec![0u32; nodes * counts.len()];
    for e in replicas {
        let free = |g: &usize| gpu[*g].len() < o.slots_per_gpu && !gpu[*g].contains(&e);
        let by_load = |a: &usize, b: &usize| load[*a].total_cmp(&load[*b]).then(a.cmp(b));
        let lightest = (0..o.gpus).filter(free).min_by(by_load);
        // Spreading copies over nodes may cost at most half a copy's load over the lightest choice.
        let spread_choice = spread
            .then(|| {
                let fewest = (0..o.gpus)
                    .filter(free)
                    .map(|g| node_copies[node(g, o) * counts.len() + e])
                    .min()?;
                (0..o.gpus)
                    .filter(free)
                    .filter(|&g| node_copies[node(g, o) * counts.len() + e] == fewest)
                    .min_by(by_load)
            })
            .flatten()
            .filter(|&g| {
                o.node_balanced || lightest.is_none_or(|l| load[g] <= load[l] + 0.5 * w[e])
            });
        match spread_choice.or(lightest) {
            Some(g) => {
                load[g] += w[e];
                node_copies[node(g, o) * counts.len() + e] += 1;
                gpu[g].push(e);
            }
            None => {
                insert_by_relocation(&mut gpu, e, o);
                for (g, slots) in gpu.iter().enumerate() {
                    load[g] = slots.iter().map(|&x| w[x]).sum();
                }
                node_copies.fill(0);
                for (g, slots) in gpu.iter().enumerate() {
                    for &x in slots {
                        node_copies[node(g, o) * counts.len() + x] += 1;
                    }
                }
            }
        }
    }
    gpu
}

pub(crate) fn adjust(
    prev: &LayerPlacement,
    counts: &[usize],
    w: &[f64],
    o: &PlaceOptions,
) -> Vec<Vec<usize>> {
    let mut gpu = prev.gpu_experts.clone();
    let mut have = vec![0usize; counts.len()];
    for s in &gpu {
        for &e in s {
            have[e] += 1;
        }
    }
    let load = |gpu: &Vec<Vec<usize>>, g: usize| gpu[g].iter().map(|&e| w[e]).sum::<f64>();
    // Free slots: copies beyond the new count (and duplicates), taken from the most loaded GPUs.
    let mut free: Vec<usize> = Vec::new();
    for e in 0..counts.len() {
        while have[e] > counts[e] {
            let g = (0..o.gpus)
                .filter(|&g| gpu[g].contains(&e))
                .max_by(|&a, &b| load(&gpu, a).total_cmp(&load(&gpu, b)).then(b.cmp(&a)))
                .expect("a copy exists");
            let i = gpu[g].iter().position(|&x| x == e).expect("present");
            gpu[g].swap_remove(i);
            have[e] -= 1;
            free.push(g);
        }
    }
    // Duplicates inherited from a plan that had them (an EPLB plan, say) are freed too.
    for (g, slots) in gpu.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let mut i = 0;
        while i < slots.len() {
            let e = slots[i];
            if seen.contains(&e) {
                slots.swap_remove(i);
                have[e] -= 1;
                free.push(g);
            } else {
                seen.push(e);
                i += 1;
            }
        }
    }
    // Fill freed slots with the missing copies, heaviest first, each into the lightest free GPU without it.
    let mut missing: Vec<usize> = (0..counts.len())
        .flat_map(|e| std::iter::repeat_n(e, counts[e].saturating_sub(have[e])))
        .collect();
    missing.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
    for e in missing {
        match (0..o.gpus)
            .filter(|&g| gpu[g].len() < o.slots_per_gpu && !gpu[g].contains(&e))
            .min_by(|&a, &b| load(&gpu, a).total_cmp(&load(&gpu, b)).then(a.cmp(&b)))
        {
            Some(g) => gpu[g].push(e),
            None => insert_by_relocation(&mut gpu, e, o),
        }
    }
    gpu
}

/// Every GPU with a free slot already holds `e`: move some expert z from a GPU k without `e` into the
/// free slot of a GPU h (z not on h), then put `e` on k. Exists whenever `e` has fewer copies than GPUs.
pub(crate) fn insert_by_relocation(gpu: &mut [Vec<usize>], e: usize, o: &PlaceOptions) {
    let h = (0..o.gpus)
        .find(|&g| gpu[g].len() < o.slots_per_gpu)
        .expect("a free slot");
    for k in 0..o.gpus {
        if gpu[k].contains(&e) {
            continue;
        }
        if let Some(i) = gpu[k].iter().position(|z| !gpu[h].contains(z)) {
            let z = gpu[k].swap_remove(i);
            gpu[h].push(z);
            gpu[k].push(e);
            return;
        }
    }
    unreachable!("capped replica counts leave a GPU without expert {e}")
}

fn local_search(gpu: &mut [Vec<usize>], w: &[f64], o: &PlaceOptions, replan: bool) {
    let mut load: Vec<f64> = gpu.iter().map(|s| s.iter().map(|&e| w[e]).sum()).collect();
    let mean = load.iter().sum::<f64>() / load.len() as f64;
    // Partners for the most loaded GPU: the lightest ones (a swap with a heavy GPU rarely lowers the pair's
    // maximum), at most 32, which keeps a 256-GPU layer's search fast.
    let partners = gpu.len().min(32);
    let mut order: Vec<usize> = (0..gpu.len()).collect();
    for _ in 0..o.max_swaps {
        let a = (0..gpu.len())
            .max_by(|&x, &y| load[x].total_cmp(&load[y]).then(y.cmp(&x)))
            .expect("gpus");
        // Within 0.1% of perfect balance the forecast's own error dwarfs any further gain.
        if load[a] <= mean * 1.001 {
            break;
        }
        let need = if replan {
            o.move_gain * load[a]
        } else {
            1e-12 * load[a].max(1e-300)
        };
        if partners < gpu.len() {
            order.select_nth_unstable_by(partners - 1, |&x, &y| {
                load[x].total_cmp(&load[y]).then(x.cmp(&y))
            });
            order[..partners].sort_unstable();
        }
        let mut best: Option<(f64, usize, usize, usize)> = None;
        for (i, &x) in gpu[a].iter().enumerate() {
            for &b in &order[..partners] {
                if b == a || gpu[b].contains(&x) || (o.node_balanced && node(a, o) != node(b, o)) {
                    continue;
                }
                for (j, &y) in gpu[b].iter().enumerate() {
                    if w[y] >= w[x] || gpu[a].contains(&y) {
                        continue;
                    }
                    let new_a = load[a] - w[x] + w[y];
                    let new_b = load[b] - w[y] + w[x];
                    let worst = new_a.max(new_b);
                    if worst < load[a] - need && best.is_none_or(|(v, ..)| worst < v) {
                        best = Some((worst, i, b, j));
                    }
                }
            }
        }
        let Some((_, i, b, j)) = best else { break };
        let (x, y) = (gpu[a][i], gpu[b][j]);
        gpu[a][i] = y;
        gpu[b][j] = x;
        load[a] += w[y] - w[x];
        load[b] += w[x] - w[y];
    }
}

/// Local search on Σ_samples max_g load / mean load (each past iteration weighs the same).
fn refine_on_samples(
    gpu: &mut [Vec<usize>],
    counts: &[usize],
    samples: &[&[f64]],
    o: &PlaceOptions,
    replan: bool,
) {
    let n = samples.len();
    let g_count = gpu.len();
    // Per sample: per-copy loads, normalised so that the mean GPU load is 1.
    let w: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| {
            let total: f64 = s.iter().sum::<f64>().max(1e-300);
            (0..counts.len())
                .map(|e| s[e] / counts[e] as f64 * g_count as f64 / total)
                .collect()
        })
        .collect();
    let mut load: Vec<Vec<f64>> = w
        .iter()
        .map(|ws| {
            gpu.iter()
                .map(|sl| sl.iter().map(|&e| ws[e]).sum())
                .collect()
        })
        .collect();
    let top3 = |l: &[f64]| {
        let mut t = [(f64::NEG_INFINITY, usize::MAX); 3];
        for (g, &v) in l.iter().enumerate() {
            if v > t[0].0 {
                t = [(v, g), t[0], t[1]];
            } else if v > t[1].0 {
                t = [t[0], (v, g), t[1]];
            } else if v > t[2].0 {
                t[2] = (v, g);
            }
        }
        t
    };
    let mut tops: Vec<[(f64, usize); 3]> = load.iter().map(|l| top3(l)).collect();
    let objective = |tops: &[[(f64, usize); 3]]| tops.iter().map(|t| t[0].0).sum::<f64>();
    for _ in 0..o.max_swaps {
        let current = objective(&tops);
        let need = if replan {
            o.move_gain * current
        } else {
            1e-9 * current
        };
        let mut hot: Vec<usize> = tops.iter().map(|t| t[0].1).collect();
        hot.sort_unstable();
        hot.dedup();
        let mut best: Option<(f64, usize, usize, usize, usize)> = None;
        for &a in &hot {
            for (i, &x) in gpu[a].iter().enumerate() {
                for b in 0..g_count {
                    if b == a
                        || gpu[b].contains(&x)
                        || (o.node_balanced && node(a, o) != node(b, o))
                    {
                        continue;
                    }
                    for (j, &y) in gpu[b].iter().enumerate() {
                        if x == y || gpu[a].contains(&y) {
                            continue;
                        }
                        let mut total = 0.0;
                        for s in 0..n {
                            let na = load[s][a] - w[s][x] + w[s][y];
                            let nb = load[s][b] - w[s][y] + w[s][x];
                            let rest = tops[s]
                                .iter()
                                .find(|(_, g)| *g != a && *g != b)
                                .map_or(f64::NEG_INFINITY, |t| t.0);
                            total += na.max(nb).max(rest);
                        }
                        if total < current - need && best.is_none_or(|(v, ..)| total < v) {
                            best = Some((total, a, i, b, j));
                        }
                    }
                }
            }
        }
        let Some((_, a, i, b, j)) = best else { break };
        let (x, y) = (gpu[a][i], gpu[b][j]);
        gpu[a][i] = y;
        gpu[b][j] = x;
        for s in 0..n {
            load[s][a] += w[s][y] - w[s][x];
            load[s][b] += w[s][x] - w[s][y];
            tops[s] = top3(&load[s]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{balancedness, eplb::eplb};

    fn zipf(n: usize, s: f64) -> Vec<f64> {
        (0..n)
            .map(|i| 1000.0 / ((i * 7 % n + 1) as f64).powf(s))
            .collect()
    }

    #[test]
    fn never_duplicates_and_fills_every_slot() {
        for (gpus, slots, experts) in [(2, 4, 8), (4, 3, 8), (8, 9, 64), (16, 5, 64), (4, 8, 8)] {
            let loads = zipf(experts, 1.5);
            let o = PlaceOptions::new(gpus, slots, 4);
            let p = place(&loads, &o, None);
            assert!(!p.has_duplicates(), "{gpus}×{slots}");
            assert!(p.covers(loads.len()));
            assert!(p.gpu_experts.iter().all(|s| s.len() == slots));
        }
    }

    #[test]
    fn at_least_as_balanced_as_eplb_on_its_own_forecast() {
        // Under extreme skew (one expert needing more copies than there are GPUs) EPLB's duplicate copies
        // act as an uneven token split and can beat any duplicate-free plan; realistic skews stay below that.
        for s in [0.0, 0.8, 1.0, 1.2] {
            let loads = zipf(64, s);
            let o = PlaceOptions::new(16, 5, 8);
            let ours = balancedness(&place(&loads, &o, None).gpu_loads(&loads));
            let base = balancedness(&eplb(&loads, 16, 5).gpu_loads(&loads));
            assert!(ours >= base - 1e-9, "s={s}: {ours} < {base}");
        }
    }

    #[test]
    fn small_instances_reach_the_exact_optimum() {
        // 12 experts on 4 GPUs × 3 slots, one copy each: the MILP finds the best min-max split.
        let loads = [9.0, 8.0, 7.0, 7.0, 6.0, 5.0, 4.0, 4.0, 3.0, 3.0, 2.0, 2.0];
        let o = PlaceOptions::new(4, 3, 4);
        let p = place(&loads, &o, None);
        let max = p.gpu_loads(&loads).into_iter().fold(0.0, f64::max);
        // Total 60 over 4 GPUs: 15 each is achievable (9+4+2, 8+5+2, 7+4+4... with 3 per GPU).
        assert!((max - 15.0).abs() < 1e-9, "{max}");
    }

    #[test]
    fn replanning_on_the_same_loads_moves_nothing() {
        let loads = zipf(64, 1.0);
        let o = PlaceOptions::new(16, 5, 8);
        let p = place(&loads, &o, None);
        let again = place(&loads, &o, Some(&p));
        assert_eq!(again.moves_from(&p), 0);
    }

    #[test]
    fn node_balanced_copies_are_even_per_node() {
        let mut loads = vec![1.0; 16];
        loads[3] = 100.0;
        loads[9] = 40.0;
        let mut o = PlaceOptions::new(8, 3, 4);
        o.node_balanced = true;
        let counts = o.replica_counts(&loads);
        assert_eq!(counts.iter().sum::<usize>(), 24);
        let p = place(&loads, &o, None);
        assert!(!p.has_duplicates());
        for (e, holders) in p.replicas(16).iter().enumerate() {
            if holders.len() > 1 && holders.len() % 2 == 0 {
                let in_node0 = holders.iter().filter(|&&g| g < 4).count();
                assert_eq!(2 * in_node0, holders.len(), "expert {e}: {holders:?}");
            }
        }
        assert!(p.replicas(16)[3].len() >= 4);
    }

    #[test]
    fn copies_of_a_hot_expert_spread_over_nodes() {
        let mut loads = vec![1.0; 16];
        loads[3] = 100.0;
        let o = PlaceOptions::new(8, 3, 4);
        let p = place(&loads, &o, None);
        let nodes: std::collections::BTreeSet<usize> =
            p.replicas(16)[3].iter().map(|g| g / 4).collect();
        assert_eq!(nodes.len(), 2);
    }
}
