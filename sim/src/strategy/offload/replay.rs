//! The expert cache over a run, step by step, and what the prefetcher moved: the sequential part of
//! offloading, done once before the steps are timed in parallel.
//!
//! A step is one decode iteration (the union of its tokens' experts per layer; with one token per step this
//! is exactly what `moesim trace stats` replays) or one prefill chunk. Cache semantics are
//! `moesim_traces::replay_cache`'s; a step asking for more experts than the cache holds (large batches,
//! prefill) is split into consecutive chunks that fit, as a GPU computes a layer's experts a cache-full at a
//! time. Prefetch for layer l+1 is decided when layer l's gate runs, from the cache contents at that moment:
//! predicted experts that are not resident are copied ahead; those the step then misses count as prefetched,
//! mispredicted ones are wasted transfers into a staging buffer (they do not enter the cache), and misses
//! nobody predicted are fetched on demand.

use super::tokens::TokenRouting;
use crate::scenario::knobs::{CacheScope, OffloadKnobs, Prefetch};
use moesim_traces::rng::rng_for;
use moesim_traces::{CacheCounts, CacheError, RequestSeq, replay_cache};
use rand::RngExt;
use rayon::prelude::*;

/// What happened to one layer in one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepLayer {
    /// Requested experts already resident.
    pub hits: Vec<u32>,
    /// Misses covered by a prefetch issued during the previous layer.
    pub prefetched: Vec<u32>,
    /// Misses nobody predicted: fetched (or computed on the CPU) after the gate.
    pub demand: Vec<u32>,
    /// Prefetched experts the step did not ask for.
    pub wasted: Vec<u32>,
}

/// The whole run's cache behaviour.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub steps: usize,
    pub layers: usize,
    /// `cells[step * layers + layer]`.
    pub cells: Vec<StepLayer>,
    /// Per layer: hits and requests.
    pub counts: Vec<CacheCounts>,
}

/// The experts step `step` asks for in `layer`: the union of its tokens' experts, in first-request order.
pub fn step_experts(
    tokens: &TokenRouting,
    range: std::ops::Range<usize>,
    layer: usize,
    out: &mut Vec<u32>,
) {
    out.clear();
    for t in range {
        for &e in tokens.experts_of(t, layer) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
}

/// (step, layer, what happened) in replay order.
type Cells = Vec<(usize, usize, StepLayer)>;

/// One cache's request stream: keys in steps, each sub-step tagged with its (step, layer) and whether it
/// opens that (step, layer).
struct Stream {
    seq: RequestSeq,
    tags: Vec<(usize, usize, bool)>,
}

/// Replays the cache over `steps` steps of `per_step` tokens each.
pub fn replay(
    tokens: &TokenRouting,
    steps: usize,
    per_step: usize,
    knobs: &OffloadKnobs,
    seed: u64,
) -> Result<Replay, CacheError> {
    let layers = tokens.layers;
    let experts = tokens.experts;
    let range = |i: usize| i * per_step..((i + 1) * per_step).min(tokens.tokens());
    let build = |ls: &[usize], capacity: usize, shared: bool| -> Stream {
        let mut seq = RequestSeq::new();
        let mut tags = Vec::new();
        let mut buf = Vec::new();
        for i in 0..steps {
            for &l in ls {
                step_experts(tokens, range(i), l, &mut buf);
                let key = |e: u32| if shared { (l * experts) as u32 + e } else { e };
                let keys: Vec<u32> = buf.iter().map(|&e| key(e)).collect();
                for (c, chunk) in keys.chunks(capacity.max(1)).enumerate() {
                    seq.push(chunk);
                    tags.push((i, l, c == 0));
                }
                if keys.is_empty() {
                    seq.push(&[]);
                    tags.push((i, l, true));
                }
            }
        }
        Stream { seq, tags }
    };
    let run = |stream: &Stream,
               capacity: usize,
               shared: bool|
     -> Result<Vec<(usize, usize, StepLayer)>, CacheError> {
        if capacity == 0 {
            return Ok(uncached(stream, tokens, knobs, seed, experts, range));
        }
        // Every key a prediction can name, not only those requested: a short run may never request an
        // expert that pre-gating predicts.
        let n_keys = if shared { layers * experts } else { experts };
        let mut resident = vec![false; n_keys];
        let mut out: Vec<(usize, usize, StepLayer)> = Vec::new();
        let mut predicted: Vec<u32> = Vec::new();
        let mut wanted = Vec::new();
        replay_cache(
            knobs.policy,
            capacity,
            &stream.seq,
            |j, hits, misses, evicted| {
                let (step, layer, first) = stream.tags[j];
                let base = if shared { (layer * experts) as u32 } else { 0 };
                let local = |k: u32| k - base;
                if first {
                    step_experts(tokens, range(step), layer, &mut wanted);
                    predicted.clear();
                    if layer > 0 {
                        predict(knobs, seed, step, layer, experts, &wanted, &mut predicted);
                        // Only non-resident predictions are copied.
                        predicted.retain(|&e| !resident[(base + e) as usize]);
                    }
                    let cell = StepLayer {
                        wasted: predicted
                            .iter()
                            .copied()
                            .filter(|e| !wanted.contains(e))
                            .collect(),
                        ..Default::default()
                    };
                    out.push((step, layer, cell));
                }
                let cell = &mut out.last_mut().expect("opened").2;
                cell.hits.extend(hits.iter().map(|&k| local(k)));
                for &k in misses {
                    let e = local(k);
                    if predicted.contains(&e) {
                        cell.prefetched.push(e);
                    } else {
                        cell.demand.push(e);
                    }
                    resident[k as usize] = true;
                }
                for &k in evicted {
                    resident[k as usize] = false;
                }
            },
        )?;
        Ok(out)
    };
    let cap = knobs.cache_experts_per_layer;
    let mut cells = vec![StepLayer::default(); steps * layers];
    match knobs.cache_scope {
        CacheScope::PerLayer => {
            let per_layer: Vec<Result<Cells, CacheError>> = (0..layers)
                .into_par_iter()
                .map(|l| run(&build(&[l], cap, false), cap, false))
                .collect();
            for r in per_layer {
                for (i, l, c) in r? {
                    cells[i * layers + l] = c;
                }
            }
        }
        CacheScope::Shared => {
            let all: Vec<usize> = (0..layers).collect();
            for (i, l, c) in run(&build(&all, cap * layers, true), cap * layers, true)? {
                cells[i * layers + l] = c;
            }
        }
    }
    let mut counts = vec![CacheCounts::default(); layers];
    for i in 0..steps {
        for (l, c) in counts.iter_mut().enumerate() {
            let cell = &cells[i * layers + l];
            c.hits += cell.hits.len() as u64;
            c.requests += (cell.hits.len() + cell.prefetched.len() + cell.demand.len()) as u64;
        }
    }
    Ok(Replay {
        steps,
        layers,
        cells,
        counts,
    })
}

/// No cache: nothing stays resident between steps, so every expert a step asks for is fetched (into a
/// transient buffer) each time, by prefetch where the prefetcher predicted it, else on demand.
fn uncached(
    stream: &Stream,
    tokens: &TokenRouting,
    knobs: &OffloadKnobs,
    seed: u64,
    experts: usize,
    range: impl Fn(usize) -> std::ops::Range<usize>,
) -> Cells {
    let mut out = Vec::new();
    let (mut wanted, mut predicted) = (Vec::new(), Vec::new());
    for &(step, layer, first) in &stream.tags {
        if !first {
            continue;
        }
        step_experts(tokens, range(step), layer, &mut wanted);
        predicted.clear();
        if layer > 0 {
            predict(knobs, seed, step, layer, experts, &wanted, &mut predicted);
        }
        let (prefetched, demand) = wanted.iter().partition(|e| predicted.contains(e));
        out.push((
            step,
            layer,
            StepLayer {
                hits: Vec::new(),
                prefetched,
                demand,
                wasted: predicted
                    .iter()
                    .copied()
                    .filter(|e| !wanted.contains(e))
                    .collect(),
            },
        ));
    }
    out
}

/// The prefetcher's guess of `wanted` for (step, layer): all of it for the oracle; for pre-gating each
/// expert right with probability `accuracy`, else a random expert the step does not want.
fn predict(
    knobs: &OffloadKnobs,
    seed: u64,
    step: usize,
    layer: usize,
    experts: usize,
    wanted: &[u32],
    out: &mut Vec<u32>,
) {
    match knobs.prefetch {
        Prefetch::None => {}
        Prefetch::Oracle => out.extend_from_slice(wanted),
        Prefetch::Pregate => {
            let mut rng = rng_for(seed, &[0x7072_6566_6574, step as u64, layer as u64]);
            for &e in wanted {
                if rng.random::<f64>() < knobs.prefetch_accuracy {
                    out.push(e);
                    continue;
                }
                let others = experts - wanted.len();
                if others == 0 {
                    continue;
                }
                let mut k = rng.random_range(0..others);
                for x in 0..experts as u32 {
                    if wanted.contains(&x) {
                        continue;
                    }
                    if k == 0 {
                        if !out.contains(&x) {
                            out.push(x);
                        }
                        break;
                    }
                    k -= 1;
                }
            }
        }
    }
}
