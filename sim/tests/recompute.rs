//! Full activation recomputation (`training.activation_checkpointing`): a layer keeps only its input, so its
//! whole forward — attention, MLP and the MoE block's dispatch, experts and combine — runs again before its
//! backward. Checked as a closed form against the forward pass itself: the extra step time is exactly the
//! prefill of the same layout (the forwards alone), without and with a pipeline. Selective recomputation
//! (`training.recompute_modules`, Megatron-Core's modules) against the shapes it drops and the forwards it
//! reruns, the checkpointed MoE block (`moe`) with its all-to-alls.

use crate::common;

use common::rel;
use moesim_sim::Scenario;
use moesim_sim::scenario::parse_scenario;

/// Mixtral's shapes (8 layers) on 8 GPUs of an ideal roofline with links so fast that communication is
/// negligible; balanced routing, no noise, a negligible output head.
fn ideal(mode: &str, strategy: &str, micro_batches: usize, recompute: bool) -> Scenario {
    ideal_kind(mode, "ep", strategy, micro_batches, recompute)
}

/// [`ideal`] with a strategy of kind `kind`.
fn ideal_kind(
    mode: &str,
    kind: &str,
    strategy: &str,
    micro_batches: usize,
    recompute: bool,
) -> Scenario {
    ideal_with(mode, kind, strategy, micro_batches, recompute, &[])
}

/// [`ideal_kind`] with `--set` overrides.
fn ideal_with(
    mode: &str,
    kind: &str,
    strategy: &str,
    micro_batches: usize,
    recompute: bool,
    overrides: &[String],
) -> Scenario {
    let text = format!(
        "name = \"rc\"\nseed = 3\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 8\nvocab = 8\nseq_len = 4096\n\
         micro_batch = 1\n[cluster]\npreset = \"ideal\"\ngpus_per_node = 8\npeak_tflops = 1000.0\n\
         ideal_link_gbytes_per_s = 1e9\nideal_latency_us = 0.0\n[workload]\nmode = \"{mode}\"\n\
         iterations = 1\nmicro_batches = {micro_batches}\nskew = {{ distribution = \"balanced\" }}\n\
         [training]\nactivation_checkpointing = {recompute}\n\
         [[strategy]]\nname = \"s\"\nkind = \"{kind}\"\n{strategy}\n"
    );
    parse_scenario("rc.toml", &text, overrides).unwrap_or_else(|e| panic!("{e:?}"))
}

fn step_ms(s: &Scenario) -> f64 {
    common::run(s)[0].step_time_ms.mean
}

#[test]
fn recomputation_adds_one_forward_of_every_layer_moe_blocks_included() {
    for (strategy, m) in [
        ("ep_size = 8", 1usize),
        ("ep_size = 8", 3),
        ("pp = 4\nep_size = 2\nstage_layers = [2, 2, 2, 2]", 8),
        (
            "pp = 2\ntp = 2\nep_size = 2\nstage_layers = [4, 4]\npipeline_schedule = \"gpipe\"",
            4,
        ),
    ] {
        let plain = step_ms(&ideal("training", strategy, m, false));
        let rc = step_ms(&ideal("training", strategy, m, true));
        // The forwards alone, in the same layout: m micro-batches through the pipeline's fill and drain.
        let forwards = step_ms(&ideal("prefill", strategy, m, false));
        let extra = rc - plain;
        assert!(
            rel(extra, forwards) < 2e-3,
            "{strategy:?}, m = {m}: recomputation adds {extra} ms, the forwards take {forwards} ms"
        );
        // The MoE blocks are part of it: the experts alone are most of Mixtral's forward.
        assert!(extra > 0.5 * plain / 3.0, "{extra} of {plain}");
    }
}

#[test]
fn fssdp_reruns_a_checkpointed_moe_block_between_no_and_full_recomputation() {
    let step = |recompute: bool, modules: &str| {
        let o: Vec<String> = if modules.is_empty() {
            Vec::new()
        } else {
            vec![format!("training.recompute_modules={modules}")]
        };
        step_ms(&ideal_with("training", "fssdp", "", 2, recompute, &o))
    };
    let (plain, moe, full) = (step(false, ""), step(false, "[\"moe\"]"), step(true, ""));
    assert!(plain < moe && moe < full, "{plain} {moe} {full}");
    // Mixtral's experts are most of a layer's forward: the MoE block is most of what full recomputation adds.
    assert!(moe - plain > 0.5 * (full - plain), "{plain} {moe} {full}");
}

#[test]
fn fssdp_recomputes_its_moe_blocks_too() {
    // FSSDP on the same 8 GPUs: its forward splits each expert's tokens over materialised copies, so it is
    // not EP's to the microsecond, but it is no cheaper (same FLOPs, smaller GEMMs). Recomputation adds at
    // least EP's forward (the dense part alone would be a seventh of it), once per micro-batch.
    let extra = |m| {
        step_ms(&ideal_kind("training", "fssdp", "", m, true))
            - step_ms(&ideal_kind("training", "fssdp", "", m, false))
    };
    let forwards = step_ms(&ideal("prefill", "ep_size = 8", 1, false));
    let one = extra(1);
    assert!(
        one >= 0.999 * forwards && one < 1.25 * forwards,
        "{one} vs {forwards}"
    );
    let two = extra(2);
    assert!(rel(two, 2.0 * one) < 1e-2, "{two} vs 2 × {one}");
}

/// DeepSeek-V3's shapes (4 MoE layers, no MTP) on 8 GPUs of the ideal roofline, EP 8, balanced routing,
/// `extra` in `[training]`.
fn dsv3(strategy: &str, micro_batches: usize, training: &str) -> Scenario {
    let text = dsv3_text(strategy, micro_batches, training);
    parse_scenario("sel.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
}

fn dsv3_text(strategy: &str, micro_batches: usize, training: &str) -> String {
    format!(
        "name = \"sel\"\nseed = 3\n[model]\npreset = \"deepseek-v3\"\nlayers = 4\nfirst_dense_layers = 0\n\
         mtp_depth = 0\nvocab = 8\nseq_len = 2048\nmicro_batch = 1\nrouting_groups = 1\n[cluster]\n\
         preset = \"ideal\"\ngpus_per_node = 8\npeak_tflops = 1000.0\nideal_link_gbytes_per_s = 1e9\n\
         ideal_latency_us = 0.0\n[workload]\nmode = \"training\"\niterations = 1\n\
         micro_batches = {micro_batches}\nskew = {{ distribution = \"balanced\" }}\n[training]\n{training}\n\
         [[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
    )
}

const SELECTIVE: &str = "recompute_modules = [\"layernorm\", \"mla_up_proj\", \"moe_act\"]";

#[test]
fn selective_recomputation_keeps_less_by_the_modules_shapes_and_costs_their_forwards_again() {
    use moesim_sim::strategy::shared::{activation_s, selective_recompute_s};
    // DeepSeek-V3's recipe (§3.2.3: RMSNorm and the MLA up-projections; the SwiGLU output from its inputs).
    let none = dsv3("ep_size = 8", 1, "");
    let sel = dsv3("ep_size = 8", 1, SELECTIVE);
    let m = &none.model;
    let (layers, t, k) = (4.0, none.tokens_per_rank() as f64, m.top_k as f64);
    let (d, f) = (m.d_model as f64, m.expert_d_ff as f64);
    // Per token and layer: the norms' outputs (2·d and the two latents, 1536 + 512) and the per-head queries,
    // keys and values (128 × (192 + 192 + 128)); per routed copy the activation's output (f). Balanced
    // routing: each GPU receives t·k copies per layer.
    let per_token = (2.0 * d + 1536.0 + 512.0 + 128.0 * 512.0) * 2.0;
    let saved = layers * (t * per_token + t * k * f * 2.0) / (1u64 << 30) as f64;
    let (a, b) = (&common::run(&none)[0], &common::run(&sel)[0]);
    let got = a.memory.activations_gib - b.memory.activations_gib;
    assert!(rel(got, saved) < 1e-9, "{got} vs {saved} GiB");
    // Time: each layer's backward runs the norms and up-projections again, and each GPU the activation
    // over its t·k copies.
    let cost = none.cluster.roofline();
    let per_layer = selective_recompute_s(&sel, &cost, t as u64, 1)[1]
        + activation_s(&cost, (t * k) as u64, m.expert_d_ff, 3, 2);
    assert!(per_layer > 0.0);
    let extra = b.step_time_ms.mean - a.step_time_ms.mean;
    let expect = layers * per_layer * 1e3;
    assert!(rel(extra, expect) < 1e-3, "{extra} vs {expect} ms");
    // Under a 1F1B pipeline (4 stages of one layer, 8 micro-batches) the backward of every stage grows by
    // one layer's recomputation: (m + p − 1) of them on the critical path.
    let pp = "pp = 4\nep_size = 2\nstage_layers = [1, 1, 1, 1]";
    let extra = step_ms(&dsv3(pp, 8, SELECTIVE)) - step_ms(&dsv3(pp, 8, ""));
    let sel_pp = dsv3(pp, 8, SELECTIVE);
    let t_pp = sel_pp.tokens_per_rank();
    let per_layer = selective_recompute_s(&sel_pp, &cost, t_pp, 1)[1]
        + activation_s(&cost, t_pp * m.top_k as u64, m.expert_d_ff, 3, 2);
    let expect = 11.0 * per_layer * 1e3;
    assert!(rel(extra, expect) < 1e-3, "{extra} vs {expect} ms");
}

#[test]
fn selective_recomputation_refuses_what_it_cannot_mean() {
    let err = |text: &str| format!("{:?}", parse_scenario("x.toml", text, &[]).unwrap_err());
    let both = dsv3_text(
        "ep_size = 8",
        1,
        "activation_checkpointing = true\nrecompute_modules = [\"layernorm\"]",
    );
    let msg = err(&both);
    assert!(
        msg.contains("training.recompute_modules") || msg.contains("recompute_modules"),
        "{msg}"
    );
    assert!(msg.contains("already recomputes"), "{msg}");
    let gqa = dsv3_text("ep_size = 8", 1, "recompute_modules = [\"mla_up_proj\"]")
        .replace("preset = \"deepseek-v3\"", "preset = \"mixtral-8x7b\"")
        .replace("routing_groups = 1\n", "");
    let msg = err(&gqa);
    assert!(msg.contains("no MLA latents"), "{msg}");
    let unknown = dsv3_text("ep_size = 8", 1, "recompute_modules = [\"attention\"]");
    let msg = err(&unknown);
    assert!(msg.contains("unknown variant `attention`"), "{msg}");
    // `mlp` checkpoints dense layers' MLPs: a model whose every layer is MoE has none.
    let msg = err(&dsv3_text(
        "ep_size = 8",
        1,
        "recompute_modules = [\"mlp\"]",
    ));
    assert!(msg.contains("training.recompute_modules"), "{msg}");
    assert!(msg.contains("first_dense_layers = 0"), "{msg}");
}

#[test]
fn a_checkpointed_moe_block_keeps_its_input_only_and_runs_again_all_to_alls_included() {
    use moesim_sim::strategy::shared::{dense_forward_tp_s, non_gemm_s};
    let none = dsv3("ep_size = 8", 1, "");
    let moe = dsv3("ep_size = 8", 1, "recompute_modules = [\"moe\"]");
    let full = dsv3("ep_size = 8", 1, "activation_checkpointing = true");
    let m = &none.model;
    let (layers, t, k) = (4.0, none.tokens_per_rank() as f64, m.top_k as f64);
    let (d, f) = (m.d_model as f64, m.expert_d_ff as f64);
    // Memory: per token the router's FP32 logits and the shared expert's three intermediates go, and every
    // routed copy (input, output and three intermediates) — t·k copies per GPU and layer when balanced.
    let per_token = m.experts as f64 * 4.0 + m.shared_experts as f64 * 3.0 * f * 2.0;
    let per_copy = (2.0 * d + 3.0 * f) * 2.0;
    let saved = layers * (t * per_token + t * k * per_copy) / (1u64 << 30) as f64;
    let (a, b) = (&common::run(&none)[0], &common::run(&moe)[0]);
    let got = a.memory.activations_gib - b.memory.activations_gib;
    assert!(rel(got, saved) < 1e-9, "{got} vs {saved} GiB");
    // Time: full recomputation reruns the whole layer, the checkpointed MoE block all of it but attention
    // (its GEMMs and scores) and the norms and residual adds: the difference, per layer, is exactly those.
    let cost = none.cluster.roofline();
    let tt = none.tokens_per_rank();
    let attention_and_norms = dense_forward_tp_s(&none, &cost, true, tt, 1).0
        - non_gemm_s(&none, &cost, tt, true)
        + non_gemm_s(&none, &cost, tt, false);
    let plain = a.step_time_ms.mean;
    let (moe_ms, full_ms) = (b.step_time_ms.mean, step_ms(&full));
    let expect = layers * attention_and_norms * 1e3;
    assert!(
        rel(full_ms - moe_ms, expect) < 1e-3,
        "{} vs {expect} ms",
        full_ms - moe_ms
    );
    // The routed experts dominate what it reruns.
    assert!(
        moe_ms - plain > 0.5 * (full_ms - plain),
        "{plain} {moe_ms} {full_ms}"
    );
    // Under a 1F1B pipeline (4 stages of one layer, 8 micro-batches) the same difference sits in each of
    // the (m + p − 1) backwards on the critical path.
    let pp = "pp = 4\nep_size = 2\nstage_layers = [1, 1, 1, 1]";
    let moe_pp = step_ms(&dsv3(pp, 8, "recompute_modules = [\"moe\"]"));
    let full_pp = step_ms(&dsv3(pp, 8, "activation_checkpointing = true"));
    let s_pp = dsv3(pp, 8, "");
    let t_pp = s_pp.tokens_per_rank();
    let per_layer = dense_forward_tp_s(&s_pp, &cost, true, t_pp, 1).0
        - non_gemm_s(&s_pp, &cost, t_pp, true)
        + non_gemm_s(&s_pp, &cost, t_pp, false);
    let expect = 11.0 * per_layer * 1e3;
    assert!(
        rel(full_pp - moe_pp, expect) < 1e-3,
        "{} vs {expect} ms",
        full_pp - moe_pp
    );
}

#[test]
fn core_attention_and_dense_mlp_checkpoints_keep_what_their_modules_do_not() {
    // `core_attn` drops only the fused kernel's log-sum-exp (one FP32 value per head and token) and costs
    // its forward again; `mlp` drops a dense layer's FFN intermediates (3·f).
    let with_dense = |training: &str| dsv3("ep_size = 8", 1, training);
    let none = with_dense("");
    let attn = with_dense("recompute_modules = [\"core_attn\"]");
    let m = &none.model;
    let t = none.tokens_per_rank() as f64;
    let (a, b) = (&common::run(&none)[0], &common::run(&attn)[0]);
    let saved = 4.0 * t * m.attention.heads as f64 * 4.0 / (1u64 << 30) as f64;
    let got = a.memory.activations_gib - b.memory.activations_gib;
    assert!(rel(got, saved) < 1e-9, "{got} vs {saved} GiB");
    assert!(b.step_time_ms.mean > a.step_time_ms.mean);
    let text = |training: &str| {
        dsv3_text("ep_size = 8", 1, training)
            .replace("first_dense_layers = 0", "first_dense_layers = 1")
    };
    let parse = |x: String| parse_scenario("sel.toml", &x, &[]).unwrap_or_else(|e| panic!("{e:?}"));
    let none = parse(text(""));
    let mlp = parse(text("recompute_modules = [\"mlp\"]"));
    let (a, b) = (&common::run(&none)[0], &common::run(&mlp)[0]);
    let f = none.model.dense_d_ff as f64;
    let saved = t * 3.0 * f * 2.0 / (1u64 << 30) as f64;
    let got = a.memory.activations_gib - b.memory.activations_gib;
    assert!(rel(got, saved) < 1e-9, "{got} vs {saved} GiB");
    // The dense layer's MLP forward runs again in its backward.
    let cost = none.cluster.roofline();
    let tt = none.tokens_per_rank();
    let expect =
        moesim_sim::strategy::shared::dense_forward_tp_s(&none, &cost, false, tt, 1).1 * 1e3;
    let extra = b.step_time_ms.mean - a.step_time_ms.mean;
    assert!(rel(extra, expect) < 1e-3, "{extra} vs {expect} ms");
}
