//! Engine and reference-scenario benchmarks: `cargo bench -p moesim-sim --bench engine`.
//!
//! Throughput is reported as items/s where an item is one engine event (an operation finishing).

use divan::Bencher;
use divan::counter::ItemsCount;
use moesim_sim::Scenario;
use moesim_sim::engine::{Engine, Resource, Stream};
use moesim_sim::network::{AnalyticNetwork, NetworkKind};
use moesim_sim::runner::{RunOptions, simulate_scenario, synthetic_routing};
use moesim_sim::scenario::parse_scenario;
use moesim_sim::strategy::ep::{EpModel, EpWorkspace};
use moesim_sim::topology::Topology;

fn main() {
    divan::main();
}

fn scenario(name: &str) -> Scenario {
    let path = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario");
    parse_scenario(&path, &text, &[]).expect("valid scenario")
}

/// The shape EP lowers to: `ranks` chains of compute/comm operations joined by a barrier per layer.
fn layered_graph(e: &mut Engine, ranks: u32, layers: u32) {
    e.reset(ranks as usize, 0.0);
    let mut prev: Vec<Option<u32>> = vec![None; ranks as usize];
    for layer in 0..layers {
        let mut ops = Vec::with_capacity(ranks as usize);
        for r in 0..ranks {
            let op = e.add_work(
                Resource::new(r as usize, Stream::Compute),
                1_000 + ((r * 7919 + layer * 104_729) % 997) as u64,
            );
            if let Some(p) = prev[r as usize] {
                e.add_dep(p, op);
            }
            ops.push(op);
        }
        let b = e.add_barrier();
        for &op in &ops {
            e.add_dep(op, b);
        }
        for r in 0..ranks {
            let op = e.add_work(Resource::new(r as usize, Stream::Comm), 500);
            e.add_dep(b, op);
            prev[r as usize] = Some(op);
        }
    }
}

#[divan::bench(args = [8, 64, 256])]
fn engine_events(bencher: Bencher, ranks: u32) {
    let mut e = Engine::new();
    layered_graph(&mut e, ranks, 200);
    let events = e.op_count() as u64;
    bencher
        .counter(ItemsCount::new(events))
        .bench_local(|| e.run(&mut AnalyticNetwork::default()));
}

#[divan::bench]
fn engine_build_and_run_256_ranks(bencher: Bencher) {
    let mut e = Engine::new();
    layered_graph(&mut e, 256, 200);
    let events = e.op_count() as u64;
    bencher.counter(ItemsCount::new(events)).bench_local(|| {
        layered_graph(&mut e, 256, 200);
        e.run(&mut AnalyticNetwork::default())
    });
}

/// One iteration of the DeepSeek-V3 reference scenario (256 GPUs), routing generation included.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn bench_dsv3_one_iteration(bencher: Bencher) {
    ep_iteration(bencher, &scenario("bench-dsv3.toml"), 1);
}

/// One EP iteration of `s`'s first strategy (after a warm-up run of iteration 0), events counted.
fn ep_iteration(bencher: Bencher, s: &Scenario, iteration: usize) {
    let topo = Topology::build(&s.cluster);
    let cost = s.cluster.roofline();
    let routing = synthetic_routing(s);
    let model = EpModel::new(s, &s.strategies[0], &topo, &cost, &routing);
    let mut ws = EpWorkspace::default();
    let events = model.simulate_iteration(0, &mut ws).outcome.events;
    bencher
        .counter(ItemsCount::new(events))
        .bench_local(|| model.simulate_iteration(iteration, &mut ws));
}

/// The whole reference scenario: 100 iterations on all cores.
#[divan::bench(sample_count = 1, sample_size = 1)]
fn bench_dsv3_full(bencher: Bencher) {
    let s = scenario("bench-dsv3.toml");
    let routing = synthetic_routing(&s);
    bencher.bench_local(|| {
        simulate_scenario(
            &s,
            &routing,
            None,
            RunOptions {
                timing: false,
                progress: None,
            },
        )
    });
}

/// The reference scenario's shape under the flow network backend, cut to 8 nodes (EP-64) and 8 layers (5 MoE
/// layers), one iteration: every all-to-all is 64 × 63 flows, and the max-min recomputation after each
/// flow's finish makes the full 256-GPU scenario impractical under this backend (see docs/engine.md).
#[divan::bench(sample_count = 1, sample_size = 1)]
fn bench_dsv3_flow_8_nodes_one_iteration(bencher: Bencher) {
    let mut s = scenario("bench-dsv3.toml");
    s.cluster.network = NetworkKind::Flow;
    s.cluster.nodes = 8;
    s.model.layers = 8;
    s.strategies[0].ep_size = 64;
    ep_iteration(bencher, &s, 0);
}

/// The quickstart under the flow network backend.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn quickstart_flow(bencher: Bencher) {
    let mut s = scenario("quickstart.toml");
    s.cluster.network = NetworkKind::Flow;
    let routing = synthetic_routing(&s);
    bencher.bench_local(|| {
        simulate_scenario(
            &s,
            &routing,
            None,
            RunOptions {
                timing: false,
                progress: None,
            },
        )
    });
}

/// The quickstart (four strategies, 30 iterations).
#[divan::bench(sample_count = 5, sample_size = 1)]
fn quickstart(bencher: Bencher) {
    let s = scenario("quickstart.toml");
    let routing = synthetic_routing(&s);
    bencher.bench_local(|| {
        simulate_scenario(
            &s,
            &routing,
            None,
            RunOptions {
                timing: false,
                progress: None,
            },
        )
    });
}
