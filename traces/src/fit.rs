//! Fitting synthetic parameters to a trace, and rescaling a trace to other ranks and lengths.
//!
//! [`fit_tokens`] estimates a [`TokenModel`] whose generated traces reproduce a per-token trace's
//! statistics: skew (mean per-layer Gini of expert loads → Zipf `s`), token locality (fraction of the
//! previous token's experts reused → `locality`), drift (total-variation distance between consecutive
//! windows of `window` tokens at lags 1 and 4 → drift σ and persistence) and variable experts per token (→ `null_expert_prob`). Each
//! parameter is found by bisection on statistics measured on traces the model itself generates, so the
//! sampling noise of a finite trace is part of the fit. Layer correlation, rotation and bursts are not
//! fitted (left at 0).
//!
//! [`rescale`] uses a fitted model to produce a workload for another number of ranks and iterations that
//! keeps those statistics: consecutive generated tokens fill `tokens_per_rank` per rank, rank after rank,
//! iteration after iteration (the same order replay uses), streamed one iteration at a time.

use crate::error::TraceError;
use crate::native::{NativeReader, Record};
use crate::stats::{skew, tv_distance};
use crate::synthetic::{Skew, pick_probabilities};
use crate::tokengen::{Drift, TokenModel};
use crate::trace::{CountsTrace, Sequence, TokenTrace, Trace, TraceKind, TraceMeta};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::VecDeque;

/// The statistics a fit matches.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Mean per-layer Gini of expert loads.
    pub gini: f64,
    /// Mean per-layer max/mean expert load.
    pub load_max_over_mean: f64,
    /// Fraction of the previous token's experts reused (within sequences).
    pub locality: f64,
    /// Mean TV distance between consecutive windows of `window` tokens.
    pub drift_tv: f64,
    /// Mean TV distance between windows 4 apart.
    pub drift_tv_lag4: f64,
    /// Mean experts per token-layer row.
    pub mean_experts_per_token: f64,
}

/// Measures a token trace (`window` tokens per drift window).
pub fn measure(t: &TokenTrace, window: usize) -> Measured {
    let mut m = Measurer::new(t.meta.layers, t.meta.experts, window);
    for s in &t.sequences {
        m.add(s);
    }
    m.finish()
}

/// [`Measured`] accumulated one sequence at a time: memory per layer is the expert loads and the last five
/// drift windows (the lag-4 comparison), never the trace. [`measure`] and the streamed fit
/// ([`fit_native`]) both use it, so they agree exactly.
pub struct Measurer {
    experts: usize,
    window: usize,
    layers: Vec<LayerMeasure>,
    entries: u64,
    rows: u64,
    tokens: u64,
    sequences: u64,
}

/// One layer's running figures.
struct LayerMeasure {
    loads: Vec<u64>,
    current: Vec<u64>,
    in_window: usize,
    /// The last four complete windows, oldest first.
    recent: VecDeque<Vec<u64>>,
    windows: usize,
    lag1: f64,
    lag4: f64,
    reused: u64,
    prev_total: u64,
}

impl Measurer {
    /// A measurer of traces with `layers` layers of `experts` experts (`window` tokens per drift window).
    pub fn new(layers: usize, experts: usize, window: usize) -> Measurer {
        Measurer {
            experts,
            window: window.max(1),
            layers: (0..layers)
                .map(|_| LayerMeasure {
                    loads: vec![0; experts],
                    current: vec![0; experts],
                    in_window: 0,
                    recent: VecDeque::new(),
                    windows: 0,
                    lag1: 0.0,
                    lag4: 0.0,
                    reused: 0,
                    prev_total: 0,
                })
                .collect(),
            entries: 0,
            rows: 0,
            tokens: 0,
            sequences: 0,
        }
    }

    /// Adds the next sequence (its layers must be the measurer's).
    pub fn add(&mut self, s: &Sequence) {
        self.sequences += 1;
        self.tokens += s.tokens as u64;
        self.rows += (s.offsets.len() - 1) as u64;
        self.entries += s.experts.len() as u64;
        for (l, a) in self.layers.iter_mut().enumerate() {
            for tok in 0..s.tokens {
                let row = s.row(l, tok);
                for &e in row {
                    a.loads[e as usize] += 1;
                    a.current[e as usize] += 1;
                }
                if tok > 0 {
                    let prev = s.row(l, tok - 1);
                    a.prev_total += prev.len() as u64;
                    a.reused += row.iter().filter(|e| prev.contains(e)).count() as u64;
                }
                a.in_window += 1;
                if a.in_window == self.window {
                    a.close_window(self.experts);
                }
            }
        }
    }

    /// Tokens added so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Sequences added so far.
    pub fn sequences(&self) -> u64 {
        self.sequences
    }

    /// The statistics of everything added.
    pub fn finish(&self) -> Measured {
        let (mut gini, mut mom, mut loc, mut drift, mut drift4) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for a in &self.layers {
            let (mo, g, _, _) = skew(&a.loads);
            gini += g;
            mom += mo;
            let lag = |sum: f64, d: usize| {
                if a.windows > d {
                    sum / (a.windows - d) as f64
                } else {
                    0.0
                }
            };
            drift += lag(a.lag1, 1);
            drift4 += lag(a.lag4, 4);
            if a.prev_total > 0 {
                loc += a.reused as f64 / a.prev_total as f64;
            }
        }
        let layers = self.layers.len().max(1) as f64;
        Measured {
            gini: gini / layers,
            load_max_over_mean: mom / layers,
            locality: loc / layers,
            drift_tv: drift / layers,
            drift_tv_lag4: drift4 / layers,
            mean_experts_per_token: self.entries as f64 / self.rows.max(1) as f64,
        }
    }
}

impl LayerMeasure {
    /// Closes the current drift window: compares it with the windows 1 and 4 before it.
    fn close_window(&mut self, experts: usize) {
        let n = self.recent.len();
        if n >= 1 {
            self.lag1 += tv_distance(&self.recent[n - 1], &self.current);
        }
        if n >= 4 {
            self.lag4 += tv_distance(&self.recent[n - 4], &self.current);
        }
        let mut next = if n >= 4 {
            self.recent.pop_front().expect("four windows")
        } else {
            vec![0; experts]
        };
        next.iter_mut().for_each(|x| *x = 0);
        self.recent
            .push_back(std::mem::replace(&mut self.current, next));
        self.windows += 1;
        self.in_window = 0;
    }
}

/// Fit settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Tokens per drift window (also the drift block of the fitted model).
    pub window: usize,
    /// Seed of the fitted model.
    pub seed: u64,
    /// Tokens generated per evaluation during the search.
    pub fit_tokens: usize,
    /// Layers generated per evaluation during the search.
    pub fit_layers: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            window: 256,
            seed: 1,
            fit_tokens: 8_192,
            fit_layers: 2,
        }
    }
}

/// A fitted model and how well it matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub model: TokenModel,
    /// Mean tokens per sequence of the fitted trace (generation uses it).
    pub tokens_per_sequence: usize,
    pub sequences: usize,
    /// The trace's statistics.
    pub target: Measured,
    /// The statistics of a trace of the same size generated by `model`.
    pub achieved: Measured,
}

fn bisect(mut lo: f64, mut hi: f64, iters: usize, target: f64, f: impl Fn(f64) -> f64) -> f64 {
    if f(lo) >= target {
        return lo;
    }
    if f(hi) <= target {
        return hi;
    }
    for _ in 0..iters {
        let mid = 0.5 * (lo + hi);
        if f(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Largest drift window, tokens.
pub const MAX_WINDOW: usize = 1 << 24;

/// Most expert draws (evaluations × generated tokens × fitted layers × top-k × experts, the worst case of
/// a draw under strong skew) the fit's search may cost: fewer tokens per evaluation are generated beyond
/// it, and a fit that could not generate two drift windows is refused.
pub const MAX_SEARCH_WORK: f64 = 17_179_869_184.0; // 2^34

/// Evaluations of the search: two rounds of (skew, locality, and σ for four persistences) bisections.
const SEARCH_EVALUATIONS: f64 = 176.0;

/// Fits a [`TokenModel`] to a per-token trace.
pub fn fit_tokens(t: &TokenTrace, opts: &FitOptions) -> Result<Fit, String> {
    t.meta.check()?;
    check_window(opts)?;
    let mut m = Measurer::new(t.meta.layers, t.meta.experts, opts.window);
    for s in &t.sequences {
        m.add(s);
    }
    fit_measured(&t.meta, &m, opts)
}

/// Fits a native trace streamed from `r`, one record at a time: memory is the [`Measurer`]'s (per-expert
/// figures of each layer) and one sequence or iteration, never the file. Equals [`fit`] of the trace
/// read whole. Errors name the file (and the record, for a damaged one).
pub fn fit_native<R: std::io::Read>(
    r: &mut NativeReader<R>,
    opts: &FitOptions,
) -> Result<Fit, TraceError> {
    let meta = r.meta().clone();
    let path = r.path().to_path_buf();
    let refuse = |e: String| TraceError::file(&path, e);
    meta.check().map_err(refuse)?;
    match meta.kind {
        TraceKind::Tokens => {
            check_window(opts).map_err(refuse)?;
            let mut m = Measurer::new(meta.layers, meta.experts, opts.window);
            while let Some(rec) = r.next_record()? {
                if let Record::Sequence(s) = rec {
                    m.add(&s);
                }
            }
            fit_measured(&meta, &m, opts).map_err(refuse)
        }
        TraceKind::Counts => {
            let mut loads = vec![vec![0u64; meta.experts]; meta.layers];
            let mut iterations = 0usize;
            while let Some(rec) = r.next_record()? {
                if let Record::Iteration(v) = rec {
                    add_iteration_loads(&mut loads, &v, meta.ranks, meta.experts);
                    iterations += 1;
                }
            }
            Ok(fit_count_loads(&meta, &loads, iterations, opts))
        }
    }
}

/// Adds one counts iteration (`[layer][rank][expert]`) to per-layer loads.
fn add_iteration_loads(loads: &mut [Vec<u64>], v: &[u64], ranks: usize, experts: usize) {
    let layers = loads.len();
    for (i, chunk) in v.chunks_exact(experts.max(1)).enumerate() {
        for (l, &c) in loads[(i / ranks.max(1)) % layers].iter_mut().zip(chunk) {
            *l += c;
        }
    }
}

fn check_window(opts: &FitOptions) -> Result<(), String> {
    if opts.window == 0 || opts.window > MAX_WINDOW {
        return Err(format!(
            "window of {} tokens: expected 1..={MAX_WINDOW}",
            opts.window
        ));
    }
    Ok(())
}

/// The statistics of `sequences` sequences of `tps` tokens generated by `model`, streamed (one sequence
/// in memory at a time).
fn measure_model(
    model: &TokenModel,
    sequences: usize,
    tps: usize,
    window: usize,
) -> Result<Measured, String> {
    let mut m = Measurer::new(model.layers, model.experts, window);
    model.generate_with(sequences, tps, |s| m.add(&s))?;
    Ok(m.finish())
}

/// Fits a [`TokenModel`] to a trace of shape `meta` whose statistics `measured` holds.
pub fn fit_measured(
    meta: &TraceMeta,
    measured: &Measurer,
    opts: &FitOptions,
) -> Result<Fit, String> {
    let m = meta;
    check_window(opts)?;
    if measured.tokens() == 0 || m.top_k == 0 {
        return Err("the trace holds no tokens".into());
    }
    let target = measured.finish();
    let sequences = usize::try_from(measured.sequences()).unwrap_or(usize::MAX);
    let tps = usize::try_from(measured.tokens() / measured.sequences().max(1))
        .unwrap_or(usize::MAX)
        .max(2);
    // The search generates traces from candidate models: bound its work before starting. Under strong
    // skew each draw may scan every expert, so a token costs up to layers × top-k × experts.
    let fit_layers = m.layers.min(opts.fit_layers.max(1));
    let per_token = (fit_layers * m.top_k) as f64 * m.experts as f64;
    let affordable = (MAX_SEARCH_WORK / (SEARCH_EVALUATIONS * per_token)).min(1e15) as usize;
    let eval_tokens = opts.fit_tokens.max(10 * opts.window).min(affordable);
    if eval_tokens < 2 * opts.window {
        return Err(format!(
            "fitting a top-{} trace of {} experts may generate only {affordable} tokens per evaluation \
             ({SEARCH_EVALUATIONS} evaluations, at most {MAX_SEARCH_WORK:e} expert draws in all), fewer than \
             two drift windows of {} tokens: pass a smaller --window (at most {})",
            m.top_k,
            m.experts,
            opts.window,
            affordable / 2
        ));
    }
    // Sequences no longer than an evaluation (a trace of one long sequence must not make every
    // evaluation as long).
    let eval_tps = tps.min(eval_tokens);
    let n_seq_eval = (eval_tokens / eval_tps).max(1);
    let null = (1.0 - target.mean_experts_per_token / m.top_k as f64).clamp(0.0, 0.95);
    let null = if null < 1e-9 { 0.0 } else { null };
    let mut model = TokenModel {
        layers: m.layers.min(opts.fit_layers.max(1)),
        experts: m.experts,
        top_k: m.top_k,
        skew: Skew::Zipf { s: 0.0 },
        shuffle_per_layer: true,
        locality: 0.0,
        layer_correlation: 0.0,
        null_expert_prob: null,
        drift: Drift {
            block_tokens: opts.window.max(1),
            ..Drift::default()
        },
        seed: opts.seed,
    };
    // The bisections below vary skew and locality within the model's valid ranges.
    model.validate()?;
    // The first error of an evaluation (a sequence too large to generate, say) ends the fit.
    let failed: RefCell<Option<String>> = RefCell::new(None);
    let eval = |mm: &TokenModel| {
        if failed.borrow().is_some() {
            return target;
        }
        measure_model(mm, n_seq_eval, eval_tps, opts.window).unwrap_or_else(|e| {
            *failed.borrow_mut() = Some(e);
            target
        })
    };
    for _round in 0..2 {
        let base = model;
        let s = bisect(0.0, 4.0, 12, target.gini, |s| {
            eval(&TokenModel {
                skew: Skew::Zipf { s },
                ..base
            })
            .gini
        });
        model.skew = Skew::Zipf { s };
        let base = model;
        model.locality = bisect(0.0, 1.0, 12, target.locality, |p| {
            eval(&TokenModel {
                locality: p,
                ..base
            })
            .locality
        });
        // σ matches the lag-1 drift for each candidate persistence; the persistence that best matches the
        // lag-4 drift wins.
        let base = model;
        let mut best = (f64::INFINITY, base.drift);
        for rho in [0.0, 0.5, 0.8, 0.95] {
            let with = |sig: f64| TokenModel {
                drift: Drift {
                    sigma: sig,
                    persistence: rho,
                    ..base.drift
                },
                ..base
            };
            let sig = bisect(0.0, 3.0, 12, target.drift_tv, |sig| {
                eval(&with(sig)).drift_tv
            });
            let got = eval(&with(sig));
            let err = (got.drift_tv_lag4 - target.drift_tv_lag4).abs()
                + (got.drift_tv - target.drift_tv).abs();
            if err < best.0 {
                best = (err, with(sig).drift);
            }
        }
        model.drift = best.1;
    }
    if let Some(e) = failed.into_inner() {
        return Err(format!("generating traces to fit against: {e}"));
    }
    model.layers = m.layers;
    let achieved = measure_model(&model, sequences, tps, opts.window)?;
    Ok(Fit {
        model,
        tokens_per_sequence: tps,
        sequences,
        target,
        achieved,
    })
}

/// Fits the skew of a counts trace (Zipf `s` matching the mean per-layer Gini of expert loads); no locality
/// or drift.
pub fn fit_counts(c: &CountsTrace, opts: &FitOptions) -> Fit {
    fit_count_loads(&c.meta, &c.expert_loads(), c.iterations, opts)
}

/// [`fit_counts`] from a counts trace's per-layer expert loads (`[layer][expert]`, summed over iterations
/// and ranks) and its iteration count.
fn fit_count_loads(
    meta: &TraceMeta,
    loads: &[Vec<u64>],
    iterations: usize,
    opts: &FitOptions,
) -> Fit {
    let n = loads.len().max(1) as f64;
    let gini = loads.iter().map(|l| skew(l).1).sum::<f64>() / n;
    let mom = loads.iter().map(|l| skew(l).0).sum::<f64>() / n;
    let k = meta.top_k.max(1);
    let e = meta.experts;
    let expected_gini = |s: f64| {
        let w: Vec<f64> = (0..e).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect();
        let q = pick_probabilities(&w, k);
        let scaled: Vec<u64> = q.iter().map(|x| (x * 1e9) as u64).collect();
        skew(&scaled).1
    };
    let s = bisect(0.0, 4.0, 40, gini, expected_gini);
    let target = Measured {
        gini,
        load_max_over_mean: mom,
        locality: 0.0,
        drift_tv: 0.0,
        drift_tv_lag4: 0.0,
        mean_experts_per_token: k as f64,
    };
    let model = TokenModel {
        layers: meta.layers,
        experts: e,
        top_k: k,
        skew: Skew::Zipf { s },
        shuffle_per_layer: true,
        locality: 0.0,
        layer_correlation: 0.0,
        null_expert_prob: 0.0,
        drift: Drift {
            block_tokens: opts.window.max(1),
            ..Drift::default()
        },
        seed: opts.seed,
    };
    Fit {
        model,
        tokens_per_sequence: 1024,
        sequences: iterations,
        target,
        achieved: target,
    }
}

/// Fits either kind of trace.
pub fn fit(t: &Trace, opts: &FitOptions) -> Result<Fit, String> {
    match t {
        Trace::Tokens(tt) => fit_tokens(tt, opts),
        Trace::Counts(c) => Ok(fit_counts(c, opts)),
    }
}

/// The target of a rescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescaleSpec {
    pub ranks: usize,
    pub iterations: usize,
    pub tokens_per_rank: u64,
    /// Tokens per generated sequence (locality holds within a sequence).
    pub tokens_per_sequence: usize,
}

/// Streams a rescaled counts workload: `sink` receives each iteration's `[layer][rank][expert]` counts.
pub fn rescale(
    model: &TokenModel,
    spec: &RescaleSpec,
    mut sink: impl FnMut(&[u64]),
) -> Result<(), String> {
    model.validate()?;
    let (ll, e) = (model.layers, model.experts);
    let tps = spec.tokens_per_sequence.max(1);
    let per_iter = (spec.ranks as u64).saturating_mul(spec.tokens_per_rank);
    let total = per_iter.saturating_mul(spec.iterations as u64);
    if total == 0 {
        return Err(
            "nothing to generate: ranks, iterations and tokens per rank must be ≥ 1".into(),
        );
    }
    let cells = ll.saturating_mul(spec.ranks).saturating_mul(e);
    if spec.ranks > crate::limits::MAX_RANKS || cells > crate::limits::MAX_ITERATION_CELLS {
        return Err(format!(
            "{} ranks × {ll} layers × {e} experts per iteration: expected at most {} ranks and {} cells",
            spec.ranks,
            crate::limits::MAX_RANKS,
            crate::limits::MAX_ITERATION_CELLS
        ));
    }
    let n_seq = total.div_ceil(tps as u64) as usize;
    let mut buf = vec![0u64; ll * spec.ranks * e];
    let mut g = 0u64; // global token index
    let mut done = 0usize;
    model.generate_with(n_seq, tps, |s| {
        for tok in 0..s.tokens {
            if done == spec.iterations {
                return;
            }
            let in_iter = g % per_iter;
            let rank = (in_iter / spec.tokens_per_rank) as usize;
            for l in 0..ll {
                let o = (l * spec.ranks + rank) * e;
                for &x in s.row(l, tok) {
                    buf[o + x as usize] += 1;
                }
            }
            g += 1;
            if g.is_multiple_of(per_iter) {
                sink(&buf);
                buf.iter_mut().for_each(|x| *x = 0);
                done += 1;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(s: f64, locality: f64) -> TokenModel {
        TokenModel {
            layers: 2,
            experts: 32,
            top_k: 4,
            skew: Skew::Zipf { s },
            shuffle_per_layer: true,
            locality,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
            drift: Drift::default(),
            seed: 3,
        }
    }

    #[test]
    fn fit_recovers_known_parameters() {
        let truth = model(1.0, 0.4).generate(20, 500).unwrap();
        let f = fit_tokens(
            &truth,
            &FitOptions {
                seed: 99,
                ..FitOptions::default()
            },
        )
        .unwrap();
        let Skew::Zipf { s } = f.model.skew else {
            panic!()
        };
        assert!((s - 1.0).abs() < 0.15, "s {s}");
        assert!(
            (f.model.locality - 0.4).abs() < 0.05,
            "locality {}",
            f.model.locality
        );
        assert!((f.achieved.gini - f.target.gini).abs() < 0.03);
        assert!((f.achieved.locality - f.target.locality).abs() < 0.03);
    }

    #[test]
    fn rescale_streams_exact_totals() {
        let m = model(1.0, 0.3);
        let spec = RescaleSpec {
            ranks: 3,
            iterations: 4,
            tokens_per_rank: 50,
            tokens_per_sequence: 64,
        };
        let mut iters = Vec::new();
        rescale(&m, &spec, |c| iters.push(c.to_vec())).unwrap();
        assert_eq!(iters.len(), 4);
        for it in &iters {
            for chunk in it.chunks(32) {
                assert_eq!(chunk.iter().sum::<u64>(), 50 * 4);
            }
        }
    }

    /// The definition of [`measure`] over the whole trace in memory (every drift window kept), the
    /// reference the streaming [`Measurer`] must equal.
    fn two_pass_measure(t: &TokenTrace, window: usize) -> Measured {
        let m = &t.meta;
        let (mut gini, mut mom, mut loc, mut drift, mut drift4) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (mut reused, mut prev_total) = (0u64, 0u64);
        for l in 0..m.layers {
            let seq = t.layer_requests(l);
            let mut loads = vec![0u64; m.experts];
            for &e in &seq.experts {
                loads[e as usize] += 1;
            }
            let (a, g, _, _) = skew(&loads);
            gini += g;
            mom += a;
            let w = window.max(1);
            let windows: Vec<Vec<u64>> = (0..seq.steps() / w)
                .map(|i| {
                    let mut v = vec![0u64; m.experts];
                    for &e in &seq.experts[seq.offsets[i * w]..seq.offsets[(i + 1) * w]] {
                        v[e as usize] += 1;
                    }
                    v
                })
                .collect();
            let lag = |d: usize| -> f64 {
                if windows.len() > d {
                    (d..windows.len())
                        .map(|i| tv_distance(&windows[i - d], &windows[i]))
                        .sum::<f64>()
                        / (windows.len() - d) as f64
                } else {
                    0.0
                }
            };
            drift += lag(1);
            drift4 += lag(4);
            let (mut r, mut n) = (0u64, 0u64);
            for s in &t.sequences {
                for tok in 1..s.tokens {
                    let (a, b) = (s.row(l, tok - 1), s.row(l, tok));
                    n += a.len() as u64;
                    r += b.iter().filter(|e| a.contains(e)).count() as u64;
                }
            }
            reused += r;
            prev_total += n;
            if n > 0 {
                loc += r as f64 / n as f64;
            }
        }
        let layers = m.layers.max(1) as f64;
        let _ = (reused, prev_total);
        let rows = t.rows().max(1) as f64;
        Measured {
            gini: gini / layers,
            load_max_over_mean: mom / layers,
            locality: loc / layers,
            drift_tv: drift / layers,
            drift_tv_lag4: drift4 / layers,
            mean_experts_per_token: t.sequences.iter().map(|s| s.experts.len()).sum::<usize>()
                as f64
                / rows,
        }
    }

    #[test]
    fn streamed_measure_equals_the_whole_trace_definition() {
        for (seed, window, null) in [(1, 7, 0.0), (2, 64, 0.3), (3, 1, 0.0), (4, 5000, 0.1)] {
            let mut m = model(1.2, 0.3);
            m.seed = seed;
            m.null_expert_prob = null;
            m.drift.sigma = 0.5;
            m.drift.block_tokens = 16;
            let t = m.generate(9, 37 + seed as usize * 11).unwrap();
            let (got, want) = (measure(&t, window), two_pass_measure(&t, window));
            assert_eq!(got, want, "seed {seed}, window {window}");
            assert!(want.drift_tv > 0.0 || window > 300, "{want:?}");
        }
    }

    #[test]
    fn fit_streamed_from_a_native_file_equals_the_fit_of_the_file_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.moetrace");
        let t = Trace::Tokens(model(0.9, 0.4).generate(12, 200).unwrap());
        crate::native::write_native(&p, &t).unwrap();
        let opts = FitOptions {
            window: 64,
            ..FitOptions::default()
        };
        let whole = fit(&crate::native::read_native(&p).unwrap(), &opts).unwrap();
        let streamed = fit_native(&mut NativeReader::open(&p).unwrap(), &opts).unwrap();
        assert_eq!(streamed, whole);
        assert_eq!(streamed.sequences, 12);
        let counts = Trace::Counts(t.to_counts());
        crate::native::write_native(&p, &counts).unwrap();
        let whole = fit(&counts, &opts).unwrap();
        let streamed = fit_native(&mut NativeReader::open(&p).unwrap(), &opts).unwrap();
        assert_eq!(streamed, whole);
    }

    #[test]
    fn a_streamed_fit_of_a_damaged_file_names_the_file_and_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.moetrace");
        crate::native::write_native(&p, &Trace::Tokens(model(0.9, 0.4).generate(3, 50).unwrap()))
            .unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 30] ^= 0x55;
        std::fs::write(&p, &bytes).unwrap();
        let e = fit_native(&mut NativeReader::open(&p).unwrap(), &FitOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.moetrace") && e.contains("record"), "{e}");
    }

    #[test]
    fn a_fit_whose_search_would_be_endless_is_refused_naming_the_window() {
        let mut m = model(1.0, 0.0);
        m.layers = 1;
        m.experts = 65_536;
        m.top_k = 4_096;
        let t = m.generate(1, 2).unwrap();
        let e = fit_tokens(&t, &FitOptions::default()).unwrap_err();
        assert!(
            e.contains("top-4096") && e.contains("65536 experts") && e.contains("--window"),
            "{e}"
        );
        // A huge window asks for ten windows per evaluation: refused the same way.
        let t = model(1.0, 0.0).generate(2, 50).unwrap();
        let opts = FitOptions {
            window: MAX_WINDOW,
            ..FitOptions::default()
        };
        let e = fit_tokens(&t, &opts).unwrap_err();
        assert!(
            e.contains("16777216 tokens") && e.contains("--window"),
            "{e}"
        );
    }
}
