//! The datasheet roofline: time = launch + max(FLOPs / (peak × eff), bytes / (HBM × eff)).
//!
//! Small-batch inefficiency of expert GEMMs falls out of the bytes term: at a handful of tokens the weights
//! dominate the traffic and the GEMM is memory-bound.

use crate::{CostModel, GpuDatasheet};
use serde::{Deserialize, Serialize};

/// A roofline cost model with settable efficiencies and launch overhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    pub name: String,
    pub peak_tflops: f64,
    pub hbm_gbytes_per_s: f64,
    /// Fraction of the peak a GEMM reaches (1.0 in the ideal preset).
    pub compute_efficiency: f64,
    /// Fraction of the HBM bandwidth a kernel reaches.
    pub memory_efficiency: f64,
    pub launch_overhead_us: f64,
}

impl Roofline {
    /// A roofline from a datasheet, with efficiencies typical of well-tuned bf16 GEMMs.
    pub fn from_datasheet(d: &GpuDatasheet) -> Self {
        Roofline {
            name: format!("datasheet {}", d.name),
            peak_tflops: d.peak_bf16_tflops,
            hbm_gbytes_per_s: d.hbm_gbytes_per_s,
            compute_efficiency: 0.7,
            memory_efficiency: 0.8,
            launch_overhead_us: crate::datasheet::KERNEL_LAUNCH_US,
        }
    }

    fn flops_per_s(&self) -> f64 {
        self.peak_tflops * 1e12 * self.compute_efficiency
    }

    fn bytes_per_s(&self) -> f64 {
        self.hbm_gbytes_per_s * 1e9 * self.memory_efficiency
    }
}

impl CostModel for Roofline {
    fn gemm_s(&self, m: u64, n: u64, k: u64, dtype_bytes: u32) -> f64 {
        let (m, n, k) = (m as f64, n as f64, k as f64);
        let flops = 2.0 * m * n * k;
        let bytes = (m * k + k * n + m * n) * dtype_bytes as f64;
        self.launch_overhead_s() + (flops / self.flops_per_s()).max(bytes / self.bytes_per_s())
    }

    fn memory_bound_s(&self, bytes: f64) -> f64 {
        self.launch_overhead_s() + bytes / self.bytes_per_s()
    }

    fn launch_overhead_s(&self) -> f64 {
        self.launch_overhead_us * 1e-6
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasheet;

    fn ideal() -> Roofline {
        Roofline {
            name: "ideal".into(),
            peak_tflops: 100.0,
            hbm_gbytes_per_s: f64::INFINITY,
            compute_efficiency: 1.0,
            memory_efficiency: 1.0,
            launch_overhead_us: 0.0,
        }
    }

    #[test]
    fn ideal_gemm_is_flops_over_peak() {
        let t = ideal().gemm_s(1000, 2000, 3000, 2);
        let expect = 2.0 * 1000.0 * 2000.0 * 3000.0 / 100e12;
        assert!((t - expect).abs() / expect < 1e-12);
    }

    #[test]
    fn small_batch_is_memory_bound() {
        let h = Roofline::from_datasheet(&datasheet::H100_SXM);
        // One token: reading the 4096×14336 bf16 weights dominates.
        let one = h.gemm_s(1, 14336, 4096, 2) - h.launch_overhead_s();
        let weights = 4096.0 * 14336.0 * 2.0 / (3350e9 * 0.8);
        assert!((one - weights).abs() / weights < 0.01);
        // 16 tokens cost about the same as 1: the weights are read once either way.
        let sixteen = h.gemm_s(16, 14336, 4096, 2) - h.launch_overhead_s();
        assert!(sixteen < 1.05 * one);
    }

    #[test]
    fn grouped_gemm_skips_idle_experts_and_launches_once() {
        let m = ideal();
        let mut r = m.clone();
        r.launch_overhead_us = 10.0;
        let grouped = r.grouped_gemm_s(&[0, 100, 0, 50], 64, 32, 2);
        let separate = m.gemm_s(100, 64, 32, 2) + m.gemm_s(50, 64, 32, 2) + 10e-6;
        assert!((grouped - separate).abs() < 1e-15);
        assert_eq!(r.grouped_gemm_s(&[0, 0], 64, 32, 2), 0.0);
    }
}
