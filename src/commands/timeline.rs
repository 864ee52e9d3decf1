//! `moesim simulate --timeline FILE.json --iterations A..B`: the chosen iterations of one strategy as a
//! Chrome trace / Perfetto JSON file.

use crate::output;
use miette::miette;
use moesim_reports::inputs::Inputs;
use moesim_reports::trace::chrome_trace;
use moesim_sim::timeline::iteration_timelines;
use std::ops::Range;
use std::path::PathBuf;

/// Flags of the timeline export.
#[derive(clap::Args, Clone)]
pub struct TimelineArgs {
    /// Write the simulated iterations as Chrome trace JSON (open in ui.perfetto.dev or chrome://tracing);
    /// the strategy is `--strategy`, else the scenario's first.
    #[arg(long, value_name = "FILE.json")]
    pub timeline: Option<PathBuf>,
    /// Iterations to export, `A..B` (B excluded) or one number.
    #[arg(
        long,
        value_name = "A..B",
        default_value = "0..1",
        requires = "timeline"
    )]
    pub iterations: String,
}

/// Parses `A..B` or `A`.
pub fn parse_range(text: &str) -> Result<Range<usize>, String> {
    let bad = || format!("--iterations {text}: expected A..B (e.g. 0..4) or one iteration number");
    let range = match text.split_once("..") {
        Some((a, b)) => {
            a.trim().parse().map_err(|_| bad())?..b.trim().parse().map_err(|_| bad())?
        }
        None => {
            let a: usize = text.trim().parse().map_err(|_| bad())?;
            a..a + 1
        }
    };
    if range.start >= range.end {
        return Err(format!("--iterations {text}: the range is empty"));
    }
    Ok(range)
}

/// Checks the `--iterations` range before the run: a timeline keeps every operation of its iterations,
/// so it may span at most [`MAX_TIMELINE_ITERATIONS`].
pub fn check(t: &TimelineArgs, iterations: Option<usize>) -> miette::Result<()> {
    if t.timeline.is_none() {
        return Ok(());
    }
    let range = parse_range(&t.iterations).map_err(|e| miette!("{e}"))?;
    if range.len() > MAX_TIMELINE_ITERATIONS {
        return Err(miette!(
            "--iterations {}: {} iterations; a timeline spans at most {MAX_TIMELINE_ITERATIONS} (every operation is kept)",
            t.iterations,
            range.len()
        ));
    }
    if let Some(n) = iterations
        && range.end > n
    {
        return Err(miette!(
            "--iterations {} is outside the scenario's iterations (0..{n}): the scenario has {n} iterations",
            t.iterations
        ));
    }
    Ok(())
}

/// Most iterations one timeline may span.
pub const MAX_TIMELINE_ITERATIONS: usize = 64;

/// Writes the timeline of the first strategy of `inputs` (`simulate --strategy` leaves only that one), if
/// one was asked for.
pub fn run(inputs: &Inputs, t: &TimelineArgs, quiet: bool) -> miette::Result<()> {
    let Some(path) = &t.timeline else {
        return Ok(());
    };
    check(t, Some(inputs.scenario.workload.iterations))?;
    let range = parse_range(&t.iterations).map_err(|e| miette!("{e}"))?;
    let s = &inputs.scenario;
    let st = s
        .strategies
        .first()
        .ok_or_else(|| miette!("{}: no strategy to export", inputs.file.display()))?;
    let timelines = iteration_timelines(s, st, inputs.routing.as_ref(), inputs.cost(), range)
        .map_err(|e| miette!("{}: {e}", inputs.file.display()))?;
    let doc = chrome_trace(&st.name, s.cluster.gpus(), &timelines);
    output::write_atomic(
        path,
        serde_json::to_string(&doc)
            .expect("serialisable")
            .as_bytes(),
    )?;
    if !quiet {
        eprintln!("timeline of {} written to {}", st.name, path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0..4"), Ok(0..4));
        assert_eq!(parse_range("7"), Ok(7..8));
        assert!(parse_range("4..4").unwrap_err().contains("empty"));
        assert!(parse_range("a..b").unwrap_err().contains("expected"));
    }
}
