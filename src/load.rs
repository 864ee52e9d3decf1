//! Reading scenarios (and what they point to) from disk.

use crate::ScenarioArgs;
use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_sim::Scenario;
use moesim_sim::scenario::parse_scenario;
use moesim_traces::RoutingSource;

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

/// The routing workload: the `--trace` file, the scenario's trace, or its synthetic generator.
pub fn routing(args: &ScenarioArgs, s: &Scenario) -> miette::Result<Box<dyn RoutingSource>> {
    let trace = args.trace.clone().or_else(|| {
        s.workload.trace.as_ref().map(|t| {
            args.scenario
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(t)
        })
    });
    let synthetic = moesim_sim::runner::synthetic_routing(s);
    if let Some(t) = trace {
        // The trace replaces the synthetic generator on the same shape (ranks × tokens × micro-batches).
        let replay =
            moesim_traces::TraceRouting::open(&t, synthetic.shape(), synthetic.iterations())
                .map_err(|e| miette!("{e}"))?;
        return Ok(Box::new(replay));
    }
    Ok(Box::new(synthetic))
}
