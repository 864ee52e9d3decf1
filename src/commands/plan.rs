//! `moesim plan`: simulate every strategy, choose, explain, write plan.json.

use crate::{ScenarioArgs, load, output, table};
use moesim_sim::plan::{choose, make_plan};
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_scenario_with_tokens};
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    args: &ScenarioArgs,
    out: &Path,
    json: bool,
    quiet: bool,
    search: Option<usize>,
) -> miette::Result<ExitCode> {
    let s = load::scenario(args)?;
    let routing = load::routing(args, &s)?;
    let cost = crate::profile_load::cost_model(&args.scenario, &s)?;
    let cost = cost.as_ref().map(|c| c as &dyn moesim_calibrate::CostModel);
    let opts = |progress| RunOptions {
        timing: !args.no_timing,
        progress,
    };
    let (s, mut report) = match search {
        Some(_) => {
            let n = moesim_sim::search::candidates(&s).len();
            let bar = output::progress_items(n as u64, "candidates", quiet);
            bar.set_message(format!("{} search", s.name));
            let tick = || bar.inc(1);
            let tokens = load::tokens(args, &s)?;
            let r = moesim_sim::search::search(
                &s,
                routing.as_ref(),
                tokens.as_ref(),
                cost,
                opts(Some(&tick)),
            );
            bar.finish_and_clear();
            r
        }
        None => {
            let bar = output::progress((s.workload.iterations * s.strategies.len()) as u64, quiet);
            bar.set_message(s.name.clone());
            let tick = || bar.inc(1);
            let tokens = load::tokens(args, &s)?;
            let report = simulate_scenario_with_tokens(
                &s,
                routing.as_ref(),
                tokens.as_ref(),
                cost,
                opts(Some(&tick)),
            )
            .map_err(|e| miette::miette!("{}: {e}", args.scenario.display()))?;
            bar.finish_and_clear();
            (s, report)
        }
    };
    let chosen = choose(&report, &s);
    report.chosen = chosen.map(|i| report.results[i].strategy.clone());
    let plan_path = out.join("plan.json");
    if let Some(i) = chosen {
        let plan = make_plan(&s, &report, i);
        output::write_atomic(
            &plan_path,
            serde_json::to_string_pretty(&plan)
                .expect("serialisable")
                .as_bytes(),
        )?;
    }
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
        match search {
            Some(top) => {
                let ranked = moesim_sim::search::ranking(&report, &s);
                println!(
                    "searched {} candidates; the best {}:",
                    report.results.len(),
                    top.min(ranked.len())
                );
                let shown: Vec<_> = ranked
                    .iter()
                    .take(top)
                    .map(|&i| report.results[i].clone())
                    .collect();
                print!("{}", table::comparison(&shown, chosen.map(|_| 0)));
            }
            None => print!("{}", table::comparison(&report.results, chosen)),
        }
        if let Some(i) = chosen {
            println!(
                "\nchosen: {} — {}",
                report.results[i].strategy,
                why(&report.results, i, &s)
            );
            println!("breakdown: {}", table::breakdown(&report.results[i]));
            println!("plan written to {}", plan_path.display());
        }
    }
    match chosen {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => {
            eprintln!(
                "moesim: every strategy of {} runs out of memory (limit {:.1} GiB per GPU); no plan written",
                args.scenario.display(),
                s.objective.memory_limit_gib
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// Why the winner wins: its objective margin over the runner-up and the phases where the difference lies.
fn why(results: &[StrategyResult], chosen: usize, s: &moesim_sim::Scenario) -> String {
    let w = &results[chosen];
    let Some(r) = results
        .iter()
        .enumerate()
        .filter(|(i, x)| *i != chosen && !x.oom)
        .max_by(|a, b| a.1.tokens_per_s.total_cmp(&b.1.tokens_per_s))
        .map(|(_, x)| x)
    else {
        return format!(
            "the only strategy that fits in {:.1} GiB",
            s.objective.memory_limit_gib
        );
    };
    let mut diffs: Vec<(String, f64)> = w
        .breakdown_ms
        .iter()
        .map(|(k, v)| (k.clone(), r.breakdown_ms.get(k).copied().unwrap_or(0.0) - v))
        .collect();
    diffs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let parts: Vec<String> = diffs
        .iter()
        .take(2)
        .filter(|d| d.1.abs() > 1e-6)
        .map(|(k, d)| format!("{k} {}{:.3} ms", if *d > 0.0 { "−" } else { "+" }, d.abs()))
        .collect();
    format!(
        "{:.1}% more tokens/s than {} ({}); per iteration on the critical path: {}",
        100.0 * (w.tokens_per_s / r.tokens_per_s - 1.0),
        r.strategy,
        if r.oom { "OOM" } else { "fits" },
        if parts.is_empty() {
            "same phases".into()
        } else {
            parts.join(", ")
        }
    )
}
