//! `moesim place`: the JSON interface, the constraints, and clear errors for bad load files.

use crate::common;

use assert_cmd::Command;
use predicates::prelude::*;

fn moesim() -> Command {
    Command::cargo_bin("moesim").expect("binary built")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `moesim place ARGS --json --loads LOADS`: must succeed (its stderr shown otherwise); the parsed JSON.
fn place_json(args: &[&str], loads: &std::path::Path) -> serde_json::Value {
    let out = moesim()
        .arg("place")
        .args(args)
        .args(["--json", "--loads"])
        .arg(loads)
        .output()
        .unwrap();
    common::assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `moesim place ARGS --loads LOADS` must fail with `message` on stderr.
fn place_fails(args: &[&str], loads: &std::path::Path, message: &str) {
    moesim()
        .arg("place")
        .args(args)
        .arg("--loads")
        .arg(loads)
        .assert()
        .failure()
        .stderr(predicate::str::contains(message));
}

/// A long-format history: 4 layers × 16 experts × 6 iterations with a hot expert per layer.
fn history() -> String {
    let mut s = String::from("iteration,layer,expert,tokens\n");
    for it in 0..6 {
        for layer in 0..4 {
            for e in 0..16 {
                let hot = if e == (layer * 5) % 16 { 400 } else { 0 };
                s.push_str(&format!(
                    "{it},{layer},{e},{}\n",
                    20 + hot + (e * 7 + it * 3) % 11
                ));
            }
        }
    }
    s
}

#[test]
fn json_has_exactly_s_slots_per_gpu_and_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    let v = place_json(
        &["--gpus", "4", "--slots-per-gpu", "6", "--nodes", "2"],
        &loads,
    );
    assert_eq!(v["gpus"], 4);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["layer"], i);
        let gpus = l["gpu_experts"].as_array().unwrap();
        assert_eq!(gpus.len(), 4);
        let mut seen = std::collections::BTreeSet::new();
        for g in gpus {
            let experts: Vec<u64> = g
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_u64().unwrap())
                .collect();
            assert_eq!(experts.len(), 6);
            let unique: std::collections::BTreeSet<u64> = experts.iter().copied().collect();
            assert_eq!(unique.len(), 6, "two copies of one expert on a GPU");
            seen.extend(unique);
        }
        assert_eq!(seen.len(), 16, "every expert placed");
        // The hot expert gets more than one copy.
        let hot = ((i * 5) % 16) as u64;
        let copies = gpus
            .iter()
            .filter(|g| {
                g.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e.as_u64() == Some(hot))
            })
            .count();
        assert!(copies > 1);
    }
    assert!(v["balancedness"].as_f64().unwrap() >= v["eplb_balancedness"].as_f64().unwrap() - 1e-9);
}

#[test]
fn a_one_row_per_layer_matrix_works_and_prints_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "m.csv", "e0,e1,e2,e3\n100,10,10,10\n5,5,80,5\n");
    moesim()
        .args(["place", "--gpus", "2", "--slots-per-gpu", "3", "--loads"])
        .arg(&loads)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("EPLB")
                .and(predicate::str::contains("all"))
                // The placement itself: GPU 0 holds expert 0 (the hot one of layer 0) and two others.
                .and(
                    predicate::str::is_match(r"layer 0: 0:\[\d+,\d+,\d+\] 1:\[\d+,\d+,\d+\]")
                        .unwrap(),
                ),
        );
}

/// The shipped sample (OLMoE's C4 counts, a load-matrix JSON as `trace import` reads it) is a loads file.
#[test]
fn the_shipped_olmoe_counts_are_a_loads_file() {
    let loads = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/data/olmoe/olmoe_expert_counts_c4.json");
    let v = place_json(&["--gpus", "8", "--slots-per-gpu", "9"], &loads);
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for l in layers {
        let gpus = l["gpu_experts"].as_array().unwrap();
        assert_eq!(gpus.len(), 8);
        let mut seen = std::collections::BTreeSet::new();
        for g in gpus {
            let es = g.as_array().unwrap();
            assert_eq!(es.len(), 9);
            seen.extend(es.iter().map(|e| e.as_u64().unwrap()));
        }
        assert_eq!(seen.len(), 64, "every expert placed");
        assert!(l["balancedness"].as_f64().unwrap() > 0.5);
    }
}

#[test]
fn bad_load_files_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "neg.csv",
            "iteration,layer,expert,tokens\n0,0,0,5\n0,0,1,-3\n",
            "neg.csv:3",
            "≥ 0",
        ),
        (
            "text.csv",
            "iteration,layer,expert,tokens\n0,0,x,5\n",
            "text.csv:2",
            "expected an expert id",
        ),
        (
            "ragged.csv",
            "iteration,layer,expert,tokens\n0,0,0\n",
            "ragged.csv:2",
            "3 fields; expected 4",
        ),
        (
            "cols.csv",
            "iteration,layer,tokens\n0,0,4\n",
            "cols.csv:1",
            "missing column `expert`",
        ),
        (
            "rows.csv",
            "1,2,3\n4,5\n",
            "rows.csv:2",
            "2 experts in this row; expected 3",
        ),
        ("empty.csv", "", "empty.csv:1", "empty file"),
    ];
    for (name, text, at, what) in cases {
        let p = write(&dir, name, text);
        moesim()
            .args(["place", "--gpus", "2", "--slots-per-gpu", "2", "--loads"])
            .arg(&p)
            .assert()
            .failure()
            .stderr(
                predicate::str::contains(at)
                    .and(predicate::str::contains(what))
                    .and(predicate::str::contains("panicked").not()),
            );
    }
}

#[test]
fn impossible_shapes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    place_fails(
        &["--gpus", "2", "--slots-per-gpu", "4"],
        &loads,
        "16 experts do not fit in 2 GPUs × 4 slots",
    );
    place_fails(
        &["--gpus", "2", "--slots-per-gpu", "17"],
        &loads,
        "two copies of one expert",
    );
}

#[test]
fn a_zero_horizon_is_refused_and_any_other_plans() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    place_fails(
        &["--gpus", "4", "--slots-per-gpu", "5", "--horizon", "0"],
        &loads,
        "--horizon 0: expected the number of iterations the plan serves",
    );
    // Six iterations hold one backtest for a horizon of 1 and none for 100 (the default half-life then):
    // both plan every layer with five slots per GPU.
    for h in ["1", "100"] {
        let v = place_json(
            &["--gpus", "4", "--slots-per-gpu", "5", "--horizon", h],
            &loads,
        );
        let layers = v["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4);
        for l in layers {
            for g in l["gpu_experts"].as_array().unwrap() {
                assert_eq!(g.as_array().unwrap().len(), 5);
            }
        }
    }
}

#[test]
fn evaluation_on_later_iterations_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    let args = [
        "--gpus",
        "4",
        "--slots-per-gpu",
        "5",
        "--evaluate-from",
        "4",
    ];
    let v = place_json(&args, &loads);
    let e = &v["evaluation"];
    assert_eq!(e["from_iteration"], 4);
    assert!(e["balancedness"].as_f64().unwrap() > 0.5);
    assert!(e["eplb_balancedness"].as_f64().unwrap() > 0.0);
    // Two iterations × four layers judged: for moesim and for EPLB, 0 < 10th percentile ≤ median ≤ 1 and
    // 0 < mean ≤ 1.
    for who in ["", "eplb_"] {
        let f = |k: &str| e[format!("{who}{k}")].as_f64().unwrap();
        let (p10, med, mean) = (f("p10"), f("median"), f("balancedness"));
        assert!(0.0 < p10 && p10 <= med && med <= 1.0, "{who}: {p10} {med}");
        assert!(mean <= 1.0 && mean > 0.0);
    }
    // The text report prints the same three figures.
    let out = moesim()
        .arg("place")
        .args(args)
        .arg("--loads")
        .arg(&loads)
        .output()
        .unwrap();
    common::assert_ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    for row in ["mean", "median", "p10"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(row)),
            "no {row} row in:\n{text}"
        );
    }
}

/// A drifting history: 2 layers × 8 experts × 30 iterations; the hot expert moves from 0 to 5 at
/// iteration 20, so how far back the planner looks (the horizon's half-life) changes the plan.
fn drifting_history() -> String {
    let mut s = String::from("iteration,layer,expert,tokens\n");
    for it in 0..30 {
        for layer in 0..2 {
            for e in 0..8 {
                let hot = if it < 20 { 0 } else { 5 };
                let load = if e == (hot + layer) % 8 {
                    500
                } else {
                    40 + (e * 13 + it * 7) % 17
                };
                s.push_str(&format!("{it},{layer},{e},{load}\n"));
            }
        }
    }
    s
}

#[test]
fn the_default_horizon_is_the_iterations_the_plan_serves() {
    // Without --horizon the plan is assumed to serve as many iterations as it was made from (or those
    // --evaluate-from judges): the same plan as an explicit --horizon of that length, and not the plan
    // for a short horizon (for which the backtest picks a short memory on this drifting history).
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "drift.csv", &drifting_history());
    let layers = |v: &serde_json::Value| v["layers"].clone();
    let base = ["--gpus", "4", "--slots-per-gpu", "3"];
    let with = |extra: &[&str]| place_json(&[&base[..], extra].concat(), &loads);
    let default = with(&[]);
    assert_eq!(default["horizon"], 30);
    assert_eq!(layers(&default), layers(&with(&["--horizon", "30"])));
    assert_ne!(layers(&default), layers(&with(&["--horizon", "2"])));
    let judged = with(&["--evaluate-from", "24"]);
    assert_eq!(judged["horizon"], 6);
    assert!(with(&["--objective", "forecast"])["horizon"].is_null());
    assert_eq!(
        layers(&judged),
        layers(&with(&["--evaluate-from", "24", "--horizon", "6"]))
    );
}

#[test]
fn shares_are_planned_on_request_and_sum_to_one_per_expert() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    let v = place_json(
        &[
            "--gpus",
            "4",
            "--slots-per-gpu",
            "6",
            "--nodes",
            "2",
            "--shares",
        ],
        &loads,
    );
    assert_eq!(v["objective"], "robust");
    for l in v["layers"].as_array().unwrap() {
        let experts = l["gpu_experts"].as_array().unwrap();
        let shares = l["gpu_shares"].as_array().unwrap();
        assert_eq!(experts.len(), shares.len());
        let mut per_expert = [0.0f64; 16];
        for (g, s) in experts.iter().zip(shares) {
            let g = g.as_array().unwrap();
            let s = s.as_array().unwrap();
            assert_eq!(g.len(), s.len());
            let unique: std::collections::BTreeSet<u64> =
                g.iter().map(|e| e.as_u64().unwrap()).collect();
            assert_eq!(unique.len(), g.len(), "two copies of one expert on a GPU");
            for (e, x) in g.iter().zip(s) {
                let x = x.as_f64().unwrap();
                assert!((0.0..=1.0 + 1e-9).contains(&x));
                per_expert[e.as_u64().unwrap() as usize] += x;
            }
        }
        assert!(
            per_expert.iter().all(|s| (s - 1.0).abs() < 1e-9),
            "{per_expert:?}"
        );
    }
    // Without --shares the interface is unchanged: no shares.
    let v = place_json(&["--gpus", "4", "--slots-per-gpu", "6"], &loads);
    assert!(v["layers"][0].get("gpu_shares").is_none());
}

#[test]
fn shares_need_the_robust_objective() {
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "loads.csv", &history());
    place_fails(
        &[
            "--gpus",
            "4",
            "--slots-per-gpu",
            "6",
            "--objective",
            "forecast",
            "--shares",
        ],
        &loads,
        "--shares needs --objective robust",
    );
}

#[test]
fn harness_protocol_knobs_are_checked() {
    for (args, message) in [
        (&["--harness", "--replan-every", "0"][..], "--replan-every"),
        (
            &["--harness", "--decision-window", "forever"][..],
            "--decision-window",
        ),
        (&["--decision-window", "persistence"][..], "--harness"),
    ] {
        moesim()
            .arg("place")
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(message));
    }
}

/// `--window N` is the robust planner's memory: 30 iterations with expert 0 hot, then 10 with expert 5
/// hot. Planned from all 40, expert 0 keeps a second copy (the older iterations set its level), also
/// when only the newest 10 are replayed (`--history-samples`); planned from the last 10 only, it is one
/// cold expert among five and gets one copy.
#[test]
fn window_makes_the_robust_planner_forget_older_iterations() {
    let mut s = String::from("iteration,layer,expert,tokens\n");
    for it in 0..40 {
        let hot = if it < 30 { 0 } else { 5 };
        for e in 0..6 {
            let tokens = if e == hot { 3000 } else { 100 } + (e * 7 + it * 3) % 11;
            s.push_str(&format!("{it},0,{e},{tokens}\n"));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let loads = write(&dir, "shift.csv", &s);
    let copies_of_expert_0 = |extra: &[&str]| {
        let mut args = vec!["--gpus", "4", "--slots-per-gpu", "2"];
        args.extend_from_slice(extra);
        let v = place_json(&args, &loads);
        v["layers"][0]["gpu_experts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g.as_array().unwrap().iter().any(|e| e == 0))
            .count()
    };
    assert!(copies_of_expert_0(&[]) >= 2);
    assert_eq!(copies_of_expert_0(&["--window", "10"]), 1);
    // Replaying only the newest 10 one by one keeps the older ones' level: expert 0 is still hot.
    assert!(copies_of_expert_0(&["--history-samples", "10"]) >= 2);
}
