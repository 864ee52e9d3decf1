//! The discrete-event engine: operations on typed resources, collectives priced by a [`Network`], and
//! communication kernels that take a share of the GPU's SMs from compute.
//!
//! Life cycle: (1) add operations, collectives and dependencies; (2) [`Engine::run`] with a network
//! backend; (3) read start/finish times, the critical predecessor of every operation and the event count.
//!
//! - A **resource** is a `(rank, stream)` pair ([`Resource`]). A stream runs its operations in the order they
//!   were added (issue order, as a CUDA stream does): an operation starts when its dependencies have finished
//!   and every operation added before it on the same stream has finished.
//! - An operation is **work** (a duration from the cost model), a **barrier** (zero time, no resource) or a
//!   **part** of a collective: one rank's share of a set of transfers ([`crate::network::CollectiveSpec`]).
//!   A collective begins when the last of its parts has started (a rendezvous: NCCL and DeepEP kernels wait
//!   for their peers); the [`Network`] then says when each part is done.
//! - While a rank runs a communication kernel (any part on a stream that [`Stream::takes_sms`]), its compute
//!   stream runs at `1 − comm_sm_fraction` of full speed: the kernel holds that share of the SMs.
//! - Streams have a **priority** ([`StreamPriorities`]): a collective's transfers carry the priority of the
//!   stream its parts run on, and a network that shares links (the flow backend) serves higher classes first.
//!
//! Ordering guarantees: events are keyed by (time, sequence number) and same-time events are processed in
//! the order they were scheduled, so a run is a pure function of what was added. Every operation remembers
//! its *critical predecessor*: the dependency that finished last, or the operation ahead of it on its stream
//! when it had to wait for the stream, or (for a part that waited for its peers) the predecessor of the part
//! that arrived last. Following those links back from the last operation gives the critical path.
//!
//! Time is integer picoseconds ([`SimTime`]) so that sums are exact and ties are real ties.

use crate::event_queue::{self, EventQueue};
use crate::network::{CollectiveSpec, Network};
use crate::stream_activity::{RankActivity, StreamActivity};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Simulated time in picoseconds.
pub type SimTime = u64;

/// Converts seconds to [`SimTime`].
pub fn ps(seconds: f64) -> SimTime {
    round_to_time(seconds * 1e12)
}

/// `x.round().max(0.0) as SimTime`, without the call to the C library's `round` that `f64::round` is
/// on the baseline x86-64 target (no SSE4.1): a few percent of a large run's time, two calls per
/// operation. Exact: below 2^53 the fraction `x − ⌊x⌋` is computed without rounding, and halves round
/// away from zero as `round` does; larger values are whole already.
pub fn round_to_time(x: f64) -> SimTime {
    if x >= 9.0e15 {
        return x as SimTime;
    }
    // Zero, negatives and NaN clamp to zero.
    if x.is_nan() || x <= 0.0 {
        return 0;
    }
    let whole = x as SimTime;
    if x - whole as f64 >= 0.5 {
        whole + 1
    } else {
        whole
    }
}

/// Converts [`SimTime`] to milliseconds.
pub fn to_ms(t: SimTime) -> f64 {
    t as f64 * 1e-9
}

pub type OpId = u32;
pub type CollectiveId = u32;
const NONE: u32 = u32::MAX;

/// A stream of a rank: where an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stream {
    /// The GPU's compute stream (GEMMs, attention, elementwise kernels).
    Compute,
    /// The main communication stream (all-to-all, sparse collectives, pipeline sends).
    Comm,
    /// A second communication stream (data-parallel gradient reduction beside the all-to-alls).
    CommAux,
    /// The host-to-device copy engine (PCIe).
    H2d,
    /// The device-to-host copy engine.
    D2h,
    /// The host CPU (offloaded expert compute).
    HostCpu,
    /// Point-to-point transfers with the previous pipeline rank (PyTorch runs each peer pair's sends and
    /// receives on their own NCCL stream, so transfers with the two neighbours do not queue behind each
    /// other).
    PipePrev,
    /// Point-to-point transfers with the next pipeline rank.
    PipeNext,
}

impl Stream {
    pub const ALL: [Stream; 8] = [
        Stream::Compute,
        Stream::Comm,
        Stream::CommAux,
        Stream::H2d,
        Stream::D2h,
        Stream::HostCpu,
        Stream::PipePrev,
        Stream::PipeNext,
    ];
    pub const COUNT: usize = 8;

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Stream::Compute => "compute",
            Stream::Comm => "comm",
            Stream::CommAux => "comm-aux",
            Stream::H2d => "h2d",
            Stream::D2h => "d2h",
            Stream::HostCpu => "host-cpu",
            Stream::PipePrev => "pipe-prev",
            Stream::PipeNext => "pipe-next",
        }
    }

    /// Communication kernels run on SMs (NCCL, DeepEP); copy engines and the host do not. Pipeline
    /// point-to-point kernels are not counted: NCCL runs a send or receive on one or two channels' blocks,
    /// negligible beside an all-to-all's share, and a receive posted ahead of its data would otherwise
    /// slow the rank's compute for as long as it waits.
    pub fn takes_sms(self) -> bool {
        matches!(self, Stream::Comm | Stream::CommAux)
    }

    /// Whether operations on this stream count as communication in the exposed/hidden split.
    pub fn is_communication(self) -> bool {
        matches!(
            self,
            Stream::Comm
                | Stream::CommAux
                | Stream::H2d
                | Stream::D2h
                | Stream::PipePrev
                | Stream::PipeNext
        )
    }
}

/// Priority of each stream's traffic, higher first (`cluster.stream_priority`, all 0 by default).
///
/// What it models: traffic classes on the fabric — NCCL and NVSHMEM put a communicator's traffic on an
/// InfiniBand service level (`NCCL_IB_SL`), mapped to a virtual lane that the switch arbitrates ahead of
/// others — and CUDA stream priorities for the kernels that drive it. Under the flow backend a link's
/// bandwidth goes to the highest class first (max-min fair within a class, the rest to lower classes), so
/// e.g. the critical all-to-all on `comm` can pre-empt a gradient all-reduce on `comm-aux` that shares its
/// NICs. The analytic backend has no contention, so priorities do not change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StreamPriorities {
    pub compute: u8,
    pub comm: u8,
    pub comm_aux: u8,
    pub h2d: u8,
    pub d2h: u8,
    pub host_cpu: u8,
    pub pipe_prev: u8,
    pub pipe_next: u8,
}

impl StreamPriorities {
    pub fn of(&self, stream: Stream) -> u8 {
        match stream {
            Stream::Compute => self.compute,
            Stream::Comm => self.comm,
            Stream::CommAux => self.comm_aux,
            Stream::H2d => self.h2d,
            Stream::D2h => self.d2h,
            Stream::HostCpu => self.host_cpu,
            Stream::PipePrev => self.pipe_prev,
            Stream::PipeNext => self.pipe_next,
        }
    }
}

/// A typed resource: one stream of one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub rank: u32,
    pub stream: Stream,
}

impl Resource {
    pub fn new(rank: usize, stream: Stream) -> Self {
        Resource {
            rank: rank as u32,
            stream,
        }
    }

    fn index(self) -> usize {
        self.rank as usize * Stream::COUNT + self.stream.index()
    }
}

/// Timing of one operation after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpTiming {
    pub start: SimTime,
    pub finish: SimTime,
    /// The operation whose finish released this one (`None` for operations ready at time zero).
    pub critical_pred: Option<OpId>,
}

#[derive(Debug, Clone, Copy)]
enum OpKind {
    /// Fixed work: picoseconds at full speed.
    Work(SimTime),
    Barrier,
    /// Part `1` of collective `0`.
    Part(CollectiveId, u32),
}

#[derive(Debug, Clone, Default)]
struct CollectiveState {
    /// Operations of the parts, in part order: `first..first + parts` (added together, so contiguous).
    first: OpId,
    parts: u32,
    arrived: u32,
    /// The part that started last.
    last: u32,
}

/// A reusable engine: `clear` keeps allocations for the next run.
#[derive(Debug, Default)]
pub struct Engine {
    ranks: usize,
    comm_sm_fraction: f64,
    priorities: StreamPriorities,
    kind: Vec<OpKind>,
    resource: Vec<u32>,
    indegree: Vec<u32>,
    pending: Vec<u32>,
    first_succ: Vec<u32>,
    edges: Vec<(OpId, u32)>,
    timing: Vec<OpTiming>,
    ready_at: Vec<SimTime>,
    ready: Vec<bool>,
    /// Next operation on the same resource, in issue order.
    next_on_resource: Vec<u32>,
    // Per resource: first and last operation in issue order (while building), the head not yet started
    // (while running), busy flag, and the last operation that ran.
    res_first: Vec<u32>,
    res_last_added: Vec<u32>,
    res_head: Vec<u32>,
    res_busy: Vec<bool>,
    res_last_run: Vec<u32>,
    collectives: Vec<CollectiveState>,
    specs: Vec<Arc<CollectiveSpec>>,
    // SM sharing: per rank, communication kernels running and the compute operation running.
    comm_active: Vec<u32>,
    running_compute: Vec<u32>,
    // Per rank, of its running compute operation (at most one): work left (ps at full speed), since when,
    // at what rate, and the sequence number of its scheduled finish event (any other is stale: the
    // operation was re-timed after it was scheduled).
    work_left: Vec<f64>,
    since: Vec<SimTime>,
    rate: Vec<f64>,
    compute_seq: Vec<u32>,
    /// Scheduled finishes, earliest first, ties in issue order: keys (time, issue sequence, operation).
    heap: EventQueue,
    /// The operation that finished last so far (lowest id among ties).
    last_finished: Option<(SimTime, OpId)>,
    seq: u64,
    done_parts: Vec<(CollectiveId, u32)>,
    events: u64,
    activity: StreamActivity,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all operations, keeping capacity, and declares `ranks` ranks (every stream of each).
    pub fn reset(&mut self, ranks: usize, comm_sm_fraction: f64) {
        self.ranks = ranks;
        self.comm_sm_fraction = comm_sm_fraction.clamp(0.0, 0.95);
        self.kind.clear();
        self.resource.clear();
        self.indegree.clear();
        self.first_succ.clear();
        self.edges.clear();
        self.next_on_resource.clear();
        self.collectives.clear();
        self.specs.clear();
        let n = ranks * Stream::COUNT;
        self.res_first.clear();
        self.res_first.resize(n, NONE);
        self.res_last_added.clear();
        self.res_last_added.resize(n, NONE);
        self.events = 0;
    }

    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Sets the streams' priorities (kept across resets).
    pub fn set_stream_priorities(&mut self, priorities: StreamPriorities) {
        self.priorities = priorities;
    }

    fn push_op(&mut self, kind: OpKind, resource: Option<Resource>) -> OpId {
        let id = self.kind.len() as OpId;
        self.kind.push(kind);
        self.indegree.push(0);
        self.first_succ.push(NONE);
        self.next_on_resource.push(NONE);
        match resource {
            Some(r) => {
                let ri = r.index();
                assert!(
                    (r.rank as usize) < self.ranks,
                    "rank {} of {}",
                    r.rank,
                    self.ranks
                );
                self.resource.push(ri as u32);
                let last = self.res_last_added[ri];
                if last == NONE {
                    self.res_first[ri] = id;
                } else {
                    self.next_on_resource[last as usize] = id;
                }
                self.res_last_added[ri] = id;
            }
            None => self.resource.push(NONE),
        }
        id
    }

    /// Adds work that holds `resource` for `duration` (at full speed).
    pub fn add_work(&mut self, resource: Resource, duration: SimTime) -> OpId {
        self.push_op(OpKind::Work(duration), Some(resource))
    }

    /// Adds a zero-duration synchronisation point (on no resource).
    pub fn add_barrier(&mut self) -> OpId {
        self.push_op(OpKind::Barrier, None)
    }

    /// Adds a collective; returns one operation per part, in the spec's part order, each on its part's
    /// (rank, stream).
    pub fn add_collective(
        &mut self,
        spec: impl Into<Arc<CollectiveSpec>>,
    ) -> std::ops::Range<OpId> {
        let spec = spec.into();
        debug_assert!(
            {
                let mut r: Vec<_> = spec.parts.iter().map(|p| (p.rank, p.stream)).collect();
                r.sort_unstable();
                r.windows(2).all(|w| w[0] != w[1])
            },
            "a collective has two parts on one stream: it could never begin"
        );
        let c = self.collectives.len() as CollectiveId;
        let first = self.kind.len() as OpId;
        for (i, p) in spec.parts.iter().enumerate() {
            self.push_op(
                OpKind::Part(c, i as u32),
                Some(Resource::new(p.rank as usize, p.stream)),
            );
        }
        let parts = spec.parts.len() as u32;
        self.collectives.push(CollectiveState {
            first,
            parts,
            arrived: 0,
            last: 0,
        });
        self.specs.push(spec);
        first..first + parts
    }

    /// `after` may start only once `before` has finished.
    pub fn add_dep(&mut self, before: OpId, after: OpId) {
        debug_assert!(before != after);
        let e = self.edges.len() as u32;
        self.edges.push((after, self.first_succ[before as usize]));
        self.first_succ[before as usize] = e;
        self.indegree[after as usize] += 1;
    }

    pub fn op_count(&self) -> usize {
        self.kind.len()
    }

    /// The resource an operation holds, if any.
    pub fn resource_of(&self, op: OpId) -> Option<Resource> {
        let r = self.resource[op as usize];
        (r != NONE).then(|| Resource {
            rank: r / Stream::COUNT as u32,
            stream: Stream::ALL[r as usize % Stream::COUNT],
        })
    }

    /// The collective and part index of a part operation.
    pub fn part_of(&self, op: OpId) -> Option<(CollectiveId, usize)> {
        match self.kind[op as usize] {
            OpKind::Part(c, p) => Some((c, p as usize)),
            _ => None,
        }
    }

    pub fn collective(&self, c: CollectiveId) -> &CollectiveSpec {
        &self.specs[c as usize]
    }

    pub fn collectives(&self) -> &[Arc<CollectiveSpec>] {
        &self.specs
    }

    pub fn timing(&self, op: OpId) -> OpTiming {
        self.timing[op as usize]
    }

    /// Time an operation occupied its stream (finish − start).
    pub fn elapsed(&self, op: OpId) -> SimTime {
        let t = self.timing[op as usize];
        t.finish - t.start
    }

    /// Per rank, what its streams did in the last run: compute time, and communication exposed on or
    /// hidden behind it.
    pub fn activity(&self) -> impl ExactSizeIterator<Item = RankActivity> + '_ {
        self.activity.totals()
    }

    /// Events processed by the last run (one per operation finish).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Runs every operation on `net`; returns the makespan. Panics only on a dependency cycle or a
    /// collective whose parts can never all start (a lowering bug).
    pub fn run(&mut self, net: &mut dyn Network) -> SimTime {
        let n = self.kind.len();
        self.pending.clear();
        self.pending.extend_from_slice(&self.indegree);
        self.timing.clear();
        self.timing.resize(n, OpTiming::default());
        self.ready_at.clear();
        self.ready_at.resize(n, 0);
        self.ready.clear();
        self.ready.resize(n, false);
        self.work_left.clear();
        self.work_left.resize(self.ranks, 0.0);
        self.since.clear();
        self.since.resize(self.ranks, 0);
        self.rate.clear();
        self.rate.resize(self.ranks, 1.0);
        self.compute_seq.clear();
        self.compute_seq.resize(self.ranks, 0);
        self.last_finished = None;
        let nr = self.ranks * Stream::COUNT;
        self.res_head.clear();
        self.res_head.extend_from_slice(&self.res_first);
        self.res_busy.clear();
        self.res_busy.resize(nr, false);
        self.res_last_run.clear();
        self.res_last_run.resize(nr, NONE);
        self.comm_active.clear();
        self.comm_active.resize(self.ranks, 0);
        self.activity.reset(self.ranks);
        self.running_compute.clear();
        self.running_compute.resize(self.ranks, NONE);
        for c in &mut self.collectives {
            c.arrived = 0;
        }
        self.heap.clear();
        self.seq = 0;
        self.events = 0;
        net.reset();
        for op in 0..n as OpId {
            if self.pending[op as usize] == 0 {
                self.make_ready(op, 0, net);
            }
        }
        let mut makespan = 0;
        let mut finished = 0usize;
        let mut done = std::mem::take(&mut self.done_parts);
        loop {
            let heap_t = self.heap.peek().map(event_queue::time_of);
            let net_t = net.next_time();
            let t = match (heap_t, net_t) {
                (None, None) => break,
                (Some(h), Some(x)) => h.min(x),
                (Some(h), None) => h,
                (None, Some(x)) => x,
            };
            if net_t == Some(t) && heap_t.is_none_or(|h| h >= t) {
                done.clear();
                net.complete(t, &mut done);
                for &(c, p) in &done {
                    let op = self.collectives[c as usize].first + p;
                    finished += 1;
                    makespan = makespan.max(t);
                    self.finish(op, t, net);
                }
                continue;
            }
            let event = self.heap.pop().expect("peeked");
            let (t, op) = (event_queue::time_of(event), event_queue::payload_of(event));
            if self.is_stale(event) {
                continue;
            }
            finished += 1;
            makespan = makespan.max(t);
            self.finish(op, t, net);
        }
        self.done_parts = done;
        assert_eq!(
            finished,
            n,
            "dependency cycle or unmatched collective: {} of {} operations never finished",
            n - finished,
            n
        );
        makespan
    }

    fn finish(&mut self, op: OpId, t: SimTime, net: &mut dyn Network) {
        self.events += 1;
        // Events come in time order: a later one is last; at the same time, the lower id.
        if self.last_finished.is_none_or(|(lt, lo)| t > lt || op < lo) {
            self.last_finished = Some((t, op));
        }
        let o = op as usize;
        self.timing[o].finish = t;
        let r = self.resource[o];
        if r != NONE {
            let ri = r as usize;
            let rank = ri / Stream::COUNT;
            let stream = Stream::ALL[ri % Stream::COUNT];
            self.res_busy[ri] = false;
            self.res_last_run[ri] = op;
            self.activity.finished(rank, stream, t);
            if stream == Stream::Compute {
                self.running_compute[rank] = NONE;
            }
            if matches!(self.kind[o], OpKind::Part(..)) && stream.takes_sms() {
                self.comm_active[rank] -= 1;
                if self.comm_active[rank] == 0 {
                    self.rerate_compute(rank, t);
                }
            }
            let next = self.next_on_resource[o];
            self.res_head[ri] = next;
            if next != NONE && self.ready[next as usize] {
                self.start(next, t, net);
            }
        }
        let mut e = self.first_succ[o];
        while e != NONE {
            let (succ, next) = self.edges[e as usize];
            let s = succ as usize;
            if t >= self.ready_at[s] {
                // Ties keep the earlier-finishing (first-released) predecessor: deterministic.
                if t > self.ready_at[s] || self.timing[s].critical_pred.is_none() {
                    self.timing[s].critical_pred = Some(op);
                }
                self.ready_at[s] = t;
            }
            self.pending[s] -= 1;
            if self.pending[s] == 0 {
                self.make_ready(succ, t, net);
            }
            e = next;
        }
    }

    fn make_ready(&mut self, op: OpId, t: SimTime, net: &mut dyn Network) {
        let o = op as usize;
        self.ready[o] = true;
        self.ready_at[o] = t;
        let r = self.resource[o];
        if r == NONE {
            self.start(op, t, net);
            return;
        }
        let ri = r as usize;
        if !self.res_busy[ri] && self.res_head[ri] == op {
            self.start(op, t, net);
        }
    }

    /// Schedules `op`'s finish at `at`; returns the event's sequence number.
    fn schedule(&mut self, op: OpId, at: SimTime) -> u32 {
        let seq = u32::try_from(self.seq)
            .expect("more than 2^32 events scheduled in one run: the event key cannot order them");
        self.heap.push(event_queue::key(at, seq, op));
        self.seq += 1;
        seq
    }

    /// Whether `event` finishes a compute operation that was re-timed after it was scheduled (only
    /// compute work under SM sharing is ever re-timed; its rank keeps the valid event's sequence).
    fn is_stale(&self, event: u128) -> bool {
        let op = event_queue::payload_of(event);
        let o = op as usize;
        if self.comm_sm_fraction <= 0.0 || !matches!(self.kind[o], OpKind::Work(_)) {
            return false;
        }
        let ri = self.resource[o] as usize;
        if Stream::ALL[ri % Stream::COUNT] != Stream::Compute {
            return false;
        }
        let rank = ri / Stream::COUNT;
        self.running_compute[rank] != op || self.compute_seq[rank] != event_queue::seq_of(event)
    }

    fn start(&mut self, op: OpId, t: SimTime, net: &mut dyn Network) {
        let o = op as usize;
        let r = self.resource[o];
        if r != NONE {
            let ri = r as usize;
            self.res_busy[ri] = true;
            if t > self.ready_at[o] {
                // It waited for its stream: the operation ahead of it held it up.
                let prev = self.res_last_run[ri];
                if prev != NONE {
                    self.timing[o].critical_pred = Some(prev);
                }
            }
        }
        self.timing[o].start = t;
        match self.kind[o] {
            OpKind::Barrier => {
                self.schedule(op, t);
            }
            OpKind::Work(d) => {
                let ri = r as usize;
                let rank = ri / Stream::COUNT;
                let stream = Stream::ALL[ri % Stream::COUNT];
                self.activity.started(rank, stream, t);
                if stream == Stream::Compute && self.comm_sm_fraction > 0.0 {
                    self.running_compute[rank] = op;
                    self.work_left[rank] = d as f64;
                    self.since[rank] = t;
                    let at = if self.comm_active[rank] > 0 {
                        self.rate[rank] = 1.0 - self.comm_sm_fraction;
                        t + round_to_time(d as f64 / self.rate[rank])
                    } else {
                        // Full speed: exactly `d` (what dividing by 1 and rounding gives).
                        self.rate[rank] = 1.0;
                        t + d
                    };
                    self.compute_seq[rank] = self.schedule(op, at);
                } else {
                    self.schedule(op, t + d);
                }
            }
            OpKind::Part(c, _) => {
                let ri = r as usize;
                let rank = ri / Stream::COUNT;
                if Stream::ALL[ri % Stream::COUNT].takes_sms() {
                    self.comm_active[rank] += 1;
                    if self.comm_active[rank] == 1 {
                        self.rerate_compute(rank, t);
                    }
                }
                let cs = &mut self.collectives[c as usize];
                cs.arrived += 1;
                if let OpKind::Part(_, p) = self.kind[o] {
                    cs.last = p;
                }
                if cs.arrived == cs.parts {
                    // Rendezvous: parts that waited for their peers start with the collective, held up by
                    // whatever held up the last one.
                    let last_pred = self.timing[o].critical_pred;
                    let cs = &self.collectives[c as usize];
                    for p in cs.first..cs.first + cs.parts {
                        let pt = &mut self.timing[p as usize];
                        if pt.start < t {
                            pt.start = t;
                            pt.critical_pred = last_pred;
                        }
                        let pr = self.resource[p as usize] as usize;
                        self.activity.started(
                            pr / Stream::COUNT,
                            Stream::ALL[pr % Stream::COUNT],
                            t,
                        );
                    }
                    let stream = Stream::ALL[ri % Stream::COUNT];
                    net.begin(t, c, &self.specs[c as usize], self.priorities.of(stream));
                }
            }
        }
    }

    /// The rank's communication activity changed at `t`: re-time its running compute operation.
    fn rerate_compute(&mut self, rank: usize, t: SimTime) {
        if self.comm_sm_fraction <= 0.0 {
            return;
        }
        let op = self.running_compute[rank];
        if op == NONE {
            return;
        }
        let rate = if self.comm_active[rank] > 0 {
            1.0 - self.comm_sm_fraction
        } else {
            1.0
        };
        self.work_left[rank] =
            (self.work_left[rank] - (t - self.since[rank]) as f64 * self.rate[rank]).max(0.0);
        self.since[rank] = t;
        self.rate[rank] = rate;
        let at = t + round_to_time(self.work_left[rank] / rate);
        self.compute_seq[rank] = self.schedule(op, at);
    }

    /// The critical path ending at `last`, from its first operation to `last`.
    pub fn critical_path(&self, last: OpId) -> Vec<OpId> {
        let mut path = vec![last];
        let mut at = last;
        while let Some(p) = self.timing[at as usize].critical_pred {
            path.push(p);
            at = p;
        }
        path.reverse();
        path
    }

    /// The operation that finished last in the last run (lowest id among ties).
    pub fn last_op(&self) -> Option<OpId> {
        self.last_finished.map(|(_, op)| op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{AnalyticNetwork, PartSpec};

    fn work(e: &mut Engine, rank: usize, stream: Stream, d: SimTime) -> OpId {
        e.add_work(Resource::new(rank, stream), d)
    }

    #[test]
    fn round_to_time_is_round_then_clamp() {
        let reference = |x: f64| x.round().max(0.0) as SimTime;
        let mut cases = vec![
            0.0,
            -0.0,
            -3.7,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            1e12 + 0.5,
            4503599627370495.5,
            9.0e15,
            9.1e15,
            1e30,
            f64::INFINITY,
            f64::NAN,
        ];
        let mut x = 0.37f64;
        for _ in 0..100_000 {
            x = (x * 1.618_033_988_75 + 0.123_456_7) % 1.0;
            cases.push(x * 1e14);
            cases.push(x * 10.0);
        }
        for c in cases {
            assert_eq!(round_to_time(c), reference(c), "{c}");
        }
    }

    #[test]
    fn stream_activity_equals_the_measure_of_the_run_s_intervals() {
        // A random graph on 3 ranks: compute, communication work, host work and two-rank collectives
        // (whose parts wait for each other), with SM sharing re-timing compute. Every rank's compute time,
        // exposed and hidden communication, counted instant by instant from the operations' timings, must
        // equal what the engine summed while it ran.
        let mut x = 0.61f64;
        let mut next = |n: u64| {
            x = (x * 7.31 + 0.17) % 1.0;
            (x * n as f64) as u64
        };
        for seed in 0..20 {
            let ranks = 3;
            let mut e = Engine::new();
            e.reset(ranks, 0.3);
            let mut ops: Vec<OpId> = Vec::new();
            for _ in 0..40 + seed {
                let kind = next(5);
                let new: Vec<OpId> = if kind == 4 {
                    let a = next(ranks as u64) as usize;
                    let b = (a + 1 + next(ranks as u64 - 1) as usize) % ranks;
                    let stream = [Stream::Comm, Stream::CommAux][next(2) as usize];
                    e.add_collective(CollectiveSpec::analytic(vec![
                        PartSpec::new(a, stream, 1 + next(30)),
                        PartSpec::new(b, stream, 1 + next(30)),
                    ]))
                    .collect()
                } else {
                    let stream = [Stream::Compute, Stream::Comm, Stream::H2d, Stream::HostCpu]
                        [kind as usize];
                    vec![work(&mut e, next(ranks as u64) as usize, stream, next(25))]
                };
                for &op in &new {
                    if !ops.is_empty() && next(2) == 0 {
                        let before = ops[next(ops.len() as u64) as usize];
                        e.add_dep(before, op);
                    }
                }
                ops.extend(new);
            }
            let end = e.run(&mut AnalyticNetwork::default());
            for rank in 0..ranks {
                let on = |t: SimTime, pick: &dyn Fn(Stream) -> bool| {
                    (0..e.op_count() as OpId).any(|o| {
                        let timing = e.timing(o);
                        e.resource_of(o).is_some_and(|r| {
                            r.rank as usize == rank
                                && pick(r.stream)
                                && timing.start <= t
                                && t < timing.finish
                        })
                    })
                };
                let mut want = RankActivity::default();
                for t in 0..end {
                    let computing = on(t, &|s| s == Stream::Compute);
                    let communicating = on(t, &|s| s.is_communication());
                    want.compute += computing as SimTime;
                    want.hidden += (computing && communicating) as SimTime;
                    want.exposed += (!computing && communicating) as SimTime;
                }
                assert_eq!(
                    e.activity().nth(rank),
                    Some(want),
                    "seed {seed}, rank {rank}"
                );
            }
        }
    }

    #[test]
    fn chain_and_join() {
        let mut e = Engine::new();
        e.reset(2, 0.0);
        let a = work(&mut e, 0, Stream::Compute, 10);
        let b = work(&mut e, 1, Stream::Compute, 30);
        let c = e.add_barrier();
        let d = work(&mut e, 0, Stream::Comm, 5);
        e.add_dep(a, c);
        e.add_dep(b, c);
        e.add_dep(c, d);
        assert_eq!(e.run(&mut AnalyticNetwork::default()), 35);
        assert_eq!(e.timing(d).start, 30);
        assert_eq!(e.critical_path(d), vec![b, c, d]);
        assert_eq!(e.events(), 4);
    }

    #[test]
    fn a_stream_runs_in_issue_order_and_records_the_blocker() {
        let mut e = Engine::new();
        e.reset(1, 0.0);
        let gate = work(&mut e, 0, Stream::Comm, 50);
        let a = work(&mut e, 0, Stream::Compute, 10);
        let b = work(&mut e, 0, Stream::Compute, 10);
        // `a` waits for `gate`; `b` is ready at 0 but was issued after `a`, so it waits too.
        e.add_dep(gate, a);
        assert_eq!(e.run(&mut AnalyticNetwork::default()), 70);
        assert_eq!((e.timing(a).start, e.timing(b).start), (50, 60));
        assert_eq!(e.timing(b).critical_pred, Some(a));
        assert_eq!(e.critical_path(b), vec![gate, a, b]);
    }

    #[test]
    fn a_collective_begins_when_its_last_part_starts() {
        let mut e = Engine::new();
        e.reset(2, 0.0);
        let slow = work(&mut e, 1, Stream::Compute, 100);
        let spec = CollectiveSpec::analytic(vec![
            PartSpec::new(0, Stream::Comm, 20),
            PartSpec::new(1, Stream::Comm, 30),
        ]);
        let parts: Vec<OpId> = e.add_collective(spec).collect();
        e.add_dep(slow, parts[1]);
        assert_eq!(e.run(&mut AnalyticNetwork::default()), 130);
        assert_eq!(e.timing(parts[0]).start, 100);
        assert_eq!(e.timing(parts[0]).finish, 120);
        assert_eq!(e.timing(parts[0]).critical_pred, Some(slow));
    }

    #[test]
    fn communication_kernels_slow_concurrent_compute_by_their_sm_share() {
        // Compute of 100 alone; a 40-long collective on the same rank overlaps its first part.
        let mut e = Engine::new();
        e.reset(1, 0.25);
        let c = work(&mut e, 0, Stream::Compute, 100);
        let parts: Vec<OpId> = e
            .add_collective(CollectiveSpec::analytic(vec![PartSpec::new(
                0,
                Stream::Comm,
                40,
            )]))
            .collect();
        e.run(&mut AnalyticNetwork::default());
        // 40 ps at 0.75 speed does 30 of work; the remaining 70 run at full speed: 110 in all.
        assert_eq!(e.timing(c).finish, 110);
        assert_eq!(e.timing(parts[0]).finish, 40);
        // Without the share nothing slows.
        let mut e2 = Engine::new();
        e2.reset(1, 0.0);
        let c2 = work(&mut e2, 0, Stream::Compute, 100);
        e2.add_collective(CollectiveSpec::analytic(vec![PartSpec::new(
            0,
            Stream::Comm,
            40,
        )]));
        e2.run(&mut AnalyticNetwork::default());
        assert_eq!(e2.timing(c2).finish, 100);
    }

    #[test]
    fn rerun_is_identical() {
        let mut e = Engine::new();
        e.reset(3, 0.1);
        let mut prev = None;
        for i in 0..100u32 {
            let stream = if i % 5 == 0 {
                Stream::Comm
            } else {
                Stream::Compute
            };
            let op = work(&mut e, (i % 3) as usize, stream, (i as u64 * 7919) % 97);
            if let Some(p) = prev
                && i % 4 != 0
            {
                e.add_dep(p, op);
            }
            prev = Some(op);
        }
        let m1 = e.run(&mut AnalyticNetwork::default());
        let t1: Vec<_> = (0..100).map(|o| e.timing(o)).collect();
        let m2 = e.run(&mut AnalyticNetwork::default());
        let t2: Vec<_> = (0..100).map(|o| e.timing(o)).collect();
        assert_eq!(m1, m2);
        assert_eq!(t1, t2);
    }
}
