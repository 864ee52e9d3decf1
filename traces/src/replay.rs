//! Replaying a recorded trace through the simulator: a [`RoutingSource`] that maps the trace onto a
//! scenario's [`RoutingShape`].
//!
//! Token traces: all sequences are concatenated into one token stream. Iteration `i`, micro-batch `mb`,
//! rank `r` takes the next `tokens_per_rank` consecutive tokens, starting at
//! `((i · micro_batches + mb) · ranks + r) · tokens_per_rank` (modulo the stream length: the trace wraps),
//! and counts, per layer, the experts those tokens chose.
//!
//! Counts traces: iteration `i` replays trace iteration `i mod T`. Each (micro-batch, rank) receives
//! `tokens_per_rank × top_k` assignments split in the proportions the trace gives that layer (per source
//! rank when the trace has as many ranks as the scenario, else summed over ranks), rounded by largest
//! remainder and capped at `tokens_per_rank` per expert.

use crate::error::{TraceError, TraceResult};
use crate::trace::{CountsTrace, Sequence, Trace, TraceKind};
use crate::{IterationRouting, RoutingShape, RoutingSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;

enum Data {
    /// The trace itself (shared, not copied), the stream position of each sequence's first token, and
    /// per layer each expert's total over the whole stream.
    Tokens {
        trace: Arc<Trace>,
        starts: Vec<usize>,
        totals: Vec<Vec<u64>>,
        tokens: usize,
    },
    Counts(CountsTrace),
}

/// A trace replayed onto a scenario's shape.
pub struct TraceRouting {
    shape: RoutingShape,
    iterations: usize,
    path: PathBuf,
    data: Data,
    summary: String,
}

impl TraceRouting {
    /// Reads a native trace file and checks it can serve `shape`.
    pub fn open(path: &Path, shape: RoutingShape, iterations: usize) -> TraceResult<Self> {
        if !crate::native::is_native(path) {
            if !path.exists() {
                return Err(TraceError::file(path, "trace file not found"));
            }
            return Err(TraceError::file(
                path,
                "not a moesim native trace; convert it first with `moesim trace import --from FORMAT IN OUT`",
            ));
        }
        // Only the tokens (or iterations) the run replays are kept; the rest of the file is checked.
        let p = crate::native::read_native_prefix(
            path,
            tokens_used(shape, iterations),
            iterations as u64,
        )?;
        let r = TraceRouting::shared(Arc::new(p.trace), path, shape, iterations)?;
        Ok(if p.complete { r } else { r.partial() })
    }

    /// Replays `trace` (named `path` in messages) onto `shape`.
    pub fn new(
        trace: Trace,
        path: &Path,
        shape: RoutingShape,
        iterations: usize,
    ) -> TraceResult<Self> {
        TraceRouting::shared(Arc::new(trace), path, shape, iterations)
    }

    /// Replays `trace` (named `path` in messages) onto `shape`, sharing it (a per-token trace is not
    /// copied; a counts trace is).
    ///
    /// Replay reads tokens `[0, tokens_used(shape, iterations))` of the stream (counts: the first
    /// `iterations` iterations), wrapping only when the trace is shorter; a trace cut after those (by
    /// [`crate::native::read_native_prefix`]) replays exactly as the whole file does.
    pub fn shared(
        trace: Arc<Trace>,
        path: &Path,
        shape: RoutingShape,
        iterations: usize,
    ) -> TraceResult<Self> {
        let m = trace.meta().clone();
        let mismatch = |what: &str, expected: usize, found: usize, hint: &str| {
            TraceError::file(
                path,
                format!(
                    "the trace cannot serve the scenario's model: {what} expected {expected} (scenario), found {found} (trace){hint}"
                ),
            )
        };
        if m.experts != shape.experts {
            return Err(mismatch(
                "routed experts per layer:",
                shape.experts,
                m.experts,
                "; set model.experts to match",
            ));
        }
        if m.layers != shape.moe_layers {
            return Err(mismatch(
                "MoE layers:",
                shape.moe_layers,
                m.layers,
                "; set the model's MoE layer count to match",
            ));
        }
        if m.top_k != shape.top_k {
            return Err(mismatch(
                "top-k:",
                shape.top_k,
                m.top_k,
                "; set model.top_k to match",
            ));
        }
        let (data, summary) = match trace.as_ref() {
            Trace::Tokens(t) => {
                let tokens = t.tokens();
                if tokens == 0 {
                    return Err(TraceError::file(path, "the trace holds no tokens"));
                }
                let starts = t
                    .sequences
                    .iter()
                    .scan(0, |at, s| {
                        let start = *at;
                        *at += s.tokens;
                        Some(start)
                    })
                    .collect();
                let totals = t.expert_loads();
                let summary = format!("{} sequences, {tokens} tokens", t.sequences.len());
                (
                    Data::Tokens {
                        trace: Arc::clone(&trace),
                        starts,
                        totals,
                        tokens,
                    },
                    summary,
                )
            }
            Trace::Counts(c) => {
                if c.iterations == 0 || c.counts.iter().all(|&x| x == 0) {
                    return Err(TraceError::file(path, "the trace holds no counts"));
                }
                let s = format!(
                    "{} iterations × {} ranks of counts",
                    c.iterations, c.meta.ranks
                );
                (Data::Counts(c.clone()), s)
            }
        };
        debug_assert!(m.kind == TraceKind::Tokens || matches!(data, Data::Counts(_)));
        Ok(TraceRouting {
            shape,
            iterations,
            path: path.to_path_buf(),
            data,
            summary,
        })
    }

    /// Says, in [`RoutingSource::describe`], that the trace was the start of a longer file (what the run
    /// replays; see [`crate::native::read_native_prefix`]).
    pub fn partial(mut self) -> Self {
        self.summary
            .push_str(": the start of a longer file, as far as the run replays it");
        self
    }
}

/// Tokens of the trace's stream a replay of `iterations` iterations onto `shape` reads (saturating):
/// `iterations × micro_batches × ranks × tokens_per_rank`.
pub fn tokens_used(shape: RoutingShape, iterations: usize) -> u64 {
    (iterations as u64)
        .saturating_mul(shape.micro_batches as u64)
        .saturating_mul(shape.ranks as u64)
        .saturating_mul(shape.tokens_per_rank)
}

/// Adds the experts layer `layer` of stream tokens `[start, start + n)` (wrapping) chose to `out`; `starts`
/// holds the stream position of each sequence's first token.
#[allow(clippy::too_many_arguments)]
fn add_range(
    sequences: &[Sequence],
    starts: &[usize],
    total: &[u64],
    tokens: usize,
    layer: usize,
    start: usize,
    n: u64,
    out: &mut [u32],
) {
    let full = n / tokens as u64;
    if full > 0 {
        for (o, &t) in out.iter_mut().zip(total) {
            *o += (t * full) as u32;
        }
    }
    let mut rest = (n % tokens as u64) as usize;
    let mut pos = start % tokens;
    while rest > 0 {
        // The last sequence starting at or before `pos` holds it (empty sequences start where the next does).
        let si = starts.partition_point(|&st| st <= pos) - 1;
        let s = &sequences[si];
        let first = pos - starts[si];
        let take = rest.min(s.tokens - first);
        let row = layer * s.tokens + first;
        let (lo, hi) = (s.offsets[row] as usize, s.offsets[row + take] as usize);
        for &e in &s.experts[lo..hi] {
            out[e as usize] += 1;
        }
        rest -= take;
        pos = (pos + take) % tokens;
    }
}

/// Splits `total` in proportion to `weights`, at most `cap` each (largest remainder).
fn apportion(weights: &[u64], total: u64, cap: u64, out: &mut [u32]) {
    let n = weights.len();
    let mut capped = vec![false; n];
    let mut assigned = vec![0u64; n];
    let mut left = total;
    loop {
        let active: Vec<usize> = (0..n).filter(|&i| !capped[i] && weights[i] > 0).collect();
        let w: u64 = active.iter().map(|&i| weights[i]).sum();
        if left == 0 || w == 0 {
            break;
        }
        let mut any = false;
        for &i in &active {
            let exact = left as f64 * weights[i] as f64 / w as f64;
            if exact >= (cap - assigned[i]) as f64 {
                left -= cap - assigned[i];
                assigned[i] = cap;
                capped[i] = true;
                any = true;
            }
        }
        if any {
            continue;
        }
        let mut rems: Vec<(f64, usize)> = Vec::with_capacity(active.len());
        let mut given = 0;
        for &i in &active {
            let exact = left as f64 * weights[i] as f64 / w as f64;
            let fl = exact.floor() as u64;
            assigned[i] += fl;
            given += fl;
            rems.push((exact - fl as f64, i));
        }
        left -= given;
        rems.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &rems {
            if left == 0 {
                break;
            }
            if assigned[i] < cap {
                assigned[i] += 1;
                left -= 1;
            }
        }
        break;
    }
    for (o, a) in out.iter_mut().zip(assigned) {
        *o = a as u32;
    }
}

impl RoutingSource for TraceRouting {
    fn shape(&self) -> RoutingShape {
        self.shape
    }

    fn iterations(&self) -> usize {
        self.iterations
    }

    fn fill_iteration(&self, iteration: usize, out: &mut IterationRouting) {
        let s = self.shape;
        out.counts.iter_mut().for_each(|c| *c = 0);
        match &self.data {
            Data::Tokens {
                trace,
                starts,
                totals,
                tokens,
            } => {
                // Token data is built from a per-token trace only.
                let Trace::Tokens(t) = trace.as_ref() else {
                    return;
                };
                let tpr = s.tokens_per_rank;
                for mb in 0..s.micro_batches {
                    for r in 0..s.ranks {
                        let block = ((iteration * s.micro_batches + mb) * s.ranks + r) as u128;
                        let start = (block * tpr as u128 % *tokens as u128) as usize;
                        for (l, total) in totals.iter().enumerate() {
                            add_range(
                                &t.sequences,
                                starts,
                                total,
                                *tokens,
                                l,
                                start,
                                tpr,
                                out.rank_counts_mut(mb, l, r),
                            );
                        }
                    }
                }
            }
            Data::Counts(c) => {
                let m = &c.meta;
                let it = iteration % c.iterations;
                let per_rank = m.ranks == s.ranks;
                let mut w = vec![0u64; m.experts];
                for l in 0..s.moe_layers {
                    if !per_rank {
                        w.iter_mut().for_each(|x| *x = 0);
                        for sr in 0..m.ranks {
                            let o = c.index(it, l, sr, 0);
                            for (x, &y) in w.iter_mut().zip(&c.counts[o..o + m.experts]) {
                                *x += y;
                            }
                        }
                    }
                    for r in 0..s.ranks {
                        if per_rank {
                            let o = c.index(it, l, r, 0);
                            w.copy_from_slice(&c.counts[o..o + m.experts]);
                        }
                        for mb in 0..s.micro_batches {
                            apportion(
                                &w,
                                s.tokens_per_rank * s.top_k as u64,
                                s.tokens_per_rank,
                                out.rank_counts_mut(mb, l, r),
                            );
                        }
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("trace {} ({})", self.path.display(), self.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_is_exact_and_capped() {
        let mut out = [0u32; 4];
        apportion(&[100, 1, 1, 0], 30, 10, &mut out);
        assert_eq!(out.iter().sum::<u32>(), 30);
        assert!(out.iter().all(|&x| x <= 10));
        assert_eq!(out[0], 10);
        apportion(&[1, 1, 1, 1], 6, 10, &mut out);
        assert_eq!(out.iter().sum::<u32>(), 6);
        assert!(out.iter().all(|&x| (1..=2).contains(&x)));
    }
}
