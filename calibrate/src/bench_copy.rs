//! Copy micro-benchmarks: host→device and device→host from pinned and pageable memory, device→device, and
//! GPU→GPU peer copies, over sizes from 4 KB to 1 GB.

use crate::bench_launch::Kernels;
use crate::cost_model::CopyKind;
use crate::device::{DeviceError, Gpu, cuda, random_bytes_host};
use crate::profile::CopySample;
use crate::timer::{Repeats, time_gpu, time_gpu_isolated};

/// Sizes measured: 4 KiB × 4ⁱ up to 1 GiB (`--quick`: 4 KiB, 1 MiB, 64 MiB).
pub fn sizes(quick: bool) -> Vec<u64> {
    if quick {
        vec![4 << 10, 1 << 20, 64 << 20]
    } else {
        (0..10).map(|i| (4u64 << 10) << (2 * i)).collect()
    }
}

/// Measures the single-GPU paths over `sizes(quick)`.
pub fn run(
    gpu: &Gpu,
    kernels: &Kernels,
    r: Repeats,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CopySample>, DeviceError> {
    let sizes = sizes(quick);
    let max = *sizes.last().expect("sizes") as usize;
    let mut out = Vec::new();
    let pageable_src = random_bytes_host(max, 0x636f_7079);
    let mut pageable_dst = vec![1u8; max];
    // SAFETY: filled right below before any use; flags 0 = plain page-locked memory (not write-combined, which
    // is slow to read back on the host).
    let mut pinned = unsafe { gpu.ctx.alloc_pinned_with_flags::<u8>(max, 0) }.map_err(cuda(
        format!("allocating {max} bytes of pinned host memory"),
    ))?;
    pinned
        .as_mut_slice()
        .map_err(cuda("mapping pinned memory"))?
        .copy_from_slice(&pageable_src);
    let mut dev_a = gpu
        .stream
        .clone_htod(&pageable_src)
        .map_err(cuda("allocating device buffers"))?;
    let mut dev_b = gpu
        .stream
        .clone_htod(&pageable_src)
        .map_err(cuda("allocating device buffers"))?;
    for &bytes in &sizes {
        let n = bytes as usize;
        for kind in [
            CopyKind::H2dPinned,
            CopyKind::D2hPinned,
            CopyKind::H2dPageable,
            CopyKind::D2hPageable,
            CopyKind::D2d,
        ] {
            let s = &gpu.stream;
            let timing = match kind {
                CopyKind::H2dPinned => time_gpu(gpu, kernels, r, || {
                    let src = pinned.as_slice().map_err(cuda("pinned"))?;
                    s.memcpy_htod(&src[..n], &mut dev_a.slice_mut(0..n))
                        .map_err(cuda("H2D copy"))
                })?,
                CopyKind::D2hPinned => time_gpu(gpu, kernels, r, || {
                    let dst = pinned.as_mut_slice().map_err(cuda("pinned"))?;
                    s.memcpy_dtoh(&dev_a.slice(0..n), &mut dst[..n])
                        .map_err(cuda("D2H copy"))
                })?,
                // Pageable copies block the host while the driver stages them: time them one at a time.
                CopyKind::H2dPageable => time_gpu_isolated(gpu, r, || {
                    s.memcpy_htod(&pageable_src[..n], &mut dev_a.slice_mut(0..n))
                        .map_err(cuda("pageable H2D copy"))
                })?,
                CopyKind::D2hPageable => time_gpu_isolated(gpu, r, || {
                    s.memcpy_dtoh(&dev_a.slice(0..n), &mut pageable_dst[..n])
                        .map_err(cuda("pageable D2H copy"))
                })?,
                CopyKind::D2d => time_gpu(gpu, kernels, r, || {
                    s.memcpy_dtod(&dev_a.slice(0..n), &mut dev_b.slice_mut(0..n))
                        .map_err(cuda("D2D copy"))
                })?,
                CopyKind::Peer => unreachable!("peer copies need two GPUs"),
            };
            progress(&format!(
                "{} {bytes} B: {:.1} µs, {:.1} GB/s",
                kind.name(),
                timing.median_us,
                bytes as f64 / timing.median_s() / 1e9
            ));
            out.push(CopySample {
                kind,
                bytes,
                timing,
            });
        }
    }
    Ok(out)
}

/// Peer copies from GPU `a` to GPU `b`, issued and timed on `b`'s stream (cudarc issues a peer copy on the
/// destination's stream).
pub fn run_peer(
    a: &Gpu,
    b: &Gpu,
    kernels_b: &Kernels,
    r: Repeats,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CopySample>, DeviceError> {
    let sizes = sizes(quick);
    let max = *sizes.last().expect("sizes") as usize;
    let host = random_bytes_host(max, 0x7065_6572);
    let src = a
        .stream
        .clone_htod(&host)
        .map_err(cuda("allocating peer source"))?;
    let mut dst = b
        .stream
        .clone_htod(&host)
        .map_err(cuda("allocating peer destination"))?;
    let mut out = Vec::new();
    for &bytes in &sizes {
        let n = bytes as usize;
        let timing = time_gpu(b, kernels_b, r, || {
            b.stream
                .memcpy_dtod(&src.slice(0..n), &mut dst.slice_mut(0..n))
                .map_err(cuda("peer copy"))
        })?;
        progress(&format!(
            "peer {bytes} B: {:.1} µs, {:.1} GB/s",
            timing.median_us,
            bytes as f64 / timing.median_s() / 1e9
        ));
        out.push(CopySample {
            kind: CopyKind::Peer,
            bytes,
            timing,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_span_4k_to_1g() {
        let s = super::sizes(false);
        assert_eq!((s[0], *s.last().unwrap()), (4096, 1 << 30));
        assert!(s.windows(2).all(|w| w[1] == 4 * w[0]));
    }
}
