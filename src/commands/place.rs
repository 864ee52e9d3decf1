//! `moesim place`: expert placement with replication for existing runtimes, beside the EPLB baseline.

use crate::output;
use miette::miette;
use moesim_sim::placement::burst_ceiling::burst_ceilings;
use moesim_sim::placement::forecast::Forecast;
use moesim_sim::placement::harness::{
    REAL_TRACES, SHORT_HORIZON, SuiteOptions, decision_window_table, one_plan_table,
    run_one_plan_suite, run_suite_with, table,
};
use moesim_sim::placement::plan_layers::{
    LayerPlan, LoadHistory, ModelPlaceOptions, evaluate, plan_layers, plan_layers_robust,
};
use moesim_sim::placement::priced::DecisionWindow;
use moesim_sim::placement::robust::RobustOptions;
use moesim_sim::placement::rotation_ceiling::rotation_ceilings;
use moesim_sim::placement::search::PlaceOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PlaceArgs {
    /// Load history: long CSV `iteration,layer,expert,tokens`, one CSV row per layer of per-expert tokens,
    /// or a load-matrix JSON as `moesim trace import --from load-matrix` reads it (a sample:
    /// scenarios/data/olmoe/olmoe_expert_counts_c4.json).
    #[arg(long, required_unless_present = "harness")]
    pub loads: Option<PathBuf>,
    /// GPUs the experts are placed on.
    #[arg(long, required_unless_present = "harness")]
    pub gpus: Option<usize>,
    /// Expert slots per GPU and layer (copies included).
    #[arg(long, required_unless_present = "harness")]
    pub slots_per_gpu: Option<usize>,
    /// Nodes the GPUs are spread over (copies of an expert are spread over nodes).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Iterations of history the plan is made from (the last ones; default: the whole history): the
    /// forecast objective's moving average, the robust objective's memory.
    #[arg(long)]
    pub window: Option<usize>,
    /// Past iterations the planner replays one by one (forecast objective: default 16 up to 64 GPUs,
    /// else 0; robust objective: default 64 up to 64 GPUs, else 8, the older ones setting each expert's
    /// level only).
    #[arg(long)]
    pub history_samples: Option<usize>,
    /// Plan on iterations before this one and report balancedness on the rest.
    #[arg(long)]
    pub evaluate_from: Option<usize>,
    /// Planner objective: `robust` (good across the history's iterations) or `forecast` (the mean load).
    #[arg(long, value_enum, default_value_t = Objective::Robust)]
    pub objective: Objective,
    /// Iterations the plan will serve (until the next re-plan): the robust objective weighs the history with
    /// the half-life that best predicted this horizon in a backtest over the history itself; a history shorter
    /// than 2 × horizon + 2 iterations keeps the default half-life (32 iterations).
    /// Default: the iterations --evaluate-from judges, else as many as the history holds (a plan is assumed
    /// to serve about as long as the history it was made from).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// Also plan token shares per copy (for runtimes that can split an expert's tokens unevenly over its
    /// copies); JSON gains `gpu_shares` per layer. Robust objective only.
    #[arg(long)]
    pub shares: bool,
    /// Run the evaluation harness instead: every per-token trace under --traces and the synthetic workloads
    /// with drift and bursts, moesim against EPLB on later iterations; prints the table.
    #[arg(long, conflicts_with_all = ["loads", "gpus", "slots_per_gpu", "evaluate_from", "out"])]
    pub harness: bool,
    /// --harness: factor on the seconds of a moved copy in re-plan decisions (0: free moves); the table's
    /// seconds keep the full price.
    #[arg(long, requires = "harness", default_value_t = 1.0)]
    pub move_price_scale: f64,
    /// --harness: iterations between re-plans (moesim and EPLB alike).
    #[arg(long, requires = "harness", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub replan_every: u64,
    /// --harness: over how many iterations moesim counts what a re-plan saves (the first table; the
    /// last table shows both).
    #[arg(long, requires = "harness", value_enum, default_value_t = GainWindow::Persistence)]
    pub decision_window: GainWindow,
    /// Traces folder for --harness (default: $MOESIM_SHARED_TRACES, else ../shared/traces).
    #[arg(long, requires = "harness")]
    pub traces: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `--decision-window`: [`DecisionWindow`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GainWindow {
    /// Every iteration left in the run.
    RestOfRun,
    /// As long as the layer's pattern is expected to hold (its backtested half-life).
    Persistence,
}

impl GainWindow {
    fn window(self) -> DecisionWindow {
        match self {
            GainWindow::RestOfRun => DecisionWindow::RestOfRun,
            GainWindow::Persistence => DecisionWindow::Persistence,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            GainWindow::RestOfRun => "the rest of the run",
            GainWindow::Persistence => "as long as the layer's pattern persists",
        }
    }
}

/// Planned token shares of one layer: `shares[g][i]` for the copy in GPU g's slot i.
type Shares = Vec<Vec<f64>>;

/// What the planner optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// The expected maximum GPU load over the history's iterations (`placement::robust`).
    Robust,
    /// The maximum GPU load of the forecast mean, refined on recent iterations (`placement::search`).
    Forecast,
}

pub fn run(a: &PlaceArgs) -> miette::Result<ExitCode> {
    if !a.move_price_scale.is_finite() || a.move_price_scale < 0.0 {
        return Err(miette!(
            "--move-price-scale {}: expected a finite value ≥ 0",
            a.move_price_scale
        ));
    }
    if a.horizon == Some(0) {
        return Err(miette!(
            "--horizon 0: expected the number of iterations the plan serves (at least 1)"
        ));
    }
    if a.harness {
        return harness(a);
    }
    let (Some(loads), Some(gpus), Some(slots_per_gpu)) = (&a.loads, a.gpus, a.slots_per_gpu) else {
        return Err(miette!("--loads, --gpus and --slots-per-gpu are required"));
    };
    let a = Resolved {
        loads,
        gpus,
        slots_per_gpu,
        args: a,
    };
    place(&a)
}

/// The arguments of a placement run, required ones present.
struct Resolved<'a> {
    loads: &'a Path,
    gpus: usize,
    slots_per_gpu: usize,
    args: &'a PlaceArgs,
}

impl std::ops::Deref for Resolved<'_> {
    type Target = PlaceArgs;
    fn deref(&self) -> &PlaceArgs {
        self.args
    }
}

fn place(a: &Resolved) -> miette::Result<ExitCode> {
    if a.gpus == 0 || a.slots_per_gpu == 0 || a.nodes == 0 {
        return Err(miette!(
            "--gpus, --slots-per-gpu and --nodes must be at least 1"
        ));
    }
    if a.gpus > MAX_GPUS {
        return Err(miette!(
            "--gpus {}: expected at most {MAX_GPUS} (placement work grows with GPUs × slots)",
            a.gpus
        ));
    }
    let (h, layer_ids) = read_loads(a.loads)?;
    if !a.gpus.is_multiple_of(a.nodes) {
        return Err(miette!(
            "--gpus {} is not a multiple of --nodes {}",
            a.gpus,
            a.nodes
        ));
    }
    if h.experts > a.gpus.saturating_mul(a.slots_per_gpu) {
        return Err(miette!(
            "{}: {} experts do not fit in {} GPUs × {} slots; expected --slots-per-gpu ≥ {}",
            a.loads.display(),
            h.experts,
            a.gpus,
            a.slots_per_gpu,
            h.experts.div_ceil(a.gpus)
        ));
    }
    if a.slots_per_gpu > h.experts {
        return Err(miette!(
            "--slots-per-gpu {} exceeds the {} experts of {}: a GPU would hold two copies of one expert",
            a.slots_per_gpu,
            h.experts,
            a.loads.display()
        ));
    }
    if let Some(f) = a.evaluate_from
        && (f == 0 || f >= h.iterations.len())
    {
        return Err(miette!(
            "--evaluate-from {f}: expected 1..{} (the history has {} iterations)",
            h.iterations.len(),
            h.iterations.len()
        ));
    }
    if a.shares && a.objective != Objective::Robust {
        return Err(miette!("--shares needs --objective robust"));
    }
    let place_options = PlaceOptions::new(a.gpus, a.slots_per_gpu, a.gpus / a.nodes);
    // The iterations the plan serves (robust objective): unless told, those --evaluate-from judges, or as
    // many as the history holds. A short default horizon would pick a short memory that suits the next few
    // iterations and drifts off over a plan's real service (measured in docs/placement.md).
    let horizon = a.horizon.unwrap_or(match a.evaluate_from {
        Some(f) => h.iterations.len() - f,
        None => h.iterations.len(),
    });
    let (plans, shares): (Vec<LayerPlan>, Vec<Option<Shares>>) = match a.objective {
        Objective::Forecast => {
            let o = ModelPlaceOptions {
                place: place_options,
                forecast: Forecast::MovingAverage {
                    window: a.window.unwrap_or(usize::MAX).max(1),
                },
                history_samples: a
                    .history_samples
                    .unwrap_or(if a.gpus <= 64 { 16 } else { 0 }),
            };
            let plans = plan_layers(&h, &o, a.evaluate_from);
            let none = vec![None; plans.len()];
            (plans, none)
        }
        Objective::Robust => {
            let mut o = RobustOptions::new(place_options);
            if let Some(n) = a.history_samples {
                o.max_samples = n.max(1);
            }
            if let Some(n) = a.window {
                o.window = n.max(1);
            }
            // The half-life is read off the history for the iterations the plan will serve.
            o.horizon = horizon;
            plan_layers_robust(&h, &o, a.evaluate_from, a.shares)
                .into_iter()
                .map(|p| (p.plan, p.shares))
                .unzip()
        }
    };
    let overall = |f: fn(&moesim_sim::placement::plan_layers::LayerPlan) -> f64| {
        plans.iter().map(f).sum::<f64>() / plans.len() as f64
    };
    let later = a.evaluate_from.and_then(|f| evaluate(&h, &plans, f));
    let duplicates = plans.iter().filter(|p| p.baseline.has_duplicates()).count();
    let json = serde_json::json!({
        "gpus": a.gpus,
        "slots_per_gpu": a.slots_per_gpu,
        "objective": match a.objective { Objective::Robust => "robust", Objective::Forecast => "forecast" },
        "horizon": (a.objective == Objective::Robust).then_some(horizon),
        "layers": plans.iter().zip(&shares).map(|(p, sh)| {
            let mut l = serde_json::json!({
                "layer": layer_ids.get(p.layer).copied().unwrap_or(p.layer),
                "gpu_experts": p.placement.gpu_experts,
                "balancedness": p.balancedness,
                "eplb_balancedness": p.baseline_balancedness,
            });
            if let Some(sh) = sh {
                l["gpu_shares"] = serde_json::json!(sh);
            }
            l
        }).collect::<Vec<_>>(),
        "balancedness": overall(|p| p.balancedness),
        "eplb_balancedness": overall(|p| p.baseline_balancedness),
        "eplb_layers_with_duplicates": duplicates,
        "evaluation": later.map(|(ours, base)| serde_json::json!({
            "from_iteration": a.evaluate_from,
            "balancedness": ours.mean, "eplb_balancedness": base.mean,
            "median": ours.median, "eplb_median": base.median,
            "p10": ours.p10, "eplb_p10": base.p10 })),
        "token_split": if a.shares {
            "planned shares: gpu_shares[g][i] of expert gpu_experts[g][i]'s tokens go to its copy on GPU g"
        } else {
            "even over an expert's copies"
        },
    });
    let text = serde_json::to_string_pretty(&json).expect("serialisable");
    if let Some(out) = &a.out {
        output::write_atomic(out, text.as_bytes())?;
    }
    if a.json {
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} layers × {} experts on {} GPUs × {} slots ({} node(s)); experts per GPU (a runtime splits an \
         expert's tokens evenly over its copies):",
        h.layers, h.experts, a.gpus, a.slots_per_gpu, a.nodes
    );
    // With one iteration (a totals file) there is no history to weigh, and nothing to say.
    if a.objective == Objective::Robust && h.iterations.len() > 1 {
        println!(
            "(planned to serve {horizon} iteration(s){}; --horizon sets it)",
            if a.horizon.is_some() {
                ""
            } else if a.evaluate_from.is_some() {
                ": the ones --evaluate-from judges"
            } else {
                ": as many as the history holds"
            }
        );
    }
    for p in &plans {
        let gpus: Vec<String> = p
            .placement
            .gpu_experts
            .iter()
            .enumerate()
            .map(|(g, es)| {
                let es: Vec<String> = es.iter().map(|e| e.to_string()).collect();
                format!("{g}:[{}]", es.join(","))
            })
            .collect();
        println!(
            "layer {}: {}",
            layer_ids.get(p.layer).copied().unwrap_or(p.layer),
            gpus.join(" ")
        );
    }
    println!("\nbalancedness = mean / max GPU load, on the forecast");
    println!("{:>5}  {:>8}  {:>8}", "layer", "moesim", "EPLB");
    for p in &plans {
        println!(
            "{:>5}  {:>8.3}  {:>8.3}{}",
            layer_ids.get(p.layer).copied().unwrap_or(p.layer),
            p.balancedness,
            p.baseline_balancedness,
            if p.baseline.has_duplicates() {
                "  (EPLB puts two copies of an expert on one GPU)"
            } else {
                ""
            }
        );
    }
    println!(
        "{:>5}  {:>8.3}  {:>8.3}",
        "all",
        overall(|p| p.balancedness),
        overall(|p| p.baseline_balancedness)
    );
    if let Some((ours, base)) = later {
        println!(
            "on iterations {}..{} (not seen when planning), each (iteration, layer) judged on its own:",
            a.evaluate_from.unwrap_or(0),
            h.iterations.len()
        );
        println!("{:>8}  {:>8}  {:>8}", "", "moesim", "EPLB");
        for (what, o, b) in [
            ("mean", ours.mean, base.mean),
            ("median", ours.median, base.median),
            ("p10", ours.p10, base.p10),
        ] {
            println!("{what:>8}  {o:>8.3}  {b:>8.3}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Margin by which moesim must beat EPLB in median and p10 balancedness (issue 17).
const MARGIN: f64 = 0.03;

/// `place --harness`: every per-token trace found and the synthetic workloads, moesim against EPLB.
fn harness(a: &PlaceArgs) -> miette::Result<ExitCode> {
    let root = a
        .traces
        .clone()
        .or_else(|| std::env::var_os("MOESIM_SHARED_TRACES").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/traces"));
    let mut real = Vec::new();
    let mut missing = Vec::new();
    for case in REAL_TRACES {
        let dir = root.join(case.dir);
        if !dir.is_dir() {
            missing.push(dir);
            continue;
        }
        let format: moesim_traces::import::Format =
            case.format.parse().map_err(|e: String| miette!(e))?;
        let trace = moesim_traces::import::import(format, &dir, &Default::default())
            .map_err(|e| miette!("{}: {e}", dir.display()))?;
        let moesim_traces::Trace::Tokens(t) = trace else {
            return Err(miette!("{}: expected a per-token trace", dir.display()));
        };
        let h = case.batching.iterations(&t);
        real.push((*case, h, t.meta.top_k));
    }
    let chosen = SuiteOptions {
        move_scale: a.move_price_scale,
        hindsight: true,
        replan_every: a.replan_every as usize,
        decision_window: a.decision_window.window(),
    };
    let rows = run_suite_with(&real, &chosen);
    // The same protocol with the other decision window, for the comparison table.
    let other = SuiteOptions {
        hindsight: false,
        decision_window: match a.decision_window {
            GainWindow::RestOfRun => DecisionWindow::Persistence,
            GainWindow::Persistence => DecisionWindow::RestOfRun,
        },
        ..chosen
    };
    let other_rows = run_suite_with(&real, &other);
    let (rest, persistence) = match a.decision_window {
        GainWindow::RestOfRun => (&rows, &other_rows),
        GainWindow::Persistence => (&other_rows, &rows),
    };
    let one_plan = run_one_plan_suite(&real);
    let ceilings = burst_ceilings();
    let rotation = rotation_ceilings();
    if a.json {
        let json = serde_json::json!({
            "replanned": rows,
            "replanned_rest_of_run": rest,
            "replanned_persistence": persistence,
            "one_plan": one_plan,
            "burst_ceiling": ceilings,
            "rotation_ceiling": rotation,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("serialisable")
        );
    } else {
        println!(
            "Plan from up to 50 iterations of history, judge each later iteration and layer (balancedness = mean / max GPU load); re-plan every {} iterations, moves priced in seconds (training on DGX H100, {} tokens per GPU; move seconds × {} in decisions), a re-plan's gain counted over {}",
            a.replan_every,
            moesim_sim::placement::harness::PRICE_TOKENS_PER_GPU,
            a.move_price_scale,
            a.decision_window.describe()
        );
        print!("{}", table(&rows, MARGIN));
        println!(
            "\nOne plan, no re-plan: planned from the same first window, judged on each later iteration and layer; moesim as `moesim place` plans by default (horizon = the history's length) and planned for the next {SHORT_HORIZON} iterations only"
        );
        print!("{}", one_plan_table(&one_plan));
        println!(
            "\nThe same re-plans (every {} iterations) with a move's gain counted over the rest of the run or only as long as the pattern it adapts to is expected to hold (persistence, from each layer's backtested half-life); EPLB as above",
            a.replan_every
        );
        print!("{}", decision_window_table(rest, persistence));
        for c in &ceilings {
            println!(
                "\n{}: plans given the generator's exact burst-free state reach median / p10 {:.3} / {:.3}; given the state and the burst law itself {:.3} / {:.3}; EPLB from the history's mean {:.3} / {:.3} (fresh plans every {} iterations, moves free)",
                c.workload,
                c.exact_state.median,
                c.exact_state.p10,
                c.burst_law.median,
                c.burst_law.p10,
                c.eplb.median,
                c.eplb.p10,
                c.replan_every
            );
        }
        for c in &rotation {
            println!(
                "\n{}: plans given the generator's exact state reach median / p10 {:.3} / {:.3}; given the state, when the hot spot moves next and that it moves to an unknown place {:.3} / {:.3}; told where it moves {:.3} / {:.3}; EPLB from the history's mean {:.3} / {:.3} (fresh plans every {} iterations, moves free)",
                c.workload,
                c.exact_state.median,
                c.exact_state.p10,
                c.unknown_place.median,
                c.unknown_place.p10,
                c.known_place.median,
                c.known_place.p10,
                c.eplb.median,
                c.eplb.p10,
                c.replan_every
            );
        }
    }
    for dir in &missing {
        eprintln!("not run: {} not found", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a load history; errors name the file, line and what was expected.
/// Largest `--gpus`: placement work grows with GPUs × slots per layer.
const MAX_GPUS: usize = 1 << 14;

/// The load history and the layer ids as the file names them.
fn read_loads(path: &Path) -> miette::Result<(LoadHistory, Vec<usize>)> {
    moesim_reports::place_loads::read_loads(path).map_err(|e| miette!("{e}"))
}
