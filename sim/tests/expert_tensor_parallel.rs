//! Expert tensor parallelism (`etp` on `kind = "ep"` and `"ep-replicated"`): each routed expert's FFN (each
//! copy's) split over `etp` GPUs that gather the tokens their ETP group received, checked through the whole
//! strategy against closed forms: the gather/scatter traffic, the conservation of expert FLOPs, the
//! parameters per GPU, replicated copies' slices, and the refusals.

use crate::common;

use common::{ep_iteration as iteration, rel};
use moesim_sim::Scenario;
use moesim_sim::phase::Phase;
use moesim_sim::scenario::parse_scenario;

/// Mixtral's shapes (4 layers) on 8 GPUs of an ideal roofline with links so fast that communication is
/// negligible; balanced routing, no noise.
fn ideal(strategy: &str, micro_batches: usize) -> Scenario {
    let text = format!(
        "name = \"etp\"\nseed = 3\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 4\nvocab = 8\nseq_len = 4096\n\
         micro_batch = 1\n[cluster]\npreset = \"ideal\"\ngpus_per_node = 8\npeak_tflops = 1000.0\n\
         ideal_link_gbytes_per_s = 1e9\nideal_latency_us = 0.0\n[workload]\nmode = \"training\"\n\
         iterations = 1\nmicro_batches = {micro_batches}\nskew = {{ distribution = \"balanced\" }}\n\
         [[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
    );
    parse_scenario("etp.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
}

fn result(s: &Scenario) -> moesim_sim::result::StrategyResult {
    common::run(s).remove(0)
}

#[test]
fn an_etp_group_gathers_its_tokens_and_scatters_the_outputs() {
    // Balanced routing: every GPU of an EP group receives exactly its sources' T·k copies (T tokens per
    // source, top-k). Per MoE layer and micro-batch an ETP group all-gathers them before the experts and
    // reduce-scatters the outputs after, forward and backward: four rings, each sending (etp − 1)/etp of
    // the gathered etp·T·k·d elements from every GPU.
    for (ep, etp) in [(4usize, 2usize), (2, 4), (8, 1)] {
        let s = ideal(&format!("ep_size = {ep}\netp = {etp}"), 3);
        let rec = iteration(&s);
        let m = &s.model;
        let chunk =
            (s.tokens_per_rank() * m.top_k as u64 * m.d_model * m.dtype_bytes as u64) as f64;
        let per_gpu = (etp as f64 - 1.0) * chunk;
        let gpus = (ep * etp) as f64;
        let expect = m.moe_layers() as f64 * 3.0 * 4.0 * per_gpu * gpus;
        let got = rec.outcome.phase_bytes[Phase::TensorParallel.index()];
        if etp == 1 {
            assert_eq!(got, 0.0);
        } else {
            assert!(
                rel(got, expect) < 1e-9,
                "ep {ep} etp {etp}: {got} vs {expect}"
            );
        }
        // Every copy dispatched is received once, whatever the slicing.
        assert_eq!(rec.routed, rec.tokens_received.iter().sum::<u64>());
    }
}

#[test]
fn slicing_experts_keeps_each_gpus_expert_flops() {
    // On a compute-bound roofline without launch costs, a GPU of an ETP group runs etp× the tokens on
    // 1/etp of each expert's width: the same FLOPs as a GPU holding whole experts of an EP group etp×
    // larger, so the expert compute per step is the same for (8, 1), (4, 2) and (2, 4).
    let expert_ms = |ep: usize, etp: usize| {
        let s = ideal(&format!("ep_size = {ep}\netp = {etp}\npp = 1\ntp = 1"), 2);
        result(&s).breakdown_ms["expert_compute"]
    };
    let whole = expert_ms(8, 1);
    assert!(whole > 0.0);
    for (ep, etp) in [(4usize, 2usize), (2, 4), (1, 8)] {
        let sliced = expert_ms(ep, etp);
        assert!(
            rel(sliced, whole) < 1e-6,
            "ep {ep} etp {etp}: {sliced} vs {whole}"
        );
    }
}

#[test]
fn an_etp_gpu_holds_a_slice_of_its_ep_ranks_experts() {
    // Per GPU: (experts / ep) experts per layer, each 1/etp: (4, 2) holds what (8, 1) holds, (2, 2) twice
    // as much, (8, 1) under a 2-stage pipeline half the layers. The dense part is the same throughout.
    let params = |strategy: &str| result(&ideal(strategy, 2)).memory.params_gib;
    let pp = "pp = 2\nstage_layers = [2, 2]\n";
    let a = params(&format!("{pp}ep_size = 4\netp = 1"));
    let b = params(&format!("{pp}ep_size = 2\netp = 2"));
    let c = params(&format!("{pp}ep_size = 2\netp = 1"));
    assert!(rel(a, b) < 1e-9, "{a} vs {b}");
    let s = ideal("ep_size = 4", 1);
    let m = &s.model;
    // (2, 1) holds 4 experts per layer where (4, 1) and (2, 2) hold 2 (whole or as two halves): 2 layers
    // of 2 more experts each.
    let more = 2.0 * 2.0 * (m.expert_params() * m.dtype_bytes as u64) as f64 / (1u64 << 30) as f64;
    assert!(rel(c - a, more) < 1e-9, "{} vs {more}", c - a);
}

#[test]
fn etp_layouts_that_cannot_run_are_refused_naming_their_field() {
    let err = |strategy: &str| {
        let text = format!(
            "name = \"etp\"\n[model]\npreset = \"mixtral-8x7b\"\nseq_len = 4096\nmicro_batch = 1\n\
             [cluster]\npreset = \"dgx-h100\"\nnodes = 1\n[workload]\nmode = \"training\"\niterations = 1\n\
             [[strategy]]\nname = \"s\"\n{strategy}\n"
        );
        format!(
            "{}",
            parse_scenario("etp.toml", &text, &[]).expect_err("refused")
        )
    };
    let e = err("kind = \"ep\"\nep_size = 8\netp = 2");
    assert!(
        e.contains("strategy[0].ep_size") && e.contains("etp"),
        "{e}"
    );
    let e = err("kind = \"ep\"\nep_size = 4\netp = 3");
    assert!(e.contains("strategy[0].etp"), "{e}");
    let e = err("kind = \"fssdp\"\netp = 2");
    assert!(e.contains("strategy[0].etp"), "{e}");
}

#[test]
fn replicated_ep_without_spare_slots_under_etp_is_static_etp() {
    // 8 experts on EP groups of 2 ranks, each rank's experts sliced over 2 GPUs (blocks of 4, two of them
    // on 8 GPUs): 4 slots per rank hold one copy of each expert, so under balanced routing every placement
    // loads each GPU alike, and the step, the ETP rings and the expert gradients' all-reduce (each slice
    // with the same slice of the expert's copy in the other block) equal static EP's.
    let layout = "ep_size = 2\netp = 2";
    let stat = common::ideal_pipeline("ep", layout, 4, "");
    let rep = common::ideal_pipeline(
        "ep-replicated",
        &format!("{layout}\nslots_per_gpu = 4"),
        4,
        "",
    );
    let (a, b) = (iteration(&stat), iteration(&rep));
    assert!(
        rel(b.step_ms(), a.step_ms()) < 1e-9,
        "{} vs {}",
        b.step_ms(),
        a.step_ms()
    );
    for phase in [Phase::TensorParallel, Phase::GradSync] {
        let (x, y) = (
            a.outcome.phase_bytes[phase.index()],
            b.outcome.phase_bytes[phase.index()],
        );
        assert!(x > 0.0 && rel(y, x) < 1e-9, "{phase:?}: {y} vs {x}");
    }
}

#[test]
fn replicated_copies_under_etp_relieve_hot_experts_and_move_their_slices() {
    // Skewed routing over links of 100 GB/s: spare copies of the hot experts shorten the busiest GPU's
    // expert work against static EP with the same slicing; a re-plan moves copies (each GPU its slice).
    let skewed = common::skewed_over_slow_links;
    let layout = "ep_size = 2\netp = 2\npp = 2";
    let stat = skewed(common::ideal_pipeline("ep", layout, 4, ""));
    let rep = skewed(common::ideal_pipeline(
        "ep-replicated",
        &format!("{layout}\nslots_per_gpu = 6\nreplan_interval = 2"),
        4,
        "",
    ));
    let (a, b) = (result(&stat), result(&rep));
    let expert = |r: &moesim_sim::result::StrategyResult| r.breakdown_ms["expert_compute"];
    assert!(expert(&b) < expert(&a), "{} vs {}", expert(&b), expert(&a));
    assert_eq!(b.dropped_fraction, 0.0);
    assert!(b.breakdown_ms["rebalance"] > 0.0, "{:?}", b.breakdown_ms);
}
