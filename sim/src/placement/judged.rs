//! How a plan did on iterations it did not see: the distribution of per-(iteration, layer) balancedness.
//!
//! The median says how a typical iteration runs; the 10th percentile how the slow ones do, which is what a
//! synchronous step waits for. Both the harness and `moesim place --evaluate-from` report it.

use serde::Serialize;

/// A distribution of per-(iteration, layer) balancedness.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judged {
    pub median: f64,
    pub p10: f64,
    pub mean: f64,
}

impl Judged {
    /// Median, 10th percentile (linear interpolation between order statistics) and mean of `v`; NaN for
    /// an empty `v`.
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let x = p * (v.len() - 1) as f64;
            let (i, f) = (x.floor() as usize, x.fract());
            v[i] + f * (v[(i + 1).min(v.len() - 1)] - v[i])
        };
        Judged {
            median: q(0.5),
            p10: q(0.1),
            mean: if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        // Eleven values 0, 0.1, …, 1 (shuffled): the 10th percentile is the second, the median the sixth.
        let v: Vec<f64> = [7, 3, 10, 0, 5, 1, 9, 2, 8, 4, 6]
            .iter()
            .map(|&i| i as f64 / 10.0)
            .collect();
        let j = Judged::of(v);
        assert!((j.p10 - 0.1).abs() < 1e-12 && (j.median - 0.5).abs() < 1e-12);
        assert!((j.mean - 0.5).abs() < 1e-12);
        // Two values: the 10th percentile lies a tenth of the way from the lower to the upper one.
        let j = Judged::of(vec![1.0, 0.0]);
        assert!((j.p10 - 0.1).abs() < 1e-12 && (j.median - 0.5).abs() < 1e-12);
        assert!(Judged::of(Vec::new()).median.is_nan());
    }
}
