//! The placement evaluation harness (`moesim_sim::placement::harness`) on every per-token trace of
//! `../shared/traces` (or `$MOESIM_SHARED_TRACES`) and on the synthetic workloads with drift and bursts:
//! plans made from a window of history, judged on each later iteration and layer, against EPLB given the
//! same inputs. Without the traces the real-trace test is ignored (see `sim/build.rs`), not passed.

use crate::common;
use common::real_traces_root as traces_root;
use moesim_sim::placement::burst_ceiling::burst_ceilings;
use moesim_sim::placement::harness::{
    REAL_TRACES, RealTrace, decision_window_table, one_plan_table, run_one_plan_suite,
    run_rest_of_run_suite, run_suite, table,
};
use moesim_sim::placement::judged::Judged;
use moesim_sim::placement::plan_layers::LoadHistory;
use moesim_sim::placement::rotation_ceiling::rotation_ceilings;

fn load_real() -> Vec<(RealTrace, LoadHistory, usize)> {
    let root = traces_root();
    REAL_TRACES
        .iter()
        .map(|case| {
            let dir = root.join(case.dir);
            let format = case.format.parse().unwrap();
            let moesim_traces::Trace::Tokens(t) =
                moesim_traces::import::import(format, &dir, &Default::default())
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            else {
                panic!("{}: a per-token trace", dir.display())
            };
            (*case, case.batching.iterations(&t), t.meta.top_k)
        })
        .collect()
}

/// `plan`'s 10th percentile stays below EPLB's plus the 0.03 margin.
fn p10_short_of_the_margin(workload: &str, what: &str, plan: &Judged, eplb: &Judged) {
    assert!(
        plan.p10 < eplb.p10 + 0.03,
        "{workload}: {what} {plan:?} vs EPLB {eplb:?}"
    );
}

/// `fewer` copies moved, times `factor`, stay below `more`.
fn fewer_moves(workload: &str, fewer: usize, more: usize, factor: usize) {
    assert!(
        fewer * factor < more,
        "{workload}: moved {fewer} vs {more} (expected fewer than 1/{factor})"
    );
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs ../shared/traces (or $MOESIM_SHARED_TRACES)"
)]
fn robust_plans_beat_eplb_on_later_iterations_of_every_workload() {
    let real = load_real();
    for (case, h, _) in &real {
        assert!(
            h.iterations.len() >= 30,
            "{}: {} iterations",
            case.name,
            h.iterations.len()
        );
    }
    let rows = run_suite(&real);
    eprintln!("{}", table(&rows, 0.03));
    assert_eq!(rows.len(), REAL_TRACES.len() + 5);
    for r in &rows {
        assert!(r.judged_iterations >= 15, "{}", r.workload);
        // Re-plans priced in seconds move far fewer copies than EPLB's fresh re-plans, and the expert work
        // of the most loaded GPU plus the moves takes less time under the same price.
        fewer_moves(&r.workload, r.ours_moved, r.eplb_moved, 1);
        assert!(
            r.ours_seconds < r.eplb_seconds,
            "{}: {} s vs {} s",
            r.workload,
            r.ours_seconds,
            r.eplb_seconds
        );
    }
    // Bursts and rotation: a plan from the generator's exact burst-free popularity of the last iteration
    // before each plan (a perfect forecast of the present) does not clear the margin in p10 either, so a
    // better forecaster could not get moesim there (docs/placement.md).
    for r in rows
        .iter()
        .filter(|r| r.workload.contains("bursts") || r.workload.contains("rotation"))
    {
        p10_short_of_the_margin(&r.workload, "exact state", &r.exact_state, &r.eplb);
    }
    // Only synthetic workloads have an exact state.
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(
            r.exact_state.median.is_nan(),
            i < REAL_TRACES.len(),
            "{}",
            r.workload
        );
    }
    // On the real traces and the drifting synthetic workloads, median and p10 balancedness of later
    // iterations beat EPLB by at least 0.03 (bursts and rotation are not forecastable from history: see
    // the hindsight and exact-state columns of `moesim place --harness`).
    for r in rows
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < REAL_TRACES.len() || r.workload.contains("drift"))
        .map(|(_, r)| r)
    {
        assert!(
            r.beats_eplb(0.03),
            "{}: {:?} vs EPLB {:?}",
            r.workload,
            r.ours,
            r.eplb
        );
    }
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs ../shared/traces (or $MOESIM_SHARED_TRACES)"
)]
fn one_plan_kept_for_the_rest_of_the_run_is_planned_for_a_long_horizon() {
    let real = load_real();
    let rows = run_one_plan_suite(&real);
    eprintln!("{}", one_plan_table(&rows));
    assert_eq!(rows.len(), REAL_TRACES.len() + 5);
    for r in &rows {
        assert!(
            r.judged_iterations >= 15 && r.history >= 15,
            "{}",
            r.workload
        );
        for j in [&r.ours, &r.short_horizon, &r.eplb] {
            assert!(
                0.0 < j.p10 && j.p10 <= j.median && j.median <= 1.0,
                "{}: {j:?}",
                r.workload
            );
        }
    }
    // Training batches (a training run's router trace, as the issue judged it): one plan from 50 iterations
    // of some prompts, kept for 100 iterations of prompts it never saw, beats EPLB by the margin.
    let training = rows
        .iter()
        .find(|r| r.workload.contains("training batches"))
        .expect("a training-batches row");
    assert!(
        training.ours.median >= training.eplb.median + 0.03
            && training.ours.p10 >= training.eplb.p10 + 0.03,
        "{:?} vs EPLB {:?}",
        training.ours,
        training.eplb
    );
    // On the drifting workloads a plan kept for 100 iterations is better off read for a horizon as long as
    // its history than for the next ten iterations (whose backtest picks a short memory that drifts off):
    // why `moesim place` defaults its horizon to the history's length (docs/placement.md).
    for r in rows.iter().filter(|r| r.workload.contains("drift")) {
        assert!(
            r.ours.p10 > r.short_horizon.p10 && r.ours.median > r.short_horizon.median,
            "{}: {:?} vs short horizon {:?}",
            r.workload,
            r.ours,
            r.short_horizon
        );
    }
}

/// Synthetic workloads only (no traces needed): counting a re-plan's gain only while the pattern it adapts
/// to is expected to hold (the layer's backtested half-life) moves fewer copies than counting it over the
/// rest of the run on every synthetic workload where the two windows choose differently, and takes fewer
/// priced seconds over the suite (the gain of adapting to a drifting present fades, so the rest-of-run
/// window over-moves).
#[test]
fn a_moves_gain_counted_while_its_pattern_holds_moves_fewer_copies_for_fewer_seconds() {
    let rest = run_rest_of_run_suite(&[]);
    let persistence = run_suite(&[]);
    eprintln!("{}", decision_window_table(&rest, &persistence));
    assert_eq!(rest.len(), 5);
    for (r, p) in rest.iter().zip(&persistence) {
        assert_eq!(r.workload, p.workload);
        assert_eq!(r.eplb, p.eplb, "{}: EPLB does not price moves", r.workload);
        // Where every move pays even over the persistence window (drift at 128 GPUs × 3 slots, most experts
        // one copy), the two windows make the same choices; wherever they differ, persistence moves fewer.
        if r.ours == p.ours && r.ours_moved == p.ours_moved {
            assert!(
                r.gpus > 64,
                "{}: the windows agree on {} GPUs",
                r.workload,
                r.gpus
            );
            continue;
        }
        fewer_moves(&r.workload, p.ours_moved, r.ours_moved, 1);
    }
    let seconds = |rows: &[moesim_sim::placement::harness::Row]| {
        rows.iter().map(|r| r.ours_seconds).sum::<f64>()
    };
    assert!(
        seconds(&persistence) < seconds(&rest),
        "{} s vs {} s",
        seconds(&persistence),
        seconds(&rest)
    );
}

/// The bursts workload's ceiling: plans given the generator's exact state *and* its burst law (every
/// expert bursting with its probability) hedge the tail a little better than plans given the state alone,
/// but still do not clear the 0.03 margin over EPLB in p10, so no plan made from the past can
/// (docs/placement.md).
#[test]
fn even_the_burst_law_itself_does_not_lift_the_tail_a_margin_above_eplb() {
    let ceilings = burst_ceilings();
    assert_eq!(ceilings.len(), 1, "one workload with bursts");
    for c in &ceilings {
        eprintln!("{c:?}");
        assert!(
            c.burst_law.p10 >= c.exact_state.p10,
            "{}: hedged {:?} vs exact state {:?}",
            c.workload,
            c.burst_law,
            c.exact_state
        );
        p10_short_of_the_margin(&c.workload, "hedged", &c.burst_law, &c.eplb);
    }
}

/// The rotation workload's ceiling at re-plans every ten iterations: plans given the generator's exact state,
/// the exact time of the next hot-spot move, and that it goes to an unknown place (random permutations of
/// the state) do not lift the p10 0.03 above EPLB's, while the same plans told *where* it goes clear the
/// margin in median and p10. What is missing is the direction, which no history shows unless a planner
/// reads it off the generator's expert-id order (docs/placement.md).
#[test]
fn knowing_when_the_hot_spot_moves_but_not_where_does_not_lift_the_tail_a_margin_above_eplb() {
    let ceilings = rotation_ceilings();
    assert_eq!(ceilings.len(), 1, "one workload with rotation");
    for c in &ceilings {
        eprintln!("{c:?}");
        p10_short_of_the_margin(&c.workload, "hedged", &c.unknown_place, &c.eplb);
        assert!(
            c.known_place.median >= c.eplb.median + 0.03 && c.known_place.p10 >= c.eplb.p10 + 0.03,
            "{}: told where the hot spot goes {:?} vs EPLB {:?}",
            c.workload,
            c.known_place,
            c.eplb
        );
    }
}

/// Re-plan decisions checked every iteration (a priced re-plan can run at every opportunity; EPLB, given
/// the same opportunities, re-plans at each) and counted over the persistence window: on rotation and drift
/// moesim clears the 0.03 margin in median and p10 moving a tenth of EPLB's copies or fewer, where every
/// ten iterations it does not on rotation (the ten iterations after each hot-spot move run on the old
/// plan). Synthetic workloads, no traces.
#[test]
fn checked_every_iteration_rotation_and_drift_clear_the_margin() {
    use moesim_sim::placement::harness::{evaluate, synthetic_workloads};
    use moesim_sim::placement::priced::DecisionWindow;
    for w in synthetic_workloads()
        .iter()
        .filter(|w| w.name.contains("rotation") || w.name.contains("drift (64"))
    {
        let mut s = w.setup();
        s.replan_every = 1;
        s.decision_window = DecisionWindow::Persistence;
        let r = evaluate(&w.name, &w.history, Some(&w.state), &s);
        eprintln!("{}", table(std::slice::from_ref(&r), 0.03));
        assert!(
            r.beats_eplb(0.03),
            "{}: {:?} vs EPLB {:?}, moved {} vs {}",
            r.workload,
            r.ours,
            r.eplb,
            r.ours_moved,
            r.eplb_moved
        );
        fewer_moves(&r.workload, r.ours_moved, r.eplb_moved, 10);
    }
}
