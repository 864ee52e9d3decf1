//! Tells the tests whether the real router traces are here. The folder is `$MOESIM_SHARED_TRACES` (relative
//! to the workspace root), default `../shared/traces` beside the workspace. When it is absent (and `CI` is
//! not set) this sets `cfg(moesim_real_traces_missing)`, and the tests that replay the real traces carry
//! `#[cfg_attr(moesim_real_traces_missing, ignore = "…")]`: `cargo test` then reports them as ignored, not
//! as passed. Under CI the cfg is never set, so missing traces fail those tests.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(moesim_real_traces_missing)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=MOESIM_SHARED_TRACES");
    println!("cargo::rerun-if-env-changed=CI");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.join("..");
    let dir = match std::env::var_os("MOESIM_SHARED_TRACES") {
        Some(p) => workspace.join(p),
        None => workspace.join("../shared/traces"),
    };
    if dir.is_dir() {
        // Re-checked when the folder changes or goes away.
        println!("cargo::rerun-if-changed={}", dir.display());
    } else if std::env::var_os("CI").is_none() {
        println!("cargo::rustc-cfg=moesim_real_traces_missing");
    }
}
