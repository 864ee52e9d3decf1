//! Pipeline schedules run through the engine: with uniform per-stage work and free sends, each schedule's
//! step matches the bubble its paper gives; with real sends on a DGX H100 node, 1F1B's step grows by the
//! send time on every hop of its critical path.

use moesim_sim::collective::{AllToAllScratch, Collectives};
use moesim_sim::engine::{OpId, SimTime, Stream};
use moesim_sim::iteration::{IterationGraph, OpInfo};
use moesim_sim::network::NetworkKind;
use moesim_sim::phase::Phase;
use moesim_sim::pipeline::{Pass, Schedule, ScheduleKind, StageLowering, Task, emit};
use moesim_sim::scenario::cluster::cluster_preset;
use moesim_sim::topology::Topology;

/// One GPU per pipeline rank (GPU r for rank r); every task one compute op of a fixed duration.
struct Uniform {
    gpus: Vec<Vec<usize>>,
    /// Forward, full backward and weight-gradient time of one chunk; backward-input is `b − w`.
    f: SimTime,
    b: SimTime,
    w: SimTime,
    bytes: f64,
    /// Give the lowering's real durations (and so priced sends) to the issue order.
    estimates: bool,
}

impl Uniform {
    fn new(p: usize, f: SimTime, b: SimTime, w: SimTime) -> Self {
        Uniform {
            gpus: (0..p).map(|r| vec![r]).collect(),
            f,
            b,
            w,
            bytes: 0.0,
            estimates: false,
        }
    }

    fn duration(&self, pass: Pass) -> SimTime {
        match pass {
            Pass::Forward => self.f,
            Pass::Backward => self.b,
            Pass::BackwardInput => self.b - self.w,
            Pass::BackwardWeight => self.w,
        }
    }
}

impl StageLowering for Uniform {
    fn gpus(&self, rank: usize) -> &[usize] {
        &self.gpus[rank]
    }

    fn task(
        &mut self,
        graph: &mut IterationGraph,
        rank: usize,
        task: Task,
        prev: &mut [Option<OpId>],
        ready: &[Option<OpId>],
    ) {
        let d = self.duration(task.pass);
        for &g in &self.gpus[rank] {
            let deps: Vec<OpId> = prev[g].into_iter().chain(ready[g]).collect();
            let info = OpInfo::compute(Phase::DenseCompute, g, 0);
            prev[g] = Some(graph.op(g, Stream::Compute, d, info, &deps));
        }
    }

    fn send_bytes(&self, _task: Task) -> f64 {
        self.bytes
    }

    fn estimate_s(&self, _rank: usize, task: Task) -> Option<f64> {
        self.estimates
            .then(|| self.duration(task.pass) as f64 * 1e-12)
    }
}

fn ideal_topology(gpus: usize) -> Topology {
    let mut c = cluster_preset("ideal").unwrap();
    c.gpus_per_node = gpus;
    c.ideal_latency_us = 0.0;
    Topology::build(&c)
}

fn dgx_h100() -> Topology {
    let mut c = cluster_preset("dgx-h100").unwrap();
    c.nodes = 1;
    Topology::build(&c)
}

/// Emits `schedule` with `lowering` on `topo` and runs it; returns the step.
fn run(
    schedule: &Schedule,
    lowering: &mut Uniform,
    topo: &Topology,
    network: NetworkKind,
) -> SimTime {
    let n = schedule.ranks * lowering.gpus[0].len();
    let mut graph = IterationGraph::default();
    graph.reset_with(n, network, 0.0);
    let comms = Collectives::new(topo, network);
    let mut scratch = AllToAllScratch::default();
    let mut prev = vec![None; n];
    emit(
        &mut graph,
        schedule,
        &comms,
        &mut scratch,
        lowering,
        &mut prev,
    )
    .unwrap();
    graph.analyse(Some(topo)).step
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// Independent reference: each rank runs its slots in order; a slot starts when the rank is free and,
/// for each input from another rank, `send` after its producer finished.
fn max_plus(s: &Schedule, l: &Uniform, send: SimTime) -> SimTime {
    use std::collections::HashMap;
    let p = s.ranks;
    let mut finish: HashMap<Task, (SimTime, usize)> = HashMap::new();
    let mut next = vec![0; p];
    let mut free = vec![0; p];
    let total: usize = s.per_rank.iter().map(Vec::len).sum();
    let mut done = 0;
    while done < total {
        let before = done;
        for r in 0..p {
            'slots: while let Some(slot) = s.per_rank[r].get(next[r]) {
                let mut start = free[r];
                let mut work = 0;
                for t in slot.tasks() {
                    let input = match t.pass {
                        Pass::Forward if t.model_stage > 0 => Some(vec![Task {
                            model_stage: t.model_stage - 1,
                            ..t
                        }]),
                        Pass::Backward | Pass::BackwardInput
                            if t.model_stage + 1 < s.model_stages =>
                        {
                            Some(vec![
                                Task::new(t.mb, t.model_stage + 1, Pass::Backward),
                                Task::new(t.mb, t.model_stage + 1, Pass::BackwardInput),
                            ])
                        }
                        _ => None,
                    };
                    if let Some(candidates) = input {
                        match candidates.iter().find_map(|c| finish.get(c)) {
                            Some(&(f, rr)) => start = start.max(f + if rr == r { 0 } else { send }),
                            None => break 'slots,
                        }
                    }
                    work += l.duration(t.pass);
                }
                free[r] = start + work;
                for t in slot.tasks() {
                    finish.insert(t, (free[r], r));
                }
                next[r] += 1;
                done += 1;
            }
        }
        assert!(done > before, "the reference cannot make progress");
    }
    free.into_iter().max().unwrap()
}

/// One forward chunk: 1.2 ms, so that F/2, F/3 and F/4 are whole picoseconds.
const F: SimTime = 1_200_000_000;

/// Runs `kind` with uniform work and free sends; returns the step.
fn free_sends(
    kind: ScheduleKind,
    p: usize,
    v: usize,
    m: usize,
    f: SimTime,
    b: SimTime,
    w: SimTime,
) -> (Schedule, SimTime) {
    let s = Schedule::build(kind, p, v, m).unwrap();
    let mut l = Uniform::new(p, f, b, w);
    let step = run(&s, &mut l, &ideal_topology(p), NetworkKind::Analytic);
    (s, step)
}

#[test]
fn one_f_one_b_step_is_m_plus_p_minus_1_forward_backward_pairs() {
    let b = 2 * F;
    for (p, m) in [
        (1, 3),
        (2, 4),
        (4, 1),
        (4, 4),
        (4, 8),
        (3, 7),
        (8, 16),
        (8, 5),
    ] {
        let (s, step) = free_sends(ScheduleKind::OneFOneB, p, 1, m, F, b, 0);
        let expected = ((m + p - 1) as u64 * (F + b)) as f64;
        assert!(
            close(step as f64, expected),
            "p={p} m={m}: {step} vs {expected}"
        );
        let ideal = (m as u64 * (F + b)) as f64;
        let bubble = step as f64 - ideal;
        // As a share of the step, (p−1)/(m+p−1); as a share of ideal time, the closed form's (p−1)/m.
        assert!(close(
            bubble / step as f64,
            (p - 1) as f64 / (m + p - 1) as f64
        ));
        assert!(close(
            bubble / ideal,
            s.closed_form_bubble(F as f64, b as f64, 0.0)
        ));
    }
}

#[test]
fn gpipe_takes_as_long_as_1f1b_and_holds_every_micro_batch() {
    for (p, m) in [(2, 4), (4, 8), (8, 3)] {
        let (g, gpipe) = free_sends(ScheduleKind::Gpipe, p, 1, m, F, 2 * F, 0);
        let (o, one) = free_sends(ScheduleKind::OneFOneB, p, 1, m, F, 2 * F, 0);
        assert!(close(gpipe as f64, one as f64), "p={p} m={m}");
        assert!(close(
            g.closed_form_bubble(1.0, 2.0, 0.0),
            o.closed_form_bubble(1.0, 2.0, 0.0)
        ));
        assert_eq!((g.peak_in_flight(0), o.peak_in_flight(0)), (m, p.min(m)));
    }
}

/// With v chunks of F/v and B/v per rank, the real interleaved order gives exactly Megatron's bubble
/// (p−1)(F+B)/v: step = m(F+B) + (p−1)(F+B)/v, a v-th of 1F1B's, also when m = p (all warm-up).
#[test]
fn interleaved_bubble_is_a_vth_of_1f1b() {
    let b = 2 * F;
    for (p, v, m) in [
        (1, 2, 3),
        (4, 2, 8),
        (4, 2, 4),
        (4, 3, 8),
        (2, 2, 4),
        (4, 4, 16),
        (8, 2, 16),
        (8, 3, 24),
    ] {
        let (s, step) = free_sends(
            ScheduleKind::Interleaved,
            p,
            v,
            m,
            F / v as u64,
            b / v as u64,
            0,
        );
        let ideal = (m as u64 * (F + b)) as f64;
        let bubble = step as f64 - ideal;
        let megatron = (p - 1) as f64 * (F + b) as f64 / v as f64;
        assert!(
            close(bubble, megatron),
            "p={p} v={v} m={m}: {bubble} vs {megatron}"
        );
        assert!(close(
            bubble / ideal,
            s.closed_form_bubble(F as f64, b as f64, 0.0)
        ));
        let (_, one) = free_sends(ScheduleKind::OneFOneB, p, 1, m, F, b, 0);
        assert!(close(bubble * v as f64, one as f64 - ideal));
    }
}

/// DualPipe's README: bubble (PP/2−1)(F&B + B − 3W). This simulator runs an overlapped pair's compute back
/// to back, so F&B = F + B here; the README's bubble is then exact when a backward-input chunk takes as
/// long as a forward (B − W = F, the zero-bubble papers' uniform assumption). Memory: PP+1 chunks of
/// activations (1F1B: PP) and two model stages' parameters per rank (1F1B: one).
#[test]
fn dual_pipe_bubble_and_memory_match_its_readme() {
    let u = F / 3;
    for (f, b, w) in [(3 * u, 6 * u, 3 * u), (3 * u, 5 * u, 2 * u)] {
        assert_eq!(b - w, f);
        for p in [2usize, 4, 6, 8] {
            for m in [2 * p, 2 * p + 2, 3 * p] {
                if !m.is_multiple_of(2) {
                    continue;
                }
                let (s, step) = free_sends(ScheduleKind::DualPipe, p, 1, m, f, b, w);
                let ideal = (m as u64 * (f + b)) as f64;
                let bubble = step as f64 - ideal;
                let fb = (f + b) as f64;
                let readme = (p as f64 / 2.0 - 1.0) * (fb + b as f64 - 3.0 * w as f64);
                assert!(close(bubble, readme), "p={p} m={m}: {bubble} vs {readme}");
                assert!(close(
                    bubble / ideal,
                    s.closed_form_bubble(f as f64, b as f64, w as f64)
                ));
                let (o, one) = free_sends(ScheduleKind::OneFOneB, p, 1, m, f, b, 0);
                assert!(step <= one, "p={p} m={m}: DualPipe {step} vs 1F1B {one}");
                for r in 0..p {
                    assert_eq!(s.peak_in_flight(r), p + 1);
                    assert_eq!(s.stages_on(r).len(), 2 * o.stages_on(r).len());
                }
                assert_eq!(o.peak_in_flight(0), p);
            }
        }
    }
}

/// Hops on 1F1B's critical path when every send takes s (small next to F). The path chains the round
/// trips of micro-batches 0, p, 2p, …: each crosses 2(p−1) hops down and back up, and rank 0 starts
/// micro-batch kp's forward right after micro-batch (k−1)p's backward, so no other work hides them; the
/// last round trip is cut short by the cool-down. In all 2(p−1) + 2(m−1−⌈(m−1)/p⌉) hops, exactly
/// 2(p−1)·⌈m/p⌉ when m ≡ 1 (mod p). (Read off the critical path of the independent list schedule
/// below, which the engine matches.)
fn one_f_one_b_hops(p: usize, m: usize) -> usize {
    2 * (p - 1) + 2 * ((m - 1) - (m - 1).div_ceil(p))
}

#[test]
fn sends_on_a_dgx_h100_delay_the_step_by_their_time_on_every_critical_hop() {
    let topo = dgx_h100();
    let bytes = 64e6; // a 4096-token micro-batch of hidden 7168 in bf16 is 59 MB
    let mut scratch = AllToAllScratch::default();
    let send = Collectives::new(&topo, NetworkKind::Analytic)
        .send(0, 1, bytes, Stream::CommAux, &mut scratch)
        .parts[0]
        .analytic;
    assert!(
        send > 0 && send < F / 4,
        "an NVLink send of 64 MB: {send} ps"
    );
    for network in [NetworkKind::Analytic, NetworkKind::Flow] {
        for (p, m) in [(2, 4), (4, 1), (4, 4), (4, 8), (4, 9), (3, 7), (8, 16)] {
            let s = Schedule::build(ScheduleKind::OneFOneB, p, 1, m).unwrap();
            let mut l = Uniform::new(p, F, 2 * F, 0);
            l.bytes = bytes;
            let step = run(&s, &mut l, &topo, network) as f64;
            let expected =
                ((m + p - 1) as u64 * 3 * F + one_f_one_b_hops(p, m) as u64 * send) as f64;
            assert!(
                close(step, expected),
                "{network:?} p={p} m={m}: {step} vs {expected}"
            );
            // GPipe: only the fill and the drain.
            let g = Schedule::build(ScheduleKind::Gpipe, p, 1, m).unwrap();
            let step = run(&g, &mut l, &topo, network) as f64;
            let expected = ((m + p - 1) as u64 * 3 * F + 2 * (p - 1) as u64 * send) as f64;
            assert!(
                close(step, expected),
                "GPipe {network:?} p={p} m={m}: {step} vs {expected}"
            );
        }
    }
}

/// With real sends, the engine against an independent list schedule in which every receive costs the
/// send time and transfers never wait for each other. Each GPU has one stream per pipeline neighbour (as
/// PyTorch gives each NCCL point-to-point pair its own stream), and the issue order puts every such
/// stream in the order its transfers happen, so GPipe, 1F1B and interleaved 1F1B agree exactly with the
/// reference. Pinned: DualPipe moves activations one way and gradients the other between the same two
/// neighbours at once, and on the pair's one stream those queue, whole send times beyond the reference
/// (4 for p = 4, 11 for p = 8; as on PyTorch's one stream per pair).
#[test]
fn the_engine_agrees_with_an_independent_list_schedule() {
    let topo = dgx_h100();
    let bytes = 64e6;
    let mut scratch = AllToAllScratch::default();
    let send = Collectives::new(&topo, NetworkKind::Analytic)
        .send(0, 1, bytes, Stream::CommAux, &mut scratch)
        .parts[0]
        .analytic;
    let u = F / 3;
    // (kind, p, v, m, (f, b, w), send times beyond the reference that a pair's one stream costs)
    let cases = [
        (ScheduleKind::Gpipe, 4, 1, 6, (3 * u, 6 * u, 0), Some(0)),
        (ScheduleKind::OneFOneB, 8, 1, 12, (3 * u, 6 * u, 0), Some(0)),
        (ScheduleKind::Interleaved, 2, 3, 6, (u, 2 * u, 0), Some(0)),
        (
            ScheduleKind::Interleaved,
            4,
            2,
            8,
            (3 * u / 2, 3 * u, 0),
            Some(0),
        ),
        (
            ScheduleKind::DualPipe,
            4,
            1,
            8,
            (3 * u, 6 * u, 3 * u),
            Some(4),
        ),
        (
            ScheduleKind::DualPipe,
            8,
            1,
            20,
            (3 * u, 5 * u, 2 * u),
            Some(11),
        ),
    ];
    for (kind, p, v, m, (f, b, w), extra) in cases {
        let s = Schedule::build(kind, p, v, m).unwrap();
        for estimates in [false, true] {
            for network in [NetworkKind::Analytic, NetworkKind::Flow] {
                let mut l = Uniform::new(p, f, b, w);
                l.bytes = bytes;
                l.estimates = estimates;
                let step = run(&s, &mut l, &topo, network) as f64;
                let reference = max_plus(&s, &l, send) as f64;
                let what = format!("{kind:?} p={p} m={m} estimates={estimates} {network:?}");
                match extra {
                    // Under the flow backend, sends to both neighbours at once also share the GPU's switch
                    // port: up to one more send time.
                    Some(k) if network == NetworkKind::Flow && k > 0 => assert!(
                        step >= reference + (k * send) as f64 - 1.0
                            && step <= reference + ((k + 1) * send) as f64 + 1.0,
                        "{what}: {step} vs {reference} + {k}..={} sends of {send}",
                        k + 1
                    ),
                    Some(k) => assert!(
                        close(step, reference + (k * send) as f64),
                        "{what}: {step} vs {reference} + {k} sends of {send}"
                    ),
                    None => assert!(
                        step > reference && step < reference + send as f64,
                        "{what}: {step} vs {reference}"
                    ),
                }
            }
        }
    }
}

#[test]
fn several_gpus_per_stage_send_pairwise() {
    let (p, m, width) = (4, 8, 2);
    let s = Schedule::build(ScheduleKind::OneFOneB, p, 1, m).unwrap();
    let mut l = Uniform::new(p, F, 2 * F, 0);
    l.gpus = (0..p)
        .map(|r| (0..width).map(|i| r * width + i).collect())
        .collect();
    l.bytes = 1e6;
    let topo = dgx_h100();
    let n = p * width;
    let mut graph = IterationGraph::default();
    graph.reset_with(n, NetworkKind::Analytic, 0.0);
    let comms = Collectives::new(&topo, NetworkKind::Analytic);
    let mut scratch = AllToAllScratch::default();
    let mut prev = vec![None; n];
    emit(&mut graph, &s, &comms, &mut scratch, &mut l, &mut prev).unwrap();
    // One collective per task output: activations forward and gradients back over p−1 boundaries.
    let sends = graph.engine.collectives();
    assert_eq!(sends.len(), 2 * m * (p - 1));
    for spec in sends {
        assert_eq!(spec.parts.len(), 2 * width);
        // Each side on its stream for the other: one part towards the next rank, one towards the previous.
        assert!(
            spec.parts
                .iter()
                .all(|part| matches!(part.stream, Stream::PipeNext | Stream::PipePrev))
        );
        assert!(
            spec.parts
                .iter()
                .any(|part| part.stream == Stream::PipeNext)
        );
        assert!(
            spec.parts
                .iter()
                .any(|part| part.stream == Stream::PipePrev)
        );
        assert!((spec.bytes - width as f64 * 1e6).abs() < 1e-6);
    }
    let pipeline_send = graph
        .info
        .iter()
        .filter(|i| i.phase == Phase::PipelineSend)
        .count();
    assert_eq!(pipeline_send, 2 * m * (p - 1) * 2 * width);
    assert!(prev.iter().all(Option::is_some));
    let step = graph.analyse(Some(&topo)).step;
    let mut single = Uniform::new(p, F, 2 * F, 0);
    single.bytes = 1e6;
    assert_eq!(step, run(&s, &mut single, &topo, NetworkKind::Analytic));
}

#[test]
fn a_schedule_that_cannot_progress_is_an_error() {
    use moesim_sim::pipeline::Slot;
    let mut s = Schedule::build(ScheduleKind::OneFOneB, 2, 1, 2).unwrap();
    let t = |mb, stage, pass| Slot::Single(Task::new(mb, stage, pass));
    // Rank 0 waits for micro-batch 0's gradient before sending micro-batch 1 forward; rank 1 insists on
    // micro-batch 1 first.
    s.per_rank[0] = vec![
        t(0, 0, Pass::Forward),
        t(0, 0, Pass::Backward),
        t(1, 0, Pass::Forward),
        t(1, 0, Pass::Backward),
    ];
    s.per_rank[1] = vec![
        t(1, 1, Pass::Forward),
        t(1, 1, Pass::Backward),
        t(0, 1, Pass::Forward),
        t(0, 1, Pass::Backward),
    ];
    let topo = ideal_topology(2);
    let mut graph = IterationGraph::default();
    graph.reset_with(2, NetworkKind::Analytic, 0.0);
    let comms = Collectives::new(&topo, NetworkKind::Analytic);
    let mut l = Uniform::new(2, F, 2 * F, 0);
    // The emitter's error for schedule `s`.
    let mut refused = |s: &Schedule| {
        emit(
            &mut graph,
            s,
            &comms,
            &mut AllToAllScratch::default(),
            &mut l,
            &mut [None, None],
        )
        .unwrap_err()
    };
    let err = refused(&s);
    assert!(err.contains("cannot make progress"), "{err}");
    // A backward issued before its own forward is caught before anything is emitted.
    s.per_rank[1] = vec![
        t(0, 1, Pass::Backward),
        t(0, 1, Pass::Forward),
        t(1, 1, Pass::Forward),
        t(1, 1, Pass::Backward),
    ];
    let err = refused(&s);
    assert!(err.contains("comes before"), "{err}");
}
