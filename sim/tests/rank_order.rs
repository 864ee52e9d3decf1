//! The rank order knob (`rank_order`): which GPUs a pipeline stage holds, and so which traffic crosses
//! nodes. Megatron-Core's default (`tp-ep-dp-pp`) keeps a stage's EP and data-parallel ranks together and
//! sends activations between stages over the network once a stage fills a node; `tp-ep-pp-dp` puts pipeline
//! neighbours on adjacent GPUs.

use crate::common;

use moesim_sim::Scenario;
use moesim_sim::runner::synthetic_routing_shaped;
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::ep::EpModel;
use moesim_sim::timeline::iteration_timelines;

/// Mixtral's shapes (4 layers) in prefill on 2 DGX H100 nodes under the flow network, PP2 × EP4: each stage
/// simulates one EP group of 4 GPUs.
fn prefill(order: &str) -> Scenario {
    let text = format!(
        "name = \"order\"\nseed = 5\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 4\nseq_len = 1024\n\
         micro_batch = 2\n[cluster]\npreset = \"dgx-h100\"\nnodes = 2\nnetwork = \"flow\"\n[workload]\n\
         mode = \"prefill\"\niterations = 1\nmicro_batches = 4\nskew = {{ distribution = \"balanced\" }}\n\
         [[strategy]]\nname = \"s\"\nkind = \"ep\"\npp = 2\nep_size = 4\n{order}\n"
    );
    parse_scenario("order.toml", &text, &[]).unwrap_or_else(|e| panic!("{e:?}"))
}

/// Bytes the iteration put on the links into and out of the network (the rails' leaf switches).
fn network_bytes(s: &Scenario) -> f64 {
    let st = &s.strategies[0];
    let routing = synthetic_routing_shaped(s, EpModel::routing_shape_for(s, st));
    let tl = iteration_timelines(s, st, &routing, None, 0..1)
        .unwrap()
        .remove(0);
    assert!(!tl.links.is_empty(), "the flow backend records its links");
    tl.links
        .iter()
        .filter(|l| l.name.contains("leaf"))
        .map(|l| l.bytes)
        .sum()
}

#[test]
fn pipeline_neighbours_share_a_node_only_with_data_parallel_ranks_outermost() {
    // Prefill has no gradient synchronisation and EP4 stays inside a node under both orders, so the only
    // traffic that can leave a node is the activations sent from stage 0 to stage 1.
    let s = prefill("");
    let m = &s.model;
    let send = (s.tokens_per_rank() * m.d_model * m.dtype_bytes as u64) as f64;
    // Default: stage 0 is node 0 and stage 1 node 1; each of the unit's 4 GPUs sends every micro-batch's
    // activations to its peer over its NIC, through a leaf switch (into it and out of it).
    let expect = 2.0 * 4.0 * 4.0 * send;
    let default = network_bytes(&s);
    assert!(common::rel(default, expect) < 1e-9, "{default} vs {expect}");
    let explicit = network_bytes(&prefill("rank_order = \"tp-ep-dp-pp\""));
    assert_eq!(default, explicit);
    // Data-parallel ranks outermost: stage 0 holds GPUs 0–3 and 8–11, stage 1 GPUs 4–7 and 12–15, so a
    // GPU's pipeline peer is 4 GPUs away on the same node.
    let inner = prefill("rank_order = \"tp-ep-pp-dp\"");
    assert_eq!(network_bytes(&inner), 0.0);
    // Megatron's spelling of the same order.
    assert_eq!(
        network_bytes(&prefill("rank_order = \"tp-cp-ep-pp-dp\"")),
        0.0
    );
}

#[test]
fn the_rank_order_needs_a_pipeline_and_a_known_order() {
    let text = |strategy: &str| {
        format!(
            "name = \"o\"\n[model]\npreset = \"mixtral-8x7b\"\n[cluster]\npreset = \"dgx-h100\"\nnodes = 2\n\
             [workload]\nmode = \"training\"\n[[strategy]]\nname = \"s\"\nkind = \"ep\"\n{strategy}\n"
        )
    };
    let e = parse_scenario(
        "o.toml",
        &text("ep_size = 8\nrank_order = \"tp-ep-pp-dp\""),
        &[],
    )
    .unwrap_err();
    let msg = format!("{e:?}");
    assert!(msg.contains("strategy[0].rank_order"), "{msg}");
    assert!(msg.contains("pp > 1"), "{msg}");
    let e = parse_scenario("o.toml", &text("pp = 2\nrank_order = \"pp-dp-tp\""), &[]).unwrap_err();
    // Serde's message, with the span of the value (the line the report shows), listing the orders.
    let msg = format!("{e:?}");
    assert!(msg.contains("unknown variant `pp-dp-tp`"), "{msg}");
    assert!(
        msg.contains("`tp-ep-dp-pp`") && msg.contains("`tp-ep-pp-dp`"),
        "{msg}"
    );
}
