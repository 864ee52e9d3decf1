//! `moesim tui [SCENARIO]`: the interactive terminal explorer (the `moesim-tui` crate).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TuiArgs {
    /// The scenario to open; without one, a picker lists `scenarios/*.toml`.
    pub scenario: Option<PathBuf>,
    /// Where `s` saves plan.json and `w` writes reports.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
}

pub fn run(args: &TuiArgs) -> miette::Result<ExitCode> {
    moesim_tui::run(args.scenario.as_deref(), args.out.clone())
        .map_err(|e| miette::miette!("terminal: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
