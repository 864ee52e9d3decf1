//! Per-token synthetic workloads with readable parameters: skew, drift (random walk of expert popularity,
//! hot-spot rotation, bursts), correlation across layers, token locality, and variable experts per token
//! (null / zero-computation experts, top-p style).
//!
//! A token at layer `l` of a sequence picks its experts slot by slot:
//! 1. **locality**: each expert the previous token of the same sequence chose in this layer is kept with
//!    probability `locality` (consecutive tokens reusing experts — what drives cache hit rates);
//! 2. **layer correlation**: each remaining slot, with probability `layer_correlation`, takes `π_l(x)`,
//!    where `x` is the expert in the same slot at layer `l−1` and `π_l` a fixed random permutation per layer;
//! 3. otherwise it is drawn from the layer's current popularity (without replacement);
//! 4. **null experts**: each chosen slot is then dropped with probability `null_expert_prob` (at least one
//!    expert stays).
//!
//! Popularity starts from [`Skew`] (shuffled per layer) and drifts per block of `drift.block_tokens`
//! tokens: a mean-reverting log-normal random walk (AR(1) with stationary σ `sigma` and block-to-block
//! correlation `persistence`), a rotation of the hot spots by one
//! expert every `rotate_every_blocks` blocks, and bursts (with probability `burst_prob` per block and layer one
//! expert's weight is multiplied by `burst_factor` for that block). All randomness is keyed by (seed, stream,
//! coordinates), so the output depends only on the parameters.

use crate::rng::{SimRng, rng_for};
use crate::synthetic::Skew;
use crate::trace::{Provenance, Sequence, TokenTrace, TraceKind, meta};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

/// Temporal drift of expert popularity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Drift {
    /// Tokens per drift step.
    pub block_tokens: usize,
    /// Stationary σ of each expert's log-weight perturbation, a mean-reverting (AR(1)) random walk around
    /// the base popularity (0 = no drift).
    pub sigma: f64,
    /// Correlation of the perturbation from one block to the next (1 = frozen, 0 = fresh every block).
    pub persistence: f64,
    /// Shift popularity by one expert every this many blocks (0 = never).
    pub rotate_every_blocks: usize,
    /// Probability per block and layer that one random expert bursts.
    pub burst_prob: f64,
    /// Weight multiplier of a bursting expert.
    pub burst_factor: f64,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            block_tokens: 256,
            sigma: 0.0,
            persistence: 0.5,
            rotate_every_blocks: 0,
            burst_prob: 0.0,
            burst_factor: 4.0,
        }
    }
}

/// Parameters of a per-token synthetic workload.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenModel {
    pub layers: usize,
    pub experts: usize,
    pub top_k: usize,
    pub skew: Skew,
    #[serde(default = "yes")]
    pub shuffle_per_layer: bool,
    /// Probability that each of the previous token's experts is reused.
    #[serde(default)]
    pub locality: f64,
    /// Probability that a slot follows the previous layer's choice through a fixed permutation.
    #[serde(default)]
    pub layer_correlation: f64,
    /// Probability that a chosen slot is a null (zero-computation) expert.
    #[serde(default)]
    pub null_expert_prob: f64,
    #[serde(default)]
    pub drift: Drift,
    #[serde(default)]
    pub seed: u64,
}

fn yes() -> bool {
    true
}

const STREAM_BASE: u64 = 11;
const STREAM_PERM: u64 = 12;
const STREAM_DRIFT: u64 = 13;
const STREAM_TOKENS: u64 = 14;

impl TokenModel {
    /// Checks the parameters are meaningful.
    pub fn validate(&self) -> Result<(), String> {
        let p01 = |x: f64, n: &str| {
            if (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{n} = {x}: expected a probability in [0, 1]"))
            }
        };
        if self.top_k == 0 {
            return Err("shape: top_k must be at least 1".into());
        }
        crate::limits::check_shape(self.layers, self.experts, self.top_k)
            .map_err(|e| format!("shape: {e}"))?;
        p01(self.locality, "locality")?;
        p01(self.layer_correlation, "layer_correlation")?;
        p01(self.null_expert_prob, "null_expert_prob")?;
        p01(self.drift.burst_prob, "drift.burst_prob")?;
        p01(self.drift.persistence, "drift.persistence")?;
        if self.drift.block_tokens == 0
            || !(0.0..=crate::dynamics::MAX_DRIFT_SIGMA).contains(&self.drift.sigma)
            || !(self.drift.burst_factor > 0.0
                && self.drift.burst_factor <= crate::dynamics::MAX_BURST_FACTOR)
        {
            return Err(format!(
                "drift: expected block_tokens ≥ 1, 0 ≤ sigma ≤ {}, 0 < burst_factor ≤ {} (got {}, {}, {})",
                crate::dynamics::MAX_DRIFT_SIGMA,
                crate::dynamics::MAX_BURST_FACTOR,
                self.drift.block_tokens,
                self.drift.sigma,
                self.drift.burst_factor
            ));
        }
        crate::limits::check_skew(&self.skew)
    }

    fn base_weights(&self, layer: usize) -> Vec<f64> {
        let mut rng = rng_for(self.seed, &[STREAM_BASE, layer as u64]);
        let n = self.experts;
        let mut w: Vec<f64> = match self.skew {
            Skew::Uniform | Skew::Balanced => vec![1.0; n],
            Skew::Zipf { s } => (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect(),
            Skew::LogNormal { sigma } => (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (sigma * z).exp()
                })
                .collect(),
            Skew::Dirichlet { alpha } => {
                let g = Gamma::new(alpha, 1.0).expect("validated");
                (0..n).map(|_| g.sample(&mut rng).max(1e-300)).collect()
            }
        };
        if self.shuffle_per_layer {
            w.shuffle(&mut rng);
        }
        w
    }

    /// Generates `sequences` sequences of `tokens_per_sequence` tokens each.
    pub fn generate(
        &self,
        sequences: usize,
        tokens_per_sequence: usize,
    ) -> Result<TokenTrace, String> {
        let mut seqs = Vec::with_capacity(sequences);
        self.generate_with(sequences, tokens_per_sequence, |s| seqs.push(s))?;
        Ok(TokenTrace {
            meta: self.meta(),
            sequences: seqs,
        })
    }

    /// The metadata of the traces this model generates.
    pub fn meta(&self) -> crate::TraceMeta {
        let mut m = meta(
            TraceKind::Tokens,
            self.layers,
            self.experts,
            self.top_k,
            1,
            Provenance {
                format: "synthetic".into(),
                source: serde_json::to_string(self).expect("serialisable"),
                tool: format!("moesim-traces {}", env!("CARGO_PKG_VERSION")),
                notes: Vec::new(),
            },
        );
        m.model = "synthetic".into();
        m
    }

    /// Generates sequences one at a time into `sink` (memory: one sequence and the drift state).
    pub fn generate_with(
        &self,
        sequences: usize,
        tokens_per_sequence: usize,
        mut sink: impl FnMut(Sequence),
    ) -> Result<(), String> {
        self.validate()?;
        let (ll, e, k) = (self.layers, self.experts, self.top_k);
        let entries = (tokens_per_sequence as u64).saturating_mul((ll * k) as u64);
        if entries > crate::limits::MAX_SEQUENCE_ENTRIES {
            return Err(format!(
                "{tokens_per_sequence} tokens per sequence × {ll} layers × top-{k} is beyond the {} expert \
                 entries one sequence may hold in memory",
                crate::limits::MAX_SEQUENCE_ENTRIES
            ));
        }
        if (sequences as u64)
            .checked_mul(tokens_per_sequence as u64)
            .is_none()
        {
            return Err(format!(
                "{sequences} sequences × {tokens_per_sequence} tokens overflow"
            ));
        }
        let perms: Vec<Vec<u32>> = (0..ll)
            .map(|l| {
                let mut p: Vec<u32> = (0..e as u32).collect();
                p.shuffle(&mut rng_for(self.seed, &[STREAM_PERM, l as u64]));
                p
            })
            .collect();
        let mut drift: Vec<DriftState> = (0..ll).map(|l| DriftState::new(self, l)).collect();
        let mut chosen = vec![false; e];
        for si in 0..sequences {
            let mut rng = rng_for(self.seed, &[STREAM_TOKENS, si as u64]);
            let mut rows: Vec<Vec<Vec<u32>>> = vec![Vec::with_capacity(tokens_per_sequence); ll];
            for t in 0..tokens_per_sequence {
                let block = (si * tokens_per_sequence + t) / self.drift.block_tokens;
                for l in 0..ll {
                    drift[l].advance_to(block, self);
                    let mut row: Vec<u32> = Vec::with_capacity(k);
                    if t > 0 {
                        for &x in &rows[l][t - 1] {
                            if row.len() < k && rng.random::<f64>() < self.locality {
                                row.push(x);
                            }
                        }
                    }
                    for &x in &row {
                        chosen[x as usize] = true;
                    }
                    let mut slot = row.len();
                    while row.len() < k {
                        let mut pick = None;
                        if l > 0
                            && self.layer_correlation > 0.0
                            && rng.random::<f64>() < self.layer_correlation
                            && let Some(&x) = rows[l - 1][t].get(slot)
                        {
                            let y = perms[l][x as usize];
                            if !chosen[y as usize] {
                                pick = Some(y);
                            }
                        }
                        let y = match pick {
                            Some(y) => y,
                            None => draw(&drift[l].cum, &chosen, &mut rng),
                        };
                        chosen[y as usize] = true;
                        row.push(y);
                        slot += 1;
                    }
                    for &x in &row {
                        chosen[x as usize] = false;
                    }
                    if self.null_expert_prob > 0.0 {
                        let keep: Vec<u32> = row
                            .iter()
                            .copied()
                            .filter(|_| rng.random::<f64>() >= self.null_expert_prob)
                            .collect();
                        row = if keep.is_empty() { vec![row[0]] } else { keep };
                    }
                    rows[l].push(row);
                }
            }
            let mut s =
                Sequence::with_capacity(format!("synthetic-{si}"), tokens_per_sequence, ll, k);
            for layer_rows in &rows {
                for r in layer_rows {
                    s.push_row(r, None);
                }
            }
            sink(s);
        }
        Ok(())
    }
}

/// One layer's drifting popularity, advanced block by block along the token stream.
struct DriftState {
    rng: SimRng,
    base: Vec<f64>,
    x: Vec<f64>,
    block: usize,
    cum: Vec<f64>,
}

impl DriftState {
    fn new(m: &TokenModel, layer: usize) -> Self {
        let base: Vec<f64> = m.base_weights(layer).iter().map(|w| w.ln()).collect();
        let mut rng = rng_for(m.seed, &[STREAM_DRIFT, layer as u64]);
        let x = base
            .iter()
            .map(|_| {
                if m.drift.sigma > 0.0 {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    m.drift.sigma * z
                } else {
                    0.0
                }
            })
            .collect();
        let mut d = DriftState {
            rng,
            base,
            x,
            block: 0,
            cum: Vec::new(),
        };
        d.rebuild(m);
        d
    }

    fn advance_to(&mut self, block: usize, m: &TokenModel) {
        let (sigma, rho) = (m.drift.sigma, m.drift.persistence);
        while self.block < block {
            self.block += 1;
            if sigma > 0.0 {
                let innov = sigma * (1.0 - rho * rho).sqrt();
                for x in self.x.iter_mut() {
                    let z: f64 = StandardNormal.sample(&mut self.rng);
                    *x = rho * *x + innov * z;
                }
            }
            self.rebuild(m);
        }
    }

    fn rebuild(&mut self, m: &TokenModel) {
        let e = self.base.len();
        let d = m.drift;
        let shift = self.block.checked_div(d.rotate_every_blocks).unwrap_or(0);
        let mut w: Vec<f64> = (0..e)
            .map(|i| {
                let j = (i + e - shift % e) % e;
                (self.base[j] + self.x[j]).exp()
            })
            .collect();
        if d.burst_prob > 0.0 && self.rng.random::<f64>() < d.burst_prob {
            let hot = self.rng.random_range(0..e);
            w[hot] *= d.burst_factor;
        }
        let mut acc = 0.0;
        self.cum = w
            .iter()
            .map(|x| {
                acc += x;
                acc
            })
            .collect();
    }
}

/// Draws one expert from cumulative weights `cum`, skipping those already chosen.
fn draw(cum: &[f64], chosen: &[bool], rng: &mut SimRng) -> u32 {
    let total = *cum.last().expect("experts ≥ 1");
    for _ in 0..32 {
        let u = rng.random::<f64>() * total;
        let i = cum.partition_point(|&c| c <= u).min(cum.len() - 1);
        if !chosen[i] {
            return i as u32;
        }
    }
    // heavy collisions (strong skew): draw among the free experts exactly
    let mut prev = 0.0;
    let free: Vec<(usize, f64)> = cum
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let w = c - prev;
            prev = c;
            (i, if chosen[i] { 0.0 } else { w })
        })
        .collect();
    let tot: f64 = free.iter().map(|x| x.1).sum();
    let mut u = rng.random::<f64>() * tot;
    for &(i, w) in &free {
        if w > 0.0 && u < w {
            return i as u32;
        }
        u -= w;
    }
    free.iter()
        .rev()
        .find(|x| !chosen[x.0])
        .map_or(0, |x| x.0 as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> TokenModel {
        TokenModel {
            layers: 3,
            experts: 16,
            top_k: 4,
            skew: Skew::Zipf { s: 1.0 },
            shuffle_per_layer: true,
            locality: 0.0,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
            drift: Drift::default(),
            seed: 5,
        }
    }

    #[test]
    fn rows_are_distinct_and_deterministic() {
        let t = model().generate(3, 200).unwrap();
        for s in &t.sequences {
            for l in 0..3 {
                for k in 0..s.tokens {
                    let r = s.row(l, k);
                    assert_eq!(r.len(), 4);
                    let mut v = r.to_vec();
                    v.sort_unstable();
                    v.dedup();
                    assert_eq!(v.len(), 4);
                }
            }
        }
        assert_eq!(t, model().generate(3, 200).unwrap());
    }

    #[test]
    fn locality_raises_reuse_and_null_experts_shorten_rows() {
        let reuse = |m: TokenModel| {
            let t = m.generate(2, 500).unwrap();
            let (mut r, mut n) = (0, 0);
            for s in &t.sequences {
                for k in 1..s.tokens {
                    let (a, b) = (s.row(0, k - 1), s.row(0, k));
                    n += a.len();
                    r += b.iter().filter(|x| a.contains(x)).count();
                }
            }
            r as f64 / n as f64
        };
        let lo = reuse(model());
        let hi = reuse(TokenModel {
            locality: 0.6,
            ..model()
        });
        assert!(hi > lo + 0.3, "{lo} {hi}");
        let t = TokenModel {
            null_expert_prob: 0.5,
            ..model()
        }
        .generate(1, 400)
        .unwrap();
        let mean = t.sequences[0].experts.len() as f64 / (3.0 * 400.0);
        assert!((1.8..2.4).contains(&mean), "{mean}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(
            TokenModel {
                locality: 1.5,
                ..model()
            }
            .generate(1, 1)
            .is_err()
        );
        assert!(
            TokenModel {
                top_k: 17,
                ..model()
            }
            .generate(1, 1)
            .is_err()
        );
    }
}
