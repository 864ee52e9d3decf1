//! The traces crate's integration tests, one module per file beside this one, built as one test binary.
//! `bounded_memory.rs` stays a target of its own: it installs a counting global allocator, which would
//! count every other test's allocations too. `autotests = false` in `traces/Cargo.toml`; the root crate's
//! `every_test_file_is_built` fails when a file here is not declared.

mod common;

mod cache_reference;
mod fit_real;
mod import_real;
mod native_props;
mod reader_props;
mod replay;
mod stats_stream;
