//! One module per view; each draws from the [`crate::app::App`] state and the loaded session.

pub mod compare;
pub mod knobs;
pub mod placement;
pub mod ranks;
pub mod timeline;
pub mod trace;

use moesim_sim::result::SimulationReport;

/// Relative change of `now` against `before`, as "+1.2%" (empty when there is nothing to compare).
pub fn delta(before: Option<f64>, now: f64) -> String {
    match before {
        Some(b) if b != 0.0 && (now - b).abs() > 1e-12 * b.abs() => {
            format!("{:+.1}%", (now - b) / b * 100.0)
        }
        Some(_) => "=".into(),
        None => String::new(),
    }
}

/// A strategy's figure in the previous report, matched by name.
pub fn previous_figure(
    previous: Option<&SimulationReport>,
    strategy: &str,
    f: impl Fn(&moesim_sim::result::StrategyResult) -> f64,
) -> Option<f64> {
    previous?
        .results
        .iter()
        .find(|r| r.strategy == strategy)
        .map(f)
}
