//! A [`CostModel`] evaluated from a profile's fitted model (measured or datasheet).

use crate::cost_model::{CollectiveOp, CopyKind, CostModel};
use crate::fit::FittedModel;
use crate::profile::Profile;

/// Prices device work from a profile: measured GEMM curves where the shape was measured, the fitted roofline
/// elsewhere, grouped-launch factors, copy and collective fits.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredCost {
    name: String,
    model: FittedModel,
}

impl MeasuredCost {
    pub fn new(name: impl Into<String>, model: FittedModel) -> Self {
        MeasuredCost {
            name: name.into(),
            model,
        }
    }

    /// The cost model of a profile, described as "profile NAME (DEVICE)".
    pub fn from_profile(p: &Profile) -> Self {
        MeasuredCost::new(
            format!("profile {} ({})", p.name, p.device.name),
            p.model.clone(),
        )
    }

    pub fn model(&self) -> &FittedModel {
        &self.model
    }
}

impl CostModel for MeasuredCost {
    fn gemm_s(&self, m: u64, n: u64, k: u64, dtype_bytes: u32) -> f64 {
        self.model.gemm_s(m, n, k, dtype_bytes)
    }

    fn grouped_gemm_s(&self, tokens: &[u32], n: u64, k: u64, dtype_bytes: u32) -> f64 {
        let launch = self.launch_overhead_s();
        let (mut body, mut active, mut sum) = (0.0, 0u32, 0u64);
        for &m in tokens {
            if m > 0 {
                body += self.gemm_s(m as u64, n, k, dtype_bytes) - launch;
                active += 1;
                sum += m as u64;
            }
        }
        if active == 0 {
            return 0.0;
        }
        let mean = sum as f64 / active as f64;
        let factor = self.model.grouped_factor(n, k, dtype_bytes, active, mean);
        factor * (body.max(0.0) + launch)
    }

    fn memory_bound_s(&self, bytes: f64) -> f64 {
        self.launch_overhead_s() + bytes / (self.model.memory_gbytes_per_s * 1e9)
    }

    fn launch_overhead_s(&self) -> f64 {
        self.model.launch_overhead_us * 1e-6
    }

    fn copy_s(&self, bytes: f64, kind: CopyKind) -> Option<f64> {
        if let Some(c) = self.model.copy.iter().find(|c| c.kind == kind) {
            return Some(c.time_s(bytes));
        }
        match kind {
            CopyKind::D2d => Some(self.memory_bound_s(2.0 * bytes)),
            _ => None,
        }
    }

    fn collective_s(&self, op: CollectiveOp, gpus: usize, bytes_per_gpu: f64) -> Option<f64> {
        if gpus <= 1 {
            return Some(0.0);
        }
        self.model
            .collectives
            .iter()
            .find(|c| c.op == op && c.gpus == gpus)
            .map(|c| c.time_s(bytes_per_gpu))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Roofline, datasheet, profiles};

    #[test]
    fn a_datasheet_profile_prices_like_the_datasheet_roofline() {
        for (key, sheet) in datasheet::ALL {
            let p = profiles::datasheet_profile(key).unwrap();
            let m = MeasuredCost::from_profile(&p);
            let r = Roofline::from_datasheet(sheet);
            for (mm, n, k) in [
                (1u64, 14336u64, 4096u64),
                (4096, 2048, 7168),
                (16384, 768, 2048),
            ] {
                let (a, b) = (m.gemm_s(mm, n, k, 2), r.gemm_s(mm, n, k, 2));
                assert!((a / b - 1.0).abs() < 1e-9, "{key} {mm}×{n}×{k}: {a} vs {b}");
            }
            let tokens = [0u32, 5, 300, 17];
            let (a, b) = (
                m.grouped_gemm_s(&tokens, 1536, 768, 2),
                r.grouped_gemm_s(&tokens, 1536, 768, 2),
            );
            assert!((a / b - 1.0).abs() < 1e-9);
            assert!((m.memory_bound_s(1e9) / r.memory_bound_s(1e9) - 1.0).abs() < 1e-9);
            assert_eq!(m.launch_overhead_s(), r.launch_overhead_s());
            let pinned = m.copy_s(1e9, CopyKind::H2dPinned).unwrap();
            let want =
                datasheet::PCIE_LATENCY_US * 1e-6 + 1e9 / (sheet.pcie_gbytes_per_s_each_way * 1e9);
            assert!((pinned / want - 1.0).abs() < 1e-9);
            assert!(m.copy_s(1e9, CopyKind::H2dPageable).unwrap() > pinned);
            assert!(m.collective_s(CollectiveOp::AllReduce, 8, 1e6).is_none());
            assert_eq!(m.collective_s(CollectiveOp::AllReduce, 1, 1e6), Some(0.0));
            assert!(m.describe().contains(&format!("{key}-datasheet")));
        }
    }

    #[test]
    fn grouped_gemm_skips_idle_experts() {
        let m = MeasuredCost::from_profile(&profiles::datasheet_profile("h100").unwrap());
        assert_eq!(m.grouped_gemm_s(&[0, 0, 0], 64, 32, 2), 0.0);
        let one = m.grouped_gemm_s(&[0, 100, 0], 4096, 1024, 2);
        assert!((one - m.gemm_s(100, 4096, 1024, 2)).abs() < 1e-15);
    }
}
