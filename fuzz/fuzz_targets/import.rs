//! Every importer: the first byte picks the format (and whether `--incomplete keep`), the rest is the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moesim_traces::import::{Format, ImportOptions, Incomplete, import};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (format, name) = match pick % 5 {
        0 => (Format::JsonlTokens, "a.jsonl"),
        1 => (Format::CsvTokens, "a.csv"),
        2 => (Format::CsvCounts, "a.csv"),
        3 => (Format::LoadMatrix, "a.json"),
        _ => (Format::Npy, "a.npy"),
    };
    let opts = ImportOptions {
        incomplete: if pick & 0x80 != 0 {
            Incomplete::Keep
        } else {
            Incomplete::Drop
        },
        variable_k: pick & 0x40 != 0,
        ..ImportOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    if let Ok(t) = import(format, &p, &opts) {
        t.meta()
            .check()
            .expect("an imported trace is within the limits");
    }
});
