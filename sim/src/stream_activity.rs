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
    /// Per rank, one record (an update touches all of it): its sums, since when its state has held, and
    /// the state.
    state: Vec<RankState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct RankState {
    total: RankActivity,
    since: SimTime,
    /// Communication operations in progress.
    communicating: u32,
    computing: bool,
}

impl StreamActivity {
    /// Forgets everything: `ranks` idle ranks at time zero.
    pub fn reset(&mut self, ranks: usize) {
        self.state.clear();
        self.state.resize(ranks, RankState::default());
    }

    /// Credits `rank`'s state since its last change up to `t`.
    fn advance(&mut self, rank: usize, t: SimTime) -> &mut RankState {
        let state = &mut self.state[rank];
        let dt = t - state.since;
        state.since = t;
        let total = &mut state.total;
        if state.computing {
            total.compute += dt;
        }
        if state.communicating > 0 {
            if state.computing {
                total.hidden += dt;
            } else {
                total.exposed += dt;
            }
        }
        state
    }

    /// An operation on `rank`'s `stream` started at `t`.
    pub fn started(&mut self, rank: usize, stream: Stream, t: SimTime) {
        if stream == Stream::Compute {
            self.advance(rank, t).computing = true;
        } else if stream.is_communication() {
            self.advance(rank, t).communicating += 1;
        }
    }

    /// An operation on `rank`'s `stream` that [`StreamActivity::started`] finished at `t`.
    pub fn finished(&mut self, rank: usize, stream: Stream, t: SimTime) {
        if stream == Stream::Compute {
            self.advance(rank, t).computing = false;
        } else if stream.is_communication() {
            self.advance(rank, t).communicating -= 1;
        }
    }

    /// Every rank's sums, in rank order (complete once every started operation has finished).
    pub fn totals(&self) -> impl ExactSizeIterator<Item = RankActivity> + '_ {
        self.state.iter().map(|s| s.total)
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
            a.totals().collect::<Vec<_>>(),
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
