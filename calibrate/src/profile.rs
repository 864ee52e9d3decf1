//! The GPU profile: what was measured (or taken from a datasheet), on what, when, and the model fitted to it.
//!
//! A profile is one JSON file (format documented in `docs/calibration.md`):
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "name": "h100-measured-2026-11-23",
//!   "source": "measured",
//!   "device": { "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", ... },
//!   "samples": { "gemm": [...], "grouped_gemm": [...], "copy": [...], "overhead": [...], "collective": [...] },
//!   "model": { "launch_overhead_us": 2.1, "roofline": {...}, "gemm_curves": [...], "copy": [...], ... }
//! }
//! ```
//!
//! `samples` holds every raw repeat with its median and spread; `model` is what [`crate::fit::fit`] made of
//! them and is what the simulator uses (through [`crate::MeasuredCost`]). A datasheet profile has no samples
//! and a model built from [`crate::datasheet`] alone.

use crate::cost_model::{CollectiveOp, CopyKind};
use crate::fit::FittedModel;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The profile format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Element type of a GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Bf16,
    Fp16,
    Fp8,
    Fp32,
}

impl Dtype {
    pub fn bytes(self) -> u32 {
        match self {
            Dtype::Bf16 | Dtype::Fp16 => 2,
            Dtype::Fp8 => 1,
            Dtype::Fp32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::Fp16 => "fp16",
            Dtype::Fp8 => "fp8",
            Dtype::Fp32 => "fp32",
        }
    }

    /// The dtypes of `bytes` bytes per element, preferred first (bf16 before fp16).
    pub fn for_bytes(bytes: u32) -> &'static [Dtype] {
        match bytes {
            1 => &[Dtype::Fp8],
            2 => &[Dtype::Bf16, Dtype::Fp16],
            4 => &[Dtype::Fp32],
            _ => &[],
        }
    }
}

/// Where a profile's numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Vendors' datasheet figures with typical efficiencies; no samples.
    Datasheet,
    /// Micro-benchmarks run by `moesim calibrate`.
    Measured,
}

/// The machine a profile describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceInfo {
    /// The driver's device name ("NVIDIA H100 80GB HBM3") or the datasheet name.
    pub name: String,
    /// "9.0" for Hopper; `None` for datasheet profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_capability: Option<String>,
    /// CUDA driver API version the driver reports ("13.0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_cuda_version: Option<String>,
    /// cuBLAS version (`major.minor.patch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cublas_version: Option<String>,
    /// NCCL version, when NCCL was loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nccl_version: Option<String>,
    pub memory_gib: f64,
    /// GPUs visible to the benchmark (collectives need two or more).
    pub gpus: usize,
    /// UTC date of the measurement (YYYY-MM-DD); `None` for datasheet profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Host name of the measuring machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// moesim version that measured (or generated) the profile.
    pub moesim_version: String,
}

/// Median and spread of repeated timings of one measurement, with the raw repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    pub median_us: f64,
    pub min_us: f64,
    pub p10_us: f64,
    pub p90_us: f64,
    pub max_us: f64,
    /// Every timed repeat (after warm-up), in microseconds, in the order run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples_us: Vec<f64>,
}

impl Timing {
    /// Summarises repeats given in seconds. `None` if there are none or any is not finite.
    pub fn from_seconds(samples_s: &[f64]) -> Option<Timing> {
        if samples_s.is_empty() || samples_s.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let us: Vec<f64> = samples_s.iter().map(|s| s * 1e6).collect();
        let mut sorted = us.clone();
        sorted.sort_by(f64::total_cmp);
        Some(Timing {
            median_us: quantile(&sorted, 0.5),
            min_us: sorted[0],
            p10_us: quantile(&sorted, 0.1),
            p90_us: quantile(&sorted, 0.9),
            max_us: sorted[sorted.len() - 1],
            samples_us: us,
        })
    }

    pub fn median_s(&self) -> f64 {
        self.median_us * 1e-6
    }

    /// (p90 − p10) / median, in percent: how noisy the measurement was.
    pub fn spread_pct(&self) -> f64 {
        if self.median_us > 0.0 {
            100.0 * (self.p90_us - self.p10_us) / self.median_us
        } else {
            0.0
        }
    }
}

/// Linear-interpolated quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0];
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One GEMM `[m × k] · [k × n]`: `m` tokens through a `k → n` projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmSample {
    pub dtype: Dtype,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub timing: Timing,
}

/// One grouped GEMM launch: `experts` experts with `tokens_per_expert` tokens each through `k → n`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupedGemmSample {
    pub dtype: Dtype,
    pub experts: u32,
    pub tokens_per_expert: u32,
    pub n: u64,
    pub k: u64,
    pub timing: Timing,
}

/// One copy of `bytes` bytes along `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopySample {
    pub kind: CopyKind,
    pub bytes: u64,
    pub timing: Timing,
}

/// What an overhead sample measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overhead {
    /// GPU time per launch of an empty kernel, back to back on one stream.
    KernelLaunch,
    /// Host time to enqueue one empty-kernel launch.
    KernelLaunchHost,
    /// GPU time between two events recorded back to back (the resolution floor of event timing).
    EventPair,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverheadSample {
    pub what: Overhead,
    pub timing: Timing,
}

/// One NCCL collective over `gpus` GPUs, each contributing `bytes_per_gpu` bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectiveSample {
    pub op: CollectiveOp,
    pub gpus: usize,
    pub bytes_per_gpu: u64,
    pub timing: Timing,
}

/// Every raw measurement of a profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Samples {
    #[serde(default)]
    pub gemm: Vec<GemmSample>,
    #[serde(default)]
    pub grouped_gemm: Vec<GroupedGemmSample>,
    #[serde(default)]
    pub copy: Vec<CopySample>,
    #[serde(default)]
    pub overhead: Vec<OverheadSample>,
    #[serde(default)]
    pub collective: Vec<CollectiveSample>,
    /// Benchmarks that could not run (no second GPU, a dtype the GPU lacks, ...), with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// A GPU profile: device, raw samples, fitted model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format_version: u32,
    /// Short name (`h100-datasheet`, `h100-measured-2026-11-23`).
    pub name: String,
    pub source: Source,
    pub device: DeviceInfo,
    #[serde(default)]
    pub samples: Samples,
    pub model: FittedModel,
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a moesim profile: {message}")]
    Parse { path: String, message: String },
    #[error(
        "{path}: profile format_version {found} is not supported (this moesim reads version {FORMAT_VERSION})"
    )]
    Version { path: String, found: u32 },
    #[error(
        "unknown profile `{name}`: not a shipped profile ({known}) and no file {path} (paths are relative to the scenario file)"
    )]
    Unknown {
        name: String,
        known: String,
        path: String,
    },
}

impl Profile {
    /// Parses a profile from JSON text; `origin` names it in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = serde_json::from_str(text).map_err(|e| ProfileError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        if p.format_version != FORMAT_VERSION {
            return Err(ProfileError::Version {
                path: origin.to_string(),
                found: p.format_version,
            });
        }
        // Every cost the model gives falls back to a roofline: a profile needs one, with finite rates.
        let bad = |message: String| ProfileError::Parse {
            path: origin.to_string(),
            message,
        };
        if p.model.roofline.is_empty() {
            return Err(bad(
                "model.roofline is empty: expected at least one fitted roofline (re-run `moesim calibrate`)"
                    .into(),
            ));
        }
        if let Some(r) = p.model.roofline.iter().find(|r| {
            !(r.tflops.is_finite()
                && r.tflops > 0.0
                && r.gbytes_per_s.is_finite()
                && r.gbytes_per_s > 0.0)
        }) {
            return Err(bad(format!(
                "model.roofline ({:?}): tflops = {} and gbytes_per_s = {} must be positive and finite",
                r.dtype, r.tflops, r.gbytes_per_s
            )));
        }
        Ok(p)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("profiles are serialisable");
        s.push('\n');
        s
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Profile::from_json(&path.display().to_string(), &text)
    }

    /// Writes a profile atomically (temporary file, then rename), so a crash never leaves half a profile.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        // The same write path as every other output (calibrate does not depend on the traces crate):
        // a unique temporary file beside the destination, fsync'd, then renamed; removed on error.
        use std::io::Write;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".profile.")
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)?;
        tmp.write_all(self.to_json().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_summarises_median_and_spread() {
        let t = Timing::from_seconds(&[5e-6, 1e-6, 3e-6, 2e-6, 4e-6]).unwrap();
        assert!((t.median_us - 3.0).abs() < 1e-9);
        assert!((t.min_us - 1.0).abs() < 1e-9);
        assert!((t.max_us - 5.0).abs() < 1e-9);
        assert!((t.p10_us - 1.4).abs() < 1e-9);
        assert!((t.p90_us - 4.6).abs() < 1e-9);
        assert_eq!(t.samples_us.len(), 5);
        assert!((t.spread_pct() - 100.0 * 3.2 / 3.0).abs() < 1e-9);
        assert!(Timing::from_seconds(&[]).is_none());
        assert!(Timing::from_seconds(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn unsupported_version_is_rejected() {
        let p = crate::profiles::datasheet_profile("h100").unwrap();
        let text = p.to_json().replace(
            &format!("\"format_version\": {FORMAT_VERSION}"),
            "\"format_version\": 99",
        );
        let err = Profile::from_json("x.json", &text).unwrap_err();
        assert!(
            matches!(err, ProfileError::Version { found: 99, .. }),
            "{err}"
        );
        let err = Profile::from_json("x.json", "{\"format_version\": 1}").unwrap_err();
        assert!(
            err.to_string().starts_with("x.json: not a moesim profile"),
            "{err}"
        );
    }
}
