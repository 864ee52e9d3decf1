//! Helpers shared by the binary's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

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
