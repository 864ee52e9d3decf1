//! `moesim report`, `moesim simulate --timeline` and `moesim sweep` end to end: files, the numbers in them
//! against the simulator's own output, the trace format, and sharded sweeps against unsharded ones.

use assert_cmd::Command;
use moesim_reports::trace::validate_chrome_trace;
use serde_json::Value;
use std::path::Path;

const QUICKSTART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/quickstart.toml");

fn moesim() -> Command {
    let mut c = Command::cargo_bin("moesim").unwrap();
    c.arg("--quiet");
    c
}

/// `moesim simulate --json --no-timing` with extra `--set`s.
fn simulate(sets: &[&str]) -> Value {
    let mut c = moesim();
    c.args(["simulate", QUICKSTART, "--json", "--no-timing"]);
    for s in sets {
        c.args(["--set", s]);
    }
    let out = c.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

/// Rows of the first Markdown table after `heading` whose header starts with `first_column`.
fn md_table(md: &str, heading: &str, first_column: &str) -> Vec<Vec<String>> {
    let after = &md[md.find(heading).unwrap_or_else(|| panic!("no {heading}"))..];
    let start = after
        .find(&format!("| {first_column} |"))
        .unwrap_or_else(|| panic!("no table with {first_column} after {heading}"));
    after[start..]
        .lines()
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn f(v: &Value, digits: usize) -> String {
    format!("{:.digits$}", v.as_f64().unwrap())
}

#[test]
fn report_tables_equal_the_simulation_and_every_figure_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    moesim()
        .args([
            "report",
            QUICKSTART,
            "--set",
            "workload.iterations=6",
            "--capacity-nodes",
            "2,4",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("index.html"));
    for f in [
        "index.md",
        "index.html",
        "quickstart/results.json",
        "quickstart/timeline.trace.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    for fig in [
        "step_time_cdf",
        "breakdown",
        "rank_time_ep16",
        "rank_load_ep16",
        "layer_imbalance",
        "placement",
        "memory",
        "capacity_throughput",
        "capacity_step_time",
        "capacity_memory",
    ] {
        for ext in ["svg", "png"] {
            let p = out.join(format!("quickstart/{fig}.{ext}"));
            assert!(p.is_file(), "{} missing", p.display());
        }
    }
    moesim()
        .arg("report")
        .arg("--check")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains("ok"));

    let md = std::fs::read_to_string(out.join("index.md")).unwrap();
    let sim = simulate(&["workload.iterations=6"]);
    let results = sim["results"].as_array().unwrap();
    let rows = md_table(&md, "## Step time", "strategy");
    assert_eq!(rows.len(), results.len());
    for (row, r) in rows.iter().zip(results) {
        assert_eq!(row[0], r["strategy"].as_str().unwrap());
        assert_eq!(row[3], f(&r["step_time_ms"]["mean"], 3));
        assert_eq!(row[4], f(&r["step_time_ms"]["p50"], 3));
        assert_eq!(row[6], f(&r["step_time_ms"]["p99"], 3));
        assert_eq!(
            row[7],
            moesim_reports::numbers::rate(r["tokens_per_s"].as_f64().unwrap())
        );
        assert_eq!(
            row[8],
            moesim_reports::numbers::percent(r["dropped_fraction"].as_f64().unwrap())
        );
        assert_eq!(row[9], f(&r["memory_peak_gib"], 2));
    }
    // The capacity rows equal separate simulations at those sizes.
    let cap = md_table(&md, "## Capacity", "GPUs");
    assert_eq!(cap.len(), 2 * results.len());
    for nodes in [2, 4] {
        let sim = simulate(&["workload.iterations=6", &format!("cluster.nodes={nodes}")]);
        for r in sim["results"].as_array().unwrap() {
            let row = cap
                .iter()
                .find(|c| c[1] == nodes.to_string() && c[2] == r["strategy"].as_str().unwrap())
                .unwrap();
            assert_eq!(row[0], (8 * nodes).to_string());
            assert_eq!(row[3], f(&r["step_time_ms"]["mean"], 3));
            assert_eq!(
                row[5],
                moesim_reports::numbers::rate(r["tokens_per_s"].as_f64().unwrap())
            );
            assert_eq!(
                row[6],
                moesim_reports::numbers::percent(r["dropped_fraction"].as_f64().unwrap())
            );
            assert_eq!(row[7], f(&r["memory_peak_gib"], 2));
        }
    }
}

#[test]
fn check_finds_a_broken_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    moesim()
        .args([
            "report",
            QUICKSTART,
            "--set",
            "workload.iterations=2",
            "--no-capacity",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    std::fs::write(
        out.join("quickstart/memory.png"),
        b"\x89PNG\r\n\x1a\ntruncated",
    )
    .unwrap();
    std::fs::write(out.join("quickstart/breakdown.svg"), "<svg width=\"10\"").unwrap();
    moesim()
        .arg("report")
        .arg("--check")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("memory.png"))
        .stderr(predicates::str::contains("breakdown.svg"));
    std::fs::remove_file(out.join("index.html")).unwrap();
    moesim()
        .arg("report")
        .arg("--check")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicates::str::contains("index.html is missing"));
}

#[test]
fn report_errors_name_the_file() {
    moesim()
        .args(["report", "no/such/scenario.toml", "--out"])
        .arg(tempfile::tempdir().unwrap().path())
        .assert()
        .failure()
        .stderr(predicates::str::contains("no/such/scenario.toml"));
}

#[test]
fn timeline_is_a_valid_trace_whose_busy_time_equals_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    let out = moesim()
        .args([
            "simulate",
            QUICKSTART,
            "--set",
            "workload.iterations=4",
            "--strategy",
            "ep16",
            "--json",
            "--no-timing",
            "--iterations",
            "0..4",
            "--timeline",
        ])
        .arg(&path)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let sim: Value = serde_json::from_slice(&out).unwrap();
    let r = &sim["results"][0];
    let summary = validate_chrome_trace(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let gpus = r["per_rank"].as_array().unwrap().len();
    assert_eq!(gpus, 16);
    for rank in r["per_rank"].as_array().unwrap() {
        let k = rank["rank"].as_u64().unwrap();
        let busy_ms = summary.busy_us[&(k, 0)] / 1e3 / 4.0;
        let expect = rank["busy_ms"].as_f64().unwrap();
        assert!(
            (busy_ms - expect).abs() <= 1e-9 * expect,
            "rank {k}: {busy_ms} vs {expect}"
        );
        assert!(
            summary.busy_us.contains_key(&(k, 1)),
            "rank {k} has a comm track"
        );
    }
    // The iteration track spans the simulated step times, end to end.
    let steps: f64 = r["per_iteration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["step_ms"].as_f64().unwrap())
        .sum();
    assert!((summary.busy_us[&(gpus as u64, 0)] / 1e3 - steps).abs() < 1e-9 * steps);
    assert!((summary.end_us / 1e3 - steps).abs() < 1e-9 * steps);

    moesim()
        .args([
            "simulate",
            QUICKSTART,
            "--set",
            "workload.iterations=4",
            "--iterations",
            "3..9",
            "--timeline",
        ])
        .arg(dir.path().join("bad.json"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("outside"));
    assert!(!dir.path().join("bad.json").exists());
}

fn sweep_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("sweep.toml");
    std::fs::write(
        &p,
        format!(
            "name = \"nodes-skew\"\nscenarios = [\"{QUICKSTART}\"]\n[grid]\n\"cluster.nodes\" = [2, 4]\n\"workload.skew.s\" = [0.5, 1.1]\n\"workload.iterations\" = [3]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn sharded_sweep_merged_equals_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&whole)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .assert()
        .success();
    // Three shards, told their number three ways: Slurm's environment, Kubernetes', and flags.
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&parts)
        .env("SLURM_ARRAY_TASK_ID", "5")
        .env("SLURM_ARRAY_TASK_MIN", "5")
        .env("SLURM_ARRAY_TASK_COUNT", "3")
        .assert()
        .success();
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&parts)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env("JOB_COMPLETION_INDEX", "1")
        .args(["--shard-count", "3"])
        .assert()
        .success();
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&parts)
        .args(["--shard-index", "2", "--shard-count", "3"])
        .assert()
        .success();
    for d in [&whole, &parts] {
        moesim()
            .args(["sweep", "merge"])
            .arg(d)
            .assert()
            .success()
            .stdout(predicates::str::contains("4 points"));
    }
    let read = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("merged.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&whole), read(&parts));
    assert_eq!(a["points"], b["points"]);
    assert_eq!(b["shard_count"], 3);
    // Each point is the scenario simulated with its settings.
    let p = &b["points"][3];
    let overrides: Vec<&str> = p["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        overrides,
        [
            "cluster.nodes=4",
            "workload.iterations=3",
            "workload.skew.s=1.1"
        ]
    );
    assert_eq!(p["report"]["results"], simulate(&overrides)["results"]);

    let report = dir.path().join("report");
    moesim()
        .arg("report")
        .arg(parts.join("merged.json"))
        .arg("--out")
        .arg(&report)
        .assert()
        .success();
    let md = std::fs::read_to_string(report.join("index.md")).unwrap();
    assert_eq!(
        md_table(&md, "# Sweep nodes-skew", "point").len(),
        4 * 4,
        "4 points × the quickstart's 4 strategies"
    );
    assert!(md.contains("(sweep-nodes-skew/throughput.svg)"));
    moesim()
        .arg("report")
        .arg("--check")
        .arg(&report)
        .assert()
        .success();
}

#[test]
fn merge_refuses_a_missing_shard_and_shards_refuse_bad_indices() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = sweep_file(dir.path());
    let parts = dir.path().join("parts");
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&parts)
        .args(["--shard-index", "0", "--shard-count", "2"])
        .assert()
        .success();
    moesim()
        .args(["sweep", "merge"])
        .arg(&parts)
        .assert()
        .failure()
        .stderr(predicates::str::contains("missing shards 1"));
    assert!(!parts.join("merged.json").exists());
    moesim()
        .arg("sweep")
        .arg(&sweep)
        .arg("--out")
        .arg(&parts)
        .env("JOB_COMPLETION_INDEX", "4")
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .assert()
        .failure()
        .stderr(predicates::str::contains("--shard-count"));
}

#[test]
fn the_documented_example_sweep_runs() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/nodes-skew.sweep.toml"
    );
    moesim()
        .args(["sweep", example, "--shard-index", "0", "--shard-count", "9"])
        .arg("--out")
        .arg(dir.path())
        .assert()
        .success()
        .stdout(predicates::str::contains("1 of 9 points"));
    let shard: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("shard-0000-of-0009.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        shard["points"][0]["overrides"],
        serde_json::json!(["cluster.nodes=2", "workload.skew.s=0.6"])
    );
}

/// Every file under `dir`, relative path → bytes.
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn reports_are_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "3"] {
        moesim()
            .args([
                "--threads",
                threads,
                "report",
                QUICKSTART,
                "--set",
                "workload.iterations=3",
                "--capacity-nodes",
                "2",
            ])
            .arg("--out")
            .arg(dir.path().join(threads))
            .assert()
            .success();
    }
    let (a, b) = (files(&dir.path().join("1")), files(&dir.path().join("3")));
    assert!(a.len() > 20, "{} files", a.len());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs between 1 and 3 threads");
    }
}

#[test]
fn timelines_work_for_every_strategy_kind_and_show_links_under_the_flow_backend() {
    // The small scenarios the engine tests use: every strategy kind, no trace needed.
    let dir = tempfile::tempdir().unwrap();
    let kinds = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sim/tests/data/every-kind.toml"
    );
    let offload = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sim/tests/data/offload-small.toml"
    );
    for (file, strategy) in [
        (kinds, "ep16"),
        (kinds, "ep16-replicated"),
        (kinds, "fssdp"),
        (offload, "offload"),
    ] {
        for network in ["analytic", "flow"] {
            let path = dir.path().join(format!("{strategy}-{network}.json"));
            moesim()
                .arg("simulate")
                .arg(file)
                .args(["--quiet", "--strategy", strategy, "--set"])
                .arg(format!("cluster.network=\"{network}\""))
                .args(["--iterations", "1", "--timeline"])
                .arg(&path)
                .assert()
                .success();
            let text = std::fs::read_to_string(&path).unwrap();
            let summary = validate_chrome_trace(&text).unwrap();
            assert!(summary.spans > 0, "{strategy} {network}");
            let doc: Value = serde_json::from_str(&text).unwrap();
            let has_links = doc["traceEvents"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["cat"] == "link");
            // Transfers cross links only where there are collectives (offloading copies over PCIe).
            assert_eq!(
                has_links,
                network == "flow" && strategy != "offload",
                "{strategy} {network}"
            );
        }
    }
}
