//! `moesim trace …` and `--trace` end to end, on the real shared traces where present.

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common;

fn moesim() -> Command {
    Command::cargo_bin("moesim").expect("binary built")
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn shared(sub: &str) -> PathBuf {
    common::shared_traces(sub)
}

fn ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    common::assert_ok(&out);
    out.stdout
}

/// A generated trace of DeepSeek-V2-Lite's routing shape (26 MoE layers, 64 experts, top-6), for tests
/// that need the shape, not the real routing.
fn gen_deepseek_shaped(tmp: &Path) -> PathBuf {
    let out = tmp.join("ds.moetrace");
    ok(moesim()
        .args([
            "trace",
            "gen",
            "--layers",
            "26",
            "--experts",
            "64",
            "--top-k",
            "6",
        ])
        .args([
            "--skew",
            "zipf:1.0",
            "--sequences",
            "8",
            "--tokens-per-sequence",
            "64",
        ])
        .arg(&out));
    out
}

fn import_deepseek(tmp: &Path) -> PathBuf {
    let dir = shared("deepseek-v2-lite");
    let out = tmp.join("ds.moetrace");
    ok(moesim()
        .args(["trace", "import", "--from", "csv-tokens"])
        .arg(&dir)
        .arg(&out));
    out
}

/// Independent reference: reads the CSVs by hand (the expert list is the last, quoted field) and replays
/// LRU / Belady per layer with plain vectors and forward scans.
fn reference_rates(dir: &Path, cap: usize) -> BTreeMap<u32, (f64, f64)> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let n = p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .split('_')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            (n, p)
        })
        .collect();
    files.sort();
    let mut layers: BTreeMap<u32, Vec<Vec<u32>>> = BTreeMap::new();
    for (_, f) in files {
        for line in std::fs::read_to_string(f).unwrap().lines().skip(1) {
            let layer: u32 = line.split(',').next().unwrap().parse().unwrap();
            let list = &line[line.rfind("\"[").unwrap() + 2..line.len() - 2];
            let ids = list.split(", ").map(|x| x.parse().unwrap()).collect();
            layers.entry(layer).or_default().push(ids);
        }
    }
    layers
        .into_iter()
        .map(|(l, steps)| (l, (replay(&steps, cap, false), replay(&steps, cap, true))))
        .collect()
}

fn replay(steps: &[Vec<u32>], cap: usize, belady: bool) -> f64 {
    let mut cache: Vec<(u32, usize)> = Vec::new(); // (expert, last touch)
    let (mut hits, mut reqs, mut clock) = (0usize, 0usize, 0usize);
    for (i, step) in steps.iter().enumerate() {
        let resident: Vec<u32> = cache.iter().map(|c| c.0).collect();
        for &e in step {
            reqs += 1;
            if resident.contains(&e) {
                hits += 1;
                continue;
            }
            if cache.len() == cap {
                let key = |c: &(u32, usize)| -> (usize, i64) {
                    if belady {
                        let next = steps[i + 1..]
                            .iter()
                            .flatten()
                            .position(|&x| x == c.0)
                            .unwrap_or(usize::MAX);
                        (usize::MAX - next, c.0 as i64)
                    } else {
                        (c.1, 0)
                    }
                };
                let victim = cache
                    .iter()
                    .filter(|c| !step.contains(&c.0))
                    .min_by_key(|c| key(c))
                    .unwrap()
                    .0;
                cache.retain(|c| c.0 != victim);
            }
            cache.push((e, 0));
        }
        for &e in step {
            clock += 1;
            cache.iter_mut().find(|c| c.0 == e).unwrap().1 = clock;
        }
    }
    hits as f64 / reqs as f64
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn stats_json_on_deepseek_matches_reference_hit_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = import_deepseek(tmp.path());
    let out = ok(moesim()
        .args(["trace", "stats", "--json", "--cache-sizes", "8,16"])
        .arg(&trace));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 26);
    let reference = reference_rates(&shared("deepseek-v2-lite"), 16);
    for l in layers {
        let id = l["layer"].as_u64().unwrap() as u32;
        assert_eq!(l["tokens"], 6610);
        for k in ["load_max_over_mean", "gini"] {
            assert!(l[k].as_f64().unwrap() > 0.0, "{k}");
        }
        let (lru, opt) = reference[&id];
        assert!(
            (l["lru_hit_rate"]["16"].as_f64().unwrap() - lru).abs() < 1e-12,
            "layer {id}"
        );
        assert!(
            (l["belady_hit_rate"]["16"].as_f64().unwrap() - opt).abs() < 1e-12,
            "layer {id}"
        );
        assert!(l["lru_hit_rate"]["8"].as_f64().unwrap() < lru);
    }
    let o = &v["overall"];
    let lru = o["lru_hit_rate"]["16"].as_f64().unwrap();
    let opt = o["belady_hit_rate"]["16"].as_f64().unwrap();
    assert!((0.44..0.49).contains(&lru), "{lru}");
    assert!((0.64..0.68).contains(&opt), "{opt}");
    for k in ["tokens", "load_max_over_mean", "gini"] {
        assert!(o[k].is_number(), "{k}");
    }
    // skewed, with locality in the range the README reports
    let loc = o["locality"].as_f64().unwrap();
    assert!((0.2..0.45).contains(&loc), "{loc}");
}

#[test]
fn cache_smaller_than_k_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = gen_deepseek_shaped(tmp.path());
    let out = moesim()
        .args(["trace", "stats", "--json", "--cache-sizes", "4"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("capacity 4") && err.contains("6 experts"),
        "{err}"
    );
}

#[test]
fn bad_input_fails_cleanly_and_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "iteration,layer,expert,tokens\n0,0,1,5\n0,0,2,x\n").unwrap();
    let out_path = tmp.path().join("out.moetrace");
    let out = moesim()
        .args(["trace", "import", "--from", "csv-counts"])
        .arg(&bad)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv") && err.contains("line 3") && err.contains("non-negative integer"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // unknown format name
    let out = moesim()
        .args(["trace", "import", "--from", "parquet"])
        .arg(&bad)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // a truncated native file
    std::fs::write(&out_path, b"MOETRACE\x01\x00\x00\x00").unwrap();
    let out = moesim()
        .args(["trace", "stats"])
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn jsonl_import_export_round_trip() {
    let dir = shared("mixtral-8x7b");
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.moetrace");
    let b = tmp.path().join("b.moetrace");
    let j = tmp.path().join("x.jsonl");
    ok(moesim()
        .args(["trace", "import", "--from", "jsonl-tokens"])
        .arg(dir.join("mixtral_gsm8k_2_routing.jsonl"))
        .arg(&a));
    ok(moesim()
        .args(["trace", "export", "--to", "jsonl-tokens"])
        .arg(&a)
        .arg(&j));
    ok(moesim()
        .args(["trace", "import", "--from", "jsonl-tokens"])
        .arg(&j)
        .arg(&b));
    let sa = ok(moesim().args(["trace", "stats", "--json"]).arg(&a));
    let sb = ok(moesim().args(["trace", "stats", "--json"]).arg(&b));
    assert_eq!(sa, sb);
    // near-uniform per layer (README: hottest expert about 1.1–1.3× the mean)
    let v: serde_json::Value = serde_json::from_slice(&sa).unwrap();
    let m = v["overall"]["load_max_over_mean"].as_f64().unwrap();
    assert!((1.05..1.6).contains(&m), "{m}");
}

#[test]
fn simulate_replays_a_trace_and_checks_its_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = gen_deepseek_shaped(tmp.path());
    let scenario = repo("scenarios/quickstart.toml");
    // OLMoE (16 layers, top-8) cannot replay a 26-layer, top-6 trace
    let out = moesim()
        .args([
            "simulate",
            "--quiet",
            "--json",
            "--set",
            "workload.iterations=2",
            "--trace",
        ])
        .arg(&trace)
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ds.moetrace") && err.contains("expected 16") && err.contains("found 26"),
        "{err}"
    );
    // with the model reshaped to DeepSeek-V2-Lite's routing it runs, and differs from the synthetic workload
    let sets = [
        "--set",
        "model.layers=26",
        "--set",
        "model.top_k=6",
        "--set",
        "workload.iterations=2",
    ];
    let replay = ok(moesim()
        .args([
            "simulate",
            "--quiet",
            "--json",
            "--no-timing",
            "--strategy",
            "ep16",
        ])
        .args(sets)
        .arg("--trace")
        .arg(&trace)
        .arg(&scenario));
    let synth = ok(moesim()
        .args([
            "simulate",
            "--quiet",
            "--json",
            "--no-timing",
            "--strategy",
            "ep16",
        ])
        .args(sets)
        .arg(&scenario));
    let r: serde_json::Value = serde_json::from_slice(&replay).unwrap();
    let s: serde_json::Value = serde_json::from_slice(&synth).unwrap();
    let t = |v: &serde_json::Value| v["results"][0]["step_time_ms"]["mean"].as_f64().unwrap();
    assert!(t(&r) > 0.0);
    assert_ne!(t(&r), t(&s));
}

#[test]
fn gen_fit_rescale_and_replay_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    // a synthetic trace with known parameters, shaped like OLMoE (16 layers, 64 experts, top-8)
    ok(moesim()
        .args([
            "trace",
            "gen",
            "--layers",
            "16",
            "--experts",
            "64",
            "--top-k",
            "8",
        ])
        .args([
            "--skew",
            "zipf:0.8",
            "--locality",
            "0.4",
            "--sequences",
            "8",
            "--tokens-per-sequence",
            "256",
            "--seed",
            "7",
        ])
        .arg(p("g.moetrace")));
    let fit = ok(moesim()
        .args(["trace", "fit", "--json"])
        .arg(p("g.moetrace"))
        .arg("--out")
        .arg(p("fit.json")));
    let f: serde_json::Value = serde_json::from_slice(&fit).unwrap();
    let s = f["model"]["skew"]["s"].as_f64().unwrap();
    assert!((s - 0.8).abs() < 0.15, "zipf s {s}");
    let loc = f["model"]["locality"].as_f64().unwrap();
    assert!((loc - 0.4).abs() < 0.06, "locality {loc}");
    for k in ["gini", "locality"] {
        let (t, a) = (
            f["target"][k].as_f64().unwrap(),
            f["achieved"][k].as_f64().unwrap(),
        );
        assert!((t - a).abs() < 0.03, "{k}: {t} vs {a}");
    }
    // rescale to 16 ranks × 3 iterations of counts; its skew stays close to the source's
    ok(moesim()
        .args([
            "trace",
            "rescale",
            "--ranks",
            "16",
            "--iterations",
            "3",
            "--tokens-per-rank",
            "512",
            "--fit",
        ])
        .arg(p("fit.json"))
        .arg(p("g.moetrace"))
        .arg(p("r.moetrace")));
    let st = |f: &str| -> serde_json::Value {
        serde_json::from_slice(&ok(moesim().args(["trace", "stats", "--json"]).arg(p(f)))).unwrap()
    };
    let (a, b) = (st("g.moetrace"), st("r.moetrace"));
    assert_eq!(b["kind"], "counts");
    assert_eq!(b["sequences"], 3);
    let (ga, gb) = (
        a["overall"]["gini"].as_f64().unwrap(),
        b["overall"]["gini"].as_f64().unwrap(),
    );
    assert!((ga - gb).abs() < 0.05, "gini {ga} vs {gb}");
    // both replay through the simulator on the OLMoE quickstart scenario (16 GPUs)
    for f in ["g.moetrace", "r.moetrace"] {
        let out = ok(moesim()
            .args([
                "simulate",
                "--quiet",
                "--json",
                "--strategy",
                "ep16",
                "--set",
                "workload.iterations=2",
                "--trace",
            ])
            .arg(p(f))
            .arg(repo("scenarios/quickstart.toml")));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["results"][0]["step_time_ms"]["mean"].as_f64().unwrap() > 0.0);
    }
    // a bad fit file is a clear error
    std::fs::write(p("bad.json"), "{\"model\": 3}").unwrap();
    let out = moesim()
        .args(["trace", "gen", "--fit"])
        .arg(p("bad.json"))
        .arg(p("x.moetrace"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.json"));
    assert!(!p("x.moetrace").exists());
}

#[test]
fn every_trace_subcommand_parses_its_help() {
    for c in ["import", "export", "stats", "fit", "rescale", "gen"] {
        ok(moesim().args(["trace", c, "--help"]));
    }
}

#[test]
fn scenario_workload_trace_is_relative_to_the_scenario_file() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("traces");
    std::fs::create_dir(&sub).unwrap();
    ok(moesim()
        .args([
            "trace",
            "gen",
            "--layers",
            "16",
            "--experts",
            "64",
            "--top-k",
            "8",
            "--skew",
            "zipf:1.5",
        ])
        .args(["--sequences", "4", "--tokens-per-sequence", "512"])
        .arg(sub.join("hot.moetrace")));
    let text = std::fs::read_to_string(repo("scenarios/quickstart.toml")).unwrap();
    let text = text.replace(
        "[workload]\n",
        "[workload]\ntrace = \"traces/hot.moetrace\"\n",
    );
    let scenario = tmp.path().join("s.toml");
    std::fs::write(&scenario, text).unwrap();
    let out = ok(moesim()
        .args([
            "simulate",
            "--quiet",
            "--strategy",
            "ep16",
            "--set",
            "workload.iterations=2",
        ])
        .arg(&scenario));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("hot.moetrace"), "{text}");
    // a missing trace is an error naming it
    std::fs::remove_file(sub.join("hot.moetrace")).unwrap();
    let out = moesim()
        .args(["simulate", "--quiet", "--set", "workload.iterations=2"])
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hot.moetrace"));
}

/// `trace gen` says what it wrote, and every flag of it has a help text.
#[test]
fn gen_reports_what_it_wrote_and_documents_its_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.moetrace");
    let stdout = ok(moesim()
        .args([
            "trace",
            "gen",
            "--layers",
            "2",
            "--experts",
            "8",
            "--top-k",
            "2",
        ])
        .args([
            "--sequences",
            "3",
            "--tokens-per-sequence",
            "10",
            "--skew",
            "zipf:1.2",
        ])
        .arg(&out));
    let text = String::from_utf8(stdout).unwrap();
    assert!(text.contains("g.moetrace"), "{text}");
    assert!(text.contains("3 sequences × 10 tokens"), "{text}");
    assert!(text.contains("zipf:1.2"), "{text}");
    assert!(out.is_file());
    let help = String::from_utf8(ok(moesim().args(["trace", "gen", "--help"]))).unwrap();
    // Every option line is followed by its description on the same line or the next.
    let lines: Vec<&str> = help.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.starts_with("--") {
            let described = t.split("  ").filter(|p| !p.trim().is_empty()).count() > 1
                || lines
                    .get(i + 1)
                    .is_some_and(|n| !n.trim().is_empty() && !n.trim_start().starts_with('-'));
            assert!(described, "no help text: {t}");
        }
    }
}
