//! moesim's reports: capacity reports (Markdown + self-contained HTML with SVG/PNG figures), Chrome/Perfetto
//! timelines, and sharded sweeps.
//!
//! The pieces, in the order data flows through them:
//! - [`inputs::Inputs::resolve`] is the one input pipeline every command and the terminal explorer use: the
//!   scenario, its overrides, its routing (trace or synthetic), per-token routing and cost model, resolved
//!   once.
//! - [`collect::collect`] simulates a scenario and gathers what its report shows ([`collect::ScenarioData`]):
//!   the strategies' results, per-rank figures per iteration ([`moesim_sim::timeline`]), routing load per
//!   placement ([`load`]) and the capacity curve ([`capacity`]).
//! - [`report::render_report`] turns gathered scenarios and merged sweeps into files (bytes) — charts from
//!   [`charts`] rendered by [`figure::render`] with the embedded [`font`], pages from [`document`].
//! - [`trace::chrome_trace`] writes simulated iterations as Chrome trace JSON; [`trace::validate_chrome_trace`]
//!   and [`check`] verify what was written.
//! - [`sweep`] expands a grid, picks a shard's points, runs them and merges shards.
//!
//! Apart from [`inputs`], which reads the files a scenario names (its trace and profile), the crate does no
//! I/O: it returns bytes and strings, and the `moesim` binary writes them. Everything is
//! generic over [`moesim_sim::result::StrategyResult`], so new strategy kinds appear in tables and step-time
//! figures without changes here.
//!
//! ```
//! use moesim_reports::{collect::{collect, CollectOptions}, inputs::Inputs, report::{render_report, ReportOptions}};
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
//! let inputs = Inputs::resolve("doc.toml".as_ref(), text.into(), vec![], None).unwrap();
//! let data = collect(&inputs, &CollectOptions::default(), "0.1.0", None).unwrap();
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
pub mod inputs;
pub mod load;
pub mod numbers;
pub mod place_loads;
pub mod report;
pub mod serving_curves;
pub mod sweep;
pub mod trace;
