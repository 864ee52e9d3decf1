//! `moesim simulate`.

use crate::commands::timeline::{self, TimelineArgs};
use crate::{ScenarioArgs, load, output, table};
use miette::miette;
use moesim_sim::runner::RunOptions;
use moesim_sim::scenario::file::Mode;
use std::process::ExitCode;

pub fn run(
    args: &ScenarioArgs,
    strategy: Option<&str>,
    json: bool,
    timeline_args: &TimelineArgs,
    quiet: bool,
    requests_out: Option<&std::path::Path>,
) -> miette::Result<ExitCode> {
    // The timeline's range is checked before anything is simulated.
    timeline::check(timeline_args, None)?;
    let mut inputs = load::inputs(args)?;
    timeline::check(timeline_args, Some(inputs.scenario.workload.iterations))?;
    if let Some(name) = strategy {
        let s = &mut inputs.scenario;
        // A serving scenario's candidates are its co-located strategies and its deployments.
        let served: Vec<String> = moesim_sim::serving::deployments(s)
            .into_iter()
            .map(|d| d.name)
            .collect();
        let mut known: Vec<String> = s.strategies.iter().map(|x| x.name.clone()).collect();
        known.extend(
            served
                .iter()
                .filter(|d| !known.contains(d))
                .cloned()
                .collect::<Vec<_>>(),
        );
        s.strategies.retain(|x| x.name == name);
        if let Some(cfg) = s.serving.as_mut() {
            cfg.deployments.retain(|d| d.name == name);
        }
        let found = if s.workload.mode == Mode::Serving {
            served.iter().any(|d| d == name)
        } else {
            !s.strategies.is_empty()
        };
        if !found {
            return Err(miette!(
                "{}: no {} named `{name}` (the scenario has: {})",
                args.scenario.display(),
                if s.workload.mode == Mode::Serving {
                    "served strategy or deployment"
                } else {
                    "strategy"
                },
                if s.workload.mode == Mode::Serving {
                    served.join(", ")
                } else {
                    known.join(", ")
                }
            ));
        }
    }
    let s = &inputs.scenario;
    if s.workload.mode == Mode::Serving {
        if timeline_args.timeline.is_some() {
            return Err(miette!(
                "{}: --timeline exports step-level iterations; a serving scenario has none yet",
                args.scenario.display()
            ));
        }
        return crate::commands::serving::run(&inputs, json, requests_out);
    }
    if let Some(p) = requests_out {
        return Err(miette!(
            "--requests-out {}: per-request records need a serving scenario (workload.mode = \"serving\")",
            p.display()
        ));
    }
    let bar = output::progress((s.workload.iterations * s.strategies.len()) as u64, quiet);
    bar.set_message(s.name.clone());
    let tick = || bar.inc(1);
    let report = inputs.simulate(RunOptions {
        timing: !args.no_timing,
        progress: Some(&tick),
    })?;
    bar.finish_and_clear();
    if json {
        output::print_json(&report)?;
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
