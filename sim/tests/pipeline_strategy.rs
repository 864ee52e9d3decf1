//! Tensor and pipeline parallelism composed with EP, checked through the whole strategy (scenario → routing
//! → lowering → engine) against closed forms: pipeline bubbles, Megatron's tensor-parallel traffic, the
//! activations a schedule keeps in flight.

use crate::common;

use common::{ep_iteration as iteration, rel};
use moesim_sim::Scenario;
use moesim_sim::phase::Phase;
use moesim_sim::pipeline::schedule::{Schedule, ScheduleKind};
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing_shaped};
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::ep::EpModel;
use moesim_sim::strategy::shared::attention_backward_extra_s;
use moesim_sim::timeline::iteration_timelines;
use moesim_sim::topology::Topology;

/// Mixtral's shapes on 8 GPUs of an ideal roofline whose links are so fast that communication is
/// negligible; balanced routing, no noise, a negligible output head, equal stages.
fn ideal(strategy: &str, micro_batches: usize, extra: &str) -> Scenario {
    ideal_kind("ep", strategy, micro_batches, extra)
}

/// [`ideal`] with a strategy of kind `kind`.
fn ideal_kind(kind: &str, strategy: &str, micro_batches: usize, extra: &str) -> Scenario {
    common::ideal_pipeline(kind, strategy, micro_batches, extra)
}

/// The scenario simulated on its synthetic workload, without wall-clock fields.
fn report(s: &Scenario) -> moesim_sim::result::SimulationReport {
    simulate_scenario(
        s,
        &moesim_sim::runner::synthetic_routing(s),
        None,
        RunOptions {
            timing: false,
            progress: None,
        },
    )
}

fn step_ms(s: &Scenario) -> f64 {
    report(s).results[0].step_time_ms.mean
}

const PP4: &str = "pp = 4\nep_size = 2\nstage_layers = [2, 2, 2, 2]";

#[test]
fn one_f_one_b_bubble_is_p_minus_1_over_m_plus_p_minus_1() {
    let p = 4.0;
    // One micro-batch runs the stages one after another: p·(F+B).
    let one = step_ms(&ideal(PP4, 1, ""));
    for m in [4usize, 8, 12] {
        let step = step_ms(&ideal(PP4, m, ""));
        let expect = (m as f64 + p - 1.0) * one / p;
        assert!(rel(step, expect) < 1e-3, "m = {m}: {step} vs {expect}");
        let bubble = 1.0 - m as f64 * (one / p) / step;
        let closed = (p - 1.0) / (m as f64 + p - 1.0);
        assert!((bubble - closed).abs() < 1e-3, "{bubble} vs {closed}");
        // GPipe has the same bubble.
        let gpipe = step_ms(&ideal(
            &format!("{PP4}\npipeline_schedule = \"gpipe\""),
            m,
            "",
        ));
        assert!(rel(gpipe, step) < 1e-3, "gpipe {gpipe} vs 1f1b {step}");
    }
}

#[test]
fn interleaving_divides_the_bubble_by_the_virtual_stages() {
    let (p, v) = (4.0, 2.0);
    let one = step_ms(&ideal(PP4, 1, ""));
    let per_mb = one / p;
    let m = 8usize;
    let flat = step_ms(&ideal(PP4, m, ""));
    let interleaved = step_ms(&ideal(
        "pp = 4\nep_size = 2\npipeline_schedule = \"interleaved\"\nvirtual_stages = 2\n\
         stage_layers = [1, 1, 1, 1, 1, 1, 1, 1]",
        m,
        "",
    ));
    let bubble_flat = flat - m as f64 * per_mb;
    let bubble_interleaved = interleaved - m as f64 * per_mb;
    assert!(
        rel(bubble_interleaved, bubble_flat / v) < 1e-2,
        "{bubble_interleaved} vs {}",
        bubble_flat / v
    );
    // Megatron's fraction: (p−1)/(v·m) of the ideal time.
    let fraction = bubble_interleaved / (m as f64 * per_mb);
    assert!(
        (fraction - (p - 1.0) / (v * m as f64)).abs() < 1e-3,
        "{fraction}"
    );
}

#[test]
fn dual_pipe_bubble_matches_its_papers_formula() {
    let p = 4;
    let m = 8;
    // The formula's premise, B = 2F and W = F (the weight half of the backward), holds for layers of
    // GEMMs with weights; attention's score products (2.5× in backward, none of it weight gradient) are
    // made negligible here with one-wide heads.
    const THIN: &str = "attn_qk_head_dim = 1\nattn_v_head_dim = 1";
    let base = ideal(PP4, 1, THIN);
    let one = step_ms(&base);
    let fb = one / p as f64;
    let e = attention_backward_extra_s(&base, &base.cluster.roofline(), base.tokens_per_rank(), 1);
    assert!(
        e * 1e3 < 1e-4 * fb,
        "{e} s of attention backward is not negligible"
    );
    let (f, b, w) = (fb / 3.0, 2.0 * fb / 3.0, fb / 3.0);
    let dual = step_ms(&ideal(
        "pp = 4\nep_size = 2\npipeline_schedule = \"dual-pipe\"\nstage_layers = [2, 2, 2, 2]",
        m,
        THIN,
    ));
    let schedule = Schedule::build(ScheduleKind::DualPipe, p, 1, m).unwrap();
    let expect = m as f64 * fb * (1.0 + schedule.closed_form_bubble(f, b, w));
    assert!(rel(dual, expect) < 1e-3, "{dual} vs {expect}");
}

#[test]
fn tensor_parallel_traffic_is_megatrons_count() {
    // Megatron with sequence parallelism: per transformer layer and direction, two all-gathers and two
    // reduce-scatters of the micro-batch's activations (t·d elements); a ring over tp GPUs sends
    // (tp−1)/tp of them from each GPU. Mixtral's MoE layers have no shared expert: their MLP block is the
    // routed experts, which take the sequence shard through the all-to-all, so one AG + RS per direction.
    for (tp, ep) in [(2usize, 2usize), (4, 4), (8, 8)] {
        let s = ideal(&format!("tp = {tp}\npp = 1\nep_size = {ep}"), 2, "");
        let rec = iteration(&s);
        let m = &s.model;
        let act = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
        let per_gpu_per_collective = (tp as f64 - 1.0) / tp as f64 * act;
        let collectives_per_layer = 2.0 * 2.0; // (AG + RS) × (forward + backward), attention only
        // The simulated unit of the stage: lcm(ep, tp) GPUs.
        let gpus = tp.max(ep) as f64;
        let expect = m.layers as f64
            * s.workload.micro_batches as f64
            * collectives_per_layer
            * per_gpu_per_collective
            * gpus;
        let got = rec.outcome.phase_bytes[Phase::TensorParallel.index()];
        assert!(rel(got, expect) < 1e-9, "tp {tp}: {got} vs {expect}");
        // A dense layer adds its MLP block's pair: DeepSeek-style first dense layers.
        let s2 = ideal(
            &format!("tp = {tp}\npp = 1\nep_size = {ep}"),
            2,
            "first_dense_layers = 2",
        );
        let got2 = iteration(&s2).outcome.phase_bytes[Phase::TensorParallel.index()];
        let expect2 = expect * (m.layers as f64 + 2.0) / m.layers as f64;
        assert!(rel(got2, expect2) < 1e-9, "tp {tp}: {got2} vs {expect2}");
    }
}

#[test]
fn pipeline_sends_carry_each_micro_batchs_activations_both_ways() {
    let s = ideal(
        "tp = 2\npp = 4\nep_size = 2\nstage_layers = [2, 2, 2, 2]",
        8,
        "",
    );
    let rec = iteration(&s);
    let m = &s.model;
    // Each of a stage's GPUs sends its sequence shard (t/tp tokens × d) to its peer: p−1 boundaries,
    // forward and backward, every micro-batch; the unit of a stage is lcm(ep, tp) = 2 GPUs.
    let shard = (s.tokens_per_rank() / 2 * m.d_model * m.dtype_bytes as u64) as f64;
    let expect = 3.0 * 2.0 * 8.0 * 2.0 * shard;
    let got = rec.outcome.phase_bytes[Phase::PipelineSend.index()];
    assert!(rel(got, expect) < 1e-9, "{got} vs {expect}");
}

#[test]
fn the_first_one_f_one_b_stage_holds_p_micro_batches_of_activations() {
    // With checkpointing a layer stores its input (2·d bytes per token of the sequence shard) per
    // micro-batch in flight; GPipe keeps all m in flight, 1F1B's first stage p. Same routing, so the rest of
    // the activations (one layer's working set) cancels in the difference. GPipe's most loaded rank is its
    // last, which also keeps the loss's FP32 softmax of every micro-batch until its backward (an 8-word
    // vocabulary here); 1F1B's is its first, which runs no loss.
    let (p, m) = (4usize, 12usize);
    let memory = |schedule: &str| {
        let s = ideal(
            &format!(
                "pp = {p}\nep_size = 2\nstage_layers = [2, 2, 2, 2]\npipeline_schedule = \"{schedule}\""
            ),
            m,
            "",
        );
        let s = Scenario {
            training: moesim_sim::scenario::file::TrainingSection {
                activation_checkpointing: true,
                ..s.training
            },
            ..s
        };
        let report = report(&s);
        (s.clone(), report.results[0].memory)
    };
    let (s, gpipe) = memory("gpipe");
    let (_, one_f_one_b) = memory("1f1b");
    let md = &s.model;
    let per_chunk =
        2.0 * (md.d_model * md.dtype_bytes as u64) as f64 * s.tokens_per_rank() as f64 * 2.0;
    let (kept, _) =
        moesim_sim::strategy::output_head::loss_memory_bytes(&s, s.tokens_per_rank(), 1);
    let expect = ((m - p) as f64 * per_chunk + m as f64 * kept) / (1u64 << 30) as f64;
    let got = gpipe.activations_gib - one_f_one_b.activations_gib;
    assert!(rel(got, expect) < 1e-9, "{got} vs {expect}");
}

#[test]
fn tp_and_pp_output_is_deterministic_across_thread_counts() {
    common::assert_same_on_one_and_two_threads(&ideal("tp = 2\npp = 2\nep_size = 2", 4, ""));
}

#[test]
fn inconsistent_layouts_are_refused_naming_their_field() {
    let err = |strategy: &str, micro_batches: usize| {
        let text = format!(
            "name = \"pp\"\n[model]\npreset = \"mixtral-8x7b\"\nseq_len = 4096\nmicro_batch = 1\n\
             [cluster]\npreset = \"dgx-h100\"\nnodes = 2\n[workload]\nmode = \"training\"\niterations = 1\n\
             micro_batches = {micro_batches}\n[[strategy]]\nname = \"s\"\n{strategy}\n"
        );
        let e = parse_scenario("pp.toml", &text, &[]).expect_err("refused");
        format!("{e}")
    };
    let cases = [
        ("kind = \"ep\"\npp = 3", 4, "strategy[0].pp"),
        (
            "kind = \"ep\"\npp = 4\npipeline_schedule = \"dual-pipe\"",
            4,
            "workload.micro_batches",
        ),
        (
            "kind = \"ep\"\npp = 4\npipeline_schedule = \"interleaved\"\nvirtual_stages = 2",
            6,
            "workload.micro_batches",
        ),
        (
            "kind = \"ep\"\npp = 2\nvirtual_stages = 2",
            4,
            "strategy[0].virtual_stages",
        ),
        (
            "kind = \"ep\"\npp = 2\nstage_layers = [10, 10]",
            4,
            "strategy[0].stage_layers",
        ),
        (
            "kind = \"ep\"\nvirtual_stages = 2",
            4,
            "strategy[0].virtual_stages",
        ),
        (
            "kind = \"fssdp\"\npp = 2\npipeline_schedule = \"dual-pipe\"",
            4,
            "strategy[0].pipeline_schedule",
        ),
        (
            "kind = \"ep\"\ntp = 2\noverlap_micro_batches = 2",
            4,
            "strategy[0].overlap_micro_batches",
        ),
        (
            "kind = \"ep\"\npp = 2\nep_size = 16",
            4,
            "strategy[0].ep_size",
        ),
    ];
    for (strategy, m, field) in cases {
        let e = err(strategy, m);
        assert!(e.contains(field), "{strategy}: {e}");
    }
}

/// The schedule's lower bound (`EpModel::pipelined_step_bound`) of `s`'s first strategy, in ms.
fn bound_ms(s: &Scenario) -> f64 {
    let topo = Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    EpModel::pipelined_step_bound(s, &s.strategies[0], &topo, &cost)
        .expect("a pipelined strategy")
        .seconds
        * 1e3
}

#[test]
fn the_schedule_bound_is_the_step_of_uniform_one_f_one_b_and_gpipe() {
    // Uniform stages, negligible communication: the chains of the last stage's rank are the step, for any
    // number of micro-batches.
    for (schedule, m) in [("1f1b", 4), ("1f1b", 12), ("gpipe", 8)] {
        let s = ideal(&format!("{PP4}\npipeline_schedule = \"{schedule}\""), m, "");
        let (bound, step) = (bound_ms(&s), step_ms(&s));
        assert!(
            bound <= step * (1.0 + 1e-9),
            "{schedule} m={m}: {bound} > {step}"
        );
        eprintln!("{schedule} m={m}: bound {bound:.3} ms, step {step:.3} ms");
        assert!(
            rel(bound, step) < 2e-3,
            "{schedule} m={m}: {bound} vs {step}"
        );
    }
    // Interleaving and DualPipe overlap more than chains can show: still below.
    for extra in [
        "pipeline_schedule = \"interleaved\"\nvirtual_stages = 2\nstage_layers = [1, 1, 1, 1, 1, 1, 1, 1]",
        "pipeline_schedule = \"dual-pipe\"",
    ] {
        let strategy = format!("pp = 4\nep_size = 2\n{extra}");
        let s = ideal(&strategy, 8, "");
        let (bound, step) = (bound_ms(&s), step_ms(&s));
        assert!(bound <= step * (1.0 + 1e-9), "{extra}: {bound} > {step}");
        assert!(bound > 0.5 * step, "{extra}: {bound} vs {step}");
    }
}

#[test]
fn the_schedule_bound_never_exceeds_a_balanced_step_with_real_communication() {
    // Mixtral cut to 8 layers on 4 × DGX H100 (NVLink, InfiniBand), balanced routing, no noise: tensor
    // parallelism, every schedule, checkpointing.
    for strategy in [
        "pp = 4\nep_size = 8\npipeline_schedule = \"1f1b\"",
        "pp = 2\ntp = 2\nep_size = 8\npipeline_schedule = \"1f1b\"",
        "pp = 4\nep_size = 8\npipeline_schedule = \"dual-pipe\"",
        "pp = 2\nep_size = 4\npipeline_schedule = \"interleaved\"\nvirtual_stages = 2",
        "tp = 4\nep_size = 8",
    ] {
        for rc in [false, true] {
            let text = format!(
                "name = \"b\"\nseed = 9\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 8\nseq_len = 2048\n\
                 micro_batch = 1\n[cluster]\npreset = \"dgx-h100\"\nnodes = 4\n[workload]\n\
                 mode = \"training\"\niterations = 1\nmicro_batches = 8\n\
                 skew = {{ distribution = \"balanced\" }}\n[training]\nactivation_checkpointing = {rc}\n\
                 [[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
            );
            let s = parse_scenario("b.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"));
            let (bound, step) = (bound_ms(&s), step_ms(&s));
            eprintln!("{strategy} rc={rc}: bound {bound:.3} ms, balanced step {step:.3} ms");
            assert!(
                bound <= step * (1.0 + 1e-9),
                "{strategy} rc={rc}: {bound} > {step}"
            );
            assert!(bound > 0.5 * step, "{strategy} rc={rc}: {bound} vs {step}");
        }
    }
}

#[test]
fn the_multi_token_prediction_module_runs_once_more_a_layer_and_its_projection_on_the_last_stage() {
    // One micro-batch runs the stages one after another: each stage's F + B (two layers) adds up.
    let without = ideal(PP4, 1, "");
    let with = ideal(PP4, 1, "mtp_depth = 1");
    let fb = step_ms(&without) / 4.0;
    let s = &without;
    let (t, d) = (s.tokens_per_rank() as f64, s.model.d_model as f64);
    // The module: one more layer (half a stage's F + B), a 2d → d projection trained (3 × 2·t·2d·d), and
    // the output head again (8 words of vocabulary here: 3 × 2·t·d·8).
    let projection_ms = 3.0 * 2.0 * t * 2.0 * d * d / (s.cluster.peak_tflops * 1e12) * 1e3;
    let head_ms = 3.0 * 2.0 * t * d * 8.0 / (s.cluster.peak_tflops * 1e12) * 1e3;
    let expect = fb / 2.0 + projection_ms + head_ms;
    let got = step_ms(&with) - step_ms(&without);
    assert!(rel(got, expect) < 1e-3, "{got} vs {expect}");
    // Its weights sit on the last stage only.
    let params = |s: &Scenario| {
        let strategy = &s.strategies[0];
        let schedule = Schedule::build(ScheduleKind::OneFOneB, 4, 1, 1).unwrap();
        moesim_sim::strategy::stage_memory::stage_params(s, &strategy.parallel, 4, &schedule)
    };
    let (a, b) = (params(&without), params(&with));
    for r in 0..3 {
        assert_eq!(a[r].dense, b[r].dense);
        assert_eq!(a[r].experts, b[r].experts);
    }
    let per_stage_experts = a[3].experts / 2.0;
    assert!(rel(b[3].experts - a[3].experts, per_stage_experts) < 1e-12);
    assert!(b[3].dense > a[3].dense);
}

/// An `ep-replicated` strategy on the ideal pipeline of [`PP4`] with `extra` knobs.
fn replicated(extra: &str) -> Scenario {
    ideal_kind("ep-replicated", &format!("{PP4}\n{extra}"), 8, "")
}

#[test]
fn replicated_ep_without_spare_slots_is_static_ep_under_a_pipeline() {
    // 8 experts on EP groups of 2: 4 slots per GPU hold exactly one copy of each expert, so under
    // balanced routing every placement loads each GPU alike and the step equals static EP's.
    let stat = step_ms(&ideal(PP4, 8, ""));
    let rep = step_ms(&replicated("slots_per_gpu = 4"));
    assert!(rel(rep, stat) < 1e-9, "{rep} vs {stat}");
}

#[test]
fn replicated_ep_composes_with_a_pipeline_copies_memory_and_moves() {
    // Skewed routing over links of 100 GB/s (a moved copy takes time to arrive).
    let skewed = common::skewed_over_slow_links;
    let stat = skewed(ideal(PP4, 8, ""));
    let rep = skewed(replicated("slots_per_gpu = 6\nreplan_interval = 2"));
    let (a, b) = (report(&stat), report(&rep));
    let (a, b) = (&a.results[0], &b.results[0]);
    // Spare copies of the hot experts shorten the most loaded GPU's expert work.
    assert!(
        b.breakdown_ms["expert_compute"] < a.breakdown_ms["expert_compute"],
        "{} vs {}",
        b.breakdown_ms["expert_compute"],
        a.breakdown_ms["expert_compute"]
    );
    // Every assignment is routed to some copy: nothing is dropped and no token is lost.
    assert_eq!(b.dropped_fraction, 0.0);
    // A GPU holds 6 copies per MoE layer of its stage: 1.5× static EP's 4, in expert parameters.
    let params = |s: &Scenario, slots: usize| {
        let schedule = Schedule::build(ScheduleKind::OneFOneB, 4, 1, 8).unwrap();
        moesim_sim::strategy::stage_memory::stage_params(
            s,
            &s.strategies[0].parallel,
            slots,
            &schedule,
        )
    };
    let (ps, pr) = (params(&stat, 4), params(&rep, 6));
    for r in 0..4 {
        assert!(rel(pr[r].experts, 1.5 * ps[r].experts) < 1e-12);
        assert_eq!(pr[r].dense, ps[r].dense);
    }
    // The re-plan after two iterations moves copies over the stage's links, as a rebalance phase.
    assert!(b.breakdown_ms["rebalance"] > 0.0, "{:?}", b.breakdown_ms);
    assert!(!a.breakdown_ms.contains_key("rebalance"));
}

#[test]
fn a_chunks_gradients_synchronise_as_soon_as_they_are_final() {
    // Interleaved 1F1B: pipeline rank 0 holds chunks 0 and 4 of 8, and chunk 4's last backward comes
    // before chunk 0's, so chunk 4's all-reduce starts while chunk 0's backward still computes. With one
    // chunk per rank (1F1B) the rank's only bucket follows its last task.
    let interleaved = "pp = 4\nep_size = 2\npipeline_schedule = \"interleaved\"\nvirtual_stages = 2\n\
                       stage_layers = [1, 1, 1, 1, 1, 1, 1, 1]";
    for (strategy, overlaps) in [(interleaved, true), (PP4, false)] {
        let s = ideal(strategy, 8, "");
        let st = &s.strategies[0];
        let routing = synthetic_routing_shaped(&s, EpModel::routing_shape_for(&s, st));
        let tl = iteration_timelines(&s, st, &routing, None, 0..1)
            .unwrap()
            .remove(0);
        let rank0 = tl.ops.iter().filter(|o| o.rank == 0);
        let last_compute = rank0
            .clone()
            .filter(|o| matches!(o.phase, Phase::DenseCompute | Phase::ExpertCompute))
            .map(|o| o.finish)
            .max()
            .unwrap();
        let first_sync = rank0
            .filter(|o| o.phase == Phase::GradSync)
            .map(|o| o.start)
            .min()
            .unwrap();
        assert_eq!(
            first_sync < last_compute,
            overlaps,
            "{strategy}: first sync at {first_sync}, last compute ends at {last_compute}"
        );
    }
}

#[test]
fn megatrons_split_may_leave_the_embedding_and_the_head_alone_at_the_ends() {
    // 8 layers + embedding + head over 2 ranks × 5 chunks: one unit per model stage, so the first holds the
    // embedding alone and the last the output head alone (Megatron's account-for-embedding/loss split).
    let s = ideal(
        "pp = 2\nep_size = 4\npipeline_schedule = \"interleaved\"\nvirtual_stages = 5",
        4,
        "",
    );
    assert_eq!(
        s.strategies[0].parallel.stage_layers,
        vec![0, 1, 1, 1, 1, 1, 1, 1, 1, 0]
    );
    // The lowering runs a chunk without layers (the head alone on the last rank's last chunk).
    let t = step_ms(&s);
    assert!(t.is_finite() && t > 0.0, "{t}");
    // A stage between the ends without layers is still refused, naming the field.
    let text = "name = \"pp\"\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 8\nseq_len = 4096\n\
                [cluster]\npreset = \"dgx-h100\"\nnodes = 1\n[workload]\nmode = \"training\"\n\
                iterations = 1\nmicro_batches = 4\n[[strategy]]\nname = \"s\"\nkind = \"ep\"\npp = 4\n\
                stage_layers = [3, 0, 3, 2]\n";
    let e = format!(
        "{}",
        parse_scenario("pp.toml", text, &[]).expect_err("refused")
    );
    assert!(e.contains("strategy[0].pp"), "{e}");
}
