//! `moesim`: the command line over the moesim crates. It parses flags, reads and writes files, and hands
//! everything else to the library crates.

mod commands;
mod load;
mod output;
mod table;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "moesim",
    version,
    about = "Discrete-event simulator and cluster planner for Mixture-of-Experts systems"
)]
struct Cli {
    /// Worker threads for parallel simulation (default: all cores, at most 1024). Results do not depend on it.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS))]
    threads: Option<u64>,
    /// No progress bar on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Flags shared by commands that simulate a scenario.
#[derive(clap::Args, Clone)]
pub struct ScenarioArgs {
    /// The scenario file (TOML).
    pub scenario: std::path::PathBuf,
    /// Override a scenario field by its dotted path, e.g. `--set model.top_k=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Replay this routing trace instead of the scenario's workload.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<std::path::PathBuf>,
    /// Omit wall-clock timings so the output is byte-for-byte reproducible.
    #[arg(long)]
    pub no_timing: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate the scenario's strategies and print their figures.
    Simulate {
        #[command(flatten)]
        args: ScenarioArgs,
        /// Simulate only this strategy.
        #[arg(long)]
        strategy: Option<String>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        timeline: commands::timeline::TimelineArgs,
        /// Serving scenarios: write every request's record (arrival, TTFT, TPOT, latency, …) to this
        /// file, CSV or JSON by its extension.
        #[arg(long, value_name = "FILE.csv|FILE.json")]
        requests_out: Option<std::path::PathBuf>,
    },
    /// Simulate every strategy, choose the best under the objective, and write plan.json.
    Plan {
        #[command(flatten)]
        args: ScenarioArgs,
        /// Where to write plan.json.
        #[arg(long, default_value = "out")]
        out: std::path::PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Expand every strategy over its knobs and search all candidates.
        #[arg(long)]
        search: bool,
        /// With --search: how many of the best candidates to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
    /// Import, export, inspect, fit, rescale and generate routing traces.
    #[command(subcommand)]
    Trace(commands::trace::TraceCommand),
    /// Measure this host's GPU (GEMMs, copies, launch overhead, NCCL) and write a profile (needs a GPU).
    Calibrate(commands::calibrate::CalibrateArgs),
    /// Run a plan's per-rank expert work on this host's GPU and compare it with the prediction (needs a GPU).
    Validate(commands::validate::ValidateArgs),
    /// Place experts (with replicas) on GPUs from a load history, beside the EPLB baseline.
    Place(commands::place::PlaceArgs),
    /// Write a capacity report (Markdown, HTML, SVG/PNG figures) for scenarios and merged sweeps.
    Report(commands::report::ReportArgs),
    /// Run one shard of a sweep of scenario variants, or merge the shards (`moesim sweep merge DIR`).
    Sweep(commands::sweep::SweepArgs),
    /// Compare moesim with published measurements of real systems (validation/): the error table.
    CheckPublished(commands::check_published::CheckPublishedArgs),
    /// Explore a scenario interactively in the terminal: compare, ranks, timeline, placement, trace, knobs.
    Tui(commands::tui::TuiArgs),
}

/// More threads than this only cost memory and start-up time (a thread each, with its stack).
const MAX_THREADS: u64 = 1024;

fn main() -> ExitCode {
    output::quiet_on_broken_pipe();
    let cli = Cli::parse();
    // Wrap error text to the terminal only on a terminal: logs and tests get whole lines.
    let wrap = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(wrap).build())
    }));
    if let Some(n) = cli.threads
        && let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
    {
        eprintln!("moesim: cannot start {n} threads: {e}");
        return ExitCode::FAILURE;
    }
    if !matches!(cli.command, Command::Tui(_)) {
        output::clean_up_on_interrupt();
    }
    let result = match cli.command {
        Command::Simulate {
            args,
            strategy,
            json,
            timeline,
            requests_out,
        } => commands::simulate::run(
            &args,
            strategy.as_deref(),
            json,
            &timeline,
            cli.quiet,
            requests_out.as_deref(),
        ),
        Command::Plan {
            args,
            out,
            json,
            search,
            top,
        } => commands::plan::run(&args, &out, json, cli.quiet, search.then_some(top)),
        Command::Trace(cmd) => commands::trace::run(cmd, cli.quiet),
        Command::Calibrate(a) => commands::calibrate::run(&a, cli.quiet),
        Command::Validate(a) => commands::validate::run(&a, cli.quiet),
        Command::Place(args) => commands::place::run(&args),
        Command::Report(a) => commands::report::run(&a, cli.quiet),
        Command::Sweep(a) => commands::sweep::run(&a, cli.quiet),
        Command::CheckPublished(a) => commands::check_published::run(&a),
        Command::Tui(a) => commands::tui::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
