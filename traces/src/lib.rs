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

pub mod rng;
pub mod routing;
pub mod synthetic;

pub use routing::{IterationRouting, RoutingShape, RoutingSource};
pub use synthetic::{Skew, SyntheticRouting, SyntheticSpec};
