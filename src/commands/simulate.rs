//! `moesim simulate`.

use crate::commands::timeline::{self, TimelineArgs};
use crate::{ScenarioArgs, load, output, table};
use miette::miette;
use moesim_sim::runner::RunOptions;
use std::process::ExitCode;

pub fn run(
    args: &ScenarioArgs,
    strategy: Option<&str>,
    json: bool,
    timeline_args: &TimelineArgs,
    quiet: bool,
) -> miette::Result<ExitCode> {
    // The timeline's range is checked before anything is simulated.
    timeline::check(timeline_args, None)?;
    let mut inputs = load::inputs(args)?;
    timeline::check(timeline_args, Some(inputs.scenario.workload.iterations))?;
    if let Some(name) = strategy {
        let s = &mut inputs.scenario;
        let known: Vec<String> = s.strategies.iter().map(|x| x.name.clone()).collect();
        s.strategies.retain(|x| x.name == name);
        if s.strategies.is_empty() {
            return Err(miette!(
                "{}: no strategy named `{name}` (the scenario has: {})",
                args.scenario.display(),
                known.join(", ")
            ));
        }
    }
    let s = &inputs.scenario;
    let bar = output::progress((s.workload.iterations * s.strategies.len()) as u64, quiet);
    bar.set_message(s.name.clone());
    let tick = || bar.inc(1);
    let report = inputs.simulate(RunOptions {
        timing: !args.no_timing,
        progress: Some(&tick),
    })?;
    bar.finish_and_clear();
    if json {
        output::print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&report).expect("serialisable")
        ))?;
    } else {
        let mut text = table::headline(&inputs);
        text.push_str(&table::comparison(&report.results, None, s));
        for r in &report.results {
            text.push_str(&format!("{}: {}\n", r.strategy, table::breakdown(r)));
        }
        output::print(&text)?;
    }
    timeline::run(&inputs, timeline_args, quiet)?;
    Ok(ExitCode::SUCCESS)
}
