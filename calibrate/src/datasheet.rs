//! Datasheet numbers for GPUs and their links: the one place they live.
//!
//! Units are in the field names; 1 GB = 1e9 bytes, 1 GiB = 2^30 bytes. Compute peaks are dense (no sparsity)
//! tensor-core figures with FP32 accumulation, one per dtype. These are vendors' numbers: calibrate before
//! trusting them. Sources: NVIDIA's product datasheets (A100, H100/H800, H200, H20, B200, L40S, RTX A5000,
//! RTX 6000 Ada, T4), the Ada Lovelace architecture whitepaper v1.1 appendix (RTX 4090: 165.2 dense
//! FP16/BF16 and 330.3 dense FP8 TFLOP/s with FP32 accumulate) and the Ampere GA102 whitepaper's GeForce
//! table (GA10x consumer parts run FP16/BF16 with FP32 accumulate at half the FP16-accumulate rate: RTX 3060
//! 25.6 TFLOP/s dense).

use serde::{Deserialize, Serialize};

/// What a vendor's datasheet says about one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpuDatasheet {
    pub name: &'static str,
    /// Dense bf16 tensor-core peak.
    pub peak_bf16_tflops: f64,
    /// Dense FP8 (E4M3) tensor-core peak; GPUs without FP8 tensor cores (Ampere, Turing) run FP8 tensors
    /// upcast to bf16, so their figure is the bf16 peak.
    pub peak_fp8_tflops: f64,
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
    peak_fp8_tflops: 312.0,
    hbm_gbytes_per_s: 2039.0,
    memory_gib: 80.0,
    nvlink_gbytes_per_s_each_way: 300.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

pub const H100_SXM: GpuDatasheet = GpuDatasheet {
    name: "H100 SXM 80GB",
    peak_bf16_tflops: 989.0,
    peak_fp8_tflops: 1979.0,
    hbm_gbytes_per_s: 3350.0,
    memory_gib: 80.0,
    nvlink_gbytes_per_s_each_way: 450.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

pub const H200_SXM: GpuDatasheet = GpuDatasheet {
    name: "H200 SXM 141GB",
    peak_bf16_tflops: 989.0,
    peak_fp8_tflops: 1979.0,
    hbm_gbytes_per_s: 4800.0,
    memory_gib: 141.0,
    nvlink_gbytes_per_s_each_way: 450.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

pub const B200: GpuDatasheet = GpuDatasheet {
    name: "B200 192GB",
    peak_bf16_tflops: 2250.0,
    peak_fp8_tflops: 4500.0,
    hbm_gbytes_per_s: 8000.0,
    memory_gib: 192.0,
    nvlink_gbytes_per_s_each_way: 900.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

/// A PCIe workstation card (NVIDIA RTX 6000 Ada, 48 GB GDDR6): no NVLink, peers talk over PCIe Gen4.
pub const RTX_6000_ADA: GpuDatasheet = GpuDatasheet {
    name: "RTX 6000 Ada 48GB",
    peak_bf16_tflops: 182.0,
    peak_fp8_tflops: 364.0,
    hbm_gbytes_per_s: 960.0,
    memory_gib: 48.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// H800 SXM (the export H100 that DeepSeek-V3 was trained on): H100 compute and HBM, NVLink cut to 400 GB/s
/// total (200 each way). DeepEP measures about 160 GB/s of it (docs/legacy.md of deepseek-ai/DeepEP).
pub const H800_SXM: GpuDatasheet = GpuDatasheet {
    name: "H800 SXM 80GB",
    peak_bf16_tflops: 989.0,
    peak_fp8_tflops: 1979.0,
    hbm_gbytes_per_s: 3350.0,
    memory_gib: 80.0,
    nvlink_gbytes_per_s_each_way: 200.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

/// H20 (HGX, 96 GB HBM3): Hopper with a cut compute die, full NVLink4 (900 GB/s total).
pub const H20: GpuDatasheet = GpuDatasheet {
    name: "H20 96GB",
    peak_bf16_tflops: 148.0,
    peak_fp8_tflops: 296.0,
    hbm_gbytes_per_s: 4000.0,
    memory_gib: 96.0,
    nvlink_gbytes_per_s_each_way: 450.0,
    pcie_gbytes_per_s_each_way: 50.0,
};

/// L40S (Ada, 48 GB GDDR6, PCIe Gen4 x16, no NVLink).
pub const L40S: GpuDatasheet = GpuDatasheet {
    name: "L40S 48GB",
    peak_bf16_tflops: 362.0,
    peak_fp8_tflops: 733.0,
    hbm_gbytes_per_s: 864.0,
    memory_gib: 48.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// GeForce RTX 4090 (Ada, 24 GB GDDR6X, PCIe Gen4 x16).
pub const RTX_4090: GpuDatasheet = GpuDatasheet {
    name: "RTX 4090 24GB",
    peak_bf16_tflops: 165.2,
    peak_fp8_tflops: 330.3,
    hbm_gbytes_per_s: 1008.0,
    memory_gib: 24.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// RTX A5000 (Ampere workstation, 24 GB GDDR6, PCIe Gen4 x16; 222.2 sparse tensor TFLOP/s, half dense).
pub const RTX_A5000: GpuDatasheet = GpuDatasheet {
    name: "RTX A5000 24GB",
    peak_bf16_tflops: 111.1,
    peak_fp8_tflops: 111.1,
    hbm_gbytes_per_s: 768.0,
    memory_gib: 24.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// GeForce RTX 3060 (Ampere GA106, 12 GB GDDR6, PCIe Gen4 x16).
pub const RTX_3060: GpuDatasheet = GpuDatasheet {
    name: "RTX 3060 12GB",
    peak_bf16_tflops: 25.6,
    peak_fp8_tflops: 25.6,
    hbm_gbytes_per_s: 360.0,
    memory_gib: 12.0,
    nvlink_gbytes_per_s_each_way: 25.0,
    pcie_gbytes_per_s_each_way: 25.0,
};

/// T4 (Turing, 16 GB GDDR6, PCIe Gen3 x16: about 12 GB/s from pinned memory; 65 TFLOP/s FP16, no bf16,
/// which frameworks run as FP16 on it).
pub const T4: GpuDatasheet = GpuDatasheet {
    name: "T4 16GB",
    peak_bf16_tflops: 65.0,
    peak_fp8_tflops: 65.0,
    hbm_gbytes_per_s: 320.0,
    memory_gib: 16.0,
    nvlink_gbytes_per_s_each_way: 12.0,
    pcie_gbytes_per_s_each_way: PCIE_GEN3_X16_GBYTES_PER_S,
};

/// Every datasheet GPU, looked up by the names scenarios use.
pub const ALL: &[(&str, GpuDatasheet)] = &[
    ("a100", A100_SXM),
    ("h100", H100_SXM),
    ("h200", H200_SXM),
    ("b200", B200),
    ("rtx6000-ada", RTX_6000_ADA),
    ("h800", H800_SXM),
    ("h20", H20),
    ("l40s", L40S),
    ("rtx4090", RTX_4090),
    ("a5000", RTX_A5000),
    ("rtx3060", RTX_3060),
    ("t4", T4),
];

/// Looks a GPU up by its scenario name (`a100`, `h100`, `h200`, `b200`, `rtx6000-ada`, `h800`, `h20`,
/// `l40s`, `rtx4090`, `a5000`, `rtx3060`, `t4`).
pub fn by_name(name: &str) -> Option<GpuDatasheet> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// InfiniBand NDR port (400 Gb/s), the usual one-NIC-per-GPU fabric of DGX H100.
pub const IB_NDR_GBITS_PER_S: f64 = 400.0;
/// InfiniBand HDR port (200 Gb/s), as in DGX A100.
pub const IB_HDR_GBITS_PER_S: f64 = 200.0;
/// PCIe Gen3 x16 host link, effective from pinned memory (about 12 of 15.75 GB/s).
pub const PCIE_GEN3_X16_GBYTES_PER_S: f64 = 12.0;

/// Achievable fraction of NVLink bandwidth for expert-parallel all-to-all kernels: DeepEP reports about
/// 160 GB/s as the NVLink maximum of an H800 whose datasheet says 200 GB/s each way
/// (deepseek-ai/DeepEP docs/legacy.md, "Normal kernels with NVLink and RDMA forwarding").
pub const NVLINK_ACHIEVABLE_FRACTION: f64 = 160.0 / 200.0;
/// Achievable fraction of a 400 Gb/s (50 GB/s) InfiniBand NIC for all-to-all traffic: DeepEP's low-latency
/// kernels, whose time at EP 128–256 is almost all NIC transfer (more than 240 of 256 destinations are on
/// other nodes), run at 39–40 GB/s (deepseek-ai/DeepEP docs/legacy.md, "Low-latency kernels with pure
/// RDMA"). The validation cases taken from that table say that they inform this number.
pub const NIC_ACHIEVABLE_FRACTION: f64 = 40.0 / 50.0;
/// Typical one-way NVLink/NVSwitch hop latency.
pub const NVLINK_LATENCY_US: f64 = 2.0;
/// Typical one-way InfiniBand latency through one switch, NIC to NIC.
pub const IB_LATENCY_US: f64 = 5.0;
/// Typical one-way PCIe latency.
pub const PCIE_LATENCY_US: f64 = 3.0;
/// Host time per operator of PyTorch in eager mode (no CUDA graphs), the cost that bounds batch-1 decode
/// in eager frameworks. Source: the PyTorch team's gpt-fast write-up ("Accelerating Generative AI with
/// PyTorch II: GPT, Fast", pytorch.org, 2023) measures its eager Llama-2-7B at 25.5 tokens/s on an A100
/// and finds it "heavily CPU overhead bound"; its model (pytorch-labs/gpt-fast, model.py and generate.py)
/// issues about 80 operators per decoder layer (two RMSNorms of 8, attention's 57 with the rotary
/// embedding's 20 per tensor, the MLP's 5, two residual adds) and about 30 per token outside the 32 layers
/// (embedding, final norm, head, top-k sampling): 1 s / 25.5 / 2590 operators ≈ 15 µs each.
pub const PYTORCH_EAGER_HOST_US_PER_OP: f64 = 1e6 / 25.5 / (32.0 * 80.0 + 30.0);
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
