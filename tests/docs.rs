//! The documentation is checked against the code: every TOML block in the README and `docs/` is a file in
//! the repository that parses and plans, and the figures the docs quote (the README's `plan` output, the
//! Hecate and offloading tables of docs/strategies.md) are what moesim prints today.
//!
//! When a figure changes on purpose, `MOESIM_UPDATE_DOCS=1 cargo test --test integration docs::` rewrites the docs
//! instead of failing; review the diff. (The README's Accuracy table is `tests/check_published.rs`'s.)

use crate::common;

use crate::common::{check_or_update, repo};
use assert_cmd::Command;
use moesim_reports::inputs::Inputs;
use moesim_reports::numbers::rate;
use moesim_sim::runner::RunOptions;
use std::path::PathBuf;

fn docs() -> Vec<PathBuf> {
    let mut files = vec![repo("README.md")];
    let mut d: Vec<PathBuf> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    d.sort();
    files.extend(d);
    files
}

/// The fenced blocks of `lang` in `text`: (line of the opening fence, body).
fn blocks(text: &str, lang: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start() == format!("```{lang}") => {
                open = Some((i + 1, String::new()))
            }
            None => {}
            Some(_) if line.trim_start() == "```" => out.push(open.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

#[test]
fn every_toml_block_is_a_repository_file_that_plans() {
    let mut checked = 0;
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, body) in blocks(&text, "toml") {
            let place = format!("{}:{line}", doc.display());
            let first = body.lines().next().unwrap_or("");
            let name = first
                .strip_prefix("# ")
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_else(|| {
                    panic!("{place}: a TOML block must open with `# path/of/the/file.toml`")
                });
            let file = repo(name);
            let on_disk =
                std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{place}: {name}: {e}"));
            assert_eq!(body, on_disk, "{place}: the block differs from {name}");
            if name.ends_with(".sweep.toml") {
                let spec = moesim_reports::sweep::parse_sweep(name, &on_disk).unwrap();
                let base = file.parent().unwrap();
                for p in spec.points().iter().take(1) {
                    moesim_reports::sweep::run_point(
                        p,
                        &base.join(&p.scenario),
                        &std::fs::read_to_string(base.join(&p.scenario)).unwrap(),
                        None,
                    )
                    .unwrap_or_else(|e| panic!("{place}: point {}: {e}", p.index));
                }
            } else {
                let inputs = Inputs::read(&file, vec!["workload.iterations=2".into()], None)
                    .unwrap_or_else(|e| panic!("{place}: {e:?}"));
                let report = inputs
                    .simulate(RunOptions {
                        timing: false,
                        progress: None,
                    })
                    .unwrap();
                assert!(
                    moesim_sim::plan::choose(&report, &inputs.scenario).is_some(),
                    "{place}: no strategy of {name} can be chosen (all out of memory or dropping)"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked} blocks");
}

#[test]
fn the_readme_shows_what_plan_prints_today() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("moesim")
        .unwrap()
        .args([
            "plan",
            "-q",
            "--no-timing",
            "scenarios/quickstart.toml",
            "--out",
        ])
        .arg(dir.path())
        .current_dir(repo("."))
        .output()
        .unwrap();
    common::assert_ok(&out);
    let stdout = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&dir.path().display().to_string(), "out");
    check_or_update(
        &repo("README.md"),
        "## What `plan` prints\n\n```\n",
        "```",
        &stdout,
    );
}

#[test]
fn the_offloading_table_is_what_the_offloading_scenario_gives() {
    let inputs = Inputs::read(&repo("scenarios/offload-mixtral.toml"), vec![], None).unwrap();
    let report = inputs
        .simulate(RunOptions {
            timing: false,
            progress: None,
        })
        .unwrap();
    let mut table = String::from(
        "| strategy | hit rate | TPOT ms | tokens/s | GB fetched per token | memory GiB |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for r in &report.results {
        let o = r.offload.as_ref().unwrap();
        table.push_str(&format!(
            "| {} | {:.3} | {:.1} | {} | {:.1} | {:.1} |\n",
            r.strategy,
            o.hit_rate,
            o.tpot_ms,
            rate(r.tokens_per_s),
            o.bytes_fetched as f64 / o.steps as f64 / 1e9,
            r.memory_peak_gib
        ));
    }
    check_or_update(
        &repo("docs/strategies.md"),
        "<!-- tests/docs.rs: offload table -->\n",
        "<!-- end -->",
        &table,
    );
}

#[test]
fn the_hecate_table_is_what_the_hecate_scenario_gives() {
    let options = || RunOptions {
        timing: false,
        progress: None,
    };
    let mut table = String::from(
        "| routing | strategy | step ms | speedup vs EP | MoE blocks vs EP | all-to-alls vs EP | memory GiB | spAG GB per iteration |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (routing, overrides) in [
        ("log-normal σ = 0.5", vec![]),
        (
            "uniform",
            vec!["workload.skew={distribution=\"uniform\"}".to_string()],
        ),
        (
            "Zipf s = 1.2",
            vec!["workload.skew={distribution=\"zipf\",s=1.2}".to_string()],
        ),
    ] {
        let inputs =
            Inputs::read(&repo("scenarios/hecate-gpt-moe-s.toml"), overrides, None).unwrap();
        let report = inputs.simulate(options()).unwrap();
        let phases = |r: &moesim_sim::result::StrategyResult, names: &[&str]| -> f64 {
            names
                .iter()
                .map(|n| r.breakdown_ms.get(*n).copied().unwrap_or(0.0))
                .sum()
        };
        let moe = ["dispatch", "expert_compute", "combine"];
        let a2a = ["dispatch", "combine"];
        let ep = &report.results[0];
        for r in &report.results {
            let spag = r.fssdp.as_ref().map_or("–".to_string(), |f| {
                format!("{:.1}", f.spag_bytes as f64 / 1e9)
            });
            table.push_str(&format!(
                "| {routing} | {} | {:.1} | {:.2} | {:.2} | {:.1} | {:.1} | {spag} |\n",
                r.strategy,
                r.step_time_ms.mean,
                ep.step_time_ms.mean / r.step_time_ms.mean,
                phases(ep, &moe) / phases(r, &moe),
                phases(ep, &a2a) / phases(r, &a2a),
                r.memory_peak_gib,
            ));
        }
    }
    check_or_update(
        &repo("docs/strategies.md"),
        "<!-- tests/docs.rs: hecate table -->\n",
        "<!-- end -->",
        &table,
    );
}
