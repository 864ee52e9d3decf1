//! NCCL collectives over every visible GPU of one host (single process, one communicator per GPU, each
//! collective issued on all of them inside one NCCL group): all-reduce, all-gather, reduce-scatter, broadcast,
//! reduce, and all-to-all built from grouped send/recv.
//!
//! `bytes_per_gpu` is each GPU's send buffer: all-gather receives `gpus ×` that, reduce-scatter `1/gpus` of it,
//! all-to-all sends `bytes_per_gpu / gpus` to every GPU. A sample's time is the slowest GPU's, event to event.

use crate::cost_model::CollectiveOp;
use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::{CollectiveSample, Timing};
use crate::timer::Repeats;
use cudarc::driver::CudaSlice;
use cudarc::nccl::{Comm, ReduceOp, result as nccl};
use half::bf16;

/// Bytes per GPU measured: 64 KiB × 4ⁱ up to 256 MiB (`--quick`: 1 MiB and 64 MiB).
pub fn sizes(quick: bool) -> Vec<u64> {
    if quick {
        vec![1 << 20, 64 << 20]
    } else {
        (0..7).map(|i| (64u64 << 10) << (2 * i)).collect()
    }
}

fn nccl_err(during: &str) -> impl FnOnce(nccl::NcclError) -> DeviceError + '_ {
    move |e| DeviceError::Cuda {
        during: during.to_string(),
        message: format!("{e:?}"),
    }
}

/// Measures every collective over all `gpus` (two or more).
pub fn run(
    gpus: &[Gpu],
    r: Repeats,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<CollectiveSample>, DeviceError> {
    let g = gpus.len();
    if g < 2 {
        return Ok(Vec::new());
    }
    if !crate::device::nccl_present() {
        return Err(DeviceError::MissingLibrary {
            library: "libnccl.so (a symlink to libnccl.so.2 on LD_LIBRARY_PATH will do)",
            needed_for: "collective benchmarks",
        });
    }
    let comms = Comm::from_devices(gpus.iter().map(|x| x.stream.clone()).collect())
        .map_err(nccl_err("creating NCCL communicators"))?;
    let mut out = Vec::new();
    for &bytes in &sizes(quick) {
        // bf16 elements, a multiple of the GPU count so every split is exact.
        let count = ((bytes / 2) as usize / g).max(1) * g;
        let mut send = Vec::new();
        let mut recv = Vec::new();
        for (i, gpu) in gpus.iter().enumerate() {
            send.push(gpu.random_bf16(count, 0x6e63_636c + i as u64)?);
            recv.push(
                gpu.stream
                    .alloc_zeros::<bf16>(count * g)
                    .map_err(cuda("allocating a receive buffer"))?,
            );
        }
        for op in CollectiveOp::ALL {
            let timing =
                time_collective(gpus, r, || issue(op, &comms, &send, &mut recv, count, g))?;
            progress(&format!(
                "{} × {g} GPUs, {bytes} B per GPU: {:.1} µs",
                op.name(),
                timing.median_us
            ));
            out.push(CollectiveSample {
                op,
                gpus: g,
                bytes_per_gpu: (count * 2) as u64,
                timing,
            });
        }
    }
    Ok(out)
}

/// Issues one collective on every communicator inside one NCCL group.
pub fn issue(
    op: CollectiveOp,
    comms: &[Comm],
    send: &[CudaSlice<bf16>],
    recv: &mut [CudaSlice<bf16>],
    count: usize,
    g: usize,
) -> Result<(), DeviceError> {
    nccl::group_start().map_err(nccl_err("ncclGroupStart"))?;
    let mut result = Ok(());
    for (i, comm) in comms.iter().enumerate() {
        let s = &send[i];
        let r = &mut recv[i];
        let e = match op {
            CollectiveOp::AllReduce => comm
                .all_reduce(s, &mut r.slice_mut(0..count), &ReduceOp::Sum)
                .map(|_| ()),
            CollectiveOp::AllGather => comm
                .all_gather(s, &mut r.slice_mut(0..count * g))
                .map(|_| ()),
            CollectiveOp::ReduceScatter => comm
                .reduce_scatter(s, &mut r.slice_mut(0..count / g), &ReduceOp::Sum)
                .map(|_| ()),
            CollectiveOp::Broadcast => comm
                .broadcast(Some(s), &mut r.slice_mut(0..count), 0)
                .map(|_| ()),
            CollectiveOp::Reduce => comm
                .reduce(s, Some(&mut r.slice_mut(0..count)), &ReduceOp::Sum, 0)
                .map(|_| ()),
            CollectiveOp::AllToAll => {
                let chunk = count / g;
                let mut res = Ok(());
                for peer in 0..g {
                    let off = peer * chunk;
                    res = res
                        .and_then(|_| comm.send(&s.slice(off..off + chunk), peer as i32))
                        .and_then(|_| {
                            comm.recv(&mut r.slice_mut(off..off + chunk), peer as i32)
                                .map(|_| ())
                        });
                }
                res
            }
        };
        if let Err(e) = e {
            result = Err(nccl_err("issuing a collective")(e));
            break;
        }
    }
    // Always close the group, even after an error, so NCCL is left usable.
    nccl::group_end().map_err(nccl_err("ncclGroupEnd"))?;
    result
}

/// Times `work` (one collective on every GPU): events on every GPU's stream, the slowest GPU counts.
pub fn time_collective(
    gpus: &[Gpu],
    r: Repeats,
    mut work: impl FnMut() -> Result<(), DeviceError>,
) -> Result<Timing, DeviceError> {
    for _ in 0..r.warmup {
        work()?;
    }
    for gpu in gpus {
        gpu.sync()?;
    }
    let starts = gpus
        .iter()
        .map(|x| x.event())
        .collect::<Result<Vec<_>, _>>()?;
    let stops = gpus
        .iter()
        .map(|x| x.event())
        .collect::<Result<Vec<_>, _>>()?;
    let mut samples = Vec::with_capacity(r.timed);
    for _ in 0..r.timed {
        for (gpu, e) in gpus.iter().zip(&starts) {
            e.record(&gpu.stream).map_err(cuda("recording an event"))?;
        }
        work()?;
        for (gpu, e) in gpus.iter().zip(&stops) {
            e.record(&gpu.stream).map_err(cuda("recording an event"))?;
        }
        let mut slowest: f64 = 0.0;
        for (a, b) in starts.iter().zip(&stops) {
            let ms = a.elapsed_ms(b).map_err(cuda("reading an event pair"))?;
            slowest = slowest.max(ms as f64 * 1e-3);
        }
        samples.push(slowest);
    }
    Timing::from_seconds(&samples).ok_or_else(|| DeviceError::Cuda {
        during: "timing a collective".into(),
        message: "no finite samples".into(),
    })
}

/// An all-to-all(v) prepared on `gpus.len()` GPUs: `bytes[i * n + j]` go from GPU i to GPU j (the diagonal
/// stays on the GPU and is not sent). Send buffers hold random bytes, laid out by destination; receive buffers
/// by source.
pub struct AllToAllV {
    n: usize,
    bytes: Vec<u64>,
    send: Vec<CudaSlice<u8>>,
    recv: Vec<CudaSlice<u8>>,
    comms: Vec<Comm>,
}

impl AllToAllV {
    pub fn new(gpus: &[Gpu], bytes: &[u64]) -> Result<AllToAllV, DeviceError> {
        let n = gpus.len();
        assert_eq!(bytes.len(), n * n);
        if !crate::device::nccl_present() {
            return Err(DeviceError::MissingLibrary {
                library: "libnccl.so (a symlink to libnccl.so.2 on LD_LIBRARY_PATH will do)",
                needed_for: "running the plan's all-to-all",
            });
        }
        let comms = Comm::from_devices(gpus.iter().map(|x| x.stream.clone()).collect())
            .map_err(nccl_err("creating NCCL communicators"))?;
        let mut send = Vec::new();
        let mut recv = Vec::new();
        for (i, gpu) in gpus.iter().enumerate() {
            let out: u64 = (0..n).map(|j| bytes[i * n + j]).sum();
            let inn: u64 = (0..n).map(|j| bytes[j * n + i]).sum();
            let host = crate::device::random_bytes_host(out.max(1) as usize, 0xa2a + i as u64);
            send.push(
                gpu.stream
                    .clone_htod(&host)
                    .map_err(cuda("allocating all-to-all send buffers"))?,
            );
            recv.push(
                gpu.stream
                    .alloc_zeros::<u8>(inn.max(1) as usize)
                    .map_err(cuda("allocating all-to-all receive buffers"))?,
            );
        }
        Ok(AllToAllV {
            n,
            bytes: bytes.to_vec(),
            send,
            recv,
            comms,
        })
    }

    /// Issues the all-to-all on every GPU inside one NCCL group.
    pub fn issue(&mut self) -> Result<(), DeviceError> {
        let n = self.n;
        nccl::group_start().map_err(nccl_err("ncclGroupStart"))?;
        let mut result = Ok(());
        'ranks: for i in 0..n {
            let comm = &self.comms[i];
            let (mut send_off, mut recv_off) = (0usize, 0usize);
            for j in 0..n {
                let out = self.bytes[i * n + j] as usize;
                let inn = self.bytes[j * n + i] as usize;
                if i != j && out > 0 {
                    let view = self.send[i].slice(send_off..send_off + out);
                    if let Err(e) = comm.send(&view, j as i32) {
                        result = Err(nccl_err("ncclSend")(e));
                        break 'ranks;
                    }
                }
                if i != j && inn > 0 {
                    let mut view = self.recv[i].slice_mut(recv_off..recv_off + inn);
                    if let Err(e) = comm.recv(&mut view, j as i32) {
                        result = Err(nccl_err("ncclRecv")(e));
                        break 'ranks;
                    }
                }
                send_off += out;
                recv_off += inn;
            }
        }
        nccl::group_end().map_err(nccl_err("ncclGroupEnd"))?;
        result
    }
}
