//! Seeded synthetic routing: expert popularity with a chosen skew, sampled per rank.
//!
//! Each layer has a popularity vector `p` (uniform, Zipf, log-normal or Dirichlet weights, optionally in a
//! random expert order per layer so the hot expert differs between layers). A token picks `top_k` distinct
//! experts, so expert e is chosen by a token with probability `q_e = min(1, c·p_e)`, with `c` set so that
//! `Σ q_e = top_k`. Each rank's count for expert e is Binomial(tokens, q_e) (drawn from an exact table built
//! once per layer, or the normal approximation when the distribution is wide; see [`crate::binomial`]), then
//! nudged so the rank's total is exactly `tokens × top_k`.

use crate::binomial::BinomialSampler;
use crate::dynamics::Dynamics;
use crate::rng::{SimRng, rng_for};
use crate::{IterationRouting, RoutingShape, RoutingSource};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// How unequal expert popularity is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "lowercase", deny_unknown_fields)]
pub enum Skew {
    /// Every rank sends exactly tokens × top_k / experts to each expert (remainders spread round-robin):
    /// a perfectly balanced router, for closed-form checks.
    Balanced,
    /// Every expert equally popular; counts still vary by sampling.
    Uniform,
    /// Popularity of the i-th most popular expert ∝ 1 / (i+1)^s.
    Zipf { s: f64 },
    /// Popularity ∝ exp(σ·z), z standard normal (per-rank loads in real systems fit a log-normal best).
    #[serde(rename = "lognormal")]
    LogNormal { sigma: f64 },
    /// Popularity drawn from a symmetric Dirichlet(α): small α, strong skew.
    Dirichlet { alpha: f64 },
}

/// Parameters of a synthetic workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    pub skew: Skew,
    pub seed: u64,
    /// Shuffle which expert is hot independently in every layer.
    pub shuffle_per_layer: bool,
}

/// A synthetic routing workload.
#[derive(Debug, Clone)]
pub struct SyntheticRouting {
    shape: RoutingShape,
    iterations: usize,
    spec: SyntheticSpec,
    /// Per layer: probability that one token picks each expert (sums to top_k, each ≤ 1).
    pick_probability: Vec<Vec<f64>>,
    dynamics: Dynamics,
    /// With time-varying dynamics: per iteration, per layer, the pick probabilities.
    over_time: Option<Vec<Vec<Vec<f64>>>>,
    /// Without time-varying dynamics: per layer, the count samplers every iteration shares (built on
    /// first use, so iterations may be filled on any thread in any order).
    layer_samplers: Vec<OnceLock<LayerSamplers>>,
}

/// One layer's per-expert count distributions for one rank.
#[derive(Debug, Clone)]
struct LayerSamplers {
    /// Pick probabilities with the null-expert share removed.
    scaled: Vec<f64>,
    samplers: Vec<BinomialSampler>,
}

impl LayerSamplers {
    fn new(q: &[f64], null: f64, tokens: u64) -> Self {
        let scaled: Vec<f64> = q.iter().map(|p| p * (1.0 - null)).collect();
        let samplers = scaled
            .iter()
            .map(|&p| BinomialSampler::new(tokens, p))
            .collect();
        LayerSamplers { scaled, samplers }
    }
}

const STREAM_POPULARITY: u64 = 1;
const STREAM_SAMPLING: u64 = 2;

impl SyntheticRouting {
    pub fn new(shape: RoutingShape, iterations: usize, spec: SyntheticSpec) -> Self {
        Self::with_dynamics(shape, iterations, spec, Dynamics::default())
    }

    /// A workload whose popularity drifts over iterations, correlates across layers and/or routes some
    /// choices to null experts (see [`Dynamics`]). Time-varying dynamics precompute
    /// `iterations × layers × experts` probabilities. Invalid dynamics (see [`Dynamics::validate`]) are
    /// clamped into range.
    pub fn with_dynamics(
        shape: RoutingShape,
        iterations: usize,
        spec: SyntheticSpec,
        dynamics: Dynamics,
    ) -> Self {
        let mut d = dynamics;
        for v in [
            &mut d.drift_persistence,
            &mut d.burst_prob,
            &mut d.layer_correlation,
            &mut d.null_expert_prob,
        ] {
            *v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
        }
        d.drift_sigma = if d.drift_sigma.is_nan() {
            0.0
        } else {
            d.drift_sigma.max(0.0)
        };
        let mut weights: Vec<Vec<f64>> = (0..shape.moe_layers)
            .map(|layer| {
                let mut rng = rng_for(spec.seed, &[STREAM_POPULARITY, layer as u64]);
                popularity(&spec.skew, shape.experts, &mut rng, spec.shuffle_per_layer)
            })
            .collect();
        d.correlate_layers(&mut weights);
        let pick_probability = weights
            .iter()
            .map(|w| pick_probabilities(w, shape.top_k))
            .collect();
        let over_time = (d.varies_over_time() && spec.skew != Skew::Balanced).then(|| {
            d.weights_over_time(&weights, iterations, spec.seed)
                .into_iter()
                .map(|layers| {
                    layers
                        .iter()
                        .map(|w| pick_probabilities(w, shape.top_k))
                        .collect()
                })
                .collect()
        });
        SyntheticRouting {
            shape,
            iterations,
            spec,
            pick_probability,
            dynamics: d,
            over_time,
            layer_samplers: (0..shape.moe_layers).map(|_| OnceLock::new()).collect(),
        }
    }

    pub fn dynamics(&self) -> &Dynamics {
        &self.dynamics
    }

    /// Per layer: the probability that one token picks each expert.
    pub fn pick_probability(&self, layer: usize) -> &[f64] {
        &self.pick_probability[layer]
    }

    /// Per layer at `iteration`: the probability that one token picks each expert, with that iteration's
    /// drift, rotation and bursts (the static popularity when nothing varies over time). What the sampled
    /// counts of that iteration scatter around: `tokens × q` is each expert's expected load.
    pub fn pick_probability_at(&self, iteration: usize, layer: usize) -> &[f64] {
        match &self.over_time {
            Some(t) => &t[iteration.min(t.len().saturating_sub(1))][layer],
            None => &self.pick_probability[layer],
        }
    }

    pub fn spec(&self) -> &SyntheticSpec {
        &self.spec
    }
}

fn popularity(skew: &Skew, experts: usize, rng: &mut SimRng, shuffle: bool) -> Vec<f64> {
    let mut w: Vec<f64> = match *skew {
        Skew::Uniform | Skew::Balanced => vec![1.0; experts],
        Skew::Zipf { s } => (0..experts)
            .map(|i| 1.0 / ((i + 1) as f64).powf(s))
            .collect(),
        Skew::LogNormal { sigma } => (0..experts)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                (sigma * z).exp()
            })
            .collect(),
        Skew::Dirichlet { alpha } => {
            let g = Gamma::new(alpha, 1.0).expect("alpha validated positive");
            (0..experts).map(|_| g.sample(rng).max(1e-300)).collect()
        }
    };
    if shuffle {
        w.shuffle(rng);
    }
    w
}

/// Water-filling: q_e = min(1, c·p_e) with Σ q = k.
pub fn pick_probabilities(weights: &[f64], k: usize) -> Vec<f64> {
    let n = weights.len();
    let k = k.min(n) as f64;
    let total: f64 = weights.iter().sum();
    let mut q: Vec<f64> = weights.iter().map(|w| w / total * k).collect();
    for _ in 0..n {
        let capped: f64 = q.iter().filter(|&&x| x >= 1.0).count() as f64;
        let free: f64 = q.iter().filter(|&&x| x < 1.0).sum();
        if !q.iter().any(|&x| x > 1.0) || free <= 0.0 {
            break;
        }
        let scale = (k - capped) / free;
        for x in q.iter_mut() {
            *x = if *x >= 1.0 {
                1.0
            } else {
                (*x * scale).min(1.0)
            };
        }
    }
    q
}

/// One Binomial(n, p) draw (a sampler built for a single use).
fn sample_count(n: u64, p: f64, rng: &mut SimRng) -> u64 {
    BinomialSampler::new(n, p).sample(rng)
}

/// Samples one rank's counts: each ≤ tokens, summing to exactly tokens × k.
pub fn sample_rank(q: &[f64], tokens: u64, k: usize, rng: &mut SimRng, out: &mut [u32]) {
    sample_rank_to(q, tokens, tokens * k.min(q.len()) as u64, rng, out)
}

/// Samples one rank's counts: each ≤ tokens, summing to exactly `target`.
pub fn sample_rank_to(q: &[f64], tokens: u64, target: u64, rng: &mut SimRng, out: &mut [u32]) {
    let samplers: Vec<BinomialSampler> =
        q.iter().map(|&p| BinomialSampler::new(tokens, p)).collect();
    sample_rank_with(&samplers, q, tokens, target, rng, out)
}

/// [`sample_rank_to`] with the layer's samplers prepared once.
fn sample_rank_with(
    samplers: &[BinomialSampler],
    q: &[f64],
    tokens: u64,
    target: u64,
    rng: &mut SimRng,
    out: &mut [u32],
) {
    for (o, sampler) in out.iter_mut().zip(samplers) {
        *o = sampler.sample(rng) as u32;
    }
    nudge_to_total(q, tokens, target, rng, out);
}

/// Draws a layer's `[rank][expert]` counts (`block`, rank-major) expert by expert, so each expert's table
/// stays in cache across the ranks, then nudges each rank to its total (`targets`).
/// Padding of the expert-major draw buffer's columns (in counts: one 64-byte line).
const PAD: usize = 16;

fn sample_layer(
    samplers: &[BinomialSampler],
    q: &[f64],
    tokens: u64,
    targets: &[u64],
    rng: &mut SimRng,
    block: &mut [u32],
    by_expert: &mut Vec<u32>,
) {
    let experts = samplers.len();
    if experts == 0 {
        return;
    }
    // Draw into an expert-major buffer (contiguous writes), then transpose in tiles: writing the rank-major
    // block column by column would stride by a whole row per draw.
    let ranks = block.len() / experts;
    // Columns are padded to a stride that is not a multiple of a cache set's span: with a power-of-two
    // stride every column of a tile maps to the same few L1 sets and the transpose thrashes.
    let stride = ranks + PAD;
    by_expert.clear();
    by_expert.resize(stride * experts, 0);
    for (column, sampler) in by_expert.chunks_exact_mut(stride).zip(samplers) {
        sampler.fill(rng, column[..ranks].iter_mut());
    }
    const TILE: usize = 16;
    for r0 in (0..ranks).step_by(TILE) {
        let r1 = (r0 + TILE).min(ranks);
        for e0 in (0..experts).step_by(TILE) {
            let e1 = (e0 + TILE).min(experts);
            for (r, out) in (r0..r1).zip(block[r0 * experts..].chunks_exact_mut(experts)) {
                for (o, column) in out[e0..e1]
                    .iter_mut()
                    .zip(by_expert[e0 * stride..].chunks_exact(stride))
                {
                    *o = column[r];
                }
            }
        }
    }
    for (row, &target) in block.chunks_exact_mut(experts).zip(targets) {
        nudge_to_total(q, tokens, target, rng, row);
    }
}

/// Moves counts one at a time, round-robin from a random start, until they sum to `target`; an expert
/// never exceeds `tokens` (a token picks an expert at most once) and never-picked experts stay at zero.
fn nudge_to_total(q: &[f64], tokens: u64, target: u64, rng: &mut SimRng, out: &mut [u32]) {
    if out.is_empty() {
        return;
    }
    let sum: i64 = out.iter().map(|&c| c as i64).sum();
    let mut diff = target as i64 - sum;
    let n = out.len();
    let mut i = rng.random_range(0..n);
    let mut guard = 0usize;
    // Each full pass moves |diff| one step closer to zero unless no expert can move.
    let limit = n * (diff.unsigned_abs() as usize + 1);
    // `diff` only moves toward zero, so its sign is fixed: one branch-free loop per direction.
    let step = |i: &mut usize, guard: &mut usize| {
        *i += 1;
        if *i == n {
            *i = 0;
        }
        *guard += 1;
    };
    if diff > 0 {
        while diff != 0 && guard < limit {
            let moves = (out[i] as u64) < tokens && q[i] > 0.0;
            out[i] += moves as u32;
            diff -= moves as i64;
            step(&mut i, &mut guard);
        }
    } else {
        while diff != 0 && guard < limit {
            let moves = out[i] > 0;
            out[i] -= moves as u32;
            diff += moves as i64;
            step(&mut i, &mut guard);
        }
    }
}

/// Exactly even counts; the remainder goes to experts starting at an offset that rotates with the rank.
fn balanced_rank(tokens: u64, k: usize, rank: usize, out: &mut [u32]) {
    let e = out.len() as u64;
    let total = tokens * (k as u64).min(e);
    let (base, rem) = (total / e, total % e);
    for (i, o) in out.iter_mut().enumerate() {
        let shifted = (i as u64 + e - (rank as u64 % e)) % e;
        *o = (base + u64::from(shifted < rem)) as u32;
    }
}

impl RoutingSource for SyntheticRouting {
    fn shape(&self) -> RoutingShape {
        self.shape
    }

    fn iterations(&self) -> usize {
        self.iterations
    }

    fn fill_iteration(&self, iteration: usize, out: &mut IterationRouting) {
        let s = self.shape;
        let mut by_expert = Vec::new();
        for mb in 0..s.micro_batches {
            for layer in 0..s.moe_layers {
                let mut rng = rng_for(
                    self.spec.seed,
                    &[STREAM_SAMPLING, iteration as u64, mb as u64, layer as u64],
                );
                let q = self.pick_probability_at(iteration, layer);
                if self.spec.skew == Skew::Balanced {
                    for rank in 0..s.ranks {
                        balanced_rank(
                            s.tokens_per_rank,
                            s.top_k,
                            rank,
                            out.rank_counts_mut(mb, layer, rank),
                        );
                    }
                    continue;
                }
                let null = self.dynamics.null_expert_prob;
                // Every rank draws from the same per-expert distributions: prepare them once per layer,
                // and once for all iterations when popularity does not vary over time.
                let built;
                let (samplers, scaled) = match &self.over_time {
                    Some(_) => {
                        built = LayerSamplers::new(q, null, s.tokens_per_rank);
                        (&built.samplers, &built.scaled)
                    }
                    None => {
                        let l = self.layer_samplers[layer]
                            .get_or_init(|| LayerSamplers::new(q, null, s.tokens_per_rank));
                        (&l.samplers, &l.scaled)
                    }
                };
                let slots = s.tokens_per_rank * s.top_k.min(s.experts) as u64;
                // each (token, slot) goes to a null expert with probability `null`
                let targets: Vec<u64> = (0..s.ranks)
                    .map(|_| {
                        if null > 0.0 {
                            slots - sample_count(slots, null, &mut rng)
                        } else {
                            slots
                        }
                    })
                    .collect();
                sample_layer(
                    samplers,
                    scaled,
                    s.tokens_per_rank,
                    &targets,
                    &mut rng,
                    out.layer_counts_mut(mb, layer),
                    &mut by_expert,
                );
            }
        }
    }

    fn describe(&self) -> String {
        let skew = match self.spec.skew {
            Skew::Balanced => "balanced".to_string(),
            Skew::Uniform => "uniform".to_string(),
            Skew::Zipf { s } => format!("zipf(s={s})"),
            Skew::LogNormal { sigma } => format!("lognormal(sigma={sigma})"),
            Skew::Dirichlet { alpha } => format!("dirichlet(alpha={alpha})"),
        };
        let d = &self.dynamics;
        let mut extra = String::new();
        if d.drift_sigma > 0.0 {
            extra += &format!(", drift σ={} ρ={}", d.drift_sigma, d.drift_persistence);
        }
        if d.rotate_every > 0 {
            extra += &format!(", rotation every {} iterations", d.rotate_every);
        }
        if d.burst_prob > 0.0 {
            extra += &format!(", bursts p={} ×{}", d.burst_prob, d.burst_factor);
        }
        if d.layer_correlation > 0.0 {
            extra += &format!(", layer correlation {}", d.layer_correlation);
        }
        if d.null_expert_prob > 0.0 {
            extra += &format!(", null experts p={}", d.null_expert_prob);
        }
        format!("synthetic {skew}{extra}, seed {}", self.spec.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> RoutingShape {
        RoutingShape {
            moe_layers: 3,
            experts: 16,
            top_k: 4,
            ranks: 8,
            micro_batches: 2,
            tokens_per_rank: 1000,
        }
    }

    #[test]
    fn totals_are_exact_and_bounded() {
        for skew in [
            Skew::Balanced,
            Skew::Uniform,
            Skew::Zipf { s: 2.0 },
            Skew::LogNormal { sigma: 1.5 },
            Skew::Dirichlet { alpha: 0.3 },
        ] {
            let src = SyntheticRouting::new(
                shape(),
                4,
                SyntheticSpec {
                    skew,
                    seed: 3,
                    shuffle_per_layer: true,
                },
            );
            let it = src.iteration(2);
            for mb in 0..2 {
                for l in 0..3 {
                    for r in 0..8 {
                        let c = it.rank_counts(mb, l, r);
                        assert_eq!(c.iter().map(|&x| x as u64).sum::<u64>(), 4000, "{skew:?}");
                        assert!(c.iter().all(|&x| x <= 1000));
                    }
                }
            }
        }
    }

    #[test]
    fn same_seed_same_iteration_any_order() {
        let src = SyntheticRouting::new(
            shape(),
            4,
            SyntheticSpec {
                skew: Skew::Zipf { s: 1.0 },
                seed: 9,
                shuffle_per_layer: true,
            },
        );
        let a = src.iteration(3);
        let _ = src.iteration(1);
        assert_eq!(a, src.iteration(3));
        assert_ne!(a, src.iteration(2));
    }

    #[test]
    fn zipf_skew_concentrates_load() {
        let src = SyntheticRouting::new(
            shape(),
            1,
            SyntheticSpec {
                skew: Skew::Zipf { s: 1.5 },
                seed: 1,
                shuffle_per_layer: false,
            },
        );
        let loads = src.iteration(0).expert_loads(0, 0);
        let mean = loads.iter().sum::<u64>() as f64 / loads.len() as f64;
        assert_eq!(
            loads.iter().enumerate().max_by_key(|(_, l)| **l).unwrap().0,
            0
        );
        assert!(loads[0] as f64 > 2.0 * mean);
    }

    fn with(d: Dynamics) -> SyntheticRouting {
        SyntheticRouting::with_dynamics(
            shape(),
            12,
            SyntheticSpec {
                skew: Skew::Zipf { s: 1.2 },
                seed: 4,
                shuffle_per_layer: true,
            },
            d,
        )
    }

    fn hottest(loads: &[u64]) -> usize {
        loads.iter().enumerate().max_by_key(|(_, l)| **l).unwrap().0
    }

    #[test]
    fn default_dynamics_change_nothing() {
        let spec = SyntheticSpec {
            skew: Skew::LogNormal { sigma: 1.0 },
            seed: 8,
            shuffle_per_layer: true,
        };
        let a = SyntheticRouting::new(shape(), 3, spec);
        let b = SyntheticRouting::with_dynamics(shape(), 3, spec, Dynamics::default());
        assert_eq!(a.iteration(2), b.iteration(2));
    }

    #[test]
    fn rotation_moves_the_hot_expert() {
        let r = with(Dynamics {
            rotate_every: 3,
            ..Dynamics::default()
        });
        let h0 = hottest(&r.iteration(0).expert_loads(0, 0));
        assert_eq!(hottest(&r.iteration(2).expert_loads(0, 0)), h0);
        assert_eq!(hottest(&r.iteration(3).expert_loads(0, 0)), (h0 + 1) % 16);
        assert_eq!(hottest(&r.iteration(6).expert_loads(0, 0)), (h0 + 2) % 16);
    }

    #[test]
    fn drift_changes_shares_between_iterations() {
        let tv = |r: &SyntheticRouting| {
            let a = r.iteration(4).expert_loads(0, 1);
            let b = r.iteration(5).expert_loads(0, 1);
            crate::stats::tv_distance(&a, &b)
        };
        let still = tv(&with(Dynamics::default()));
        let moving = tv(&with(Dynamics {
            drift_sigma: 1.0,
            drift_persistence: 0.0,
            ..Dynamics::default()
        }));
        assert!(moving > still + 0.1, "{still} {moving}");
    }

    #[test]
    fn null_experts_reduce_assignments_and_layers_correlate() {
        let r = with(Dynamics {
            null_expert_prob: 0.25,
            ..Dynamics::default()
        });
        let it = r.iteration(0);
        let total = it.total_assignments() as f64;
        let full = (2 * 3 * 8 * 1000 * 4) as f64;
        assert!((total / full - 0.75).abs() < 0.01, "{}", total / full);
        for mb in 0..2 {
            for l in 0..3 {
                for rk in 0..8 {
                    assert!(it.rank_counts(mb, l, rk).iter().all(|&c| c <= 1000));
                }
            }
        }
        let c = with(Dynamics {
            layer_correlation: 1.0,
            ..Dynamics::default()
        });
        let it = c.iteration(0);
        let h = hottest(&it.expert_loads(0, 0));
        assert_eq!(hottest(&it.expert_loads(0, 1)), h);
        assert_eq!(hottest(&it.expert_loads(0, 2)), h);
    }

    #[test]
    fn water_filling_caps_at_one() {
        let q = pick_probabilities(&[100.0, 1.0, 1.0, 1.0], 2);
        assert!((q[0] - 1.0).abs() < 1e-12);
        assert!((q.iter().sum::<f64>() - 2.0).abs() < 1e-9);
    }
}
