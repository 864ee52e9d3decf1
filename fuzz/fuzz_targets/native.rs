//! The native `.moetrace` reader, whole, streamed (`trace stats --stream`, `trace fit`) and as far as a
//! replay reads it. Each input is read as it is, then with its header and record checksums recomputed, so
//! that mutations reach the decoders behind the checksums (a corrupted file with valid checksums).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moesim_traces::fit::{FitOptions, fit_native};
use moesim_traces::native::{NativeReader, read_native, read_native_prefix};
use moesim_traces::stats::StatsOptions;

fn fnv1a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in data {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `data` with the checksum after the header and after each record's payload recomputed, as far as the
/// lengths in it allow.
fn with_valid_checksums(data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    if d.len() < 16 {
        return d;
    }
    let hlen = u32::from_le_bytes(d[12..16].try_into().unwrap()) as usize;
    let Some(mut at) = 16usize.checked_add(hlen) else {
        return d;
    };
    if at + 4 > d.len() {
        return d;
    }
    let sum = fnv1a(&d[16..at]);
    d[at..at + 4].copy_from_slice(&sum.to_le_bytes());
    at += 4;
    while at + 9 <= d.len() {
        let plen = u64::from_le_bytes(d[at + 1..at + 9].try_into().unwrap());
        let Some(end) = usize::try_from(plen).ok().and_then(|p| (at + 9).checked_add(p)) else {
            break;
        };
        if end + 4 > d.len() {
            break;
        }
        let sum = fnv1a(&d[at + 9..end]);
        d[end..end + 4].copy_from_slice(&sum.to_le_bytes());
        at = end + 4;
    }
    d
}

fn read_every_way(p: &std::path::Path) {
    if let Ok(t) = read_native(p) {
        t.meta()
            .check()
            .expect("an accepted header is within the limits");
        let _ = moesim_traces::stats::trace_stats(&t, &StatsOptions::default());
    }
    if let Ok(mut r) = NativeReader::open(p) {
        let _ = moesim_traces::stats_stream::stream_stats(&mut r, &StatsOptions::default());
    }
    if let Ok(mut r) = NativeReader::open(p) {
        // A small search: the fit's cost is not the reader's.
        let opts = FitOptions {
            window: 16,
            fit_tokens: 256,
            ..FitOptions::default()
        };
        let _ = fit_native(&mut r, &opts);
    }
    if let (Ok(whole), Ok(prefix)) = (read_native(p), read_native_prefix(p, 7, 2)) {
        assert_eq!(prefix.complete, prefix.trace == whole, "complete iff whole");
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.moetrace");
    std::fs::write(&p, data).unwrap();
    read_every_way(&p);
    let fixed = with_valid_checksums(data);
    if fixed != data {
        std::fs::write(&p, &fixed).unwrap();
        read_every_way(&p);
    }
});
