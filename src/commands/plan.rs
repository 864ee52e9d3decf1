//! `moesim plan`: simulate every strategy, choose, explain, write plan.json.

use crate::{ScenarioArgs, load, output, table};
use moesim_sim::Scenario;
use moesim_sim::plan::{choose, exclusion, make_plan};
use moesim_sim::result::StrategyResult;
use moesim_sim::runner::RunOptions;
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    args: &ScenarioArgs,
    out: &Path,
    json: bool,
    quiet: bool,
    search: Option<usize>,
) -> miette::Result<ExitCode> {
    let inputs = load::inputs(args)?;
    // A serving scenario plans its capacity: the highest request rate each deployment serves within the SLO.
    if inputs.scenario.serving.is_some() {
        if search.is_some() {
            return Err(miette::miette!(
                "{}: --search expands step-level strategies; a serving scenario's candidates are its \
                 [[strategy]] and [[serving.deployment]] entries (plan it without --search)",
                args.scenario.display()
            ));
        }
        return crate::commands::capacity::run(&inputs, out, json);
    }
    let opts = |progress| RunOptions {
        timing: !args.no_timing,
        progress,
    };
    let mut outcome = None;
    let (s, mut report) = match search {
        Some(_) => {
            let s = &inputs.scenario;
            let n = moesim_sim::search::candidates(s).len();
            let bar = output::progress_items(n as u64, "candidates", quiet);
            bar.set_message(format!("{} search", s.name));
            let tick = || bar.inc(1);
            let o = moesim_sim::search::search_all(
                s,
                inputs.routing.as_ref(),
                inputs.tokens.as_deref(),
                inputs.cost(),
                opts(Some(&tick)),
            );
            bar.finish_and_clear();
            let r = (o.scenario.clone(), o.report.clone());
            outcome = Some(o);
            r
        }
        None => {
            let s = &inputs.scenario;
            let bar = output::progress((s.workload.iterations * s.strategies.len()) as u64, quiet);
            bar.set_message(s.name.clone());
            let tick = || bar.inc(1);
            let report = inputs.simulate(opts(Some(&tick)))?;
            bar.finish_and_clear();
            (s.clone(), report)
        }
    };
    let chosen = choose(&report, &s);
    report.chosen = chosen.map(|i| report.results[i].strategy.clone());
    let plan_path = out.join("plan.json");
    if let Some(i) = chosen {
        // A layout's plan is made on its own scenario (its micro-batches, checkpointing, ZeRO stage).
        let plan = match &outcome {
            Some(o) => o.plan(i),
            None => make_plan(&s, &report, i),
        };
        output::write_atomic(
            &plan_path,
            serde_json::to_string_pretty(&plan)
                .expect("serialisable")
                .as_bytes(),
        )?;
    }
    if json {
        match &outcome {
            Some(o) => output::print_json(&super::layout_report::SearchJson {
                report: &report,
                layout_search: super::layout_report::summary(o),
            })?,
            None => output::print_json(&report)?,
        }
    } else {
        let mut text = table::headline(&inputs);
        match search {
            Some(top) => {
                let ranked = moesim_sim::search::ranking(&report, &s);
                text.push_str(&format!(
                    "searched {} candidates; the best {}:\n",
                    report.results.len(),
                    top.min(ranked.len())
                ));
                let shown: Vec<_> = ranked
                    .iter()
                    .take(top)
                    .map(|&i| report.results[i].clone())
                    .collect();
                text.push_str(&table::comparison(&shown, chosen.map(|_| 0), &s));
                if let Some(o) = &outcome {
                    text.push_str(&super::layout_report::text(o, &ranked, top.min(5)));
                }
            }
            None => text.push_str(&table::comparison(&report.results, chosen, &s)),
        }
        if let Some(i) = chosen {
            text.push_str(&format!(
                "\nchosen: {} — {}\n",
                report.results[i].strategy,
                why(&report.results, i, &s)
            ));
            text.push_str(&format!(
                "breakdown: {}\n",
                table::breakdown(&report.results[i])
            ));
            text.push_str(&format!("plan written to {}\n", plan_path.display()));
        }
        text.push_str(
            "tokens/s: tokens of the batch per second of step time (every token counts, dropped \
             assignments too); dropped: (token, expert) assignments over the capacity factor\n",
        );
        output::print(&text)?;
    }
    match chosen {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => {
            let reasons: Vec<String> = report
                .results
                .iter()
                .filter_map(|r| exclusion(r, &s).map(|e| format!("{}: {e}", r.strategy)))
                .collect();
            eprintln!(
                "moesim: no strategy of {} fits in {:.1} GiB per GPU while dropping at most {}% of its \
                 assignments (objective.memory_limit_gib, objective.max_dropped_fraction); no plan written\n  {}",
                args.scenario.display(),
                s.objective.memory_limit_gib,
                100.0 * s.objective.max_dropped_fraction,
                reasons.join("\n  ")
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// Why the winner wins: its objective margin over the runner-up (the best other strategy the objective
/// allows) and the phases where the difference lies.
fn why(results: &[StrategyResult], chosen: usize, s: &Scenario) -> String {
    let w = &results[chosen];
    let Some(r) = results
        .iter()
        .enumerate()
        .filter(|(i, x)| *i != chosen && exclusion(x, s).is_none())
        .max_by(|a, b| a.1.tokens_per_s.total_cmp(&b.1.tokens_per_s))
        .map(|(_, x)| x)
    else {
        return format!(
            "the only strategy that fits in {:.1} GiB and drops at most {}% of its assignments",
            s.objective.memory_limit_gib,
            100.0 * s.objective.max_dropped_fraction
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
    let margin = w.tokens_per_s / r.tokens_per_s - 1.0;
    // Below 0.05 % the rounded margin would read "0.0% more": say it is a tie instead.
    let lead = if margin.abs() < 5e-4 {
        format!(
            "ties on tokens/s with {} (the best other strategy the objective allows; {} vs {}), {}",
            r.strategy,
            moesim_reports::numbers::rate(w.tokens_per_s),
            moesim_reports::numbers::rate(r.tokens_per_s),
            if margin == 0.0 {
                "chosen as listed first"
            } else {
                "ahead by less than 0.05%"
            }
        )
    } else {
        format!(
            "{:.1}% more tokens/s than {} (the best other strategy the objective allows)",
            100.0 * margin,
            r.strategy
        )
    };
    format!(
        "{lead}; per iteration on the critical path: {}",
        if parts.is_empty() {
            "same phases".into()
        } else {
            parts.join(", ")
        }
    )
}
