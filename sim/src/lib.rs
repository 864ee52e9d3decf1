//! moesim's simulator: scenarios, cluster topology, the discrete-event engine, strategies and planning.
//!
//! Data flows one way: [`scenario::parse_scenario`] turns TOML text into a validated [`Scenario`];
//! [`runner::simulate_scenario`] lowers every iteration of every strategy into operations on GPU streams,
//! runs them on the [`engine::Engine`], and returns a [`result::SimulationReport`]; [`plan::choose`] picks
//! the strategy. This crate does no I/O: callers read files and pass text, and write what they get back.
//!
//! ```
//! use moesim_sim::{scenario::parse_scenario, runner::{simulate_scenario, synthetic_routing, RunOptions}};
//! let text = r#"
//! [model]
//! preset = "olmoe-1b-7b"
//! layers = 2
//! seq_len = 512
//! [cluster]
//! preset = "dgx-h100"
//! [workload]
//! iterations = 2
//! [[strategy]]
//! name = "ep8"
//! kind = "ep"
//! "#;
//! let s = parse_scenario("doc.toml", text, &[]).unwrap();
//! let report = simulate_scenario(&s, &synthetic_routing(&s), None, RunOptions::default());
//! assert!(report.results[0].step_time_ms.mean > 0.0);
//! ```

pub mod activations;
pub mod collective;
pub mod collective_sparse;
pub mod engine;
pub mod event_queue;
pub mod forecast;
pub mod iteration;
pub mod layout_search;
pub mod memory;
pub mod network;
pub mod phase;
pub mod pipeline;
pub mod placement;
pub mod plan;
pub mod result;
pub mod runner;
pub mod scenario;
pub mod search;
pub mod serving;
pub mod stats;
pub mod strategy;
pub mod stream_activity;
pub mod timeline;
pub mod topology;

pub use scenario::Scenario;
