//! Routing for a predicted window: history as it was, then iterations drawn around the history's mean.

use moesim_traces::rng::rng_for;
use moesim_traces::synthetic::{pick_probabilities, sample_rank};
use moesim_traces::{IterationRouting, RoutingShape, RoutingSource};
use rand_distr::{Distribution, StandardNormal};

/// Iterations `< split` come from the actual workload; later ones are drawn from a fit of `0..split`.
pub struct ForecastRouting<'a> {
    actual: &'a dyn RoutingSource,
    split: usize,
    seed: u64,
    /// Per layer: mean expert shares over the history (sum 1).
    shares: Vec<Vec<f64>>,
    /// Per layer: log-normal dispersion of shares between iterations, beyond sampling noise.
    sigma: Vec<f64>,
}

impl<'a> ForecastRouting<'a> {
    /// Fits the last (up to 64) iterations before `split`.
    pub fn fit(actual: &'a dyn RoutingSource, split: usize, seed: u64) -> Self {
        let shape = actual.shape();
        let from = split.saturating_sub(64);
        let history: Vec<IterationRouting> = (from..split).map(|i| actual.iteration(i)).collect();
        let mut shares = Vec::with_capacity(shape.moe_layers);
        let mut sigma = Vec::with_capacity(shape.moe_layers);
        for layer in 0..shape.moe_layers {
            let per_it: Vec<(Vec<f64>, f64)> = history
                .iter()
                .map(|it| {
                    let mut loads = vec![0.0; shape.experts];
                    for mb in 0..shape.micro_batches {
                        for (e, x) in it.expert_loads(mb, layer).into_iter().enumerate() {
                            loads[e] += x as f64;
                        }
                    }
                    let total: f64 = loads.iter().sum::<f64>().max(1.0);
                    (loads.iter().map(|l| l / total).collect(), total)
                })
                .collect();
            let n = per_it.len().max(1) as f64;
            let mean: Vec<f64> = (0..shape.experts)
                .map(|e| per_it.iter().map(|(s, _)| s[e]).sum::<f64>() / n)
                .collect();
            // Share variance beyond multinomial sampling, as a log-normal σ² per expert, share-weighted.
            let mut s2 = 0.0;
            for e in 0..shape.experts {
                let m = mean[e];
                if m <= 0.0 || per_it.len() < 2 {
                    continue;
                }
                let var = per_it.iter().map(|(s, _)| (s[e] - m).powi(2)).sum::<f64>() / (n - 1.0);
                let sampling = per_it.iter().map(|(_, t)| m * (1.0 - m) / t).sum::<f64>() / n;
                s2 += m * (1.0 + (var - sampling).max(0.0) / (m * m)).ln();
            }
            shares.push(if per_it.is_empty() {
                vec![1.0 / shape.experts as f64; shape.experts]
            } else {
                mean
            });
            sigma.push(s2.max(0.0).sqrt());
        }
        ForecastRouting {
            actual,
            split,
            seed,
            shares,
            sigma,
        }
    }
}

impl RoutingSource for ForecastRouting<'_> {
    fn shape(&self) -> RoutingShape {
        self.actual.shape()
    }

    fn iterations(&self) -> usize {
        self.actual.iterations()
    }

    fn fill_iteration(&self, iteration: usize, out: &mut IterationRouting) {
        if iteration < self.split {
            return self.actual.fill_iteration(iteration, out);
        }
        let s = self.shape();
        for mb in 0..s.micro_batches {
            for layer in 0..s.moe_layers {
                let mut rng = rng_for(
                    self.seed,
                    &[0x666f_7265, iteration as u64, mb as u64, layer as u64],
                );
                let sg = self.sigma[layer];
                let drawn: Vec<f64> = self.shares[layer]
                    .iter()
                    .map(|&m| {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        m * (sg * z - sg * sg / 2.0).exp()
                    })
                    .collect();
                let q = pick_probabilities(&drawn, s.top_k);
                for rank in 0..s.ranks {
                    sample_rank(
                        &q,
                        s.tokens_per_rank,
                        s.top_k,
                        &mut rng,
                        out.rank_counts_mut(mb, layer, rank),
                    );
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "forecast of {} after iteration {}",
            self.actual.describe(),
            self.split
        )
    }
}
