//! `moesim calibrate` and `moesim validate` without a GPU, and scenarios priced by a GPU profile.

use crate::common;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn moesim() -> Command {
    Command::cargo_bin("moesim").expect("binary built")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Exit code of `calibrate`/`validate` without a GPU (documented in docs/calibration.md).
const NO_GPU: i32 = 3;

fn assert_no_gpu_message(stderr: &str, command: &str) {
    assert!(
        stderr.contains(&format!("moesim {command}: no CUDA driver found")),
        "{stderr}"
    );
    assert!(stderr.contains("works without a GPU"), "{stderr}");
    assert!(stderr.contains("h100-datasheet"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn calibrate_without_a_gpu_explains_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("p.json");
    let out = moesim()
        .env("MOESIM_NO_GPU", "1")
        .args(["calibrate", "--quick", "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NO_GPU));
    assert_no_gpu_message(&String::from_utf8_lossy(&out.stderr), "calibrate");
    assert!(
        !out_file.exists(),
        "no profile may be written without a GPU"
    );
}

#[test]
fn calibrate_on_this_machine_never_panics() {
    // Without MOESIM_NO_GPU: on a machine with no CUDA driver (CI) this is the real no-driver path; on a GPU host
    // it would calibrate, so only the no-GPU outcome is checked in detail.
    let dir = tempfile::tempdir().unwrap();
    let out = moesim()
        .env_remove("MOESIM_NO_GPU")
        .args(["calibrate", "--quick", "--quiet", "--out"])
        .arg(dir.path().join("p.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    if out.status.code() == Some(NO_GPU) {
        assert!(stderr.contains("moesim calibrate: "), "{stderr}");
        assert!(stderr.contains("works without a GPU"), "{stderr}");
    }
}

fn make_plan(dir: &Path) -> PathBuf {
    let out = moesim()
        .args(["plan", "--quiet", "--set", "workload.iterations=2", "--out"])
        .arg(dir)
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    common::assert_ok(&out);
    dir.join("plan.json")
}

#[test]
fn validate_without_a_gpu_explains_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let plan = make_plan(dir.path());
    let report = dir.path().join("v.json");
    let out = moesim()
        .env("MOESIM_NO_GPU", "1")
        .arg("validate")
        .arg(&plan)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(NO_GPU));
    assert_no_gpu_message(&String::from_utf8_lossy(&out.stderr), "validate");
    assert!(!report.exists());
}

#[test]
fn validate_rejects_a_file_that_is_not_a_plan_before_looking_for_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, "{\"hello\": 1}").unwrap();
    let out = moesim()
        .env("MOESIM_NO_GPU", "1")
        .arg("validate")
        .arg(&bogus)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus.json: not a moesim plan"), "{stderr}");
    let missing = moesim()
        .arg("validate")
        .arg(dir.path().join("nope.json"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read plan"));
}

/// Mean step time of every strategy of quickstart (3 iterations), with extra `--set`s.
fn step_times(scenario: &Path, sets: &[&str]) -> Vec<f64> {
    let mut cmd = moesim();
    cmd.args([
        "simulate",
        "--json",
        "--quiet",
        "--no-timing",
        "--set",
        "workload.iterations=3",
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.arg(scenario).output().unwrap();
    common::assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step_time_ms"]["mean"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_shipped_profile_prices_the_scenario() {
    let quickstart = repo("scenarios/quickstart.toml");
    let base = step_times(&quickstart, &[]);
    // The H100 datasheet profile is the dgx-h100 preset's roofline: same times.
    let h100 = step_times(&quickstart, &["cluster.profile=h100-datasheet"]);
    for (a, b) in base.iter().zip(&h100) {
        assert!((a / b - 1.0).abs() < 1e-9, "{a} vs {b}");
    }
    // An A100 computes about 3× slower: every strategy's step takes longer, the links being unchanged.
    let a100 = step_times(&quickstart, &["cluster.profile=a100-datasheet"]);
    for (a, b) in base.iter().zip(&a100) {
        assert!(b > &(a * 1.2), "a100 {b} vs h100 {a}");
    }
}

#[test]
fn a_profile_file_beside_the_scenario_prices_it() {
    let dir = tempfile::tempdir().unwrap();
    // A "measured" profile: the H100 datasheet with half the compute rate and twice the launch overhead.
    let text = std::fs::read_to_string(repo("calibrate/profiles/h100-datasheet.json")).unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&text).unwrap();
    p["name"] = "slow-h100".into();
    p["source"] = "measured".into();
    for r in p["model"]["roofline"].as_array_mut().unwrap() {
        r["tflops"] = (r["tflops"].as_f64().unwrap() / 2.0).into();
    }
    p["model"]["launch_overhead_us"] = 8.0.into();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(
        dir.path().join("profiles/slow.json"),
        serde_json::to_string_pretty(&p).unwrap(),
    )
    .unwrap();
    let scenario_text = std::fs::read_to_string(repo("scenarios/quickstart.toml")).unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        scenario_text.replace(
            "[cluster]\n",
            "[cluster]\nprofile = \"profiles/slow.json\"\n",
        ),
    )
    .unwrap();
    let base = step_times(&repo("scenarios/quickstart.toml"), &[]);
    let slow = step_times(&scenario, &[]);
    assert_eq!(base.len(), slow.len());
    for (a, b) in base.iter().zip(&slow) {
        assert!(b > a, "slow profile {b} vs datasheet {a}");
    }
}

#[test]
fn an_unknown_profile_is_an_error_naming_the_field_and_the_choices() {
    let out = moesim()
        .args([
            "simulate",
            "--quiet",
            "--set",
            "cluster.profile=h900-datasheet",
        ])
        .arg(repo("scenarios/quickstart.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quickstart.toml: cluster.profile: unknown profile `h900-datasheet`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a100-datasheet, h100-datasheet"),
        "{stderr}"
    );
}

fn timing(us: f64) -> serde_json::Value {
    serde_json::json!({"median_us": us, "min_us": us, "p10_us": us, "p90_us": us, "max_us": us})
}

#[test]
fn refit_rebuilds_the_model_from_samples_without_a_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo("calibrate/profiles/h100-datasheet.json")).unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&text).unwrap();
    p["source"] = "measured".into();
    // Samples of a GPU twice as slow as the datasheet roofline on olmoe's up projection, 3 µs launches.
    let (n, k) = (1024u64, 2048u64);
    let gemm: Vec<serde_json::Value> = (0..=14)
        .map(|i| {
            let m = 1u64 << i;
            let flops = 2.0 * (m * n * k) as f64 / 300e12;
            let bytes = ((m * k + k * n + m * n) * 2) as f64 / 1.5e12;
            serde_json::json!({"dtype": "bf16", "m": m, "n": n, "k": k, "timing": timing(3.0 + 1e6 * flops.max(bytes))})
        })
        .collect();
    p["samples"]["gemm"] = gemm.into();
    p["samples"]["overhead"] =
        serde_json::json!([{"what": "kernel-launch", "timing": timing(3.0)}]);
    let path = dir.path().join("m.json");
    std::fs::write(&path, serde_json::to_string(&p).unwrap()).unwrap();
    let out = moesim()
        .env("MOESIM_NO_GPU", "1")
        .arg("calibrate")
        .arg("--refit")
        .arg(&path)
        .output()
        .unwrap();
    common::assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("fit error"));
    let refit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let model = &refit["model"];
    assert_eq!(model["launch_overhead_us"].as_f64(), Some(3.0));
    let curves = model["gemm_curves"].as_array().unwrap();
    assert_eq!(curves.len(), 1);
    assert_eq!(
        (curves[0]["n"].as_u64(), curves[0]["k"].as_u64()),
        (Some(n), Some(k))
    );
    let tflops = model["roofline"][0]["tflops"].as_f64().unwrap();
    assert!(
        (tflops / 300.0 - 1.0).abs() < 0.01,
        "fitted {tflops} TFLOP/s"
    );
    assert_eq!(
        model["copy"].as_array().unwrap().len(),
        0,
        "no copy samples, no copy fits"
    );

    // A datasheet profile has nothing to fit.
    let ds = dir.path().join("ds.json");
    std::fs::write(&ds, &text).unwrap();
    let out = moesim()
        .arg("calibrate")
        .arg("--refit")
        .arg(&ds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot re-fit: no GEMM samples"));
}
