//! A loaded scenario: its text, the `--set` overrides the knobs added, the parsed scenario, its routing and
//! the simulated report. Loading is one plain function so the worker thread and tests call the same code.

use crate::workload::{WorkloadSummary, summarize};
use moesim_calibrate::{CostModel, MeasuredCost, Profile, profiles};
use moesim_sim::Scenario;
use moesim_sim::plan::choose;
use moesim_sim::result::SimulationReport;
use moesim_sim::runner::{RunOptions, simulate_scenario_with_tokens, synthetic_routing};
use moesim_sim::scenario::file::StrategyKind;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::offload::tokens::TokenRouting;
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::{RoutingSource, Trace, TraceRouting};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the worker needs to (re-)simulate: the file, its text and the overrides on top of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub path: PathBuf,
    pub text: String,
    /// `KEY=VALUE` overrides, as `moesim --set` takes them.
    pub overrides: Vec<String>,
}

impl Request {
    /// Reads the scenario file; an unreadable file is an error message, not a panic.
    pub fn from_file(path: &Path) -> Result<Request, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
        Ok(Request {
            path: path.to_path_buf(),
            text,
            overrides: Vec::new(),
        })
    }
}

/// A simulated scenario, everything the views show.
pub struct Session {
    pub request: Request,
    pub scenario: Scenario,
    /// The routing the report was simulated on, kept for per-iteration timelines and trace statistics.
    pub routing: Arc<dyn RoutingSource>,
    /// The trace the scenario names, read once, for the Trace view's cache curves.
    pub trace: Option<Arc<Trace>>,
    /// The measured cost model of `cluster.profile`, if the scenario names one (the roofline otherwise).
    pub cost: Option<Arc<MeasuredCost>>,
    pub report: SimulationReport,
    /// Index of the strategy `plan` would choose (`None`: every strategy runs out of memory).
    pub chosen: Option<usize>,
    /// The Trace view's statistics (an error when the trace cannot be analysed).
    pub workload: Result<WorkloadSummary, String>,
}

/// How far a load has got: simulated iterations (all strategies) out of the total, for the status line.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicUsize,
    pub total: AtomicUsize,
}

/// Parses, loads the routing and simulates every strategy, counting iterations into `progress`. Errors
/// come back as text for the UI to show.
pub fn load(request: Request, progress: &Progress) -> Result<Session, String> {
    let name = request.path.display().to_string();
    let scenario = parse_scenario(&name, &request.text, &request.overrides)
        .map_err(|e| describe_scenario_error(&e))?;
    let trace_path = scenario
        .workload
        .trace
        .as_ref()
        .map(|t| request.path.parent().unwrap_or(Path::new(".")).join(t));
    let trace = trace_path
        .as_ref()
        .map(|p| read_trace(p).map(Arc::new))
        .transpose()?;
    let synthetic = synthetic_routing(&scenario);
    let offload_only = scenario
        .strategies
        .iter()
        .all(|st| st.kind == StrategyKind::Offload);
    let routing: Arc<dyn RoutingSource> = match (&trace, &trace_path) {
        (Some(t), Some(p)) if !offload_only => Arc::new(
            TraceRouting::new((**t).clone(), p, synthetic.shape(), synthetic.iterations())
                .map_err(|e| e.to_string())?,
        ),
        _ => Arc::new(synthetic),
    };
    let tokens = match trace.as_deref() {
        Some(Trace::Tokens(tt))
            if scenario
                .strategies
                .iter()
                .any(|st| st.kind == StrategyKind::Offload) =>
        {
            Some(TokenRouting::from_trace(tt))
        }
        _ => None,
    };
    let cost = cost_model(&request.path, &scenario)?.map(Arc::new);
    progress.total.store(
        scenario.workload.iterations * scenario.strategies.len(),
        Ordering::Relaxed,
    );
    let tick = || {
        progress.done.fetch_add(1, Ordering::Relaxed);
    };
    let opts = RunOptions {
        timing: false,
        progress: Some(&tick),
    };
    let mut report = simulate_scenario_with_tokens(
        &scenario,
        routing.as_ref(),
        tokens.as_ref(),
        cost.as_deref().map(|c| c as &dyn CostModel),
        opts,
    )
    .map_err(|e| format!("{name}: {e}"))?;
    let chosen = choose(&report, &scenario);
    report.chosen = chosen.map(|i| report.results[i].strategy.clone());
    let source = match &trace_path {
        Some(p) => format!("trace {}", crate::app::file_name(p)),
        None => routing.describe(),
    };
    let workload = summarize(
        routing.as_ref(),
        trace.as_deref(),
        scenario.cluster.gpus(),
        source,
    );
    Ok(Session {
        cost,
        workload,
        request,
        scenario,
        routing,
        trace,
        report,
        chosen,
    })
}

/// The error with its help line, one message the UI can wrap.
fn describe_scenario_error(e: &moesim_sim::scenario::ScenarioError) -> String {
    use miette::Diagnostic;
    match e.help() {
        Some(h) => format!("{e}\nhelp: {h}"),
        None => e.to_string(),
    }
}

/// A native `.moetrace`, or a `.jsonl`/`.csv` per-token trace imported with the importers' defaults (as
/// the CLI does).
fn read_trace(path: &Path) -> Result<Trace, String> {
    if moesim_traces::native::is_native(path) {
        return moesim_traces::native::read_native(path).map_err(|e| e.to_string());
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        _ if path.is_dir() => Format::CsvTokens,
        Some("jsonl") => Format::JsonlTokens,
        Some("csv") => Format::CsvTokens,
        _ => {
            return Err(format!(
                "{}: trace file not found or not readable",
                path.display()
            ));
        }
    };
    import(format, path, &ImportOptions::default()).map_err(|e| e.to_string())
}

/// The cost model of `cluster.profile`: a shipped profile, or a profile file relative to the scenario (as
/// the CLI resolves it).
fn cost_model(scenario_path: &Path, s: &Scenario) -> Result<Option<MeasuredCost>, String> {
    let Some(name) = s.cluster.profile.as_deref() else {
        return Ok(None);
    };
    let profile = match profiles::shipped(name) {
        Some(p) => p,
        None => {
            let path = scenario_path.parent().unwrap_or(Path::new(".")).join(name);
            Profile::load(&path).map_err(|e| format!("cluster.profile {name}: {e}"))?
        }
    };
    Ok(Some(MeasuredCost::from_profile(&profile)))
}
