//! `moesim plan --search`: every strategy family expanded over its knobs, the best chosen by simulation.

mod common;

use assert_cmd::Command;
use std::path::Path;

#[test]
fn search_ranks_hundreds_of_candidates_and_writes_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml");
    let out = Command::cargo_bin("moesim")
        .unwrap()
        .args([
            "plan",
            "--search",
            "--json",
            "-q",
            "--no-timing",
            "--set",
            "workload.iterations=3",
            "--out",
        ])
        .arg(dir.path())
        .arg(&scenario)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap();
    assert!(results.len() >= 500, "{}", results.len());
    let chosen = v["chosen"].as_str().unwrap();
    // The winner is the fastest candidate that fits and drops at most 1 % (objective.max_dropped_fraction).
    let allowed = |r: &&serde_json::Value| {
        !r["oom"].as_bool().unwrap() && r["dropped_fraction"].as_f64().unwrap() <= 0.01
    };
    let best = results
        .iter()
        .filter(allowed)
        .map(|r| r["tokens_per_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let winner = results.iter().find(|r| r["strategy"] == chosen).unwrap();
    assert_eq!(winner["tokens_per_s"].as_f64().unwrap(), best);
    assert!(winner["dropped_fraction"].as_f64().unwrap() <= 0.01);
    // The search never drops more tokens than the scenario allowed (its loosest factor is 1.25).
    for r in results {
        assert!(r["dropped_fraction"].as_f64().unwrap() <= 0.5);
    }
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan["chosen"], chosen);
}
