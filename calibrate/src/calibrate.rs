//! `moesim calibrate`: run every micro-benchmark on the GPUs of this host and fit a profile.

use crate::bench_launch::Kernels;
use crate::device::{DeviceError, Gpu, gpu_count};
use crate::fit::{FitFailure, fit};
use crate::profile::{FORMAT_VERSION, Profile, Samples, Source};
use crate::timer::Repeats;
use half::{bf16, f16};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Fewer shapes' token counts, sizes and repeats: well under a minute on an H100.
    pub quick: bool,
    /// At most this many GPUs for collectives (default: all).
    pub max_gpus: Option<usize>,
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("the samples could not be fitted: {0}")]
    Fit(#[from] FitFailure),
}

impl CalibrateError {
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, CalibrateError::Device(d) if d.is_no_gpu())
    }
}

/// A file-name-friendly form of a device name ("NVIDIA H100 80GB HBM3" → "nvidia-h100-80gb-hbm3").
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    s.trim_end_matches('-').to_string()
}

/// Runs the benchmarks and fits the profile. `progress` hears about each measurement as it completes.
pub fn run(opts: Options, progress: &mut dyn FnMut(&str)) -> Result<Profile, CalibrateError> {
    let count = gpu_count()?;
    let use_gpus = opts.max_gpus.map_or(count, |m| m.clamp(1, count));
    let gpu = Gpu::open(0)?;
    let info = gpu.info(use_gpus);
    progress(&format!(
        "GPU 0: {} (compute capability {}), {} GPU(s) in use",
        info.name,
        info.compute_capability.as_deref().unwrap_or("?"),
        use_gpus
    ));
    let r = if opts.quick {
        Repeats::QUICK
    } else {
        Repeats::FULL
    };
    let kernels = Kernels::load(&gpu)?;
    let mut samples = Samples {
        overhead: crate::bench_launch::run(&gpu, &kernels, r)?,
        ..Samples::default()
    };
    let (g, gg) = crate::bench_gemm::run::<bf16>(&gpu, &kernels, r, opts.quick, progress)?;
    samples.gemm.extend(g);
    samples.grouped_gemm.extend(gg);
    if opts.quick {
        samples
            .skipped
            .push("fp16 and fp8 GEMMs: not measured with --quick".into());
    } else {
        let (g, gg) = crate::bench_gemm::run::<f16>(&gpu, &kernels, r, false, progress)?;
        samples.gemm.extend(g);
        samples.grouped_gemm.extend(gg);
        if crate::bench_fp8::supported(&gpu) {
            let tokens = crate::bench_gemm::token_counts(false);
            let (g, skipped) = crate::bench_fp8::run(&gpu, &kernels, r, &tokens, progress)?;
            samples.gemm.extend(g);
            samples.skipped.extend(skipped);
        } else {
            samples.skipped.push(
                "fp8 GEMMs: need compute capability 8.9 or later and cuBLASLt (fp8 is then priced from the bf16 \
                 roofline at twice the compute rate)"
                    .into(),
            );
        }
    }
    samples.copy.extend(crate::bench_copy::run(
        &gpu, &kernels, r, opts.quick, progress,
    )?);
    if use_gpus >= 2 {
        let others: Vec<Gpu> = (1..use_gpus).map(Gpu::open).collect::<Result<_, _>>()?;
        let k1 = Kernels::load(&others[0])?;
        samples.copy.extend(crate::bench_copy::run_peer(
            &gpu, &others[0], &k1, r, opts.quick, progress,
        )?);
        let mut all = vec![gpu];
        all.extend(others);
        samples
            .collective
            .extend(crate::bench_nccl::run(&all, r, opts.quick, progress)?);
    } else {
        samples.skipped.push(
            "peer copies and NCCL collectives: need two or more GPUs, this host has one".into(),
        );
    }
    let model = fit(&samples)?;
    let date = info.date.clone().unwrap_or_default();
    Ok(Profile {
        format_version: FORMAT_VERSION,
        name: format!("{}-measured-{date}", slug(&info.name)),
        source: Source::Measured,
        device: info,
        samples,
        model,
    })
}

/// Re-fits a measured profile's model from its samples (after a change to the fitting code, or to samples
/// edited by hand); no GPU needed. Datasheet profiles have no samples and are refused.
pub fn refit(p: &mut Profile) -> Result<(), FitFailure> {
    p.model = fit(&p.samples)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs() {
        assert_eq!(
            super::slug("NVIDIA H100 80GB HBM3"),
            "nvidia-h100-80gb-hbm3"
        );
        assert_eq!(super::slug("  RTX 6000 Ada (48GB) "), "rtx-6000-ada-48gb");
    }
}
