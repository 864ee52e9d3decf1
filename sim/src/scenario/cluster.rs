//! The cluster being simulated: GPUs, their links, and the presets scenarios start from.
//!
//! Datasheet numbers come from `moesim_calibrate::datasheet`; this file only arranges them into systems.

use moesim_calibrate::datasheet::{self, GpuDatasheet};
use serde::{Deserialize, Serialize};

/// How GPUs are wired together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fabric {
    /// NVSwitch inside a node; one NIC per GPU on a rail-optimised leaf/spine network between nodes.
    RailOptimized,
    /// GPUs on a PCIe switch inside one node (peer traffic over PCIe), NICs as for rail-optimised.
    Pcie,
    /// One non-blocking switch; every GPU has `ideal_link_gbytes_per_s` each way and latency `ideal_latency_us`.
    Ideal,
}

/// A fully resolved cluster description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub fabric: Fabric,
    pub nodes: usize,
    pub gpus_per_node: usize,
    /// Datasheet GPU name (`h100`, `a100`, ...), for reports.
    pub gpu: String,
    /// GPU profile pricing device work instead of the roofline fields: a shipped profile name
    /// (`h100-datasheet`, ...) or a path relative to the scenario file (see docs/calibration.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Dense bf16 tensor-core peak of one GPU.
    pub peak_tflops: f64,
    /// Dense FP8 tensor-core peak (GEMMs of one-byte elements); 0: none, FP8 runs at the bf16 peak.
    #[serde(default)]
    pub peak_fp8_tflops: f64,
    pub hbm_gbytes_per_s: f64,
    pub gpu_memory_gib: f64,
    pub compute_efficiency: f64,
    pub memory_efficiency: f64,
    pub launch_overhead_us: f64,
    /// Intra-node GPU↔GPU bandwidth per GPU, each way (NVLink through NVSwitch, or PCIe).
    pub nvlink_gbytes_per_s: f64,
    pub nvlink_latency_us: f64,
    /// NIC bandwidth per GPU, each way (gigabits per second, as NICs are sold).
    pub nic_gbits_per_s: f64,
    pub nic_latency_us: f64,
    /// Leaf-to-spine oversubscription (1.0: full bisection).
    pub spine_oversubscription: f64,
    /// Host↔GPU PCIe bandwidth each way, pinned memory.
    pub pcie_gbytes_per_s: f64,
    pub host_memory_gib: f64,
    pub host_memory_gbytes_per_s: f64,
    /// NVMe SSD capacity per node (offloading tier below host DRAM).
    #[serde(default)]
    pub nvme_gib: f64,
    /// NVMe read bandwidth per node.
    #[serde(default)]
    pub nvme_gbytes_per_s: f64,
    /// Host CPU peak for expert GEMMs (offloading's compute-on-CPU), all cores.
    #[serde(default)]
    pub cpu_tflops: f64,
    /// Ideal fabric only: each GPU's injection bandwidth each way.
    pub ideal_link_gbytes_per_s: f64,
    /// Ideal fabric only: end-to-end latency α of one transfer.
    pub ideal_latency_us: f64,
    /// Per-rank speed factors (1.0 nominal; 0.5 takes twice as long to compute).
    pub slow_ranks: Vec<SlowRank>,
    /// Coefficient of variation of per-(iteration, rank) compute-time noise (log-normal, mean 1).
    pub compute_noise_cv: f64,
    /// Which backend prices transfers: bottleneck-link α–β (`analytic`) or max-min fair flows (`flow`).
    #[serde(default)]
    pub network: crate::network::NetworkKind,
    /// Share of the SMs a running communication kernel takes from compute on its GPU (0 ≤ f < 1).
    #[serde(default)]
    pub comm_sm_fraction: f64,
    /// Traffic class of each stream (higher first on shared links under the flow backend).
    #[serde(default)]
    pub stream_priority: crate::engine::StreamPriorities,
    /// Achievable fraction of the NVLink (or PCIe peer) datasheet bandwidth.
    #[serde(default = "one")]
    pub nvlink_efficiency: f64,
    /// Achievable fraction of the NIC's datasheet bandwidth.
    #[serde(default = "one")]
    pub nic_efficiency: f64,
    /// Price of one GPU-hour (any currency), for the serving capacity ranking by cost per million output
    /// tokens. `None` (the default, and every preset's: prices vary by provider and contract, and none is
    /// invented here): deployments rank by output tokens per second per GPU instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_gpu_hour: Option<f64>,
}

fn one() -> f64 {
    1.0
}

/// A rank that computes slower (or faster) than nominal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowRank {
    pub rank: usize,
    pub speed: f64,
}

impl Cluster {
    pub fn gpus(&self) -> usize {
        self.nodes * self.gpus_per_node
    }

    /// Speed factor of a rank (1.0 unless listed in `slow_ranks`).
    pub fn speed_of(&self, rank: usize) -> f64 {
        self.slow_ranks
            .iter()
            .find(|s| s.rank == rank)
            .map_or(1.0, |s| s.speed)
    }

    /// The roofline cost model of this cluster's GPU.
    pub fn roofline(&self) -> moesim_calibrate::Roofline {
        moesim_calibrate::Roofline {
            name: format!("datasheet {}", self.gpu),
            peak_tflops: self.peak_tflops,
            peak_fp8_tflops: self.peak_fp8_tflops,
            hbm_gbytes_per_s: self.hbm_gbytes_per_s,
            compute_efficiency: self.compute_efficiency,
            memory_efficiency: self.memory_efficiency,
            launch_overhead_us: self.launch_overhead_us,
        }
    }
}

/// Names of the cluster presets.
pub const CLUSTER_PRESETS: &[&str] = &[
    "dgx-h100",
    "dgx-a100",
    "hgx-h200",
    "hgx-b200",
    "pcie-workstation",
    "hgx-h800",
    "hgx-h20",
    "l40s",
    "rtx4090",
    "a5000",
    "rtx3060",
    "t4",
    "ideal",
];

fn dgx(name: &str, gpu_key: &str, gpu: &GpuDatasheet, nic_gbits: f64) -> Cluster {
    Cluster {
        name: name.into(),
        fabric: Fabric::RailOptimized,
        nodes: 1,
        gpus_per_node: 8,
        gpu: gpu_key.into(),
        profile: None,
        peak_tflops: gpu.peak_bf16_tflops,
        peak_fp8_tflops: gpu.peak_fp8_tflops,
        hbm_gbytes_per_s: gpu.hbm_gbytes_per_s,
        gpu_memory_gib: gpu.memory_gib,
        compute_efficiency: 0.7,
        memory_efficiency: 0.8,
        launch_overhead_us: datasheet::KERNEL_LAUNCH_US,
        nvlink_gbytes_per_s: gpu.nvlink_gbytes_per_s_each_way,
        nvlink_latency_us: datasheet::NVLINK_LATENCY_US,
        nic_gbits_per_s: nic_gbits,
        nic_latency_us: datasheet::IB_LATENCY_US,
        spine_oversubscription: 1.0,
        pcie_gbytes_per_s: gpu.pcie_gbytes_per_s_each_way,
        host_memory_gib: datasheet::SERVER_HOST_MEMORY_GIB,
        host_memory_gbytes_per_s: datasheet::SERVER_HOST_MEMORY_GBYTES_PER_S,
        nvme_gib: 15_360.0,
        nvme_gbytes_per_s: 25.0,
        cpu_tflops: 4.0,
        ideal_link_gbytes_per_s: 0.0,
        ideal_latency_us: 0.0,
        slow_ranks: Vec::new(),
        compute_noise_cv: 0.0,
        network: crate::network::NetworkKind::Analytic,
        comm_sm_fraction: datasheet::COMM_KERNEL_SM_FRACTION,
        stream_priority: crate::engine::StreamPriorities::default(),
        nvlink_efficiency: datasheet::NVLINK_ACHIEVABLE_FRACTION,
        nic_efficiency: datasheet::NIC_ACHIEVABLE_FRACTION,
        price_per_gpu_hour: None,
    }
}

/// One PCIe card per node (no NVLink: peers talk over PCIe), a workstation's host memory and CPU: the
/// single-GPU machines that offloading papers measure on.
fn pcie_card(name: &str, gpu_key: &str, gpu: &GpuDatasheet) -> Cluster {
    let mut c = dgx(name, gpu_key, gpu, datasheet::WORKSTATION_NIC_GBITS_PER_S);
    c.fabric = Fabric::Pcie;
    c.gpus_per_node = 1;
    c.nvlink_latency_us = datasheet::PCIE_LATENCY_US;
    // PCIe peer traffic is not NVLink: no published kernel efficiency, the datasheet rate stands.
    c.nvlink_efficiency = 1.0;
    c.host_memory_gib = datasheet::WORKSTATION_HOST_MEMORY_GIB;
    c.host_memory_gbytes_per_s = datasheet::WORKSTATION_HOST_MEMORY_GBYTES_PER_S;
    c.nvme_gib = 4096.0;
    c.nvme_gbytes_per_s = 7.0;
    c.cpu_tflops = 1.5;
    c
}

/// A cluster preset by name (one node; scenarios set `nodes`).
pub fn cluster_preset(name: &str) -> Option<Cluster> {
    let c = match name {
        "dgx-h100" => dgx(
            name,
            "h100",
            &datasheet::H100_SXM,
            datasheet::IB_NDR_GBITS_PER_S,
        ),
        "dgx-a100" => dgx(
            name,
            "a100",
            &datasheet::A100_SXM,
            datasheet::IB_HDR_GBITS_PER_S,
        ),
        "hgx-h200" => dgx(
            name,
            "h200",
            &datasheet::H200_SXM,
            datasheet::IB_NDR_GBITS_PER_S,
        ),
        "hgx-b200" => dgx(
            name,
            "b200",
            &datasheet::B200,
            2.0 * datasheet::IB_NDR_GBITS_PER_S,
        ),
        // DeepSeek-V3's training cluster: 8 H800 per node on NVLink, one 400 Gb/s CX7 InfiniBand NIC per GPU
        // (DeepSeek-V3 technical report, §3.1).
        "hgx-h800" => dgx(
            name,
            "h800",
            &datasheet::H800_SXM,
            datasheet::IB_NDR_GBITS_PER_S,
        ),
        "hgx-h20" => dgx(name, "h20", &datasheet::H20, datasheet::IB_NDR_GBITS_PER_S),
        "l40s" => pcie_card(name, "l40s", &datasheet::L40S),
        "rtx4090" => pcie_card(name, "rtx4090", &datasheet::RTX_4090),
        "a5000" => pcie_card(name, "a5000", &datasheet::RTX_A5000),
        "rtx3060" => pcie_card(name, "rtx3060", &datasheet::RTX_3060),
        "t4" => pcie_card(name, "t4", &datasheet::T4),
        "pcie-workstation" => {
            let mut c = dgx(
                name,
                "rtx6000-ada",
                &datasheet::RTX_6000_ADA,
                datasheet::WORKSTATION_NIC_GBITS_PER_S,
            );
            c.fabric = Fabric::Pcie;
            c.gpus_per_node = 4;
            c.nvlink_efficiency = 1.0;
            c.nvlink_latency_us = datasheet::PCIE_LATENCY_US;
            c.host_memory_gib = datasheet::WORKSTATION_HOST_MEMORY_GIB;
            c.host_memory_gbytes_per_s = datasheet::WORKSTATION_HOST_MEMORY_GBYTES_PER_S;
            c.nvme_gib = 4096.0;
            c.nvme_gbytes_per_s = 7.0;
            c.cpu_tflops = 1.5;
            c
        }
        "ideal" => {
            let mut c = dgx(name, "ideal", &datasheet::H100_SXM, 0.0);
            c.fabric = Fabric::Ideal;
            c.gpu = "ideal".into();
            c.compute_efficiency = 1.0;
            c.memory_efficiency = 1.0;
            c.hbm_gbytes_per_s = f64::INFINITY;
            c.launch_overhead_us = 0.0;
            c.ideal_link_gbytes_per_s = 100.0;
            c.ideal_latency_us = 10.0;
            c.comm_sm_fraction = 0.0;
            c.peak_fp8_tflops = 0.0;
            c.nvlink_efficiency = 1.0;
            c.nic_efficiency = 1.0;
            c
        }
        _ => return None,
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn every_preset_exists_and_takes_its_gpu_from_the_datasheet() {
        for name in CLUSTER_PRESETS {
            let c = cluster_preset(name).unwrap();
            if let Some(d) = datasheet::by_name(&c.gpu) {
                assert_eq!(c.peak_tflops, d.peak_bf16_tflops, "{name}");
                assert_eq!(c.peak_fp8_tflops, d.peak_fp8_tflops, "{name}");
                assert_eq!(c.hbm_gbytes_per_s, d.hbm_gbytes_per_s, "{name}");
                assert_eq!(c.gpu_memory_gib, d.memory_gib, "{name}");
            } else {
                assert_eq!(*name, "ideal");
            }
        }
        // The GPUs published MoE results use.
        for gpu in ["h800", "h20", "a5000", "rtx3060", "rtx4090", "l40s"] {
            assert!(datasheet::by_name(gpu).is_some(), "{gpu}");
        }
    }

    #[test]
    fn nvlink_and_nic_presets_run_at_their_published_achievable_rates() {
        // hgx-h800: DeepEP's ~160 GB/s of the 200 GB/s NVLink, 40 GB/s of the 50 GB/s CX7 NIC.
        let mut c = cluster_preset("hgx-h800").unwrap();
        c.nodes = 2;
        let t = Topology::build(&c);
        assert!((t.route_bandwidth(0, 1) - 160e9).abs() < 1.0);
        assert!((t.route_bandwidth(0, 8) - 40e9).abs() < 1.0);
        // PCIe peers and the ideal fabric keep their datasheet rate.
        assert_eq!(
            cluster_preset("pcie-workstation")
                .unwrap()
                .nvlink_efficiency,
            1.0
        );
        let ideal = cluster_preset("ideal").unwrap();
        assert_eq!((ideal.nvlink_efficiency, ideal.nic_efficiency), (1.0, 1.0));
    }
}
