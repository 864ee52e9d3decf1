//! [`crate::stats::trace_stats`] of a native per-token trace streamed from its file, one sequence at a
//! time, in memory proportional to the expert count and the drift lags (and the largest sequence), not to
//! the file: per layer, expert loads, the last `max lag + 1` drift windows, the previous token's row and one
//! streaming cache per size.
//!
//! Every figure equals the in-memory one, except Belady's hit rate across sequences: it needs each
//! request's next use, the whole future, so it is computed per sequence (`cache_per_sequence`) or left out
//! with a note.

use crate::cache::{CacheCounts, CachePolicy, CacheSim, RequestSeq, replay_cache};
use crate::native::{NativeReader, Record};
use crate::stats::{
    LayerStats, StatsOptions, TraceStats, base_stats, default_sizes, overall, tv_distance,
};
use crate::trace::{Sequence, TraceKind};
use std::collections::{BTreeMap, VecDeque};

/// One layer's running figures.
struct LayerAcc {
    loads: Vec<u64>,
    tokens: u64,
    window: Vec<u64>,
    in_window: usize,
    /// The last `max lag` complete windows, oldest first.
    recent: VecDeque<Vec<u64>>,
    windows: usize,
    /// Per lag: sum of TV distances and their count.
    drift: Vec<(f64, u64)>,
    reused: u64,
    prev_total: u64,
    lru: Vec<CacheSim>,
    per_sequence: Vec<(CacheCounts, CacheCounts)>,
}

/// Statistics of the token trace `r` streams (see the module doc).
pub fn stream_stats<R: std::io::Read>(
    r: &mut NativeReader<R>,
    opts: &StatsOptions,
) -> Result<TraceStats, String> {
    let m = r.meta().clone();
    if m.kind != TraceKind::Tokens {
        return Err("streamed statistics need a per-token trace".into());
    }
    let sizes = if opts.cache_sizes.is_empty() {
        default_sizes(m.experts, m.top_k)
    } else {
        opts.cache_sizes.clone()
    };
    let w = opts.drift_window.max(1);
    let max_lag = opts.drift_lags.iter().copied().max().unwrap_or(0);
    let new_acc = || LayerAcc {
        loads: vec![0; m.experts],
        tokens: 0,
        window: vec![0; m.experts],
        in_window: 0,
        recent: VecDeque::new(),
        windows: 0,
        drift: vec![(0.0, 0); opts.drift_lags.len()],
        reused: 0,
        prev_total: 0,
        lru: sizes
            .iter()
            .map(|&c| CacheSim::new(CachePolicy::Lru, c, m.experts))
            .collect(),
        per_sequence: vec![Default::default(); sizes.len()],
    };
    let mut acc: Vec<LayerAcc> = (0..m.layers).map(|_| new_acc()).collect();
    let mut sequences = 0usize;
    while let Some(rec) = r.next_record().map_err(|e| e.to_string())? {
        let Record::Sequence(s) = rec else { continue };
        sequences += 1;
        for (l, a) in acc.iter_mut().enumerate() {
            layer_sequence(a, &s, l, w, max_lag, opts, &sizes)?;
        }
    }
    let mut notes = Vec::new();
    let layers: Vec<LayerStats> = acc
        .into_iter()
        .enumerate()
        .map(|(l, a)| {
            let drift_tv: BTreeMap<String, f64> = opts
                .drift_lags
                .iter()
                .zip(&a.drift)
                .filter(|&(&lag, _)| lag > 0 && lag < a.windows)
                .map(|(&lag, &(sum, _))| (lag.to_string(), sum / (a.windows - lag) as f64))
                .collect();
            let locality = (a.prev_total > 0).then(|| a.reused as f64 / a.prev_total as f64);
            let mut st = base_stats(
                m.layer_ids[l] as i64,
                a.tokens,
                &a.loads,
                drift_tv,
                locality,
                opts,
            );
            for (i, &c) in sizes.iter().enumerate() {
                let (lru, belady) = if opts.cache_per_sequence {
                    (a.per_sequence[i].0, Some(a.per_sequence[i].1))
                } else {
                    (a.lru[i].counts, None)
                };
                st.lru_hit_rate.insert(c.to_string(), lru.hit_rate());
                if let Some(b) = belady {
                    st.belady_hit_rate.insert(c.to_string(), b.hit_rate());
                }
            }
            st
        })
        .collect();
    if !opts.cache_per_sequence && !sizes.is_empty() {
        notes.push(
            "streamed: Belady hit rates across sequences need the whole trace in memory and are left out \
             (pass --cache-per-sequence for per-sequence Belady rates)"
                .to_string(),
        );
    }
    let overall = overall(&layers);
    Ok(TraceStats {
        kind: "tokens".into(),
        experts: m.experts,
        top_k: m.top_k,
        sequences,
        ep_ranks: opts.ep_ranks,
        drift_window: opts.drift_window,
        cache_sizes: sizes,
        cache_per_sequence: opts.cache_per_sequence,
        layers,
        overall,
        notes,
    })
}

/// Adds layer `l` of sequence `s` to its accumulator.
fn layer_sequence(
    a: &mut LayerAcc,
    s: &Sequence,
    l: usize,
    w: usize,
    max_lag: usize,
    opts: &StatsOptions,
    sizes: &[usize],
) -> Result<(), String> {
    for tok in 0..s.tokens {
        let row = s.row(l, tok);
        a.tokens += 1;
        for &e in row {
            a.loads[e as usize] += 1;
            a.window[e as usize] += 1;
        }
        a.in_window += 1;
        if a.in_window == w {
            let done = std::mem::replace(&mut a.window, vec![0; a.loads.len()]);
            for (j, &lag) in opts.drift_lags.iter().enumerate() {
                if lag > 0 && lag <= a.recent.len() {
                    let past = &a.recent[a.recent.len() - lag];
                    a.drift[j].0 += tv_distance(past, &done);
                    a.drift[j].1 += 1;
                }
            }
            a.recent.push_back(done);
            if a.recent.len() > max_lag {
                a.recent.pop_front();
            }
            a.windows += 1;
            a.in_window = 0;
        }
        if tok > 0 {
            let prev = s.row(l, tok - 1);
            a.prev_total += prev.len() as u64;
            a.reused += row.iter().filter(|e| prev.contains(e)).count() as u64;
        }
        if !opts.cache_per_sequence {
            for c in &mut a.lru {
                c.step(row).map_err(|e| e.to_string())?;
            }
        }
    }
    if opts.cache_per_sequence {
        let mut one = RequestSeq::new();
        for tok in 0..s.tokens {
            one.push(s.row(l, tok));
        }
        for (i, &c) in sizes.iter().enumerate() {
            let lru = replay_cache(CachePolicy::Lru, c, &one, |_, _, _, _| {})
                .map_err(|e| e.to_string())?;
            let belady = replay_cache(CachePolicy::Belady, c, &one, |_, _, _, _| {})
                .map_err(|e| e.to_string())?;
            a.per_sequence[i].0.add(lru);
            a.per_sequence[i].1.add(belady);
        }
    }
    Ok(())
}
