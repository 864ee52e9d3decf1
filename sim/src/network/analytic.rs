//! The analytic backend: a part ends its precomputed (bottleneck-link α–β) duration after its collective
//! begins.

use super::{CollectiveSpec, Network};
use crate::engine::{CollectiveId, SimTime};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Default)]
pub struct AnalyticNetwork {
    pending: BinaryHeap<Reverse<(SimTime, u64, CollectiveId, u32)>>,
    seq: u64,
}

impl Network for AnalyticNetwork {
    fn reset(&mut self) {
        self.pending.clear();
        self.seq = 0;
    }

    fn begin(&mut self, now: SimTime, id: CollectiveId, spec: &CollectiveSpec) {
        for (i, p) in spec.parts.iter().enumerate() {
            self.pending
                .push(Reverse((now + p.analytic, self.seq, id, i as u32)));
            self.seq += 1;
        }
    }

    fn next_time(&mut self) -> Option<SimTime> {
        self.pending.peek().map(|Reverse((t, ..))| *t)
    }

    fn complete(&mut self, now: SimTime, done: &mut Vec<(CollectiveId, u32)>) {
        while let Some(Reverse((t, _, c, p))) = self.pending.peek().copied() {
            if t > now {
                break;
            }
            self.pending.pop();
            done.push((c, p));
        }
    }
}
