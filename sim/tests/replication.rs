//! EP with replicated experts in the simulator: plans are scored by simulated step time, copies follow the
//! load, re-plans move few experts, and every routed token still reaches a copy.

use crate::common;
use common::{run, scenario};
use moesim_sim::result::StrategyResult;

const BASE: &[&str] = &["workload.iterations=30", "cluster.compute_noise_cv=0"];

fn replicated(extra: &[&str]) -> StrategyResult {
    let mut o: Vec<&str> = BASE.to_vec();
    o.extend_from_slice(extra);
    run(&scenario("quickstart.toml", &o))
        .into_iter()
        .find(|r| r.kind == "ep-replicated")
        .expect("ep-replicated")
}

#[test]
fn replication_beats_static_ep_under_skew() {
    let results = run(&scenario("quickstart.toml", BASE));
    let ep = results.iter().find(|r| r.strategy == "ep16").unwrap();
    let rep = results.iter().find(|r| r.kind == "ep-replicated").unwrap();
    // After the first re-plan, copies of the hot experts take load off the hot ranks' links and compute.
    assert!(
        rep.step_time_ms.p50 < 0.6 * ep.step_time_ms.p50,
        "{} vs {}",
        rep.step_time_ms.p50,
        ep.step_time_ms.p50
    );
    let r = rep.replication.as_ref().unwrap();
    assert_eq!(r.moved_copies_per_replan.len(), 2);
    // The final plan: 8 slots on each of 16 ranks, every expert present, no GPU with two copies of one.
    for layer in &r.placement_per_layer {
        assert!(layer.iter().all(|slots| slots.len() == 8));
        let mut all: Vec<usize> = layer.iter().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 64);
        for slots in layer {
            let mut s = slots.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), slots.len());
        }
    }
}

#[test]
fn link_aware_plan_beats_load_only_plan_in_simulated_step_time() {
    // 8 slots per GPU: room for a copy of every expert in each node.
    // Load-only: EPLB's placement with an even token split (what load balancers optimise).
    let load_only = replicated(&[
        "strategy.3.slots_per_gpu=8",
        "strategy.3.placement=eplb",
        "strategy.3.token_split=even",
    ]);
    // Link-aware: the same number of copies in each node, tokens served inside their node.
    let link_aware = replicated(&[
        "strategy.3.slots_per_gpu=8",
        "strategy.3.placement=moesim",
        "strategy.3.token_split=local-first",
    ]);
    let even_moesim = replicated(&[
        "strategy.3.slots_per_gpu=8",
        "strategy.3.placement=moesim",
        "strategy.3.token_split=even",
    ]);
    eprintln!(
        "p50: load-only {:.2} ms, moesim+even {:.2} ms, link-aware {:.2} ms; network bytes {:.3e} vs {:.3e}",
        load_only.step_time_ms.p50,
        even_moesim.step_time_ms.p50,
        link_aware.step_time_ms.p50,
        load_only.network_bytes_per_iteration,
        link_aware.network_bytes_per_iteration
    );
    assert!(link_aware.step_time_ms.p50 < load_only.step_time_ms.p50);
    assert!(link_aware.step_time_ms.p50 < even_moesim.step_time_ms.p50);
    assert!(link_aware.network_bytes_per_iteration < load_only.network_bytes_per_iteration);
}

#[test]
fn moesim_replans_move_fewer_copies_than_eplb() {
    let ours = replicated(&["strategy.3.placement=moesim"]);
    let base = replicated(&["strategy.3.placement=eplb"]);
    let moved = |r: &StrategyResult| {
        r.replication
            .as_ref()
            .unwrap()
            .moved_copies_per_replan
            .iter()
            .sum::<usize>()
    };
    // The second re-plan sees nearly the same forecast: moesim keeps its placement, EPLB reshuffles.
    assert!(
        moved(&ours) < moved(&base),
        "{} vs {}",
        moved(&ours),
        moved(&base)
    );
    assert!(ours.breakdown_ms["rebalance"] <= base.breakdown_ms["rebalance"]);
}

#[test]
fn every_routed_token_reaches_a_copy() {
    let r = replicated(&["strategy.3.token_split=local-first"]);
    let s = scenario("quickstart.toml", BASE);
    let assignments = (s.cluster.gpus() as u64
        * s.tokens_per_rank()
        * s.model.top_k as u64
        * s.model.moe_layers() as u64) as f64;
    let received: f64 = r.per_rank.iter().map(|p| p.tokens_received).sum();
    assert!(
        (received - assignments).abs() < 1e-6 * assignments,
        "{received} vs {assignments}"
    );
}

#[test]
fn replication_knobs_are_rejected_on_plain_ep() {
    let e = common::scenario_error("quickstart.toml", "strategy.0.slots_per_gpu=5");
    assert!(
        e.contains("applies only to kind = \"ep-replicated\""),
        "{e}"
    );
    let e = common::scenario_error("quickstart.toml", "strategy.3.slots_per_gpu=3");
    assert!(e.contains("cannot hold 64 experts"), "{e}");
}

#[test]
fn warm_up_before_the_first_plan_is_reported_apart() {
    // The first window runs on a plan for uniform load; steady state starts at the first re-plan.
    let s = scenario("quickstart.toml", &["workload.iterations=25"]);
    let r = run(&s)
        .into_iter()
        .find(|r| r.kind == "ep-replicated")
        .unwrap();
    let interval = s
        .strategies
        .iter()
        .find(|st| st.name == r.strategy)
        .unwrap()
        .replication
        .unwrap()
        .replan_interval;
    assert_eq!(r.warmup_iterations, interval);
    let steady = r.steady_step_time_ms.as_ref().unwrap();
    let later: Vec<f64> = r.per_iteration[interval..]
        .iter()
        .map(|i| i.step_ms)
        .collect();
    let mean = later.iter().sum::<f64>() / later.len() as f64;
    assert!((steady.mean - mean).abs() < 1e-9 * mean);
    let all = r.step_time_ms.mean;
    let warm: f64 = r.per_iteration[..interval]
        .iter()
        .map(|i| i.step_ms)
        .sum::<f64>()
        / interval as f64;
    // The overall mean is the iteration-weighted mix of the warm-up and the steady state. (Which of the two
    // is slower depends on the workload: the steady state pays for moved copies, the warm-up for a plan
    // made for uniform load; on the quickstart's mild skew they are within a percent.)
    let n = r.per_iteration.len() as f64;
    let mixed = (warm * interval as f64 + steady.mean * (n - interval as f64)) / n;
    assert!((all - mixed).abs() < 1e-9 * all, "{all} vs {mixed}");
    assert!(all >= warm.min(steady.mean) && all <= warm.max(steady.mean));
    // Static EP has no warm-up.
    let ep = run(&s).into_iter().find(|r| r.kind == "ep").unwrap();
    assert_eq!(ep.warmup_iterations, 0);
    assert!(ep.steady_step_time_ms.is_none());
}

/// `replan_gain = "persistence"`: under drift the saving of a move is counted only while the layer's pattern
/// holds, so moesim's re-plans move fewer copies than when it is counted over the rest of the run. The knob
/// belongs to ep-replicated only.
#[test]
fn a_moves_gain_counted_while_the_pattern_holds_moves_fewer_copies_under_drift() {
    let drift = "workload.dynamics={ drift_sigma = 0.5, drift_persistence = 0.9 }";
    let moved = |gain: &str| {
        let r = replicated(&[
            drift,
            "strategy.3.replan_interval=2",
            &format!("strategy.3.replan_gain={gain}"),
        ]);
        let rep = r.replication.as_ref().unwrap();
        let moved = rep.moved_copies_per_replan.iter().sum::<usize>();
        eprintln!(
            "{gain}: {moved} copies moved, mean step {:.3} ms, rebalance {:.3} ms",
            r.step_time_ms.mean, r.breakdown_ms["rebalance"]
        );
        moved
    };
    let (rest, persistence) = (moved("rest-of-run"), moved("persistence"));
    assert!(persistence < rest, "{persistence} vs {rest}");
    let e = common::scenario_error("quickstart.toml", "strategy.0.replan_gain=persistence");
    assert!(e.contains("applies only to kind"), "{e}");
}
