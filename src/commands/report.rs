//! `moesim report SCENARIO... --out DIR`: capacity reports; `moesim report --check DIR` verifies one.

use crate::output;
use miette::{IntoDiagnostic, WrapErr, miette};
use moesim_reports::capacity::default_node_counts;
use moesim_reports::check::{check_png, check_svg};
use moesim_reports::collect::{CollectOptions, collect};
use moesim_reports::inputs::Inputs;
use moesim_reports::report::{ReportOptions, render_report_with_serving};
use moesim_reports::serving_curves::collect_serving;
use moesim_reports::sweep::SweepResult;
use moesim_reports::trace::validate_chrome_trace;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Flags of `moesim report`.
#[derive(clap::Args, Clone)]
pub struct ReportArgs {
    /// Scenario files (TOML), or merged sweep results (`merged.json` from `moesim sweep merge`).
    #[arg(required_unless_present = "check")]
    pub inputs: Vec<PathBuf>,
    /// Folder to write index.md, index.html and the figures into.
    #[arg(long, default_value = "out/report")]
    pub out: PathBuf,
    /// Override a scenario field of every scenario, e.g. `--set workload.iterations=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Node counts of the capacity curve, e.g. `1,2,4,8` (default: 1, n/2, n, 2n, 4n for a scenario of n nodes).
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub capacity_nodes: Vec<usize>,
    /// Leave the capacity curve out (it simulates the scenario once per cluster size).
    #[arg(long, conflicts_with = "capacity_nodes")]
    pub no_capacity: bool,
    /// Throughput target: the report names the fewest GPUs that reach it per strategy.
    #[arg(long, value_name = "TOKENS_PER_S")]
    pub target_tokens_per_s: Option<f64>,
    /// Check the report in DIR (files exist, SVGs parse, PNGs decode) instead of writing one.
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub check: Option<PathBuf>,
}

pub fn run(a: &ReportArgs, quiet: bool) -> miette::Result<ExitCode> {
    if let Some(dir) = &a.check {
        return check(dir);
    }
    let mut scenarios = Vec::new();
    let mut serving = Vec::new();
    let mut sweeps = Vec::new();
    for path in &a.inputs {
        let text = std::fs::read_to_string(path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "json") {
            let sweep: SweepResult = serde_json::from_str(&text)
                .into_diagnostic()
                .wrap_err_with(|| {
                    format!(
                        "{}: not a merged sweep result (from `moesim sweep merge`)",
                        path.display()
                    )
                })?;
            sweeps.push((sweep.sweep.clone(), sweep));
            continue;
        }
        let inputs = Inputs::resolve(path, text, a.set.clone(), None)?;
        let s = &inputs.scenario;
        if s.serving.is_some() {
            // Serving: capacity search, latency against rate and the cost Pareto front per deployment.
            if !quiet {
                eprintln!("{}: serving capacity search and latency curves", s.name);
            }
            let data =
                collect_serving(&inputs, env!("CARGO_PKG_VERSION")).map_err(|e| miette!("{e}"))?;
            serving.push(data);
            continue;
        }
        let nodes = if a.no_capacity {
            Vec::new()
        } else if a.capacity_nodes.is_empty() {
            default_node_counts(s.cluster.nodes)
        } else {
            a.capacity_nodes.clone()
        };
        let per_run = (s.workload.iterations * s.strategies.len()) as u64;
        let bar = output::progress(per_run * (1 + nodes.len() as u64), quiet);
        bar.set_message(s.name.clone());
        let tick = || bar.inc(1);
        let data = collect(
            &inputs,
            &CollectOptions {
                capacity_nodes: nodes,
            },
            env!("CARGO_PKG_VERSION"),
            Some(&tick),
        )?;
        bar.finish_and_clear();
        scenarios.push(data);
    }
    let files = render_report_with_serving(
        &scenarios,
        &serving,
        &sweeps,
        &ReportOptions {
            target_tokens_per_s: a.target_tokens_per_s,
        },
    )
    .map_err(|e| miette!("{e}"))?;
    // The folder is replaced as a whole: a report killed part-way leaves the old one, never a mix.
    output::replace_dir(&a.out, "index.md", |dir| {
        for f in &files {
            moesim_traces::atomic::write(&dir.join(&f.path), &f.bytes)?;
        }
        Ok(())
    })?;
    println!("report written to {}", a.out.join("index.html").display());
    Ok(ExitCode::SUCCESS)
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> miette::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read report folder {}", dir.display()))?;
    for e in entries {
        let p = e.into_diagnostic()?.path();
        if p.is_dir() {
            out.extend(files_under(&p)?);
        } else {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Checks a written report: both pages exist, every figure they link exists, SVGs parse, PNGs decode,
/// timelines (`*.trace.json`) follow the Chrome trace format.
fn check(dir: &Path) -> miette::Result<ExitCode> {
    let mut problems = Vec::new();
    let md = std::fs::read_to_string(dir.join("index.md")).unwrap_or_else(|_| {
        problems.push("index.md is missing".to_string());
        String::new()
    });
    if !dir.join("index.html").is_file() {
        problems.push("index.html is missing".into());
    }
    for link in md
        .split("](")
        .skip(1)
        .filter_map(|s| s.split_once(')'))
        .map(|(l, _)| l)
    {
        if !dir.join(link).is_file() {
            problems.push(format!("index.md links {link}, which is missing"));
        }
    }
    let (mut svgs, mut pngs, mut traces) = (0, 0, 0);
    for p in files_under(dir)? {
        let name = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
        match p.extension().and_then(|e| e.to_str()) {
            Some("svg") => {
                svgs += 1;
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let Err(e) = check_svg(&text) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            Some("png") => {
                pngs += 1;
                let bytes = std::fs::read(&p).unwrap_or_default();
                if let Err(e) = check_png(&bytes) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            Some("json") if name.ends_with(".trace.json") => {
                traces += 1;
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if let Err(e) = validate_chrome_trace(&text) {
                    problems.push(format!("{name}: not a valid Chrome trace: {e}"));
                }
            }
            Some("tmp") => problems.push(format!("{name}: a partly written file")),
            _ => {}
        }
    }
    if svgs == 0 || pngs == 0 {
        problems.push(format!(
            "expected figures, found {svgs} SVG and {pngs} PNG files"
        ));
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({svgs} SVG, {pngs} PNG, {traces} timelines, index.md, index.html)",
            dir.display()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("moesim report --check: {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}
