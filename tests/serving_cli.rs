//! `moesim plan` and `moesim simulate` on serving scenarios end to end: the capacity search's table,
//! JSON and capacity.json, its errors, and the disaggregated DeepSeek-V3 scenario.

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

#[test]
fn plan_finds_each_deployments_capacity_and_writes_capacity_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = moesim()
        .args([
            "plan",
            "--quiet",
            "--json",
            "--set",
            "workload.serving.duration_s=3",
        ])
        .arg("--out")
        .arg(dir.path())
        .arg(repo("scenarios/serving-mixtral.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("capacity.json")).unwrap()).unwrap();
    assert_eq!(v, written);
    let ds = v["deployments"].as_array().unwrap();
    assert_eq!(ds.len(), 2);
    let tol = v["tolerance"].as_f64().unwrap();
    for d in ds {
        let (lo, hi) = (
            d["rate_per_s"].as_f64().unwrap(),
            d["breaks_at_per_s"].as_f64().unwrap(),
        );
        assert!(lo < hi && hi - lo <= tol * hi, "{d}");
        assert_eq!(d["at_capacity"]["metrics"]["goodput"]["met"], true);
    }
    assert!(v["ranked_by"].as_str().unwrap().contains("per GPU"));
    let per_gpu: Vec<f64> = ds
        .iter()
        .map(|d| d["output_tokens_per_s_per_gpu"].as_f64().unwrap())
        .collect();
    assert!(per_gpu[0] >= per_gpu[1], "{per_gpu:?}");
    // With a price (the serving section's, or the cluster's own, which comes first) the table ranks by
    // cost per million output tokens.
    for price in [
        "serving.price_per_gpu_hour=2.0",
        "cluster.price_per_gpu_hour=2.0",
    ] {
        moesim()
            .args(["plan", "--quiet", "--set", "workload.serving.duration_s=3"])
            .args(["--set", price, "--out"])
            .arg(dir.path())
            .arg(repo("scenarios/serving-mixtral.toml"))
            .assert()
            .success()
            .stdout(predicate::str::contains(
                "ranked by cost per million output tokens",
            ))
            .stdout(predicate::str::contains("cost/M out tokens"))
            .stdout(predicate::str::contains("capacity/s"));
    }
    // A price that is not positive names its field.
    moesim()
        .args(["plan", "--quiet", "--set", "cluster.price_per_gpu_hour=-1"])
        .arg(repo("scenarios/serving-mixtral.toml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("cluster.price_per_gpu_hour"));
}

#[test]
fn plan_on_a_serving_scenario_without_an_slo_says_what_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("scenarios/serving-mixtral.toml")).unwrap();
    let cut = text.find("[slo]").unwrap();
    let end = text[cut..].find("[[strategy]]").unwrap() + cut;
    let file = dir.path().join("no-slo.toml");
    std::fs::write(&file, format!("{}{}", &text[..cut], &text[end..])).unwrap();
    moesim()
        .args(["plan", "--quiet", "--out"])
        .arg(dir.path())
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("no-slo.toml"))
        .stderr(predicate::str::contains("needs an SLO"))
        .stderr(predicate::str::contains("ttft_ms"));
}

#[test]
fn simulate_serves_deepseek_v3_disaggregated_with_per_pool_figures() {
    let out = moesim()
        .args([
            "simulate",
            "--quiet",
            "--set",
            "workload.serving.duration_s=1",
        ])
        .arg(repo("scenarios/serving-dsv3.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "prefill-ep32-decode-ep144 (disaggregated, 176 GPUs)",
        "prefill pool: 1 × 32 GPUs",
        "decode pool: 1 × 144 GPUs",
        "transfer",
        "SLO",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn disaggregated_records_name_their_instances_and_kv_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    let out = moesim()
        .args([
            "simulate",
            "--quiet",
            "--set",
            "workload.serving.duration_s=3",
        ])
        .arg("--requests-out")
        .arg(&csv)
        .arg(repo("scenarios/serving-mixtral-pd.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (strategy, instance, decode, transfer, output) = (
        col("strategy"),
        col("instance"),
        col("decode_instance"),
        col("kv_transfer_ms"),
        col("output_tokens"),
    );
    let mut seen = [0usize; 3];
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let multi = f[output].parse::<u64>().unwrap() > 1;
        match f[strategy] {
            "prefill-ep8-decode-ep8" => {
                seen[0] += 1;
                assert_eq!(f[instance], "0");
                assert_eq!(f[decode] == "0", multi, "{line}");
                assert_eq!(!f[transfer].is_empty(), multi, "{line}");
                if multi {
                    assert!(f[transfer].parse::<f64>().unwrap() > 0.0, "{line}");
                }
            }
            "colocated-2x-ep8" => {
                seen[1] += 1;
                assert!(f[instance] == "0" || f[instance] == "1", "{line}");
                assert!(f[decode].is_empty() && f[transfer].is_empty(), "{line}");
            }
            _ => seen[2] += 1,
        }
    }
    assert!(
        seen[0] > 10 && seen[0] == seen[1] && seen[1] == seen[2],
        "{seen:?}"
    );
}

#[test]
fn simulate_strategy_picks_one_served_strategy_or_deployment() {
    let run = |name: &str| {
        moesim()
            .args([
                "simulate",
                "--quiet",
                "--set",
                "workload.serving.duration_s=2",
            ])
            .args(["--strategy", name])
            .arg(repo("scenarios/serving-mixtral-pd.toml"))
            .output()
            .unwrap()
    };
    let out = run("prefill-ep8-decode-ep8");
    common::assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("prefill-ep8-decode-ep8"), "{text}");
    assert!(!text.contains("colocated-2x-ep8"), "{text}");
    let out = run("no-such");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no served strategy or deployment named `no-such`")
            && err.contains("prefill-ep8-decode-ep8"),
        "{err}"
    );
}

#[test]
fn a_routing_trace_drives_each_serving_steps_routing_and_a_mismatched_one_is_refused() {
    let trace = repo("../shared/traces/mixtral-8x7b/mixtral_gsm8k_2_routing.jsonl");
    let run = |extra: &[&std::ffi::OsStr]| {
        let mut cmd = moesim();
        cmd.args([
            "simulate",
            "--quiet",
            "--no-timing",
            "--set",
            "workload.serving.duration_s=3",
            "--strategy",
            "ep8",
        ]);
        cmd.args(extra).arg(repo("scenarios/serving-mixtral.toml"));
        cmd.output().unwrap()
    };
    let replayed = run(&["--trace".as_ref(), trace.as_os_str()]);
    common::assert_ok(&replayed);
    let text = String::from_utf8(replayed.stdout.clone()).unwrap();
    assert!(text.contains("routing: trace"), "{text}");
    assert!(
        text.contains("mixtral_gsm8k_2_routing.jsonl replayed per step"),
        "{text}"
    );
    let synthetic = run(&[]);
    common::assert_ok(&synthetic);
    let synthetic = String::from_utf8(synthetic.stdout).unwrap();
    assert!(
        synthetic.contains("routing: synthetic per step"),
        "{synthetic}"
    );
    // The same requests, other routing: other step times.
    let figures = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.trim_start().starts_with("TTFT"))
            .map(str::to_string)
            .collect()
    };
    assert_ne!(figures(&text), figures(&synthetic));
    // Deterministic.
    assert_eq!(
        run(&["--trace".as_ref(), trace.as_os_str()]).stdout,
        replayed.stdout
    );
    // OLMoE's 64 experts do not fit Mixtral's 8: the error names the trace.
    let olmoe = repo("../shared/traces/olmoe/olmoe_expert_counts_c4.json");
    let out = run(&["--trace".as_ref(), olmoe.as_os_str()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("olmoe_expert_counts_c4.json"), "{err}");
    assert!(err.contains("expected 8"), "{err}");
}
