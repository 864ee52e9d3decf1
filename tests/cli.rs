//! The `moesim` binary end to end: the JSON interface, plan files, determinism and bad input.

use crate::common;

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn moesim() -> Command {
    Command::cargo_bin("moesim").expect("binary built")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).expect("stdout is one JSON object")
}

#[test]
fn simulate_json_has_the_documented_fields() {
    let out = moesim()
        .args([
            "simulate",
            "--json",
            "--quiet",
            "--set",
            "workload.iterations=3",
        ])
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v = json(&out.stdout);
    assert_eq!(v["scenario"], "quickstart");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert!(
            r["kind"] == "ep" || r["kind"] == "ep-replicated",
            "{}",
            r["kind"]
        );
        assert_eq!(r["iterations"], 3);
        for k in ["mean", "p50", "p90", "p99", "max"] {
            assert!(r["step_time_ms"][k].as_f64().unwrap() > 0.0, "{k}");
        }
        for phase in [
            "dispatch",
            "expert_compute",
            "combine",
            "dense_compute",
            "grad_sync",
        ] {
            assert!(r["breakdown_ms"][phase].as_f64().unwrap() > 0.0, "{phase}");
        }
        assert!(r["stragglers"].is_array());
        assert!(r["memory_peak_gib"].as_f64().unwrap() > 0.0);
        assert!(r["oom"].is_boolean());
        assert!(r["tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["events"].as_u64().unwrap() > 0);
        assert!(r["sim_seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn simulate_one_strategy_and_reject_an_unknown_one() {
    let out = moesim()
        .args([
            "simulate",
            "--json",
            "-q",
            "--strategy",
            "ep8-intra-node",
            "--set",
            "workload.iterations=2",
        ])
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    assert_eq!(json(&out.stdout)["results"].as_array().unwrap().len(), 1);
    moesim()
        .args(["simulate", "-q", "--strategy", "nope"])
        .arg(repo("scenarios/quickstart.toml"))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no strategy named `nope`")
                .and(predicate::str::contains("ep16")),
        );
}

#[test]
fn plan_writes_plan_json_and_reports_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let out = moesim()
        .args([
            "plan",
            "--json",
            "-q",
            "--set",
            "workload.iterations=4",
            "--out",
        ])
        .arg(dir.path())
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = json(&out.stdout);
    let chosen = v["chosen"].as_str().unwrap().to_string();
    // The chosen strategy has the highest tokens/s among those that fit.
    let best = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !r["oom"].as_bool().unwrap() && r["dropped_fraction"].as_f64().unwrap() <= 0.01)
        .max_by(|a, b| {
            a["tokens_per_s"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["tokens_per_s"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(best["strategy"], chosen.as_str());
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan["chosen"], chosen.as_str());
    let experts: usize = plan["placement"]["gpu_experts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_array().unwrap().len())
        .sum();
    assert_eq!(experts, 64, "every expert placed once per EP group");
    assert_eq!(plan["predicted"]["tokens_per_s"], best["tokens_per_s"]);
    assert_eq!(
        plan["predicted"]["dropped_fraction"],
        best["dropped_fraction"]
    );
}

#[test]
fn a_pipelined_plan_records_its_parallel_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = moesim()
        .args(["plan", "-q", "--set", "workload.iterations=1", "--out"])
        .arg(dir.path())
        .arg(repo("scenarios/mixtral-tp-ep-pp.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("plan.json")).unwrap())
            .unwrap();
    let chosen = plan["chosen"].as_str().unwrap();
    let p = &plan["parameters"]["parallel"];
    // Every strategy of the scenario is pipelined: the plan says how (pp, schedule, layers per stage).
    assert!(p["pp"].as_u64().unwrap() >= 2, "{chosen}: {p}");
    let layers: u64 = p["stage_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .sum();
    assert_eq!(layers, 32, "{chosen}: {p}");
    assert!(p["schedule"].is_string(), "{p}");
}

#[test]
fn plan_refuses_when_everything_runs_out_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    moesim()
        .args([
            "plan",
            "-q",
            "--set",
            "workload.iterations=1",
            "--set",
            "objective.memory_limit_gib=0.5",
            "--out",
        ])
        .arg(dir.path())
        .arg(repo("scenarios/quickstart.toml"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no plan written"))
        .stderr(predicate::str::contains("ep16: out of memory"));
    assert!(!dir.path().join("plan.json").exists());
}

#[test]
fn same_seed_gives_byte_identical_json_on_one_and_two_threads() {
    let run = |threads: &str| {
        moesim()
            .args([
                "--threads",
                threads,
                "simulate",
                "--json",
                "-q",
                "--no-timing",
                "--set",
                "workload.iterations=6",
            ])
            .arg(repo("scenarios/quickstart.toml"))
            .output()
            .unwrap()
            .stdout
    };
    let one = run("1");
    let two = run("2");
    assert!(!one.is_empty());
    assert_eq!(one, two);
    // A different seed changes the routing and so the output.
    let other = moesim()
        .args([
            "simulate",
            "--json",
            "-q",
            "--no-timing",
            "--set",
            "workload.iterations=6",
            "--set",
            "seed=43",
        ])
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap()
        .stdout;
    assert_ne!(one, other);
}

/// Writes a scenario file and runs `simulate` on it; returns stderr after checking the failure shape.
fn bad(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = moesim()
        .args(["simulate", "-q"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial output on stdout");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("bad.toml"), "names the file: {err}");
    err
}

const STRATEGY: &str = "[[strategy]]\nname = \"ep\"\nkind = \"ep\"\n";

/// A scenario of the mixtral preset on one DGX H100 with `model` and `cluster` lines added, and one EP
/// strategy with `strategy` lines added.
fn scenario_with(model: &str, cluster: &str, strategy: &str) -> String {
    format!(
        "[model]\npreset = \"mixtral-8x7b\"\n{model}[cluster]\npreset = \"dgx-h100\"\n{cluster}{STRATEGY}{strategy}"
    )
}

/// Each bad scenario fails with every expected fragment in its message, and points at `file:line:col`.
#[test]
fn bad_scenarios_name_the_field_and_point_at_its_line() {
    let cases: &[(&str, String, &[&str], &str)] = &[
        (
            "unknown key",
            scenario_with("topk = 2\n", "", ""),
            &["unknown field `topk`"],
            "bad.toml:3:1",
        ),
        (
            "wrong type",
            scenario_with("", "nodes = \"two\"\n", ""),
            &["expected usize"],
            "bad.toml:5:9",
        ),
        (
            "top-k above experts",
            scenario_with("top_k = 9\n", "", ""),
            &["top_k = 9 exceeds the number of experts (8)"],
            "bad.toml:3:9",
        ),
        (
            "zero GPUs",
            scenario_with("", "nodes = 0\n", ""),
            &["cluster.nodes", "at least one GPU"],
            "bad.toml:5:9",
        ),
        (
            "negative bandwidth",
            scenario_with("", "nodes = 2\nnic_gbits_per_s = -400\n", ""),
            &["cluster.nic_gbits_per_s: must be positive, got -400"],
            "bad.toml:6:19",
        ),
        (
            "negative count",
            scenario_with("layers = -3\n", "", ""),
            &["layers"],
            "bad.toml:3:10",
        ),
        (
            "bad ep_size",
            scenario_with("", "", "ep_size = 3\n"),
            &["ep_size = 3 must divide"],
            "bad.toml:8:11",
        ),
        (
            "quality constraint out of range",
            scenario_with("", "", "[objective]\nmax_dropped_fraction = 1.5\n"),
            &[
                "objective.max_dropped_fraction",
                "1.5 is not a fraction",
                "0..=1",
            ],
            "bad.toml:9:24",
        ),
    ];
    for (what, text, fragments, at) in cases {
        let err = bad(text);
        for f in *fragments {
            assert!(err.contains(f), "{what}: missing `{f}` in {err}");
        }
        assert!(err.contains(at), "{what}: not pointing at {at}: {err}");
    }
}

#[test]
fn unknown_preset_lists_the_known_ones() {
    let err = bad(&format!(
        "[model]\npreset = \"gpt-5\"\n[cluster]\npreset = \"dgx-h100\"\n{STRATEGY}"
    ));
    assert!(
        err.contains("unknown model preset `gpt-5`") && err.contains("deepseek-v3"),
        "{err}"
    );
}

#[test]
fn missing_file_and_bad_override_are_clear() {
    moesim()
        .args(["simulate", "no/such/scenario.toml"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "cannot read scenario no/such/scenario.toml",
        ));
    moesim()
        .args(["simulate", "-q", "--set", "model.top_k"])
        .arg(repo("scenarios/quickstart.toml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("expected KEY=VALUE"));
}

/// `moesim simulate … --json | head -1`: the reader goes away; moesim ends quietly with success instead of
/// panicking (exit 101), for the JSON, the table and `plan`.
#[test]
fn a_closed_stdout_ends_quietly() {
    let bin = assert_cmd::cargo::cargo_bin("moesim");
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["simulate", "--json", "-q"],
        vec!["simulate", "-q"],
        vec!["plan", "-q", "--out", dir.path().to_str().unwrap()],
    ] {
        let mut child = std::process::Command::new(&bin)
            .args(&args)
            .args(["--set", "workload.iterations=2"])
            .arg(repo("scenarios/quickstart.toml"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before moesim writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_strategy_name_with_dots_can_be_overridden() {
    let out = moesim()
        .args([
            "simulate",
            "--json",
            "-q",
            "--set",
            "workload.iterations=1",
            "--set",
            "strategy.ep16-cf1.25.capacity_factor=100",
        ])
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v = json(&out.stdout);
    let r = &v["results"][2];
    assert_eq!(r["strategy"], "ep16-cf1.25");
    // A capacity factor of 100 drops nothing.
    assert_eq!(r["dropped_fraction"], 0.0);
}

/// Two identical strategies tie: the explanation says so instead of "0.0% more tokens/s".
#[test]
fn a_tie_is_called_a_tie() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tie.toml");
    std::fs::write(
        &scenario,
        "[model]\npreset = \"olmoe-1b-7b\"\nlayers = 2\nseq_len = 256\n[cluster]\npreset = \"dgx-h100\"\n\
         [workload]\niterations = 2\n[[strategy]]\nname = \"a\"\nkind = \"ep\"\nep_size = 8\n\
         [[strategy]]\nname = \"b\"\nkind = \"ep\"\nep_size = 8\n",
    )
    .unwrap();
    let out = moesim()
        .args(["plan", "-q", "--out"])
        .arg(dir.path())
        .arg(&scenario)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("chosen: a — ties on tokens/s with b"),
        "{text}"
    );
    assert!(!text.contains("0.0% more"), "{text}");
}

#[test]
fn simulate_serves_a_request_stream_and_exports_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = repo("scenarios/serving-mixtral.toml");
    let run = |out: &Path, extra: &[&str]| {
        moesim()
            .args(["simulate", "--quiet", "--strategy", "ep8"])
            .args(["--set", "workload.serving.duration_s=3"])
            .args(extra)
            .arg("--requests-out")
            .arg(out)
            .arg(&scenario)
            .output()
            .unwrap()
    };
    let csv = dir.path().join("r.csv");
    let out = run(&csv, &[]);
    common::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for metric in [
        "TTFT",
        "TPOT",
        "latency",
        "queueing",
        "throughput",
        "KV cache",
        "SLO",
    ] {
        assert!(text.contains(metric), "{metric}: {text}");
    }
    let rows = std::fs::read_to_string(&csv).unwrap();
    let mut lines = rows.lines();
    assert!(lines.next().unwrap().starts_with("strategy,id,arrival_s"));
    let n = lines.count();
    assert!(n > 10, "{n} requests in 3 s at 10/s");
    let json_out = dir.path().join("r.json");
    let out = run(&json_out, &["--json"]);
    assert!(out.status.success());
    let v = json(&out.stdout);
    assert_eq!(v["results"][0]["metrics"]["requests"], n);
    let records: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    assert_eq!(records[0]["requests"].as_array().unwrap().len(), n);
    // The same seed prints the same records.
    let again = dir.path().join("again.csv");
    assert!(run(&again, &[]).status.success());
    assert_eq!(std::fs::read(&again).unwrap(), rows.as_bytes());
}

#[test]
fn serving_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    moesim()
        .args(["simulate", "--quiet", "--requests-out"])
        .arg(dir.path().join("r.csv"))
        .arg(repo("scenarios/quickstart.toml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("need a serving scenario"));
    moesim()
        .args(["plan", "--quiet", "--search", "--out"])
        .arg(dir.path().join("plan"))
        .arg(repo("scenarios/serving-mixtral.toml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--search expands step-level strategies",
        ));
    moesim()
        .args(["simulate", "--quiet", "--set", "serving.max_seqs=0"])
        .arg(repo("scenarios/serving-mixtral.toml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("serving-mixtral.toml"))
        .stderr(predicate::str::contains("serving.max_seqs"));
    let trace = dir.path().join("s.toml");
    let text = std::fs::read_to_string(repo("scenarios/serving-mixtral.toml"))
        .unwrap()
        .replace(
            "arrival = \"poisson\"\nrate_per_s = 10.0\n",
            "arrival = \"trace\"\ntrace = \"req.csv\"\n",
        );
    std::fs::write(&trace, text).unwrap();
    moesim()
        .args(["simulate", "--quiet"])
        .arg(&trace)
        .assert()
        .failure()
        .stderr(predicate::str::contains("workload.serving.trace"));
    std::fs::write(
        dir.path().join("req.csv"),
        "TIMESTAMP,ContextTokens,GeneratedTokens\n0,100,10\n0.5,x,3\n",
    )
    .unwrap();
    moesim()
        .args(["simulate", "--quiet"])
        .arg(&trace)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "req.csv, line 3, field `ContextTokens`",
        ));
    std::fs::write(
        dir.path().join("req.csv"),
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,100,10\n2023-11-16 18:15:47.0,200,3\n",
    )
    .unwrap();
    moesim()
        .args([
            "simulate",
            "--quiet",
            "--set",
            "workload.serving.prompt={dist=\"trace\"}",
        ])
        .arg(&trace)
        .assert()
        .success()
        .stdout(predicate::str::contains("2 requests, 2 completed"));
}
