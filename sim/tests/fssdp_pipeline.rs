//! FSSDP composed with pipeline parallelism (and with tensor parallelism inside the stages), through the
//! whole strategy (scenario → routing → lowering → engine): the pipeline's bubble with FSSDP stages, tokens
//! and expert copies kept inside each stage, a stage's experts owned by its own GPUs, the per-stage dense
//! gradient all-reduce, Megatron's sequence-parallel traffic per stage, determinism, and the layouts it
//! refuses.

use crate::common;

use common::{ideal_pipeline, rel};
use moesim_sim::Scenario;
use moesim_sim::phase::Phase;
use moesim_sim::runner::synthetic_routing_shaped;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::ep::EpModel;
use moesim_sim::strategy::fssdp::{FssdpIteration, FssdpModel, FssdpWorkspace};
use moesim_sim::topology::Topology;

fn ideal(strategy: &str, micro_batches: usize) -> Scenario {
    ideal_pipeline("fssdp", strategy, micro_batches, "")
}

fn step_ms(s: &Scenario) -> f64 {
    common::run(s)[0].step_time_ms.mean
}

/// Runs `f` on the FSSDP model of `s`'s first strategy and its iteration 0.
fn with_iteration<T>(s: &Scenario, f: impl FnOnce(&FssdpModel, FssdpIteration) -> T) -> T {
    with_iteration_at(s, 0, f)
}

/// Runs `f` on the FSSDP model of `s`'s first strategy and its iteration `at`.
fn with_iteration_at<T>(
    s: &Scenario,
    at: usize,
    f: impl FnOnce(&FssdpModel, FssdpIteration) -> T,
) -> T {
    let strategy = &s.strategies[0];
    let topo = Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let routing = synthetic_routing_shaped(s, EpModel::routing_shape_for(s, strategy));
    let model = FssdpModel::new(s, strategy, &topo, &cost, &routing);
    let it = model.simulate_iteration(at, &mut FssdpWorkspace::default());
    f(&model, it)
}

const PP4: &str = "pp = 4\nstage_layers = [2, 2, 2, 2]";

#[test]
fn fssdp_stages_keep_the_one_f_one_b_bubble_of_p_minus_1_over_m_plus_p_minus_1() {
    // Equal stages, balanced routing, negligible communication: one micro-batch runs the four stages one
    // after another, and m of them take (m + p − 1) stage slots.
    let p = 4.0;
    let one = step_ms(&ideal(PP4, 1));
    for m in [4usize, 8] {
        let step = step_ms(&ideal(PP4, m));
        let bubble = 1.0 - m as f64 * (one / p) / step;
        let closed = (p - 1.0) / (m as f64 + p - 1.0);
        assert!(
            (bubble - closed).abs() < 1e-3,
            "m = {m}: {bubble} vs {closed}"
        );
        let gpipe = step_ms(&ideal(&format!("{PP4}\npipeline_schedule = \"gpipe\""), m));
        assert!(rel(gpipe, step) < 1e-3, "gpipe {gpipe} vs 1f1b {step}");
    }
}

#[test]
fn tokens_and_expert_copies_stay_inside_their_stage() {
    // pp 2 on 8 GPUs: stage r is GPUs 4r..4r+4 and holds 4 of the 8 MoE layers. Every GPU of a stage is a
    // token source of its own micro-batch; each layer's tokens reach copies on its own stage's GPUs only.
    let s = ideal("pp = 2", 4);
    with_iteration(&s, |_, it| {
        let m = &s.model;
        let (stage, mbs) = (4u64, s.workload.micro_batches as u64);
        let per_layer = stage * s.tokens_per_rank() * m.top_k as u64 * mbs;
        assert_eq!(it.base.routed, per_layer * m.moe_layers() as u64);
        for r in 0..2 {
            let got: u64 = it.base.tokens_received[4 * r..4 * r + 4].iter().sum();
            assert_eq!(got, per_layer * 4, "stage {r}");
        }
        // spAG delivers each materialized copy's weights once.
        let expect = it.materialized as f64 * m.expert_bytes() as f64;
        assert!(
            rel(it.spag_bytes, expect) < 1e-12,
            "{} vs {expect}",
            it.spag_bytes
        );
        assert!(it.materialized > 0);
    });
}

#[test]
fn a_stages_gpus_own_the_experts_of_its_layers() {
    // Homogeneous sharding: each GPU owns E / S experts of each layer of its stage, E·L / G in all, for a
    // plain pipeline and for interleaved chunks alike; the first layer's owners are the first stage's GPUs.
    for strategy in [
        "pp = 2".to_string(),
        "pp = 2\npipeline_schedule = \"interleaved\"\nvirtual_stages = 2\nstage_layers = [2, 2, 2, 2]"
            .to_string(),
    ] {
        let s = ideal(&strategy, 4);
        with_iteration(&s, |model, _| {
            let m = &s.model;
            let per_gpu = m.experts * m.moe_layers() / s.cluster.gpus();
            assert_eq!(model.owned_experts_max(), per_gpu, "{strategy}");
            let first = model.placement();
            for (g, owned) in first.iter().enumerate() {
                let expect = if g < 4 { m.experts / 4 } else { 0 };
                assert_eq!(owned.len(), expect, "{strategy}: GPU {g} owns {owned:?}");
            }
        });
    }
}

#[test]
fn each_stage_all_reduces_its_own_dense_gradients_over_its_gpus() {
    // A ring all-reduce of B bytes over n GPUs sends 2(n − 1)/n · B from each, 2(n − 1) · B in all. Without
    // a pipeline the whole model's dense gradients go round all 8 GPUs; with pp 2 each stage's half goes
    // round its 4. Mixtral's dense parameters (attention, router; an 8-word vocabulary) split evenly.
    let bytes = |strategy: &str| {
        with_iteration(&ideal(strategy, 4), |_, it| {
            it.base.outcome.phase_bytes[Phase::GradSync.index()]
        })
    };
    let (flat, piped) = (bytes(""), bytes("pp = 2"));
    let expect = flat * (4.0 - 1.0) / (8.0 - 1.0);
    assert!(rel(piped, expect) < 1e-3, "{piped} vs {expect}");
}

#[test]
fn tensor_parallel_stages_move_megatrons_traffic_and_route_their_sequence_shards() {
    // With pp 2 each layer runs on one stage's 4 GPUs per micro-batch: per layer and direction an
    // all-gather and a reduce-scatter of the micro-batch's activations (t·d elements) around attention over
    // each TP group, (tp − 1)/tp of them sent by each of the stage's GPUs. Each GPU routes its 1/tp
    // sequence shard.
    for tp in [2usize, 4] {
        let s = ideal(&format!("pp = 2\ntp = {tp}"), 4);
        with_iteration(&s, |_, it| {
            let m = &s.model;
            let mbs = s.workload.micro_batches as f64;
            let act = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
            let expect = m.layers as f64 * mbs * 4.0 * (tp as f64 - 1.0) / tp as f64 * act * 4.0;
            let got = it.base.outcome.phase_bytes[Phase::TensorParallel.index()];
            assert!(rel(got, expect) < 1e-9, "tp {tp}: {got} vs {expect}");
            let shard = s.tokens_per_rank() / tp as u64;
            let routed = 4 * shard * m.top_k as u64 * mbs as u64 * m.moe_layers() as u64;
            assert_eq!(it.base.routed, routed, "tp {tp}");
            let received: u64 = it.base.tokens_received.iter().sum();
            assert_eq!(received, routed, "tp {tp}");
        });
    }
    // TP splits each stage's dense work: the step shrinks.
    let (flat, split) = (
        step_ms(&ideal("pp = 2", 4)),
        step_ms(&ideal("pp = 2\ntp = 2", 4)),
    );
    assert!(split < flat, "{split} vs {flat}");
}

#[test]
fn calibration_under_a_pipeline_only_adds_copies_on_the_critical_path() {
    // 32 experts, 2 copies per GPU and layer beyond its own, skewed routing whose popularity drifts fast,
    // links fast enough that a gather costs next to nothing: the forecast (the mean of earlier iterations)
    // misses the iteration's loads, so re-planning on the actual loads adds copies (never removes one) where
    // the predicted MoE-block time they save pays for the gather after the gate.
    let drifting = |calibrate: bool| {
        let strategy = format!("pp = 2\nmemory_cap_experts = 2\ncalibrate = {calibrate}");
        let mut s = ideal_pipeline("fssdp", &strategy, 4, "experts = 32");
        s.workload.skew = moesim_traces::Skew::Zipf { s: 1.5 };
        s.workload.iterations = 6;
        s.workload.dynamics.drift_sigma = 1.0;
        s.workload.dynamics.drift_persistence = 0.3;
        s
    };
    let (plain, cal) = (drifting(false), drifting(true));
    let (a, b) = (
        with_iteration_at(&plain, 5, |_, it| it),
        with_iteration_at(&cal, 5, |_, it| it),
    );
    assert!(b.calibrated > 0, "no layer calibrated");
    assert!(
        b.materialized > a.materialized,
        "{} vs {}",
        b.materialized,
        a.materialized
    );
    assert!(b.spag_bytes > a.spag_bytes);
    assert_eq!(b.base.routed, a.base.routed);
}

#[test]
fn pipelined_fssdp_is_deterministic_across_thread_counts() {
    common::assert_same_on_one_and_two_threads(&ideal("pp = 2\ntp = 2\nrematerialize = true", 4));
}

#[test]
fn layouts_pipelined_fssdp_cannot_run_are_refused_naming_their_field() {
    let err = |nodes: usize, strategy: &str| {
        let text = format!(
            "name = \"x\"\n[model]\npreset = \"mixtral-8x7b\"\n[cluster]\npreset = \"dgx-h100\"\n\
             nodes = {nodes}\n[workload]\nmode = \"training\"\nmicro_batches = 4\n[[strategy]]\n\
             name = \"s\"\nkind = \"fssdp\"\n{strategy}\n"
        );
        format!(
            "{:?}",
            parse_scenario("x.toml", &text, &[]).expect_err("refused")
        )
    };
    for (nodes, strategy, field) in [
        (
            2,
            "pp = 2\npipeline_schedule = \"dual-pipe\"",
            "strategy[0].pipeline_schedule",
        ),
        // 24 GPUs in 2 stages of 12: a stage holds a node and a half.
        (3, "pp = 2", "strategy[0].pp"),
    ] {
        let e = err(nodes, strategy);
        assert!(e.contains(field), "{strategy}: {e}");
    }
}
