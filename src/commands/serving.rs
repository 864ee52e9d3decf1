//! `moesim simulate` on a `workload.mode = "serving"` scenario: the request stream served by each
//! strategy, its latency, throughput and goodput printed; per-request records exported with
//! `--requests-out` (CSV, or JSON by the `.json` extension), written through the one atomic write path.

use crate::output;
use miette::miette;
use moesim_reports::inputs::Inputs;
use moesim_reports::numbers::{percent, rate};
use moesim_sim::serving::ServingReport;
use moesim_sim::stats::Distribution;
use std::path::Path;
use std::process::ExitCode;

pub fn run(inputs: &Inputs, json: bool, requests_out: Option<&Path>) -> miette::Result<ExitCode> {
    if let Some(p) = requests_out {
        output::refuse_same_file(&inputs.file, p)?;
    }
    let report = inputs.simulate_serving()?;
    if let Some(p) = requests_out {
        output::write_atomic(p, &records(&report, p)?)?;
    }
    if json {
        output::print_json(&report)?;
    } else {
        output::print(&table(inputs, &report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Per-request records of every strategy: CSV with a `strategy` column, or JSON (`.json`).
fn records(report: &ServingReport, path: &Path) -> miette::Result<Vec<u8>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let v: Vec<serde_json::Value> = report
                .results
                .iter()
                .map(|r| serde_json::json!({ "strategy": r.strategy, "requests": r.records }))
                .collect();
            Ok(serde_json::to_vec_pretty(&v).expect("serialisable"))
        }
        Some("csv") => {
            let mut out = format!(
                "strategy,{}\n",
                moesim_sim::serving::metrics::RequestRecord::CSV_HEADER
            );
            for r in &report.results {
                for rec in &r.records {
                    out.push_str(&format!("{},{}\n", csv_field(&r.strategy), rec.csv_row()));
                }
            }
            Ok(out.into_bytes())
        }
        _ => Err(miette!(
            "--requests-out {}: expected a .csv or .json file",
            path.display()
        )),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn dist(name: &str, d: &Distribution) -> String {
    format!(
        "  {name:<9} mean {:>9.2}  p50 {:>9.2}  p90 {:>9.2}  p99 {:>9.2} ms\n",
        d.mean, d.p50, d.p90, d.p99
    )
}

fn table(inputs: &Inputs, report: &ServingReport) -> String {
    let s = &inputs.scenario;
    let mut t = format!(
        "{} — {} on {} × {} ({} GPUs), serving, {}; routing: {}\n",
        s.name,
        s.model.name,
        s.cluster.nodes,
        s.cluster.name,
        s.cluster.gpus(),
        inputs.cost_label,
        match (
            &inputs.trace_path,
            s.serving.as_ref().and_then(|c| c.routing_trace.as_ref())
        ) {
            (Some(p), Some(_)) => format!("trace {} replayed per step", p.display()),
            _ => "synthetic per step".to_string(),
        }
    );
    for r in &report.results {
        let m = &r.metrics;
        t.push_str(&format!(
            "\n{} ({}, {} GPUs): {} requests, {} completed, {} rejected over {:.1} s; {} steps ({} shapes lowered), busy {}\n",
            r.strategy,
            r.kind,
            r.gpus,
            m.requests,
            m.completed,
            m.rejected,
            m.span_s,
            m.steps,
            r.step_shapes,
            percent(m.busy_fraction)
        ));
        t.push_str(&dist("TTFT", &m.ttft_ms));
        t.push_str(&dist("TPOT", &m.tpot_ms));
        t.push_str(&dist("latency", &m.e2e_ms));
        t.push_str(&dist("queueing", &m.queue_ms));
        let th = &m.throughput;
        t.push_str(&format!(
            "  throughput {} requests/s, {} input and {} output tokens/s ({} output tokens/s per GPU)\n",
            rate(th.requests_per_s),
            rate(th.input_tokens_per_s),
            rate(th.output_tokens_per_s),
            rate(th.output_tokens_per_s_per_gpu)
        ));
        t.push_str(&format!(
            "  KV cache {} blocks: mean {} used, peak {}; {} preemptions; largest step {} sequences, {} tokens\n",
            m.kv_capacity_blocks,
            percent(m.kv_mean_utilization),
            percent(m.kv_peak_utilization),
            m.preemptions,
            m.peak_batch_seqs,
            m.peak_batch_tokens
        ));
        if r.pools.len() > 1 || r.pools.iter().any(|p| p.instances > 1) {
            for p in &r.pools {
                t.push_str(&format!(
                    "  {} pool: {} × {} GPUs ({}, {}): {} requests, {} steps, busy {}, queueing mean {:.2} p90 {:.2} ms; \
                     KV {} blocks per instance, mean {} used, peak {}; {} preemptions\n",
                    p.role,
                    p.instances,
                    p.gpus_per_instance,
                    p.strategy,
                    p.kind,
                    p.requests,
                    p.steps,
                    percent(p.busy_fraction),
                    p.queue_ms.mean,
                    p.queue_ms.p90,
                    p.kv_capacity_blocks,
                    percent(p.kv_mean_utilization),
                    percent(p.kv_peak_utilization),
                    p.preemptions
                ));
            }
        }
        if let Some(d) = &r.kv_transfer_ms {
            // Prefill end → KV cache at the decode instance.
            t.push_str(&dist("transfer", d));
        }
        if let Some(g) = &m.goodput {
            let target = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x} ms"));
            t.push_str(&format!(
                "  SLO TTFT ≤ {}, TPOT ≤ {} for {} % of requests: {} within, goodput {} requests/s — {}\n",
                target(g.slo.ttft_ms),
                target(g.slo.tpot_ms),
                g.slo.percentile,
                percent(g.attainment),
                rate(g.requests_per_s),
                if g.met { "meets the SLO" } else { "misses the SLO" }
            ));
        }
    }
    t
}
