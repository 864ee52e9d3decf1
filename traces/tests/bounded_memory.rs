//! Issue 18, item 5: `trace fit`, `trace stats --stream` and trace replay hold a window of the trace, not
//! the file. A counting allocator records the peak of live heap bytes while each reads a trace of 64 and of
//! 1024 sequences: the peak must not grow with the file (and stays far below the larger file's size), while
//! reading the larger file whole does grow it — so the measure can tell the two apart.
//!
//! One test in this binary: the allocator is global, and tests running side by side would mix their peaks.

use moesim_traces::fit::{FitOptions, fit_native};
use moesim_traces::native::{NativeReader, NativeWriter, read_native, read_native_prefix};
use moesim_traces::stats::StatsOptions;
use moesim_traces::stats_stream::stream_stats;
use moesim_traces::tokengen::{Drift, TokenModel};
use moesim_traces::{RoutingShape, RoutingSource, Skew, TraceRouting};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap bytes allocated while `f` runs, above what was live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    drop(out);
    peak
}

const LAYERS: usize = 4;
const TOKENS_PER_SEQUENCE: usize = 256;

fn model() -> TokenModel {
    TokenModel {
        layers: LAYERS,
        experts: 32,
        top_k: 4,
        skew: Skew::Zipf { s: 0.9 },
        shuffle_per_layer: true,
        locality: 0.3,
        layer_correlation: 0.0,
        null_expert_prob: 0.0,
        drift: Drift {
            block_tokens: 64,
            sigma: 0.3,
            ..Drift::default()
        },
        seed: 5,
    }
}

/// Writes `sequences` generated sequences to `path`, one at a time.
fn write(path: &Path, sequences: usize) -> u64 {
    let m = model();
    let mut w = NativeWriter::create(path, &m.meta()).unwrap();
    m.generate_with(sequences, TOKENS_PER_SEQUENCE, |s| {
        w.write_sequence(&s).unwrap()
    })
    .unwrap();
    w.finish().unwrap();
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn fit_stats_and_replay_hold_a_window_not_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = (
        dir.path().join("small.moetrace"),
        dir.path().join("big.moetrace"),
    );
    write(&small, 64);
    let big_bytes = write(&big, 1024);

    // Reading the file whole grows with it: the measure sees the difference.
    let whole_small = peak_during(|| read_native(&small).unwrap());
    let whole_big = peak_during(|| read_native(&big).unwrap());
    assert!(whole_big > 3 * whole_small, "{whole_small} → {whole_big}");

    let opts = FitOptions {
        window: 64,
        fit_tokens: 2048,
        ..FitOptions::default()
    };
    let fit = |p: &Path| fit_native(&mut NativeReader::open(p).unwrap(), &opts).unwrap();
    let (fit_small, fit_big) = (peak_during(|| fit(&small)), peak_during(|| fit(&big)));
    let stats = |p: &Path| {
        stream_stats(
            &mut NativeReader::open(p).unwrap(),
            &StatsOptions::default(),
        )
        .unwrap()
    };
    let (stats_small, stats_big) = (peak_during(|| stats(&small)), peak_during(|| stats(&big)));
    // A replay of 8 iterations × 2 ranks × 64 tokens uses 1024 tokens: 4 sequences of either file.
    let shape = RoutingShape {
        moe_layers: LAYERS,
        experts: 32,
        top_k: 4,
        ranks: 2,
        micro_batches: 1,
        tokens_per_rank: 64,
    };
    let replay = |p: &Path| {
        let r = TraceRouting::open(p, shape, 8).unwrap();
        (r.iteration(7), r.describe())
    };
    let (replay_small, replay_big) = (peak_during(|| replay(&small)), peak_during(|| replay(&big)));
    for (what, s, b) in [
        ("fit", fit_small, fit_big),
        ("stats", stats_small, stats_big),
        ("replay", replay_small, replay_big),
    ] {
        // The same peak (a few KiB of slack for growth policies), whatever the length of the file.
        assert!(b <= s + s / 4 + 16_384, "{what}: {s} → {b} bytes");
        assert!(
            (b as u64) < big_bytes / 3,
            "{what}: {b} bytes for a {big_bytes}-byte file"
        );
        assert!(
            b < whole_big / 8,
            "{what}: {b} bytes, whole file {whole_big}"
        );
    }
    assert!(replay(&big).1.contains("the start of a longer file"));
    assert_eq!(read_native_prefix(&big, 1024, 0).unwrap().total, 1024 * 256);
}
