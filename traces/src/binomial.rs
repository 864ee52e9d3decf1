//! Fast Binomial(n, p) draws for the synthetic router, prepared once and sampled many times.
//!
//! A layer's count for one expert has the same distribution on every rank (same tokens, same pick
//! probability), so its sampler is built once per layer and drawn hundreds of times. Where the distribution
//! is narrow, it is tabulated exactly (the probability mass function by its ratio recurrence, down to
//! [`TAIL_MASS`] on each side) into a Walker alias table: one 64-bit random number per draw, no rejection
//! loop. Where it is wide (more than [`MAX_TABLE`] values carry mass), the rounded normal approximation is
//! used: its skewness is then below 0.05, below anything a 256-rank workload can resolve.
//!
//! Sampling with a table is exact up to the truncated tails and f64 rounding, which is more faithful than
//! the normal approximation it replaces for small expected counts (a cold expert's count cannot be
//! negative and is visibly skewed).

use crate::rng::SimRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Probability mass left out on each side of the table.
pub const TAIL_MASS: f64 = 1e-13;
/// Most values an alias table holds; wider distributions use the normal approximation.
pub const MAX_TABLE: usize = 640;

/// A prepared sampler of Binomial(n, p).
#[derive(Debug, Clone)]
pub enum BinomialSampler {
    /// p ≤ 0: always 0.
    Zero,
    /// p ≥ 1: always n.
    All { n: u64 },
    /// Alias table over `lo .. lo + entries.len()`.
    Table {
        lo: u64,
        /// Per slot: its threshold on 32 random bits and its two outcomes.
        entries: Vec<AliasSlot>,
    },
    /// Rounded normal with the binomial's mean and standard deviation, clamped to [0, n].
    Normal { n: u64, mean: f64, sd: f64 },
}

impl BinomialSampler {
    pub fn new(n: u64, p: f64) -> Self {
        if p.is_nan() || p <= 0.0 || n == 0 {
            return BinomialSampler::Zero;
        }
        if p >= 1.0 {
            return BinomialSampler::All { n };
        }
        let mean = n as f64 * p;
        let sd = (mean * (1.0 - p)).sqrt();
        // Tails beyond ~8 sd carry far less than TAIL_MASS; a quick width check avoids building a table
        // that would be thrown away.
        if 16.0 * sd + 2.0 > MAX_TABLE as f64 {
            return BinomialSampler::Normal { n, mean, sd };
        }
        match pmf_window(n, p) {
            Some((lo, pmf)) => BinomialSampler::Table {
                lo,
                entries: alias_table(&pmf),
            },
            None => BinomialSampler::Normal { n, mean, sd },
        }
    }

    pub fn sample(&self, rng: &mut SimRng) -> u64 {
        match self {
            BinomialSampler::Zero => 0,
            BinomialSampler::All { n } => *n,
            BinomialSampler::Table { lo, entries } => lo + alias_draw(entries, rng),
            BinomialSampler::Normal { n, mean, sd } => {
                let z: f64 = StandardNormal.sample(rng);
                let v = mean + sd * z;
                if v <= 0.0 {
                    0
                } else {
                    ((v + 0.5) as u64).min(*n)
                }
            }
        }
    }
}

/// The pmf of Binomial(n, p) on the window around the mode that holds all but `TAIL_MASS` per side,
/// normalised; `None` when that window is wider than [`MAX_TABLE`].
fn pmf_window(n: u64, p: f64) -> Option<(u64, Vec<f64>)> {
    let mode = (((n + 1) as f64) * p).floor().min(n as f64) as u64;
    let odds = p / (1.0 - p);
    // Relative to pmf(mode) = 1: up by pmf(k+1)/pmf(k) = (n-k)/(k+1)·odds, down by its inverse.
    let mut up = Vec::new();
    let mut v = 1.0f64;
    let mut k = mode;
    while k < n {
        v *= (n - k) as f64 / (k + 1) as f64 * odds;
        k += 1;
        if v < TAIL_MASS * 1e-3 {
            break;
        }
        up.push(v);
        if up.len() > MAX_TABLE {
            return None;
        }
    }
    let mut down = Vec::new();
    let mut v = 1.0f64;
    let mut k = mode;
    while k > 0 {
        v *= k as f64 / (n - k + 1) as f64 / odds;
        k -= 1;
        if v < TAIL_MASS * 1e-3 {
            break;
        }
        down.push(v);
        if down.len() + up.len() + 1 > MAX_TABLE {
            return None;
        }
    }
    let mut pmf: Vec<f64> = down.iter().rev().copied().collect();
    pmf.push(1.0);
    pmf.extend_from_slice(&up);
    let total: f64 = pmf.iter().sum();
    // Trim the tails to TAIL_MASS each (the loops above went further to find where mass ends).
    let (mut first, mut last) = (0, pmf.len() - 1);
    let mut cut = 0.0;
    while first < last && cut + pmf[first] / total < TAIL_MASS {
        cut += pmf[first] / total;
        first += 1;
    }
    let mut cut = 0.0;
    while last > first && cut + pmf[last] / total < TAIL_MASS {
        cut += pmf[last] / total;
        last -= 1;
    }
    let window: Vec<f64> = pmf[first..=last].to_vec();
    let sum: f64 = window.iter().sum();
    let lo = mode - down.len() as u64 + first as u64;
    Some((lo, window.into_iter().map(|x| x / sum).collect()))
}

/// Vose's alias method: slot i keeps i with probability threshold/2^32, else yields its alias.
fn alias_table(pmf: &[f64]) -> Vec<AliasSlot> {
    alias_pairs(pmf)
        .into_iter()
        .enumerate()
        .map(|(i, (threshold, alias))| AliasSlot {
            threshold,
            outcome: [alias, i as u32],
        })
        .collect()
}

/// Vose's construction as (threshold, alias) per slot.
fn alias_pairs(pmf: &[f64]) -> Vec<(u32, u32)> {
    let k = pmf.len();
    let mut scaled: Vec<f64> = pmf.iter().map(|p| p * k as f64).collect();
    let mut entries = vec![(u32::MAX, 0u32); k];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..k).partition(|&i| scaled[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        entries[s] = (to_threshold(scaled[s]), l as u32);
        scaled[l] -= 1.0 - scaled[s];
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // Whatever remains has probability 1 up to rounding: it always keeps itself.
    for i in small.into_iter().chain(large) {
        entries[i] = (u32::MAX, i as u32);
    }
    entries
}

fn to_threshold(x: f64) -> u32 {
    (x.clamp(0.0, 1.0) * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

impl BinomialSampler {
    /// Fills `out` with independent draws (the variant is decided once, not per draw).
    pub fn fill<'a>(&self, rng: &mut SimRng, out: impl Iterator<Item = &'a mut u32>) {
        match self {
            BinomialSampler::Table { lo, entries } => {
                for o in out {
                    *o = (lo + alias_draw(entries, rng)) as u32;
                }
            }
            other => {
                for o in out {
                    *o = other.sample(rng) as u32;
                }
            }
        }
    }
}

/// One slot of an alias table: kept (outcome `[1]`, the slot itself) when the coin is below `threshold`,
/// else its alias (outcome `[0]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AliasSlot {
    threshold: u32,
    outcome: [u32; 2],
}

/// One draw: the high 32 bits of a random word pick the slot, the low 32 its coin. The coin indexes the
/// outcome pair (a load, not a branch: a fair coin would mispredict half the time).
#[inline(always)]
fn alias_draw(entries: &[AliasSlot], rng: &mut SimRng) -> u64 {
    let r = rng.next_u64();
    let slot = &entries[(((r >> 32) * entries.len() as u64) >> 32) as usize];
    slot.outcome[((r as u32) < slot.threshold) as usize] as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;

    fn exact_pmf(n: u64, p: f64, k: u64) -> f64 {
        // log C(n, k) by summing logs: fine for the small n used here.
        let lc: f64 = (0..k)
            .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
            .sum();
        (lc + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp()
    }

    #[test]
    fn table_matches_the_binomial_pmf() {
        for (n, p) in [(4096, 0.0076), (64, 0.3), (1000, 0.001), (10, 0.5)] {
            let (lo, pmf) = pmf_window(n, p).expect("narrow");
            for (i, &q) in pmf.iter().enumerate() {
                let exact = exact_pmf(n, p, lo + i as u64);
                assert!(
                    (q - exact).abs() < 1e-9 + 1e-6 * exact,
                    "n={n} p={p} k={}: {q} vs {exact}",
                    lo + i as u64
                );
            }
        }
    }

    #[test]
    fn alias_table_reproduces_its_distribution() {
        let pmf = [0.5, 0.25, 0.125, 0.125];
        let t = alias_pairs(&pmf);
        // The probability each outcome gets: its own kept share plus what aliases send to it.
        let mut got = [0.0; 4];
        for (i, &(thr, alias)) in t.iter().enumerate() {
            let keep = thr as f64 / 4_294_967_296.0;
            got[i] += keep / 4.0;
            got[alias as usize] += (1.0 - keep) / 4.0;
        }
        for (g, p) in got.iter().zip(pmf) {
            assert!((g - p).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn draws_have_the_binomial_mean_and_variance() {
        for (n, p) in [(4096u64, 0.0076), (4096, 0.03), (50_000, 0.4), (7, 0.2)] {
            let s = BinomialSampler::new(n, p);
            let mut rng = rng_for(11, &[n, (p * 1e6) as u64]);
            let draws: Vec<f64> = (0..200_000).map(|_| s.sample(&mut rng) as f64).collect();
            let m = draws.iter().sum::<f64>() / draws.len() as f64;
            let var = draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / draws.len() as f64;
            let (em, ev) = (n as f64 * p, n as f64 * p * (1.0 - p));
            // 200k draws: the mean is within 5 standard errors, the variance within 2 %.
            assert!(
                (m - em).abs() < 5.0 * (ev / 2e5).sqrt() + 1e-9,
                "{n} {p}: {m} vs {em}"
            );
            assert!((var / ev - 1.0).abs() < 0.02, "{n} {p}: {var} vs {ev}");
            assert!(draws.iter().all(|&d| d >= 0.0 && d <= n as f64));
        }
    }

    #[test]
    fn narrow_distributions_are_tabulated_wide_ones_are_normal() {
        assert!(matches!(
            BinomialSampler::new(4096, 0.03),
            BinomialSampler::Table { .. }
        ));
        assert!(matches!(
            BinomialSampler::new(1_000_000, 0.5),
            BinomialSampler::Normal { .. }
        ));
        assert!(matches!(
            BinomialSampler::new(10, 0.0),
            BinomialSampler::Zero
        ));
        assert_eq!(
            BinomialSampler::new(10, 1.0).sample(&mut rng_for(1, &[])),
            10
        );
    }
}
