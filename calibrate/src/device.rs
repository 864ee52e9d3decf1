//! Finding and opening GPUs through cudarc, which loads CUDA at run time.
//!
//! cudarc panics when it first touches a CUDA library that is not installed, so every entry point here checks
//! for the library first and turns its absence into a [`DeviceError`]. With `MOESIM_NO_GPU` set in the
//! environment moesim behaves as if there were no GPU (tests use it to check the no-GPU path on any machine).

use crate::profile::DeviceInfo;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, sys};
use half::bf16;
use std::sync::Arc;

/// Set (to anything) to make moesim act as if no CUDA driver were installed.
pub const NO_GPU_ENV: &str = "MOESIM_NO_GPU";

/// What still works without a GPU, for error messages.
pub const WITHOUT_A_GPU: &str = "every other command (simulate, plan, ...) works without a GPU; \
scenarios can use a shipped datasheet profile (cluster.profile = \"h100-datasheet\", \"a100-datasheet\", \
\"h200-datasheet\", \"b200-datasheet\", \"rtx6000-ada-datasheet\") or a profile measured elsewhere with \
`moesim calibrate`";

/// Why GPU work could not run.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no CUDA driver found ({0})")]
    NoDriver(String),
    #[error("the CUDA driver found no usable GPU ({0})")]
    NoDevice(String),
    #[error("{library} not found: it is needed for {needed_for}")]
    MissingLibrary {
        library: &'static str,
        needed_for: &'static str,
    },
    #[error("CUDA error while {during}: {message}")]
    Cuda { during: String, message: String },
}

impl DeviceError {
    /// True when the machine has no GPU at all (as opposed to a failure on a GPU that exists).
    pub fn is_no_gpu(&self) -> bool {
        matches!(self, DeviceError::NoDriver(_) | DeviceError::NoDevice(_))
    }
}

/// Wraps any CUDA-side error with what was being done.
pub fn cuda<E: std::fmt::Debug>(during: impl Into<String>) -> impl FnOnce(E) -> DeviceError {
    let during = during.into();
    move |e| DeviceError::Cuda {
        during,
        message: format!("{e:?}"),
    }
}

fn forced_off() -> bool {
    std::env::var_os(NO_GPU_ENV).is_some()
}

/// Whether `libcuda` can be loaded (false under `MOESIM_NO_GPU`).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library; nothing is called through it.
    !forced_off() && unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: as above.
    !forced_off() && unsafe { cudarc::cublas::sys::is_culib_present() }
}

/// Whether NCCL can be loaded (cudarc looks for `libnccl.so`; a host with only `libnccl.so.2` needs a symlink).
pub fn nccl_present() -> bool {
    // SAFETY: as above.
    !forced_off() && unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// Number of GPUs the driver sees, or why there are none.
pub fn gpu_count() -> Result<usize, DeviceError> {
    if forced_off() {
        return Err(DeviceError::NoDriver(format!("{NO_GPU_ENV} is set")));
    }
    if !driver_present() {
        return Err(DeviceError::NoDriver(
            "libcuda.so could not be loaded; is the NVIDIA driver installed?".into(),
        ));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(n as usize),
        Ok(_) => Err(DeviceError::NoDevice("cuDeviceGetCount returned 0".into())),
        Err(e) => Err(DeviceError::NoDevice(format!("cuInit failed: {e:?}"))),
    }
}

/// Checks that cuBLAS is there before anything creates a handle.
pub fn require_cublas() -> Result<(), DeviceError> {
    if cublas_present() {
        Ok(())
    } else {
        Err(DeviceError::MissingLibrary {
            library: "libcublas (CUDA 13)",
            needed_for: "GEMM benchmarks and plan validation",
        })
    }
}

/// One opened GPU: its context and the stream everything runs on.
pub struct Gpu {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
}

impl Gpu {
    /// Opens GPU `ordinal` (checks for the driver first).
    pub fn open(ordinal: usize) -> Result<Gpu, DeviceError> {
        let n = gpu_count()?;
        if ordinal >= n {
            return Err(DeviceError::NoDevice(format!(
                "GPU {ordinal} asked for, {n} present"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda(format!("opening GPU {ordinal}")))?;
        // One stream per context, the default one: cudarc then tracks no per-buffer events (it does so only in
        // multi-stream mode), so nothing but the measured work reaches the GPU.
        let stream = ctx.default_stream();
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
        })
    }

    /// A timing event (timing enabled: `None` would make one that cannot be timed).
    pub fn event(&self) -> Result<cudarc::driver::CudaEvent, DeviceError> {
        self.ctx
            .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda("creating an event"))
    }

    /// Describes this GPU and the machine for a profile.
    pub fn info(&self, gpus: usize) -> DeviceInfo {
        let name = self
            .ctx
            .name()
            .unwrap_or_else(|_| "unknown NVIDIA GPU".into());
        let cc = self
            .ctx
            .compute_capability()
            .ok()
            .map(|(a, b)| format!("{a}.{b}"));
        let memory_gib = self
            .ctx
            .total_mem()
            .map_or(0.0, |b| b as f64 / (1u64 << 30) as f64);
        DeviceInfo {
            name,
            compute_capability: cc,
            driver_cuda_version: driver_version(),
            cublas_version: cublas_version(),
            nccl_version: nccl_version(),
            memory_gib,
            gpus,
            date: Some(utc_date()),
            host: host_name(),
            moesim_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// `n` bf16 values uniform in [-1, 1) (never zeros), generated on the host from `seed` and copied over.
    pub fn random_bf16(&self, n: usize, seed: u64) -> Result<CudaSlice<bf16>, DeviceError> {
        let host = random_bf16_host(n, seed);
        self.stream
            .clone_htod(&host)
            .map_err(cuda(format!("copying {n} random values to the GPU")))
    }

    /// (compute capability major, minor), (0, 0) if unknown.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.ctx.compute_capability().unwrap_or((0, 0))
    }

    pub fn sync(&self) -> Result<(), DeviceError> {
        self.stream.synchronize().map_err(cuda("synchronising"))
    }
}

/// Host-side random bf16 values in [-1, 1), none zero (SplitMix64).
pub fn random_bf16_host(n: usize, seed: u64) -> Vec<bf16> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            // 24 random bits → [-1, 1); nudge exact zeros away.
            let u = (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            bf16::from_f32(if u == 0.0 { 0.5 } else { u })
        })
        .collect()
}

/// Host-side random bytes, none zero.
pub fn random_bytes_host(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state as u8) | 1
        })
        .collect()
}

fn driver_version() -> Option<String> {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: the driver library is loaded (callers hold a context); writes one int.
    let r = unsafe { sys::cuDriverGetVersion(&mut v) };
    (r == sys::CUresult::CUDA_SUCCESS).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

fn cublas_version() -> Option<String> {
    if !cublas_present() {
        return None;
    }
    use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t, libraryPropertyType_t as P};
    let mut parts = [0, 0, 0];
    for (i, p) in [P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL]
        .into_iter()
        .enumerate()
    {
        // SAFETY: cuBLAS is loadable (checked above); writes one int.
        let r = unsafe { cublasGetProperty(p, &mut parts[i]) };
        if r != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return None;
        }
    }
    Some(format!("{}.{}.{}", parts[0], parts[1], parts[2]))
}

fn nccl_version() -> Option<String> {
    if !nccl_present() {
        return None;
    }
    let v = cudarc::nccl::result::get_nccl_version().ok()?;
    // NCCL ≥ 2.9 encodes major·10000 + minor·100 + patch.
    Some(format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no time-zone database needed).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    date_from_unix_days((secs / 86_400) as i64)
}

/// The civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn date_from_unix_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(date_from_unix_days(0), "1970-01-01");
        assert_eq!(date_from_unix_days(11_016), "2000-02-29");
        assert_eq!(date_from_unix_days(20_415), "2025-11-23");
        assert_eq!(utc_date().len(), 10);
    }

    #[test]
    fn random_data_is_never_zero_and_depends_on_the_seed() {
        let a = random_bf16_host(10_000, 1);
        assert!(
            a.iter()
                .all(|x| x.to_f32() != 0.0 && x.to_f32().abs() <= 1.0)
        );
        assert_ne!(a, random_bf16_host(10_000, 2));
        let mean: f32 = a.iter().map(|x| x.to_f32()).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!(random_bytes_host(4096, 7).iter().all(|&b| b != 0));
    }
}
