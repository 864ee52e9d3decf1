//! The command line's door to the input pipeline ([`moesim_reports::inputs::Inputs`]): the scenario named
//! on the command line with its `--set` overrides and `--trace`, resolved once.

use crate::ScenarioArgs;
use moesim_reports::inputs::Inputs;

/// Reads, parses and validates the scenario named on the command line and resolves what it needs (trace,
/// per-token routing, cost profile).
pub fn inputs(args: &ScenarioArgs) -> miette::Result<Inputs> {
    Ok(Inputs::read(
        &args.scenario,
        args.set.clone(),
        args.trace.as_deref(),
    )?)
}
