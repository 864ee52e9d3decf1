//! The trait through which the simulator prices device work.

use serde::{Deserialize, Serialize};

/// A kind of memory copy, for [`CostModel::copy_s`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyKind {
    /// Host to device from page-locked (pinned) host memory.
    H2dPinned,
    /// Host to device from ordinary (pageable) host memory: staged by the driver, about half the speed.
    H2dPageable,
    /// Device to host into pinned memory.
    D2hPinned,
    /// Device to host into pageable memory.
    D2hPageable,
    /// Device to device on one GPU (reads and writes HBM).
    D2d,
    /// GPU to GPU peer copy (NVLink or PCIe peer-to-peer).
    Peer,
}

impl CopyKind {
    pub const ALL: [CopyKind; 6] = [
        CopyKind::H2dPinned,
        CopyKind::H2dPageable,
        CopyKind::D2hPinned,
        CopyKind::D2hPageable,
        CopyKind::D2d,
        CopyKind::Peer,
    ];

    /// The name used in profiles and reports (`h2d-pinned`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::H2dPinned => "h2d-pinned",
            CopyKind::H2dPageable => "h2d-pageable",
            CopyKind::D2hPinned => "d2h-pinned",
            CopyKind::D2hPageable => "d2h-pageable",
            CopyKind::D2d => "d2d",
            CopyKind::Peer => "peer",
        }
    }
}

/// A collective operation, for [`CostModel::collective_s`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CollectiveOp {
    AllReduce,
    AllGather,
    ReduceScatter,
    Broadcast,
    Reduce,
    /// All-to-all built from grouped send/recv (NCCL has no all-to-all primitive).
    AllToAll,
}

impl CollectiveOp {
    pub const ALL: [CollectiveOp; 6] = [
        CollectiveOp::AllReduce,
        CollectiveOp::AllGather,
        CollectiveOp::ReduceScatter,
        CollectiveOp::Broadcast,
        CollectiveOp::Reduce,
        CollectiveOp::AllToAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CollectiveOp::AllReduce => "all-reduce",
            CollectiveOp::AllGather => "all-gather",
            CollectiveOp::ReduceScatter => "reduce-scatter",
            CollectiveOp::Broadcast => "broadcast",
            CollectiveOp::Reduce => "reduce",
            CollectiveOp::AllToAll => "all-to-all",
        }
    }
}

/// Prices work on one GPU. Times are in seconds, sizes in elements or bytes as named.
///
/// Implementations must be pure functions of their inputs (the simulator calls them from many threads and
/// relies on identical answers for identical questions to stay deterministic).
pub trait CostModel: Send + Sync {
    /// Time of one GEMM `[m × k] · [k × n]` with elements of `dtype_bytes` bytes, launch overhead included.
    fn gemm_s(&self, m: u64, n: u64, k: u64, dtype_bytes: u32) -> f64;

    /// Time of a grouped GEMM: one launch that multiplies `tokens[i] × k` by expert i's `k × n` weights for
    /// every i with at least one token. Experts with zero tokens cost nothing (their weights are not read).
    fn grouped_gemm_s(&self, tokens: &[u32], n: u64, k: u64, dtype_bytes: u32) -> f64 {
        let mut total = 0.0;
        let mut launches = 0u32;
        for &m in tokens {
            if m > 0 {
                total += self.gemm_s(m as u64, n, k, dtype_bytes) - self.launch_overhead_s();
                launches += 1;
            }
        }
        if launches == 0 {
            0.0
        } else {
            total + self.launch_overhead_s()
        }
    }

    /// Time of a memory-bound kernel that reads and writes `bytes` bytes of HBM in total.
    fn memory_bound_s(&self, bytes: f64) -> f64;

    /// Fixed cost of launching one kernel.
    fn launch_overhead_s(&self) -> f64;

    /// Time of one memory copy of `bytes` bytes along `kind`, or `None` when this model has no figure for that
    /// path (the simulator then prices it on its topology's links). The default knows only device-to-device
    /// copies: a memory-bound kernel that reads and writes `bytes` each.
    fn copy_s(&self, bytes: f64, kind: CopyKind) -> Option<f64> {
        match kind {
            CopyKind::D2d => Some(self.memory_bound_s(2.0 * bytes)),
            _ => None,
        }
    }

    /// Time of one collective over `gpus` GPUs where every GPU contributes `bytes_per_gpu` bytes, or `None` when
    /// this model has not measured it (the simulator then uses its α–β link model). The default knows none.
    fn collective_s(&self, op: CollectiveOp, gpus: usize, bytes_per_gpu: f64) -> Option<f64> {
        let _ = (op, gpus, bytes_per_gpu);
        None
    }

    /// A short name for reports ("datasheet H100 SXM", "measured NVIDIA H100 80GB HBM3 2026-11-02").
    fn describe(&self) -> String;
}
