//! `moesim check-published`: the validation suite runs, covers what issue 14 asks for, and its median
//! |error| stays within the bound the project claims in the README's Accuracy section.

mod common;

use assert_cmd::Command;
use std::path::Path;

fn run() -> String {
    let out = Command::cargo_bin("moesim")
        .unwrap()
        .arg("check-published")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    common::assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

/// The percentage in a line that ends in `… N.N %` or `… N.N % over K cases`.
fn percent(line: &str) -> f64 {
    let before = line.split(" %").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn the_suite_has_twenty_cases_from_five_sources_and_a_median_within_ten_percent() {
    let text = run();
    let median = text
        .lines()
        .find(|l| l.starts_with("median |error| over "))
        .unwrap_or_else(|| panic!("no median line in\n{text}"));
    let cases: usize = median
        .trim_start_matches("median |error| over ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cases >= 20, "{cases} cases");
    let sources: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains("median |error|"))
        .collect();
    assert!(sources.len() >= 5, "{sources:?}");
    // Every case printed a finite prediction.
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    assert!(percent(median) <= 10.0, "{text}");
}

#[test]
fn a_broken_case_names_its_file_and_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        r#"[source]
name = "x"
citation = "y"
hardware = "z"

[[case]]
name = "unknown preset"
published = 1.0
unit = "TFLOP/s"
conversion = "none"
setup = { kind = "gemm", cluster = "no-such-cluster", m = 1, n = 1, k = 1, dtype_bytes = 2 }
"#,
    )
    .unwrap();
    let out = Command::cargo_bin("moesim")
        .unwrap()
        .arg("check-published")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml")
            && err.contains("unknown preset")
            && err.contains("no-such-cluster"),
        "{err}"
    );
}
