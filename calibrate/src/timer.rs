//! Timing GPU work with CUDA events: warm-up, then repeats queued back to back behind a spin kernel, one event
//! between consecutive repeats, so each sample is what one more repeat adds to a busy stream (kernel time plus
//! the gap between kernels), not the host's launch latency.

use crate::bench_launch::Kernels;
use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::Timing;

/// How many times to run each measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    pub warmup: usize,
    pub timed: usize,
}

impl Repeats {
    pub const QUICK: Repeats = Repeats {
        warmup: 2,
        timed: 5,
    };
    pub const FULL: Repeats = Repeats {
        warmup: 5,
        timed: 20,
    };
}

/// Cycles the spin kernel holds the stream for while the host queues the timed repeats (about 10 ms on a
/// 1.5–2 GHz GPU: enough to queue a few thousand small launches, so the GPU never waits for the host).
pub const SPIN_CYCLES: u64 = 20_000_000;

/// Times `work` (which enqueues one repeat on `gpu.stream`) `r.timed` times after `r.warmup` untimed runs.
pub fn time_gpu(
    gpu: &Gpu,
    kernels: &Kernels,
    r: Repeats,
    mut work: impl FnMut() -> Result<(), DeviceError>,
) -> Result<Timing, DeviceError> {
    for _ in 0..r.warmup {
        work()?;
    }
    gpu.sync()?;
    let events = (0..=r.timed)
        .map(|_| gpu.event())
        .collect::<Result<Vec<_>, _>>()?;
    kernels.spin(gpu, SPIN_CYCLES)?;
    events[0]
        .record(&gpu.stream)
        .map_err(cuda("recording an event"))?;
    for e in &events[1..] {
        work()?;
        e.record(&gpu.stream).map_err(cuda("recording an event"))?;
    }
    gpu.sync()?;
    let mut samples = Vec::with_capacity(r.timed);
    for w in events.windows(2) {
        let ms = w[0]
            .elapsed_ms(&w[1])
            .map_err(cuda("reading an event pair"))?;
        samples.push(ms as f64 * 1e-3);
    }
    Timing::from_seconds(&samples).ok_or_else(|| DeviceError::Cuda {
        during: "timing".into(),
        message: "no finite samples".into(),
    })
}

/// Times `work` one repeat at a time (event, work, event, synchronise): for work whose host call blocks, such as
/// copies from pageable memory, where queuing behind a spin kernel would measure the host, not the copy.
pub fn time_gpu_isolated(
    gpu: &Gpu,
    r: Repeats,
    mut work: impl FnMut() -> Result<(), DeviceError>,
) -> Result<Timing, DeviceError> {
    for _ in 0..r.warmup {
        work()?;
    }
    gpu.sync()?;
    let (start, stop) = (gpu.event()?, gpu.event()?);
    let mut samples = Vec::with_capacity(r.timed);
    for _ in 0..r.timed {
        start
            .record(&gpu.stream)
            .map_err(cuda("recording an event"))?;
        work()?;
        stop.record(&gpu.stream)
            .map_err(cuda("recording an event"))?;
        let ms = start
            .elapsed_ms(&stop)
            .map_err(cuda("reading an event pair"))?;
        samples.push(ms as f64 * 1e-3);
    }
    Timing::from_seconds(&samples).ok_or_else(|| DeviceError::Cuda {
        during: "timing".into(),
        message: "no finite samples".into(),
    })
}
