//! Expert-GEMM micro-benchmarks: the projections of the model presets' experts over token counts from 1 to 16k,
//! one GEMM at a time and grouped (several experts in one `cublasGemmGroupedBatchedEx` launch), in bf16 and
//! fp16 through cuBLAS.
//!
//! Layout: activations `A` are row-major `[m × k]`, expert weights `W` row-major `[k × n]`, outputs `C` row-major
//! `[m × n]`. cuBLAS is column-major, so `C = A·W` is issued as `Cᵀ = Wᵀ·Aᵀ`: (m', n', k') = (n, m, k) with
//! `W` as the first operand (ld n), `A` as the second (ld k) and `C` with ld n.

use crate::bench_launch::Kernels;
use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::{Dtype, GemmSample, GroupedGemmSample};
use crate::timer::{Repeats, time_gpu};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys as blas_sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};

/// An expert FFN shape of a model preset (d_model × expert d_ff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertShape {
    pub model: &'static str,
    pub d_model: u64,
    pub d_ff: u64,
}

/// The expert shapes of the model presets (`sim/src/scenario/model.rs`).
pub const EXPERT_SHAPES: [ExpertShape; 6] = [
    ExpertShape {
        model: "mixtral-8x7b",
        d_model: 4096,
        d_ff: 14336,
    },
    ExpertShape {
        model: "deepseek-v3",
        d_model: 7168,
        d_ff: 2048,
    },
    ExpertShape {
        model: "qwen3-30b-a3b",
        d_model: 2048,
        d_ff: 768,
    },
    ExpertShape {
        model: "qwen3-235b-a22b",
        d_model: 4096,
        d_ff: 1536,
    },
    ExpertShape {
        model: "olmoe-1b-7b",
        d_model: 2048,
        d_ff: 1024,
    },
    ExpertShape {
        model: "gpt-moe-s",
        d_model: 768,
        d_ff: 1536,
    },
];

/// The (n, k) projections of every preset: up/gate (d_model → d_ff) and down (d_ff → d_model).
pub fn projections() -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = EXPERT_SHAPES
        .iter()
        .flat_map(|s| [(s.d_ff, s.d_model), (s.d_model, s.d_ff)])
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Token counts measured, log-spaced from 1 to 16384: powers of two and three times powers of two (1, 2, 3,
/// 4, 6, 8, 12, ...), a ratio of at most 1.5 between neighbours (`--quick`: six of them).
pub fn token_counts(quick: bool) -> Vec<u64> {
    if quick {
        vec![1, 16, 128, 512, 2048, 8192]
    } else {
        let mut v: Vec<u64> = (0..=14)
            .flat_map(|i| [1u64 << i, 3u64 << i])
            .filter(|&t| t <= 16384)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Grouped cases: (experts in the launch, tokens per expert).
pub fn grouped_cases(quick: bool) -> Vec<(u32, u32)> {
    if quick {
        vec![(8, 16), (8, 256)]
    } else {
        let mut v = Vec::new();
        for e in [4u32, 16] {
            for t in [1u32, 8, 64, 512, 2048] {
                v.push((e, t));
            }
        }
        v
    }
}

/// An element type cuBLAS multiplies.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static
where
    CudaBlas: Gemm<Self>,
{
    const DTYPE: Dtype;
    const CUDA_TYPE: blas_sys::cudaDataType_t;
    fn from_f32(x: f32) -> Self;
    fn one() -> Self;
    fn zero() -> Self;
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    const CUDA_TYPE: blas_sys::cudaDataType_t = blas_sys::cudaDataType_t::CUDA_R_16BF;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn one() -> Self {
        bf16::ONE
    }
    fn zero() -> Self {
        bf16::ZERO
    }
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::Fp16;
    const CUDA_TYPE: blas_sys::cudaDataType_t = blas_sys::cudaDataType_t::CUDA_R_16F;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn one() -> Self {
        f16::ONE
    }
    fn zero() -> Self {
        f16::ZERO
    }
}

/// Elements in the random pool that buffers are tiled from (32 Mi elements = 64 MiB at 2 bytes).
const POOL: usize = 32 << 20;

/// Allocates `n` elements filled with random values (never zeros): a pool generated once on the host, tiled
/// into the buffer with device-to-device copies.
pub fn random_buffer<T: Element>(
    gpu: &Gpu,
    pool: &CudaSlice<T>,
    n: usize,
) -> Result<CudaSlice<T>, DeviceError>
where
    CudaBlas: Gemm<T>,
{
    let mut dst = gpu
        .stream
        .alloc_zeros::<T>(n.max(1))
        .map_err(cuda(format!("allocating {n} elements")))?;
    let mut off = 0;
    while off < n {
        let len = (n - off).min(pool.len());
        let mut view = dst.slice_mut(off..off + len);
        gpu.stream
            .memcpy_dtod(&pool.slice(0..len), &mut view)
            .map_err(cuda("filling a buffer with random data"))?;
        off += len;
    }
    Ok(dst)
}

/// The random pool for element type `T`.
pub fn random_pool<T: Element>(gpu: &Gpu, seed: u64) -> Result<CudaSlice<T>, DeviceError>
where
    CudaBlas: Gemm<T>,
{
    let host: Vec<T> = crate::device::random_bf16_host(POOL, seed)
        .into_iter()
        .map(|x| T::from_f32(x.to_f32()))
        .collect();
    gpu.stream
        .clone_htod(&host)
        .map_err(cuda("copying the random pool to the GPU"))
}

/// Enqueues one row-major GEMM `C[m×n] = A[m×k] · W[k×n]` (see the module docs for the cuBLAS mapping).
pub fn gemm<T: Element, A: DevicePtr<T>, W: DevicePtr<T>, C: DevicePtrMut<T>>(
    blas: &CudaBlas,
    m: u64,
    n: u64,
    k: u64,
    a: &A,
    w: &W,
    c: &mut C,
) -> Result<(), DeviceError>
where
    CudaBlas: Gemm<T>,
{
    assert!(a.len() as u64 >= m * k && w.len() as u64 >= k * n && c.len() as u64 >= m * n);
    let cfg = GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: n as i32,
        n: m as i32,
        k: k as i32,
        alpha: T::one(),
        lda: n as i32,
        ldb: k as i32,
        beta: T::zero(),
        ldc: n as i32,
    };
    // SAFETY: the sizes were checked above against the column-major view (n × k, k × m, n × m).
    unsafe { blas.gemm(cfg, w, a, c) }.map_err(cuda(format!("cuBLAS GEMM {m}×{n}×{k}")))
}

/// One grouped GEMM, prepared: device arrays of matrix pointers built once, so timing a launch times only the
/// launch. Expert i multiplies `tokens[i]` rows of `a` (experts' rows consecutive) by its `k × n` weights.
pub struct GroupedGemm {
    groups: i32,
    ms: Vec<i32>,
    ns: Vec<i32>,
    ks: Vec<i32>,
    ldas: Vec<i32>,
    ldbs: Vec<i32>,
    ldcs: Vec<i32>,
    alphas: Vec<f32>,
    betas: Vec<f32>,
    trans: Vec<blas_sys::cublasOperation_t>,
    sizes: Vec<i32>,
    ptr_w: CudaSlice<u64>,
    ptr_a: CudaSlice<u64>,
    ptr_c: CudaSlice<u64>,
    cuda_type: blas_sys::cudaDataType_t,
}

impl GroupedGemm {
    /// Prepares the launch. `a` holds Σ tokens × k elements, `w` experts × k × n, `c` Σ tokens × n. Experts with
    /// no tokens are left out (their weights are not read). Buffers must outlive every launch.
    #[allow(clippy::too_many_arguments)]
    pub fn new<T: Element>(
        gpu: &Gpu,
        tokens: &[u32],
        n: u64,
        k: u64,
        a: &CudaSlice<T>,
        w: &CudaSlice<T>,
        c: &mut CudaSlice<T>,
    ) -> Result<GroupedGemm, DeviceError>
    where
        CudaBlas: Gemm<T>,
    {
        let total: u64 = tokens.iter().map(|&t| t as u64).sum();
        assert!(a.len() as u64 >= total * k);
        assert!(c.len() as u64 >= total * n);
        assert!(w.len() as u64 >= tokens.len() as u64 * k * n);
        let size = std::mem::size_of::<T>() as u64;
        let (a0, _ga) = a.device_ptr(&gpu.stream);
        let (w0, _gw) = w.device_ptr(&gpu.stream);
        let (c0, _gc) = c.device_ptr_mut(&gpu.stream);
        let (mut pa, mut pw, mut pc, mut ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut row = 0u64;
        for (e, &t) in tokens.iter().enumerate() {
            if t > 0 {
                pw.push(w0 + e as u64 * k * n * size);
                pa.push(a0 + row * k * size);
                pc.push(c0 + row * n * size);
                ms.push(t as i32);
            }
            row += t as u64;
        }
        let g = ms.len();
        let upload = |v: &Vec<u64>| {
            gpu.stream
                .clone_htod(v)
                .map_err(cuda("copying grouped-GEMM pointer arrays"))
        };
        Ok(GroupedGemm {
            groups: g as i32,
            // Column-major: m' = n, n' = tokens, k' = k.
            ms: vec![n as i32; g],
            ns: ms,
            ks: vec![k as i32; g],
            ldas: vec![n as i32; g],
            ldbs: vec![k as i32; g],
            ldcs: vec![n as i32; g],
            alphas: vec![1.0; g],
            betas: vec![0.0; g],
            trans: vec![blas_sys::cublasOperation_t::CUBLAS_OP_N; g],
            sizes: vec![1; g],
            ptr_w: upload(&pw)?,
            ptr_a: upload(&pa)?,
            ptr_c: upload(&pc)?,
            cuda_type: T::CUDA_TYPE,
        })
    }

    /// Enqueues the grouped launch (nothing when no expert has tokens).
    pub fn launch(&self, gpu: &Gpu, blas: &CudaBlas) -> Result<(), DeviceError> {
        if self.groups == 0 {
            return Ok(());
        }
        let (pw, _g1) = self.ptr_w.device_ptr(&gpu.stream);
        let (pa, _g2) = self.ptr_a.device_ptr(&gpu.stream);
        let (pc, _g3) = self.ptr_c.device_ptr(&gpu.stream);
        // SAFETY: per cuBLAS, the per-group scalars and sizes are host arrays of `groups` entries and the
        // matrix-pointer arrays are device arrays of Σ group sizes (= groups) entries; every pointer addresses a
        // buffer checked in `new` and kept alive by the caller.
        let status = unsafe {
            blas_sys::cublasGemmGroupedBatchedEx(
                *blas.handle(),
                self.trans.as_ptr(),
                self.trans.as_ptr(),
                self.ms.as_ptr(),
                self.ns.as_ptr(),
                self.ks.as_ptr(),
                self.alphas.as_ptr() as *const _,
                pw as *const *const std::ffi::c_void,
                self.cuda_type,
                self.ldas.as_ptr(),
                pa as *const *const std::ffi::c_void,
                self.cuda_type,
                self.ldbs.as_ptr(),
                self.betas.as_ptr() as *const _,
                pc as *const *mut std::ffi::c_void,
                self.cuda_type,
                self.ldcs.as_ptr(),
                self.groups,
                self.sizes.as_ptr(),
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            )
        };
        if status == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(DeviceError::Cuda {
                during: format!("cublasGemmGroupedBatchedEx ({} experts)", self.groups),
                message: format!("{status:?}"),
            })
        }
    }
}

/// Measures every projection over `token_counts(quick)`, then the grouped cases, in element type `T`.
/// `progress` is told each measurement as it completes.
pub fn run<T: Element>(
    gpu: &Gpu,
    kernels: &Kernels,
    r: Repeats,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<GemmSample>, Vec<GroupedGemmSample>), DeviceError>
where
    CudaBlas: Gemm<T>,
{
    crate::device::require_cublas()?;
    let blas = CudaBlas::new(gpu.stream.clone()).map_err(cuda("creating a cuBLAS handle"))?;
    let pool = random_pool::<T>(gpu, 0x6765_6d6d)?;
    let tokens = token_counts(quick);
    let max_m = *tokens.last().expect("token counts");
    let mut singles = Vec::new();
    let mut grouped = Vec::new();
    for (n, k) in projections() {
        let a = random_buffer(gpu, &pool, (max_m * k) as usize)?;
        let w = random_buffer(gpu, &pool, (k * n) as usize)?;
        let mut c = gpu
            .stream
            .alloc_zeros::<T>((max_m * n) as usize)
            .map_err(cuda("allocating GEMM output"))?;
        for &m in &tokens {
            let timing = time_gpu(gpu, kernels, r, || gemm(&blas, m, n, k, &a, &w, &mut c))?;
            progress(&format!(
                "{} gemm {m}×{n}×{k}: {:.1} µs (spread {:.0}%)",
                T::DTYPE.name(),
                timing.median_us,
                timing.spread_pct()
            ));
            singles.push(GemmSample {
                dtype: T::DTYPE,
                m,
                n,
                k,
                timing,
            });
        }
        drop((a, w, c));
        for (experts, t) in grouped_cases(quick) {
            let per = vec![t; experts as usize];
            let rows = experts as u64 * t as u64;
            let a = random_buffer(gpu, &pool, (rows * k) as usize)?;
            let w = random_buffer(gpu, &pool, (experts as u64 * k * n) as usize)?;
            let mut c = gpu
                .stream
                .alloc_zeros::<T>((rows * n) as usize)
                .map_err(cuda("allocating grouped output"))?;
            let g = GroupedGemm::new(gpu, &per, n, k, &a, &w, &mut c)?;
            let timing = time_gpu(gpu, kernels, r, || g.launch(gpu, &blas))?;
            progress(&format!(
                "{} grouped {experts}×{t}×{n}×{k}: {:.1} µs",
                T::DTYPE.name(),
                timing.median_us
            ));
            grouped.push(GroupedGemmSample {
                dtype: T::DTYPE,
                experts,
                tokens_per_expert: t,
                n,
                k,
                timing,
            });
        }
    }
    Ok((singles, grouped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_cover_every_preset_in_both_directions() {
        let p = projections();
        for s in EXPERT_SHAPES {
            assert!(p.contains(&(s.d_ff, s.d_model)) && p.contains(&(s.d_model, s.d_ff)));
        }
        assert_eq!(
            p.len(),
            2 * EXPERT_SHAPES.len(),
            "no two presets share a projection"
        );
        let t = token_counts(false);
        assert_eq!((t[0], *t.last().unwrap(), t.len()), (1, 16384, 28));
        assert!(
            t.windows(2)
                .all(|w| w[1] > w[0] && w[1] as f64 <= 2.0 * w[0] as f64)
        );
        assert!(token_counts(true).len() < t.len());
    }
}
