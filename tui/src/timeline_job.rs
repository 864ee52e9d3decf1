//! Per-iteration timelines (for the Ranks and Timeline views) computed off the UI thread: a large
//! scenario's iteration takes a noticeable fraction of a second to re-simulate.

use moesim_calibrate::{CostModel, MeasuredCost};
use moesim_sim::Scenario;
use moesim_sim::scenario::Strategy;
use moesim_sim::timeline::{IterationTimeline, iteration_timelines};
use moesim_traces::RoutingSource;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

/// Which timeline: the session (its load generation), the strategy and the iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineKey {
    pub session: u64,
    pub strategy: usize,
    pub iteration: usize,
}

/// A computed timeline, or why there is none.
pub type TimelineResult = Result<IterationTimeline, String>;

/// Everything one timeline needs, owned so it can move to another thread.
pub struct TimelineInput {
    pub scenario: Scenario,
    pub strategy: Strategy,
    pub routing: Arc<dyn RoutingSource>,
    pub cost: Option<Arc<MeasuredCost>>,
}

/// Runs one timeline at a time in the background; only the newest request's answer is taken.
pub struct TimelineJobs {
    tx: Sender<(TimelineKey, TimelineResult)>,
    rx: Receiver<(TimelineKey, TimelineResult)>,
    pending: Option<TimelineKey>,
}

impl Default for TimelineJobs {
    fn default() -> Self {
        let (tx, rx) = channel();
        TimelineJobs {
            tx,
            rx,
            pending: None,
        }
    }
}

impl TimelineJobs {
    /// The timeline being computed, if any.
    pub fn pending(&self) -> Option<TimelineKey> {
        self.pending
    }

    /// Starts computing `key`'s timeline.
    pub fn start(&mut self, key: TimelineKey, input: TimelineInput) {
        self.pending = Some(key);
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let run = std::panic::AssertUnwindSafe(|| compute(&input, key.iteration));
            let result = std::panic::catch_unwind(run)
                .unwrap_or_else(|_| Err("the timeline simulation panicked".into()));
            let _ = tx.send((key, result));
        });
    }

    /// The pending timeline, if it has arrived.
    pub fn poll(&mut self) -> Option<(TimelineKey, TimelineResult)> {
        while let Ok((key, result)) = self.rx.try_recv() {
            if Some(key) == self.pending {
                self.pending = None;
                return Some((key, result));
            }
        }
        None
    }

    /// Blocks until the pending timeline arrives (tests); `None` when nothing is pending.
    pub fn wait(&mut self) -> Option<(TimelineKey, TimelineResult)> {
        let want = self.pending?;
        loop {
            let (key, result) = self.rx.recv().ok()?;
            if key == want {
                self.pending = None;
                return Some((key, result));
            }
        }
    }
}

fn compute(input: &TimelineInput, iteration: usize) -> TimelineResult {
    let cost = input.cost.as_deref().map(|c| c as &dyn CostModel);
    iteration_timelines(
        &input.scenario,
        &input.strategy,
        input.routing.as_ref(),
        cost,
        iteration..iteration + 1,
    )
    .map_err(|e| e.to_string())
    .and_then(|mut v| v.pop().ok_or_else(|| "no such iteration".to_string()))
}
