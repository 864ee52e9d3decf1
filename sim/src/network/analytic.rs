//! The analytic backend: a part ends its precomputed (bottleneck-link α–β) duration after its collective
//! begins.

use super::{CollectiveSpec, Network};
use crate::engine::{CollectiveId, SimTime};
use dary_heap::QuaternaryHeap;
use std::cmp::Reverse;

#[derive(Debug, Default)]
pub struct AnalyticNetwork {
    /// Part finishes: key (time << 64 | issue sequence), unique, so one 128-bit comparison orders two.
    pending: QuaternaryHeap<Reverse<(u128, CollectiveId, u32)>>,
    seq: u64,
}

impl Network for AnalyticNetwork {
    fn reset(&mut self) {
        self.pending.clear();
        self.seq = 0;
    }

    /// Priorities do not matter here: nothing is shared.
    fn begin(&mut self, now: SimTime, id: CollectiveId, spec: &CollectiveSpec, _priority: u8) {
        for (i, p) in spec.parts.iter().enumerate() {
            let at = now + p.analytic;
            self.pending.push(Reverse((
                ((at as u128) << 64) | self.seq as u128,
                id,
                i as u32,
            )));
            self.seq += 1;
        }
    }

    fn next_time(&mut self) -> Option<SimTime> {
        self.pending
            .peek()
            .map(|Reverse((key, ..))| (key >> 64) as SimTime)
    }

    fn complete(&mut self, now: SimTime, done: &mut Vec<(CollectiveId, u32)>) {
        while let Some(Reverse((key, c, p))) = self.pending.peek().copied() {
            if (key >> 64) as SimTime > now {
                break;
            }
            self.pending.pop();
            done.push((c, p));
        }
    }
}
