//! Serving metrics: per-request records and their summary.
//!
//! - TTFT: arrival → first token (queueing, then the prefill steps, chunked or not).
//! - TPOT: (finish − first token) / (output − 1), the mean time per output token after the first
//!   (inter-token latency averaged over the request; requests with one output token have none).
//! - End-to-end latency: arrival → last token. Queueing delay: arrival → start of the first step that
//!   computes any of its tokens.
//! - Throughput over the run's span (first arrival to last step's end): requests/s and input and output
//!   tokens/s, also per GPU.
//! - Goodput (DistServe's definition): requests/s that finished within both SLO targets; the SLO is met
//!   when at least `percentile` % of the requests (rejected ones included) are.

use crate::serving::config::Slo;
use crate::serving::deployment::{DeploymentRun, Placement};
use crate::serving::instance::{InstanceRun, Served};
use crate::stats::Distribution;
use serde::{Deserialize, Serialize};

/// One request's outcome (the CSV/JSON export).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: usize,
    pub arrival_s: f64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// `None` when rejected.
    pub queue_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    /// `None` for one output token, or when rejected.
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub preemptions: u32,
    pub rejected: bool,
    /// Within the SLO (true when the scenario has none; false when rejected).
    pub meets_slo: bool,
    /// The instance that took it (co-located, or prefill when disaggregated).
    pub instance: Option<usize>,
    /// Disaggregated: the decode instance (none for one output token).
    pub decode_instance: Option<usize>,
    /// Disaggregated: prefill end → its KV cache at the decode instance (a sending GPU's queue included).
    pub kv_transfer_ms: Option<f64>,
}

impl RequestRecord {
    /// The CSV header of [`RequestRecord::csv_row`].
    pub const CSV_HEADER: &'static str = "id,arrival_s,prompt_tokens,output_tokens,queue_ms,ttft_ms,tpot_ms,e2e_ms,preemptions,rejected,meets_slo,instance,decode_instance,kv_transfer_ms";

    /// One CSV row (empty cells for absent values).
    pub fn csv_row(&self) -> String {
        let o = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
        let u = |v: Option<usize>| v.map_or(String::new(), |x| format!("{x}"));
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.id,
            self.arrival_s,
            self.prompt_tokens,
            self.output_tokens,
            o(self.queue_ms),
            o(self.ttft_ms),
            o(self.tpot_ms),
            o(self.e2e_ms),
            self.preemptions,
            self.rejected,
            self.meets_slo,
            u(self.instance),
            u(self.decode_instance),
            o(self.kv_transfer_ms)
        )
    }
}

/// Throughput figures, per second of the run's span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub input_tokens_per_s: f64,
    pub output_tokens_per_s: f64,
    pub output_tokens_per_s_per_gpu: f64,
    pub requests_per_s_per_gpu: f64,
}

/// Goodput under the SLO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    /// Requests within the targets per second of the span.
    pub requests_per_s: f64,
    /// Share of requests within the targets.
    pub attainment: f64,
    /// `attainment ≥ percentile / 100`.
    pub met: bool,
}

/// A serving run's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingMetrics {
    pub requests: usize,
    pub completed: usize,
    pub rejected: usize,
    /// First arrival to the end of the last step, seconds.
    pub span_s: f64,
    pub ttft_ms: Distribution,
    pub tpot_ms: Distribution,
    pub e2e_ms: Distribution,
    pub queue_ms: Distribution,
    pub throughput: Throughput,
    pub goodput: Option<Goodput>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub steps: u64,
    /// Share of the span the instance computed.
    pub busy_fraction: f64,
    pub preemptions: u64,
    pub kv_capacity_blocks: u64,
    pub kv_peak_utilization: f64,
    pub kv_mean_utilization: f64,
    pub peak_batch_seqs: u64,
    pub peak_batch_tokens: u64,
}

fn ms(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some((a? - b?) * 1e3)
}

/// Per-request records of a run (`placement`: where each request went, when a deployment ran it).
pub fn records(
    served: &[Served],
    placement: Option<&[Placement]>,
    slo: Option<&Slo>,
) -> Vec<RequestRecord> {
    served
        .iter()
        .enumerate()
        .map(|(i, s): (usize, &Served)| {
            let at = placement.map(|p| p[i]).unwrap_or_default();
            let r = s.request;
            let arrival = Some(r.arrival_s);
            let ttft = ms(s.first_token_s, arrival);
            let tpot = (r.output_tokens > 1)
                .then(|| ms(s.finish_s, s.first_token_s).map(|d| d / (r.output_tokens - 1) as f64))
                .flatten();
            let within = |v: Option<f64>, target: Option<f64>| match target {
                None => true,
                Some(t) => v.is_none_or(|v| v <= t),
            };
            let done = s.finish_s.is_some();
            RequestRecord {
                id: r.id,
                arrival_s: r.arrival_s,
                prompt_tokens: r.prompt_tokens,
                output_tokens: r.output_tokens,
                queue_ms: ms(s.first_scheduled_s, arrival),
                ttft_ms: ttft,
                tpot_ms: tpot,
                e2e_ms: ms(s.finish_s, arrival),
                preemptions: s.preemptions,
                rejected: s.rejected,
                meets_slo: done
                    && slo.is_none_or(|o| within(ttft, o.ttft_ms) && within(tpot, o.tpot_ms)),
                instance: at.instance.filter(|_| !s.rejected),
                decode_instance: at.decode_instance,
                kv_transfer_ms: ms(at.transfer_end_s, at.transfer_start_s),
            }
        })
        .collect()
}

/// Summarises a run of an instance on `gpus` GPUs.
pub fn summarise(
    run: &InstanceRun,
    records: &[RequestRecord],
    slo: Option<&Slo>,
    gpus: usize,
) -> ServingMetrics {
    let done: Vec<&RequestRecord> = records.iter().filter(|r| r.e2e_ms.is_some()).collect();
    let dist = |f: fn(&RequestRecord) -> Option<f64>| {
        Distribution::of(&done.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let first = records
        .iter()
        .map(|r| r.arrival_s)
        .fold(f64::INFINITY, f64::min);
    let span = if first.is_finite() {
        (run.end_s - first).max(0.0)
    } else {
        0.0
    };
    let per_s = |x: f64| if span > 0.0 { x / span } else { 0.0 };
    let input: u64 = done.iter().map(|r| r.prompt_tokens).sum();
    let output: u64 = done.iter().map(|r| r.output_tokens).sum();
    let g = gpus.max(1) as f64;
    let throughput = Throughput {
        requests_per_s: per_s(done.len() as f64),
        input_tokens_per_s: per_s(input as f64),
        output_tokens_per_s: per_s(output as f64),
        output_tokens_per_s_per_gpu: per_s(output as f64) / g,
        requests_per_s_per_gpu: per_s(done.len() as f64) / g,
    };
    let goodput = slo.map(|&slo| {
        let good = records.iter().filter(|r| r.meets_slo).count();
        let attainment = if records.is_empty() {
            0.0
        } else {
            good as f64 / records.len() as f64
        };
        Goodput {
            slo,
            requests_per_s: per_s(good as f64),
            attainment,
            met: attainment * 100.0 >= slo.percentile,
        }
    });
    let cap = run.kv_capacity_blocks.max(1) as f64;
    ServingMetrics {
        requests: records.len(),
        completed: done.len(),
        rejected: records.iter().filter(|r| r.rejected).count(),
        span_s: span,
        ttft_ms: dist(|r| r.ttft_ms),
        tpot_ms: dist(|r| r.tpot_ms),
        e2e_ms: dist(|r| r.e2e_ms),
        queue_ms: dist(|r| r.queue_ms),
        throughput,
        goodput,
        input_tokens: input,
        output_tokens: output,
        steps: run.steps,
        busy_fraction: if span > 0.0 { run.busy_s / span } else { 0.0 },
        preemptions: run.preemptions,
        kv_capacity_blocks: run.kv_capacity_blocks,
        kv_peak_utilization: run.kv_peak_blocks as f64 / cap,
        kv_mean_utilization: run.kv_mean_utilization,
        peak_batch_seqs: run.peak_batch_seqs,
        peak_batch_tokens: run.peak_batch_tokens,
    }
}

/// One pool of a deployment: its instances' work, queueing and KV cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMetrics {
    /// `co-located`, `prefill` or `decode`.
    pub role: String,
    pub instances: usize,
    pub gpus_per_instance: usize,
    pub strategy: String,
    pub kind: String,
    /// Requests that entered the pool (rejections excluded).
    pub requests: usize,
    pub steps: u64,
    /// Mean over its instances of the share of the run's span each computed.
    pub busy_fraction: f64,
    /// Arrival at the pool (the request's arrival; for decode, its KV cache's) → its first step there.
    pub queue_ms: Distribution,
    /// KV-cache blocks of one instance.
    pub kv_capacity_blocks: u64,
    /// Highest peak share over the instances.
    pub kv_peak_utilization: f64,
    /// Mean over the instances of each one's time-weighted held share.
    pub kv_mean_utilization: f64,
    pub preemptions: u64,
    pub step_shapes: usize,
    pub peak_batch_seqs: u64,
    pub peak_batch_tokens: u64,
}

/// The deployment's requests as one instance's run (for [`summarise`]): the merged requests, steps and
/// preemptions summed, the busy time averaged over the instances (so that `busy_fraction` is their mean
/// utilisation), KV capacities and peaks summed, the mean held share weighted by capacity.
pub fn aggregate(run: &DeploymentRun) -> InstanceRun {
    let all: Vec<&InstanceRun> = run.pools.iter().flat_map(|p| &p.instances).collect();
    let n = all.len().max(1) as f64;
    let cap: u64 = all.iter().map(|i| i.kv_capacity_blocks).sum();
    InstanceRun {
        served: run.served.clone(),
        steps: all.iter().map(|i| i.steps).sum(),
        busy_s: all.iter().map(|i| i.busy_s).sum::<f64>() / n,
        end_s: all.iter().map(|i| i.end_s).fold(0.0, f64::max),
        preemptions: all.iter().map(|i| i.preemptions).sum(),
        kv_capacity_blocks: cap,
        kv_peak_blocks: all.iter().map(|i| i.kv_peak_blocks).sum(),
        kv_mean_utilization: if cap > 0 {
            all.iter()
                .map(|i| i.kv_mean_utilization * i.kv_capacity_blocks as f64)
                .sum::<f64>()
                / cap as f64
        } else {
            0.0
        },
        peak_batch_seqs: all.iter().map(|i| i.peak_batch_seqs).max().unwrap_or(0),
        peak_batch_tokens: all.iter().map(|i| i.peak_batch_tokens).max().unwrap_or(0),
        peak_resident_seqs: all.iter().map(|i| i.peak_resident_seqs).max().unwrap_or(0),
    }
}

/// Pool `k` of a deployment run (`span_s`: the run's span, for utilisation).
pub fn pool_metrics(
    run: &DeploymentRun,
    k: usize,
    role: &str,
    pool: &crate::serving::config::Pool,
    span_s: f64,
) -> PoolMetrics {
    let p = &run.pools[k];
    let served = &p.served;
    let queue: Vec<f64> = served
        .iter()
        .zip(&run.placement)
        .filter_map(|(s, at)| {
            let start = s.first_scheduled_s?;
            let entered = if k == 0 {
                s.request.arrival_s
            } else {
                at.transfer_end_s?
            };
            Some((start - entered) * 1e3)
        })
        .collect();
    let n = p.instances.len().max(1) as f64;
    let cap = p.kv_blocks.max(1) as f64;
    PoolMetrics {
        role: role.into(),
        instances: pool.instances,
        gpus_per_instance: pool.gpus_per_instance(),
        strategy: pool.strategy.name.clone(),
        kind: crate::runner::kind_name(pool.strategy.kind).into(),
        requests: queue.len(),
        steps: p.instances.iter().map(|i| i.steps).sum(),
        busy_fraction: if span_s > 0.0 {
            p.instances.iter().map(|i| i.busy_s).sum::<f64>() / n / span_s
        } else {
            0.0
        },
        queue_ms: Distribution::of(&queue),
        kv_capacity_blocks: p.kv_blocks,
        kv_peak_utilization: p
            .instances
            .iter()
            .map(|i| i.kv_peak_blocks as f64 / cap)
            .fold(0.0, f64::max),
        kv_mean_utilization: p
            .instances
            .iter()
            .map(|i| i.kv_mean_utilization)
            .sum::<f64>()
            / n,
        preemptions: p.instances.iter().map(|i| i.preemptions).sum(),
        step_shapes: p.step_shapes,
        peak_batch_seqs: p
            .instances
            .iter()
            .map(|i| i.peak_batch_seqs)
            .max()
            .unwrap_or(0),
        peak_batch_tokens: p
            .instances
            .iter()
            .map(|i| i.peak_batch_tokens)
            .max()
            .unwrap_or(0),
    }
}
