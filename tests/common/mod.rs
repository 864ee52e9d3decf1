//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The root of the real router traces: `$MOESIM_SHARED_TRACES` (relative to the workspace root), default
/// `../shared/traces` beside the workspace.
pub fn real_traces_root() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".");
    match std::env::var_os("MOESIM_SHARED_TRACES") {
        Some(p) => workspace.join(p),
        None => workspace.join("../shared/traces"),
    }
}

/// The real traces' folder `sub`. The tests that call this are marked
/// `#[cfg_attr(moesim_real_traces_missing, ignore = "…")]`, so without the traces they are reported as
/// ignored; reaching here without them (under CI, or after the traces were removed) fails the test.
pub fn shared_traces(sub: &str) -> PathBuf {
    let dir = real_traces_root().join(sub);
    assert!(
        dir.exists(),
        "the real router traces are missing at {} (required under CI; elsewhere rebuild so that these tests \
         are reported as ignored, e.g. `touch build.rs`)",
        dir.display()
    );
    dir
}

/// Asserts that a command of the binary succeeded, showing its standard error when it did not.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `path` in the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Checks that the text of `file` between `begin` and the next `end` is `expected`; with
/// MOESIM_UPDATE_DOCS set, rewrites it instead.
pub fn check_or_update(file: &Path, begin: &str, end: &str, expected: &str) {
    // Tests of several files run in one binary and may rewrite the same document: one at a time.
    static REWRITE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = REWRITE.lock().unwrap_or_else(|e| e.into_inner());
    let text = std::fs::read_to_string(file).unwrap();
    let body = text
        .find(begin)
        .unwrap_or_else(|| panic!("{}: no `{begin}`", file.display()))
        + begin.len();
    let close = body
        + text[body..]
            .find(end)
            .unwrap_or_else(|| panic!("{}: no `{end}` after `{begin}`", file.display()));
    if text[body..close] == *expected {
        return;
    }
    if std::env::var_os("MOESIM_UPDATE_DOCS").is_some() {
        let new = format!("{}{expected}{}", &text[..body], &text[close..]);
        std::fs::write(file, new).unwrap();
        return;
    }
    panic!(
        "{} after `{begin}` is stale; it should read:\n{expected}\n(MOESIM_UPDATE_DOCS=1 cargo test --workspace rewrites it)",
        file.display()
    );
}
