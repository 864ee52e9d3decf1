//! The trait through which the simulator prices device work.

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

    /// A short name for reports ("datasheet H100 SXM", "measured NVIDIA H100 80GB HBM3 2026-11-02").
    fn describe(&self) -> String;
}
