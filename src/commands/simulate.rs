//! `moesim simulate`.

use crate::{ScenarioArgs, load, output, table};
use miette::miette;
use moesim_sim::runner::{RunOptions, simulate_scenario_with_tokens};
use std::process::ExitCode;

pub fn run(
    args: &ScenarioArgs,
    strategy: Option<&str>,
    json: bool,
    quiet: bool,
) -> miette::Result<ExitCode> {
    let mut s = load::scenario(args)?;
    if let Some(name) = strategy {
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
    let routing = load::routing(args, &s)?;
    let cost = crate::profile_load::cost_model(&args.scenario, &s)?;
    let bar = output::progress((s.workload.iterations * s.strategies.len()) as u64, quiet);
    bar.set_message(s.name.clone());
    let tick = || bar.inc(1);
    let tokens = load::tokens(args, &s)?;
    let report = simulate_scenario_with_tokens(
        &s,
        routing.as_ref(),
        tokens.as_ref(),
        cost.as_ref().map(|c| c as &dyn moesim_calibrate::CostModel),
        RunOptions {
            timing: !args.no_timing,
            progress: Some(&tick),
        },
    )
    .map_err(|e| miette!("{}: {e}", args.scenario.display()))?;
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        println!(
            "{} — {} on {} × {} ({} GPUs), {}",
            s.name,
            s.model.name,
            s.cluster.nodes,
            s.cluster.name,
            s.cluster.gpus(),
            routing.describe()
        );
        print!("{}", table::comparison(&report.results, None));
        for r in &report.results {
            println!("{}: {}", r.strategy, table::breakdown(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
