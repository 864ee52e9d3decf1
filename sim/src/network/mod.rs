//! How transfers take time: the [`Network`] trait and its two backends.
//!
//! A collective ([`CollectiveSpec`]) is a set of *parts* (one per participating rank, each an operation on
//! that rank's stream) and *flows* (bytes from one part's GPU to another's over the topology's route). Its
//! lowering prices it at the analytic fidelity up front ([`crate::collective`]), so every part carries its
//! analytic duration; the flows are attached when the flow backend will run it.
//!
//! - [`AnalyticNetwork`] — bottleneck-link α–β: each collective is priced as if it had the links to itself
//!   (a part ends its analytic duration after the collective begins). Fast; concurrent collectives do not
//!   compete.
//! - [`FlowNetwork`] — fluid max-min fair sharing: every link's achievable bandwidth is shared among the
//!   flows crossing it, rates are recomputed whenever a flow starts or finishes, so concurrent collectives,
//!   overlapping streams and pipeline sends contend for NVLink, NIC and spine links. A flow is delivered one
//!   route latency after its last byte leaves; a part ends when every flow it sends or receives is delivered.

mod analytic;
mod flow;

pub use analytic::AnalyticNetwork;
pub use flow::{FlowNetwork, FlowRecord};

use crate::collective::Cause;
use crate::engine::{CollectiveId, SimTime, Stream};
use serde::{Deserialize, Serialize};

/// Which network backend prices transfers (`cluster.network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// Bottleneck-link α–β per collective (fast, no contention between collectives).
    #[default]
    Analytic,
    /// Max-min fair sharing of every link among the flows crossing it.
    Flow,
}

/// One rank's part of a collective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PartSpec {
    pub rank: u32,
    pub stream: Stream,
    /// Duration at the analytic fidelity, from the collective's start.
    pub analytic: SimTime,
    /// The rank owning the busiest link this part waited on (straggler attribution).
    pub holder: u32,
    pub cause: Cause,
    /// How much longer that link was busy than the mean GPU port.
    pub excess: SimTime,
}

impl PartSpec {
    /// A part with no attribution (held by its own rank).
    pub fn new(rank: usize, stream: Stream, analytic: SimTime) -> Self {
        PartSpec {
            rank: rank as u32,
            stream,
            analytic,
            holder: rank as u32,
            cause: Cause::Network,
            excess: 0,
        }
    }
}

/// Bytes from one part's GPU to another's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowSpec {
    pub src_part: u32,
    pub dst_part: u32,
    /// Source and destination GPUs (global ranks; the route between them is the topology's).
    pub src: u32,
    pub dst: u32,
    pub bytes: f64,
    /// Delivery latency after the last byte leaves: the route's latency times the messages in sequence.
    pub latency: SimTime,
}

/// A collective as the engine runs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectiveSpec {
    pub parts: Vec<PartSpec>,
    /// Empty unless the flow backend will run it.
    pub flows: Vec<FlowSpec>,
    /// Bytes that leave their GPU (whichever backend runs it).
    pub bytes: f64,
}

impl CollectiveSpec {
    /// A collective known only by its parts' analytic durations.
    pub fn analytic(parts: Vec<PartSpec>) -> Self {
        CollectiveSpec {
            parts,
            flows: Vec::new(),
            bytes: 0.0,
        }
    }
}

/// Prices collectives while the engine runs.
pub trait Network {
    /// Forgets everything (a new run).
    fn reset(&mut self);
    /// Collective `id` begins at `now` (every part has started); its transfers belong to traffic class
    /// `priority` (higher first where links are shared).
    fn begin(&mut self, now: SimTime, id: CollectiveId, spec: &CollectiveSpec, priority: u8);
    /// When the next part completes, if any is pending.
    fn next_time(&mut self) -> Option<SimTime>;
    /// Appends every (collective, part) that completes at `now` (the time [`Network::next_time`] gave).
    fn complete(&mut self, now: SimTime, done: &mut Vec<(CollectiveId, u32)>);
}
