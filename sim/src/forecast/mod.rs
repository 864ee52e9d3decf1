//! Straggler prediction: from the routing seen up to `plan_until`, predict the next window's step-time
//! distribution and which ranks will be on the critical path, then compare with what the window realizes.
//!
//! The prediction replays *forecast routing* ([`ForecastRouting`]): each layer's expert shares are the
//! mean of the history, and every predicted iteration draws its own shares around them with the
//! iteration-to-iteration dispersion the history showed beyond multinomial sampling noise; per-rank counts
//! are then sampled as in the synthetic generator. Compute noise in the predicted window uses a different
//! seed from the realized one: the predictor does not know the future's noise either.

pub mod routing;

pub use routing::ForecastRouting;

use crate::result::IterationSummary;
use crate::stats::percentile;
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, DiscreteCDF};

/// Predicted against realized, for the window after `plan_until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForecastResult {
    pub plan_until: usize,
    pub predicted_step_time_ms: QuantilesWithCi,
    pub realized_step_time_ms: Quantiles,
    /// |predicted − realized| / realized.
    pub error: QuantileErrors,
    pub predicted_critical_ranks: Vec<RankProbability>,
    pub realized_critical_ranks: Vec<RankShare>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Quantiles with 95% confidence intervals (order statistics, binomial).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct QuantilesWithCi {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p50_ci: [f64; 2],
    pub p90_ci: [f64; 2],
    pub p99_ci: [f64; 2],
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct QuantileErrors {
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankProbability {
    pub rank: usize,
    pub probability: f64,
    pub cause: crate::collective::Cause,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankShare {
    pub rank: usize,
    pub share: f64,
}

/// A distribution-free 95% confidence interval for the q-quantile of `sorted` samples.
pub fn quantile_ci(sorted: &[f64], q: f64) -> [f64; 2] {
    let n = sorted.len();
    if n < 2 {
        let v = sorted.first().copied().unwrap_or(0.0);
        return [v, v];
    }
    let b = Binomial::new(q, n as u64).expect("q in [0,1]");
    let lo = (b.inverse_cdf(0.025) as usize).saturating_sub(1).min(n - 1);
    let hi = (b.inverse_cdf(0.975) as usize).min(n - 1);
    [sorted[lo], sorted[hi]]
}

fn sorted_steps(iterations: &[IterationSummary]) -> Vec<f64> {
    let mut v: Vec<f64> = iterations.iter().map(|i| i.step_ms).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Compares predicted and realized windows.
pub fn compare(
    plan_until: usize,
    predicted: &[IterationSummary],
    realized: &[IterationSummary],
) -> ForecastResult {
    let p = sorted_steps(predicted);
    let r = sorted_steps(realized);
    let predicted_step_time_ms = QuantilesWithCi {
        p50: percentile(&p, 0.5),
        p90: percentile(&p, 0.9),
        p99: percentile(&p, 0.99),
        p50_ci: quantile_ci(&p, 0.5),
        p90_ci: quantile_ci(&p, 0.9),
        p99_ci: quantile_ci(&p, 0.99),
    };
    let realized_step_time_ms = Quantiles {
        p50: percentile(&r, 0.5),
        p90: percentile(&r, 0.9),
        p99: percentile(&r, 0.99),
    };
    let rel = |a: f64, b: f64| if b > 0.0 { (a - b).abs() / b } else { 0.0 };
    let shares = |its: &[IterationSummary]| {
        let mut counts: std::collections::BTreeMap<
            usize,
            (
                usize,
                std::collections::BTreeMap<crate::collective::Cause, usize>,
            ),
        > = Default::default();
        for i in its {
            if let (Some(rank), Some(cause)) = (i.critical_rank, i.cause) {
                let e = counts.entry(rank).or_default();
                e.0 += 1;
                *e.1.entry(cause).or_default() += 1;
            }
        }
        let mut v: Vec<(usize, f64, crate::collective::Cause)> = counts
            .into_iter()
            .map(|(rank, (n, causes))| {
                let cause = causes
                    .into_iter()
                    .max_by_key(|(c, k)| (*k, std::cmp::Reverse(*c)))
                    .map(|(c, _)| c)
                    .expect("one");
                (rank, n as f64 / its.len().max(1) as f64, cause)
            })
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    ForecastResult {
        plan_until,
        error: QuantileErrors {
            p50: rel(predicted_step_time_ms.p50, realized_step_time_ms.p50),
            p99: rel(predicted_step_time_ms.p99, realized_step_time_ms.p99),
        },
        predicted_step_time_ms,
        realized_step_time_ms,
        predicted_critical_ranks: shares(predicted)
            .into_iter()
            .map(|(rank, probability, cause)| RankProbability {
                rank,
                probability,
                cause,
            })
            .collect(),
        realized_critical_ranks: shares(realized)
            .into_iter()
            .map(|(rank, share, _)| RankShare { rank, share })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_ci_brackets_the_quantile() {
        let v: Vec<f64> = (0..200).map(f64::from).collect();
        let [lo, hi] = quantile_ci(&v, 0.5);
        assert!(lo < 99.5 && 99.5 < hi, "{lo} {hi}");
        assert!(hi - lo < 40.0);
        let [lo, hi] = quantile_ci(&v, 0.99);
        assert!(lo <= 197.0 && hi <= 199.0);
    }
}
