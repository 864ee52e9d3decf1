//! `plan --search` on a scenario with parallel layouts: how many were expanded, pruned (by reason) and
//! simulated, and the best configurations with why each wins (the reasons come from
//! `moesim_sim::layout_search::explain`).

use moesim_sim::layout_search::{Fate, Pruned, explain};
use moesim_sim::result::SimulationReport;
use moesim_sim::search::SearchOutcome;
use serde::Serialize;

/// Pruned layouts listed by name, at most this many per reason.
const LISTED: usize = 5;

/// The search's layout figures, for `--json`.
#[derive(Serialize)]
pub struct LayoutSummary<'a> {
    pub expanded: usize,
    pub simulated: usize,
    pub pruned_memory: usize,
    pub pruned_dominated: usize,
    /// Pruned because their step from below (the schedule's bound or the balanced-routing estimate, or a
    /// dominating sibling's) is no better than the best simulated layout.
    pub pruned_bound: usize,
    /// Pruned because an iteration has more operations than the search simulates.
    pub pruned_too_large: usize,
    /// Layouts given the schedule's lower bound.
    pub bounded: usize,
    /// Layouts given a balanced-routing estimate (a one-iteration simulation each).
    pub estimated: usize,
    /// Every pruned layout with its reason.
    pub pruned: Vec<PrunedLayout<'a>>,
}

#[derive(Serialize)]
pub struct PrunedLayout<'a> {
    pub layout: &'a str,
    #[serde(flatten)]
    pub why: &'a Pruned,
}

/// The report with the layout figures beside it (`results` stays at the top level).
#[derive(Serialize)]
pub struct SearchJson<'a> {
    #[serde(flatten)]
    pub report: &'a SimulationReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout_search: Option<LayoutSummary<'a>>,
}

/// The figures of `o`'s layouts; `None` when the scenario expands to none.
pub fn summary(o: &SearchOutcome) -> Option<LayoutSummary<'_>> {
    if o.layouts.is_empty() {
        return None;
    }
    let pruned: Vec<PrunedLayout> = o
        .pruned()
        .map(|(l, why)| PrunedLayout {
            layout: l.name(),
            why,
        })
        .collect();
    let count = |kind: Kind| pruned.iter().filter(|p| Kind::of(p.why) == kind).count();
    Some(LayoutSummary {
        expanded: o.layouts.len(),
        simulated: o
            .layouts
            .iter()
            .filter(|(_, f)| matches!(f, Fate::Simulated(_)))
            .count(),
        pruned_memory: count(Kind::Memory),
        pruned_dominated: count(Kind::Dominated),
        pruned_bound: count(Kind::Bound),
        pruned_too_large: count(Kind::TooLarge),
        bounded: o.bounds.iter().filter(|e| e.is_some()).count(),
        estimated: o.estimates.iter().filter(|e| e.is_some()).count(),
        pruned,
    })
}

/// A pruning reason's kind, for counting and listing.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Memory,
    Dominated,
    Bound,
    TooLarge,
}

impl Kind {
    fn of(p: &Pruned) -> Kind {
        match p {
            Pruned::Memory { .. } => Kind::Memory,
            Pruned::Dominated { .. } => Kind::Dominated,
            Pruned::Bound { .. } => Kind::Bound,
            Pruned::TooLarge { .. } => Kind::TooLarge,
        }
    }
}

/// The text: counts, a few pruned layouts per reason, and the best `top` configurations with reasons.
pub fn text(o: &SearchOutcome, ranked: &[usize], top: usize) -> String {
    let Some(sum) = summary(o) else {
        return String::new();
    };
    let mut out = format!(
        "layouts: {} expanded, {} simulated, {} pruned by their memory lower bound, {} dominated by a \
         sibling that does no more work and fits, {} pruned from below (schedule bound or balanced-routing \
         estimate no better than the best simulated; {} bounded, {} estimated), {} too large to simulate\n",
        sum.expanded,
        sum.simulated,
        sum.pruned_memory,
        sum.pruned_dominated,
        sum.pruned_bound,
        sum.bounded,
        sum.estimated,
        sum.pruned_too_large
    );
    for (label, kind) in [
        ("memory", Kind::Memory),
        ("dominated", Kind::Dominated),
        ("bound", Kind::Bound),
        ("too large", Kind::TooLarge),
    ] {
        let of_kind: Vec<&PrunedLayout> = sum
            .pruned
            .iter()
            .filter(|p| Kind::of(p.why) == kind)
            .collect();
        for p in of_kind.iter().take(LISTED) {
            out.push_str(&format!("  pruned ({label}) {}: {}\n", p.layout, p.why));
        }
        if of_kind.len() > LISTED {
            out.push_str(&format!(
                "  … and {} more ({label}; --json lists them all)\n",
                of_kind.len() - LISTED
            ));
        }
    }
    let configs = explain(&o.report.results, ranked, top, &o.scenario);
    out.push_str(&format!(
        "best configurations:\n  {:<40} {:>10} {:>12} {:>8} {:>7} {:>11}\n",
        "configuration", "step ms", "tok/s/GPU", "mem GiB", "bubble", "exposed ms"
    ));
    for c in &configs {
        out.push_str(&format!(
            "  {:<40} {:>10.1} {:>12.0} {:>8.1} {:>6.1}% {:>11.1}{}\n      why: {}\n",
            c.name,
            c.step_ms,
            c.tokens_per_s_per_gpu,
            c.memory_gib,
            100.0 * c.bubble_fraction,
            c.comm_exposed_ms,
            if c.fits { "" } else { "  (OOM)" },
            c.why
        ));
    }
    out.push_str(
        "bubble: the busiest rank's compute stream idle share of the step (pipeline fill and drain, and \
         communication it does not hide)\n",
    );
    out
}
