//! Peak memory and wall time of one import + stats pass over a generated 1,040,000-row trace:
//! `cargo run --release -p moesim-traces --example trace_peak [jsonl|csv|native]`.

use moesim_traces::Skew;
use moesim_traces::Trace;
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::native::{read_native, write_native};
use moesim_traces::stats::{StatsOptions, trace_stats};
use moesim_traces::tokengen::{Drift, TokenModel};
use std::time::Instant;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "jsonl".into());
    let dir = std::env::temp_dir().join(format!("moesim-trace-peak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("t.{which}"));
    {
        // write the input in a child-free scope, then measure from a fresh process if asked
        let m = TokenModel {
            layers: 26,
            experts: 64,
            top_k: 6,
            skew: Skew::Zipf { s: 0.3 },
            shuffle_per_layer: true,
            locality: 0.17,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
            drift: Drift {
                sigma: 0.5,
                ..Drift::default()
            },
            seed: 1,
        };
        let t = Trace::Tokens(m.generate(160, 250).expect("model"));
        match which.as_str() {
            "csv" => moesim_traces::export::export(&t, Format::CsvTokens, &path).expect("export"),
            "native" => write_native(&path, &t).expect("write"),
            _ => moesim_traces::export::export(&t, Format::JsonlTokens, &path).expect("export"),
        }
    }
    let before = vm_hwm_kib();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let t0 = Instant::now();
    let t = match which.as_str() {
        "csv" => import(Format::CsvTokens, &path, &ImportOptions::default()),
        "native" => read_native(&path),
        _ => import(Format::JsonlTokens, &path, &ImportOptions::default()),
    }
    .expect("import");
    let t_import = t0.elapsed();
    let t1 = Instant::now();
    let st = trace_stats(
        &t,
        &StatsOptions {
            cache_sizes: vec![8, 16, 32],
            ..StatsOptions::default()
        },
    )
    .expect("stats");
    let t_stats = t1.elapsed();
    let rows = 160 * 250 * 26;
    println!(
        "{which}: {rows} rows, input {:.1} MB; import {:.2} s ({:.0} rows/s); stats {:.2} s ({:.0} rows/s); \
         overall LRU@16 {:.4}; peak RSS {} MiB (after generating the input: {} MiB)",
        size as f64 / 1e6,
        t_import.as_secs_f64(),
        rows as f64 / t_import.as_secs_f64(),
        t_stats.as_secs_f64(),
        rows as f64 / t_stats.as_secs_f64(),
        st.overall.lru_hit_rate["16"],
        vm_hwm_kib() / 1024,
        before / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}
