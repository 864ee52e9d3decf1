//! Fitting cost models to samples.
//!
//! - GEMMs, per (dtype, n, k) shape that was measured: the medians over token count form a curve that is
//!   interpolated linearly in log(tokens)–log(time) space. Outside the measured token range the curve follows
//!   the fitted roofline's shape from its nearest end point, so it stays continuous and keeps the efficiency
//!   measured at the edge.
//! - GEMMs of shapes not measured: a roofline with efficiency, `launch + max(FLOPs / F, bytes / B)`, with the
//!   effective rates `F` (per dtype) and `B` fitted to every GEMM sample by least squares in log time.
//! - Grouped GEMMs: the ratio of one grouped launch to the sum of its experts' single GEMMs, per shape, over
//!   tokens per expert.
//! - Copies, per path, and collectives, per (operation, GPU count): `latency + bytes / bandwidth`, fitted by
//!   least squares on relative error.
//!
//! Every fit reports its error against the samples it was fitted to ([`FitError`]).

use crate::cost_model::{CollectiveOp, CopyKind};
use crate::profile::{Dtype, Overhead, Samples};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A roofline with efficiency for one dtype: effective (achieved) rates, not datasheet peaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RooflineFit {
    pub dtype: Dtype,
    /// Effective compute rate (FLOP/s ÷ 1e12) reached by large GEMMs.
    pub tflops: f64,
    /// Effective memory bandwidth (bytes/s ÷ 1e9) reached by small, weight-bound GEMMs.
    pub gbytes_per_s: f64,
}

impl RooflineFit {
    /// Time without launch overhead.
    pub fn body_s(&self, m: f64, n: f64, k: f64) -> f64 {
        let flops = 2.0 * m * n * k;
        let bytes = (m * k + k * n + m * n) * self.dtype.bytes() as f64;
        (flops / (self.tflops * 1e12)).max(bytes / (self.gbytes_per_s * 1e9))
    }
}

/// Measured GEMM times of one shape over token counts (`tokens` strictly increasing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmCurve {
    pub dtype: Dtype,
    pub n: u64,
    pub k: u64,
    pub tokens: Vec<u64>,
    /// Median time at each token count, launch included.
    pub time_us: Vec<f64>,
}

/// Grouped-launch factor of one shape: grouped time ÷ (sum of the experts' single GEMMs without their launches
/// + one launch), over tokens per expert (strictly increasing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupedCurve {
    pub dtype: Dtype,
    pub n: u64,
    pub k: u64,
    pub experts: u32,
    pub tokens_per_expert: Vec<u32>,
    pub factor: Vec<f64>,
}

/// `latency + bytes / bandwidth` for one copy path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyFit {
    pub kind: CopyKind,
    pub latency_us: f64,
    pub gbytes_per_s: f64,
    /// Largest relative error of the fit over its samples, in percent (0 for datasheet profiles).
    pub max_error_pct: f64,
}

impl CopyFit {
    pub fn time_s(&self, bytes: f64) -> f64 {
        self.latency_us * 1e-6 + bytes / (self.gbytes_per_s * 1e9)
    }
}

/// `latency + bytes_per_gpu / bandwidth` for one collective on one GPU count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveFit {
    pub op: CollectiveOp,
    pub gpus: usize,
    pub latency_us: f64,
    /// Bytes per GPU per second ÷ 1e9 ("algorithm bandwidth" in nccl-tests terms).
    pub gbytes_per_s: f64,
    pub max_error_pct: f64,
}

impl CollectiveFit {
    pub fn time_s(&self, bytes_per_gpu: f64) -> f64 {
        self.latency_us * 1e-6 + bytes_per_gpu / (self.gbytes_per_s * 1e9)
    }
}

/// How well the fitted model reproduces the samples, in percent of the measured median.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitError {
    /// Leave-one-out error of log-log interpolation at interior token counts: each interior point predicted
    /// from the curve without it (an honest estimate of the error between measured points).
    pub gemm_interpolation_median_pct: f64,
    pub gemm_interpolation_max_pct: f64,
    /// Error of the roofline-with-efficiency fit over all GEMM samples (what an unmeasured shape can expect).
    pub gemm_roofline_median_pct: f64,
    pub gemm_roofline_max_pct: f64,
    /// Largest copy-fit error over all paths.
    pub copy_max_pct: f64,
    /// Largest collective-fit error.
    pub collective_max_pct: f64,
    /// Samples each figure is based on.
    pub gemm_samples: usize,
}

/// The model a profile's samples were fitted to; what [`crate::MeasuredCost`] evaluates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FittedModel {
    pub launch_overhead_us: f64,
    /// Effective HBM rate of memory-bound kernels (bytes read + written per second ÷ 1e9).
    pub memory_gbytes_per_s: f64,
    /// One per dtype; at least one entry.
    pub roofline: Vec<RooflineFit>,
    #[serde(default)]
    pub gemm_curves: Vec<GemmCurve>,
    #[serde(default)]
    pub grouped_curves: Vec<GroupedCurve>,
    #[serde(default)]
    pub copy: Vec<CopyFit>,
    #[serde(default)]
    pub collectives: Vec<CollectiveFit>,
    #[serde(default)]
    pub fit_error: FitError,
}

/// Why samples could not be fitted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FitFailure {
    #[error("no GEMM samples: a profile needs at least one measured GEMM to fit a roofline")]
    NoGemm,
    #[error("no kernel-launch sample")]
    NoLaunch,
}

impl FittedModel {
    /// The roofline for `dtype_bytes`-byte elements: the fitted one for that width, else the first one with its
    /// compute rate scaled by the width ratio (tensor cores double their rate as the width halves).
    pub fn roofline_for(&self, dtype_bytes: u32) -> RooflineFit {
        for d in Dtype::for_bytes(dtype_bytes) {
            if let Some(r) = self.roofline.iter().find(|r| r.dtype == *d) {
                return r.clone();
            }
        }
        let base = &self.roofline[0];
        let scale = base.dtype.bytes() as f64 / dtype_bytes.max(1) as f64;
        RooflineFit {
            dtype: Dtype::for_bytes(dtype_bytes)
                .first()
                .copied()
                .unwrap_or(base.dtype),
            tflops: base.tflops * scale,
            gbytes_per_s: base.gbytes_per_s,
        }
    }

    /// The measured curve for a shape, if there is one.
    pub fn curve(&self, n: u64, k: u64, dtype_bytes: u32) -> Option<&GemmCurve> {
        Dtype::for_bytes(dtype_bytes).iter().find_map(|d| {
            self.gemm_curves
                .iter()
                .find(|c| c.dtype == *d && c.n == n && c.k == k)
        })
    }

    /// Roofline time of one GEMM, launch included.
    pub fn roofline_gemm_s(&self, m: u64, n: u64, k: u64, dtype_bytes: u32) -> f64 {
        let r = self.roofline_for(dtype_bytes);
        let body = r.body_s(m as f64, n as f64, k as f64);
        // A roofline fitted for another width prices bytes at its own width: rescale the bytes term.
        let body = if r.dtype.bytes() == dtype_bytes {
            body
        } else {
            let flops = 2.0 * m as f64 * n as f64 * k as f64 / (r.tflops * 1e12);
            let bytes =
                (m * k + k * n + m * n) as f64 * dtype_bytes as f64 / (r.gbytes_per_s * 1e9);
            flops.max(bytes)
        };
        self.launch_overhead_us * 1e-6 + body
    }

    /// Time of one GEMM: the measured curve where the shape was measured, else the roofline.
    pub fn gemm_s(&self, m: u64, n: u64, k: u64, dtype_bytes: u32) -> f64 {
        if m == 0 || n == 0 || k == 0 {
            return self.launch_overhead_us * 1e-6;
        }
        match self.curve(n, k, dtype_bytes) {
            Some(c) => {
                let roof = |x: u64| self.roofline_gemm_s(x, n, k, dtype_bytes);
                interpolate_curve(&c.tokens, &c.time_us, m, roof) * 1e-6
            }
            None => self.roofline_gemm_s(m, n, k, dtype_bytes),
        }
    }

    /// Grouped-launch factor for `tokens_per_expert` tokens per expert on a shape (1 where not measured).
    pub fn grouped_factor(
        &self,
        n: u64,
        k: u64,
        dtype_bytes: u32,
        experts: u32,
        mean_tokens: f64,
    ) -> f64 {
        let dtypes = Dtype::for_bytes(dtype_bytes);
        let best = self
            .grouped_curves
            .iter()
            .filter(|c| c.n == n && c.k == k && dtypes.contains(&c.dtype) && !c.factor.is_empty())
            .min_by_key(|c| c.experts.abs_diff(experts));
        let Some(c) = best else { return 1.0 };
        interpolate_clamped(&c.tokens_per_expert, &c.factor, mean_tokens)
    }
}

/// Interpolates `time_us` over `tokens` at `m` in log(tokens)–log(time) space with a monotone cubic (PCHIP:
/// Fritsch–Carlson slopes), which is exact at the measured points, never overshoots between them, and follows
/// the rounded knee between the weight-bound and compute-bound regimes far better than straight segments.
/// Outside the measured range the end point is scaled by the ratio of `roofline(m)` to `roofline(end)`.
pub fn interpolate_curve(
    tokens: &[u64],
    time_us: &[f64],
    m: u64,
    roofline: impl Fn(u64) -> f64,
) -> f64 {
    debug_assert_eq!(tokens.len(), time_us.len());
    let last = tokens.len() - 1;
    if m <= tokens[0] {
        return time_us[0] * roofline(m) / roofline(tokens[0]);
    }
    if m >= tokens[last] {
        return time_us[last] * roofline(m) / roofline(tokens[last]);
    }
    pchip(
        |j| (tokens[j] as f64).ln(),
        |j| time_us[j].ln(),
        tokens.len(),
        (m as f64).ln(),
    )
    .exp()
}

/// Monotone piecewise-cubic Hermite interpolation at `x` over `n` points (`x(j)`, `y(j)`), `x` strictly
/// increasing and `x(0) < x < x(n − 1)`. Points are read through closures so callers interpolate in log
/// space without allocating (the simulator prices GEMMs in its inner loop).
pub fn pchip(xs: impl Fn(usize) -> f64, ys: impl Fn(usize) -> f64, n: usize, x: f64) -> f64 {
    // The segment: the last i with x(i) <= x, by bisection.
    let (mut lo, mut hi) = (0usize, n - 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if xs(mid) <= x {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let i = lo;
    let h = |j: usize| xs(j + 1) - xs(j);
    let delta = |j: usize| (ys(j + 1) - ys(j)) / h(j);
    let slope = |j: usize| -> f64 {
        if j == 0 {
            return delta(0);
        }
        if j == n - 1 {
            return delta(n - 2);
        }
        let (d0, d1) = (delta(j - 1), delta(j));
        if d0 * d1 <= 0.0 {
            return 0.0;
        }
        let (w1, w2) = (2.0 * h(j) + h(j - 1), h(j) + 2.0 * h(j - 1));
        (w1 + w2) / (w1 / d0 + w2 / d1)
    };
    let (hi, t) = (h(i), (x - xs(i)) / h(i));
    let (t2, t3) = (t * t, t * t * t);
    let h00 = 2.0 * t3 - 3.0 * t2 + 1.0;
    let h10 = t3 - 2.0 * t2 + t;
    let h01 = -2.0 * t3 + 3.0 * t2;
    let h11 = t3 - t2;
    h00 * ys(i) + h10 * hi * slope(i) + h01 * ys(i + 1) + h11 * hi * slope(i + 1)
}

/// Linear interpolation in log(x), clamped to the end values outside the range (`xs` strictly increasing).
pub fn interpolate_clamped(xs: &[u32], ys: &[f64], x: f64) -> f64 {
    let last = xs.len() - 1;
    if x <= xs[0] as f64 {
        return ys[0];
    }
    if x >= xs[last] as f64 {
        return ys[last];
    }
    let i = xs.partition_point(|&t| t as f64 <= x) - 1;
    let (x0, x1) = ((xs[i] as f64).ln(), (xs[i + 1] as f64).ln());
    let w = (x.ln() - x0) / (x1 - x0);
    ys[i] + w * (ys[i + 1] - ys[i])
}

/// Fits a model to measured samples.
pub fn fit(samples: &Samples) -> Result<FittedModel, FitFailure> {
    if samples.gemm.is_empty() {
        return Err(FitFailure::NoGemm);
    }
    let launch_us = samples
        .overhead
        .iter()
        .find(|o| o.what == Overhead::KernelLaunch)
        .map(|o| o.timing.median_us)
        .ok_or(FitFailure::NoLaunch)?;

    // Curves per shape: medians sorted by token count (a repeated token count keeps its last sample).
    let mut by_shape: BTreeMap<(Dtype, u64, u64), BTreeMap<u64, f64>> = BTreeMap::new();
    for s in &samples.gemm {
        by_shape
            .entry((s.dtype, s.n, s.k))
            .or_default()
            .insert(s.m, s.timing.median_us);
    }
    let gemm_curves: Vec<GemmCurve> = by_shape
        .into_iter()
        .map(|((dtype, n, k), pts)| GemmCurve {
            dtype,
            n,
            k,
            tokens: pts.keys().copied().collect(),
            time_us: pts.values().copied().collect(),
        })
        .collect();

    // Roofline per dtype.
    let mut roofline = Vec::new();
    let mut dtypes: Vec<Dtype> = samples.gemm.iter().map(|s| s.dtype).collect();
    dtypes.sort();
    dtypes.dedup();
    for d in dtypes {
        let pts: Vec<(f64, f64, f64, f64)> = samples
            .gemm
            .iter()
            .filter(|s| s.dtype == d)
            .map(|s| (s.m as f64, s.n as f64, s.k as f64, s.timing.median_s()))
            .collect();
        roofline.push(fit_roofline(d, launch_us * 1e-6, &pts));
    }

    let copy: Vec<CopyFit> = CopyKind::ALL
        .iter()
        .filter_map(|&kind| {
            let pts: Vec<(f64, f64)> = samples
                .copy
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| (c.bytes as f64, c.timing.median_s()))
                .collect();
            let (lat, bw, err) = fit_latency_bandwidth(&pts)?;
            Some(CopyFit {
                kind,
                latency_us: lat * 1e6,
                gbytes_per_s: bw / 1e9,
                max_error_pct: err,
            })
        })
        .collect();

    let mut groups: BTreeMap<(CollectiveOp, usize), Vec<(f64, f64)>> = BTreeMap::new();
    for c in &samples.collective {
        groups
            .entry((c.op, c.gpus))
            .or_default()
            .push((c.bytes_per_gpu as f64, c.timing.median_s()));
    }
    let collectives: Vec<CollectiveFit> = groups
        .into_iter()
        .filter_map(|((op, gpus), pts)| {
            let (lat, bw, err) = fit_latency_bandwidth(&pts)?;
            Some(CollectiveFit {
                op,
                gpus,
                latency_us: lat * 1e6,
                gbytes_per_s: bw / 1e9,
                max_error_pct: err,
            })
        })
        .collect();

    // Memory-bound kernels: a device-to-device copy reads and writes every byte once.
    let memory_gbytes_per_s = copy
        .iter()
        .find(|c| c.kind == CopyKind::D2d)
        .map(|c| 2.0 * c.gbytes_per_s)
        .unwrap_or_else(|| roofline[0].gbytes_per_s);

    let mut model = FittedModel {
        launch_overhead_us: launch_us,
        memory_gbytes_per_s,
        roofline,
        gemm_curves,
        grouped_curves: Vec::new(),
        copy,
        collectives,
        fit_error: FitError::default(),
    };

    // Grouped factors against the single-GEMM model just fitted.
    let mut grouped: BTreeMap<(Dtype, u64, u64, u32), BTreeMap<u32, f64>> = BTreeMap::new();
    for g in &samples.grouped_gemm {
        if g.experts == 0 || g.tokens_per_expert == 0 {
            continue;
        }
        let b = g.dtype.bytes();
        let single = model.gemm_s(g.tokens_per_expert as u64, g.n, g.k, b) - launch_us * 1e-6;
        let separate = g.experts as f64 * single.max(0.0) + launch_us * 1e-6;
        grouped
            .entry((g.dtype, g.n, g.k, g.experts))
            .or_default()
            .insert(g.tokens_per_expert, g.timing.median_s() / separate);
    }
    model.grouped_curves = grouped
        .into_iter()
        .map(|((dtype, n, k, experts), pts)| GroupedCurve {
            dtype,
            n,
            k,
            experts,
            tokens_per_expert: pts.keys().copied().collect(),
            factor: pts.values().copied().collect(),
        })
        .collect();

    model.fit_error = fit_error(&model, samples);
    Ok(model)
}

fn fit_error(model: &FittedModel, samples: &Samples) -> FitError {
    let pct = |pred: f64, meas: f64| 100.0 * (pred - meas).abs() / meas;
    let mut interp = Vec::new();
    for c in &model.gemm_curves {
        for i in 1..c.tokens.len().saturating_sub(1) {
            let mut toks = c.tokens.clone();
            let mut times = c.time_us.clone();
            toks.remove(i);
            times.remove(i);
            let b = c.dtype.bytes();
            let roof = |x: u64| model.roofline_gemm_s(x, c.n, c.k, b);
            let pred = interpolate_curve(&toks, &times, c.tokens[i], roof);
            interp.push(pct(pred, c.time_us[i]));
        }
    }
    let roof: Vec<f64> = samples
        .gemm
        .iter()
        .map(|s| {
            let pred = model.roofline_gemm_s(s.m, s.n, s.k, s.dtype.bytes());
            pct(pred, s.timing.median_s())
        })
        .collect();
    let (im, ix) = median_max(interp);
    let (rm, rx) = median_max(roof);
    FitError {
        gemm_interpolation_median_pct: im,
        gemm_interpolation_max_pct: ix,
        gemm_roofline_median_pct: rm,
        gemm_roofline_max_pct: rx,
        copy_max_pct: model
            .copy
            .iter()
            .map(|c| c.max_error_pct)
            .fold(0.0, f64::max),
        collective_max_pct: model
            .collectives
            .iter()
            .map(|c| c.max_error_pct)
            .fold(0.0, f64::max),
        gemm_samples: samples.gemm.len(),
    }
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    (crate::profile::quantile(&v, 0.5), v[v.len() - 1])
}

/// Fits effective compute rate F and memory rate B of `launch + max(2mnk / F, bytes / B)` to `(m, n, k, seconds)`
/// points, minimising the squared error in log time (every point weighs the same whatever its size): a coarse
/// grid over log F and log B, then two finer grids around the best point.
pub fn fit_roofline(dtype: Dtype, launch_s: f64, pts: &[(f64, f64, f64, f64)]) -> RooflineFit {
    let b = dtype.bytes() as f64;
    let pre: Vec<(f64, f64, f64)> = pts
        .iter()
        .map(|&(m, n, k, t)| (2.0 * m * n * k, (m * k + k * n + m * n) * b, t.ln()))
        .collect();
    let cost = |lf: f64, lb: f64| -> f64 {
        let (f, bw) = (10f64.powf(lf), 10f64.powf(lb));
        pre.iter()
            .map(|&(fl, by, lt)| {
                let e = (launch_s + (fl / f).max(by / bw)).ln() - lt;
                e * e
            })
            .sum()
    };
    // log10 of FLOP/s in [1e10, 1e17], bytes/s in [1e9, 1e14].
    let (mut best_f, mut best_b) = (13.0, 12.0);
    let mut best = f64::INFINITY;
    let mut search = |lo_f: f64,
                      hi_f: f64,
                      lo_b: f64,
                      hi_b: f64,
                      steps: usize,
                      best_f: &mut f64,
                      best_b: &mut f64| {
        for i in 0..=steps {
            let lf = lo_f + (hi_f - lo_f) * i as f64 / steps as f64;
            for j in 0..=steps {
                let lb = lo_b + (hi_b - lo_b) * j as f64 / steps as f64;
                let c = cost(lf, lb);
                if c < best {
                    best = c;
                    *best_f = lf;
                    *best_b = lb;
                }
            }
        }
    };
    search(10.0, 17.0, 9.0, 14.0, 140, &mut best_f, &mut best_b);
    for width in [0.05, 0.002] {
        let (cf, cb) = (best_f, best_b);
        search(
            cf - width,
            cf + width,
            cb - width,
            cb + width,
            100,
            &mut best_f,
            &mut best_b,
        );
    }
    RooflineFit {
        dtype,
        tflops: 10f64.powf(best_f) / 1e12,
        gbytes_per_s: 10f64.powf(best_b) / 1e9,
    }
}

/// Fits `t = latency + bytes / bandwidth` to `(bytes, seconds)` points by weighted least squares on relative
/// error (weights 1/t²), keeping latency ≥ 0. Returns (latency s, bandwidth bytes/s, max error %), or `None`
/// without at least one point with positive bytes.
pub fn fit_latency_bandwidth(pts: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let pts: Vec<(f64, f64)> = pts
        .iter()
        .copied()
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    if pts.is_empty() {
        return None;
    }
    // Minimise Σ w (a + c·x − t)² with w = 1/t²; unknowns a (latency) and c (1/bandwidth).
    let (mut sw, mut sx, mut sxx, mut st, mut sxt) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, t) in &pts {
        let w = 1.0 / (t * t);
        sw += w;
        sx += w * x;
        sxx += w * x * x;
        st += w * t;
        sxt += w * x * t;
    }
    let det = sw * sxx - sx * sx;
    let (mut a, mut c) = if pts.len() >= 2 && det.abs() > 1e-300 {
        ((st * sxx - sx * sxt) / det, (sw * sxt - sx * st) / det)
    } else {
        (0.0, sxt / sxx)
    };
    if a < 0.0 || c <= 0.0 {
        // No latency term: c alone.
        a = 0.0;
        c = sxt / sxx;
    }
    if c <= 0.0 {
        return None;
    }
    let max_err = pts
        .iter()
        .map(|&(x, t)| 100.0 * ((a + c * x) - t).abs() / t)
        .fold(0.0, f64::max);
    Some((a, 1.0 / c, max_err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{CopySample, GemmSample, GroupedGemmSample, OverheadSample, Timing};

    fn timing(s: f64) -> Timing {
        Timing::from_seconds(&[s]).unwrap()
    }

    const LAUNCH: f64 = 3e-6;
    const SHAPES: [(u64, u64); 4] = [(14336, 4096), (4096, 14336), (2048, 7168), (768, 2048)];

    /// A GPU whose GEMMs follow a smooth (not piecewise) roofline: the knee is rounded, as on real hardware.
    fn synthetic(m: f64, n: f64, k: f64) -> f64 {
        let c = 2.0 * m * n * k / 600e12;
        let b = (m * k + k * n + m * n) * 2.0 / 2.6e12;
        LAUNCH + (c.powi(4) + b.powi(4)).powf(0.25)
    }

    /// The token counts `moesim calibrate` measures.
    fn calibrated_tokens() -> Vec<u64> {
        crate::bench_gemm::token_counts(false)
    }

    fn samples(f: impl Fn(f64, f64, f64) -> f64, tokens: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &(n, k) in &SHAPES {
            for &m in tokens {
                s.gemm.push(GemmSample {
                    dtype: Dtype::Bf16,
                    m,
                    n,
                    k,
                    timing: timing(f(m as f64, n as f64, k as f64)),
                });
            }
        }
        s.overhead.push(OverheadSample {
            what: Overhead::KernelLaunch,
            timing: timing(LAUNCH),
        });
        s
    }

    #[test]
    fn interpolation_recovers_a_smooth_cost_function_within_one_percent() {
        let model = fit(&samples(synthetic, &calibrated_tokens())).unwrap();
        let mut worst: f64 = 0.0;
        for &(n, k) in &SHAPES {
            // Every token count from 1 to 16384 that was not measured, and the measured ones.
            for m in (1..=16384u64).step_by(37) {
                let want = synthetic(m as f64, n as f64, k as f64);
                let got = model.gemm_s(m, n, k, 2);
                worst = worst.max((got - want).abs() / want);
            }
        }
        println!(
            "worst interpolation error {:.3}%; {:?}",
            100.0 * worst,
            model.fit_error
        );
        assert!(
            worst < 0.01,
            "worst interpolation error {:.3}%",
            100.0 * worst
        );
        assert!(
            model.fit_error.gemm_interpolation_max_pct < 2.0,
            "{:?}",
            model.fit_error
        );
    }

    #[test]
    fn roofline_fit_recovers_known_rates_within_one_percent() {
        let f = 700e12;
        let b = 2.8e12;
        let exact = |m: f64, n: f64, k: f64| {
            LAUNCH + (2.0 * m * n * k / f).max((m * k + k * n + m * n) * 2.0 / b)
        };
        let tokens: Vec<u64> = (0..=14).map(|i| 1u64 << i).collect();
        let model = fit(&samples(exact, &tokens)).unwrap();
        let r = &model.roofline[0];
        assert!(
            (r.tflops * 1e12 / f - 1.0).abs() < 0.01,
            "tflops {}",
            r.tflops
        );
        assert!(
            (r.gbytes_per_s * 1e9 / b - 1.0).abs() < 0.01,
            "GB/s {}",
            r.gbytes_per_s
        );
        println!(
            "recovered {} TFLOP/s, {} GB/s; {:?}",
            r.tflops, r.gbytes_per_s, model.fit_error
        );
        assert!(
            model.fit_error.gemm_roofline_max_pct < 1.0,
            "{:?}",
            model.fit_error
        );
        // An unmeasured shape is priced by the roofline, within 1% of the truth at both ends.
        for m in [1u64, 7, 300, 5000, 20000] {
            let want = exact(m as f64, 1536.0, 768.0);
            let got = model.gemm_s(m, 1536, 768, 2);
            assert!((got / want - 1.0).abs() < 0.01, "m={m}: {got} vs {want}");
        }
    }

    #[test]
    fn curve_edges_follow_the_roofline_and_stay_continuous() {
        let tokens: Vec<u64> = (4..=10).map(|i| 1u64 << i).collect(); // 16 .. 1024 measured
        let model = fit(&samples(synthetic, &tokens)).unwrap();
        let (n, k) = SHAPES[0];
        let at = |m: u64| model.gemm_s(m, n, k, 2);
        // Exact at the measured ends.
        assert!((at(16) / synthetic(16.0, n as f64, k as f64) - 1.0).abs() < 1e-9);
        assert!((at(1024) / synthetic(1024.0, n as f64, k as f64) - 1.0).abs() < 1e-9);
        // Below: weight-bound, so 1 token costs about what 16 do, never more.
        assert!(at(1) <= at(16) && at(1) > 0.9 * at(16));
        // Above: compute-bound, so time grows about linearly with tokens.
        let ratio = at(16384) / at(1024);
        assert!(ratio > 12.0 && ratio < 17.0, "ratio {ratio}");
        // Monotone over the whole range, continuous across the edges.
        let mut prev = 0.0;
        for m in 1..=20000u64 {
            let t = at(m);
            assert!(t >= prev * (1.0 - 1e-12), "not monotone at {m}");
            prev = t;
        }
        assert!((at(1025) / at(1024) - 1.0).abs() < 0.01);
        assert!((at(15) / at(16) - 1.0).abs() < 0.01);
        // Zero tokens: only the launch.
        assert!((at(0) - LAUNCH).abs() < 1e-12);
    }

    #[test]
    fn latency_bandwidth_fit_is_exact_on_a_line() {
        let pts: Vec<(f64, f64)> = [4096.0, 1e6, 6.4e7, 1e9]
            .iter()
            .map(|&x| (x, 8e-6 + x / 24e9))
            .collect();
        let (lat, bw, err) = fit_latency_bandwidth(&pts).unwrap();
        assert!((lat - 8e-6).abs() < 1e-9);
        assert!((bw / 24e9 - 1.0).abs() < 1e-9);
        assert!(err < 1e-6);
        assert!(fit_latency_bandwidth(&[]).is_none());
        // One point: no latency, bandwidth through it.
        let (lat, bw, _) = fit_latency_bandwidth(&[(1e6, 1e-4)]).unwrap();
        assert_eq!(lat, 0.0);
        assert!((bw - 1e10).abs() < 1.0);
    }

    #[test]
    fn copies_and_memory_bandwidth_come_from_copy_samples() {
        let mut s = samples(synthetic, &[1, 1024]);
        for bytes in [4096u64, 1 << 20, 1 << 26, 1 << 30] {
            for (kind, lat, bw) in [
                (CopyKind::H2dPinned, 10e-6, 50e9),
                (CopyKind::D2d, 5e-6, 1500e9),
            ] {
                s.copy.push(CopySample {
                    kind,
                    bytes,
                    timing: timing(lat + bytes as f64 / bw),
                });
            }
        }
        let m = fit(&s).unwrap();
        let h2d = m
            .copy
            .iter()
            .find(|c| c.kind == CopyKind::H2dPinned)
            .unwrap();
        assert!((h2d.gbytes_per_s - 50.0).abs() < 1e-6 && (h2d.latency_us - 10.0).abs() < 1e-6);
        assert!((m.memory_gbytes_per_s - 3000.0).abs() < 1e-6);
        assert!(m.copy.iter().all(|c| c.kind != CopyKind::Peer));
    }

    #[test]
    fn grouped_factor_is_measured_over_separate_gemms() {
        let mut s = samples(synthetic, &calibrated_tokens());
        let (n, k) = SHAPES[3];
        for t in [16u32, 256] {
            let single = synthetic(t as f64, n as f64, k as f64) - LAUNCH;
            // A grouped kernel 20% faster than separate GEMMs at 16 tokens, 5% at 256.
            let f = if t == 16 { 0.8 } else { 0.95 };
            s.grouped_gemm.push(GroupedGemmSample {
                dtype: Dtype::Bf16,
                experts: 8,
                tokens_per_expert: t,
                n,
                k,
                timing: timing(f * (8.0 * single + LAUNCH)),
            });
        }
        let m = fit(&s).unwrap();
        assert!((m.grouped_factor(n, k, 2, 8, 16.0) - 0.8).abs() < 0.01);
        assert!(
            (m.grouped_factor(n, k, 2, 8, 4.0) - 0.8).abs() < 0.01,
            "clamped below"
        );
        assert!(
            (m.grouped_factor(n, k, 2, 8, 4096.0) - 0.95).abs() < 0.01,
            "clamped above"
        );
        let mid = m.grouped_factor(n, k, 2, 8, 64.0);
        assert!(mid > 0.8 && mid < 0.95);
        assert_eq!(m.grouped_factor(SHAPES[0].0, SHAPES[0].1, 2, 8, 64.0), 1.0);
    }

    #[test]
    fn fit_needs_gemms_and_a_launch_sample() {
        assert_eq!(fit(&Samples::default()), Err(FitFailure::NoGemm));
        let mut s = samples(synthetic, &[1]);
        s.overhead.clear();
        assert_eq!(fit(&s), Err(FitFailure::NoLaunch));
    }
}
