//! Cache replay against an independent, deliberately naive reference implementation, on the real
//! DeepSeek-V2-Lite traces and on random request sequences.

use crate::common;

use moesim_traces::cache::{CachePolicy, RequestSeq, replay_cache};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Straightforward reference: a Vec of resident experts, linear scans, and for Belady a forward search
/// through the remaining steps. Ties: LRU/LFU by oldest touch, Belady by lowest id among never-again.
fn reference(policy: &str, capacity: usize, steps: &[Vec<u32>]) -> (u64, u64) {
    let mut cache: Vec<u32> = Vec::new();
    let mut last_touch: BTreeMap<u32, u64> = BTreeMap::new();
    let mut count: BTreeMap<u32, u64> = BTreeMap::new();
    let mut t = 0u64;
    let (mut hits, mut reqs) = (0u64, 0u64);
    for (i, step) in steps.iter().enumerate() {
        let before = cache.clone();
        for &e in step {
            reqs += 1;
            if before.contains(&e) {
                hits += 1;
                continue;
            }
            if cache.len() == capacity {
                let candidates: Vec<u32> = cache
                    .iter()
                    .copied()
                    .filter(|c| !step.contains(c))
                    .collect();
                let victim = match policy {
                    "lru" => *candidates.iter().min_by_key(|c| last_touch[c]).unwrap(),
                    "lfu" => *candidates
                        .iter()
                        .min_by_key(|c| (count[c], last_touch[c]))
                        .unwrap(),
                    "belady" => {
                        // distance in flattened request positions to the next request of c
                        let pos_in_step = step.len();
                        let next = |c: u32| -> u64 {
                            let mut d = pos_in_step as u64;
                            for later in &steps[i + 1..] {
                                for &x in later {
                                    if x == c {
                                        return d;
                                    }
                                    d += 1;
                                }
                            }
                            u64::MAX
                        };
                        let far = candidates.iter().map(|&c| next(c)).max().unwrap();
                        *candidates
                            .iter()
                            .filter(|&&c| next(c) == far)
                            .min()
                            .unwrap()
                    }
                    _ => unreachable!(),
                };
                cache.retain(|&c| c != victim);
            }
            cache.push(e);
        }
        for &e in step {
            t += 1;
            last_touch.insert(e, t);
            *count.entry(e).or_default() += 1;
        }
    }
    (hits, reqs)
}

fn to_seq(steps: &[Vec<u32>]) -> RequestSeq {
    let mut s = RequestSeq::new();
    for st in steps {
        s.push(st);
    }
    s
}

fn run(policy: CachePolicy, cap: usize, seq: &RequestSeq) -> (u64, u64) {
    let c = replay_cache(policy, cap, seq, |_, _, _, _| {}).unwrap();
    (c.hits, c.requests)
}

/// Per layer (1..=26), the steps of all 100 prompts in natural order, tokens in file order.
fn deepseek_layers() -> BTreeMap<u32, Vec<Vec<u32>>> {
    let dir = common::shared_traces("deepseek-v2-lite");
    let mut layers: BTreeMap<u32, Vec<Vec<u32>>> = BTreeMap::new();
    for f in common::deepseek_files(&dir) {
        let mut rd = csv::Reader::from_path(&f).unwrap();
        for rec in rd.records() {
            let rec = rec.unwrap();
            let layer: u32 = rec[0].parse().unwrap();
            let experts: Vec<u32> = rec[3]
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|x| x.trim().parse().unwrap())
                .collect();
            layers.entry(layer).or_default().push(experts);
        }
    }
    layers
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn deepseek_lru_and_belady_match_reference_and_published_range() {
    let layers = deepseek_layers();
    assert_eq!(layers.len(), 26);
    let mut tot = BTreeMap::<&str, (u64, u64)>::new();
    for (layer, steps) in &layers {
        let seq = to_seq(steps);
        for (name, p) in [
            ("lru", CachePolicy::Lru),
            ("lfu", CachePolicy::Lfu),
            ("belady", CachePolicy::Belady),
        ] {
            let got = run(p, 16, &seq);
            let want = reference(name, 16, steps);
            assert_eq!(got, want, "layer {layer} policy {name}");
            let e = tot.entry(name).or_default();
            e.0 += got.0;
            e.1 += got.1;
        }
    }
    let rate = |n: &str| tot[n].0 as f64 / tot[n].1 as f64;
    eprintln!(
        "DeepSeek-V2-Lite, 16 of 64: LRU {:.4}, LFU {:.4}, Belady {:.4}",
        rate("lru"),
        rate("lfu"),
        rate("belady")
    );
    assert!((0.44..=0.48).contains(&rate("lru")), "LRU {}", rate("lru"));
    assert!(
        (0.64..=0.68).contains(&rate("belady")),
        "Belady {}",
        rate("belady")
    );
    assert!(rate("belady") > rate("lfu") && rate("belady") > rate("lru"));
}

fn steps_strategy() -> impl Strategy<Value = (usize, Vec<Vec<u32>>)> {
    (1usize..4, 4u32..16).prop_flat_map(|(k, n)| {
        let step = proptest::sample::subsequence((0..n).collect::<Vec<u32>>(), k).prop_shuffle();
        (Just(k), proptest::collection::vec(step, 1..120))
    })
}

proptest! {
    #[test]
    fn matches_reference_on_random_sequences((k, steps) in steps_strategy(), extra in 0usize..6) {
        let seq = to_seq(&steps);
        let cap = k + extra;
        for (name, p) in [("lru", CachePolicy::Lru), ("lfu", CachePolicy::Lfu), ("belady", CachePolicy::Belady)] {
            prop_assert_eq!(run(p, cap, &seq), reference(name, cap, &steps), "{}", name);
        }
    }

    #[test]
    fn belady_dominates_and_is_monotone((k, steps) in steps_strategy(), extra in 0usize..6) {
        let seq = to_seq(&steps);
        let cap = k + extra;
        let b = run(CachePolicy::Belady, cap, &seq).0;
        for p in [CachePolicy::Lru, CachePolicy::Lfu, CachePolicy::Lrfu] {
            prop_assert!(b >= run(p, cap, &seq).0, "{}", p);
        }
        prop_assert!(run(CachePolicy::Belady, cap + 1, &seq).0 >= b);
    }

    #[test]
    fn hits_plus_misses_is_requests((k, steps) in steps_strategy(), extra in 0usize..6) {
        let seq = to_seq(&steps);
        for p in CachePolicy::ALL {
            let (mut h, mut m, mut resident) = (0u64, 0u64, 0i64);
            let c = replay_cache(p, k + extra, &seq, |_, hits, misses, ev| {
                h += hits.len() as u64;
                m += misses.len() as u64;
                resident += misses.len() as i64 - ev.len() as i64;
                assert!(resident as usize <= k + extra);
                for e in ev { assert!(!hits.contains(e) && !misses.contains(e)); }
            }).unwrap();
            prop_assert_eq!(h, c.hits);
            prop_assert_eq!(h + m, c.requests);
        }
    }
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn deepseek_stats_per_sequence_caches_match_reference() {
    use moesim_traces::Trace;
    use moesim_traces::import::{Format, ImportOptions, import};
    use moesim_traces::stats::{StatsOptions, trace_stats};
    let dir = common::shared_traces("deepseek-v2-lite");
    let t = import(Format::CsvTokens, &dir, &ImportOptions::default()).unwrap();
    let Trace::Tokens(tt) = &t else { panic!() };
    let opts = StatsOptions {
        cache_sizes: vec![16],
        cache_per_sequence: true,
        ..StatsOptions::default()
    };
    let st = trace_stats(&t, &opts).unwrap();
    for (li, ls) in st.layers.iter().enumerate() {
        let (mut lh, mut bh, mut n) = (0u64, 0u64, 0u64);
        for s in &tt.sequences {
            let steps: Vec<Vec<u32>> = (0..s.tokens).map(|k| s.row(li, k).to_vec()).collect();
            let (h, r) = reference("lru", 16, &steps);
            lh += h;
            n += r;
            bh += reference("belady", 16, &steps).0;
        }
        assert!((ls.lru_hit_rate["16"] - lh as f64 / n as f64).abs() < 1e-12);
        assert!((ls.belady_hit_rate["16"] - bh as f64 / n as f64).abs() < 1e-12);
    }
    // emptying the cache per prompt costs hits
    let carried = trace_stats(
        &t,
        &StatsOptions {
            cache_sizes: vec![16],
            ..StatsOptions::default()
        },
    )
    .unwrap();
    assert!(st.overall.lru_hit_rate["16"] < carried.overall.lru_hit_rate["16"]);
    assert!(st.overall.belady_hit_rate["16"] < carried.overall.belady_hit_rate["16"]);
}
