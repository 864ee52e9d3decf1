//! Kernel-launch and event overhead, and the two tiny kernels the other benchmarks need (an empty kernel and a
//! spin kernel that holds a stream busy while the host queues timed work).
//!
//! The kernels are hand-written PTX loaded through the driver's JIT (`cuModuleLoadData`), so no NVRTC or CUDA
//! toolkit is needed on the measuring host, only the driver.

use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::{Overhead, OverheadSample, Timing};
use crate::timer::{Repeats, time_gpu};
use cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

/// PTX ISA 7.0 for sm_70 and later; the driver JIT-compiles it for the GPU at hand.
pub const PTX: &str = r#"
.version 7.0
.target sm_70
.address_size 64

.visible .entry moesim_noop()
{
    ret;
}

.visible .entry moesim_spin(.param .u64 cycles)
{
    .reg .u64 %rd<5>;
    .reg .pred %p<2>;
    ld.param.u64 %rd1, [cycles];
    mov.u64 %rd2, %clock64;
SPIN:
    mov.u64 %rd3, %clock64;
    sub.u64 %rd4, %rd3, %rd2;
    setp.lt.u64 %p1, %rd4, %rd1;
    @%p1 bra SPIN;
    ret;
}
"#;

/// The loaded helper kernels of one GPU.
pub struct Kernels {
    noop: CudaFunction,
    spin: CudaFunction,
}

fn one_thread() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Kernels {
    pub fn load(gpu: &Gpu) -> Result<Kernels, DeviceError> {
        let module = gpu
            .ctx
            .load_module(Ptx::from_src(PTX))
            .map_err(cuda("JIT-compiling the helper kernels (PTX)"))?;
        Ok(Kernels {
            noop: module
                .load_function("moesim_noop")
                .map_err(cuda("loading moesim_noop"))?,
            spin: module
                .load_function("moesim_spin")
                .map_err(cuda("loading moesim_spin"))?,
        })
    }

    /// Enqueues one empty kernel.
    pub fn noop(&self, gpu: &Gpu) -> Result<(), DeviceError> {
        let mut b = gpu.stream.launch_builder(&self.noop);
        // SAFETY: the kernel takes no parameters and touches no memory.
        unsafe { b.launch(one_thread()) }
            .map(|_| ())
            .map_err(cuda("launching moesim_noop"))
    }

    /// Enqueues a kernel that busy-waits `cycles` GPU clock cycles.
    pub fn spin(&self, gpu: &Gpu, cycles: u64) -> Result<(), DeviceError> {
        let mut b = gpu.stream.launch_builder(&self.spin);
        b.arg(&cycles);
        // SAFETY: one u64 parameter, as the PTX declares; no memory is touched.
        unsafe { b.launch(one_thread()) }
            .map(|_| ())
            .map_err(cuda("launching moesim_spin"))
    }
}

/// Measures launch overhead (GPU time per empty kernel back to back, and host time per launch) and the
/// event-pair floor.
pub fn run(gpu: &Gpu, kernels: &Kernels, r: Repeats) -> Result<Vec<OverheadSample>, DeviceError> {
    const BATCH: usize = 100;
    let mut out = Vec::new();
    // GPU side: each sample is a batch of empty kernels, divided by the batch size.
    let batch = time_gpu(gpu, kernels, r, || {
        for _ in 0..BATCH {
            kernels.noop(gpu)?;
        }
        Ok(())
    })?;
    out.push(OverheadSample {
        what: Overhead::KernelLaunch,
        timing: scale(&batch, 1.0 / BATCH as f64),
    });
    // Host side: wall time to enqueue a batch (the GPU is held busy so the queue never drains).
    let mut host = Vec::new();
    for _ in 0..r.timed {
        kernels.spin(gpu, crate::timer::SPIN_CYCLES)?;
        let t0 = std::time::Instant::now();
        for _ in 0..BATCH {
            kernels.noop(gpu)?;
        }
        host.push(t0.elapsed().as_secs_f64() / BATCH as f64);
        gpu.sync()?;
    }
    if let Some(t) = Timing::from_seconds(&host) {
        out.push(OverheadSample {
            what: Overhead::KernelLaunchHost,
            timing: t,
        });
    }
    // Event pair: two events with nothing between them.
    let pair = time_gpu(gpu, kernels, r, || Ok(()))?;
    out.push(OverheadSample {
        what: Overhead::EventPair,
        timing: pair,
    });
    Ok(out)
}

/// A timing with every figure multiplied by `f`.
pub fn scale(t: &Timing, f: f64) -> Timing {
    Timing {
        median_us: t.median_us * f,
        min_us: t.min_us * f,
        p10_us: t.p10_us * f,
        p90_us: t.p90_us * f,
        max_us: t.max_us * f,
        samples_us: t.samples_us.iter().map(|x| x * f).collect(),
    }
}
