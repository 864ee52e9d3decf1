//! Prompt and output lengths drawn from a distribution (or taken from a trace), whole tokens ≥ 1.

use crate::serving::config::Lengths;
use moesim_traces::rng::SimRng;
use rand::RngExt;
use rand_distr::{Distribution, LogNormal};

/// A prepared sampler of one length distribution.
#[derive(Debug, Clone, Copy)]
pub enum LengthSampler {
    Fixed(u64),
    Uniform(u64, u64),
    /// Log-normal (`mu`, `sigma` of the underlying normal) capped at `max`.
    LogNormal(LogNormal<f64>, u64),
    /// Lengths come from the trace.
    Trace,
}

impl LengthSampler {
    /// Log-normal parameters from the mean and CV: σ² = ln(1 + cv²), μ = ln(mean) − σ²/2, so that the
    /// distribution's mean is `mean` (before rounding and the cap).
    pub fn new(l: Lengths) -> Self {
        match l {
            Lengths::Fixed { tokens } => LengthSampler::Fixed(tokens),
            Lengths::Uniform { min, max } => LengthSampler::Uniform(min, max),
            Lengths::Lognormal { mean, cv, max } => {
                let sigma2 = (1.0 + cv * cv).ln();
                let d = LogNormal::new(mean.ln() - sigma2 / 2.0, sigma2.sqrt())
                    .expect("validated: positive mean, finite cv");
                LengthSampler::LogNormal(d, max)
            }
            Lengths::Trace => LengthSampler::Trace,
        }
    }

    /// One length; `trace` is the trace's length for this request (used by [`LengthSampler::Trace`]).
    pub fn sample(&self, rng: &mut SimRng, trace: u64) -> u64 {
        match *self {
            LengthSampler::Fixed(t) => t,
            LengthSampler::Uniform(a, b) => rng.random_range(a..=b),
            LengthSampler::LogNormal(d, max) => (d.sample(rng).round() as u64).clamp(1, max),
            LengthSampler::Trace => trace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_traces::rng::rng_for;

    #[test]
    fn lognormal_lengths_have_the_asked_mean_and_cv() {
        let s = LengthSampler::new(Lengths::Lognormal {
            mean: 500.0,
            cv: 0.8,
            max: u64::MAX,
        });
        let mut rng = rng_for(1, &[]);
        let n = 200_000;
        let x: Vec<f64> = (0..n).map(|_| s.sample(&mut rng, 0) as f64).collect();
        let mean = x.iter().sum::<f64>() / n as f64;
        let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        // Standard error of the mean: 0.8 × 500 / √200000 ≈ 0.9 tokens; rounding adds nothing on average.
        assert!((mean - 500.0).abs() < 5.0, "{mean}");
        assert!((sd / mean - 0.8).abs() < 0.02, "{}", sd / mean);
    }

    #[test]
    fn uniform_lengths_stay_in_range_and_fixed_ones_are_fixed() {
        let s = LengthSampler::new(Lengths::Uniform { min: 3, max: 5 });
        let mut rng = rng_for(2, &[]);
        let mut seen = [0; 3];
        for _ in 0..3000 {
            seen[(s.sample(&mut rng, 0) - 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&k| k > 900), "{seen:?}");
        assert_eq!(
            LengthSampler::new(Lengths::Fixed { tokens: 7 }).sample(&mut rng, 0),
            7
        );
        assert_eq!(LengthSampler::Trace.sample(&mut rng, 42), 42);
    }
}
