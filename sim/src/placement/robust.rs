//! Plans that are good across iterations, not only for their mean load.
//!
//! Loads fluctuate from iteration to iteration, so a placement balanced for the mean of the history is not
//! balanced for the iterations that follow. This planner looks at the history's iterations one by one:
//! each past iteration `s` (its loads normalised so that the mean GPU load is 1) gives GPU g the load
//! `L_sg`, and a plan is scored by the **expected maximum GPU load** `F = Σ_s ω_s · max_g L_sg`, the
//! weights ω favouring recent iterations (drift). `1 / F` is roughly the balancedness to expect.
//!
//! 1. Copy counts: candidates from robust loads `mean + κ·sd` of the history (κ from
//!    [`RobustOptions::kappas`]; never more copies than GPUs, node-balanced counts when asked), each packed
//!    and refined; the candidate with the lowest `F` wins.
//! 2. Packing: copies in decreasing robust size, each onto the GPU with a free slot and no copy of it whose
//!    loads correlate least with the copy's (`Σ_s ω_s L_sg · v_se`, the growth of the sum of squares), and
//!    spread over nodes as in [`super::search`].
//! 3. Refinement: swaps of two copies between a GPU that is often the maximum and one of the lightest GPUs,
//!    taken while they lower `F`. Per-sample top-three loads make each swap's effect `O(samples)`, so the
//!    refinement stays on at every scale (up to 256 GPUs × 9 slots in milliseconds per layer).
//! 4. Re-plans: candidates that keep the placement in force, adjust it to the new counts (moving only the
//!    copies that must move) and refine it, or replace it with the fresh plan; [`super::priced`] chooses
//!    among them by seconds saved against seconds spent moving copies.
//! 5. Planned shares ([`plan_shares`]): where a runtime can split an expert's tokens unevenly over its
//!    copies, the shares are chosen the same way (shifting share from a copy on a hot GPU to another copy).

use super::LayerPlacement;
use super::search::{PlaceOptions, adjust, place};

/// Knobs of the robust planner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustOptions {
    pub place: PlaceOptions,
    /// Most recent history iterations the planner replays one by one (a speed knob: older iterations
    /// still set each expert's level, see [`Samples::new`]).
    pub max_samples: usize,
    /// Most recent history iterations the planner remembers at all (older ones are dropped; `usize::MAX`:
    /// the whole history).
    pub window: usize,
    /// A past iteration's weight halves every `half_life` iterations of age (infinite: all alike); used
    /// as it is only when `horizon` is 0.
    pub half_life: f64,
    /// Iterations a plan must serve (until the next re-plan). When positive, the half-life is read off
    /// each layer's history by [`backtest_half_life`] over this horizon instead of taken from `half_life`.
    pub horizon: usize,
    /// Copy-count candidates: copies for `mean + κ·sd` of the history, one candidate per κ.
    pub kappas: &'static [f64],
    /// Swap partners per hot GPU: the lightest ones (all GPUs when there are fewer).
    pub partners: usize,
    /// GPUs tried per refinement step, most often the maximum first.
    pub hot: usize,
    /// Upper bound on refinement swaps per candidate.
    pub max_swaps: usize,
    /// Also refine the forecast planner's plan ([`super::search::place`], with its exact MILP for small
    /// layers) as a candidate (small layers only: it is slow at 256 GPUs).
    pub forecast_candidate: bool,
}

impl RobustOptions {
    /// Defaults that keep 58 layers × 256 experts × 256 GPUs × 9 slots under a second on two cores.
    pub fn new(place: PlaceOptions) -> Self {
        let small = place.gpus <= 64;
        RobustOptions {
            place,
            max_samples: if small { 64 } else { 8 },
            window: usize::MAX,
            half_life: 32.0,
            horizon: 0,
            kappas: if small { &[0.0, 0.5, 1.0] } else { &[0.5] },
            partners: 32,
            hot: 4,
            max_swaps: if small {
                4 * place.gpus + 64
            } else {
                place.gpus / 2
            },
            forecast_candidate: small,
        }
    }
}

impl RobustOptions {
    /// The planner's view of a layer's history, with the half-life this history calls for (see
    /// [`RobustOptions::horizon`]); `None` for an empty history.
    pub fn samples(&self, history: &[&[f64]], gpus: usize) -> Option<Samples> {
        let history = &history[history.len().saturating_sub(self.window.max(1))..];
        let half_life = if self.horizon > 0 {
            backtest_half_life(history, self.horizon).unwrap_or(self.half_life)
        } else {
            self.half_life
        };
        Samples::new(history, gpus, self.max_samples, half_life)
    }
}

/// Half-lives (iterations) [`backtest_half_life`] chooses among; infinite weighs the window alike.
pub const HALF_LIVES: [f64; 6] = [2.0, 4.0, 8.0, 16.0, 32.0, f64::INFINITY];

/// How fast this layer's popularity moves, read off its own history: the half-life in [`HALF_LIVES`]
/// whose exponentially weighted mean of the expert shares up to a point best predicts the shares of the
/// `horizon` iterations after it (least squares, over every such point in the window's second half). This
/// is how exponential smoothing picks its smoothing constant; a workload that drifts gets a short memory,
/// a stationary one a long memory that averages sampling noise away. `None` when the history is too short
/// to hold one prediction.
pub fn backtest_half_life(history: &[&[f64]], horizon: usize) -> Option<f64> {
    let horizon = horizon.max(1);
    let n = history.len();
    let experts = history.first()?.len();
    if n < 2 * horizon + 2 || experts == 0 {
        return None;
    }
    // Shares (each iteration summing to 1), so busy and quiet iterations weigh alike.
    let shares: Vec<Vec<f64>> = history
        .iter()
        .map(|h| {
            let t: f64 = h.iter().sum();
            if t > 0.0 && t.is_finite() {
                h.iter().map(|x| x / t).collect()
            } else {
                vec![1.0 / experts as f64; experts]
            }
        })
        .collect();
    let splits: Vec<usize> = (n / 2..=n - horizon).collect();
    let mut best: Option<(f64, f64)> = None;
    for &hl in &HALF_LIVES {
        let decay = if hl.is_finite() {
            0.5f64.powf(1.0 / hl)
        } else {
            1.0
        };
        // Running weighted sums: after iteration t, ewm = Σ_{a ≤ t} decay^(t−a) · share_a.
        let (mut ewm, mut weight) = (vec![0.0f64; experts], 0.0f64);
        let mut err = 0.0;
        for (t, sh) in shares.iter().enumerate().take(n - horizon) {
            for (m, x) in ewm.iter_mut().zip(sh) {
                *m = *m * decay + x;
            }
            weight = weight * decay + 1.0;
            if splits.contains(&(t + 1)) {
                for future in &shares[t + 1..t + 1 + horizon] {
                    err += ewm
                        .iter()
                        .zip(future)
                        .map(|(m, f)| (m / weight - f).powi(2))
                        .sum::<f64>();
                }
            }
        }
        if best.is_none_or(|(e, _)| err < e) {
            best = Some((err, hl));
        }
    }
    best.map(|(_, hl)| hl)
}

/// A layer's history as the planner sees it: per-iteration loads normalised to a mean GPU load of 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub n: usize,
    pub experts: usize,
    /// `w[s * experts + e]`: expert e's load in sample s, the sample's total being the GPU count.
    pub w: Vec<f64>,
    /// Weight of each sample (sum 1).
    pub weight: Vec<f64>,
    /// Weighted mean and standard deviation of each expert's normalised load.
    pub mean: Vec<f64>,
    pub sd: Vec<f64>,
    /// Half-life (iterations of age) of the sample weights; infinite when all weigh alike.
    pub half_life: f64,
}

impl Samples {
    /// The last `max_samples` iterations of `history` (newest first) with any load, weighted by age under
    /// `half_life`; `None` when none has.
    ///
    /// When the history is longer than `max_samples`, the older iterations still set the level: each
    /// expert's load in every sample is scaled by the ratio of its weighted mean over the whole history to
    /// its weighted mean over the samples (an expert with no load in the samples gets the whole history's
    /// mean added), then each sample is scaled back to a mean GPU load of 1. The samples then carry the
    /// iteration-to-iteration spread of the recent past around the whole history's weighted level, so a
    /// sample budget kept small for speed (above 64 GPUs) does not also shorten the planner's memory.
    /// With the whole history in the samples the ratio is 1 and nothing changes.
    pub fn new(
        history: &[&[f64]],
        gpus: usize,
        max_samples: usize,
        half_life: f64,
    ) -> Option<Self> {
        let experts = history.first()?.len();
        let kept = max_samples.max(1);
        let (mut level, mut level_weight) = (vec![0.0f64; experts], 0.0f64);
        let (mut recent_level, mut recent_weight) = (vec![0.0f64; experts], 0.0f64);
        let mut w = Vec::with_capacity(kept.min(history.len()) * experts);
        let mut weight = Vec::with_capacity(kept.min(history.len()));
        for (age, h) in history.iter().rev().enumerate() {
            let total: f64 = h.iter().sum();
            if total <= 0.0 || !total.is_finite() {
                continue;
            }
            let scale = gpus as f64 / total;
            let omega = if half_life.is_finite() {
                0.5f64.powf(age as f64 / half_life)
            } else {
                1.0
            };
            for (m, x) in level.iter_mut().zip(h.iter()) {
                *m += omega * x * scale;
            }
            level_weight += omega;
            if age < kept {
                for (m, x) in recent_level.iter_mut().zip(h.iter()) {
                    *m += omega * x * scale;
                }
                recent_weight += omega;
                w.extend(h.iter().map(|x| x * gpus as f64 / total));
                weight.push(omega);
            }
        }
        if weight.is_empty() {
            return None;
        }
        let n = weight.len();
        if level_weight > recent_weight {
            for e in 0..experts {
                let (whole, recent) = (level[e] / level_weight, recent_level[e] / recent_weight);
                for s in 0..n {
                    let x = &mut w[s * experts + e];
                    *x = if recent > 0.0 {
                        *x * whole / recent
                    } else {
                        *x + whole
                    };
                }
            }
            for sample in w.chunks_mut(experts) {
                let total: f64 = sample.iter().sum();
                sample.iter_mut().for_each(|x| *x *= gpus as f64 / total);
            }
        }
        Self::weighted(experts, w, weight, half_life)
    }

    /// Scenarios given outright: `loads[s]` with probability `weight[s]` (normalised here), each scaled to
    /// a mean GPU load of 1; `None` when none has any load.
    pub fn from_scenarios(loads: &[Vec<f64>], weight: &[f64], gpus: usize) -> Option<Self> {
        let experts = loads.first()?.len();
        let (mut w, mut kept) = (Vec::new(), Vec::new());
        for (l, &p) in loads.iter().zip(weight) {
            let total: f64 = l.iter().sum();
            if total > 0.0 && total.is_finite() && p > 0.0 {
                w.extend(l.iter().map(|x| x * gpus as f64 / total));
                kept.push(p);
            }
        }
        Self::weighted(experts, w, kept, f64::INFINITY)
    }

    /// Samples `w` (already normalised) with weights `weight` (normalised here); `None` when empty.
    fn weighted(experts: usize, w: Vec<f64>, mut weight: Vec<f64>, half_life: f64) -> Option<Self> {
        let n = weight.len();
        if n == 0 {
            return None;
        }
        let sum: f64 = weight.iter().sum();
        weight.iter_mut().for_each(|x| *x /= sum);
        let mut mean = vec![0.0; experts];
        for s in 0..n {
            for e in 0..experts {
                mean[e] += weight[s] * w[s * experts + e];
            }
        }
        let mut var = vec![0.0; experts];
        for s in 0..n {
            for e in 0..experts {
                var[e] += weight[s] * (w[s * experts + e] - mean[e]).powi(2);
            }
        }
        Some(Samples {
            n,
            experts,
            w,
            weight,
            mean,
            sd: var.into_iter().map(f64::sqrt).collect(),
            half_life,
        })
    }

    /// One flat sample (no history: plan for uniform load).
    pub fn uniform(experts: usize, gpus: usize) -> Self {
        Samples {
            n: 1,
            experts,
            w: vec![gpus as f64 / experts as f64; experts],
            weight: vec![1.0],
            mean: vec![gpus as f64 / experts as f64; experts],
            sd: vec![0.0; experts],
            half_life: f64::INFINITY,
        }
    }

    /// Iterations a pattern read off these samples is expected to hold: the sum of the weights a plan's
    /// future iterations keep under the same decay (`Σ_k 2^(−k/h)`, infinite for an infinite half-life).
    /// What a re-plan gains by adapting to the present decays as fast as the present is forgotten, so this
    /// bounds the window over which a move pays.
    pub fn persistence(&self) -> f64 {
        if self.half_life.is_finite() && self.half_life > 0.0 {
            1.0 / (1.0 - 0.5f64.powf(1.0 / self.half_life))
        } else {
            f64::INFINITY
        }
    }

    /// Expected maximum GPU load (mean GPU load 1) of `p` under an even split over copies.
    pub fn objective(&self, p: &LayerPlacement) -> f64 {
        let counts = copy_counts(p, self.experts);
        let st = State::new(self, &counts, &p.gpu_experts);
        st.objective()
    }

    /// Expected maximum GPU load of `p` when expert copies take the planned `shares`.
    pub fn objective_with_shares(&self, p: &LayerPlacement, shares: &[Vec<f64>]) -> f64 {
        (0..self.n)
            .map(|s| {
                let w = &self.w[s * self.experts..(s + 1) * self.experts];
                self.weight[s]
                    * super::gpu_loads_with_shares(p, shares, w)
                        .into_iter()
                        .fold(0.0, f64::max)
            })
            .sum()
    }
}

/// Copies of each expert in `p`.
pub fn copy_counts(p: &LayerPlacement, experts: usize) -> Vec<usize> {
    let mut c = vec![0usize; experts];
    for slots in &p.gpu_experts {
        for &e in slots {
            c[e] += 1;
        }
    }
    c
}

/// Per-sample GPU loads of one placement, with each sample's three largest.
struct State<'a> {
    n: usize,
    e: usize,
    g: usize,
    omega: &'a [f64],
    /// `v[s * e + x]`: load of one copy of x in sample s.
    v: Vec<f64>,
    /// `load[s * g + k]`.
    load: Vec<f64>,
    top: Vec<[(f64, usize); 3]>,
}

fn top3(l: &[f64]) -> [(f64, usize); 3] {
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
}

impl<'a> State<'a> {
    fn new(smp: &'a Samples, counts: &[usize], gpu: &[Vec<usize>]) -> Self {
        let (n, e, g) = (smp.n, smp.experts, gpu.len());
        let v: Vec<f64> = (0..n * e)
            .map(|i| smp.w[i] / counts[i % e].max(1) as f64)
            .collect();
        let mut st = State {
            n,
            e,
            g,
            omega: &smp.weight,
            v,
            load: vec![0.0; n * g],
            top: Vec::new(),
        };
        st.reload(gpu);
        st
    }

    fn reload(&mut self, gpu: &[Vec<usize>]) {
        for s in 0..self.n {
            for (k, slots) in gpu.iter().enumerate() {
                self.load[s * self.g + k] = slots.iter().map(|&x| self.v[s * self.e + x]).sum();
            }
        }
        self.top = (0..self.n)
            .map(|s| top3(&self.load[s * self.g..(s + 1) * self.g]))
            .collect();
    }

    fn objective(&self) -> f64 {
        (0..self.n).map(|s| self.omega[s] * self.top[s][0].0).sum()
    }

    /// Weighted mean load of GPU k.
    fn mean_load(&self, k: usize) -> f64 {
        (0..self.n)
            .map(|s| self.omega[s] * self.load[s * self.g + k])
            .sum()
    }

    /// The objective after moving load `da_s` onto GPU a and `db_s` onto b in every sample.
    fn with_pair(&self, a: usize, b: usize, delta: impl Fn(usize) -> (f64, f64)) -> f64 {
        let mut total = 0.0;
        for s in 0..self.n {
            let (da, db) = delta(s);
            let na = self.load[s * self.g + a] + da;
            let nb = self.load[s * self.g + b] + db;
            let rest = self.top[s]
                .iter()
                .find(|(_, k)| *k != a && *k != b)
                .map_or(f64::NEG_INFINITY, |t| t.0);
            total += self.omega[s] * na.max(nb).max(rest);
        }
        total
    }

    fn apply_pair(&mut self, a: usize, b: usize, delta: impl Fn(usize) -> (f64, f64)) {
        for s in 0..self.n {
            let (da, db) = delta(s);
            self.load[s * self.g + a] += da;
            self.load[s * self.g + b] += db;
            self.top[s] = top3(&self.load[s * self.g..(s + 1) * self.g]);
        }
    }

    /// GPUs in order of how much weight of samples they are the maximum in (heaviest first).
    fn hot(&self, limit: usize) -> Vec<usize> {
        let mut w: Vec<(f64, usize)> = Vec::new();
        for s in 0..self.n {
            let k = self.top[s][0].1;
            match w.iter_mut().find(|(_, g)| *g == k) {
                Some(x) => x.0 += self.omega[s],
                None => w.push((self.omega[s], k)),
            }
        }
        w.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        w.into_iter().take(limit).map(|(_, k)| k).collect()
    }

    /// The `p` GPUs with the lowest weighted mean load (all when there are fewer), ascending ids.
    fn lightest(&self, p: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.g).collect();
        if p < self.g {
            let m: Vec<f64> = (0..self.g).map(|k| self.mean_load(k)).collect();
            order.select_nth_unstable_by(p - 1, |&x, &y| m[x].total_cmp(&m[y]).then(x.cmp(&y)));
            order.truncate(p);
            order.sort_unstable();
        }
        order
    }
}

fn node(g: usize, o: &PlaceOptions) -> usize {
    g / o.gpus_per_node
}

/// The GPUs with a free slot in order of mean load (then id), kept sorted as copies land, so that the
/// lightest feasible GPUs are a prefix instead of a selection over all GPUs for every copy.
struct OpenGpus {
    /// Mean load of every GPU, open or not.
    load: Vec<f64>,
    order: Vec<usize>,
    is_open: Vec<bool>,
}

impl OpenGpus {
    fn new(gpus: usize) -> Self {
        OpenGpus {
            load: vec![0.0; gpus],
            order: (0..gpus).collect(),
            is_open: vec![true; gpus],
        }
    }

    /// Where open GPU k sits in (or would go into) `order`.
    fn position(&self, k: usize) -> usize {
        let (load, key) = (&self.load, self.load[k]);
        self.order
            .partition_point(|&x| load[x].total_cmp(&key).then(x.cmp(&k)).is_lt())
    }

    fn add(&mut self, k: usize, delta: f64) {
        if !self.is_open[k] {
            self.load[k] += delta;
            return;
        }
        let i = self.position(k);
        self.order.remove(i);
        self.load[k] += delta;
        let j = self.position(k);
        self.order.insert(j, k);
    }

    fn close(&mut self, k: usize) {
        if std::mem::replace(&mut self.is_open[k], false) {
            let i = self.position(k);
            self.order.remove(i);
        }
    }
}

/// Sample-aware longest-first packing of `counts` copies (see the module doc).
fn pack(counts: &[usize], smp: &Samples, o: &PlaceOptions) -> Vec<Vec<usize>> {
    let (e_n, g_n, n) = (counts.len(), o.gpus, smp.n);
    let mut gpu: Vec<Vec<usize>> = vec![Vec::with_capacity(o.slots_per_gpu); g_n];
    // Per-copy loads, expert-major (`vt[e * n + s]`), and GPU loads, GPU-major (`gl[k * n + s]`), so that
    // pricing a GPU for a copy is one contiguous dot product.
    let vt: Vec<f64> = (0..e_n * n)
        .map(|i| smp.w[(i % n) * e_n + i / n] / counts[i / n].max(1) as f64)
        .collect();
    let mut gl = vec![0.0f64; g_n * n];
    let mut we = vec![0.0f64; n];
    let node_of: Vec<usize> = (0..g_n).map(|k| node(k, o)).collect();
    // GPUs with a free slot, lightest first (mean load, then id): the pools below are prefixes of it.
    let mut open = OpenGpus::new(g_n);
    let (mut pool_best, mut pool_spread) = (Vec::new(), Vec::new());
    let size: Vec<f64> = (0..e_n)
        .map(|e| (smp.mean[e] + smp.sd[e]) / counts[e].max(1) as f64)
        .collect();
    let mut replicas: Vec<usize> = (0..e_n)
        .flat_map(|e| std::iter::repeat_n(e, counts[e]))
        .collect();
    replicas.sort_by(|&a, &b| size[b].total_cmp(&size[a]).then(a.cmp(&b)));
    let nodes = g_n.div_ceil(o.gpus_per_node);
    let mut has = vec![false; g_n * e_n];
    let mut node_copies = vec![0u32; nodes * e_n];
    for e in replicas {
        for (s, x) in we.iter_mut().enumerate() {
            *x = smp.weight[s] * vt[e * n + s];
        }
        // Cheapest feasible GPU overall and within the nodes holding the fewest copies of e. Only the
        // lightest GPUs whose mean load is within one copy's size of the lightest are priced sample by
        // sample (the rest cannot be cheaper by much), which keeps 256-GPU layers fast.
        let feasible = |k: &&usize| !has[**k * e_n + e];
        let fewest = open
            .order
            .iter()
            .filter(feasible)
            .map(|&k| node_copies[node_of[k] * e_n + e])
            .try_fold(u32::MAX, |m, c| if c == 0 { Err(0) } else { Ok(m.min(c)) })
            .unwrap_or_else(|zero| zero);
        let slack = size[e] + 1e-12;
        // At most `PRICED` GPUs of each kind, the lightest.
        const PRICED: usize = 24;
        let lightest_within_slack = |pool: &mut Vec<(f64, usize)>, keep: &dyn Fn(usize) -> bool| {
            pool.clear();
            let mut bar = f64::INFINITY;
            for &k in open.order.iter().filter(feasible).filter(|&&k| keep(k)) {
                if pool.is_empty() {
                    bar = open.load[k] + slack;
                } else if open.load[k] > bar || pool.len() == PRICED {
                    break;
                }
                pool.push((open.load[k], k));
            }
        };
        lightest_within_slack(&mut pool_best, &|_| true);
        lightest_within_slack(&mut pool_spread, &|k| {
            node_copies[node_of[k] * e_n + e] == fewest
        });
        let price = |k: usize| -> f64 {
            gl[k * n..(k + 1) * n]
                .iter()
                .zip(&we)
                .map(|(l, w)| l * w)
                .sum::<f64>()
                + 1e-12 * open.load[k]
        };
        let cheapest = |pool: &[(f64, usize)]| {
            pool.iter()
                .map(|&(_, k)| (price(k), k))
                .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        };
        let best = cheapest(&pool_best);
        let spread = cheapest(&pool_spread);
        let choice = match (best, spread) {
            (Some((_, b)), Some((_, sp))) => {
                if o.node_balanced
                    || open.load[sp] <= open.load[b] + 0.5 * smp.mean[e] / counts[e] as f64
                {
                    Some(sp)
                } else {
                    Some(b)
                }
            }
            _ => None,
        };
        match choice {
            Some(k) => {
                gpu[k].push(e);
                has[k * e_n + e] = true;
                node_copies[node_of[k] * e_n + e] += 1;
                for s in 0..n {
                    gl[k * n + s] += vt[e * n + s];
                }
                if gpu[k].len() == o.slots_per_gpu {
                    open.close(k);
                }
                open.add(k, smp.mean[e] / counts[e] as f64);
            }
            None => {
                // Every GPU with a free slot holds e: move some z from the lightest GPU k without e into
                // the free slot of h, and put e on k (exists while e has fewer copies than GPUs).
                let h = (0..g_n)
                    .find(|&k| gpu[k].len() < o.slots_per_gpu)
                    .expect("a free slot");
                let (k, i) = (0..g_n)
                    .filter(|&k| !has[k * e_n + e])
                    .filter_map(|k| {
                        gpu[k]
                            .iter()
                            .position(|&z| !has[h * e_n + z])
                            .map(|i| (k, i))
                    })
                    .min_by(|a, b| {
                        open.load[a.0]
                            .total_cmp(&open.load[b.0])
                            .then(a.0.cmp(&b.0))
                    })
                    .expect("capped copy counts leave a GPU without e");
                let z = gpu[k].swap_remove(i);
                gpu[h].push(z);
                gpu[k].push(e);
                if gpu[h].len() == o.slots_per_gpu {
                    open.close(h);
                }
                for (g, x, add) in [(k, z, false), (h, z, true), (k, e, true)] {
                    let sign = if add { 1.0 } else { -1.0 };
                    has[g * e_n + x] = add;
                    if add {
                        node_copies[node_of[g] * e_n + x] += 1;
                    } else {
                        node_copies[node_of[g] * e_n + x] -= 1;
                    }
                    open.add(g, sign * smp.mean[x] / counts[x] as f64);
                    for s in 0..n {
                        gl[g * n + s] += sign * vt[x * n + s];
                    }
                }
            }
        }
    }
    gpu
}

/// Swaps that lower the expected maximum by more than `need` each; returns the final objective.
fn refine(gpu: &mut [Vec<usize>], st: &mut State, o: &RobustOptions, need: f64) -> f64 {
    refine_with(gpu, st, o, need, |_, _, _| {})
}

/// [`refine`], calling `snap(swaps, placement, objective)` after every swap.
fn refine_with(
    gpu: &mut [Vec<usize>],
    st: &mut State,
    o: &RobustOptions,
    need: f64,
    mut snap: impl FnMut(usize, &[Vec<usize>], f64),
) -> f64 {
    let (e_n, g_n) = (st.e, st.g);
    let mut has = vec![false; g_n * e_n];
    for (k, slots) in gpu.iter().enumerate() {
        for &x in slots {
            has[k * e_n + x] = true;
        }
    }
    let node_balanced = o.place.node_balanced;
    let n = st.n;
    // Expert-major per-copy loads and per-pair buffers: a candidate swap costs one pass over samples.
    let vt: Vec<f64> = (0..e_n * n).map(|i| st.v[(i % n) * e_n + i / n]).collect();
    let (mut ax, mut bx, mut rest) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for swap in 0..o.max_swaps {
        let current = st.objective();
        let partners = st.lightest(o.partners);
        let mut found = None;
        for a in st.hot(o.hot) {
            let mut best: Option<(f64, usize, usize, usize)> = None;
            for &b in &partners {
                if b == a || (node_balanced && node(a, &o.place) != node(b, &o.place)) {
                    continue;
                }
                for (s, r) in rest.iter_mut().enumerate() {
                    *r = st.top[s]
                        .iter()
                        .find(|(_, k)| *k != a && *k != b)
                        .map_or(f64::NEG_INFINITY, |t| t.0);
                }
                for (i, &x) in gpu[a].iter().enumerate() {
                    if has[b * e_n + x] {
                        continue;
                    }
                    let vx = &vt[x * n..(x + 1) * n];
                    for s in 0..n {
                        ax[s] = st.load[s * g_n + a] - vx[s];
                        bx[s] = st.load[s * g_n + b] + vx[s];
                    }
                    for (j, &y) in gpu[b].iter().enumerate() {
                        if has[a * e_n + y] {
                            continue;
                        }
                        let vy = &vt[y * n..(y + 1) * n];
                        // Every term is ≥ 0, so a partial sum already at the bar to beat settles it.
                        let bar = best.map_or(current - need, |(v, ..)| v.min(current - need));
                        let mut total = 0.0;
                        let terms = st.omega.iter().zip(&ax).zip(&bx).zip(&rest).zip(vy);
                        for ((((w, a), b), r), v) in terms {
                            total += w * (a + v).max(b - v).max(*r);
                            if total >= bar {
                                break;
                            }
                        }
                        if total < bar {
                            best = Some((total, i, b, j));
                        }
                    }
                }
            }
            if let Some((_, i, b, j)) = best {
                found = Some((a, i, b, j));
                break;
            }
        }
        let Some((a, i, b, j)) = found else { break };
        let (x, y) = (gpu[a][i], gpu[b][j]);
        let v = std::mem::take(&mut st.v);
        st.apply_pair(a, b, |s| {
            let d = v[s * e_n + y] - v[s * e_n + x];
            (d, -d)
        });
        st.v = v;
        gpu[a][i] = y;
        gpu[b][j] = x;
        has[a * e_n + x] = false;
        has[b * e_n + y] = false;
        has[a * e_n + y] = true;
        has[b * e_n + x] = true;
        snap(swap + 1, gpu, st.objective());
    }
    st.objective()
}

/// `next` with its GPUs' contents permuted (nodes onto nodes, then GPUs inside each node) to keep as many
/// copies where `prev` has them as a greedy matching finds. GPUs are interchangeable for balance, so this
/// changes no load figure, only the copies a re-plan moves.
pub fn align_to(
    prev: &LayerPlacement,
    next: &LayerPlacement,
    gpus_per_node: usize,
) -> LayerPlacement {
    let g_n = next.gpus();
    if prev.gpus() != g_n || g_n == 0 {
        return next.clone();
    }
    let per = gpus_per_node.clamp(1, g_n);
    let nodes = g_n.div_ceil(per);
    let overlap = |a: &[usize], b: &[usize]| {
        let mut b = b.to_vec();
        a.iter()
            .filter(|e| match b.iter().position(|x| x == *e) {
                Some(i) => {
                    b.swap_remove(i);
                    true
                }
                None => false,
            })
            .count()
    };
    let in_node = |n: usize| (n * per)..((n + 1) * per).min(g_n);
    // Greedy matching of `from` groups onto `to` groups by a score, largest first.
    let matching = |from: Vec<usize>, to: Vec<usize>, score: &dyn Fn(usize, usize) -> usize| {
        let mut pairs: Vec<(usize, usize, usize)> = from
            .iter()
            .flat_map(|&f| to.iter().map(move |&t| (f, t)))
            .map(|(f, t)| (score(f, t), f, t))
            .collect();
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let (mut used_f, mut used_t) = (vec![false; g_n.max(nodes)], vec![false; g_n.max(nodes)]);
        let mut out = Vec::new();
        for (_, f, t) in pairs {
            if !used_f[f] && !used_t[t] {
                used_f[f] = true;
                used_t[t] = true;
                out.push((f, t));
            }
        }
        out
    };
    let same_size = |a: usize, b: usize| in_node(a).len() == in_node(b).len();
    let node_pairs = matching((0..nodes).collect(), (0..nodes).collect(), &|f, t| {
        if !same_size(f, t) {
            return 0;
        }
        let a: Vec<usize> = in_node(f)
            .flat_map(|k| next.gpu_experts[k].iter().copied())
            .collect();
        let b: Vec<usize> = in_node(t)
            .flat_map(|k| prev.gpu_experts[k].iter().copied())
            .collect();
        1 + overlap(&a, &b)
    });
    if node_pairs.len() != nodes || node_pairs.iter().any(|&(f, t)| !same_size(f, t)) {
        return next.clone();
    }
    let mut gpu_experts = vec![Vec::new(); g_n];
    for (f, t) in node_pairs {
        let gpu_pairs = matching(in_node(f).collect(), in_node(t).collect(), &|a, b| {
            1 + overlap(&next.gpu_experts[a], &prev.gpu_experts[b])
        });
        for (a, b) in gpu_pairs {
            gpu_experts[b] = next.gpu_experts[a].clone();
        }
    }
    LayerPlacement { gpu_experts }
}

/// A plan the re-planner may adopt, with its expected maximum GPU load on the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub placement: LayerPlacement,
    /// Expected maximum GPU load (mean 1) over the history's iterations, even split.
    pub objective: f64,
    pub kind: CandidateKind,
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// The placement in force, unchanged.
    Keep,
    /// The placement in force with its copy counts, refined by swaps.
    KeepCounts,
    /// The placement in force adjusted to the new copy counts, then refined.
    Adjusted,
    /// A fresh plan (moves whatever it moves).
    Fresh,
}

fn robust_counts(smp: &Samples, o: &PlaceOptions, kappa: f64) -> Vec<usize> {
    let loads: Vec<f64> = smp
        .mean
        .iter()
        .zip(&smp.sd)
        .map(|(m, s)| m + kappa * s)
        .collect();
    o.replica_counts(&loads)
}

/// The fresh plan: every count candidate packed and refined, the lowest expected maximum kept.
pub fn fresh(smp: &Samples, o: &RobustOptions) -> Candidate {
    let p = &o.place;
    assert!(
        smp.experts <= p.gpus * p.slots_per_gpu,
        "{} experts do not fit in {} slots",
        smp.experts,
        p.gpus * p.slots_per_gpu
    );
    let mut tried: Vec<Vec<usize>> = Vec::new();
    let mut best: Option<(f64, Vec<Vec<usize>>)> = None;
    let consider = |counts: Vec<usize>,
                    start: Option<Vec<Vec<usize>>>,
                    best: &mut Option<(f64, Vec<Vec<usize>>)>| {
        let mut gpu = start.unwrap_or_else(|| pack(&counts, smp, p));
        let mut st = State::new(smp, &counts, &gpu);
        let need = 1e-9 * st.objective();
        let f = refine(&mut gpu, &mut st, o, need);
        if best.as_ref().is_none_or(|(b, _)| f < b * (1.0 - 1e-12)) {
            *best = Some((f, gpu));
        }
    };
    for &kappa in o.kappas {
        let counts = robust_counts(smp, p, kappa);
        if tried.contains(&counts) {
            continue;
        }
        tried.push(counts.clone());
        consider(counts, None, &mut best);
    }
    if o.forecast_candidate {
        let f = place(&smp.mean, p, None);
        let counts = copy_counts(&f, smp.experts);
        consider(counts, Some(f.gpu_experts), &mut best);
    }
    let (objective, gpu_experts) = best.expect("at least one candidate");
    Candidate {
        placement: LayerPlacement { gpu_experts },
        objective,
        kind: CandidateKind::Fresh,
    }
}

/// Candidates for re-planning from `prev` (the placement in force), the first being `prev` itself.
/// `need` is the least gain of the expected maximum for which one swap is worth its two moved copies
/// (see [`super::priced::Price::swap_need`]).
pub fn replan_candidates(
    smp: &Samples,
    o: &RobustOptions,
    prev: &LayerPlacement,
    need: f64,
) -> Vec<Candidate> {
    let p = &o.place;
    let mut out = vec![Candidate {
        objective: smp.objective(prev),
        placement: prev.clone(),
        kind: CandidateKind::Keep,
    }];
    let valid =
        prev.gpus() == p.gpus && prev.gpu_experts.iter().all(|s| s.len() == p.slots_per_gpu);
    let fresh = fresh(smp, o);
    if valid {
        let mut seen: Vec<Vec<usize>> = Vec::new();
        let prev_counts = copy_counts(prev, smp.experts);
        let new_counts = copy_counts(&fresh.placement, smp.experts);
        let duplicate_free = !prev.has_duplicates() && prev_counts.iter().all(|&c| c >= 1);
        for (kind, counts) in [
            (CandidateKind::KeepCounts, prev_counts.clone()),
            (CandidateKind::Adjusted, new_counts),
        ] {
            if (kind == CandidateKind::KeepCounts && !duplicate_free) || seen.contains(&counts) {
                continue;
            }
            seen.push(counts.clone());
            let per_copy: Vec<f64> = (0..smp.experts)
                .map(|e| smp.mean[e] / counts[e].max(1) as f64)
                .collect();
            let mut gpu = adjust(prev, &counts, &per_copy, p);
            let mut st = State::new(smp, &counts, &gpu);
            let need = need.max(1e-9 * st.objective());
            if kind == CandidateKind::Adjusted {
                out.push(Candidate {
                    placement: LayerPlacement {
                        gpu_experts: gpu.clone(),
                    },
                    objective: st.objective(),
                    kind,
                });
            }
            // Every refinement prefix of 1, 2, 4, 8, ... swaps is a candidate: the price picks how far to go.
            let mut prefixes = Vec::new();
            let objective = refine_with(&mut gpu, &mut st, o, need, |k, g, f| {
                if k.is_power_of_two() {
                    prefixes.push(Candidate {
                        placement: LayerPlacement {
                            gpu_experts: g.to_vec(),
                        },
                        objective: f,
                        kind,
                    });
                }
            });
            out.extend(prefixes);
            out.push(Candidate {
                placement: LayerPlacement { gpu_experts: gpu },
                objective,
                kind,
            });
        }
    }
    let aligned = if valid {
        align_to(prev, &fresh.placement, p.gpus_per_node)
    } else {
        fresh.placement.clone()
    };
    out.push(Candidate {
        placement: aligned,
        ..fresh
    });
    out
}

/// Places one layer from its load history (oldest first); `prev` is the placement in force. Without a
/// price for moves, a re-plan adopts the best stable candidate (or the fresh plan if it is better by more
/// than `place.move_gain` of the expected maximum), never a change that does not lower the expected maximum.
pub fn place_robust(
    history: &[&[f64]],
    o: &RobustOptions,
    prev: Option<&LayerPlacement>,
) -> LayerPlacement {
    let experts = history.first().map(|h| h.len()).or(prev.map(|p| {
        p.gpu_experts
            .iter()
            .flatten()
            .copied()
            .max()
            .map_or(0, |m| m + 1)
    }));
    let Some(experts) = experts else {
        return LayerPlacement {
            gpu_experts: vec![Vec::new(); o.place.gpus],
        };
    };
    let smp = o
        .samples(history, o.place.gpus)
        .unwrap_or_else(|| Samples::uniform(experts, o.place.gpus));
    match prev {
        None => fresh(&smp, o).placement,
        Some(prev) => {
            let c = replan_candidates(&smp, o, prev, o.place.move_gain * smp.objective(prev));
            let keep = c[0].objective;
            let stable = c
                .iter()
                .filter(|c| c.kind != CandidateKind::Fresh && !c.placement.has_duplicates())
                .min_by(|a, b| a.objective.total_cmp(&b.objective))
                .cloned();
            let fresh = c.last().expect("fresh candidate");
            let mut pick = stable.unwrap_or_else(|| fresh.clone());
            if fresh.objective < pick.objective * (1.0 - o.place.move_gain) {
                pick = fresh.clone();
            }
            if pick.objective >= keep && !prev.has_duplicates() {
                return prev.clone();
            }
            pick.placement
        }
    }
}

/// Planned token shares for `p`: `shares[g][i]` is the fraction of the tokens of expert
/// `p.gpu_experts[g][i]` its copy on GPU g serves (each expert's shares sum to 1). Starts from the even
/// split and shifts share from copies on GPUs that are often the maximum to the expert's other copies
/// while that lowers the expected maximum over the history. For runtimes whose dispatch can pick an
/// expert's copy with given probabilities (a weighted copy table); a dispatch that picks copies round-robin
/// or at random with equal odds realises only the even split.
pub fn plan_shares(p: &LayerPlacement, smp: &Samples, max_steps: usize) -> Vec<Vec<f64>> {
    let e_n = smp.experts;
    let counts = copy_counts(p, e_n);
    let mut shares: Vec<Vec<f64>> = p
        .gpu_experts
        .iter()
        .map(|slots| slots.iter().map(|&e| 1.0 / counts[e] as f64).collect())
        .collect();
    let holders = p.replicas(e_n);
    // State with the per-copy load of an even split; shares then move load between GPUs directly.
    let mut st = State::new(smp, &counts, &p.gpu_experts);
    for _ in 0..max_steps {
        let current = st.objective();
        let mut found: Option<(f64, usize, usize, usize, f64)> = None;
        for a in st.hot(4) {
            for (i, &x) in p.gpu_experts[a].iter().enumerate() {
                if counts[x] < 2 || shares[a][i] <= 0.0 {
                    continue;
                }
                for &b in &holders[x] {
                    if b == a {
                        continue;
                    }
                    for frac in [1.0, 0.5, 0.25, 0.125, 0.0625] {
                        let delta = shares[a][i] * frac;
                        let total = st.with_pair(a, b, |s| {
                            let d = delta * smp.w[s * e_n + x];
                            (-d, d)
                        });
                        if total < current * (1.0 - 1e-9) && found.is_none_or(|(v, ..)| total < v) {
                            found = Some((total, a, i, b, delta));
                        }
                    }
                }
            }
            if found.is_some() {
                break;
            }
        }
        let Some((_, a, i, b, delta)) = found else {
            break;
        };
        let x = p.gpu_experts[a][i];
        st.apply_pair(a, b, |s| {
            let d = delta * smp.w[s * e_n + x];
            (-d, d)
        });
        shares[a][i] -= delta;
        let j = p.gpu_experts[b]
            .iter()
            .position(|&y| y == x)
            .expect("holder");
        shares[b][j] += delta;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::balancedness;

    /// Iterations where two experts take turns being hot (anti-correlated) over a flat background.
    fn alternating(iterations: usize, experts: usize) -> Vec<Vec<f64>> {
        (0..iterations)
            .map(|i| {
                (0..experts)
                    .map(|e| match e {
                        0 => {
                            if i % 2 == 0 {
                                60.0
                            } else {
                                10.0
                            }
                        }
                        1 => {
                            if i % 2 == 0 {
                                10.0
                            } else {
                                60.0
                            }
                        }
                        _ => 10.0 + ((e * 7 + i * 3) % 5) as f64,
                    })
                    .collect()
            })
            .collect()
    }

    fn refs(h: &[Vec<f64>]) -> Vec<&[f64]> {
        h.iter().map(|v| v.as_slice()).collect()
    }

    #[test]
    fn backtest_reads_the_half_life_off_the_history() {
        // Stationary shares with sampling noise: the longest memory averages the noise away.
        let mut rng = 12345u64;
        let mut noise = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) as f64 / (1u64 << 31) as f64 - 0.5
        };
        let still: Vec<Vec<f64>> = (0..60)
            .map(|_| (0..8).map(|e| 10.0 + e as f64 + 4.0 * noise()).collect())
            .collect();
        assert_eq!(backtest_half_life(&refs(&still), 5), Some(f64::INFINITY));
        // A hot expert that moves every 10 iterations, little noise: a short memory predicts best.
        let moving: Vec<Vec<f64>> = (0..60)
            .map(|t| {
                (0..8)
                    .map(|e| if e == (t / 10) % 8 { 50.0 } else { 5.0 } + 0.1 * noise())
                    .collect()
            })
            .collect();
        let hl = backtest_half_life(&refs(&moving), 5).unwrap();
        assert!(hl <= 4.0, "{hl}");
        // Too short to hold one prediction.
        assert_eq!(backtest_half_life(&refs(&still[..6]), 5), None);
    }

    #[test]
    fn samples_are_normalised_and_weighted_to_recent() {
        let h = vec![vec![1.0, 3.0], vec![0.0, 0.0], vec![2.0, 2.0]];
        let s = Samples::new(&refs(&h), 4, 10, 1.0).unwrap();
        assert_eq!(s.n, 2, "the empty iteration is dropped");
        // Newest first: [2, 2] scaled to total 4, then [1, 3].
        assert_eq!(&s.w[..2], &[2.0, 2.0]);
        assert_eq!(&s.w[2..], &[1.0, 3.0]);
        assert!(s.weight[0] > s.weight[1]);
        assert!((s.weight.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// A history longer than the sample budget: the samples are the newest iterations, but each expert's
    /// level is the whole history's (the old popularity is not forgotten), and the spread of the newest
    /// iterations is kept. An expert silent in the samples gets the whole history's mean.
    #[test]
    fn older_iterations_set_the_level_of_a_small_sample_budget() {
        let mut h = vec![vec![3.0, 1.0, 0.0]; 12];
        h.extend((0..8).map(|i| {
            if i % 2 == 0 {
                vec![1.0, 3.0, 0.0]
            } else {
                vec![0.5, 3.5, 0.0]
            }
        }));
        h[0][2] = 2.0;
        h[0][0] = 1.0;
        let whole = Samples::new(&refs(&h), 4, 64, f64::INFINITY).unwrap();
        let kept = Samples::new(&refs(&h), 4, 8, f64::INFINITY).unwrap();
        assert_eq!((whole.n, kept.n), (20, 8));
        for e in 0..3 {
            assert!(
                (kept.mean[e] - whole.mean[e]).abs() < 0.1,
                "expert {e}: level {} against the whole history's {}",
                kept.mean[e],
                whole.mean[e]
            );
        }
        assert!(kept.mean[2] > 0.0, "the silent expert keeps its old level");
        // The spread of the newest iterations survives (the two alternating loads stay apart).
        assert!(kept.sd[0] > 0.1 && kept.sd[1] > 0.1, "{:?}", kept.sd);
        for sample in kept.w.chunks(3) {
            assert!((sample.iter().sum::<f64>() - 4.0).abs() < 1e-9);
        }
        // The newest eight alone would forget that expert 0 was the hot one.
        let last8: Vec<Vec<f64>> = h[12..].to_vec();
        let forgetful = Samples::new(&refs(&last8), 4, 8, f64::INFINITY).unwrap();
        assert!(
            forgetful.mean[0] < 1.0 && kept.mean[0] > 1.8,
            "{:?}",
            kept.mean
        );
        // With the whole history in the budget nothing is rescaled.
        let all = Samples::new(&refs(&h), 4, 20, f64::INFINITY).unwrap();
        assert_eq!(all, whole);
    }

    /// `window` bounds the memory (what `place --window` sets); `max_samples` only the replayed iterations.
    #[test]
    fn the_window_forgets_older_iterations_and_the_sample_budget_does_not() {
        let h: Vec<Vec<f64>> = (0..20)
            .map(|i| {
                if i < 12 {
                    vec![3.0, 1.0]
                } else {
                    vec![1.0, 3.0]
                }
            })
            .collect();
        let mut o = RobustOptions::new(PlaceOptions::new(4, 1, 1));
        o.half_life = f64::INFINITY;
        o.max_samples = 8;
        let remembered = o.samples(&refs(&h), 4).unwrap();
        o.window = 8;
        let forgotten = o.samples(&refs(&h), 4).unwrap();
        assert_eq!(
            forgotten,
            Samples::new(&refs(&h[12..]), 4, 8, f64::INFINITY).unwrap()
        );
        assert!(
            forgotten.mean[0] < 1.01 && remembered.mean[0] > 1.5,
            "{remembered:?}"
        );
    }

    /// The open GPUs stay sorted by (mean load, id) through adds (some negative, some ties) and closes,
    /// and hold exactly the GPUs not closed: pack's pools are prefixes of this order.
    #[test]
    fn open_gpus_stay_in_load_order_through_adds_and_closes() {
        let mut open = OpenGpus::new(12);
        let mut closed = [false; 12];
        for step in 0..200usize {
            let k = (step * 7 + step / 5) % 12;
            let delta = [0.5, 1.0, -0.25, 0.0, 2.0][step % 5];
            open.add(k, delta);
            if step % 23 == 22 {
                open.close(k);
                closed[k] = true;
            }
            let want: Vec<usize> = (0..12).filter(|&g| !closed[g]).collect();
            let mut got = open.order.clone();
            got.sort_unstable();
            assert_eq!(got, want, "step {step}");
            for w in open.order.windows(2) {
                let (a, b) = (w[0], w[1]);
                assert!(
                    open.load[a]
                        .total_cmp(&open.load[b])
                        .then(a.cmp(&b))
                        .is_lt(),
                    "step {step}: {:?}",
                    open.order
                );
            }
        }
        assert!(closed.iter().any(|&c| c) && !open.order.is_empty());
    }

    #[test]
    fn fills_every_slot_without_duplicates_at_several_shapes() {
        for (gpus, slots, experts, nodes) in [
            (4, 3, 8, 1),
            (8, 9, 64, 2),
            (16, 5, 64, 2),
            (4, 8, 8, 2),
            (32, 3, 64, 4),
        ] {
            let h: Vec<Vec<f64>> = (0..20)
                .map(|i| {
                    (0..experts)
                        .map(|e| 1.0 + ((e * 13 + i * 7) % 17) as f64 * (e % 5) as f64)
                        .collect()
                })
                .collect();
            let mut o = RobustOptions::new(PlaceOptions::new(gpus, slots, gpus / nodes));
            for nb in [false, true] {
                o.place.node_balanced = nb;
                let p = place_robust(&refs(&h), &o, None);
                assert!(!p.has_duplicates(), "{gpus}×{slots} nb={nb}");
                assert!(p.covers(experts));
                assert!(p.gpu_experts.iter().all(|s| s.len() == slots));
                let again = place_robust(&refs(&h), &o, Some(&p));
                assert!(!again.has_duplicates());
                assert_eq!(
                    again.moves_from(&p),
                    0,
                    "re-planning on the same history moves nothing"
                );
            }
        }
    }

    #[test]
    fn anti_correlated_hot_experts_share_a_gpu() {
        // Experts 0 and 1 are hot in turn: on one GPU their sum is steady; apart, each iteration has a hot
        // GPU. The mean cannot tell the two apart; the per-iteration objective can.
        let h = alternating(40, 8);
        let o = RobustOptions::new(PlaceOptions::new(4, 2, 4));
        let p = place_robust(&refs(&h), &o, None);
        let mean_plan = place(&forecast_mean(&h), &o.place, None);
        let later = alternating(41, 8);
        let judge = |p: &LayerPlacement| balancedness(&p.gpu_loads(&later[40]));
        assert!(judge(&p) > judge(&mean_plan) - 1e-12);
        let smp = Samples::new(&refs(&h), 4, 64, f64::INFINITY).unwrap();
        assert!(smp.objective(&p) <= smp.objective(&mean_plan) + 1e-12);
    }

    fn forecast_mean(h: &[Vec<f64>]) -> Vec<f64> {
        (0..h[0].len())
            .map(|e| h.iter().map(|x| x[e]).sum::<f64>() / h.len() as f64)
            .collect()
    }

    #[test]
    fn planned_shares_sum_to_one_and_do_not_raise_the_objective() {
        let h: Vec<Vec<f64>> = (0..30)
            .map(|i| {
                (0..16)
                    .map(|e| {
                        if e == 3 {
                            90.0 + (i % 7) as f64
                        } else {
                            5.0 + ((e + i) % 4) as f64
                        }
                    })
                    .collect()
            })
            .collect();
        let o = RobustOptions::new(PlaceOptions::new(4, 5, 2));
        let p = place_robust(&refs(&h), &o, None);
        let smp = Samples::new(&refs(&h), 4, 64, f64::INFINITY).unwrap();
        let shares = plan_shares(&p, &smp, 200);
        let mut per_expert = [0.0; 16];
        for (slots, sh) in p.gpu_experts.iter().zip(&shares) {
            for (&e, &x) in slots.iter().zip(sh) {
                assert!(x >= 0.0);
                per_expert[e] += x;
            }
        }
        assert!(
            per_expert.iter().all(|s| (s - 1.0).abs() < 1e-9),
            "{per_expert:?}"
        );
        assert!(smp.objective_with_shares(&p, &shares) <= smp.objective(&p) + 1e-12);
    }
}
