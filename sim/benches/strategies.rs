//! FSSDP and offloading benchmarks: `cargo bench -p moesim-sim --bench strategies`.
//!
//! Per-iteration benches report engine events per second (an event is one operation finishing); the
//! whole-scenario benches time `simulate_scenario` on the reference scenarios end to end.

use divan::Bencher;
use divan::counter::ItemsCount;
use moesim_sim::Scenario;
use moesim_sim::iteration::IterationGraph;
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::fssdp::{FssdpModel, FssdpWorkspace};
use moesim_sim::strategy::offload::OffloadModel;
use moesim_sim::strategy::offload::tokens::TokenRouting;
use moesim_sim::topology::Topology;

fn main() {
    divan::main();
}

fn scenario(name: &str) -> Scenario {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario");
    parse_scenario(&path, &text, &[]).expect("valid scenario")
}

const OPTS: RunOptions = RunOptions {
    timing: false,
    progress: None,
};

/// One FSSDP training iteration of GPT-MoE-S on 32 GPUs: planning, sparse collectives, dispatch, engine run.
#[divan::bench(args = [false, true])]
fn fssdp_iteration(bencher: Bencher, rematerialize: bool) {
    let s = scenario("hecate-gpt-moe-s.toml");
    let st = &s.strategies[if rematerialize { 2 } else { 1 }];
    let topo = Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let routing = synthetic_routing(&s);
    let model = FssdpModel::new(&s, st, &topo, &cost, &routing);
    let mut ws = FssdpWorkspace::default();
    let events = model.simulate_iteration(1, &mut ws).base.outcome.events;
    bencher
        .counter(ItemsCount::new(events))
        .bench_local(|| model.simulate_iteration(1, &mut ws));
}

/// One batch-1 decode step of Mixtral-8x7B with an LRU cache and pre-gating prefetch (timing only; the
/// cache replay is done once up front).
#[divan::bench]
fn offload_decode_step(bencher: Bencher) {
    let s = scenario("offload-mixtral.toml");
    let st = s
        .strategies
        .iter()
        .find(|x| x.name == "lru-4-pregate")
        .unwrap();
    let cost = s.cluster.roofline();
    let tokens = TokenRouting::synthetic(&s);
    let model = OffloadModel::new(&s, st.offload.as_ref().unwrap(), &cost, &tokens).unwrap();
    let mut graph = IterationGraph::default();
    let events = model.simulate_step(1, &mut graph).0.outcome.events;
    bencher
        .counter(ItemsCount::new(events))
        .bench_local(|| model.simulate_step(1, &mut graph));
}

/// The whole Hecate scenario (EP, FSSDP, FSSDP with re-materialization; 20 iterations each).
#[divan::bench(sample_count = 10)]
fn hecate_scenario(bencher: Bencher) {
    let s = scenario("hecate-gpt-moe-s.toml");
    let routing = synthetic_routing(&s);
    bencher.bench(|| simulate_scenario(&s, &routing, None, OPTS));
}

/// The whole offloading scenario (seven cache/prefetch/miss settings, 200 decode steps each).
#[divan::bench(sample_count = 10)]
fn offload_scenario(bencher: Bencher) {
    let s = scenario("offload-mixtral.toml");
    let routing = synthetic_routing(&s);
    bencher.bench(|| simulate_scenario(&s, &routing, None, OPTS));
}
