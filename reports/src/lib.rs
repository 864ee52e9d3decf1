//! moesim's reports: capacity reports (Markdown + self-contained HTML with SVG/PNG figures), Chrome/Perfetto
//! timelines, and sharded sweeps.
//!
//! The pieces, in the order data flows through them:
//! - [`collect::collect`] simulates a scenario and gathers what its report shows ([`collect::ScenarioData`]):
//!   the strategies' results, per-rank figures per iteration ([`moesim_sim::timeline`]), routing load per
//!   placement ([`load`]) and the capacity curve ([`capacity`]).
//! - [`report::render_report`] turns gathered scenarios and merged sweeps into files (bytes) — charts from
//!   [`charts`] rendered by [`figure::render`] with the embedded [`font`], pages from [`document`].
//! - [`trace::chrome_trace`] writes simulated iterations as Chrome trace JSON; [`trace::validate_chrome_trace`]
//!   and [`check`] verify what was written.
//! - [`sweep`] expands a grid, picks a shard's points, runs them and merges shards.
//!
//! The crate does no I/O: it returns bytes and strings, and the `moesim` binary writes them. Everything is
//! generic over [`moesim_sim::result::StrategyResult`], so new strategy kinds appear in tables and step-time
//! figures without changes here.
//!
//! ```
//! use moesim_reports::{collect::{collect, CollectOptions}, report::{render_report, ReportOptions}};
//! use moesim_sim::{runner::synthetic_routing, scenario::parse_scenario};
//! let text = r#"
//! [model]
//! preset = "olmoe-1b-7b"
//! layers = 2
//! seq_len = 256
//! [cluster]
//! preset = "dgx-h100"
//! [workload]
//! iterations = 2
//! [[strategy]]
//! name = "ep8"
//! kind = "ep"
//! "#;
//! let s = parse_scenario("doc.toml", text, &[]).unwrap();
//! let data = collect("doc.toml", text, &[], &synthetic_routing(&s), &CollectOptions::default(), "0.1.0", None).unwrap();
//! let files = render_report(&[data], &[], &ReportOptions::default()).unwrap();
//! assert!(files.iter().any(|f| f.path == "index.html"));
//! assert!(files.iter().any(|f| f.path == "doc/step_time_cdf.png"));
//! ```

pub mod cache_curve;
pub mod capacity;
pub mod charts;
pub mod check;
pub mod collect;
pub mod document;
pub mod figure;
pub mod font;
pub mod load;
pub mod report;
pub mod sweep;
pub mod trace;
