//! `moesim plan` on a serving scenario: the capacity of every deployment under the `[slo]` (the highest
//! request rate it serves within it, by a search over the rate) and their ranking by cost per million
//! output tokens (or output tokens/s per GPU without a price). Prints a table (or `--json`) and writes
//! `capacity.json` under `--out`.

use crate::output;
use miette::miette;
use moesim_reports::inputs::Inputs;
use moesim_reports::numbers::rate;
use moesim_sim::serving::capacity::{CapacityReport, capacity};
use std::path::Path;
use std::process::ExitCode;

pub fn run(inputs: &Inputs, out: &Path, json: bool) -> miette::Result<ExitCode> {
    let report = capacity(
        &inputs.scenario,
        inputs.requests.as_deref().map(|t| t.requests.as_slice()),
        inputs.cost(),
    )
    .map_err(|e| miette!("{}: {e}", inputs.file.display()))?;
    std::fs::create_dir_all(out).map_err(|e| miette!("{}: {e}", out.display()))?;
    let path = out.join("capacity.json");
    output::write_atomic(
        &path,
        serde_json::to_string_pretty(&report)
            .expect("serialisable")
            .as_bytes(),
    )?;
    if json {
        output::print_json(&report)?;
    } else {
        output::print(&format!(
            "{}capacity written to {}\n",
            table(inputs, &report),
            path.display()
        ))?;
    }
    // Success when some deployment meets the SLO at some rate, as `plan` succeeds when it can choose.
    Ok(
        if report.deployments.iter().any(|c| c.rate_per_s.is_some()) {
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "moesim: no deployment of {} meets the SLO at any rate tried (down to 2^-{} of the scenario's)",
                inputs.file.display(),
                moesim_sim::serving::capacity::MAX_SCALINGS
            );
            ExitCode::from(2)
        },
    )
}

fn table(inputs: &Inputs, r: &CapacityReport) -> String {
    let s = &inputs.scenario;
    let target = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x} ms"));
    let mut t = format!(
        "{} — {}, serving capacity, {}\nSLO: TTFT ≤ {}, TPOT ≤ {} for {} % of requests; rate search from the \
         scenario's rate, same seed, bisection to {} % of the rate; ranked by {}\n\n",
        s.name,
        s.model.name,
        inputs.cost_label,
        target(r.slo.ttft_ms),
        target(r.slo.tpot_ms),
        r.slo.percentile,
        100.0 * r.tolerance,
        r.ranked_by
    );
    let price = r.price_per_gpu_hour.is_some();
    t.push_str(&format!(
        "{:<4} {:<28} {:<22} {:>5} {:>12} {:>10} {:>10} {:>10} {:>12} {:>10}{}\n",
        "rank",
        "deployment",
        "kind",
        "GPUs",
        "capacity/s",
        "breaks/s",
        "TTFT p90",
        "TPOT p90",
        "out tok/s",
        "tok/s/GPU",
        if price { "  cost/M out tokens" } else { "" }
    ));
    for (i, c) in r.deployments.iter().enumerate() {
        let m = &c.at_capacity.metrics;
        let cap = c.rate_per_s.map_or("none".to_string(), rate);
        let brk = c.breaks_at_per_s.map_or("—".to_string(), rate);
        t.push_str(&format!(
            "{:<4} {:<28} {:<22} {:>5} {:>12} {:>10} {:>10.1} {:>10.2} {:>12} {:>10}{}\n",
            i + 1,
            c.deployment,
            c.kind,
            c.gpus,
            cap,
            brk,
            m.ttft_ms.p90,
            m.tpot_ms.p90,
            rate(c.output_tokens_per_s),
            rate(c.output_tokens_per_s_per_gpu),
            match (price, c.cost_per_million_output_tokens) {
                (true, Some(x)) => format!("  {x:>18.3}"),
                (true, None) => format!("  {:>18}", "—"),
                _ => String::new(),
            }
        ));
    }
    t.push_str(
        "\ncapacity: the highest rate found within the SLO (figures at that rate); breaks: the lowest found \
         to miss it\n",
    );
    t
}
