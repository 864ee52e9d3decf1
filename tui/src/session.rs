//! A loaded scenario: its text, the `--set` overrides the knobs added, the parsed scenario, its routing and
//! the simulated report. Loading is one plain function so the worker thread and tests call the same code.

use crate::workload::{WorkloadSummary, summarize};
use moesim_calibrate::MeasuredCost;
use moesim_reports::inputs::{InputError, Inputs};
use moesim_sim::Scenario;
use moesim_sim::plan::choose;
use moesim_sim::result::SimulationReport;
use moesim_sim::runner::RunOptions;
use moesim_sim::serving::ServingReport;
use moesim_traces::{RoutingSource, Trace};
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
    /// The step-level report (no results for a serving scenario: see `serving`).
    pub report: SimulationReport,
    /// A serving scenario's (`workload.mode = "serving"`) request-level report, one result per deployment.
    pub serving: Option<ServingReport>,
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

impl Session {
    /// Whether this is a serving scenario (its figures are in [`Session::serving`]).
    pub fn is_serving(&self) -> bool {
        self.serving.is_some()
    }
}

/// Resolves the scenario through the input pipeline ([`Inputs::resolve`]: overrides, trace, per-token
/// routing, cost profile — as every `moesim` command does) and simulates every strategy, counting
/// iterations into `progress`; a serving scenario is served instead (every deployment, with
/// [`Inputs::simulate_serving`]). Errors come back as text for the UI to show.
pub fn load(request: Request, progress: &Progress) -> Result<Session, String> {
    let inputs = Inputs::resolve(
        &request.path,
        request.text.clone(),
        request.overrides.clone(),
        None,
    )
    .map_err(|e| describe_error(&e))?;
    let scenario = inputs.scenario.clone();
    if scenario.serving.is_some() {
        let serving = inputs.simulate_serving().map_err(|e| e.to_string())?;
        return Ok(Session {
            cost: inputs.cost.clone(),
            routing: Arc::clone(&inputs.routing),
            trace: inputs.trace.clone(),
            workload: Err("a serving scenario: see the Serving view".into()),
            report: SimulationReport {
                scenario: scenario.name.clone(),
                results: Vec::new(),
                chosen: None,
            },
            serving: Some(serving),
            request,
            scenario,
            chosen: None,
        });
    }
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
    let mut report = inputs.simulate(opts).map_err(|e| e.to_string())?;
    let chosen = choose(&report, &scenario);
    report.chosen = chosen.map(|i| report.results[i].strategy.clone());
    let source = match (&inputs.trace_path, inputs.trace.as_deref()) {
        (Some(p), Some(Trace::Tokens(t))) if !inputs.trace_complete => format!(
            "trace {} (its first {} tokens: what the run replays)",
            crate::app::file_name(p),
            t.tokens()
        ),
        (Some(p), _) => format!("trace {}", crate::app::file_name(p)),
        (None, _) => inputs.workload(),
    };
    let workload = summarize(
        inputs.routing.as_ref(),
        inputs.trace.as_deref(),
        scenario.cluster.gpus(),
        source,
    );
    Ok(Session {
        cost: inputs.cost.clone(),
        routing: Arc::clone(&inputs.routing),
        trace: inputs.trace.clone(),
        workload,
        request,
        scenario,
        report,
        serving: None,
        chosen,
    })
}

/// The error with its help line, one message the UI can wrap.
fn describe_error(e: &InputError) -> String {
    use miette::Diagnostic;
    match e.help() {
        Some(h) => format!("{e}\nhelp: {h}"),
        None => e.to_string(),
    }
}
