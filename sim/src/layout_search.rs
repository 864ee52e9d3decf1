//! Parallel-layout search for `ep` training strategies: (TP, PP, EP, ETP, schedule, virtual stages,
//! micro-batches, recomputation, ZeRO stage) under the GPU count and the scenario's global batch,
//! pruned before simulating, and the winners explained.
//!
//! Expansion (per `ep` training strategy that sets `tp` or `pp`, in a scenario without a routing trace):
//! - TP: divisors of the GPUs per node (at most 8) that split a micro-batch's tokens evenly (sequence
//!   parallelism);
//! - PP: divisors of the GPU count up to the layer count;
//! - EP: divisors of a stage's `S = GPUs / pp` GPUs that divide the experts, with `lcm(ep, tp) | S` (whole
//!   EP and TP groups in a stage);
//! - ETP (expert tensor parallelism, each expert's FFN split over `etp` GPUs): divisors of the GPUs per node
//!   (at most 8) with `lcm(ep × etp, tp) | S` (whole expert blocks);
//! - schedule (PP > 1): 1F1B, interleaved 1F1B with 2 and 4 virtual stages where every model stage after
//!   the first keeps a layer and the micro-batches are a multiple of PP, DualPipe for even PP with at least
//!   2·PP (even) micro-batches;
//! - micro-batches: the global batch is kept. The scenario's own layout runs `micro_batches × micro_batch`
//!   sequences on each of its `GPUs / (tp·pp)` data-parallel replicas; a layout with `dp` replicas runs
//!   `global / (dp × micro_batch)` micro-batches, and is skipped where that is not a whole number;
//! - recomputation: none, selective (every module the model has: the norms, MLA's up-projections, the
//!   experts' activation; name suffix `-sr`) or full (activation checkpointing, `-rc`); ZeRO stage 1, 2, 3
//!   (these and the micro-batches are scenario fields: a [`Layout`] carries them and is simulated on its own
//!   copy of the scenario);
//! - capacity factor as the `ep` family searches it (the strategy's c, 1.5·c, 2·c, none).
//!
//! Pruning, before any simulation:
//! - **memory**: [`memory_lower_bound`] (the simulated memory's formulas with routed tokens at their
//!   balanced mean) above `objective.memory_limit_gib`: the layout cannot fit;
//! - **dominated**: a sibling layout (same TP, PP, EP, schedule, micro-batches, capacity factor) with
//!   no more recomputation and a ZeRO stage no higher was simulated and fits. It does the same work or
//!   less (ZeRO-1 and -2 lower to the same iteration, ZeRO-3 gathers more, selective recomputation reruns
//!   part of what full recomputation reruns) with
//!   the same routing, so the sibling ranks at least as high. Siblings are therefore simulated in waves,
//!   the least-work ones first, and a layout runs only when every sibling that dominates it is out of
//!   memory.

use crate::pipeline::schedule::{Schedule, ScheduleKind};
use crate::plan::{exclusion, score};
use crate::result::StrategyResult;
use crate::scenario::file::{Mode, StrategyKind};
use crate::scenario::parallel::{Parallel, lcm};
use crate::scenario::recompute::RecomputeModules;
use crate::scenario::{Scenario, Strategy};
use serde::Serialize;

pub use crate::strategy::stage_memory::memory_lower_bound;

/// One candidate layout: a strategy (its TP, PP, EP, schedule) with the scenario fields it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Named by its knobs, e.g. `tp1-pp16-ep64-dual-pipe-m32-z1-rc`.
    pub strategy: Strategy,
    /// `workload.micro_batches`: micro-batches per iteration on each data-parallel replica.
    pub micro_batches: usize,
    /// `training.activation_checkpointing` (full) or `training.recompute_modules` (selective).
    pub recompute: Recompute,
    /// `training.zero_stage`.
    pub zero_stage: u8,
}

impl Layout {
    pub fn name(&self) -> &str {
        &self.strategy.name
    }

    /// The scenario this layout is simulated on: `base` with the layout's micro-batches, checkpointing and
    /// ZeRO stage, and the layout's strategy as its only strategy.
    pub fn scenario(&self, base: &Scenario) -> Scenario {
        let mut s = base.clone();
        s.workload.micro_batches = self.micro_batches;
        // The scenario's routing draws, at most one per micro-batch (a valid scenario file again).
        s.workload.routing_samples = base
            .workload
            .routing_samples
            .map(|n| n.min(self.micro_batches));
        s.training.activation_checkpointing = self.recompute == Recompute::Full;
        s.training.recompute_modules = match self.recompute {
            Recompute::Selective => selective_modules(base),
            Recompute::None | Recompute::Full => RecomputeModules::NONE,
        };
        s.training.zero_stage = self.zero_stage;
        s.strategies = vec![self.strategy.clone()];
        s
    }

    /// Whether `self` and `other` differ at most in recomputation and ZeRO stage (siblings: the same
    /// iteration shape and routing).
    fn sibling(&self, other: &Layout) -> bool {
        let (a, b) = (&self.strategy, &other.strategy);
        self.micro_batches == other.micro_batches
            && a.ep_size == b.ep_size
            && a.capacity_factor == b.capacity_factor
            && a.overlap_micro_batches == b.overlap_micro_batches
            && a.a2a == b.a2a
            && a.parallel == b.parallel
    }

    /// Whether `self` is a sibling that does no more work than `other`: no more recomputation, ZeRO
    /// stage no higher (ZeRO-1 and -2 lower to the same iteration, ZeRO-3 also gathers parameters).
    fn dominates(&self, other: &Layout) -> bool {
        self.sibling(other)
            && self != other
            && self.recompute <= other.recompute
            && self.zero_stage <= other.zero_stage
    }
}

/// How a layout recomputes activations, ordered by the work it adds (and the memory it saves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recompute {
    /// Every layer keeps what its backward needs.
    None,
    /// Selective recomputation of every module the model has ([`selective_modules`]).
    Selective,
    /// Full recomputation: each layer keeps its input and reruns its forward.
    Full,
}

impl Recompute {
    /// The layout name's suffix.
    fn suffix(self) -> &'static str {
        match self {
            Recompute::None => "",
            Recompute::Selective => "-sr",
            Recompute::Full => "-rc",
        }
    }
}

/// The selective recomputation a layout searches: the norms, the experts' activation and, on an MLA
/// model, the up-projections (Megatron-Core's `--recompute-modules`; DeepSeek-V3 §3.2.3's recipe).
pub fn selective_modules(s: &Scenario) -> RecomputeModules {
    RecomputeModules {
        layernorm: true,
        mla_up_proj: s.model.is_mla(),
        moe_act: true,
        ..RecomputeModules::NONE
    }
}

/// Whether `plan --search` expands `base` over parallel layouts: kind `ep` in training with synthetic
/// routing (tensor and pipeline parallelism replay synthetic routing only) that already sets `tp` or `pp`
/// (a 3D-parallel family; a plain `ep` strategy keeps the EP family: its degree and capacity factor).
pub fn expands_to_layouts(s: &Scenario, base: &Strategy) -> bool {
    base.kind == StrategyKind::Ep
        && !base.parallel.is_single()
        && s.workload.mode == Mode::Training
        && s.workload.trace.is_none()
        && base.replication.is_none()
}

/// Sequences per iteration under `base`: `micro_batches × micro_batch` on each of its `GPUs / (tp·pp)`
/// data-parallel replicas.
pub fn global_batch(s: &Scenario, base: &Strategy) -> usize {
    let p = &base.parallel;
    s.workload.micro_batches * s.model.micro_batch as usize * s.cluster.gpus()
        / (p.tp * p.pp).max(1)
}

fn divisors(n: usize) -> impl Iterator<Item = usize> {
    (1..=n).filter(move |d| n.is_multiple_of(*d))
}

/// The pipeline schedules searched for `pp` ranks and `m` micro-batches: (kind, virtual stages), those
/// the schedule builds and whose model stages after the first all keep a layer.
fn schedules(layers: usize, pp: usize, m: usize) -> Vec<(ScheduleKind, usize)> {
    if pp == 1 {
        return vec![(ScheduleKind::OneFOneB, 1)];
    }
    let options = [
        (ScheduleKind::OneFOneB, 1),
        (ScheduleKind::Interleaved, 2),
        (ScheduleKind::Interleaved, 4),
        (ScheduleKind::DualPipe, 1),
    ];
    options
        .into_iter()
        .filter(|&(kind, v)| {
            let stages = pp * v;
            let split = Parallel::default_split(layers, stages);
            layers + 2 >= stages
                && !split.iter().skip(1).any(|&l| l == 0)
                && Schedule::build(kind, pp, v, m).is_ok()
        })
        .collect()
}

/// The layout's name: every knob, in a fixed order (the schedule only with pipeline parallelism).
fn name(
    p: &Parallel,
    ep: usize,
    m: usize,
    zero: u8,
    recompute: Recompute,
    cf: Option<f64>,
) -> String {
    let sched = match (p.pp, p.schedule) {
        (1, _) => String::new(),
        (_, ScheduleKind::Interleaved) => format!("-interleaved-v{}", p.virtual_stages),
        (_, kind) => format!("-{}", kind.name()),
    };
    let etp = if p.etp > 1 {
        format!("-etp{}", p.etp)
    } else {
        String::new()
    };
    format!(
        "tp{}-pp{}-ep{ep}{etp}{sched}{}-m{m}-z{zero}{}",
        p.tp,
        p.pp,
        cf.map_or(String::new(), |c| format!("-cf{c}")),
        recompute.suffix(),
    )
}

/// Every layout `base` expands to (empty unless [`expands_to_layouts`]), in a fixed order: for each
/// shape, recomputation none, selective, full, and ZeRO stages ascending.
pub fn layouts(s: &Scenario, base: &Strategy) -> Vec<Layout> {
    if !expands_to_layouts(s, base) {
        return Vec::new();
    }
    let g = s.cluster.gpus();
    let m = &s.model;
    let global = global_batch(s, base);
    let mb = m.micro_batch as usize;
    let tokens = m.seq_len * m.micro_batch;
    let factors: Vec<Option<f64>> = match base.capacity_factor {
        None => vec![None],
        Some(c) => vec![Some(c), Some(1.5 * c), Some(2.0 * c), None],
    };
    let mut out = Vec::new();
    let per_node = s.cluster.gpus_per_node.min(8);
    for tp in divisors(per_node).filter(|&t| tokens.is_multiple_of(t as u64)) {
        for pp in divisors(g).filter(|&p| p <= m.layers) {
            if !g.is_multiple_of(tp * pp) {
                continue;
            }
            let stage = g / pp;
            let dp = stage / tp;
            if !global.is_multiple_of(dp * mb) {
                continue;
            }
            let micro_batches = global / (dp * mb);
            if micro_batches == 0 {
                continue;
            }
            let shapes = divisors(stage).flat_map(|e| divisors(per_node).map(move |x| (e, x)));
            for (ep, etp) in shapes.filter(|&(e, x)| {
                m.experts.is_multiple_of(e) && stage.is_multiple_of(lcm(e * x, tp))
            }) {
                for (kind, v) in schedules(m.layers, pp, micro_batches) {
                    for &cf in &factors {
                        for recompute in [Recompute::None, Recompute::Selective, Recompute::Full] {
                            for zero in [1u8, 2, 3] {
                                let parallel = Parallel {
                                    tp,
                                    pp,
                                    etp,
                                    schedule: kind,
                                    virtual_stages: v,
                                    // As the scenario resolves a strategy without `stage_layers`.
                                    stage_layers: Parallel::default_split(m.layers, pp * v),
                                    rank_order: base.parallel.rank_order,
                                };
                                let single = parallel.is_single();
                                out.push(Layout {
                                    strategy: Strategy {
                                        name: name(
                                            &parallel,
                                            ep,
                                            micro_batches,
                                            zero,
                                            recompute,
                                            cf,
                                        ),
                                        kind: StrategyKind::Ep,
                                        ep_size: ep,
                                        capacity_factor: cf,
                                        overlap_micro_batches: if single {
                                            base.overlap_micro_batches
                                        } else {
                                            1
                                        },
                                        a2a: base.a2a,
                                        replication: None,
                                        fssdp: None,
                                        offload: None,
                                        parallel,
                                    },
                                    micro_batches,
                                    recompute,
                                    zero_stage: zero,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Why a layout was not simulated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Pruned {
    /// Its memory lower bound exceeds the limit (the formula bound, or its balanced-routing estimate's
    /// simulated peak, which routing skew only raises).
    Memory { bound_gib: f64, limit_gib: f64 },
    /// A sibling that does no more work fits (the layout named).
    Dominated { by: String },
    /// Its step from below (`by`: the schedule's lower bound or the balanced-routing estimate; `via`: that
    /// of a sibling that does no more work) is already no better on the objective than `best`, simulated.
    Bound {
        by: BoundKind,
        step_ms: f64,
        best: String,
        best_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// Its iteration has more operations than the search simulates (`moesim simulate` runs it alone).
    TooLarge { operations: usize, cap: usize },
}

/// Which figure from below pruned a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundKind {
    /// [`crate::strategy::ep::EpModel::pipelined_step_bound`]: the schedule's chains, no engine.
    Schedule,
    /// [`Estimate`]: one simulated iteration of balanced routing.
    Estimate,
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pruned::Memory {
                bound_gib,
                limit_gib,
            } => write!(
                f,
                "needs at least {bound_gib:.1} GiB per GPU (limit {limit_gib:.1} GiB)"
            ),
            Pruned::Dominated { by } => write!(f, "{by} does no more work and fits"),
            Pruned::Bound {
                by,
                step_ms,
                best,
                best_ms,
                via,
            } => {
                if let Some(v) = via {
                    write!(f, "{v} does no more work and ")?;
                }
                let what = match by {
                    BoundKind::Schedule => "schedule's lower bound",
                    BoundKind::Estimate => "balanced-routing estimate",
                };
                write!(
                    f,
                    "its {what}, {step_ms:.1} ms, is no better than {best} simulated ({best_ms:.1} ms)"
                )
            }
            Pruned::TooLarge { operations, cap } => write!(
                f,
                "{:.1} million operations per iteration, above the search's {:.0} million (simulate it on \
                 its own)",
                *operations as f64 * 1e-6,
                *cap as f64 * 1e-6
            ),
        }
    }
}

/// What the search did with each layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Simulated: its result's index in the search report.
    Simulated(usize),
    Pruned(Pruned),
}

/// A layout's step from below on the objective: the schedule's lower bound (no engine) or its
/// [`Estimate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FromBelow {
    /// The objective's score (lower is better, see [`crate::plan::score`]).
    pub score: f64,
    pub step_ms: f64,
    /// Operations one simulated iteration takes (the schedule bound's count).
    pub operations: usize,
}

/// A layout's iteration simulated with balanced routing (every rank sends every expert the same share)
/// and no compute noise: what routing skew and stragglers can only slow down. Its score bounds the
/// layout's from below on the objective (tested on every layout the search simulates), and its memory
/// bounds the simulated peak from below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    /// The objective's score (lower is better, see [`crate::plan::score`]).
    pub score: f64,
    pub step_ms: f64,
    pub memory_gib: f64,
    pub oom: bool,
}

/// The scenario a layout's [`Estimate`] is simulated on: one iteration of balanced routing without compute
/// noise; `None` where balanced routing would route more than the scenario (null experts drop choices),
/// so that it would not bound the layout from below.
pub fn estimate_scenario(base: &Scenario, l: &Layout) -> Option<Scenario> {
    if base.workload.dynamics.null_expert_prob > 0.0 {
        return None;
    }
    let mut s = l.scenario(base);
    s.workload.skew = moesim_traces::Skew::Balanced;
    s.workload.iterations = 1;
    s.cluster.compute_noise_cv = 0.0;
    Some(s)
}

/// The objective's score of a step of `step_ms` for `strategy` on `s` (see [`crate::plan::score`]: every
/// metric is a step time but tokens/s, which divides the iteration's tokens by it).
pub fn step_score(s: &Scenario, strategy: &Strategy, step_ms: f64) -> f64 {
    match s.objective.metric {
        crate::scenario::file::Metric::TokensPerS => {
            -(strategy.tokens_per_iteration(s) as f64) / (step_ms * 1e-3)
        }
        _ => step_ms,
    }
}

/// What simulating one layout showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulated {
    /// Its result's index in the search report.
    pub index: usize,
    /// Not out of memory.
    pub fits: bool,
    /// Its score on the objective, `None` where the objective excludes it.
    pub score: Option<f64>,
    pub step_ms: f64,
}

/// Layouts refined at a time: fixed, so that which layouts the bounds prune does not depend on the
/// thread count.
pub const WAVE: usize = 2;

/// Most operations per iteration of a layout the search estimates or simulates: about 4 × those of
/// DeepSeek-V3's own layout on 2,048 GPUs, a few GiB of operation graph.
pub const MAX_OPERATIONS: usize = 30_000_000;

/// The search's three ways to learn about a layout, cheapest first; each is given indices to work on (in
/// parallel if it likes).
pub struct Probes<B, E, S> {
    /// The schedule's lower bound (`None`: no bound, e.g. without pipeline or tensor parallelism).
    pub bound: B,
    /// The balanced-routing estimate (`None`: no estimate, see [`estimate_scenario`]).
    pub estimate: E,
    /// The full simulation.
    pub simulate: S,
}

/// What the search learned of each layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Knowledge {
    pub bounds: Vec<Option<FromBelow>>,
    pub estimates: Vec<Option<Estimate>>,
}

/// Decides which layouts to simulate, best first:
/// 1. layouts over `limit_gib` by their memory lower bound are pruned at once;
/// 2. a layout is pruned as dominated as soon as a sibling that dominates it fits, and waits until every
///    sibling that dominates it is decided;
/// 3. every layout its siblings allow gets the schedule's lower bound;
/// 4. round by round, the [`WAVE`] layouts best from below are refined: bound → estimate (out of memory
///    even so: pruned; more than [`MAX_OPERATIONS`]: pruned) → simulation; and every layout whose figure
///    from below is no better than the best simulated score is pruned, with the siblings it dominates.
///
/// Returns each layout's fate and what the search learned of it.
pub fn run_waves<B, E, S>(
    s: &Scenario,
    layouts: &[Layout],
    mut probes: Probes<B, E, S>,
) -> (Vec<Fate>, Knowledge)
where
    B: FnMut(&[usize]) -> Vec<Option<FromBelow>>,
    E: FnMut(&[usize]) -> Vec<Option<Estimate>>,
    S: FnMut(&[usize]) -> Vec<Simulated>,
{
    let n = layouts.len();
    let limit = s.objective.memory_limit_gib;
    let mut fate: Vec<Option<Fate>> = layouts
        .iter()
        .map(|l| {
            let bound = memory_lower_bound(&l.scenario(s), &l.strategy)
                .map_or(f64::INFINITY, |b| b.total_gib);
            (bound > limit).then_some(Fate::Pruned(Pruned::Memory {
                bound_gib: bound,
                limit_gib: limit,
            }))
        })
        .collect();
    let mut know = Knowledge {
        bounds: vec![None; n],
        estimates: vec![None; n],
    };
    let (mut bounded, mut estimated) = (vec![false; n], vec![false; n]);
    let mut fits = vec![false; n];
    // The best simulated layout the objective allows: (score, index, step ms).
    let mut best: Option<(f64, usize, f64)> = None;
    // Siblings are adjacent (same shape, consecutive): index ranges by shape.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, l) in layouts.iter().enumerate() {
        match groups.last_mut() {
            Some(r) if layouts[r.start].sibling(l) => r.end = i + 1,
            _ => groups.push(i..i + 1),
        }
    }
    // A layout's best figure from below: (score, step ms, which).
    let below = |know: &Knowledge, i: usize| -> Option<(f64, f64, BoundKind)> {
        match (know.estimates[i], know.bounds[i]) {
            (Some(e), _) => Some((e.score, e.step_ms, BoundKind::Estimate)),
            (None, Some(b)) => Some((b.score, b.step_ms, BoundKind::Schedule)),
            (None, None) => None,
        }
    };
    loop {
        let mut eligible = Vec::new();
        let mut decided = false;
        for g in &groups {
            for i in g.clone() {
                if fate[i].is_some() {
                    continue;
                }
                let dominators = g.clone().filter(|&j| layouts[j].dominates(&layouts[i]));
                let via_bound = dominators.clone().find_map(|j| match &fate[j] {
                    Some(Fate::Pruned(Pruned::Bound {
                        by,
                        step_ms,
                        best,
                        best_ms,
                        ..
                    })) => Some(Pruned::Bound {
                        by: *by,
                        step_ms: *step_ms,
                        best: best.clone(),
                        best_ms: *best_ms,
                        via: Some(layouts[j].name().to_string()),
                    }),
                    _ => None,
                });
                if let Some(j) = dominators.clone().find(|&j| fits[j]) {
                    fate[i] = Some(Fate::Pruned(Pruned::Dominated {
                        by: layouts[j].name().to_string(),
                    }));
                    decided = true;
                } else if let Some(b) = via_bound {
                    fate[i] = Some(Fate::Pruned(b));
                    decided = true;
                } else if dominators.clone().all(|j| fate[j].is_some()) {
                    eligible.push(i);
                }
            }
        }
        let unbounded: Vec<usize> = eligible.iter().copied().filter(|&i| !bounded[i]).collect();
        if !unbounded.is_empty() {
            for (&i, b) in unbounded.iter().zip((probes.bound)(&unbounded)) {
                bounded[i] = true;
                know.bounds[i] = b;
            }
            continue;
        }
        let key = |i: usize| below(&know, i).map_or(f64::NEG_INFINITY, |b| b.0);
        eligible.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        if let Some((score, b, best_ms)) = best {
            for &i in &eligible {
                if let Some((_, step_ms, by)) = below(&know, i).filter(|x| x.0 >= score) {
                    fate[i] = Some(Fate::Pruned(Pruned::Bound {
                        by,
                        step_ms,
                        best: layouts[b].name().to_string(),
                        best_ms,
                        via: None,
                    }));
                    decided = true;
                }
            }
        }
        let wave: Vec<usize> = eligible
            .into_iter()
            .filter(|&i| fate[i].is_none())
            .take(WAVE)
            .collect();
        if wave.is_empty() {
            if decided {
                continue;
            }
            break;
        }
        let mut to_estimate = Vec::new();
        let mut to_simulate = Vec::new();
        for &i in &wave {
            let operations = know.bounds[i].map_or(0, |b| b.operations);
            if estimated[i] {
                to_simulate.push(i);
            } else if operations > MAX_OPERATIONS {
                fate[i] = Some(Fate::Pruned(Pruned::TooLarge {
                    operations,
                    cap: MAX_OPERATIONS,
                }));
            } else {
                to_estimate.push(i);
            }
        }
        if !to_estimate.is_empty() {
            for (&i, e) in to_estimate.iter().zip((probes.estimate)(&to_estimate)) {
                estimated[i] = true;
                know.estimates[i] = e;
                match e {
                    Some(e) if e.oom => {
                        fate[i] = Some(Fate::Pruned(Pruned::Memory {
                            bound_gib: e.memory_gib,
                            limit_gib: limit,
                        }));
                    }
                    // Nothing learned: simulate it next.
                    None => to_simulate.push(i),
                    Some(_) => {}
                }
            }
        }
        if !to_simulate.is_empty() {
            for (&i, r) in to_simulate.iter().zip((probes.simulate)(&to_simulate)) {
                fits[i] = r.fits;
                fate[i] = Some(Fate::Simulated(r.index));
                if let Some(score) = r.score
                    && best.is_none_or(|(b, _, _)| score < b)
                {
                    best = Some((score, i, r.step_ms));
                }
            }
        }
    }
    let fates = fate
        .into_iter()
        .map(|f| f.expect("every layout is simulated or pruned"))
        .collect();
    (fates, know)
}

/// One ranked configuration, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Configuration {
    pub name: String,
    pub step_ms: f64,
    pub tokens_per_s_per_gpu: f64,
    pub memory_gib: f64,
    pub fits: bool,
    /// The busiest rank's compute stream idle share of the step: the pipeline bubble (fill and drain)
    /// and the waits on communication it does not hide.
    pub bubble_fraction: f64,
    /// Mean communication time per iteration not hidden under compute.
    pub comm_exposed_ms: f64,
    /// Why it ranks above the next configuration (the last shown: above the one after it, if any).
    pub why: String,
}

/// The knobs a result's name spells, keyed by what they set (`tp` → `tp2`, `schedule` → `dual-pipe`,
/// `rc` → `rc`), for comparing two layouts knob by knob.
fn knobs(name: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut parts = name.split('-').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = match part {
            "dual" if parts.peek() == Some(&"pipe") => {
                parts.next();
                ("schedule".to_string(), "dual-pipe".to_string())
            }
            "interleaved" => {
                let v = parts.next_if(|p| p.starts_with('v')).unwrap_or("");
                ("schedule".to_string(), format!("interleaved-{v}"))
            }
            "1f1b" | "gpipe" => ("schedule".to_string(), part.to_string()),
            // Selective and full recomputation are two values of one knob.
            "sr" | "rc" => ("rc".to_string(), part.to_string()),
            _ => {
                let key: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                (key, part.to_string())
            }
        };
        out.push((key, value));
    }
    out
}

/// The knobs that differ between two names (`pp16 vs pp8, z1 vs z3-rc`), or both names when they are
/// not layouts of the same knobs.
fn knob_differences(a: &str, b: &str) -> String {
    let (ka, kb) = (knobs(a), knobs(b));
    let get = |k: &[(String, String)], key: &str| {
        k.iter().find(|(x, _)| x == key).map(|(_, v)| v.clone())
    };
    let mut keys: Vec<&str> = ka.iter().chain(&kb).map(|(k, _)| k.as_str()).collect();
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(*k));
    if !(a.starts_with("tp") && b.starts_with("tp")) {
        return format!("{a} vs {b}");
    }
    let differ: Vec<String> = keys
        .iter()
        .filter_map(|key| {
            let (x, y) = (get(&ka, key), get(&kb, key));
            let show = |v: Option<String>| match (v, *key) {
                (Some(v), _) => v,
                (None, "rc") => "no rc".into(),
                (None, "schedule") => "no pipeline".into(),
                (None, k) => format!("no {k}"),
            };
            (x != y).then(|| format!("{} vs {}", show(x), show(y)))
        })
        .collect();
    if differ.is_empty() {
        format!("{a} vs {b}")
    } else {
        differ.join(", ")
    }
}

/// The busiest rank's idle share of the step.
fn bubble(r: &StrategyResult) -> f64 {
    let busy = r.per_rank.iter().map(|p| p.busy_ms).fold(0.0, f64::max);
    let step = r.step_time_ms.mean;
    if step > 0.0 {
        ((step - busy) / step).max(0.0)
    } else {
        0.0
    }
}

/// A one-line reason `w` ranks above `r` under the objective: the margin, the knobs that differ, and the
/// figures that explain it (memory when `r` does not fit, bubble, exposed communication, compute).
pub fn reason(w: &StrategyResult, r: &StrategyResult, s: &Scenario) -> String {
    let metric = s.objective.metric;
    let differ = knob_differences(&w.strategy, &r.strategy);
    let mut parts = Vec::new();
    if let Some(e) = exclusion(r, s) {
        parts.push(format!("{} is excluded ({e})", r.strategy));
        if w.memory_peak_gib < r.memory_peak_gib {
            parts.push(format!(
                "{:.1} vs {:.1} GiB",
                w.memory_peak_gib, r.memory_peak_gib
            ));
        }
    } else {
        // Scores are lower-better: −tokens/s or a step time.
        let margin = match metric {
            crate::scenario::file::Metric::TokensPerS => w.tokens_per_s / r.tokens_per_s - 1.0,
            _ => score(r, metric) / score(w, metric) - 1.0,
        };
        if margin.abs() < 5e-4 {
            parts.push("ties on the objective (listed first)".into());
        } else {
            parts.push(format!("{:.1}% better on the objective", 100.0 * margin));
        }
    }
    let (bw, br) = (bubble(w), bubble(r));
    let mut figures: Vec<(f64, String)> = vec![
        (
            (br * r.step_time_ms.mean - bw * w.step_time_ms.mean).abs(),
            format!("bubble {:.0}% vs {:.0}%", 100.0 * bw, 100.0 * br),
        ),
        (
            (r.comm_exposed_ms - w.comm_exposed_ms).abs(),
            format!(
                "exposed comm {:.1} vs {:.1} ms",
                w.comm_exposed_ms, r.comm_exposed_ms
            ),
        ),
    ];
    for (k, v) in &w.breakdown_ms {
        let other = r.breakdown_ms.get(k).copied().unwrap_or(0.0);
        figures.push((
            (other - v).abs(),
            format!("{k} {v:.1} vs {other:.1} ms on the critical path"),
        ));
    }
    figures.sort_by(|a, b| b.0.total_cmp(&a.0));
    parts.extend(
        figures
            .into_iter()
            .take(2)
            .filter(|f| f.0 > 1e-6)
            .map(|f| f.1),
    );
    format!("{differ}: {}", parts.join("; "))
}

/// The best `top` results (`ranked` best first), each with its figures and why it ranks above the next.
pub fn explain(
    results: &[StrategyResult],
    ranked: &[usize],
    top: usize,
    s: &Scenario,
) -> Vec<Configuration> {
    let gpus = s.cluster.gpus() as f64;
    ranked
        .iter()
        .take(top)
        .enumerate()
        .map(|(k, &i)| {
            let w = &results[i];
            let why = match ranked.get(k + 1) {
                Some(&j) => reason(w, &results[j], s),
                None => "the only configuration simulated".into(),
            };
            Configuration {
                name: w.strategy.clone(),
                step_ms: w.step_time_ms.mean,
                tokens_per_s_per_gpu: w.tokens_per_s / gpus,
                memory_gib: w.memory_peak_gib,
                fits: !w.oom,
                bubble_fraction: bubble(w),
                comm_exposed_ms: w.comm_exposed_ms,
                why,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{RunOptions, simulate_scenario, synthetic_routing};
    use crate::scenario::parse_scenario;
    use crate::search::{SearchOutcome, search_all};
    use std::sync::OnceLock;

    /// Mixtral (8 experts, top-2) cut to 4 layers on 4 × DGX H100, skewed routing: small enough to search
    /// every layout in a test. The memory limit sits inside the layouts' range so that pruning happens.
    const MIXTRAL: &str = r#"
name = "mixtral-layouts"
seed = 5
[model]
preset = "mixtral-8x7b"
layers = 4
seq_len = 1024
micro_batch = 1
[cluster]
preset = "dgx-h100"
nodes = 4
[workload]
mode = "training"
iterations = 1
micro_batches = 2
skew = { distribution = "zipf", s = 0.8 }
[training]
zero_stage = 1
[[strategy]]
name = "own"
kind = "ep"
ep_size = 8
pp = 2
[objective]
memory_limit_gib = 9.0
"#;

    fn scenario() -> Scenario {
        parse_scenario("mixtral-layouts.toml", MIXTRAL, &[]).unwrap()
    }

    fn quiet() -> RunOptions<'static> {
        RunOptions {
            timing: false,
            progress: None,
        }
    }

    fn searched() -> &'static (Scenario, SearchOutcome) {
        static RUN: OnceLock<(Scenario, SearchOutcome)> = OnceLock::new();
        RUN.get_or_init(|| {
            let s = scenario();
            let o = search_all(&s, &synthetic_routing(&s), None, None, quiet());
            (s, o)
        })
    }

    /// The search's chosen layout and its result.
    fn chosen(o: &SearchOutcome) -> (&str, &StrategyResult) {
        let chosen = o.report.chosen.as_deref().expect("a layout fits");
        let best = o.report.results.iter().find(|r| r.strategy == chosen);
        (chosen, best.expect("the chosen layout has a result"))
    }

    /// The `--set` overrides that give `l` from the scenario file.
    fn overrides(l: &Layout) -> Vec<String> {
        let p = &l.strategy.parallel;
        let mut o = vec![
            format!("strategy.0.tp={}", p.tp),
            format!("strategy.0.pp={}", p.pp),
            format!("strategy.0.ep_size={}", l.strategy.ep_size),
            format!("strategy.0.etp={}", p.etp),
            format!("workload.micro_batches={}", l.micro_batches),
            format!("training.zero_stage={}", l.zero_stage),
            format!(
                "training.activation_checkpointing={}",
                l.recompute == Recompute::Full
            ),
        ];
        if l.recompute == Recompute::Selective {
            // The selective set of a model without MLA (the tests' Mixtral).
            o.push("training.recompute_modules=[\"layernorm\", \"moe_act\"]".into());
        }
        if p.pp > 1 {
            o.push(format!(
                "strategy.0.pipeline_schedule={}",
                p.schedule.name()
            ));
        }
        if p.virtual_stages > 1 {
            o.push(format!("strategy.0.virtual_stages={}", p.virtual_stages));
        }
        o
    }

    #[test]
    fn each_shape_is_searched_without_with_selective_and_with_full_recomputation() {
        let s = scenario();
        let ls = layouts(&s, &s.strategies[0]);
        for l in &ls {
            // Its siblings: three recomputations × three ZeRO stages, the least work first.
            let siblings: Vec<&Layout> = ls.iter().filter(|o| o.sibling(l)).collect();
            assert_eq!(siblings.len(), 9, "{}", l.name());
            let sc = l.scenario(&s);
            match l.recompute {
                Recompute::None => {
                    assert!(!sc.training.activation_checkpointing);
                    assert!(sc.training.recompute_modules.is_empty());
                }
                Recompute::Selective => {
                    assert!(l.name().ends_with("-sr"), "{}", l.name());
                    assert!(!sc.training.activation_checkpointing);
                    // Mixtral has no MLA: the norms and the experts' activation.
                    assert_eq!(sc.training.recompute_modules, selective_modules(&s));
                    assert!(!sc.training.recompute_modules.mla_up_proj);
                }
                Recompute::Full => {
                    assert!(sc.training.activation_checkpointing);
                    assert!(sc.training.recompute_modules.is_empty());
                }
            }
            for o in siblings {
                if o.dominates(l) {
                    assert!(o.recompute <= l.recompute && o.zero_stage <= l.zero_stage);
                }
            }
        }
        // An MLA model recomputes its up-projections too.
        let mut dsv3 = s.clone();
        dsv3.model = crate::scenario::model::model_preset("deepseek-v3").unwrap();
        assert!(selective_modules(&dsv3).mla_up_proj);
    }

    #[test]
    fn every_layout_is_one_the_scenario_accepts_and_keeps_the_global_batch() {
        let s = scenario();
        let base = &s.strategies[0];
        let global = global_batch(&s, base);
        // 2 micro-batches on each of the own layout's 32 / pp = 16 data-parallel replicas.
        assert_eq!(global, 2 * 16);
        let ls = layouts(&s, base);
        let mut names: Vec<&str> = ls.iter().map(|l| l.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ls.len(), "unique names");
        let mut kinds = std::collections::HashSet::new();
        let mut etps = std::collections::BTreeSet::new();
        for l in &ls {
            let p = &l.strategy.parallel;
            let g = s.cluster.gpus();
            assert!(s.cluster.gpus_per_node.is_multiple_of(p.tp) && p.tp <= 8);
            assert!(p.pp <= s.model.layers && g.is_multiple_of(p.tp * p.pp));
            let stage = g / p.pp;
            assert!(s.model.experts.is_multiple_of(l.strategy.ep_size));
            assert!(stage.is_multiple_of(lcm(l.strategy.ep_size, p.tp)));
            assert_eq!(
                l.micro_batches * s.model.micro_batch as usize * g / (p.tp * p.pp),
                global,
                "{}: the global batch is kept",
                l.name()
            );
            assert!(Schedule::build(p.schedule, p.pp, p.virtual_stages, l.micro_batches).is_ok());
            // The scenario file with the layout's knobs resolves to the same strategy and scenario fields.
            let parsed = parse_scenario("mixtral-layouts.toml", MIXTRAL, &overrides(l))
                .unwrap_or_else(|e| panic!("{}: {e:?}", l.name()));
            let st = &parsed.strategies[0];
            assert_eq!(st.parallel, *p, "{}", l.name());
            assert_eq!(st.ep_size, l.strategy.ep_size);
            let mine = l.scenario(&s);
            assert_eq!(parsed.workload.micro_batches, mine.workload.micro_batches);
            assert_eq!(parsed.training, mine.training);
            kinds.insert((p.schedule, p.virtual_stages, p.pp > 1));
            etps.insert(p.etp);
            assert_eq!(l.name().contains("-etp"), p.etp > 1, "{}", l.name());
        }
        // Expert tensor parallelism inside a node: 1, 2, 4 and 8 all appear.
        assert_eq!(etps, [1, 2, 4, 8].into_iter().collect());
        // 1F1B, interleaved (v = 2) and DualPipe all appear; v = 4 needs 8 stages of 4 layers: never.
        for want in [
            (ScheduleKind::OneFOneB, 1, true),
            (ScheduleKind::Interleaved, 2, true),
            (ScheduleKind::DualPipe, 1, true),
        ] {
            assert!(kinds.contains(&want), "{want:?}");
        }
        assert!(!ls.iter().any(|l| l.strategy.parallel.virtual_stages == 4));
        // The scenario's own layout is among them.
        assert!(
            ls.iter().any(|l| l.name() == "tp1-pp2-ep8-1f1b-m2-z1"),
            "{names:?}"
        );
    }

    #[test]
    fn the_memory_bound_never_exceeds_the_simulated_memory() {
        let (s, o) = searched();
        let mut simulated = 0;
        for (l, fate) in &o.layouts {
            let bound = memory_lower_bound(&l.scenario(s), &l.strategy)
                .unwrap()
                .total_gib;
            if let Fate::Simulated(i) = fate {
                let r = &o.report.results[*i];
                assert_eq!(r.strategy, l.name());
                assert!(
                    bound <= r.memory_peak_gib + 1e-9,
                    "{}: bound {bound} > simulated {}",
                    l.name(),
                    r.memory_peak_gib
                );
                simulated += 1;
            }
        }
        let pruned_memory = o
            .pruned()
            .filter(|(_, p)| matches!(p, Pruned::Memory { .. }))
            .count();
        let dominated = o.pruned().count() - pruned_memory;
        let fits = o.report.results.iter().filter(|r| !r.oom).count();
        let oom = o.report.results.len() - fits;
        // The limit splits the layouts: some pruned, some simulated that fit, dominance at work.
        assert!(pruned_memory > 0 && fits > 0 && dominated > 0 && simulated > 0);
        eprintln!(
            "{} layouts: {simulated} simulated ({fits} fit, {oom} OOM), {pruned_memory} pruned by memory, \
             {dominated} dominated",
            o.layouts.len()
        );
        // A dominated layout's dominator was simulated and fits.
        for (_, p) in o.pruned() {
            if let Pruned::Dominated { by } = p {
                let r = o.report.results.iter().find(|r| &r.strategy == by).unwrap();
                assert!(!r.oom, "{by}");
            }
        }
    }

    #[test]
    fn the_search_does_at_least_as_well_as_the_scenarios_own_layout() {
        let (s, o) = searched();
        let own = simulate_scenario(s, &synthetic_routing(s), None, quiet());
        let own = &own.results[0];
        assert!(!own.oom);
        let (chosen, best) = chosen(o);
        assert!(
            best.tokens_per_s >= own.tokens_per_s * (1.0 - 1e-9),
            "{chosen}: {} < own {}",
            best.tokens_per_s,
            own.tokens_per_s
        );
        // The own layout, simulated by the search or dominated by a sibling that fits, matches the run.
        if let Some(r) = o
            .report
            .results
            .iter()
            .find(|r| r.strategy == "tp1-pp1-ep8-m2-z1")
        {
            assert_eq!(r.step_time_ms.mean, own.step_time_ms.mean);
        }
        // The plan of the winner carries its own layout's scenario fields.
        let i = o
            .report
            .results
            .iter()
            .position(|r| r.strategy == chosen)
            .unwrap();
        let plan = o.plan(i);
        let l = o.layout_of(i).unwrap();
        assert_eq!(plan.chosen, chosen);
        assert_eq!(
            plan.resolved_scenario.workload.micro_batches,
            l.micro_batches
        );
        assert_eq!(plan.resolved_scenario.strategies[0], l.strategy);
    }

    #[test]
    fn bounds_and_estimates_bound_the_simulated_layouts_and_prune_only_losers() {
        let (s, o) = searched();
        let metric = s.objective.metric;
        let topo = crate::topology::Topology::build(&s.cluster);
        let roofline = s.cluster.roofline();
        // Every simulated layout with an estimate: the estimate is no better on the objective, and its
        // memory no higher.
        let mut checked = 0;
        for ((l, fate), e) in o.layouts.iter().zip(&o.estimates) {
            if let (Fate::Simulated(i), Some(e)) = (fate, e) {
                let r = &o.report.results[*i];
                assert!(
                    e.score <= score(r, metric) + 1e-9 * score(r, metric).abs(),
                    "{}: estimate {} vs simulated {}",
                    l.name(),
                    e.score,
                    score(r, metric)
                );
                assert!(e.memory_gib <= r.memory_peak_gib + 1e-9, "{}", l.name());
                checked += 1;
            }
        }
        assert!(checked > 0);
        // The schedule's bound never exceeds the estimate it stands in for.
        let mut both = 0;
        for (b, e) in o.bounds.iter().zip(&o.estimates) {
            if let (Some(b), Some(e)) = (b, e) {
                assert!(b.step_ms <= e.step_ms * (1.0 + 1e-9), "{b:?} vs {e:?}");
                both += 1;
            }
        }
        assert!(both > 0);
        // Every layout pruned by the bound, simulated after all, loses to the chosen one.
        let (chosen, best) = chosen(o);
        let pruned: Vec<&Layout> = o
            .pruned()
            .filter(|(_, p)| matches!(p, Pruned::Bound { .. }))
            .map(|(l, _)| l)
            .collect();
        assert!(!pruned.is_empty(), "the bound prunes in this scenario");
        for l in pruned {
            let ls = l.scenario(s);
            let r = crate::runner::simulate_strategy(
                &ls,
                &l.strategy,
                &topo,
                &roofline,
                &synthetic_routing(&ls),
                quiet(),
            );
            assert!(
                exclusion(&r, s).is_some() || score(&r, metric) >= score(best, metric),
                "{} ({}) beats {chosen} ({})",
                l.name(),
                score(&r, metric),
                score(best, metric)
            );
        }
    }

    #[test]
    fn the_search_is_deterministic_across_thread_counts() {
        let (s, o) = searched();
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| search_all(s, &synthetic_routing(s), None, None, quiet()));
        assert_eq!(
            serde_json::to_string(&one.report).unwrap(),
            serde_json::to_string(&o.report).unwrap()
        );
        assert_eq!(one.layouts, o.layouts);
        assert_eq!(one.estimates, o.estimates);
    }

    #[test]
    fn reasons_compare_layouts_knob_by_knob() {
        assert_eq!(
            knob_differences(
                "tp1-pp16-ep64-dual-pipe-m32-z1-rc",
                "tp1-pp8-ep64-interleaved-v2-m16-z3"
            ),
            "pp16 vs pp8, dual-pipe vs interleaved-v2, m32 vs m16, z1 vs z3, rc vs no rc"
        );
        assert_eq!(
            knob_differences("tp2-pp1-ep8-m4-z1", "tp1-pp2-ep8-1f1b-m4-z1"),
            "tp2 vs tp1, pp1 vs pp2, no pipeline vs 1f1b"
        );
        assert_eq!(
            knob_differences("ep8", "tp1-pp1-ep8-m1-z1"),
            "ep8 vs tp1-pp1-ep8-m1-z1"
        );
    }

    #[test]
    fn the_best_configurations_are_explained_against_the_next() {
        let (s, o) = searched();
        let ranked = crate::search::ranking(&o.report, &o.scenario);
        let configs = explain(&o.report.results, &ranked, 3, s);
        assert_eq!(configs.len(), 3);
        assert_eq!(Some(configs[0].name.as_str()), o.report.chosen.as_deref());
        for (k, c) in configs.iter().enumerate() {
            assert!(
                (0.0..=1.0).contains(&c.bubble_fraction),
                "{}",
                c.bubble_fraction
            );
            // The reason names the knobs that differ and the margin (or the runner-up's exclusion).
            assert!(c.why.contains(" vs "), "{}", c.why);
            assert!(
                c.why.contains("better on the objective")
                    || c.why.contains("ties")
                    || c.why.contains("excluded"),
                "{}",
                c.why
            );
            if k > 0 && c.fits {
                assert!(configs[k - 1].tokens_per_s_per_gpu >= c.tokens_per_s_per_gpu);
            }
        }
    }
}
