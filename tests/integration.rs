//! The binary's integration tests, one module per file beside this one, built as one test binary (one link
//! of the whole program instead of one per file). `autotests = false` in `Cargo.toml` makes this the only
//! test target, so a new file here must be declared below; [`every_test_file_is_built`] fails until it is,
//! in this crate and in every workspace crate that builds its tests the same way.

mod common;

mod calibrate_cli;
mod check_published;
mod cli;
mod docs;
mod forecast_cli;
mod offload_cli;
mod place_cli;
mod report_cli;
mod report_serving;
mod robustness_cli;
mod search_cli;
mod serving_cli;
mod trace_cli;
mod write_safety_cli;

/// The crates whose `tests/*.rs` are modules of declared test targets rather than targets of their own.
const ONE_BINARY_CRATES: [&str; 3] = [".", "sim", "traces"];

/// A test file that is neither a declared test target nor a module of one would never be compiled, and its
/// tests would silently not run.
#[test]
fn every_test_file_is_built() {
    let mut missing = Vec::new();
    for krate in ONE_BINARY_CRATES {
        let root = common::repo(krate);
        let manifest: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
            .expect("Cargo.toml")
            .parse()
            .expect("Cargo.toml parses");
        assert_eq!(
            manifest["package"]
                .get("autotests")
                .and_then(|v| v.as_bool()),
            Some(false),
            "{krate}/Cargo.toml: expected `autotests = false`"
        );
        let targets: Vec<String> = manifest["test"]
            .as_array()
            .expect("[[test]] targets")
            .iter()
            .map(|t| t["path"].as_str().expect("a [[test]] path").to_string())
            .collect();
        let declared: String = targets
            .iter()
            .map(|p| std::fs::read_to_string(root.join(p)).expect("a [[test]] target"))
            .collect();
        for entry in std::fs::read_dir(root.join("tests")).expect("tests/") {
            let path = entry.expect("a tests/ entry").path();
            let (Some(stem), Some(name)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.file_name().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs")
                && !targets.iter().any(|t| *t == format!("tests/{name}"))
                && !declared.lines().any(|l| l == format!("mod {stem};"))
            {
                missing.push(format!("{krate}/tests/{name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "test files neither a [[test]] target nor a `mod` of one (never built, never run): {missing:?}"
    );
}
