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
//! - [`deployment`]: a deployment's pools of instances in time order, least-loaded routing and (prefill/decode
//!   disaggregation) the KV-cache transfer over the topology;
//! - [`metrics`]: per-request records, TTFT/TPOT/latency distributions, throughput, goodput, per pool;
//! - [`capacity`]: the highest request rate a deployment serves within the SLO, and its cost.
//!
//! A co-located instance spans the scenario's whole cluster (a disaggregated pool's instance: the GPUs the
//! pool gives it): attention is data-parallel over its GPUs (each step's
//! batch split evenly over them) and the MoE layers run the strategy (EP, or EP with replicated experts).
//! Requests are read by the caller (this crate does no I/O) and passed in as a trace.

pub mod arrivals;
pub mod capacity;
pub mod config;
pub mod deployment;
pub mod instance;
pub mod kv;
pub mod lengths;
pub mod metrics;
pub mod step_cost;

use crate::runner::kind_name;
use crate::scenario::Scenario;
use crate::stats::Distribution;
use config::{Deployment, Layout, Pool};
use metrics::{PoolMetrics, RequestRecord, ServingMetrics};
use moesim_calibrate::CostModel;
use moesim_traces::requests::TraceRequest;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// One deployment served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingResult {
    /// The deployment's name: the strategy's for a co-located `[[strategy]]`.
    pub strategy: String,
    /// The strategy's kind (co-located), or `disaggregated`.
    pub kind: String,
    /// GPUs over every instance of every pool.
    pub gpus: usize,
    pub metrics: ServingMetrics,
    /// Distinct step shapes lowered (the memo's size, over the pools).
    pub step_shapes: usize,
    /// Per pool (co-located; or prefill, then decode).
    pub pools: Vec<PoolMetrics>,
    /// Disaggregated: the KV-cache transfers (prefill end → cache at the decode instance), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_ms: Option<Distribution>,
    /// Per request, in arrival order (exported apart: `--requests-out`).
    #[serde(skip)]
    pub records: Vec<RequestRecord>,
}

/// A serving scenario's results, one per deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingReport {
    pub scenario: String,
    pub results: Vec<ServingResult>,
}

/// The scenario's candidate deployments: each `[[strategy]]` co-located on the whole cluster (one
/// instance; unless `[serving] colocated = false`), then each `[[serving.deployment]]`.
pub fn deployments(s: &Scenario) -> Vec<Deployment> {
    let Some(cfg) = &s.serving else {
        return Vec::new();
    };
    let mut out: Vec<Deployment> = Vec::new();
    if cfg.colocated {
        out.extend(s.strategies.iter().map(|st| Deployment {
            name: st.name.clone(),
            layout: Layout::Colocated {
                pool: Pool {
                    instances: 1,
                    nodes: s.cluster.nodes,
                    gpus_per_node: s.cluster.gpus_per_node,
                    strategy: st.clone(),
                    engine: cfg.engine,
                },
            },
        }));
    }
    out.extend(cfg.deployments.iter().cloned());
    out
}

/// Serves the scenario's request stream with every deployment, priced by `cost` (the datasheet roofline
/// when `None`). `trace`: the requests of `workload.serving.trace`, read by the caller. Deployments run
/// in parallel, each one's event loop sequentially: the output does not depend on the thread count.
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
    let roofline = s.cluster.roofline();
    let cost: &dyn CostModel = cost.unwrap_or(&roofline);
    let results = deployments(s)
        .par_iter()
        .map(|d| serve(s, d, &requests, cost))
        .collect::<Vec<_>>()
        // The first deployment's error in scenario order, whichever thread met one first.
        .into_iter()
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ServingReport {
        scenario: s.name.clone(),
        results,
    })
}

/// One deployment serving `requests`.
pub fn serve(
    s: &Scenario,
    d: &Deployment,
    requests: &[arrivals::Request],
    cost: &dyn CostModel,
) -> Result<ServingResult, String> {
    serve_with_memos(s, d, requests, cost, &mut Vec::new())
}

/// [`serve`] with the pools' step-time memos kept between calls (see [`deployment::run_with_memos`]).
pub fn serve_with_memos(
    s: &Scenario,
    d: &Deployment,
    requests: &[arrivals::Request],
    cost: &dyn CostModel,
    memos: &mut Vec<step_cost::Memo>,
) -> Result<ServingResult, String> {
    let slo = s.serving.as_ref().and_then(|c| c.slo.as_ref());
    let kind = match &d.layout {
        Layout::Colocated { pool } if pool.instances == 1 => kind_name(pool.strategy.kind).into(),
        Layout::Colocated { pool } => format!(
            "{} co-located × {}",
            kind_name(pool.strategy.kind),
            pool.instances
        ),
        Layout::Disaggregated { .. } => "disaggregated".into(),
    };
    let run = deployment::run_with_memos(s, &d.layout, requests, cost, memos)
        .map_err(|x| format!("deployment `{}`: {x}", d.name))?;
    let records = metrics::records(&run.served, Some(&run.placement), slo);
    let pools = d.layout.pools();
    let gpus: usize = pools.iter().map(|p| p.gpus()).sum();
    let m = metrics::summarise(&metrics::aggregate(&run), &records, slo, gpus);
    let pool_metrics = pools
        .iter()
        .enumerate()
        .map(|(k, p)| metrics::pool_metrics(&run, k, deployment::role(&d.layout, k), p, m.span_s))
        .collect();
    let transfers: Vec<f64> = records.iter().filter_map(|r| r.kv_transfer_ms).collect();
    Ok(ServingResult {
        strategy: d.name.clone(),
        kind,
        gpus,
        metrics: m,
        step_shapes: run.pools.iter().map(|p| p.step_shapes).sum(),
        pools: pool_metrics,
        kv_transfer_ms: matches!(d.layout, Layout::Disaggregated { .. })
            .then(|| Distribution::of(&transfers)),
        records,
    })
}

#[cfg(test)]
mod disaggregation_tests;
#[cfg(test)]
mod tests;
