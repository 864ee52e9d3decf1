//! Closed-form checks of the network backends: max-min fair sharing, the α–β all-to-all under both
//! backends, and contention between concurrent collectives.

use moesim_sim::collective::{AllToAllScratch, Collectives, Transfer};
use moesim_sim::engine::{Engine, OpId, SimTime, Stream, StreamPriorities, ps};
use moesim_sim::network::{AnalyticNetwork, CollectiveSpec, FlowNetwork, Network, NetworkKind};
use moesim_sim::scenario::cluster::{Cluster, cluster_preset};
use moesim_sim::topology::Topology;

fn ideal(gpus: usize, gbytes: f64, alpha_us: f64) -> Topology {
    let mut c = cluster_preset("ideal").unwrap();
    c.gpus_per_node = gpus;
    c.ideal_link_gbytes_per_s = gbytes;
    c.ideal_latency_us = alpha_us;
    Topology::build(&c)
}

fn dgx(nodes: usize, edit: impl FnOnce(&mut Cluster)) -> Topology {
    let mut c = cluster_preset("dgx-h100").unwrap();
    c.nodes = nodes;
    edit(&mut c);
    Topology::build(&c)
}

/// One transfer as its own collective (parts on the given streams).
fn single(
    topo: &Topology,
    src: usize,
    dst: usize,
    bytes: f64,
    streams: (Stream, Stream),
) -> CollectiveSpec {
    let c = Collectives::new(topo, NetworkKind::Flow);
    let mut s = AllToAllScratch::default();
    let t = [Transfer {
        src,
        dst,
        bytes,
        messages: 1.0,
    }];
    let (mut spec, _) = c.transfers(&[src, dst], &t, streams.0, &mut s);
    spec.parts[1].stream = streams.1;
    spec
}

/// Runs `specs` (all starting at 0) on a fresh engine; returns each collective's part finish times.
fn run(topo: &Topology, specs: Vec<CollectiveSpec>, net: &mut dyn Network) -> Vec<Vec<SimTime>> {
    run_prioritised(topo, specs, net, StreamPriorities::default())
}

/// [`run`] with the streams' priorities set.
fn run_prioritised(
    topo: &Topology,
    specs: Vec<CollectiveSpec>,
    net: &mut dyn Network,
    priorities: StreamPriorities,
) -> Vec<Vec<SimTime>> {
    let mut e = Engine::new();
    e.reset(topo.gpus(), 0.0);
    e.set_stream_priorities(priorities);
    let ops: Vec<Vec<OpId>> = specs
        .into_iter()
        .map(|s| e.add_collective(s).collect())
        .collect();
    e.run(net);
    ops.iter()
        .map(|o| o.iter().map(|&op| e.timing(op).finish).collect())
        .collect()
}

/// Two DGX nodes with NICs at their datasheet 50 GB/s and no latency, spine uplinks at 60 GB/s
/// (oversubscription 5/3): the max-min examples' fabric.
fn two_nodes_with_a_thin_spine() -> Topology {
    dgx(2, |c| {
        c.nic_latency_us = 0.0;
        c.spine_oversubscription = 5.0 / 3.0;
        c.nic_efficiency = 1.0;
    })
}

/// The max-min examples' three flows (f2 on `comm-aux`, the others on `comm`): see their tests.
fn three_flows(topo: &Topology, b: f64) -> Vec<CollectiveSpec> {
    vec![
        single(topo, 0, 9, b, (Stream::Comm, Stream::Comm)),
        single(topo, 0, 8, b, (Stream::CommAux, Stream::CommAux)),
        single(topo, 8, 1, b, (Stream::Comm, Stream::Comm)),
    ]
}

fn close(a: SimTime, b: SimTime) -> bool {
    a.abs_diff(b) <= 2 + b / 1_000_000_000
}

#[test]
fn two_equal_flows_on_one_link_each_take_twice_as_long_as_one() {
    let topo = ideal(4, 100.0, 0.0);
    let b = 1e9;
    let one = run(
        &topo,
        vec![single(&topo, 0, 1, b, (Stream::Comm, Stream::Comm))],
        &mut FlowNetwork::new(&topo),
    );
    assert!(close(one[0][1], ps(b / 100e9)), "{:?}", one);
    // 0→1 and 2→1 share GPU 1's ingress.
    let two = run(
        &topo,
        vec![
            single(&topo, 0, 1, b, (Stream::Comm, Stream::Comm)),
            single(&topo, 2, 1, b, (Stream::Comm, Stream::CommAux)),
        ],
        &mut FlowNetwork::new(&topo),
    );
    assert!(close(two[0][1], 2 * one[0][1]), "{two:?}");
    assert!(close(two[1][1], 2 * one[0][1]), "{two:?}");
    // The analytic backend prices each collective as if it had the links to itself.
    let analytic = run(
        &topo,
        vec![
            single(&topo, 0, 1, b, (Stream::Comm, Stream::Comm)),
            single(&topo, 2, 1, b, (Stream::Comm, Stream::CommAux)),
        ],
        &mut AnalyticNetwork::default(),
    );
    assert!(close(analytic[0][1], one[0][1]) && close(analytic[1][1], one[0][1]));
}

#[test]
fn three_flows_on_two_links_get_their_max_min_fair_rates() {
    // Two DGX nodes, NICs 50 GB/s, spine uplinks 60 GB/s (oversubscription 5/3), no latency on NICs.
    // f1: GPU 0 → GPU 9 crosses GPU 0's NIC and the rail-0 → rail-1 spine links;
    // f2: GPU 0 → GPU 8 crosses GPU 0's NIC (same rail: no spine);
    // f3: GPU 8 → GPU 1 crosses the same spine links, and its own NICs.
    // Max-min: GPU 0's NIC saturates first, f1 = f2 = 25 GB/s; f3 takes the spine's rest, 60 − 25 =
    // 35 GB/s (an equal per-link split would give it 30). f3 finishes first (B/35); f1 and f2 keep their
    // 25 GB/s (still held by GPU 0's NIC) and finish at B/25.
    let topo = two_nodes_with_a_thin_spine();
    let spine = topo.links.iter().find(|l| l.gpu_port.is_none()).unwrap();
    assert!((spine.capacity() - 60e9).abs() < 1.0);
    let b = 1e9;
    let finish = run(&topo, three_flows(&topo, b), &mut FlowNetwork::new(&topo));
    let lat = |s, d| ps(topo.route_latency_s(s, d));
    assert!(close(finish[0][1], ps(b / 25e9) + lat(0, 9)), "{finish:?}");
    assert!(close(finish[1][1], ps(b / 25e9) + lat(0, 8)), "{finish:?}");
    assert!(close(finish[2][1], ps(b / 35e9) + lat(8, 1)), "{finish:?}");
}

#[test]
fn a_higher_priority_stream_takes_a_shared_link_first_under_flow_only() {
    // Two 1 GB flows on one 100 GB/s link, one on `comm` (priority 1), one on `comm-aux` (0): the first
    // runs alone at the full rate (b/B), the second gets the link after it (2b/B). Equal priorities share
    // it (both 2b/B); the analytic backend has no contention, so both take b/B whatever the priorities.
    let topo = ideal(4, 100.0, 0.0);
    let b = 1e9;
    let flows = || {
        vec![
            single(&topo, 0, 1, b, (Stream::Comm, Stream::Comm)),
            single(&topo, 0, 1, b, (Stream::CommAux, Stream::CommAux)),
        ]
    };
    let comm_first = StreamPriorities {
        comm: 1,
        ..StreamPriorities::default()
    };
    let (alone, after) = (ps(b / 100e9), ps(2.0 * b / 100e9));
    let f = run_prioritised(&topo, flows(), &mut FlowNetwork::new(&topo), comm_first);
    assert!(close(f[0][1], alone) && close(f[1][1], after), "{f:?}");
    let aux_first = StreamPriorities {
        comm_aux: 3,
        ..StreamPriorities::default()
    };
    let f = run_prioritised(&topo, flows(), &mut FlowNetwork::new(&topo), aux_first);
    assert!(close(f[0][1], after) && close(f[1][1], alone), "{f:?}");
    let f = run(&topo, flows(), &mut FlowNetwork::new(&topo));
    assert!(close(f[0][1], after) && close(f[1][1], after), "{f:?}");
    let f = run_prioritised(&topo, flows(), &mut AnalyticNetwork::default(), comm_first);
    assert!(close(f[0][1], alone) && close(f[1][1], alone), "{f:?}");
}

#[test]
fn priority_classes_fill_max_min_on_what_higher_classes_leave() {
    // The three flows of the max-min example, with f2 (`comm-aux`) above the others. Class 1: f2 alone
    // takes GPU 0's NIC (50 GB/s). Class 0 on what is left: f1 gets nothing on that NIC; f3 is held by
    // its own NICs (50 GB/s, the spine has 60). At B/50 f2 and f3 finish and f1 runs at 50 GB/s for B:
    // f1 at 2B/50 = B/25, f2 and f3 at B/50 (without priorities: B/25, B/25, B/35).
    let topo = two_nodes_with_a_thin_spine();
    let b = 1e9;
    let finish = run_prioritised(
        &topo,
        three_flows(&topo, b),
        &mut FlowNetwork::new(&topo),
        StreamPriorities {
            comm_aux: 1,
            ..StreamPriorities::default()
        },
    );
    let lat = |s, d| ps(topo.route_latency_s(s, d));
    assert!(close(finish[0][1], ps(b / 25e9) + lat(0, 9)), "{finish:?}");
    assert!(close(finish[1][1], ps(b / 50e9) + lat(0, 8)), "{finish:?}");
    assert!(close(finish[2][1], ps(b / 50e9) + lat(8, 1)), "{finish:?}");
}

#[test]
fn uniform_all_to_all_on_the_ideal_switch_is_alpha_beta_under_both_backends() {
    let (alpha_us, gbytes) = (10.0, 100.0);
    let topo = ideal(8, gbytes, alpha_us);
    let ranks: Vec<usize> = (0..8).collect();
    let per_pair = 4e6;
    let bytes: Vec<f64> = (0..64)
        .map(|k| if k / 8 == k % 8 { 0.0 } else { per_pair })
        .collect();
    let expect = ps(alpha_us * 1e-6 + 7.0 * per_pair / (gbytes * 1e9));
    let c = Collectives::new(&topo, NetworkKind::Flow);
    let (spec, _) = c.all_to_all(
        &ranks,
        &bytes,
        Stream::Comm,
        &mut AllToAllScratch::default(),
    );
    assert_eq!(spec.flows.len(), 56);
    for net in [
        &mut AnalyticNetwork::default() as &mut dyn Network,
        &mut FlowNetwork::new(&topo),
    ] {
        let finish = run(&topo, vec![spec.clone()], net);
        for &f in &finish[0] {
            assert!(close(f, expect), "{f} vs {expect}");
        }
    }
}

#[test]
fn an_all_reduce_beside_an_all_to_all_on_the_same_nics_slows_both_under_flow_only() {
    let topo = dgx(2, |_| {});
    let ranks: Vec<usize> = (0..16).collect();
    let c = Collectives::new(&topo, NetworkKind::Flow);
    let mut s = AllToAllScratch::default();
    let bytes: Vec<f64> = (0..256)
        .map(|k| if k / 16 == k % 16 { 0.0 } else { 8e6 })
        .collect();
    let (a2a, _) = c.all_to_all(&ranks, &bytes, Stream::Comm, &mut s);
    // The all-reduce's inter-node stage crosses the same NICs; run it alone on the second stream.
    let stages = c.all_reduce(&ranks, 4e9, Stream::CommAux, &mut s);
    let inter = stages[1].clone();
    let alone_a2a = run(&topo, vec![a2a.clone()], &mut FlowNetwork::new(&topo))[0].clone();
    let alone_ar = run(&topo, vec![inter.clone()], &mut FlowNetwork::new(&topo))[0].clone();
    let both = run(
        &topo,
        vec![a2a.clone(), inter.clone()],
        &mut FlowNetwork::new(&topo),
    );
    let max = |v: &[SimTime]| *v.iter().max().unwrap();
    assert!(max(&both[0]) > max(&alone_a2a), "all-to-all not slowed");
    assert!(max(&both[1]) > max(&alone_ar), "all-reduce not slowed");
    let analytic = run(&topo, vec![a2a, inter], &mut AnalyticNetwork::default());
    let an_alone_a2a = run(
        &topo,
        vec![c.all_to_all(&ranks, &bytes, Stream::Comm, &mut s).0],
        &mut AnalyticNetwork::default(),
    );
    assert_eq!(max(&analytic[0]), max(&an_alone_a2a[0]));
}

#[test]
fn flows_conserve_bytes_and_finish_after_their_bottleneck() {
    // A skewed all-to-all: every flow is delivered; no part finishes before its bytes could leave its port.
    let topo = dgx(2, |_| {});
    let ranks: Vec<usize> = (0..16).collect();
    let bytes: Vec<f64> = (0..256)
        .map(|k| {
            let (i, j) = (k / 16, k % 16);
            if i == j {
                0.0
            } else {
                1e6 * (1 + (i * 7 + j * 3) % 5) as f64
            }
        })
        .collect();
    let c = Collectives::new(&topo, NetworkKind::Flow);
    let (spec, priced) = c.all_to_all(
        &ranks,
        &bytes,
        Stream::Comm,
        &mut AllToAllScratch::default(),
    );
    let total: f64 = spec.flows.iter().map(|f| f.bytes).sum();
    assert!((total - priced.network_bytes).abs() < 1e-3);
    let mut net = FlowNetwork::new(&topo).recording(true);
    let finish = run(&topo, vec![spec.clone()], &mut net);
    assert_eq!(net.records().len(), spec.flows.len());
    // Work conservation: a rank's part cannot end before its own ports have sent (and received) its bytes.
    let (nvl, nic) = (topo.route_bandwidth(0, 1), topo.route_bandwidth(0, 8));
    for (i, &f) in finish[0].iter().enumerate() {
        let (mut local, mut remote) = (0.0, 0.0);
        for j in 0..16 {
            let b = bytes[i * 16 + j];
            if i / 8 == j / 8 {
                local += b
            } else {
                remote += b
            }
        }
        let bound = (local / nvl).max(remote / nic);
        assert!(
            f as f64 * 1e-12 >= bound * 0.999,
            "rank {i}: {f} vs {bound}"
        );
    }
}
