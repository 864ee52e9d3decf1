//! The native `.moetrace` reader, whole and streamed (`trace stats --stream`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moesim_traces::native::{NativeReader, read_native};
use moesim_traces::stats::StatsOptions;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.moetrace");
    std::fs::write(&p, data).unwrap();
    if let Ok(t) = read_native(&p) {
        t.meta()
            .check()
            .expect("an accepted header is within the limits");
        let _ = moesim_traces::stats::trace_stats(&t, &StatsOptions::default());
    }
    if let Ok(mut r) = NativeReader::open(&p) {
        let _ = moesim_traces::stats_stream::stream_stats(&mut r, &StatsOptions::default());
    }
});
