//! One module per view; each draws from the [`crate::app::App`] state and the loaded session.

pub mod compare;
pub mod knobs;
pub mod placement;
pub mod ranks;
pub mod serving;
pub mod timeline;
pub mod trace;

use moesim_sim::result::SimulationReport;

pub use moesim_reports::numbers::{percent, rate};

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

/// Width of a table's name column: the longest of `names`, between 10 and 28 characters.
pub fn name_width<'a>(names: impl IntoIterator<Item = &'a str>) -> u16 {
    names
        .into_iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(10, 28) as u16
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_significant_digits_and_deltas_have_signs() {
        assert_eq!(rate(584208.4), "584208");
        assert_eq!(rate(27.26), "27.26");
        assert_eq!(rate(3.456), "3.456");
        assert_eq!(delta(Some(100.0), 110.0), "+10.0%");
        assert_eq!(delta(Some(100.0), 95.0), "-5.0%");
        assert_eq!(delta(Some(100.0), 100.0), "=");
        assert_eq!(delta(None, 1.0), "");
    }
}
