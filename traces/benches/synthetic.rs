//! Synthetic routing throughput: `cargo bench -p moesim-traces --bench synthetic`.
//!
//! One iteration of bench-dsv3-shaped routing (4 MoE layers here, 256 ranks × 256 experts, top-8, 4096 tokens
//! per rank, log-normal σ = 0.8): an item is one (rank, expert) count.

use divan::Bencher;
use divan::counter::ItemsCount;
use moesim_traces::{
    IterationRouting, RoutingShape, RoutingSource, Skew, SyntheticRouting, SyntheticSpec,
};

fn main() {
    divan::main();
}

fn shape() -> RoutingShape {
    RoutingShape {
        moe_layers: 4,
        experts: 256,
        top_k: 8,
        ranks: 256,
        micro_batches: 1,
        tokens_per_rank: 4096,
    }
}

#[divan::bench(args = ["lognormal", "zipf", "uniform"])]
fn fill_iteration(bencher: Bencher, skew: &str) {
    let skew = match skew {
        "lognormal" => Skew::LogNormal { sigma: 0.8 },
        "zipf" => Skew::Zipf { s: 0.4 },
        _ => Skew::Uniform,
    };
    let s = shape();
    let routing = SyntheticRouting::new(
        s,
        1000,
        SyntheticSpec {
            skew,
            seed: 7,
            shuffle_per_layer: true,
        },
    );
    let mut out = IterationRouting::zeros(s);
    let mut it = 0;
    bencher
        .counter(ItemsCount::new(s.moe_layers * s.ranks * s.experts))
        .bench_local(|| {
            it += 1;
            routing.fill_iteration(it % 1000, &mut out);
            divan::black_box(&out);
        });
}
