//! Per rank, how long its compute stream was busy and how much of its communication ran beside that
//! compute (hidden) or alone (exposed), accumulated while the engine runs.
//!
//! Communication time is the union of the intervals during which any of the rank's communication streams
//! ([`Stream::is_communication`]) holds a started operation — a collective's part from the collective's
//! start, not from its arrival at the rendezvous; compute time is the union of its compute operations. The
//! engine reports each start and finish in time order, so three running sums per rank replace a second
//! pass over every operation's interval (tens of millions at DeepSeek-V3 scale) and a sort of each rank's
//! communication intervals.

use crate::engine::{SimTime, Stream};

/// What one rank's streams did over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankActivity {
    /// Time its compute stream held an operation.
    pub compute: SimTime,
    /// Communication time outside its compute.
    pub exposed: SimTime,
    /// Communication time during its compute.
    pub hidden: SimTime,
}

/// The running sums of every rank.
#[derive(Debug, Default)]
pub struct StreamActivity {
    totals: Vec<RankActivity>,
    /// Per rank: since when its state below has held.
    since: Vec<SimTime>,
    computing: Vec<bool>,
    /// Per rank: communication operations in progress.
    communicating: Vec<u32>,
}

impl StreamActivity {
    /// Forgets everything: `ranks` idle ranks at time zero.
    pub fn reset(&mut self, ranks: usize) {
        self.since.clear();
        self.since.resize(ranks, 0);
        self.totals.clear();
        self.totals.resize(ranks, RankActivity::default());
        self.computing.clear();
        self.computing.resize(ranks, false);
        self.communicating.clear();
        self.communicating.resize(ranks, 0);
    }

    /// Credits `rank`'s state since its last change up to `t`.
    fn advance(&mut self, rank: usize, t: SimTime) {
        let dt = t - self.since[rank];
        self.since[rank] = t;
        let total = &mut self.totals[rank];
        if self.computing[rank] {
            total.compute += dt;
        }
        if self.communicating[rank] > 0 {
            if self.computing[rank] {
                total.hidden += dt;
            } else {
                total.exposed += dt;
            }
        }
    }

    /// An operation on `rank`'s `stream` started at `t`.
    pub fn started(&mut self, rank: usize, stream: Stream, t: SimTime) {
        if stream == Stream::Compute {
            self.advance(rank, t);
            self.computing[rank] = true;
        } else if stream.is_communication() {
            self.advance(rank, t);
            self.communicating[rank] += 1;
        }
    }

    /// An operation on `rank`'s `stream` that [`StreamActivity::started`] finished at `t`.
    pub fn finished(&mut self, rank: usize, stream: Stream, t: SimTime) {
        if stream == Stream::Compute {
            self.advance(rank, t);
            self.computing[rank] = false;
        } else if stream.is_communication() {
            self.advance(rank, t);
            self.communicating[rank] -= 1;
        }
    }

    /// Every rank's sums (complete once every started operation has finished).
    pub fn totals(&self) -> &[RankActivity] {
        &self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communication_splits_at_compute_edges_and_overlapping_streams_count_once() {
        let mut a = StreamActivity::default();
        a.reset(2);
        // Rank 0 computes over [0, 10) and [20, 30); communicates over [5, 25) on one stream and [24, 40)
        // on another: [5, 10) and [20, 30) hidden (15), [10, 20) and [30, 40) exposed (20).
        a.started(0, Stream::Compute, 0);
        a.started(0, Stream::Comm, 5);
        a.finished(0, Stream::Compute, 10);
        a.started(0, Stream::Compute, 20);
        a.started(0, Stream::CommAux, 24);
        a.finished(0, Stream::Comm, 25);
        a.finished(0, Stream::Compute, 30);
        a.finished(0, Stream::CommAux, 40);
        // Rank 1: the host CPU is neither compute nor communication.
        a.started(1, Stream::HostCpu, 0);
        a.finished(1, Stream::HostCpu, 50);
        assert_eq!(
            a.totals(),
            [
                RankActivity {
                    compute: 20,
                    exposed: 20,
                    hidden: 15
                },
                RankActivity::default()
            ]
        );
    }
}
