//! The analytic backend: a part ends its precomputed (bottleneck-link α–β) duration after its collective
//! begins.
//!
//! Completions come out in (time, issue order) order, a part's issue order being its collective's begin
//! order, then its index. Each running collective keeps its parts sorted by that key and only its next one
//! sits in the queue (a k-way merge): the queue holds running collectives, not parts, and parts that
//! finish in a run leave without touching it.

use super::{CollectiveSpec, Network};
use crate::engine::{CollectiveId, SimTime};
use crate::event_queue::{self, EventQueue};

#[derive(Debug, Default)]
pub struct AnalyticNetwork {
    /// Per running collective, its next completion: keys (time, sequence, slot).
    next: EventQueue,
    slots: Vec<Running>,
    free: Vec<u32>,
    seq: u64,
}

/// A collective that has begun: its parts' (finish, part) in completion order, and how many completed.
#[derive(Debug, Default)]
struct Running {
    id: CollectiveId,
    /// Sequence number of part 0 (part `i` has `base + i`).
    base: u64,
    parts: Vec<(SimTime, u32)>,
    done: usize,
}

impl AnalyticNetwork {
    /// The queue key of `slot`'s next part.
    fn key(&self, slot: u32) -> u128 {
        let r = &self.slots[slot as usize];
        let (at, part) = r.parts[r.done];
        let seq = u32::try_from(r.base + part as u64).expect(
            "more than 2^32 collective parts in one run: the completion key cannot order them",
        );
        event_queue::key(at, seq, slot)
    }
}

impl Network for AnalyticNetwork {
    fn reset(&mut self) {
        self.next.clear();
        self.free.clear();
        self.free.extend((0..self.slots.len() as u32).rev());
        self.seq = 0;
    }

    /// Priorities do not matter here: nothing is shared.
    fn begin(&mut self, now: SimTime, id: CollectiveId, spec: &CollectiveSpec, _priority: u8) {
        let n = spec.parts.len();
        if n == 0 {
            return;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Running::default());
            self.slots.len() as u32 - 1
        });
        let r = &mut self.slots[slot as usize];
        r.id = id;
        r.base = self.seq;
        r.done = 0;
        r.parts.clear();
        r.parts.extend(
            spec.parts
                .iter()
                .enumerate()
                .map(|(i, p)| (now + p.analytic, i as u32)),
        );
        // (finish, part) is (finish, sequence) less the shared base: completion order.
        r.parts.sort_unstable();
        self.seq += n as u64;
        let key = self.key(slot);
        self.next.push(key);
    }

    fn next_time(&mut self) -> Option<SimTime> {
        self.next.peek().map(event_queue::time_of)
    }

    fn complete(&mut self, now: SimTime, done: &mut Vec<(CollectiveId, u32)>) {
        while let Some(top) = self.next.peek() {
            if event_queue::time_of(top) > now {
                break;
            }
            self.next.pop();
            let slot = event_queue::payload_of(top);
            loop {
                let r = &mut self.slots[slot as usize];
                done.push((r.id, r.parts[r.done].1));
                r.done += 1;
                if r.done == r.parts.len() {
                    self.free.push(slot);
                    break;
                }
                let key = self.key(slot);
                // The collective's next part, unless another running collective's comes first.
                let first =
                    event_queue::time_of(key) <= now && self.next.peek().is_none_or(|k| key < k);
                if !first {
                    self.next.push(key);
                    break;
                }
            }
        }
    }
}
