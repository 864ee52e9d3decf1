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
}

impl RequestRecord {
    /// The CSV header of [`RequestRecord::csv_row`].
    pub const CSV_HEADER: &'static str = "id,arrival_s,prompt_tokens,output_tokens,queue_ms,ttft_ms,tpot_ms,e2e_ms,preemptions,rejected,meets_slo";

    /// One CSV row (empty cells for absent values).
    pub fn csv_row(&self) -> String {
        let o = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
        format!(
            "{},{},{},{},{},{},{},{},{},{},{}",
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
            self.meets_slo
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

/// Per-request records of a run.
pub fn records(run: &InstanceRun, slo: Option<&Slo>) -> Vec<RequestRecord> {
    run.served
        .iter()
        .map(|s: &Served| {
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
