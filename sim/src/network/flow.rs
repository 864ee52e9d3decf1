//! The flow backend: fluid max-min fair sharing of links.
//!
//! Rates come from progressive filling: every unfrozen flow's rate rises together until some link is full;
//! the flows crossing that link freeze at their share, and filling continues with the rest. This is the
//! textbook max-min fair allocation (Bertsekas & Gallager, *Data Networks*, §6.5.2). Rates are recomputed
//! (lazily, once per instant) whenever a flow starts or finishes; between those instants every flow drains
//! at a constant rate, so the next finish is known exactly.

use super::{CollectiveSpec, Network};
use crate::engine::{CollectiveId, SimTime};
use crate::topology::Topology;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One flow as it ran (kept when recording), for per-link timelines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowRecord {
    pub collective: CollectiveId,
    pub src: u32,
    pub dst: u32,
    pub bytes: f64,
    pub start: SimTime,
    /// When its last byte left (delivery follows one route latency later).
    pub drained: SimTime,
}

#[derive(Debug, Clone, Copy)]
struct Active {
    /// Index of the part counters of its source and destination parts.
    src_slot: u32,
    dst_slot: u32,
    links: (u32, u32),
    remaining: f64,
    /// Bytes per second.
    rate: f64,
    latency: SimTime,
    finish: SimTime,
    record: u32,
    /// Traffic class: links serve higher classes first.
    priority: u8,
}

#[derive(Debug, Clone, Copy)]
struct PartState {
    coll: CollectiveId,
    part: u32,
    pending: u32,
    /// Latest delivery among its finished flows.
    tail: SimTime,
}

/// Max-min fair fluid network over a topology.
#[derive(Debug)]
pub struct FlowNetwork<'t> {
    topo: &'t Topology,
    record: bool,
    active: Vec<Active>,
    link_arena: Vec<u32>,
    parts: Vec<PartState>,
    last_update: SimTime,
    dirty: bool,
    timers: BinaryHeap<Reverse<(SimTime, u64, CollectiveId, u32)>>,
    seq: u64,
    records: Vec<FlowRecord>,
    flows_started: u64,
    recomputes: u64,
    // Progressive-filling scratch, per link.
    cap_left: Vec<f64>,
    unfrozen_on: Vec<u32>,
    link_flows_start: Vec<u32>,
    link_flows: Vec<u32>,
    touched: Vec<u32>,
    /// Per link: its index in `touched` during a recomputation.
    slot_of: Vec<u32>,
    /// Per touched link: the end of its row in `link_flows` (while filling: the next free place).
    row_end: Vec<u32>,
    frozen: Vec<bool>,
}

impl<'t> FlowNetwork<'t> {
    pub fn new(topo: &'t Topology) -> Self {
        let n = topo.links.len();
        FlowNetwork {
            topo,
            record: false,
            active: Vec::new(),
            link_arena: Vec::new(),
            parts: Vec::new(),
            last_update: 0,
            dirty: false,
            timers: BinaryHeap::new(),
            seq: 0,
            records: Vec::new(),
            flows_started: 0,
            recomputes: 0,
            cap_left: vec![0.0; n],
            unfrozen_on: vec![0; n],
            link_flows_start: vec![0; n + 1],
            link_flows: Vec::new(),
            touched: Vec::new(),
            slot_of: vec![u32::MAX; n],
            row_end: Vec::new(),
            frozen: Vec::new(),
        }
    }

    /// Keep a [`FlowRecord`] of every flow (for per-link timelines).
    pub fn recording(mut self, on: bool) -> Self {
        self.record = on;
        self
    }

    pub fn records(&self) -> &[FlowRecord] {
        &self.records
    }

    /// Flows started in this run.
    pub fn flows_started(&self) -> u64 {
        self.flows_started
    }

    /// Rate recomputations in this run.
    pub fn recomputes(&self) -> u64 {
        self.recomputes
    }

    /// Drains every active flow up to `now` at its current rate.
    fn advance(&mut self, now: SimTime) {
        if now > self.last_update {
            let dt = (now - self.last_update) as f64 * 1e-12;
            for f in &mut self.active {
                f.remaining = (f.remaining - f.rate * dt).max(0.0);
            }
            self.last_update = now;
        }
    }

    /// Max-min fair rates by progressive filling, then every flow's finish time.
    fn recompute(&mut self) {
        self.dirty = false;
        self.recomputes += 1;
        let links = &self.topo.links;
        for &l in &self.touched {
            self.unfrozen_on[l as usize] = 0;
        }
        self.touched.clear();
        for f in &self.active {
            for &l in &self.link_arena[f.links.0 as usize..f.links.1 as usize] {
                if self.unfrozen_on[l as usize] == 0 {
                    self.touched.push(l);
                    self.cap_left[l as usize] = links[l as usize].capacity();
                }
                self.unfrozen_on[l as usize] += 1;
            }
        }
        self.touched.sort_unstable();
        // Flows per link (CSR over the touched links).
        let mut acc = 0u32;
        self.row_end.clear();
        for (k, &l) in self.touched.iter().enumerate() {
            self.link_flows_start[l as usize] = acc;
            self.slot_of[l as usize] = k as u32;
            self.row_end.push(acc);
            acc += self.unfrozen_on[l as usize];
        }
        self.link_flows.clear();
        self.link_flows.resize(acc as usize, 0);
        for (i, f) in self.active.iter().enumerate() {
            for &l in &self.link_arena[f.links.0 as usize..f.links.1 as usize] {
                let k = self.slot_of[l as usize] as usize;
                self.link_flows[self.row_end[k] as usize] = i as u32;
                self.row_end[k] += 1;
            }
        }
        self.frozen.clear();
        self.frozen.resize(self.active.len(), false);
        let top = self.active.iter().map(|f| f.priority).max().unwrap_or(0);
        let bottom = self.active.iter().map(|f| f.priority).min().unwrap_or(0);
        if top == bottom {
            // One class (the usual case): the counts above are the class's counts.
            self.fill_class(None, self.active.len());
        } else {
            // Strict priority: each class is filled max-min fairly on what the classes above left.
            let mut classes: Vec<u8> = self.active.iter().map(|f| f.priority).collect();
            classes.sort_unstable_by(|a, b| b.cmp(a));
            classes.dedup();
            for class in classes {
                for &l in &self.touched {
                    self.unfrozen_on[l as usize] = 0;
                }
                let mut members = 0;
                for f in self.active.iter().filter(|f| f.priority == class) {
                    members += 1;
                    for &l in &self.link_arena[f.links.0 as usize..f.links.1 as usize] {
                        self.unfrozen_on[l as usize] += 1;
                    }
                }
                self.fill_class(Some(class), members);
            }
        }
        let now = self.last_update;
        for f in &mut self.active {
            f.finish = if f.rate > 0.0 {
                now + (f.remaining / f.rate * 1e12).ceil() as SimTime
            } else {
                SimTime::MAX
            };
        }
    }

    /// Progressive filling of the `left` unfrozen flows of `class` (every flow when `None`), whose counts
    /// per link are in `unfrozen_on`, on the capacities left in `cap_left`.
    fn fill_class(&mut self, class: Option<u8>, mut left: usize) {
        while left > 0 {
            // The link whose equal share is smallest saturates first.
            let mut best: Option<(f64, usize)> = None;
            for (k, &l) in self.touched.iter().enumerate() {
                let n = self.unfrozen_on[l as usize];
                if n == 0 {
                    continue;
                }
                let share = self.cap_left[l as usize].max(0.0) / n as f64;
                if best.is_none_or(|(s, _)| share < s) {
                    best = Some((share, k));
                }
            }
            let Some((share, k)) = best else { break };
            let l = self.touched[k] as usize;
            // After filling, `fill[k]` is the end of link k's row.
            for idx in self.link_flows_start[l] as usize..self.row_end[k] as usize {
                let fi = self.link_flows[idx] as usize;
                if self.frozen[fi] || class.is_some_and(|c| self.active[fi].priority != c) {
                    continue;
                }
                self.frozen[fi] = true;
                left -= 1;
                self.active[fi].rate = share;
                let (s, e) = self.active[fi].links;
                for &l2 in &self.link_arena[s as usize..e as usize] {
                    self.cap_left[l2 as usize] -= share;
                    self.unfrozen_on[l2 as usize] -= 1;
                }
            }
        }
    }

    fn part_done(
        &mut self,
        slot: u32,
        at: SimTime,
        now: SimTime,
        done: &mut Vec<(CollectiveId, u32)>,
    ) {
        let p = &mut self.parts[slot as usize];
        p.pending -= 1;
        p.tail = p.tail.max(at);
        if p.pending == 0 {
            if p.tail > now {
                self.timers
                    .push(Reverse((p.tail, self.seq, p.coll, p.part)));
                self.seq += 1;
            } else {
                done.push((p.coll, p.part));
            }
        }
    }
}

impl Network for FlowNetwork<'_> {
    fn reset(&mut self) {
        self.active.clear();
        self.link_arena.clear();
        self.parts.clear();
        self.last_update = 0;
        self.dirty = false;
        self.timers.clear();
        self.seq = 0;
        self.records.clear();
        self.flows_started = 0;
        self.recomputes = 0;
    }

    fn begin(&mut self, now: SimTime, id: CollectiveId, spec: &CollectiveSpec, priority: u8) {
        self.advance(now);
        let base = self.parts.len() as u32;
        for (i, _) in spec.parts.iter().enumerate() {
            self.parts.push(PartState {
                coll: id,
                part: i as u32,
                pending: 0,
                tail: now,
            });
        }
        for f in &spec.flows {
            if f.bytes <= 0.0 || f.src == f.dst {
                continue;
            }
            let route = self.topo.route(f.src as usize, f.dst as usize);
            let s = self.link_arena.len() as u32;
            self.link_arena.extend_from_slice(route);
            let record = if self.record {
                self.records.push(FlowRecord {
                    collective: id,
                    src: f.src,
                    dst: f.dst,
                    bytes: f.bytes,
                    start: now,
                    drained: now,
                });
                self.records.len() as u32 - 1
            } else {
                u32::MAX
            };
            self.active.push(Active {
                src_slot: base + f.src_part,
                dst_slot: base + f.dst_part,
                links: (s, self.link_arena.len() as u32),
                remaining: f.bytes,
                rate: 0.0,
                latency: f.latency,
                finish: SimTime::MAX,
                record,
                priority,
            });
            self.parts[(base + f.src_part) as usize].pending += 1;
            if f.dst_part != f.src_part {
                self.parts[(base + f.dst_part) as usize].pending += 1;
            }
            self.flows_started += 1;
        }
        for i in 0..spec.parts.len() {
            if self.parts[base as usize + i].pending == 0 {
                self.timers.push(Reverse((now, self.seq, id, i as u32)));
                self.seq += 1;
            }
        }
        self.dirty = true;
    }

    fn next_time(&mut self) -> Option<SimTime> {
        if self.dirty {
            self.recompute();
        }
        let flows = self.active.iter().map(|f| f.finish).min();
        let timers = self.timers.peek().map(|Reverse((t, ..))| *t);
        match (flows, timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn complete(&mut self, now: SimTime, done: &mut Vec<(CollectiveId, u32)>) {
        self.advance(now);
        let mut i = 0;
        let mut finished = Vec::new();
        while i < self.active.len() {
            if self.active[i].finish <= now {
                finished.push(self.active.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if !finished.is_empty() {
            self.dirty = true;
        }
        for f in finished {
            if f.record != u32::MAX {
                self.records[f.record as usize].drained = now;
            }
            let at = now + f.latency;
            self.part_done(f.src_slot, at, now, done);
            if f.dst_slot != f.src_slot {
                self.part_done(f.dst_slot, at, now, done);
            }
        }
        while let Some(Reverse((t, _, c, p))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            done.push((c, p));
        }
        if self.active.is_empty() {
            self.link_arena.clear();
        }
    }
}
