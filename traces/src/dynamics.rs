//! Time and layer structure for the counts-level synthetic workload ([`crate::SyntheticRouting`]):
//! popularity drift across iterations (mean-reverting random walk, hot-spot rotation, bursts), correlation
//! of popularity across layers, and null (zero-computation) experts.
//!
//! All fields default to "off", so a scenario that names none of them gets exactly the static workload.

use crate::rng::rng_for;
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// How expert popularity changes over iterations and layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dynamics {
    /// Stationary σ of each expert's log-popularity perturbation, an AR(1) random walk over iterations.
    pub drift_sigma: f64,
    /// Iteration-to-iteration correlation of that walk (1 = frozen, 0 = fresh every iteration).
    pub drift_persistence: f64,
    /// Move every hot spot by one expert every this many iterations (0 = never).
    pub rotate_every: usize,
    /// Probability per (iteration, layer) that one random expert bursts.
    pub burst_prob: f64,
    /// Popularity multiplier of a bursting expert.
    pub burst_factor: f64,
    /// Correlation of log-popularity between consecutive layers (0 = independent, 1 = the same hot experts).
    pub layer_correlation: f64,
    /// Fraction of (token, slot) choices that go to a null expert (no computation, no communication), as in
    /// AdaMoE and MoE++: each rank routes about `tokens × top_k × (1 − p)` assignments.
    pub null_expert_prob: f64,
}

impl Default for Dynamics {
    fn default() -> Self {
        Dynamics {
            drift_sigma: 0.0,
            drift_persistence: 0.9,
            rotate_every: 0,
            burst_prob: 0.0,
            burst_factor: 4.0,
            layer_correlation: 0.0,
            null_expert_prob: 0.0,
        }
    }
}

/// Beyond these, popularity is one expert anyway and `exp` of the walk overflows.
pub const MAX_DRIFT_SIGMA: f64 = 16.0;
pub const MAX_BURST_FACTOR: f64 = 1e6;

const STREAM_DRIFT: u64 = 21;
const STREAM_BURST: u64 = 22;

impl Dynamics {
    /// Whether popularity changes from iteration to iteration.
    pub fn varies_over_time(&self) -> bool {
        self.drift_sigma > 0.0 || self.rotate_every > 0 || self.burst_prob > 0.0
    }

    /// Checks the parameters; an error names the field and its value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (v, n) in [
            (self.drift_persistence, "drift_persistence"),
            (self.burst_prob, "burst_prob"),
            (self.layer_correlation, "layer_correlation"),
            (self.null_expert_prob, "null_expert_prob"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((n, format!("{n} = {v}: expected a value in [0, 1]")));
            }
        }
        if !(0.0..=MAX_DRIFT_SIGMA).contains(&self.drift_sigma) {
            return Err((
                "drift_sigma",
                format!(
                    "drift_sigma = {}: expected 0 ≤ drift_sigma ≤ {MAX_DRIFT_SIGMA}",
                    self.drift_sigma
                ),
            ));
        }
        if !(self.burst_factor > 0.0 && self.burst_factor <= MAX_BURST_FACTOR) {
            return Err((
                "burst_factor",
                format!(
                    "burst_factor = {}: expected 0 < burst_factor ≤ {MAX_BURST_FACTOR}",
                    self.burst_factor
                ),
            ));
        }
        Ok(())
    }

    /// Makes each layer's weights correlate with the previous layer's (in log space, keeping the spread).
    pub fn correlate_layers(&self, weights: &mut [Vec<f64>]) {
        let rho = self.layer_correlation;
        if rho <= 0.0 {
            return;
        }
        let logs = |w: &[f64]| -> Vec<f64> {
            let l: Vec<f64> = w.iter().map(|x| x.max(1e-300).ln()).collect();
            let m = l.iter().sum::<f64>() / l.len().max(1) as f64;
            l.into_iter().map(|x| x - m).collect()
        };
        for i in 1..weights.len() {
            let prev = logs(&weights[i - 1]);
            let own = logs(&weights[i]);
            let a = (1.0 - rho * rho).max(0.0).sqrt();
            weights[i] = prev
                .iter()
                .zip(&own)
                .map(|(p, o)| (rho * p + a * o).exp())
                .collect();
        }
    }

    /// Per iteration, each layer's weights: `base` perturbed by drift, rotated and burst.
    pub fn weights_over_time(
        &self,
        base: &[Vec<f64>],
        iterations: usize,
        seed: u64,
    ) -> Vec<Vec<Vec<f64>>> {
        let mut out = vec![Vec::with_capacity(base.len()); iterations];
        for (layer, b) in base.iter().enumerate() {
            let e = b.len();
            let mut rng = rng_for(seed, &[STREAM_DRIFT, layer as u64]);
            let sigma = self.drift_sigma;
            let rho = self.drift_persistence;
            let mut x: Vec<f64> = (0..e)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    sigma * z
                })
                .collect();
            for (it, slot) in out.iter_mut().enumerate() {
                if it > 0 && sigma > 0.0 {
                    let innov = sigma * (1.0 - rho * rho).sqrt();
                    for v in x.iter_mut() {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        *v = rho * *v + innov * z;
                    }
                }
                let shift = it.checked_div(self.rotate_every).unwrap_or(0) % e.max(1);
                let mut w: Vec<f64> = (0..e)
                    .map(|i| {
                        let j = (i + e - shift) % e;
                        b[j] * x[j].exp()
                    })
                    .collect();
                if self.burst_prob > 0.0 {
                    let mut r = rng_for(seed, &[STREAM_BURST, it as u64, layer as u64]);
                    if r.random::<f64>() < self.burst_prob {
                        let hot = r.random_range(0..e);
                        w[hot] *= self.burst_factor;
                    }
                }
                slot.push(w);
            }
        }
        out
    }
}
