//! Helpers shared by the traces crate's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/traces/<sub>` from the project root (or `$MOESIM_SHARED_TRACES/<sub>`), if present.
///
/// When absent: panics if `CI` is set (the real traces are required there), otherwise prints a notice and
/// returns `None` so the test can skip.
pub fn shared_traces(sub: &str) -> Option<PathBuf> {
    let base = std::env::var_os("MOESIM_SHARED_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"));
    let dir = base.join(sub);
    if dir.exists() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "the real router traces are required under CI but {} is missing",
            dir.display()
        );
    }
    eprintln!(
        "NOTICE: skipping: real router traces not found at {} (set MOESIM_SHARED_TRACES)",
        dir.display()
    );
    None
}

/// DeepSeek-V2-Lite prompt files in natural order (prompt_1, prompt_2, …, prompt_100).
pub fn deepseek_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .map(|p| {
            let n: u64 = p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_start_matches("prompt_")
                .trim_end_matches("_data.csv")
                .parse()
                .unwrap();
            (n, p)
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}
