//! Serving at request level: a stream of requests through an engine instance that batches them
//! continuously, priced step by step with the scenario's own strategy lowering.
//!
//! One concept per module:
//! - [`config`]: the resolved `[workload.serving]`, `[serving]` and `[slo]` settings;
//! - [`arrivals`] and [`lengths`]: the seeded request stream (Poisson, Gamma or a trace's arrivals;
//!   lengths from distributions or the trace);
//! - [`kv`]: the paged KV cache and its capacity from the memory model;
//! - [`instance`]: continuous batching with chunked prefill, preemption by recomputation, the policy;
//! - [`step_cost`]: a step's batch lowered by the strategy, memoised by quantised shape;
//! - [`metrics`]: per-request records, TTFT/TPOT/latency distributions, throughput, goodput.
//!
//! An instance spans the scenario's whole cluster: attention is data-parallel over its GPUs (each step's
//! batch split evenly over them) and the MoE layers run the strategy (EP, or EP with replicated experts).
//! Requests are read by the caller (this crate does no I/O) and passed in as a trace.

pub mod arrivals;
pub mod config;
pub mod instance;
pub mod kv;
pub mod lengths;
pub mod metrics;
pub mod step_cost;

use crate::runner::kind_name;
use crate::scenario::Scenario;
use crate::topology::Topology;
use metrics::{RequestRecord, ServingMetrics};
use moesim_calibrate::CostModel;
use moesim_traces::requests::TraceRequest;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One strategy served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingResult {
    pub strategy: String,
    pub kind: String,
    pub gpus: usize,
    pub metrics: ServingMetrics,
    /// Distinct step shapes lowered (the memo's size).
    pub step_shapes: usize,
    /// Per request, in arrival order (exported apart: `--requests-out`).
    #[serde(skip)]
    pub records: Vec<RequestRecord>,
}

/// A serving scenario's results, one per strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingReport {
    pub scenario: String,
    pub results: Vec<ServingResult>,
}

/// Serves the scenario's request stream with every strategy, priced by `cost` (the datasheet roofline when
/// `None`). `trace`: the requests of `workload.serving.trace`, read by the caller. Strategies run in
/// parallel, each instance's loop sequentially: the output does not depend on the thread count.
pub fn simulate_serving(
    s: &Scenario,
    trace: Option<&[TraceRequest]>,
    cost: Option<&dyn CostModel>,
) -> Result<ServingReport, String> {
    let cfg = s
        .serving
        .as_ref()
        .ok_or_else(|| "not a serving scenario (workload.mode is not \"serving\")".to_string())?;
    let requests = arrivals::requests(&cfg.requests, s.seed, trace)?;
    let topo = Topology::build(&s.cluster);
    let roofline = s.cluster.roofline();
    let cost: &dyn CostModel = cost.unwrap_or(&roofline);
    let results = s
        .strategies
        .par_iter()
        .map(|st| {
            let e = &cfg.engine;
            let blocks = match e.kv_blocks {
                Some(b) => b,
                None => kv::capacity_blocks(s, st, e.block_size, e.gpu_memory_utilization)?,
            };
            let mut steps = step_cost::StepCost::new(s, st, &topo, cost, e.shape_bits);
            let run = instance::run(&requests, e, blocks, |b| steps.seconds(b))
                .map_err(|x| format!("strategy `{}`: {x}", st.name))?;
            let records = metrics::records(&run, cfg.slo.as_ref());
            let m = metrics::summarise(&run, &records, cfg.slo.as_ref(), s.cluster.gpus());
            Ok(ServingResult {
                strategy: st.name.clone(),
                kind: kind_name(st.kind).into(),
                gpus: s.cluster.gpus(),
                metrics: m,
                step_shapes: steps.shapes(),
                records,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ServingReport {
        scenario: s.name.clone(),
        results,
    })
}

#[cfg(test)]
mod tests;
