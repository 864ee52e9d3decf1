//! Iteration loads from a per-token trace: how requests or documents are batched into iterations.
//!
//! A router trace records tokens, not iterations; what a placement is judged on is the load of each
//! iteration. Serving batches requests continuously ([`batch_iterations`]); training draws whole documents
//! into each step's batch ([`document_batches`]), so an iteration's loads swing with the documents it
//! happens to hold.

use super::plan_layers::LoadHistory;
use moesim_traces::TokenTrace;
use moesim_traces::rng::rng_for;
use rand::RngExt;

/// How a real trace's tokens become iterations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Batching {
    /// Serving: `concurrency` requests in flight, `tokens_per_step` tokens each per iteration
    /// ([`batch_iterations`]).
    Continuous {
        concurrency: usize,
        tokens_per_step: usize,
    },
    /// Training: `per_iteration` whole documents per iteration, `iterations` iterations, the first
    /// `unseen_from` drawn from one half of the documents and the rest from the other half
    /// ([`document_batches`]).
    Documents {
        per_iteration: usize,
        iterations: usize,
        unseen_from: usize,
        seed: u64,
    },
}

impl Batching {
    /// The iterations of `t` under this batching.
    pub fn iterations(&self, t: &TokenTrace) -> LoadHistory {
        match *self {
            Batching::Continuous {
                concurrency,
                tokens_per_step,
            } => batch_iterations(t, concurrency, tokens_per_step),
            Batching::Documents {
                per_iteration,
                iterations,
                unseen_from,
                seed,
            } => document_batches(t, per_iteration, iterations, unseen_from, seed),
        }
    }
}

/// Iteration loads from a per-token trace by continuous batching: `concurrency` requests (sequences, in
/// trace order) are in flight; each iteration every one of them processes its next `tokens_per_step`
/// tokens (chunked prefill; 1 for decode), and a finished request's place goes to the next one. Layers
/// that no token routes through (numbering gaps) are dropped.
pub fn batch_iterations(t: &TokenTrace, concurrency: usize, tokens_per_step: usize) -> LoadHistory {
    let (layers, experts) = (t.meta.layers, t.meta.experts);
    let (concurrency, step) = (concurrency.max(1), tokens_per_step.max(1));
    let mut next_seq = 0;
    let mut active: Vec<(usize, usize)> = Vec::new();
    let mut iterations = Vec::new();
    loop {
        while active.len() < concurrency && next_seq < t.sequences.len() {
            if t.sequences[next_seq].tokens > 0 {
                active.push((next_seq, 0));
            }
            next_seq += 1;
        }
        if active.is_empty() {
            break;
        }
        let mut loads = vec![vec![0.0; experts]; layers];
        for (sq, pos) in active.iter_mut() {
            let s = &t.sequences[*sq];
            let until = (*pos + step).min(s.tokens);
            for (layer, l) in loads.iter_mut().enumerate().take(s.layers()) {
                for tok in *pos..until {
                    for &e in s.row(layer, tok) {
                        l[e as usize] += 1.0;
                    }
                }
            }
            *pos = until;
        }
        active.retain(|(sq, pos)| *pos < t.sequences[*sq].tokens);
        iterations.push(loads);
    }
    let used = used_layers(layers, iterations.iter());
    LoadHistory {
        layers: used.len(),
        experts,
        iterations: iterations
            .into_iter()
            .map(|it| used.iter().map(|&l| it[l].clone()).collect())
            .collect(),
    }
}

/// Training iterations from a per-token trace: each iteration holds `per_iteration` whole documents (the
/// trace's sequences) drawn at random with replacement, as a data loader fills a step's batch from a
/// corpus. Iterations before `unseen_from` draw from the even-numbered documents, the later ones from the
/// odd-numbered ones: a plan made from the first iterations is judged on documents it has never seen
/// (same corpus, new text), as in a training run. Layers that no token routes through are dropped.
/// Deterministic in `seed`. With fewer than two documents both halves are the whole trace.
pub fn document_batches(
    t: &TokenTrace,
    per_iteration: usize,
    iterations: usize,
    unseen_from: usize,
    seed: u64,
) -> LoadHistory {
    let (layers, experts) = (t.meta.layers, t.meta.experts);
    // Each document's tokens per (layer, expert), once.
    let documents: Vec<Vec<Vec<f64>>> = t
        .sequences
        .iter()
        .map(|s| {
            let mut l = vec![vec![0.0; experts]; layers];
            for (layer, loads) in l.iter_mut().enumerate().take(s.layers()) {
                for tok in 0..s.tokens {
                    for &e in s.row(layer, tok) {
                        loads[e as usize] += 1.0;
                    }
                }
            }
            l
        })
        .collect();
    let half = |odd: usize| -> Vec<usize> {
        let h: Vec<usize> = (0..documents.len()).filter(|i| i % 2 == odd).collect();
        if h.is_empty() {
            (0..documents.len()).collect()
        } else {
            h
        }
    };
    let (seen, unseen) = (half(0), half(1));
    let used = used_layers(layers, documents.iter());
    let history = (0..iterations)
        .map(|i| {
            let pool = if i < unseen_from { &seen } else { &unseen };
            let mut rng = rng_for(seed, &[i as u64]);
            let mut loads = vec![vec![0.0; experts]; used.len()];
            for _ in 0..per_iteration {
                if pool.is_empty() {
                    break;
                }
                let d = &documents[pool[rng.random_range(0..pool.len())]];
                for (out, &l) in loads.iter_mut().zip(&used) {
                    for (o, x) in out.iter_mut().zip(&d[l]) {
                        *o += x;
                    }
                }
            }
            loads
        })
        .collect();
    LoadHistory {
        layers: used.len(),
        experts,
        iterations: history,
    }
}

/// The layers some token routes through in any of `iterations` (`[layer][expert]` loads each).
fn used_layers<'a>(
    layers: usize,
    iterations: impl Iterator<Item = &'a Vec<Vec<f64>>> + Clone,
) -> Vec<usize> {
    (0..layers)
        .filter(|&l| iterations.clone().any(|it| it[l].iter().any(|&x| x > 0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_traces::{Sequence, TraceKind};

    #[test]
    fn continuous_batching_refills_finished_requests() {
        // Three sequences of 3, 1 and 2 tokens, one layer, experts = token index.
        let meta = moesim_traces::trace::meta(TraceKind::Tokens, 1, 4, 1, 1, Default::default());
        let seq = |n: usize, tokens: &[u32]| {
            let mut s = Sequence::with_capacity(format!("s{n}"), tokens.len(), 1, 1);
            for t in tokens {
                s.push_row(&[*t], None);
            }
            s
        };
        let t = TokenTrace {
            meta,
            sequences: vec![seq(0, &[0, 1, 2]), seq(1, &[3]), seq(2, &[1, 1])],
        };
        let h = batch_iterations(&t, 2, 1);
        // it0: s0[0], s1[0]; it1: s0[1], s2[0]; it2: s0[2], s2[1].
        assert_eq!(h.iterations.len(), 3);
        assert_eq!(h.iterations[0][0], vec![1.0, 0.0, 0.0, 1.0]);
        assert_eq!(h.iterations[1][0], vec![0.0, 2.0, 0.0, 0.0]);
        assert_eq!(h.iterations[2][0], vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn documents_are_drawn_whole_and_the_judged_iterations_from_the_other_half() {
        // Four one-token documents on one layer, expert = document index: an iteration's loads name the
        // documents it drew.
        let meta = moesim_traces::trace::meta(TraceKind::Tokens, 1, 4, 1, 1, Default::default());
        let doc = |e: u32| {
            let mut s = Sequence::with_capacity(format!("d{e}"), 1, 1, 1);
            s.push_row(&[e], None);
            s
        };
        let t = TokenTrace {
            meta,
            sequences: (0..4).map(doc).collect(),
        };
        let h = document_batches(&t, 3, 40, 10, 7);
        assert_eq!((h.iterations.len(), h.layers, h.experts), (40, 1, 4));
        for (i, it) in h.iterations.iter().enumerate() {
            let l = &it[0];
            // Three whole documents per iteration.
            assert_eq!(l.iter().sum::<f64>(), 3.0);
            // Before iteration 10 only documents 0 and 2, from then on only 1 and 3.
            let (from, not) = if i < 10 {
                ([0, 2], [1, 3])
            } else {
                ([1, 3], [0, 2])
            };
            assert_eq!(l[from[0]] + l[from[1]], 3.0, "iteration {i}: {l:?}");
            assert_eq!(l[not[0]] + l[not[1]], 0.0);
        }
        // Random draws, not a fixed pattern, and the same ones for the same seed.
        assert!(h.iterations.windows(2).any(|w| w[0] != w[1]));
        assert_eq!(h, document_batches(&t, 3, 40, 10, 7));
        assert_ne!(h, document_batches(&t, 3, 40, 10, 8));
    }
}
