//! The offloading scenario replays the real Mixtral trace through the CLI, and its hit rates equal
//! `moesim trace stats` on the same file (the cache semantics are shared).

use assert_cmd::Command;
use std::path::{Path, PathBuf};

use crate::common;

fn moesim() -> Command {
    Command::cargo_bin("moesim").expect("binary built")
}

/// The real per-token Mixtral trace (GSM8K prompts); the bundled scenario runs without it on its synthetic
/// workload, these tests replay it with `--trace`.
fn shared_trace() -> PathBuf {
    common::shared_traces("mixtral-8x7b").join("mixtral_gsm8k_2_routing.jsonl")
}

/// `moesim trace stats --json` at cache `sizes` of the shared trace, imported to native in `dir`.
fn trace_stats(trace: &Path, dir: &Path, sizes: &str) -> serde_json::Value {
    let native = dir.join("mixtral.moetrace");
    moesim()
        .args(["trace", "import", "--from", "jsonl-tokens"])
        .arg(trace)
        .arg(&native)
        .assert()
        .success();
    let out = moesim()
        .args(["trace", "stats", "--json", "--cache-sizes", sizes])
        .arg(&native)
        .output()
        .unwrap();
    common::assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn offload_scenario_hit_rates_equal_trace_stats() {
    let trace = shared_trace();
    let dir = tempfile::tempdir().unwrap();
    let stats = trace_stats(&trace, dir.path(), "4,6");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/offload-mixtral.toml");
    let out = moesim()
        .args(["simulate", "--json", "-q", "--no-timing", "--trace"])
        .arg(&trace)
        .arg(&scenario)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let sim: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut checked = 0;
    for r in sim["results"].as_array().unwrap() {
        let o = &r["offload"];
        let size = o["cache_experts_per_layer"].as_u64().unwrap().to_string();
        let key = match o["policy"].as_str().unwrap() {
            "lru" => "lru_hit_rate",
            "belady" => "belady_hit_rate",
            _ => continue,
        };
        let expect = stats["overall"][key][&size].as_f64().unwrap();
        let got = o["hit_rate"].as_f64().unwrap();
        assert!(
            (got - expect).abs() < 1e-12,
            "{}: {got} vs trace stats {expect}",
            r["strategy"]
        );
        checked += 1;
    }
    assert!(checked >= 3, "LRU and Belady strategies compared");
    // Mixtral 4 of 8 experts cached: LRU about 0.60, Belady about 0.73 (REFERENCE: 0.61 / 0.74).
    let lru4 = stats["overall"]["lru_hit_rate"]["4"].as_f64().unwrap();
    let belady4 = stats["overall"]["belady_hit_rate"]["4"].as_f64().unwrap();
    assert!(
        (0.55..0.66).contains(&lru4) && (0.70..0.78).contains(&belady4),
        "{lru4} {belady4}"
    );
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn plan_search_replays_the_trace_for_offloading_candidates() {
    let trace = shared_trace();
    let dir = tempfile::tempdir().unwrap();
    let stats = trace_stats(&trace, dir.path(), "5");
    let lru5 = stats["overall"]["lru_hit_rate"]["5"].as_f64().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/offload-mixtral.toml");
    let out = moesim()
        .args(["plan", "--search", "--json", "-q", "--no-timing", "--trace"])
        .arg(&trace)
        .arg("--out")
        .arg(dir.path())
        .arg(&scenario)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c5_lru: Vec<f64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["strategy"]
                .as_str()
                .unwrap()
                .starts_with("offload/c5-lru-")
        })
        .map(|r| r["offload"]["hit_rate"].as_f64().unwrap())
        .collect();
    assert!(!c5_lru.is_empty());
    for h in c5_lru {
        assert!((h - lru5).abs() < 1e-12, "{h} vs trace stats {lru5}");
    }
}
