//! Marks builds without the real router traces (`$MOESIM_SHARED_TRACES`, else `../shared/traces` beside the
//! workspace), so that tests needing them are reported as ignored instead of passing silently. Under `CI`
//! the mark is never set: there, a missing traces folder fails the tests.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(moesim_no_shared_traces)");
    println!("cargo::rerun-if-env-changed=MOESIM_SHARED_TRACES");
    println!("cargo::rerun-if-env-changed=CI");
    let dir = std::env::var_os("MOESIM_SHARED_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"))
                .join("../../shared/traces")
        });
    println!("cargo::rerun-if-changed={}", dir.display());
    if !dir.is_dir() && std::env::var_os("CI").is_none() {
        println!("cargo::rustc-cfg=moesim_no_shared_traces");
    }
}
