//! Import and statistics throughput on a large generated trace: `cargo bench -p moesim-traces --bench traces`.
//!
//! Throughput is items/s where an item is one token-layer row. The trace is DeepSeek-V2-Lite-shaped
//! (26 layers, 64 experts, top-6) with 40,000 tokens: 1,040,000 rows. Peak resident memory (VmHWM) of the
//! whole benchmark process is printed at the end; `cargo run --release -p moesim-traces --example
//! trace_peak` measures one import + stats pass alone.

use divan::Bencher;
use divan::counter::ItemsCount;
use moesim_traces::Trace;
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::native::{read_native, write_native};
use moesim_traces::stats::{StatsOptions, trace_stats};
use moesim_traces::tokengen::{Drift, TokenModel};
use moesim_traces::{Skew, TokenTrace};
use std::path::PathBuf;
use std::sync::OnceLock;

const SEQUENCES: usize = 160;
const TOKENS: usize = 250;

fn main() {
    divan::main();
    println!(
        "peak memory (VmHWM): {}",
        vm_hwm().unwrap_or_else(|| "unknown".into())
    );
}

fn vm_hwm() -> Option<String> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l[6..].trim().to_string())
}

pub fn model() -> TokenModel {
    TokenModel {
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
    }
}

struct Files {
    _dir: tempfile::TempDir,
    trace: TokenTrace,
    jsonl: PathBuf,
    csv: PathBuf,
    native: PathBuf,
}

fn files() -> &'static Files {
    static F: OnceLock<Files> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let trace = model().generate(SEQUENCES, TOKENS).expect("valid model");
        let t = Trace::Tokens(trace.clone());
        let jsonl = dir.path().join("t.jsonl");
        let csv = dir.path().join("t.csv");
        let native = dir.path().join("t.moetrace");
        moesim_traces::export::export(&t, Format::JsonlTokens, &jsonl).expect("export");
        moesim_traces::export::export(&t, Format::CsvTokens, &csv).expect("export");
        write_native(&native, &t).expect("write");
        Files {
            _dir: dir,
            trace,
            jsonl,
            csv,
            native,
        }
    })
}

fn rows() -> usize {
    SEQUENCES * TOKENS * 26
}

#[divan::bench(sample_count = 5)]
fn import_jsonl_tokens(b: Bencher) {
    let f = files();
    b.counter(ItemsCount::new(rows())).bench(|| {
        import(Format::JsonlTokens, &f.jsonl, &ImportOptions::default()).expect("import")
    });
}

#[divan::bench(sample_count = 5)]
fn import_csv_tokens(b: Bencher) {
    let f = files();
    b.counter(ItemsCount::new(rows()))
        .bench(|| import(Format::CsvTokens, &f.csv, &ImportOptions::default()).expect("import"));
}

#[divan::bench(sample_count = 5)]
fn read_native_trace(b: Bencher) {
    let f = files();
    b.counter(ItemsCount::new(rows()))
        .bench(|| read_native(&f.native).expect("read"));
}

#[divan::bench(sample_count = 5)]
fn write_native_trace(b: Bencher) {
    let f = files();
    let t = Trace::Tokens(f.trace.clone());
    let out = f.native.with_file_name("w.moetrace");
    b.counter(ItemsCount::new(rows()))
        .bench(|| write_native(&out, &t).expect("write"));
}

#[divan::bench(sample_count = 5)]
fn stats_with_cache_8_16_32(b: Bencher) {
    let f = files();
    let t = Trace::Tokens(f.trace.clone());
    let opts = StatsOptions {
        cache_sizes: vec![8, 16, 32],
        ..StatsOptions::default()
    };
    b.counter(ItemsCount::new(rows()))
        .bench(|| trace_stats(&t, &opts).expect("stats"));
}
