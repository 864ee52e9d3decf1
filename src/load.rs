//! Reading scenarios (and what they point to) from disk.

use crate::ScenarioArgs;
use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_sim::Scenario;
use moesim_sim::scenario::file::StrategyKind;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::offload::tokens::TokenRouting;
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::{RoutingSource, Trace, TraceRouting};
use std::path::{Path, PathBuf};

/// Reads, parses and validates the scenario named on the command line.
pub fn scenario(args: &ScenarioArgs) -> miette::Result<Scenario> {
    let path = &args.scenario;
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read scenario {}", path.display()))?;
    Ok(parse_scenario(
        &path.display().to_string(),
        &text,
        &args.set,
    )?)
}

/// The trace named by `--trace` or by the scenario (relative to the scenario file), if any.
fn trace_path(args: &ScenarioArgs, s: &Scenario) -> Option<PathBuf> {
    args.trace.clone().or_else(|| {
        s.workload.trace.as_ref().map(|t| {
            args.scenario
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(t)
        })
    })
}

/// Reads a trace: a native `.moetrace`, or a per-token trace imported on the fly (`.jsonl` as
/// `jsonl-tokens`; `.csv` or a directory of CSV files as `csv-tokens`, with the importers' defaults).
fn read_trace(path: &Path) -> miette::Result<Trace> {
    if moesim_traces::native::is_native(path) {
        return moesim_traces::native::read_native(path).map_err(|e| miette!("{e}"));
    }
    let format = match path.extension().and_then(|e| e.to_str()) {
        _ if path.is_dir() => Format::CsvTokens,
        Some("jsonl") => Format::JsonlTokens,
        Some("csv") => Format::CsvTokens,
        _ if !path.exists() => return Err(miette!("{}: trace file not found", path.display())),
        _ => {
            return Err(miette!(
                "{}: not a moesim native trace, nor a .jsonl/.csv per-token trace; convert it first with \
                 `moesim trace import --from FORMAT IN OUT`",
                path.display()
            ));
        }
    };
    import(format, path, &ImportOptions::default()).map_err(|e| miette!("{e}"))
}

fn offload_only(s: &Scenario) -> bool {
    s.strategies
        .iter()
        .all(|st| st.kind == StrategyKind::Offload)
}

/// The routing workload: the `--trace` file, the scenario's trace, or its synthetic generator.
pub fn routing(args: &ScenarioArgs, s: &Scenario) -> miette::Result<Box<dyn RoutingSource>> {
    let synthetic = moesim_sim::runner::synthetic_routing(s);
    // Offloading replays per-token routing (see `tokens`); the per-rank workload is not used then.
    if let Some(t) = trace_path(args, s).filter(|_| !offload_only(s)) {
        // The trace replaces the synthetic generator on the same shape (ranks × tokens × micro-batches).
        let trace = read_trace(&t)?;
        let replay = TraceRouting::new(trace, &t, synthetic.shape(), synthetic.iterations())
            .map_err(|e| miette!("{e}"))?;
        return Ok(Box::new(replay));
    }
    Ok(Box::new(synthetic))
}

/// Per-token routing for offloading strategies, when a per-token trace is given and the scenario has
/// offloading strategies.
pub fn tokens(args: &ScenarioArgs, s: &Scenario) -> miette::Result<Option<TokenRouting>> {
    if !s
        .strategies
        .iter()
        .any(|st| st.kind == StrategyKind::Offload)
    {
        return Ok(None);
    }
    let Some(t) = trace_path(args, s) else {
        return Ok(None);
    };
    match read_trace(&t)? {
        Trace::Tokens(tt) => Ok(Some(TokenRouting::from_trace(&tt))),
        Trace::Counts(_) => Err(miette!(
            "{}: offloading replays tokens in order, but this trace holds aggregated counts; give a per-token trace",
            t.display()
        )),
    }
}
