//! `moesim plan --search`: every strategy family expanded over its knobs, the best chosen by simulation.

use crate::common;

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

#[test]
fn a_layout_search_accounts_for_every_layout_and_says_why_each_was_skipped() {
    // Mixtral cut to 4 layers on 4 × DGX H100 with a pipelined strategy: a layout family.
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("layouts.toml");
    std::fs::write(
        &scenario,
        "name = \"layouts\"\nseed = 5\n[model]\npreset = \"mixtral-8x7b\"\nlayers = 4\nseq_len = 1024\n\
         micro_batch = 1\n[cluster]\npreset = \"dgx-h100\"\nnodes = 4\n[workload]\nmode = \"training\"\n\
         iterations = 1\nmicro_batches = 2\nskew = { distribution = \"zipf\", s = 0.8 }\n\
         [[strategy]]\nname = \"own\"\nkind = \"ep\"\nep_size = 8\npp = 2\n",
    )
    .unwrap();
    let run = |json: bool| {
        let mut cmd = Command::cargo_bin("moesim").unwrap();
        cmd.args(["plan", "--search", "-q", "--no-timing", "--out"])
            .arg(dir.path().join("out"));
        if json {
            cmd.arg("--json");
        }
        let out = cmd.arg(&scenario).output().unwrap();
        common::assert_ok(&out);
        out.stdout
    };
    let v: serde_json::Value = serde_json::from_slice(&run(true)).unwrap();
    let ls = &v["layout_search"];
    let count = |k: &str| ls[k].as_u64().unwrap();
    let pruned = ls["pruned"].as_array().unwrap();
    assert_eq!(
        count("expanded"),
        count("simulated") + pruned.len() as u64,
        "every layout simulated or pruned"
    );
    assert_eq!(
        pruned.len() as u64,
        count("pruned_memory")
            + count("pruned_dominated")
            + count("pruned_bound")
            + count("pruned_too_large")
    );
    // The bound does the pruning here, with its figures.
    assert!(count("pruned_bound") > 0 && count("bounded") > 0);
    for p in pruned.iter().filter(|p| p["reason"] == "bound") {
        assert!(p["step_ms"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["best_ms"].as_f64().unwrap() > 0.0, "{p}");
        assert!(
            ["schedule", "estimate"].contains(&p["by"].as_str().unwrap()),
            "{p}"
        );
    }
    let text = String::from_utf8(run(false)).unwrap();
    assert!(text.contains("pruned from below"), "{text}");
    assert!(text.contains("pruned (bound)"), "{text}");
}
