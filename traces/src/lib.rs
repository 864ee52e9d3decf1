//! Routing workloads for moesim: who sends how many tokens to which expert.
//!
//! The simulator consumes a [`RoutingSource`]: for each iteration it fills an [`IterationRouting`] with the
//! tokens every source rank routes to every expert, per micro-batch and MoE layer. Sources are synthetic
//! generators ([`SyntheticRouting`]) or real traces replayed onto ranks. Generation is deterministic per
//! (seed, iteration), so iterations can be produced in any order on any number of threads.
//!
//! ```
//! use moesim_traces::{RoutingShape, RoutingSource, Skew, SyntheticRouting, SyntheticSpec};
//! let shape = RoutingShape { moe_layers: 2, experts: 8, top_k: 2, ranks: 4, micro_batches: 1, tokens_per_rank: 512 };
//! let source = SyntheticRouting::new(shape, 10, SyntheticSpec { skew: Skew::Zipf { s: 1.2 }, seed: 7, shuffle_per_layer: true });
//! let it = source.iteration(3);
//! // Every token picks top-k experts: each rank sends tokens_per_rank × top_k assignments per layer.
//! assert_eq!(it.rank_counts(0, 1, 2).iter().map(|&c| c as u64).sum::<u64>(), 512 * 2);
//! ```
//!
//! Modules, one concept each:
//! - [`routing`]: the iteration-level model the simulator consumes; [`synthetic`] and [`dynamics`]: the
//!   counts-level generator and its drift / layer-correlation / null-expert options; [`binomial`]: its
//!   prepared count samplers; [`rng`]: seeding.
//! - [`trace`]: the trace data model (per-token and aggregated), [`native`]: the native file format,
//!   [`import`] / [`export`]: interchange formats, [`error`]: errors naming file, place and expectation.
//! - [`stats`]: skew, imbalance, drift, locality and hit rates; [`cache`]: expert-cache replay (LRU, LFU,
//!   LRFU, Belady).
//! - [`tokengen`]: per-token synthetic workloads; [`fit`]: fitting them to traces and rescaling;
//!   [`replay`]: a trace as a [`RoutingSource`]; [`requests`]: request traces (arrivals and lengths) for
//!   serving.

pub mod atomic;
pub mod binomial;
pub mod cache;
pub mod dynamics;
pub mod error;
pub mod export;
pub mod fit;
pub mod import;
pub mod limits;
pub mod native;
pub mod replay;
pub mod requests;
pub mod rng;
pub mod routing;
pub mod stats;
pub mod stats_stream;
pub mod synthetic;
pub mod tokengen;
pub mod trace;

pub use cache::{CacheCounts, CacheError, CachePolicy, RequestSeq, replay_cache};
pub use dynamics::Dynamics;
pub use error::{TraceError, TraceResult};
pub use replay::TraceRouting;
pub use routing::{IterationRouting, RoutingShape, RoutingSource};
pub use synthetic::{Skew, SyntheticRouting, SyntheticSpec};
pub use trace::{CountsTrace, Sequence, TokenTrace, Trace, TraceKind, TraceMeta};
