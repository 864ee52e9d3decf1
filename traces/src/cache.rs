//! Expert-cache replay: how often a per-layer cache of `capacity` experts already holds the experts a token
//! asks for, under LRU, LFU, LRFU (score-based) and Belady's optimal policy.
//!
//! Semantics (one layer; run it once per layer, independently): step `i` requests the experts
//! `experts[offsets[i]..offsets[i+1]]`. Those resident before the step are **hits**. Each miss is loaded; when
//! the cache is full, loading evicts one resident expert that is *not requested in this step*, chosen by the
//! policy. The requested experts are then touched in the order the step lists them. Hit rate = hits /
//! requested experts. A capacity smaller than the longest step is rejected.
//!
//! Policies (the victim is always among resident experts not requested in the current step):
//! - [`CachePolicy::Lru`]: the least recently touched.
//! - [`CachePolicy::Lfu`]: the one requested least often so far (counts persist across evictions — "perfect"
//!   LFU); ties go to the least recently touched.
//! - [`CachePolicy::Lrfu`]: the lowest combined recency-frequency score
//!   `CRF = Σ_refs 2^(−λ·(now − t_ref))` with `λ = LRFU_LAMBDA` per step (Lee et al., "LRFU: a spectrum of
//!   policies that subsumes the LRU and LFU policies", IEEE Trans. Computers 2001); λ→0 is LFU, λ=1 is LRU.
//!   Ties go to the least recently touched.
//! - [`CachePolicy::Belady`]: the one whose next request is farthest in the future (never = infinitely far;
//!   among several never requested again, the lowest expert id). Next uses are precomputed in one backward
//!   pass, so a replay costs O(requests · log capacity).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Which expert a full cache evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachePolicy {
    /// Least recently used.
    Lru,
    /// Least frequently used (history counts), ties least recently used.
    Lfu,
    /// Least recently/frequently used score with exponential decay (λ = [`LRFU_LAMBDA`]).
    Lrfu,
    /// Belady's MIN: farthest next request; the optimal (offline) bound.
    Belady,
}

impl CachePolicy {
    /// All policies, in a fixed order.
    pub const ALL: [CachePolicy; 4] = [
        CachePolicy::Lru,
        CachePolicy::Lfu,
        CachePolicy::Lrfu,
        CachePolicy::Belady,
    ];

    /// The serde / command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CachePolicy::Lru => "lru",
            CachePolicy::Lfu => "lfu",
            CachePolicy::Lrfu => "lrfu",
            CachePolicy::Belady => "belady",
        }
    }
}

impl std::fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CachePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CachePolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown cache policy `{s}` (expected lru, lfu, lrfu or belady)")
            })
    }
}

/// Decay per step of the LRFU score (half-life of 1/λ = 20 steps).
pub const LRFU_LAMBDA: f64 = 0.05;

/// The requests of one layer, step by step (CSR layout).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestSeq {
    /// All requested experts, step after step.
    pub experts: Vec<u32>,
    /// Step `i` requests `experts[offsets[i]..offsets[i+1]]`; `offsets[0] == 0`, one more entry than steps.
    pub offsets: Vec<usize>,
}

impl RequestSeq {
    /// No steps.
    pub fn new() -> Self {
        RequestSeq {
            experts: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Appends one step.
    pub fn push(&mut self, step: &[u32]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.experts.extend_from_slice(step);
        self.offsets.push(self.experts.len());
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The experts step `i` requests.
    pub fn step(&self, i: usize) -> &[u32] {
        &self.experts[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The longest step (the `k` a cache must at least hold).
    pub fn max_step_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .max()
            .unwrap_or(0)
    }
}

/// Hits and requested experts of one replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CacheCounts {
    pub hits: u64,
    pub requests: u64,
}

impl CacheCounts {
    /// hits / requests (0 when nothing was requested).
    pub fn hit_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.hits as f64 / self.requests as f64
        }
    }

    /// Element-wise sum.
    pub fn add(&mut self, other: CacheCounts) {
        self.hits += other.hits;
        self.requests += other.requests;
    }
}

/// Why a replay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    #[error(
        "cache capacity {capacity} is smaller than the {k} experts one step requests (step {step})"
    )]
    CapacityBelowK {
        capacity: usize,
        k: usize,
        step: usize,
    },
    #[error("step {step} requests expert {expert} more than once")]
    DuplicateExpert { step: usize, expert: u32 },
    #[error(
        "malformed request sequence: offsets must start at 0, never decrease and end at {len} (the number of experts)"
    )]
    BadOffsets { len: usize },
    #[error("step {step} requests expert {expert}, beyond the {experts} experts")]
    UnknownExpert {
        step: usize,
        expert: u32,
        experts: usize,
    },
}

const NEVER: u64 = u64::MAX;

/// Replays `seq` through a cache of `capacity` experts under `policy`.
///
/// `on_step(step, hits, misses, evicted)` is called once per step with the step's hits and misses (in the
/// order the step lists them) and the experts its misses evicted (in eviction order).
pub fn replay_cache(
    policy: CachePolicy,
    capacity: usize,
    seq: &RequestSeq,
    on_step: impl FnMut(usize, &[u32], &[u32], &[u32]),
) -> Result<CacheCounts, CacheError> {
    replay_impl(policy, capacity, seq, capacity > SCAN_LIMIT, on_step)
}

/// Up to this capacity a linear scan over the resident experts finds victims faster than an ordered set.
const SCAN_LIMIT: usize = 96;

/// The eviction order of resident experts: an ordered set, or (small caches) a scan over resident slots.
enum Order {
    Tree(BTreeSet<(u64, u64, u32)>),
    Scan(Vec<u32>),
}

impl Order {
    /// Removes and returns the resident expert with the smallest key that `in_step` does not mark.
    fn pop_victim(&mut self, key: &[(u64, u64)], in_step: &[usize], step: usize) -> u32 {
        match self {
            Order::Tree(t) => {
                let v = t
                    .iter()
                    .find(|&&(_, _, v)| in_step[v as usize] != step)
                    .copied()
                    .expect("capacity ≥ step length leaves an unrequested resident expert");
                t.remove(&v);
                v.2
            }
            Order::Scan(slots) => {
                let (i, _) = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| in_step[**v as usize] != step)
                    .min_by_key(|(_, v)| (key[**v as usize].0, key[**v as usize].1, **v))
                    .expect("capacity ≥ step length leaves an unrequested resident expert");
                slots.swap_remove(i)
            }
        }
    }

    fn load(&mut self, e: u32) {
        if let Order::Scan(slots) = self {
            slots.push(e);
        }
    }

    fn rekey(&mut self, e: u32, old: (u64, u64), new: (u64, u64)) {
        if let Order::Tree(t) = self {
            t.remove(&(old.0, old.1, e));
            t.insert((new.0, new.1, e));
        }
    }
}

fn replay_impl(
    policy: CachePolicy,
    capacity: usize,
    seq: &RequestSeq,
    tree: bool,
    mut on_step: impl FnMut(usize, &[u32], &[u32], &[u32]),
) -> Result<CacheCounts, CacheError> {
    validate(seq, capacity)?;
    let n_ids = seq
        .experts
        .iter()
        .map(|&e| e as usize + 1)
        .max()
        .unwrap_or(0);
    let next_use = if policy == CachePolicy::Belady {
        next_uses(&seq.experts, n_ids)
    } else {
        Vec::new()
    };
    let mut sim = CacheSim::with_order(policy, capacity, n_ids, tree);
    for step in 0..seq.steps() {
        let (lo, hi) = (seq.offsets[step], seq.offsets[step + 1]);
        let next = (policy == CachePolicy::Belady).then(|| &next_use[lo..hi]);
        let (hits, misses, evicted) = sim.step_with(&seq.experts[lo..hi], next)?;
        on_step(step, hits, misses, evicted);
    }
    Ok(sim.counts)
}

/// A step's hits, misses and evicted experts.
type StepOutcome<'a> = (&'a [u32], &'a [u32], &'a [u32]);

/// A cache replayed one step at a time, so a trace can be streamed through it in memory proportional to
/// the expert count. Belady needs each request's next use (the future), so only [`replay_cache`] runs it.
pub struct CacheSim {
    policy: CachePolicy,
    capacity: usize,
    step: usize,
    resident: Vec<bool>,
    in_step: Vec<usize>,
    /// The ordering key each resident expert has in `order` (smallest = evicted first).
    key: Vec<(u64, u64)>,
    freq: Vec<u64>,
    crf_log: Vec<f64>,
    order: Order,
    occupied: usize,
    clock: u64,
    /// Hits and requests so far.
    pub counts: CacheCounts,
    hits: Vec<u32>,
    misses: Vec<u32>,
    evicted: Vec<u32>,
}

impl CacheSim {
    /// An empty cache of `capacity` experts with ids below `n_ids` (LRU, LFU or LRFU).
    pub fn new(policy: CachePolicy, capacity: usize, n_ids: usize) -> CacheSim {
        CacheSim::with_order(policy, capacity, n_ids, capacity > SCAN_LIMIT)
    }

    fn with_order(policy: CachePolicy, capacity: usize, n_ids: usize, tree: bool) -> CacheSim {
        CacheSim {
            policy,
            capacity,
            step: 0,
            resident: vec![false; n_ids],
            in_step: vec![usize::MAX; n_ids],
            key: vec![(0, 0); n_ids],
            freq: vec![0; n_ids],
            crf_log: vec![f64::NEG_INFINITY; n_ids],
            order: if tree {
                Order::Tree(BTreeSet::new())
            } else {
                Order::Scan(Vec::with_capacity(capacity))
            },
            occupied: 0,
            clock: 0,
            counts: CacheCounts::default(),
            hits: Vec::new(),
            misses: Vec::new(),
            evicted: Vec::new(),
        }
    }

    /// Serves one step (distinct experts, at most the capacity, ids below `n_ids`); not for Belady.
    pub fn step(&mut self, req: &[u32]) -> Result<(), CacheError> {
        if req.len() > self.capacity {
            return Err(CacheError::CapacityBelowK {
                capacity: self.capacity,
                k: req.len(),
                step: self.step,
            });
        }
        if let Some(&e) = req.iter().find(|&&e| e as usize >= self.resident.len()) {
            return Err(CacheError::UnknownExpert {
                step: self.step,
                expert: e,
                experts: self.resident.len(),
            });
        }
        self.step_with(req, None).map(|_| ())
    }

    /// One step; `next_use[j]` is the position of request `j`'s next use (Belady only).
    fn step_with(
        &mut self,
        req: &[u32],
        next_use: Option<&[u64]>,
    ) -> Result<StepOutcome<'_>, CacheError> {
        let step = self.step;
        self.hits.clear();
        self.misses.clear();
        self.evicted.clear();
        for &e in req {
            if self.in_step[e as usize] == step {
                return Err(CacheError::DuplicateExpert { step, expert: e });
            }
            self.in_step[e as usize] = step;
            if self.resident[e as usize] {
                self.hits.push(e);
            } else {
                self.misses.push(e);
            }
        }
        for &e in &self.misses {
            if self.occupied == self.capacity {
                let victim = self.order.pop_victim(&self.key, &self.in_step, step);
                self.resident[victim as usize] = false;
                self.occupied -= 1;
                self.evicted.push(victim);
            }
            self.order.load(e);
            self.resident[e as usize] = true;
            self.occupied += 1;
        }
        // Touch in listed order: newly loaded experts enter `order` here.
        for (j, &e) in req.iter().enumerate() {
            let ei = e as usize;
            let old = self.key[ei];
            self.clock += 1;
            self.freq[ei] += 1;
            let k = match self.policy {
                CachePolicy::Lru => (self.clock, 0),
                CachePolicy::Lfu => (self.freq[ei], self.clock),
                CachePolicy::Lrfu => {
                    // log2 Σ 2^(λ t_ref), updated stably; comparing it is comparing CRF at any common time.
                    let x = LRFU_LAMBDA * step as f64;
                    let c = self.crf_log[ei];
                    let s = if c == f64::NEG_INFINITY {
                        x
                    } else {
                        let (hi, lo) = if c > x { (c, x) } else { (x, c) };
                        hi + (1.0 + (lo - hi).exp2()).log2()
                    };
                    self.crf_log[ei] = s;
                    (s.to_bits(), self.clock) // s ≥ 0, so bit order is numeric order
                }
                CachePolicy::Belady => (NEVER - next_use.map_or(NEVER, |n| n[j]), 0),
            };
            self.key[ei] = k;
            self.order.rekey(e, old, k);
        }
        self.counts.hits += self.hits.len() as u64;
        self.counts.requests += req.len() as u64;
        self.step += 1;
        Ok((&self.hits, &self.misses, &self.evicted))
    }
}

/// Hit counts for several capacities (each replayed independently).
pub fn replay_sizes(
    policy: CachePolicy,
    capacities: &[usize],
    seq: &RequestSeq,
) -> Result<Vec<CacheCounts>, CacheError> {
    capacities
        .iter()
        .map(|&c| replay_cache(policy, c, seq, |_, _, _, _| {}))
        .collect()
}

fn validate(seq: &RequestSeq, capacity: usize) -> Result<(), CacheError> {
    let len = seq.experts.len();
    let ok = seq.offsets.first() == Some(&0)
        && seq.offsets.windows(2).all(|w| w[0] <= w[1])
        && seq.offsets.last() == Some(&len);
    if !(ok || seq.offsets.is_empty() && len == 0) {
        return Err(CacheError::BadOffsets { len });
    }
    for step in 0..seq.steps() {
        let k = seq.offsets[step + 1] - seq.offsets[step];
        if k > capacity {
            return Err(CacheError::CapacityBelowK { capacity, k, step });
        }
    }
    Ok(())
}

/// For each position, the position of the next request of the same expert (`NEVER` if none).
fn next_uses(experts: &[u32], n_ids: usize) -> Vec<u64> {
    let mut last = vec![NEVER; n_ids];
    let mut next = vec![NEVER; experts.len()];
    for (p, &e) in experts.iter().enumerate().rev() {
        next[p] = last[e as usize];
        last[e as usize] = p as u64;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(steps: &[&[u32]]) -> RequestSeq {
        let mut s = RequestSeq::new();
        for st in steps {
            s.push(st);
        }
        s
    }

    #[test]
    fn lru_known_answer() {
        // capacity 2, k=1: a b a c b → miss miss hit miss(evict b) miss(evict a)
        let s = seq(&[&[0], &[1], &[0], &[2], &[1]]);
        let mut ev = Vec::new();
        let c = replay_cache(CachePolicy::Lru, 2, &s, |_, _, _, e| {
            ev.extend_from_slice(e)
        })
        .unwrap();
        assert_eq!(
            c,
            CacheCounts {
                hits: 1,
                requests: 5
            }
        );
        assert_eq!(ev, vec![1, 0]);
    }

    #[test]
    fn belady_known_answer() {
        // capacity 2: a b c a b — Belady at c evicts b (next use 4) over a (next use 3): a hits; then b
        // misses and a and c are both never used again: the lower id (a) goes.
        let s = seq(&[&[0], &[1], &[2], &[0], &[1]]);
        let mut ev = Vec::new();
        let c = replay_cache(CachePolicy::Belady, 2, &s, |_, _, _, e| {
            ev.extend_from_slice(e)
        })
        .unwrap();
        assert_eq!(c.hits, 1);
        assert_eq!(ev, vec![1, 0]);
        let lru = replay_cache(CachePolicy::Lru, 2, &s, |_, _, _, _| {}).unwrap();
        assert_eq!(lru.hits, 0);
    }

    #[test]
    fn requested_experts_are_never_evicted_in_their_step() {
        // capacity 2, k=2: step {0,1}, then {2,0}: 0 is a hit and must not be the victim even though it is LRU.
        let s = seq(&[&[0, 1], &[2, 0]]);
        for p in CachePolicy::ALL {
            let mut ev = Vec::new();
            replay_cache(p, 2, &s, |_, _, _, e| ev.extend_from_slice(e)).unwrap();
            assert_eq!(ev, vec![1], "{p}");
        }
    }

    #[test]
    fn lfu_keeps_the_frequent_expert() {
        // 0 requested three times; then 1, 2 alternate with capacity 2: LFU keeps 0, LRU does not.
        let s = seq(&[&[0], &[0], &[0], &[1], &[2], &[0]]);
        let lfu = replay_cache(CachePolicy::Lfu, 2, &s, |_, _, _, _| {}).unwrap();
        let lru = replay_cache(CachePolicy::Lru, 2, &s, |_, _, _, _| {}).unwrap();
        assert_eq!(lfu.hits, 3);
        assert_eq!(lru.hits, 2);
    }

    #[test]
    fn rejects_small_capacity_and_duplicates() {
        let s = seq(&[&[0, 1, 2]]);
        assert!(matches!(
            replay_cache(CachePolicy::Lru, 2, &s, |_, _, _, _| {}),
            Err(CacheError::CapacityBelowK { k: 3, .. })
        ));
        let d = seq(&[&[4, 4]]);
        assert!(matches!(
            replay_cache(CachePolicy::Belady, 4, &d, |_, _, _, _| {}),
            Err(CacheError::DuplicateExpert { expert: 4, .. })
        ));
        let bad = RequestSeq {
            experts: vec![1, 2],
            offsets: vec![0, 3],
        };
        assert!(replay_cache(CachePolicy::Lru, 4, &bad, |_, _, _, _| {}).is_err());
    }

    #[test]
    fn scan_and_tree_orders_agree() {
        let mut rng = crate::rng::rng_for(4, &[1]);
        use rand::RngExt;
        for _ in 0..20 {
            let n = rng.random_range(4..40u32);
            let k = rng.random_range(1..4usize).min(n as usize);
            let mut s = RequestSeq::new();
            for _ in 0..300 {
                let mut step: Vec<u32> = Vec::new();
                while step.len() < k {
                    let e = rng.random_range(0..n);
                    if !step.contains(&e) {
                        step.push(e);
                    }
                }
                s.push(&step);
            }
            for p in CachePolicy::ALL {
                for cap in [k, k + 1, k + 5] {
                    let mut a = Vec::new();
                    let mut b = Vec::new();
                    let ca = replay_impl(p, cap, &s, false, |_, _, _, e| a.extend_from_slice(e))
                        .unwrap();
                    let cb =
                        replay_impl(p, cap, &s, true, |_, _, _, e| b.extend_from_slice(e)).unwrap();
                    assert_eq!(ca, cb, "{p} {cap}");
                    assert_eq!(a, b, "{p} {cap}");
                }
            }
        }
    }

    #[test]
    fn serde_names_are_kebab_case() {
        for p in CachePolicy::ALL {
            let j = serde_json::to_string(&p).unwrap();
            assert_eq!(j, format!("\"{}\"", p.name()));
            assert_eq!(p.name().parse::<CachePolicy>().unwrap(), p);
        }
    }
}
