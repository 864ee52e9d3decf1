//! Datasheet numbers for GPUs and their links: the one place they live.
//!
//! Units are in the field names; 1 GB = 1e9 bytes, 1 GiB = 2^30 bytes. Compute peaks are dense (no sparsity)
//! bf16 tensor-core figures. These are vendors' numbers: calibrate before trusting them.

use serde::{Deserialize, Serialize};

/// What a vendor's datasheet says about one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuDatasheet {
    pub name: &'static str,
    /// Dense bf16 tensor-core peak.
    pub peak_bf16_tflops: f64,
    pub hbm_gbytes_per_s: f64,
    pub memory_gib: f64,
    /// NVLink (or PCIe peer) bandwidth per GPU in each direction.
    pub nvlink_gbytes_per_s_each_way: f64,
    /// Host link (PCIe) bandwidth in each direction, effective from pinned memory.
    pub pcie_gbytes_per_s_each_way: f64,
}

pub const A100_SXM: GpuDatasheet = GpuDatasheet {
    name: "A100 SXM 80GB",
    peak_bf16_tflops: 312.0,
    hbm_gbytes_per_s: 2039.0,
    memory_gib: 80.0,
    nvlink_gbytes_per_s_each_way: 300.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

pub const H100_SXM: GpuDatasheet = GpuDatasheet {
    name: "H100 SXM 80GB",
    peak_bf16_tflops: 989.0,
    hbm_gbytes_per_s: 3350.0,
    memory_gib: 80.0,
    nvlink_gbytes_per_s_each_way: 450.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

pub const H200_SXM: GpuDatasheet = GpuDatasheet {
    name: "H200 SXM 141GB",
    peak_bf16_tflops: 989.0,
    hbm_gbytes_per_s: 4800.0,
    memory_gib: 141.0,
    nvlink_gbytes_per_s_each_way: 450.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

pub const B200: GpuDatasheet = GpuDatasheet {
    name: "B200 192GB",
    peak_bf16_tflops: 2250.0,
    hbm_gbytes_per_s: 8000.0,
    memory_gib: 192.0,
    nvlink_gbytes_per_s_each_way: 900.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

/// A PCIe workstation card (NVIDIA RTX 6000 Ada, 48 GB GDDR6): no NVLink, peers talk over PCIe Gen4.
pub const RTX_6000_ADA: GpuDatasheet = GpuDatasheet {
    name: "RTX 6000 Ada 48GB",
    peak_bf16_tflops: 182.0,
    hbm_gbytes_per_s: 960.0,
    memory_gib: 48.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// Every datasheet GPU, looked up by the names scenarios use.
pub const ALL: &[(&str, GpuDatasheet)] = &[
    ("a100", A100_SXM),
    ("h100", H100_SXM),
    ("h200", H200_SXM),
    ("b200", B200),
    ("rtx6000-ada", RTX_6000_ADA),
];

/// Looks a GPU up by its scenario name (`a100`, `h100`, `h200`, `b200`, `rtx6000-ada`).
pub fn by_name(name: &str) -> Option<GpuDatasheet> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// InfiniBand NDR port (400 Gb/s), the usual one-NIC-per-GPU fabric of DGX H100.
pub const IB_NDR_GBITS_PER_S: f64 = 400.0;
/// InfiniBand HDR port (200 Gb/s), as in DGX A100.
pub const IB_HDR_GBITS_PER_S: f64 = 200.0;
/// Typical one-way NVLink/NVSwitch hop latency.
pub const NVLINK_LATENCY_US: f64 = 2.0;
/// Typical one-way InfiniBand latency through one switch, NIC to NIC.
pub const IB_LATENCY_US: f64 = 5.0;
/// Typical one-way PCIe latency.
pub const PCIE_LATENCY_US: f64 = 3.0;
/// Typical kernel launch overhead on a recent driver.
pub const KERNEL_LAUNCH_US: f64 = 4.0;
/// Share of a Hopper GPU's SMs that expert-parallel communication kernels hold while they run: DeepSeek-V3
/// dedicates 20 of the H800's 132 SMs to its all-to-all kernels (DeepSeek-V3 technical report, §3.2.2;
/// DeepEP's README uses the same 20-SM setting).
pub const COMM_KERNEL_SM_FRACTION: f64 = 20.0 / 132.0;

/// Host memory of a DGX/HGX-class server (2 TiB DDR5) and its bandwidth (two sockets, 8-channel DDR5).
pub const SERVER_HOST_MEMORY_GIB: f64 = 2048.0;
pub const SERVER_HOST_MEMORY_GBYTES_PER_S: f64 = 400.0;
/// Host memory of a workstation (256 GiB) and its bandwidth (desktop-class DDR5).
pub const WORKSTATION_HOST_MEMORY_GIB: f64 = 256.0;
pub const WORKSTATION_HOST_MEMORY_GBYTES_PER_S: f64 = 90.0;
/// A workstation's one 200 Gb/s NIC per GPU, should several be networked.
pub const WORKSTATION_NIC_GBITS_PER_S: f64 = 200.0;

/// Converts gigabits per second to bytes per second.
pub fn gbits_to_bytes_per_s(gbits_per_s: f64) -> f64 {
    gbits_per_s * 1e9 / 8.0
}
