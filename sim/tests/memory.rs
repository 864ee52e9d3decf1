//! Memory per rank against the formula in `memory.rs`.

use crate::common;
use common::{run, scenario};
use moesim_sim::memory::GIB;

#[test]
fn training_memory_matches_the_formula() {
    let s = scenario(
        "quickstart.toml",
        &[
            "workload.iterations=1",
            "training.zero_stage=0",
            "cluster.compute_noise_cv=0",
        ],
    );
    let r = &run(&s)[0]; // ep16: 4 experts per rank per layer, dense replicated on 16 ranks
    let m = &s.model;
    let experts = (m.moe_layers() * 4) as f64 * m.expert_params() as f64;
    let params = m.dense_params() as f64 + experts;
    // bf16 weights (2), bf16 grads (2), Adam (12): 16 bytes per parameter without ZeRO.
    assert!((r.memory.params_gib - 2.0 * params / GIB).abs() < 1e-9);
    assert!((r.memory.optimizer_gib - 12.0 * params / GIB).abs() < 1e-9);
    // ZeRO-1 shards the optimizer: dense over 16 replicas, experts over 1 (EP over all ranks).
    let s1 = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "training.zero_stage=1"],
    );
    let r1 = &run(&s1)[0];
    let opt1 = 12.0 * (m.dense_params() as f64 / 16.0 + experts) / GIB;
    assert!((r1.memory.optimizer_gib - opt1).abs() < 1e-9);
    assert!(r1.memory.total_gib < r.memory.total_gib);
}

#[test]
fn oom_is_flagged_against_the_memory_limit() {
    let s = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "objective.memory_limit_gib=1"],
    );
    assert!(run(&s).iter().all(|r| r.oom));
    let s = scenario(
        "quickstart.toml",
        &["workload.iterations=1", "objective.memory_limit_gib=1000"],
    );
    assert!(run(&s).iter().all(|r| !r.oom));
}

/// OLMoE cut to `layers` layers of two experts (top-1, 1,024 tokens per GPU) and an 8-word vocabulary (so
/// that the loss's logits weigh nothing beside the routed tokens) on an ideal node of `gpus` GPUs, nothing
/// recomputed, with one `[[strategy]]` body.
fn two_experts(
    layers: usize,
    gpus: usize,
    micro_batches: usize,
    strategy: &str,
) -> moesim_sim::scenario::Scenario {
    let text = format!(
        "[model]\npreset = \"olmoe-1b-7b\"\nlayers = {layers}\nexperts = 2\ntop_k = 1\nvocab = 8\nseq_len = 1024\n\
         micro_batch = 1\n[cluster]\npreset = \"ideal\"\ngpus_per_node = {gpus}\n[workload]\n\
         iterations = 1\nmicro_batches = {micro_batches}\n[training]\nactivation_checkpointing = false\n\
         [[strategy]]\n{strategy}\n"
    );
    moesim_sim::scenario::parse_scenario("two-experts.toml", &text, &[]).unwrap()
}

#[test]
fn activation_memory_counts_each_ranks_own_tokens_per_layer() {
    use moesim_sim::runner::{RunOptions, simulate_strategy};
    use moesim_sim::strategy::ep::EpModel;
    let s = two_experts(2, 2, 1, "name = \"ep2\"\nkind = \"ep\"\nep_size = 2");
    // Two ranks, two experts (one each), two MoE layers: layer 0 sends every token to expert 0 (rank 0),
    // layer 1 to expert 1 (rank 1). The hot rank alternates, so each rank stores one layer's worth of routed
    // tokens, not two: the old model multiplied the worst single layer by every MoE layer.
    let routing = AllTo(EpModel::routing_shape(&s), |l| l % 2);
    let topo = moesim_sim::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let r = simulate_strategy(
        &s,
        &s.strategies[0],
        &topo,
        &cost,
        &routing,
        RunOptions::default(),
    );
    // Hand count: each rank receives 2 × 1024 tokens (both ranks' tokens) in exactly one layer.
    let m = &s.model;
    let tokens = 1024.0;
    let d = m.d_model as f64;
    let dtype = m.dtype_bytes as f64;
    let per_routed = (2.0 * d + 3.0 * m.expert_d_ff as f64) * dtype;
    // Per token and layer (OLMoE: MHA, 16 heads of 128 = d): both norms' inputs and outputs 4·d, queries,
    // keys and values 3·d, the attention output d, in the dtype; one FP32 log-sum-exp per head and one
    // FP32 router logit per expert.
    let heads = m.attention.heads as f64;
    let dense = m.layers as f64 * tokens * (8.0 * d * dtype + heads * 4.0 + m.experts as f64 * 4.0);
    // The loss: its FP32 softmax kept for backward (4 bytes per logit) and the BF16 logits beside it (2).
    let loss = 6.0 * tokens * m.vocab as f64;
    let expect = (dense + 2.0 * tokens * per_routed + loss) / GIB;
    assert!(
        (r.memory.activations_gib - expect).abs() < 1e-9,
        "{} vs {expect}",
        r.memory.activations_gib
    );
    // The old count (worst layer × MoE layers) would have been this much higher.
    let old = (dense + 2.0 * 2.0 * tokens * per_routed + loss) / GIB;
    assert!(old > expect);
}

/// Every rank sends all its tokens of MoE layer `l` to expert `hot(l)`, in every micro-batch.
struct AllTo(moesim_traces::RoutingShape, fn(usize) -> usize);

impl moesim_traces::RoutingSource for AllTo {
    fn shape(&self) -> moesim_traces::RoutingShape {
        self.0
    }
    fn iterations(&self) -> usize {
        1
    }
    fn fill_iteration(&self, _: usize, out: &mut moesim_traces::IterationRouting) {
        let s = self.0;
        for mb in 0..s.micro_batches {
            for layer in 0..s.moe_layers {
                for rank in 0..s.ranks {
                    let c = out.rank_counts_mut(mb, layer, rank);
                    c.fill(0);
                    c[(self.1)(layer)] = s.tokens_per_rank as u32;
                }
            }
        }
    }
    fn describe(&self) -> String {
        "every token to one expert per layer".into()
    }
}

#[test]
fn a_pipeline_chunk_keeps_the_routed_tokens_of_its_layers_not_its_busiest_layer_times_their_number()
{
    use moesim_sim::runner::{RunOptions, run};
    use moesim_sim::strategy::ep::EpModel;
    // Two pipeline ranks of two GPUs (EP 2, one expert each), two layers per stage, 1F1B over two
    // micro-batches: the first rank keeps two chunks in flight.
    let s = two_experts(
        4,
        4,
        2,
        "name = \"pp2-ep2\"\nkind = \"ep\"\nep_size = 2\npp = 2\nstage_layers = [2, 2]",
    );
    let topo = moesim_sim::topology::Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let strategy = &s.strategies[0];
    let activations = |hot: fn(usize) -> usize| {
        // The pipelined lowering's own token sources (the runner would draw them synthetically).
        let routing = AllTo(EpModel::routing_shape_for(&s, strategy), hot);
        let model = EpModel::new(&s, strategy, &topo, &cost, &routing);
        let r = run(&model, &s, strategy, RunOptions::default());
        r.memory.activations_gib
    };
    // The same GPU hot in both layers of a chunk holds 2 × 2048 routed tokens per chunk; alternating hot
    // GPUs hold 2048 each. The busiest single layer is 2048 tokens on one GPU either way.
    let same = activations(|_| 0);
    let alternating = activations(|l| l % 2);
    let m = &s.model;
    let per_copy = moesim_sim::activations::kept(m, true, 1, Default::default()).per_routed_copy;
    let expect = 2.0 * 2048.0 * per_copy / GIB;
    assert!(
        ((same - alternating) - expect).abs() < 1e-9,
        "{same} − {alternating} vs {expect}"
    );
}
