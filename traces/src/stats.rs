//! Trace statistics: skew (max/mean, Gini, CV, zero-load experts), per-rank imbalance under contiguous
//! expert parallelism, drift, token locality, and per-layer cache hit rates (LRU, Belady).
//!
//! Per layer; `overall` is the token-weighted mean of the per-layer figures, except hit rates, which are
//! total hits / total requests.

use crate::cache::{CacheError, CachePolicy, replay_cache};
use crate::trace::{TokenTrace, Trace};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsOptions {
    /// Cache capacities (experts per layer) for the hit rates. Empty: `k`, `E/8`, `E/4`, `E/2` (those ≥ k).
    pub cache_sizes: Vec<usize>,
    /// Ranks for the contiguous-EP imbalance (experts split into this many equal contiguous groups).
    pub ep_ranks: usize,
    /// Tokens per window for drift.
    pub drift_window: usize,
    /// Window lags at which drift is measured.
    pub drift_lags: Vec<usize>,
    /// Empty the caches at the start of every sequence (default: one cache carried across sequences).
    #[serde(default)]
    pub cache_per_sequence: bool,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            cache_sizes: Vec::new(),
            ep_ranks: 8,
            drift_window: 256,
            drift_lags: vec![1, 4, 16],
            cache_per_sequence: false,
        }
    }
}

/// Statistics of one layer (or, in `overall`, of all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStats {
    /// Layer number as the trace names it (`-1` in `overall`).
    pub layer: i64,
    pub tokens: u64,
    pub assignments: u64,
    pub load_max_over_mean: f64,
    pub gini: f64,
    pub cv: f64,
    pub zero_load_experts: f64,
    /// Max/mean of per-rank loads with experts placed contiguously on `ep_ranks` ranks.
    pub rank_max_over_mean: f64,
    /// Mean total-variation distance between expert shares of token windows `lag` windows apart.
    pub drift_tv: BTreeMap<String, f64>,
    /// Fraction of the previous token's experts the next token reuses (within a sequence); null for counts.
    pub locality: Option<f64>,
    pub lru_hit_rate: BTreeMap<String, f64>,
    pub belady_hit_rate: BTreeMap<String, f64>,
}

/// The statistics of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceStats {
    pub kind: String,
    pub experts: usize,
    pub top_k: usize,
    pub sequences: usize,
    pub ep_ranks: usize,
    pub drift_window: usize,
    pub cache_sizes: Vec<usize>,
    /// Whether caches were emptied at the start of every sequence.
    pub cache_per_sequence: bool,
    pub layers: Vec<LayerStats>,
    pub overall: LayerStats,
    /// What a reader should know (figures left out of a streamed computation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Skew of a load vector: (max/mean, Gini, CV, zero-load count).
pub fn skew(loads: &[u64]) -> (f64, f64, f64, usize) {
    let n = loads.len();
    let total: u64 = loads.iter().sum();
    if n == 0 || total == 0 {
        return (0.0, 0.0, 0.0, n);
    }
    let mean = total as f64 / n as f64;
    let max = *loads.iter().max().expect("non-empty") as f64;
    let var = loads
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let mut s: Vec<u64> = loads.to_vec();
    s.sort_unstable();
    let weighted: f64 = s
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as f64 + 1.0) * x as f64)
        .sum();
    let gini = 2.0 * weighted / (n as f64 * total as f64) - (n as f64 + 1.0) / n as f64;
    let zeros = loads.iter().filter(|&&x| x == 0).count();
    (max / mean, gini, var.sqrt() / mean, zeros)
}

/// Max/mean of rank loads when `experts` are split contiguously over `ranks`.
pub fn rank_imbalance(loads: &[u64], ranks: usize) -> f64 {
    let ranks = ranks.clamp(1, loads.len().max(1));
    let per = loads.len().div_ceil(ranks);
    let r: Vec<u64> = loads.chunks(per.max(1)).map(|c| c.iter().sum()).collect();
    let total: u64 = r.iter().sum();
    if total == 0 {
        return 0.0;
    }
    *r.iter().max().expect("non-empty") as f64 / (total as f64 / ranks as f64)
}

/// Total-variation distance between two count vectors' shares.
pub fn tv_distance(a: &[u64], b: &[u64]) -> f64 {
    let (sa, sb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    if sa == 0.0 || sb == 0.0 {
        return 0.0;
    }
    0.5 * a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 / sa - y as f64 / sb).abs())
        .sum::<f64>()
}

/// Mean TV distance between windows `lag` apart, over a sequence of per-window load vectors.
pub fn drift(windows: &[Vec<u64>], lags: &[usize]) -> BTreeMap<String, f64> {
    lags.iter()
        .filter(|&&lag| lag > 0 && lag < windows.len())
        .map(|&lag| {
            let d: f64 = (lag..windows.len())
                .map(|i| tv_distance(&windows[i - lag], &windows[i]))
                .sum::<f64>()
                / (windows.len() - lag) as f64;
            (lag.to_string(), d)
        })
        .collect()
}

pub(crate) fn default_sizes(experts: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [k, experts / 8, experts / 4, experts / 2]
        .into_iter()
        .filter(|&c| c >= k.max(1) && c <= experts)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Computes the statistics of a trace.
pub fn trace_stats(trace: &Trace, opts: &StatsOptions) -> Result<TraceStats, CacheError> {
    let m = trace.meta();
    let sizes = if matches!(trace, Trace::Counts(_)) {
        Vec::new() // no per-token order: no cache replay
    } else if opts.cache_sizes.is_empty() {
        default_sizes(m.experts, m.top_k)
    } else {
        opts.cache_sizes.clone()
    };
    let layers: Vec<LayerStats> = match trace {
        Trace::Tokens(t) => (0..m.layers)
            .into_par_iter()
            .map(|l| token_layer_stats(t, l, &sizes, opts))
            .collect::<Result<_, _>>()?,
        Trace::Counts(c) => {
            let mm = &c.meta;
            (0..mm.layers)
                .map(|l| {
                    let windows: Vec<Vec<u64>> = (0..c.iterations)
                        .map(|it| {
                            let mut w = vec![0u64; mm.experts];
                            for r in 0..mm.ranks {
                                let o = c.index(it, l, r, 0);
                                for (x, &y) in w.iter_mut().zip(&c.counts[o..o + mm.experts]) {
                                    *x += y;
                                }
                            }
                            w
                        })
                        .collect();
                    let mut loads = vec![0u64; mm.experts];
                    for w in &windows {
                        for (x, &y) in loads.iter_mut().zip(w) {
                            *x += y;
                        }
                    }
                    let assignments: u64 = loads.iter().sum();
                    base_stats(
                        mm.layer_ids[l] as i64,
                        assignments / mm.top_k.max(1) as u64,
                        &loads,
                        drift(&windows, &opts.drift_lags),
                        None,
                        opts,
                    )
                })
                .collect()
        }
    };
    let overall = overall(&layers);
    Ok(TraceStats {
        kind: format!("{:?}", m.kind).to_lowercase(),
        experts: m.experts,
        top_k: m.top_k,
        sequences: match trace {
            Trace::Tokens(t) => t.sequences.len(),
            Trace::Counts(c) => c.iterations,
        },
        ep_ranks: opts.ep_ranks,
        drift_window: opts.drift_window,
        cache_sizes: sizes,
        cache_per_sequence: opts.cache_per_sequence,
        layers,
        overall,
        notes: Vec::new(),
    })
}

pub(crate) fn base_stats(
    layer: i64,
    tokens: u64,
    loads: &[u64],
    drift_tv: BTreeMap<String, f64>,
    locality: Option<f64>,
    opts: &StatsOptions,
) -> LayerStats {
    let (mom, gini, cv, zeros) = skew(loads);
    LayerStats {
        layer,
        tokens,
        assignments: loads.iter().sum(),
        load_max_over_mean: mom,
        gini,
        cv,
        zero_load_experts: zeros as f64,
        rank_max_over_mean: rank_imbalance(loads, opts.ep_ranks),
        drift_tv,
        locality,
        lru_hit_rate: BTreeMap::new(),
        belady_hit_rate: BTreeMap::new(),
    }
}

/// Hits and requests per cache size, for the overall aggregate (stored as `size → (hits, requests)`).
fn token_layer_stats(
    t: &TokenTrace,
    l: usize,
    sizes: &[usize],
    opts: &StatsOptions,
) -> Result<LayerStats, CacheError> {
    let m = &t.meta;
    let seq = t.layer_requests(l);
    let mut loads = vec![0u64; m.experts];
    for &e in &seq.experts {
        loads[e as usize] += 1;
    }
    // drift windows over the concatenated token stream
    let w = opts.drift_window.max(1);
    let windows: Vec<Vec<u64>> = (0..seq.steps() / w)
        .map(|i| {
            let mut v = vec![0u64; m.experts];
            for &e in &seq.experts[seq.offsets[i * w]..seq.offsets[(i + 1) * w]] {
                v[e as usize] += 1;
            }
            v
        })
        .collect();
    // locality within sequences
    let (mut reused, mut prev_total) = (0u64, 0u64);
    for s in &t.sequences {
        for tok in 1..s.tokens {
            let (a, b) = (s.row(l, tok - 1), s.row(l, tok));
            prev_total += a.len() as u64;
            reused += b.iter().filter(|e| a.contains(e)).count() as u64;
        }
    }
    let locality = (prev_total > 0).then(|| reused as f64 / prev_total as f64);
    let mut st = base_stats(
        m.layer_ids[l] as i64,
        seq.steps() as u64,
        &loads,
        drift(&windows, &opts.drift_lags),
        locality,
        opts,
    );
    for &c in sizes {
        for (p, map) in [
            (CachePolicy::Lru, &mut st.lru_hit_rate),
            (CachePolicy::Belady, &mut st.belady_hit_rate),
        ] {
            let counts = if opts.cache_per_sequence {
                let mut total = crate::CacheCounts::default();
                for s in &t.sequences {
                    let mut one = crate::RequestSeq::new();
                    for tok in 0..s.tokens {
                        one.push(s.row(l, tok));
                    }
                    total.add(replay_cache(p, c, &one, |_, _, _, _| {})?);
                }
                total
            } else {
                replay_cache(p, c, &seq, |_, _, _, _| {})?
            };
            map.insert(c.to_string(), counts.hit_rate());
        }
    }
    Ok(st)
}

pub(crate) fn overall(layers: &[LayerStats]) -> LayerStats {
    let tw: f64 = layers
        .iter()
        .map(|l| l.tokens as f64)
        .sum::<f64>()
        .max(1e-300);
    let wmean = |f: &dyn Fn(&LayerStats) -> f64| {
        layers.iter().map(|l| l.tokens as f64 * f(l)).sum::<f64>() / tw
    };
    let map_mean = |f: &dyn Fn(&LayerStats) -> &BTreeMap<String, f64>,
                    weight: &dyn Fn(&LayerStats) -> f64| {
        let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for l in layers {
            for (k, v) in f(l) {
                let e = out.entry(k.clone()).or_default();
                e.0 += weight(l) * v;
                e.1 += weight(l);
            }
        }
        out.into_iter()
            .map(|(k, (s, w))| (k, if w > 0.0 { s / w } else { 0.0 }))
            .collect::<BTreeMap<_, _>>()
    };
    let locs: Vec<&LayerStats> = layers.iter().filter(|l| l.locality.is_some()).collect();
    let locality = (!locs.is_empty()).then(|| {
        let w: f64 = locs
            .iter()
            .map(|l| l.tokens as f64)
            .sum::<f64>()
            .max(1e-300);
        locs.iter()
            .map(|l| l.tokens as f64 * l.locality.unwrap_or(0.0))
            .sum::<f64>()
            / w
    });
    LayerStats {
        layer: -1,
        tokens: layers.iter().map(|l| l.tokens).max().unwrap_or(0),
        assignments: layers.iter().map(|l| l.assignments).sum(),
        load_max_over_mean: wmean(&|l| l.load_max_over_mean),
        gini: wmean(&|l| l.gini),
        cv: wmean(&|l| l.cv),
        zero_load_experts: wmean(&|l| l.zero_load_experts),
        rank_max_over_mean: wmean(&|l| l.rank_max_over_mean),
        drift_tv: map_mean(&|l| &l.drift_tv, &|l| l.tokens as f64),
        locality,
        // requests-weighted = total hits / total requests
        lru_hit_rate: map_mean(&|l| &l.lru_hit_rate, &|l| l.assignments as f64),
        belady_hit_rate: map_mean(&|l| &l.belady_hit_rate, &|l| l.assignments as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_known_answers() {
        let (mom, gini, cv, z) = skew(&[1, 1, 1, 1]);
        assert_eq!((mom, gini, cv, z), (1.0, 0.0, 0.0, 0));
        let (mom, gini, _, z) = skew(&[0, 0, 0, 4]);
        assert!((mom - 4.0).abs() < 1e-12);
        assert!((gini - 0.75).abs() < 1e-12);
        assert_eq!(z, 3);
    }

    #[test]
    fn rank_imbalance_contiguous() {
        // 4 experts on 2 ranks: {0,1} = 3, {2,3} = 1 → max 3 / mean 2
        assert!((rank_imbalance(&[2, 1, 1, 0], 2) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn tv_and_drift() {
        assert!((tv_distance(&[1, 0], &[0, 1]) - 1.0).abs() < 1e-12);
        assert_eq!(tv_distance(&[2, 2], &[1, 1]), 0.0);
        let d = drift(&[vec![1, 0], vec![0, 1], vec![1, 0]], &[1, 2]);
        assert_eq!(d["1"], 1.0);
        assert_eq!(d["2"], 0.0);
    }
}
