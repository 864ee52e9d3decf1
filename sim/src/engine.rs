//! The discrete-event engine: operations with fixed durations, dependencies and FIFO resources.
//!
//! Life cycle: (1) add operations and dependencies; (2) [`Engine::run`]; (3) read start/finish times, the
//! critical predecessor of every operation and the event count.
//!
//! Ordering guarantees: the event queue is keyed by (time, sequence number); events at the same time are
//! processed in the order they were scheduled, so a run is a pure function of the operations and
//! dependencies as added. An operation becomes ready when its last dependency finishes; it then starts at
//! once if its resource (a GPU compute stream, a link, a copy engine) is free, otherwise it queues FIFO.
//! Each operation remembers its *critical predecessor*: the dependency that finished last, or the operation
//! ahead of it on its resource when it had to queue. Following those links back from the last operation
//! gives the critical path.
//!
//! Time is integer picoseconds ([`SimTime`]) so that sums are exact and ties are real ties.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Simulated time in picoseconds.
pub type SimTime = u64;

/// Converts seconds to [`SimTime`].
pub fn ps(seconds: f64) -> SimTime {
    (seconds * 1e12).round().max(0.0) as SimTime
}

/// Converts [`SimTime`] to milliseconds.
pub fn to_ms(t: SimTime) -> f64 {
    t as f64 * 1e-9
}

pub type OpId = u32;
pub type ResourceId = u32;
const NONE: u32 = u32::MAX;

/// Timing of one operation after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpTiming {
    pub start: SimTime,
    pub finish: SimTime,
    /// The operation whose finish released this one (`None` for operations ready at time zero).
    pub critical_pred: Option<OpId>,
}

/// A reusable engine: `clear` keeps allocations for the next run.
#[derive(Debug, Default)]
pub struct Engine {
    duration: Vec<SimTime>,
    resource: Vec<u32>,
    indegree: Vec<u32>,
    pending: Vec<u32>,
    first_succ: Vec<u32>,
    edges: Vec<(OpId, u32)>,
    timing: Vec<OpTiming>,
    ready_at: Vec<SimTime>,
    // Per resource: busy flag and an intrusive FIFO of waiting operations.
    res_busy: Vec<bool>,
    res_head: Vec<u32>,
    res_tail: Vec<u32>,
    res_last: Vec<u32>,
    next_waiting: Vec<u32>,
    heap: BinaryHeap<Reverse<(SimTime, u64, OpId)>>,
    events: u64,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets all operations, keeping capacity.
    pub fn clear(&mut self) {
        self.duration.clear();
        self.resource.clear();
        self.indegree.clear();
        self.pending.clear();
        self.first_succ.clear();
        self.edges.clear();
        self.timing.clear();
        self.ready_at.clear();
        self.next_waiting.clear();
        self.heap.clear();
        self.events = 0;
    }

    /// Declares `n` resources (ids `0..n`).
    pub fn set_resources(&mut self, n: usize) {
        self.res_busy.clear();
        self.res_busy.resize(n, false);
        self.res_head.clear();
        self.res_head.resize(n, NONE);
        self.res_tail.clear();
        self.res_tail.resize(n, NONE);
        self.res_last.clear();
        self.res_last.resize(n, NONE);
    }

    /// Adds an operation that holds `resource` (if any) for `duration`.
    pub fn add_op(&mut self, resource: Option<ResourceId>, duration: SimTime) -> OpId {
        let id = self.duration.len() as OpId;
        self.duration.push(duration);
        self.resource.push(resource.unwrap_or(NONE));
        self.indegree.push(0);
        self.first_succ.push(NONE);
        id
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
        self.duration.len()
    }

    pub fn duration(&self, op: OpId) -> SimTime {
        self.duration[op as usize]
    }

    /// The resource an operation holds, if any.
    pub fn resource_of(&self, op: OpId) -> Option<ResourceId> {
        let r = self.resource[op as usize];
        (r != NONE).then_some(r)
    }

    pub fn timing(&self, op: OpId) -> OpTiming {
        self.timing[op as usize]
    }

    /// Events processed by the last run (one per operation finish).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Runs every operation; returns the makespan. Panics only on a dependency cycle (a lowering bug).
    pub fn run(&mut self) -> SimTime {
        let n = self.duration.len();
        self.pending.clear();
        self.pending.extend_from_slice(&self.indegree);
        self.timing.clear();
        self.timing.resize(n, OpTiming::default());
        self.ready_at.clear();
        self.ready_at.resize(n, 0);
        self.next_waiting.clear();
        self.next_waiting.resize(n, NONE);
        self.res_busy.fill(false);
        self.res_head.fill(NONE);
        self.res_tail.fill(NONE);
        self.res_last.fill(NONE);
        self.heap.clear();
        self.events = 0;
        let mut seq = 0u64;
        for op in 0..n as OpId {
            if self.pending[op as usize] == 0 {
                self.make_ready(op, 0, &mut seq);
            }
        }
        let mut makespan = 0;
        let mut finished = 0usize;
        while let Some(Reverse((t, _, op))) = self.heap.pop() {
            self.events += 1;
            finished += 1;
            makespan = makespan.max(t);
            let r = self.resource[op as usize];
            if r != NONE {
                let r = r as usize;
                self.res_busy[r] = false;
                self.res_last[r] = op;
                let next = self.res_head[r];
                if next != NONE {
                    self.res_head[r] = self.next_waiting[next as usize];
                    if self.res_head[r] == NONE {
                        self.res_tail[r] = NONE;
                    }
                    self.timing[next as usize].critical_pred = Some(op);
                    self.start(next, t, &mut seq);
                }
            }
            let mut e = self.first_succ[op as usize];
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
                    self.make_ready(succ, t, &mut seq);
                }
                e = next;
            }
        }
        assert_eq!(
            finished,
            n,
            "dependency cycle: {} of {} operations never became ready",
            n - finished,
            n
        );
        makespan
    }

    fn make_ready(&mut self, op: OpId, t: SimTime, seq: &mut u64) {
        let r = self.resource[op as usize];
        if r == NONE {
            self.start(op, t, seq);
            return;
        }
        let r = r as usize;
        if !self.res_busy[r] {
            self.start(op, t, seq);
        } else if self.res_tail[r] == NONE {
            self.res_head[r] = op;
            self.res_tail[r] = op;
        } else {
            let tail = self.res_tail[r];
            self.next_waiting[tail as usize] = op;
            self.res_tail[r] = op;
        }
    }

    fn start(&mut self, op: OpId, t: SimTime, seq: &mut u64) {
        let o = op as usize;
        let r = self.resource[o];
        if r != NONE {
            self.res_busy[r as usize] = true;
        }
        let finish = t + self.duration[o];
        self.timing[o].start = t;
        self.timing[o].finish = finish;
        self.heap.push(Reverse((finish, *seq, op)));
        *seq += 1;
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

    /// The operation that finished last (lowest id among ties).
    pub fn last_op(&self) -> Option<OpId> {
        (0..self.timing.len() as OpId).max_by_key(|&o| (self.timing[o as usize].finish, Reverse(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_join() {
        let mut e = Engine::new();
        e.set_resources(2);
        let a = e.add_op(Some(0), 10);
        let b = e.add_op(Some(1), 30);
        let c = e.add_op(None, 5);
        e.add_dep(a, c);
        e.add_dep(b, c);
        assert_eq!(e.run(), 35);
        assert_eq!(e.timing(c).start, 30);
        assert_eq!(e.timing(c).critical_pred, Some(b));
        assert_eq!(e.critical_path(c), vec![b, c]);
        assert_eq!(e.events(), 3);
    }

    #[test]
    fn resource_serialises_fifo_and_records_the_blocker() {
        let mut e = Engine::new();
        e.set_resources(1);
        let a = e.add_op(Some(0), 10);
        let b = e.add_op(Some(0), 10);
        let c = e.add_op(Some(0), 10);
        assert_eq!(e.run(), 30);
        assert_eq!(
            (e.timing(a).start, e.timing(b).start, e.timing(c).start),
            (0, 10, 20)
        );
        assert_eq!(e.timing(c).critical_pred, Some(b));
        assert_eq!(e.critical_path(c), vec![a, b, c]);
    }

    #[test]
    fn rerun_is_identical() {
        let mut e = Engine::new();
        e.set_resources(3);
        let mut prev = None;
        for i in 0..100u32 {
            let op = e.add_op(Some(i % 3), (i as u64 * 7919) % 97);
            if let Some(p) = prev
                && i % 4 != 0
            {
                e.add_dep(p, op);
            }
            prev = Some(op);
        }
        let m1 = e.run();
        let t1: Vec<_> = (0..100).map(|o| e.timing(o)).collect();
        let m2 = e.run();
        let t2: Vec<_> = (0..100).map(|o| e.timing(o)).collect();
        assert_eq!(m1, m2);
        assert_eq!(t1, t2);
    }
}
