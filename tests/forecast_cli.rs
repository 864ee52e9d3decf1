//! Straggler prediction on real routing: DeepSeek-V2-Lite's per-token trace replayed onto 8 GPUs; the
//! window after `plan_until` is predicted from the iterations before it and compared with what it realizes.

use assert_cmd::Command;

use crate::common;

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn prediction_error_on_a_held_out_window_of_the_deepseek_v2_lite_trace() {
    let trace = common::shared_traces("deepseek-v2-lite");
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("dsv2-lite.toml");
    std::fs::write(
        &scenario,
        format!(
            r#"name = "dsv2-lite-forecast"
seed = 3
[model]
name = "deepseek-v2-lite"
layers = 27
first_dense_layers = 1
d_model = 2048
expert_d_ff = 1408
dense_d_ff = 10944
experts = 64
top_k = 6
shared_experts = 2
seq_len = 64
vocab = 102400
[cluster]
preset = "dgx-h100"
compute_noise_cv = 0.02
[workload]
mode = "prefill"
iterations = 12
plan_until = 6
trace = "{}"
[[strategy]]
name = "ep8"
kind = "ep"
[[strategy]]
name = "ep8-replicated"
kind = "ep-replicated"
slots_per_gpu = 10
replan_interval = 3
"#,
            trace.display()
        ),
    )
    .unwrap();
    let out = Command::cargo_bin("moesim")
        .unwrap()
        .args(["simulate", "--json", "-q", "--no-timing"])
        .arg(&scenario)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for r in v["results"].as_array().unwrap() {
        let f = &r["forecast"];
        assert_eq!(f["plan_until"], 6);
        let (e50, e99) = (
            f["error"]["p50"].as_f64().unwrap(),
            f["error"]["p99"].as_f64().unwrap(),
        );
        eprintln!("{}: p50 error {e50:.4}, p99 error {e99:.4}", r["strategy"]);
        assert!(e50 <= 0.05, "{}: p50 error {e50}", r["strategy"]);
        assert!(e99 <= 0.10, "{}: p99 error {e99}", r["strategy"]);
        assert!(!f["predicted_critical_ranks"].as_array().unwrap().is_empty());
    }
}
