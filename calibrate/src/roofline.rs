//! The datasheet roofline: time = launch + max(FLOPs / (peak × eff), bytes / (HBM × eff)), with the peak of
//! the GEMM's dtype: one-byte elements run on the FP8 tensor cores (`peak_fp8_tflops`), wider ones at the
//! bf16 peak.
//!
//! Small-batch inefficiency of expert GEMMs falls out of the bytes term: at a handful of tokens the weights
//! dominate the traffic and the GEMM is memory-bound.

use crate::{CostModel, GpuDatasheet};
use serde::{Deserialize, Serialize};

/// A roofline cost model with settable efficiencies and launch overhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roofline {
    pub name: String,
    /// Dense bf16 (and fp16) tensor-core peak.
    pub peak_tflops: f64,
    /// Dense FP8 tensor-core peak, for GEMMs of one-byte elements; 0 means the GPU has none (the bf16 peak
    /// is used).
    #[serde(default)]
    pub peak_fp8_tflops: f64,
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
            peak_fp8_tflops: d.peak_fp8_tflops,
            hbm_gbytes_per_s: d.hbm_gbytes_per_s,
            compute_efficiency: 0.7,
            memory_efficiency: 0.8,
            launch_overhead_us: crate::datasheet::KERNEL_LAUNCH_US,
        }
    }

    /// Achievable FLOP/s of a GEMM whose elements take `dtype_bytes` bytes.
    pub fn flops_per_s(&self, dtype_bytes: u32) -> f64 {
        let peak = if dtype_bytes == 1 && self.peak_fp8_tflops > 0.0 {
            self.peak_fp8_tflops
        } else {
            self.peak_tflops
        };
        peak * 1e12 * self.compute_efficiency
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
        self.launch_overhead_s()
            + (flops / self.flops_per_s(dtype_bytes)).max(bytes / self.bytes_per_s())
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
            peak_fp8_tflops: 200.0,
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
    fn fp8_gemms_run_at_the_fp8_peak_and_read_half_the_bytes() {
        let r = ideal();
        let bf16 = r.gemm_s(1000, 2000, 3000, 2);
        let fp8 = r.gemm_s(1000, 2000, 3000, 1);
        assert!((bf16 / fp8 - 2.0).abs() < 1e-12);
        // A GPU without FP8 tensor cores runs FP8 tensors at its bf16 rate.
        let mut ampere = r.clone();
        ampere.peak_fp8_tflops = 0.0;
        assert_eq!(ampere.gemm_s(1000, 2000, 3000, 1), bf16);
        // H100: a 4096-token FP8 expert GEMM reaches 1979 × 0.7 TFLOP/s; a 64-token one is bound by reading
        // its one-byte weights.
        let h = Roofline::from_datasheet(&datasheet::H100_SXM);
        let big = h.gemm_s(4096, 4096, 7168, 1) - h.launch_overhead_s();
        let flops = 2.0 * 4096.0 * 4096.0 * 7168.0;
        assert!((flops / big / 1e12 - 1979.0 * 0.7).abs() < 1e-6);
        let small = h.gemm_s(64, 7168, 16384, 1) - h.launch_overhead_s();
        let bytes = (64.0 * 16384.0 + 16384.0 * 7168.0 + 64.0 * 7168.0) * 1.0;
        assert!((small - bytes / (3350e9 * 0.8)).abs() / small < 1e-12);
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
