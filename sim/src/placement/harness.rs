//! The evaluation harness: plan from a window of history, judge every later iteration on its own.
//!
//! For each workload (a [`LoadHistory`]): the first plan is made from the `history` iterations before
//! iteration `history`, then every `replan_every` iterations a re-plan is made from the `history` iterations
//! before it; each (later iteration, layer) is judged by the balancedness (mean / max GPU load) of the plan
//! in force on that iteration's actual loads. Three plans are judged on the same inputs:
//! - moesim's robust plan with an even token split over copies ([`super::robust`]), re-planned with moves
//!   priced in seconds ([`super::priced`]);
//! - the same placement with planned token shares ([`super::robust::plan_shares`]);
//! - EPLB from the mean load of the same window, re-planned from scratch every time (as it works);
//! - a hindsight plan: the robust planner given the very iterations it is judged on (no move costs). It is
//!   not a bound, but it shows how much any plan made from the past could gain on a workload;
//! - on synthetic workloads, an exact-state plan: the robust planner given the generator's own expected
//!   loads at the last iteration before the plan, bursts removed (no sampling noise, no transient spikes:
//!   the best a forecast from the past could know about the present). Where even it does not clear a
//!   margin over EPLB, a better forecast is not what is missing: the future moves in ways the present does
//!   not show (a burst, a hot spot that moves on), and only hedging or foresight could close the gap.
//!
//! Iteration loads come from per-token traces by continuous batching ([`batch_iterations`]) or as training
//! batches of whole documents ([`document_batches`]), or from the
//! synthetic counts workload with drift, bursts and rotation ([`synthetic_history`]). The simulator core
//! does no I/O: the caller loads the traces (see [`REAL_TRACES`] for the cases) and passes them in.

use super::eplb::eplb;
use super::forecast::{Forecast, forecast};
pub use super::iterations::{Batching, batch_iterations, document_batches};
pub use super::judged::Judged;
use super::plan_layers::{LoadHistory, evaluate as evaluate_plans, plan_layers_robust};
use super::priced::{DecisionWindow, Price};
use super::robust::{RobustOptions, Samples, fresh, plan_shares, replan_candidates};
use super::search::PlaceOptions;
use super::{LayerPlacement, balancedness, gpu_loads_with_shares};
use moesim_traces::{Dynamics, RoutingShape, RoutingSource, Skew, SyntheticRouting, SyntheticSpec};
use rayon::prelude::*;
use serde::Serialize;

/// How a workload is planned and judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setup {
    pub gpus: usize,
    pub slots_per_gpu: usize,
    pub gpus_per_node: usize,
    /// Iterations each plan is made from (the first plan is made at this iteration).
    pub history: usize,
    /// Iterations judged after the first plan (fewer if the workload ends first).
    pub judged: usize,
    /// Iterations between re-plans.
    pub replan_every: usize,
    /// What moving a copy and what imbalance cost, in seconds (its window is set at each re-plan to the
    /// iterations left to judge: a move pays until the end of the run).
    pub price: Price,
    /// Factor on the seconds of a moved copy in re-plan decisions (1: the price as it is).
    pub decision_move_scale: f64,
    /// Also judge a hindsight plan (one more plan per re-plan: off in the test suite).
    pub hindsight: bool,
    /// Over how many iterations a re-plan's gain is counted when it is priced.
    pub decision_window: DecisionWindow,
}

/// One workload's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub workload: String,
    pub gpus: usize,
    pub slots_per_gpu: usize,
    /// Iterations judged (each judged on every layer).
    pub judged_iterations: usize,
    pub layers: usize,
    pub ours: Judged,
    pub ours_shares: Judged,
    pub eplb: Judged,
    /// The robust planner with hindsight (planned on the judged iterations themselves).
    pub hindsight: Judged,
    /// The robust planner given the exact, burst-free expected loads of the last iteration before each plan
    /// (synthetic workloads only; NaN otherwise).
    pub exact_state: Judged,
    /// Expert copies moved by re-plans (all layers).
    pub ours_moved: usize,
    pub eplb_moved: usize,
    /// Re-plans after the first plan.
    pub replans: usize,
    /// Seconds under the harness's price: expert work and exchange of the most loaded GPU on every judged
    /// (iteration, layer) plus the seconds of every re-plan's moves (even split for moesim).
    pub ours_seconds: f64,
    pub eplb_seconds: f64,
}

impl Row {
    /// Whether moesim beats EPLB by `margin` in median and p10 balancedness (even split) and moves fewer
    /// copies (or both move none).
    pub fn beats_eplb(&self, margin: f64) -> bool {
        self.ours.median >= self.eplb.median + margin
            && self.ours.p10 >= self.eplb.p10 + margin
            && (self.ours_moved < self.eplb_moved || self.eplb_moved == 0)
    }
}

struct LayerResult {
    ours: Vec<f64>,
    shares: Vec<f64>,
    eplb: Vec<f64>,
    hindsight: Vec<f64>,
    exact_state: Vec<f64>,
    ours_moved: usize,
    eplb_moved: usize,
    ours_s: f64,
    eplb_s: f64,
}

/// Plans and judges every layer of `h` (see the module doc); `state`, when given, holds the generator's
/// exact burst-free expected loads of every iteration of `h` for the exact-state plan.
pub fn evaluate(workload: &str, h: &LoadHistory, state: Option<&LoadHistory>, s: &Setup) -> Row {
    let start = s.history.min(h.iterations.len());
    let end = (start + s.judged).min(h.iterations.len());
    let mut place = PlaceOptions::new(s.gpus, s.slots_per_gpu, s.gpus_per_node);
    place.move_gain = 0.0;
    let every = s.replan_every.max(1);
    let mut o = RobustOptions::new(place);
    // Each plan serves until the next re-plan: the half-life is chosen for that horizon.
    o.horizon = every;
    let plan_at: Vec<usize> = (start..end).step_by(every).collect();
    let layers: Vec<LayerResult> = (0..h.layers)
        .into_par_iter()
        .map(|layer| {
            let mut r = LayerResult {
                ours: Vec::new(),
                shares: Vec::new(),
                eplb: Vec::new(),
                hindsight: Vec::new(),
                exact_state: Vec::new(),
                ours_moved: 0,
                eplb_moved: 0,
                ours_s: 0.0,
                eplb_s: 0.0,
            };
            let mut prev: Option<(LayerPlacement, LayerPlacement)> = None;
            for &t in &plan_at {
                let past: Vec<&[f64]> = h.iterations[t.saturating_sub(s.history)..t]
                    .iter()
                    .map(|it| it[layer].as_slice())
                    .collect();
                let smp = o
                    .samples(&past, s.gpus)
                    .unwrap_or_else(|| Samples::uniform(h.experts, s.gpus));
                let ours = match &prev {
                    None => fresh(&smp, &o).placement,
                    Some((p, _)) => {
                        let price = Price {
                            window: s.decision_window.iterations(end - t, &smp),
                            seconds_per_copy: s.price.seconds_per_copy * s.decision_move_scale,
                            seconds_per_copy_local: s.price.seconds_per_copy_local
                                * s.decision_move_scale,
                            ..s.price
                        };
                        let c = replan_candidates(&smp, &o, p, price.swap_need());
                        price
                            .choose(p, &c)
                            .map_or_else(|| p.clone(), |c| c.placement.clone())
                    }
                };
                let shares = plan_shares(&ours, &smp, 4 * s.gpus * s.slots_per_gpu);
                let mean = if past.is_empty() {
                    vec![1.0; h.experts]
                } else {
                    forecast(&past, Forecast::MovingAverage { window: usize::MAX }).0
                };
                let base = eplb(&mean, s.gpus, s.slots_per_gpu);
                if let Some((po, pe)) = &prev {
                    r.ours_moved += ours.moves_from(po);
                    r.eplb_moved += base.moves_from(pe);
                    r.ours_s += s.price.move_s(po, &ours);
                    r.eplb_s += s.price.move_s(pe, &base);
                }
                let judged = &h.iterations[t..(t + every).min(end)];
                let future: Vec<&[f64]> = judged.iter().map(|it| it[layer].as_slice()).collect();
                let hindsight = s
                    .hindsight
                    .then(|| Samples::new(&future, s.gpus, o.max_samples, o.half_life))
                    .flatten()
                    .map(|smp| fresh(&smp, &o).placement);
                let exact = state
                    .filter(|_| t > 0)
                    .and_then(|st| {
                        Samples::new(&[&st.iterations[t - 1][layer]], s.gpus, 1, f64::INFINITY)
                    })
                    .map(|smp| fresh(&smp, &o).placement);
                for it in judged {
                    let loads = &it[layer];
                    if let Some(p) = &hindsight {
                        r.hindsight.push(balancedness(&p.gpu_loads(loads)));
                    }
                    if let Some(p) = &exact {
                        r.exact_state.push(balancedness(&p.gpu_loads(loads)));
                    }
                    let b = balancedness(&ours.gpu_loads(loads));
                    r.ours.push(b);
                    r.ours_s += s.price.seconds_per_unit / b;
                    r.shares
                        .push(balancedness(&gpu_loads_with_shares(&ours, &shares, loads)));
                    let b = balancedness(&base.gpu_loads(loads));
                    r.eplb.push(b);
                    r.eplb_s += s.price.seconds_per_unit / b;
                }
                prev = Some((ours, base));
            }
            r
        })
        .collect();
    let all = |f: fn(&LayerResult) -> &Vec<f64>| -> Vec<f64> {
        layers.iter().flat_map(|l| f(l).iter().copied()).collect()
    };
    Row {
        workload: workload.to_string(),
        gpus: s.gpus,
        slots_per_gpu: s.slots_per_gpu,
        judged_iterations: end - start,
        layers: h.layers,
        ours: Judged::of(all(|l| &l.ours)),
        ours_shares: Judged::of(all(|l| &l.shares)),
        eplb: Judged::of(all(|l| &l.eplb)),
        hindsight: Judged::of(all(|l| &l.hindsight)),
        exact_state: Judged::of(all(|l| &l.exact_state)),
        ours_moved: layers.iter().map(|l| l.ours_moved).sum(),
        eplb_moved: layers.iter().map(|l| l.eplb_moved).sum(),
        replans: plan_at.len().saturating_sub(1),
        ours_seconds: layers.iter().map(|l| l.ours_s).sum(),
        eplb_seconds: layers.iter().map(|l| l.eplb_s).sum(),
    }
}

/// The shape of a synthetic workload's iterations: `layers` layers of `experts` experts, top-`top_k`,
/// `tokens` tokens per iteration and layer, `iterations` long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticShape {
    pub layers: usize,
    pub experts: usize,
    pub top_k: usize,
    pub tokens: u64,
    pub iterations: usize,
}

impl SyntheticShape {
    fn routing(&self, spec: SyntheticSpec, dynamics: Dynamics) -> SyntheticRouting {
        let shape = RoutingShape {
            moe_layers: self.layers,
            experts: self.experts,
            top_k: self.top_k,
            ranks: 1,
            micro_batches: 1,
            tokens_per_rank: self.tokens,
        };
        SyntheticRouting::with_dynamics(shape, self.iterations, spec, dynamics)
    }
}

/// The generator's expected loads of a synthetic workload at every iteration, its bursts removed: the
/// drifted and rotated popularity that the sampled counts of [`synthetic_history`] scatter around, without
/// the sampling noise and without the one-iteration spikes (the bursts draw from their own random stream,
/// so the drift is the same with or without them).
pub fn synthetic_state(
    shape: SyntheticShape,
    spec: SyntheticSpec,
    dynamics: Dynamics,
) -> LoadHistory {
    let calm = Dynamics {
        burst_prob: 0.0,
        ..dynamics
    };
    let routing = shape.routing(spec, calm);
    LoadHistory {
        layers: shape.layers,
        experts: shape.experts,
        iterations: (0..shape.iterations)
            .map(|i| {
                (0..shape.layers)
                    .map(|l| {
                        let q = routing.pick_probability_at(i, l);
                        q.iter().map(|p| p * shape.tokens as f64).collect()
                    })
                    .collect()
            })
            .collect(),
    }
}

/// A synthetic counts workload's iteration loads (`tokens` routed tokens per iteration and layer).
pub fn synthetic_history(
    layers: usize,
    experts: usize,
    top_k: usize,
    tokens: u64,
    iterations: usize,
    spec: SyntheticSpec,
    dynamics: Dynamics,
) -> LoadHistory {
    let shape = SyntheticShape {
        layers,
        experts,
        top_k,
        tokens,
        iterations,
    };
    let routing = shape.routing(spec, dynamics);
    LoadHistory {
        layers,
        experts,
        iterations: (0..iterations)
            .into_par_iter()
            .map(|i| {
                let r = routing.iteration(i);
                (0..layers)
                    .map(|l| r.expert_loads(0, l).into_iter().map(|x| x as f64).collect())
                    .collect()
            })
            .collect(),
    }
}

/// A real per-token trace the harness runs on, relative to the traces folder (`../shared/traces`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RealTrace {
    pub name: &'static str,
    pub dir: &'static str,
    /// Importer name (`moesim_traces::import::Format`).
    pub format: &'static str,
    pub gpus: usize,
    pub slots_per_gpu: usize,
    pub gpus_per_node: usize,
    /// How its tokens become iterations.
    pub batching: Batching,
    /// The model's expert shape (published configs), for the price of moves and imbalance.
    pub expert: (u64, u64),
}

/// Every per-token trace of `../shared/traces` (the OLMoE folder holds totals only, with no iterations to
/// judge), batched as serving does; DeepSeek-V2-Lite also as training does. Continuous batching gives
/// DeepSeek-V2-Lite 161 iterations of up to 128 tokens and Mixtral (5 sequences) 32 iterations of up to 40
/// tokens; training batches give DeepSeek-V2-Lite 150 iterations of 16 whole prompts (about 1,000 tokens),
/// judged on prompts the plan never saw (Mixtral's 5 sequences are too few to split).
pub const REAL_TRACES: &[RealTrace] = &[
    RealTrace {
        name: "deepseek-v2-lite (real)",
        dir: "deepseek-v2-lite",
        format: "csv-tokens",
        gpus: 16,
        slots_per_gpu: 5,
        gpus_per_node: 8,
        batching: Batching::Continuous {
            concurrency: 16,
            tokens_per_step: 8,
        },
        // hidden_size 2048, moe_intermediate_size 1408.
        expert: (2048, 1408),
    },
    RealTrace {
        name: "deepseek-v2-lite training batches (real)",
        dir: "deepseek-v2-lite",
        format: "csv-tokens",
        gpus: 16,
        slots_per_gpu: 5,
        gpus_per_node: 8,
        batching: Batching::Documents {
            per_iteration: 16,
            iterations: 150,
            // The harness's first plan is made at iteration 50 (`setup_for`): everything it judges comes
            // from the other half of the prompts.
            unseen_from: 50,
            seed: 17,
        },
        expert: (2048, 1408),
    },
    RealTrace {
        name: "mixtral-8x7b (real)",
        dir: "mixtral-8x7b",
        format: "jsonl-tokens",
        gpus: 4,
        slots_per_gpu: 3,
        gpus_per_node: 4,
        batching: Batching::Continuous {
            concurrency: 8,
            tokens_per_step: 8,
        },
        expert: (4096, 14336),
    },
];

/// Tokens each GPU holds per training iteration in the harness's price (a common micro-batch: 4 sequences
/// of 1,024 tokens). The harness judges load *shares*; this only sizes what imbalance costs in seconds.
pub const PRICE_TOKENS_PER_GPU: u64 = 4096;

/// The harness's price: training (weights and 12 bytes of optimizer state per parameter move, the
/// scenario default) on DGX H100 nodes (datasheet roofline) for an EP group of `gpus` GPUs,
/// `PRICE_TOKENS_PER_GPU × top_k` routed tokens per GPU and layer, a window of `window` iterations.
pub fn training_price(
    expert: (u64, u64),
    top_k: usize,
    gpus: usize,
    gpus_per_node: usize,
    window: usize,
) -> Price {
    let cluster = crate::scenario::cluster::cluster_preset("dgx-h100").expect("shipped preset");
    let shape = super::priced::ExpertShape {
        d_model: expert.0,
        d_ff: expert.1,
        matrices: 3,
        dtype_bytes: 2,
    };
    Price::for_experts(
        shape,
        &cluster,
        &cluster.roofline(),
        gpus,
        gpus_per_node,
        PRICE_TOKENS_PER_GPU * top_k as u64,
        Some(12.0),
        window,
    )
}

/// How the suite re-plans: the knobs `moesim place --harness` exposes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuiteOptions {
    /// Factor on the seconds of a moved copy when deciding re-plans (0: moves are free, so every re-plan
    /// adopts the best candidate); the reported seconds keep the full price.
    pub move_scale: f64,
    /// Also judge the hindsight plan (one more plan per re-plan).
    pub hindsight: bool,
    /// Iterations between re-plans, for moesim and EPLB alike.
    pub replan_every: usize,
    /// Over how many iterations moesim counts what a re-plan saves.
    pub decision_window: DecisionWindow,
}

impl Default for SuiteOptions {
    /// The harness's protocol ([`setup_for`]): full price, no hindsight, re-plans every 10 iterations whose
    /// gain counts as long as the layer's pattern is expected to hold.
    fn default() -> Self {
        SuiteOptions {
            move_scale: 1.0,
            hindsight: false,
            replan_every: 10,
            decision_window: DecisionWindow::Persistence,
        }
    }
}

/// Runs the harness on every synthetic workload, and on `real` (case, history, top-k) loaded by the caller.
pub fn run_suite(real: &[(RealTrace, LoadHistory, usize)]) -> Vec<Row> {
    run_suite_with(real, &SuiteOptions::default())
}

/// [`run_suite`] re-planned as `o` says.
pub fn run_suite_with(real: &[(RealTrace, LoadHistory, usize)], o: &SuiteOptions) -> Vec<Row> {
    each_workload(real, |name, h, state, mut s| {
        s.decision_move_scale = o.move_scale;
        s.hindsight = o.hindsight;
        s.replan_every = o.replan_every.max(1);
        s.decision_window = o.decision_window;
        evaluate(name, h, state, &s)
    })
}

/// [`run_suite`] with re-plan decisions that count a move's gain over every iteration left in the run
/// ([`DecisionWindow::RestOfRun`]), as if adapting to the present lasted as long as the plan.
pub fn run_rest_of_run_suite(real: &[(RealTrace, LoadHistory, usize)]) -> Vec<Row> {
    run_suite_with(
        real,
        &SuiteOptions {
            decision_window: DecisionWindow::RestOfRun,
            ..SuiteOptions::default()
        },
    )
}

/// `judge` on every workload of the suite with its setup: the real traces given (no exact state), then
/// the synthetic workloads.
fn each_workload<R>(
    real: &[(RealTrace, LoadHistory, usize)],
    mut judge: impl FnMut(&str, &LoadHistory, Option<&LoadHistory>, Setup) -> R,
) -> Vec<R> {
    let mut rows = Vec::new();
    for (case, h, top_k) in real {
        let setup = setup_for(
            h.iterations.len(),
            case.gpus,
            case.slots_per_gpu,
            case.gpus_per_node,
            training_price(case.expert, *top_k, case.gpus, case.gpus_per_node, 10),
        );
        rows.push(judge(case.name, h, None, setup));
    }
    for w in synthetic_workloads() {
        rows.push(judge(&w.name, &w.history, Some(&w.state), w.setup()));
    }
    rows
}

/// Plans from half the iterations (at most 50) and judges the rest (at most 100), re-planning every 10.
pub fn setup_for(
    iterations: usize,
    gpus: usize,
    slots_per_gpu: usize,
    gpus_per_node: usize,
    price: Price,
) -> Setup {
    let history = (iterations / 2).clamp(1, 50);
    Setup {
        gpus,
        slots_per_gpu,
        gpus_per_node,
        history,
        judged: 100,
        replan_every: 10,
        price,
        decision_move_scale: 1.0,
        hindsight: false,
        decision_window: DecisionWindow::Persistence,
    }
}

/// A synthetic workload of the harness.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticWorkload {
    pub name: String,
    pub top_k: usize,
    /// Its sampled iteration loads.
    pub history: LoadHistory,
    /// The generator's exact burst-free expected loads ([`synthetic_state`]).
    pub state: LoadHistory,
    /// The dynamics it was generated with.
    pub dynamics: Dynamics,
    pub gpus: usize,
    pub slots_per_gpu: usize,
    pub gpus_per_node: usize,
}

impl SyntheticWorkload {
    /// The harness's setup for this workload ([`setup_for`], priced for DeepSeek-V2-Lite-sized experts).
    pub fn setup(&self) -> Setup {
        setup_for(
            self.history.iterations.len(),
            self.gpus,
            self.slots_per_gpu,
            self.gpus_per_node,
            training_price((2048, 1408), self.top_k, self.gpus, self.gpus_per_node, 10),
        )
    }
}

/// The synthetic workloads with drift and bursts.
pub fn synthetic_workloads() -> Vec<SyntheticWorkload> {
    let spec = |seed| SyntheticSpec {
        skew: Skew::LogNormal { sigma: 1.0 },
        seed,
        shuffle_per_layer: true,
    };
    let drift = Dynamics {
        drift_sigma: 0.5,
        drift_persistence: 0.95,
        ..Dynamics::default()
    };
    let bursts = Dynamics {
        drift_sigma: 0.2,
        burst_prob: 0.3,
        burst_factor: 4.0,
        ..Dynamics::default()
    };
    let rotation = Dynamics {
        drift_sigma: 0.2,
        rotate_every: 20,
        ..Dynamics::default()
    };
    let small = |top_k| SyntheticShape {
        layers: 8,
        experts: 64,
        top_k,
        tokens: 2048,
        iterations: 150,
    };
    let large = SyntheticShape {
        layers: 4,
        experts: 256,
        top_k: 8,
        tokens: 16384,
        iterations: 150,
    };
    // (name, shape, seed, dynamics, GPUs, slots per GPU). The 256-expert drift is also planned on 128
    // GPUs, above the 64 where the planner switches to its large-scale budget (8 samples, one κ).
    let cases = [
        (
            "synthetic drift (64 experts, top-6)",
            small(6),
            1,
            drift,
            16,
            5,
        ),
        (
            "synthetic bursts (64 experts, top-6)",
            small(6),
            2,
            bursts,
            16,
            5,
        ),
        (
            "synthetic rotation (64 experts, top-6)",
            small(6),
            3,
            rotation,
            16,
            5,
        ),
        (
            "synthetic drift (256 experts, top-8)",
            large,
            4,
            drift,
            64,
            5,
        ),
        (
            "synthetic drift (256 experts, top-8)",
            large,
            4,
            drift,
            128,
            3,
        ),
    ];
    type Generated = ((SyntheticShape, u64, Dynamics), (LoadHistory, LoadHistory));
    let mut generated: Vec<Generated> = Vec::new();
    cases
        .into_iter()
        .map(|(name, shape, seed, dynamics, gpus, slots_per_gpu)| {
            // Rows that share a workload share its (costly) generation.
            let key = (shape, seed, dynamics);
            let (history, state) = match generated.iter().find(|(k, _)| *k == key) {
                Some((_, g)) => g.clone(),
                None => {
                    let g = (
                        synthetic_history(
                            shape.layers,
                            shape.experts,
                            shape.top_k,
                            shape.tokens,
                            shape.iterations,
                            spec(seed),
                            dynamics,
                        ),
                        synthetic_state(shape, spec(seed), dynamics),
                    );
                    generated.push((key, g.clone()));
                    g
                }
            };
            SyntheticWorkload {
                name: name.into(),
                top_k: shape.top_k,
                history,
                state,
                dynamics,
                gpus,
                slots_per_gpu,
                gpus_per_node: 8,
            }
        })
        .collect()
}

/// One workload under the one-plan protocol ([`evaluate_one_plan`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnePlanRow {
    pub workload: String,
    pub gpus: usize,
    pub slots_per_gpu: usize,
    /// Iterations the plan was made from.
    pub history: usize,
    /// Iterations judged (each on every layer).
    pub judged_iterations: usize,
    pub layers: usize,
    /// moesim as `moesim place` plans by default: for a horizon as long as its history.
    pub ours: Judged,
    /// moesim planned for the next [`SHORT_HORIZON`] iterations only (the re-plan interval above).
    pub short_horizon: Judged,
    pub eplb: Judged,
}

/// The horizon of [`OnePlanRow::short_horizon`]: the harness's re-plan interval.
pub const SHORT_HORIZON: usize = 10;

/// The one-plan protocol: a single plan from the `s.history` iterations before iteration `s.history`,
/// judged on each of the `s.judged` iterations after it with no re-plan, as a user who plans once and
/// keeps the plan would see it. moesim plans as `moesim place` does (its default horizon: the history's
/// length) and, beside it, for a short horizon; EPLB from the window's mean.
pub fn evaluate_one_plan(workload: &str, h: &LoadHistory, s: &Setup) -> OnePlanRow {
    let start = s.history.min(h.iterations.len());
    let end = (start + s.judged).min(h.iterations.len());
    let window = LoadHistory {
        layers: h.layers,
        experts: h.experts,
        iterations: h.iterations[..end].to_vec(),
    };
    let options = |horizon: usize| {
        let mut o = RobustOptions::new(PlaceOptions::new(s.gpus, s.slots_per_gpu, s.gpus_per_node));
        o.horizon = horizon;
        o
    };
    let judge = |plans: &[super::plan_layers::RobustLayerPlan]| {
        let layer_plans: Vec<_> = plans.iter().map(|p| p.plan.clone()).collect();
        evaluate_plans(&window, &layer_plans, start)
            .unwrap_or((Judged::of(Vec::new()), Judged::of(Vec::new())))
    };
    let (ours, eplb) = judge(&plan_layers_robust(
        &window,
        &options(start),
        Some(start),
        false,
    ));
    let (short_horizon, _) = judge(&plan_layers_robust(
        &window,
        &options(SHORT_HORIZON),
        Some(start),
        false,
    ));
    OnePlanRow {
        workload: workload.to_string(),
        gpus: s.gpus,
        slots_per_gpu: s.slots_per_gpu,
        history: start,
        judged_iterations: end - start,
        layers: h.layers,
        ours,
        short_horizon,
        eplb,
    }
}

/// [`evaluate_one_plan`] on every real trace given and every synthetic workload, with the setups of
/// [`run_suite`].
pub fn run_one_plan_suite(real: &[(RealTrace, LoadHistory, usize)]) -> Vec<OnePlanRow> {
    each_workload(real, |name, h, _, s| evaluate_one_plan(name, h, &s))
}

/// The one-plan table (Markdown).
pub fn one_plan_table(rows: &[OnePlanRow]) -> String {
    let mut s = String::from(
        "| workload | GPUs × slots | planned from | judged | median moesim / short horizon / EPLB | p10 moesim / short horizon / EPLB |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{} {} it | {} | {} | {} |\n",
            lead(&r.workload, r.gpus, r.slots_per_gpu),
            r.history,
            judged_cell(r.judged_iterations, r.layers),
            three([&r.ours, &r.short_horizon, &r.eplb], |j| j.median),
            three([&r.ours, &r.short_horizon, &r.eplb], |j| j.p10),
        ));
    }
    s
}

/// A table row's first cells: "| workload | GPUs × slots |".
fn lead(workload: &str, gpus: usize, slots_per_gpu: usize) -> String {
    format!("| {workload} | {gpus} × {slots_per_gpu} |")
}

/// What a row judged: "N it × L layers".
fn judged_cell(iterations: usize, layers: usize) -> String {
    format!("{iterations} it × {layers} layers")
}

/// One figure of three judged plans, "a / b / c".
fn three(plans: [&Judged; 3], figure: fn(&Judged) -> f64) -> String {
    let [a, b, c] = plans.map(figure);
    format!("{a:.3} / {b:.3} / {c:.3}")
}

/// A judged plan's "median / p10", or a dash where it was not judged.
fn pair(j: &Judged) -> String {
    if j.median.is_nan() {
        "—".to_string()
    } else {
        format!("{:.3} / {:.3}", j.median, j.p10)
    }
}

/// The harness table (Markdown).
pub fn table(rows: &[Row], margin: f64) -> String {
    let mut s = String::from(
        "| workload | GPUs × slots | judged | median moesim / shares / EPLB | p10 moesim / shares / EPLB | hindsight median / p10 | exact-state median / p10 | copies moved moesim / EPLB | priced seconds moesim / EPLB | beats EPLB by ≥ margin |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{} {} | {} | {} | {} | {} | {} / {} | {:.3} / {:.3} | {} |\n",
            lead(&r.workload, r.gpus, r.slots_per_gpu),
            judged_cell(r.judged_iterations, r.layers),
            three([&r.ours, &r.ours_shares, &r.eplb], |j| j.median),
            three([&r.ours, &r.ours_shares, &r.eplb], |j| j.p10),
            pair(&r.hindsight),
            pair(&r.exact_state),
            r.ours_moved,
            r.eplb_moved,
            r.ours_seconds,
            r.eplb_seconds,
            if r.beats_eplb(margin) { "yes" } else { "no" },
        ));
    }
    s
}

/// The two decision windows side by side (Markdown): `rest` as [`run_rest_of_run_suite`] decides,
/// `persistence` as [`run_suite`] does, on the same workloads in the same order; EPLB from the first.
pub fn decision_window_table(rest: &[Row], persistence: &[Row]) -> String {
    let mut s = String::from(
        "| workload | GPUs × slots | median rest of run / persistence / EPLB | p10 rest of run / persistence / EPLB | copies moved rest of run / persistence / EPLB | priced seconds rest of run / persistence / EPLB |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for (r, p) in rest.iter().zip(persistence) {
        s.push_str(&format!(
            "{} {} | {} | {} / {} / {} | {:.3} / {:.3} / {:.3} |\n",
            lead(&r.workload, r.gpus, r.slots_per_gpu),
            three([&r.ours, &p.ours, &r.eplb], |j| j.median),
            three([&r.ours, &p.ours, &r.eplb], |j| j.p10),
            r.ours_moved,
            p.ours_moved,
            r.eplb_moved,
            r.ours_seconds,
            p.ours_seconds,
            r.eplb_seconds,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_state_is_what_sampled_counts_scatter_around_without_their_bursts() {
        let shape = SyntheticShape {
            layers: 2,
            experts: 16,
            top_k: 2,
            tokens: 1_000_000,
            iterations: 4,
        };
        let spec = SyntheticSpec {
            skew: Skew::LogNormal { sigma: 1.0 },
            seed: 5,
            shuffle_per_layer: true,
        };
        let calm = Dynamics {
            drift_sigma: 0.3,
            ..Dynamics::default()
        };
        let state = synthetic_state(shape, spec, calm);
        let sampled = |d| {
            let SyntheticShape {
                layers,
                experts,
                top_k,
                tokens,
                iterations,
            } = shape;
            synthetic_history(layers, experts, top_k, tokens, iterations, spec, d)
        };
        let calm_counts = sampled(calm);
        // Binomial noise of a million tokens: every burst-free sampled count sits within 1 % of its expected
        // load (plus 300 tokens for the coldest experts); the drift (σ 0.3) would move it far more.
        for (it, (st, h)) in state
            .iterations
            .iter()
            .zip(&calm_counts.iterations)
            .enumerate()
        {
            for (l, (st, h)) in st.iter().zip(h).enumerate() {
                let total: f64 = st.iter().sum();
                assert!((total - 2e6).abs() < 1e-6, "it {it} layer {l}: {total}");
                for (x, y) in st.iter().zip(h) {
                    assert!(
                        (x - y).abs() <= 0.01 * x + 300.0,
                        "it {it} layer {l}: {x} vs {y}"
                    );
                }
            }
        }
        // With a burst in every (iteration, layer), the state stays the same (the bursts have their own random
        // stream) and exactly one expert's share of the sampled count rises well above its expected share.
        let bursty = Dynamics {
            burst_prob: 1.0,
            burst_factor: 4.0,
            ..calm
        };
        assert_eq!(synthetic_state(shape, spec, bursty), state);
        let burst_counts = sampled(bursty);
        for (st, h) in state.iterations.iter().zip(&burst_counts.iterations) {
            for (st, h) in st.iter().zip(h) {
                let (ts, th): (f64, f64) = (st.iter().sum(), h.iter().sum());
                let risen = st
                    .iter()
                    .zip(h)
                    .filter(|(x, y)| *y / th > 1.5 * *x / ts)
                    .count();
                assert_eq!(risen, 1);
            }
        }
    }

    #[test]
    fn judged_quantiles_interpolate() {
        let j = Judged::of((1..=11).map(|x| x as f64).collect());
        assert_eq!(j.median, 6.0);
        assert_eq!(j.p10, 2.0);
        assert_eq!(j.mean, 6.0);
    }
}
