//! FSSDP composed with tensor parallelism, through the whole strategy (scenario → routing → lowering →
//! engine): Megatron's sequence-parallel traffic, each GPU's sequence shard routed to the expert copies,
//! dense weights and work split over the TP group, and TP 1 as plain FSSDP.

use crate::common;

use common::rel;
use moesim_sim::Scenario;
use moesim_sim::phase::Phase;
use moesim_sim::runner::synthetic_routing_shaped;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::ep::EpModel;
use moesim_sim::strategy::fssdp::{FssdpIteration, FssdpModel, FssdpWorkspace};
use moesim_sim::strategy::record::IterationRecord;
use moesim_sim::topology::Topology;

/// Mixtral's shapes (8 layers) on 8 GPUs of an ideal roofline, balanced routing, FSSDP with `strategy`.
fn ideal(strategy: &str, extra: &str) -> Scenario {
    let text = format!(
        "name = \"fssdp-tp\"\nseed = 3\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 8\nvocab = 8\n\
         seq_len = 4096\nmicro_batch = 1\n{extra}\n[cluster]\npreset = \"ideal\"\ngpus_per_node = 8\n\
         peak_tflops = 1000.0\n[workload]\nmode = \"training\"\niterations = 1\nmicro_batches = 2\n\
         skew = {{ distribution = \"balanced\" }}\n[[strategy]]\nname = \"s\"\nkind = \"fssdp\"\n{strategy}\n"
    );
    parse_scenario("fssdp-tp.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Iteration 0 of the scenario's first strategy (FSSDP) on its own synthetic routing.
fn iteration(s: &Scenario) -> FssdpIteration {
    let strategy = &s.strategies[0];
    let topo = Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let routing = synthetic_routing_shaped(s, EpModel::routing_shape_for(s, strategy));
    let model = FssdpModel::new(s, strategy, &topo, &cost, &routing);
    model.simulate_iteration(0, &mut FssdpWorkspace::default())
}

/// The scenario with FSSDP at `tp` (`extra` in `[model]`) and its iteration 0's record.
fn at_tp(tp: usize, extra: &str) -> (Scenario, IterationRecord) {
    let s = ideal(&format!("tp = {tp}"), extra);
    let rec = iteration(&s).base;
    (s, rec)
}

#[test]
fn tensor_parallel_fssdp_moves_megatrons_sequence_parallel_traffic() {
    // Per layer and direction, an all-gather and a reduce-scatter of the micro-batch's activations (t·d
    // elements) around attention; Mixtral's MoE block has no shared expert, so its router and routed
    // experts take the sequence shard without a TP collective. A ring over tp GPUs sends (tp−1)/tp of
    // them from each GPU, and every GPU of the cluster is in one TP group.
    for tp in [2usize, 4, 8] {
        let (s, rec) = at_tp(tp, "");
        let m = &s.model;
        let act = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
        let expect =
            m.layers as f64 * s.workload.micro_batches as f64 * (2.0 * 2.0) * (tp as f64 - 1.0)
                / tp as f64
                * act
                * s.cluster.gpus() as f64;
        let got = rec.outcome.phase_bytes[Phase::TensorParallel.index()];
        assert!(rel(got, expect) < 1e-9, "tp {tp}: {got} vs {expect}");
        // DeepSeek-style dense first layers add their MLP block's pair.
        let got2 = at_tp(tp, "first_dense_layers = 2").1.outcome.phase_bytes
            [Phase::TensorParallel.index()];
        let expect2 = expect * (m.layers as f64 + 2.0) / m.layers as f64;
        assert!(rel(got2, expect2) < 1e-9, "tp {tp}: {got2} vs {expect2}");
    }
    // Without TP there is no such traffic.
    let none = iteration(&ideal("", "")).base;
    assert_eq!(none.outcome.phase_bytes[Phase::TensorParallel.index()], 0.0);
}

#[test]
fn every_gpu_routes_its_sequence_shard_to_the_expert_copies() {
    // Conservation: each GPU sends top_k copies of its 1/tp share of every micro-batch's tokens per MoE
    // layer, and the copies all arrive (balanced routing drops nothing).
    for tp in [1usize, 2, 4] {
        let (s, rec) = at_tp(tp, "");
        let m = &s.model;
        let sent = s.cluster.gpus() as u64
            * s.workload.micro_batches as u64
            * m.moe_layers() as u64
            * (s.tokens_per_rank() / tp as u64)
            * m.top_k as u64;
        assert_eq!(rec.routed, sent, "tp {tp}");
        assert_eq!(rec.tokens_received.iter().sum::<u64>(), sent, "tp {tp}");
        assert_eq!(rec.dropped, 0);
    }
}

#[test]
fn the_tp_group_splits_dense_weights_and_work_and_the_cluster_serves_fewer_replicas() {
    let one = common::run(&ideal("", ""));
    let two = common::run(&ideal("tp = 2", ""));
    let (a, b) = (&one[0], &two[0]);
    // Dense weights split over the pair; routed experts (owned whole) and Mixtral's tiny dense part make
    // the rest. Parameters on a rank: dense / tp + owned experts.
    let s = ideal("", "");
    let dense_gib =
        s.model.dense_params() as f64 * s.model.dtype_bytes as f64 / moesim_sim::memory::GIB;
    assert!(
        rel(a.memory.params_gib - b.memory.params_gib, dense_gib / 2.0) < 1e-9,
        "{} vs {}",
        a.memory.params_gib,
        b.memory.params_gib
    );
    // Each TP rank computes half of each layer's dense GEMMs and attention.
    let dense = |r: &moesim_sim::result::StrategyResult| r.breakdown_ms["dense_compute"];
    assert!(
        dense(b) < 0.6 * dense(a),
        "dense {} vs {}",
        dense(b),
        dense(a)
    );
    // Half as many data-parallel replicas process half the tokens per iteration.
    let tokens_a = a.tokens_per_s * a.step_time_ms.mean;
    let tokens_b = b.tokens_per_s * b.step_time_ms.mean;
    assert!(
        rel(tokens_b, tokens_a / 2.0) < 1e-9,
        "{tokens_b} vs {tokens_a}"
    );
}
