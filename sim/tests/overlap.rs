//! Communication/compute overlap from first principles: two micro-batch parts in flight, SM sharing, and
//! the exposed/hidden split; every strategy works under both network backends.

use moesim_sim::result::StrategyResult;
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;
use moesim_sim::timeline::iteration_timelines;

/// Mixtral-shaped prefill on 8 GPUs of an ideal switch with an exact roofline (linear in tokens, no launch
/// overhead), balanced routing, and communication that takes no SMs.
const SCENARIO: &str = r#"
seed = 3
[model]
preset = "mixtral-8x7b"
layers = 4
seq_len = 4096
micro_batch = 2
[cluster]
preset = "ideal"
gpus_per_node = 8
peak_tflops = 1000.0
ideal_link_gbytes_per_s = 400.0
ideal_latency_us = 5.0
comm_sm_fraction = 0.0
[workload]
mode = "prefill"
iterations = 2
skew = { distribution = "balanced" }
[[strategy]]
name = "ep8"
kind = "ep"
ep_size = 8
[[strategy]]
name = "ep8-overlap"
kind = "ep"
ep_size = 8
overlap_micro_batches = 2
"#;

fn results(overrides: &[&str]) -> Vec<StrategyResult> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let s = parse_scenario("overlap.toml", SCENARIO, &o).unwrap();
    simulate_scenario(
        &s,
        &synthetic_routing(&s),
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    )
    .results
}

fn comm_ms(r: &StrategyResult) -> f64 {
    r.comm_exposed_ms + r.comm_hidden_ms
}

#[test]
fn two_parts_hide_communication_that_is_shorter_than_the_compute_beside_it() {
    // Without overlap a layer is dense → dispatch → experts → combine, one after another: the step is the
    // compute stream's busy time plus every all-to-all, and nothing is hidden. With two parts, part A's
    // dispatch runs during part B's dense compute, A's combine during B's experts, B's combine during A's
    // next dense compute (or the output head after the last layer). When every half all-to-all is shorter
    // than the half compute beside it (checked below from the run itself), the compute stream never waits:
    // the step equals its busy time and all communication is hidden.
    let r = results(&[]);
    let (seq, ov) = (&r[0], &r[1]);
    let busy = |x: &StrategyResult| x.per_rank.iter().map(|p| p.busy_ms).sum::<f64>() / 8.0;
    let tol = 1e-6;
    assert!(
        (seq.step_time_ms.mean - (busy(seq) + comm_ms(seq))).abs() < tol * seq.step_time_ms.mean,
        "sequential: step {} vs busy {} + comm {}",
        seq.step_time_ms.mean,
        busy(seq),
        comm_ms(seq)
    );
    assert!(seq.comm_hidden_ms.abs() < 1e-9);
    // The precondition, from the sequential run's per-phase critical-path times: each half all-to-all
    // (dispatch or combine) is shorter than each half compute block (dense, experts) of a layer.
    let per_layer = |k: &str| seq.breakdown_ms[k] / 4.0;
    let half_comm = per_layer("dispatch").max(per_layer("combine")) / 2.0;
    let half_compute =
        (per_layer("expert_compute")).min(seq.breakdown_ms["dense_compute"] / 5.0) / 2.0;
    assert!(half_comm < half_compute, "{half_comm} vs {half_compute}");
    assert!(
        (ov.step_time_ms.mean - busy(ov)).abs() < tol * ov.step_time_ms.mean,
        "overlapped: step {} vs busy {}",
        ov.step_time_ms.mean,
        busy(ov)
    );
    assert!(
        ov.comm_exposed_ms < 1e-6 * comm_ms(ov),
        "exposed {}",
        ov.comm_exposed_ms
    );
    // The same bytes move; the step saves (almost) all of the sequential run's communication.
    assert!((ov.network_bytes_per_iteration - seq.network_bytes_per_iteration).abs() < 1.0);
    let saved = seq.step_time_ms.mean - ov.step_time_ms.mean;
    assert!(
        saved > 0.9 * comm_ms(seq),
        "saved {saved} of {}",
        comm_ms(seq)
    );
}

#[test]
fn communication_kernels_slow_the_compute_they_overlap_by_their_sm_share() {
    // With communication taking 20 % of the SMs, the overlapped run's compute stretches while all-to-alls
    // run beside it: the step grows by at most 0.25 × the hidden communication (1 / (1 − 0.2) − 1), and by
    // more than nothing; the sequential run has nothing beside its compute and does not change.
    let base = results(&[]);
    let shared = results(&["cluster.comm_sm_fraction=0.2"]);
    assert!((shared[0].step_time_ms.mean - base[0].step_time_ms.mean).abs() < 1e-9);
    let grew = shared[1].step_time_ms.mean - base[1].step_time_ms.mean;
    assert!(grew > 0.0);
    assert!(grew <= 0.25 * base[1].comm_hidden_ms * 1.0001, "{grew}");
}

/// A small training scenario with every training strategy kind, on two DGX nodes.
const KINDS: &str = include_str!("data/every-kind.toml");

/// A small decode scenario with an offloading strategy.
const OFFLOAD: &str = include_str!("data/offload-small.toml");

#[test]
fn every_strategy_kind_simulates_and_has_a_timeline_under_both_backends() {
    for text in [KINDS, OFFLOAD] {
        for network in ["analytic", "flow"] {
            let o = vec![format!("cluster.network=\"{network}\"")];
            let s = parse_scenario("kinds.toml", text, &o).unwrap();
            check(&s, network);
        }
    }
}

fn check(s: &moesim_sim::Scenario, network: &str) {
    let routing = synthetic_routing(s);
    let report = simulate_scenario(s, &routing, None, RunOptions::default());
    for (st, r) in s.strategies.iter().zip(&report.results) {
        assert!(r.step_time_ms.mean > 0.0, "{} {network}", r.strategy);
        assert_eq!(r.network, network);
        let tl = iteration_timelines(s, st, &routing, None, 0..1).unwrap();
        assert_eq!(
            tl[0].step,
            (r.per_iteration[0].step_ms * 1e9).round() as u64
        );
        assert!(!tl[0].ops.is_empty());
        if network == "flow" && r.kind != "offload" {
            assert!(r.flows > 0, "{}", r.strategy);
            assert!(!tl[0].links.is_empty(), "{}", r.strategy);
        }
    }
}

#[test]
fn stream_priorities_parse_and_change_nothing_under_the_analytic_backend() {
    let with = |line: &str| KINDS.replacen("[cluster]", &format!("[cluster]\n{line}"), 1);
    let run = |text: &str| {
        let s = parse_scenario("kinds.toml", text, &[]).unwrap();
        simulate_scenario(&s, &synthetic_routing(&s), None, RunOptions::default()).results
    };
    let plain = run(KINDS);
    let prioritised = run(&with("stream_priority = { comm = 2, comm-aux = 1 }"));
    for (a, b) in plain.iter().zip(&prioritised) {
        assert_eq!(a.step_time_ms.mean, b.step_time_ms.mean, "{}", a.strategy);
    }
    let err = parse_scenario("kinds.toml", &with("stream_priority = { comms = 1 }"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("comms"), "{err}");
}
