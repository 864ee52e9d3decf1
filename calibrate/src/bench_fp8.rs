//! FP8 (E4M3) expert-GEMM micro-benchmarks through cuBLASLt, on GPUs with FP8 tensor cores (compute
//! capability 8.9 and later: Ada, Hopper, Blackwell).
//!
//! cuBLASLt runs FP8 only in the "TN" form (`D = Aᵀ·B`, A and B column-major with K leading). For the
//! row-major expert GEMM `C[m×n] = X[m×k] · Wᵀ` that is: A = the weights stored `[n × k]` row-major (the usual
//! `nn.Linear` layout, so `k × n` column-major, ld k), B = the activations `X[m × k]` row-major (`k × m`
//! column-major, ld k), D = `C` row-major (`n × m` column-major, ld n) in bf16. Scale factors are left unset
//! (1.0). Shapes that cuBLASLt has no FP8 kernel for are reported, not fatal.

use crate::bench_launch::Kernels;
use crate::device::{DeviceError, Gpu, cuda};
use crate::profile::{Dtype, GemmSample};
use crate::timer::{Repeats, time_gpu};
use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;
use std::ffi::c_void;

/// Whether this GPU has FP8 tensor cores and cuBLASLt is loadable.
pub fn supported(gpu: &Gpu) -> bool {
    let (major, minor) = gpu.compute_capability();
    // SAFETY: only tries to dlopen the library.
    (major, minor) >= (8, 9) && unsafe { lt::is_culib_present() }
}

fn check(status: lt::cublasStatus_t, during: &str) -> Result<(), DeviceError> {
    if status == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(DeviceError::Cuda {
            during: during.to_string(),
            message: format!("{status:?}"),
        })
    }
}

/// Random E4M3 bytes: random sign and mantissa, exponent field 5..=7 (magnitudes 0.25 to 1.875), so never
/// zero, NaN or large enough to overflow the bf16 output.
pub fn random_e4m3(n: usize, seed: u64) -> Vec<u8> {
    crate::device::random_bytes_host(n, seed)
        .into_iter()
        .map(|b| {
            let sign = b & 0x80;
            let exp = 5 + (b >> 3) % 3;
            let mant = b & 0x07;
            sign | (exp << 3) | mant
        })
        .collect()
}

/// A cuBLASLt handle with its workspace.
pub struct Lt {
    handle: lt::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

impl Lt {
    pub fn new(gpu: &Gpu) -> Result<Lt, DeviceError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: cuBLASLt is loadable (`supported` checked); writes one handle.
        check(unsafe { lt::cublasLtCreate(&mut handle) }, "cublasLtCreate")?;
        let workspace = gpu
            .stream
            .alloc_zeros::<u8>(32 << 20)
            .map_err(cuda("allocating the cuBLASLt workspace"))?;
        Ok(Lt { handle, workspace })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate, destroyed once.
        unsafe { lt::cublasLtDestroy(self.handle) };
    }
}

/// One FP8 GEMM shape, with its descriptors and the algorithm the heuristic chose.
pub struct Fp8Gemm {
    desc: lt::cublasLtMatmulDesc_t,
    a: lt::cublasLtMatrixLayout_t,
    b: lt::cublasLtMatrixLayout_t,
    d: lt::cublasLtMatrixLayout_t,
    algo: lt::cublasLtMatmulAlgo_t,
}

impl Drop for Fp8Gemm {
    fn drop(&mut self) {
        // SAFETY: each was created once in `new` (null ones are skipped by cuBLASLt's destroy functions).
        unsafe {
            lt::cublasLtMatrixLayoutDestroy(self.a);
            lt::cublasLtMatrixLayoutDestroy(self.b);
            lt::cublasLtMatrixLayoutDestroy(self.d);
            lt::cublasLtMatmulDescDestroy(self.desc);
        }
    }
}

impl Fp8Gemm {
    /// Describes `C[m×n] = X[m×k] · Wᵀ` and asks the heuristic for an algorithm; an error when there is none.
    pub fn new(l: &Lt, m: u64, n: u64, k: u64) -> Result<Fp8Gemm, DeviceError> {
        let mut g = Fp8Gemm {
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            d: std::ptr::null_mut(),
            // SAFETY: plain old data, overwritten by the heuristic's answer.
            algo: unsafe { std::mem::zeroed() },
        };
        let e4m3 = lt::cudaDataType::CUDA_R_8F_E4M3;
        // SAFETY: every call writes one opaque handle or reads the attribute buffer of the given size.
        unsafe {
            check(
                lt::cublasLtMatmulDescCreate(
                    &mut g.desc,
                    lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    lt::cudaDataType::CUDA_R_32F,
                ),
                "cublasLtMatmulDescCreate",
            )?;
            let op_t = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32;
            check(
                lt::cublasLtMatmulDescSetAttribute(
                    g.desc,
                    lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                    &op_t as *const i32 as *const c_void,
                    std::mem::size_of::<i32>(),
                ),
                "setting TRANSA",
            )?;
            check(
                lt::cublasLtMatrixLayoutCreate(&mut g.a, e4m3, k, n, k as i64),
                "layout A",
            )?;
            check(
                lt::cublasLtMatrixLayoutCreate(&mut g.b, e4m3, k, m, k as i64),
                "layout B",
            )?;
            check(
                lt::cublasLtMatrixLayoutCreate(
                    &mut g.d,
                    lt::cudaDataType::CUDA_R_16BF,
                    n,
                    m,
                    n as i64,
                ),
                "layout D",
            )?;
            let mut pref = std::ptr::null_mut();
            check(lt::cublasLtMatmulPreferenceCreate(&mut pref), "preference")?;
            let ws: u64 = (l.workspace.len()) as u64;
            let set = lt::cublasLtMatmulPreferenceSetAttribute(
                pref,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                std::mem::size_of::<u64>(),
            );
            let mut result: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
            let mut found = 0;
            let heur = lt::cublasLtMatmulAlgoGetHeuristic(
                l.handle,
                g.desc,
                g.a,
                g.b,
                g.d,
                g.d,
                pref,
                1,
                &mut result,
                &mut found,
            );
            lt::cublasLtMatmulPreferenceDestroy(pref);
            check(set, "setting the workspace size")?;
            check(heur, "cublasLtMatmulAlgoGetHeuristic")?;
            if found == 0 {
                return Err(DeviceError::Cuda {
                    during: format!("choosing an FP8 kernel for {m}×{n}×{k}"),
                    message: "cuBLASLt has none".into(),
                });
            }
            g.algo = result.algo;
        }
        Ok(g)
    }

    /// Enqueues the GEMM. `w` holds n × k bytes, `x` m × k, `c` m × n bf16 values.
    pub fn launch(
        &self,
        gpu: &Gpu,
        l: &mut Lt,
        w: &CudaSlice<u8>,
        x: &CudaSlice<u8>,
        c: &mut CudaSlice<bf16>,
    ) -> Result<(), DeviceError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (pw, _g1) = w.device_ptr(&gpu.stream);
        let (px, _g2) = x.device_ptr(&gpu.stream);
        let (pc, _g3) = c.device_ptr_mut(&gpu.stream);
        let ws_len = l.workspace.len();
        let (pws, _g4) = l.workspace.device_ptr_mut(&gpu.stream);
        // SAFETY: descriptors built in `new` for these sizes; buffers sized by the caller (checked by `run`);
        // C is given as both C (not read, beta = 0) and D.
        let status = unsafe {
            lt::cublasLtMatmul(
                l.handle,
                self.desc,
                &alpha as *const f32 as *const c_void,
                pw as *const c_void,
                self.a,
                px as *const c_void,
                self.b,
                &beta as *const f32 as *const c_void,
                pc as *const c_void,
                self.d,
                pc as *mut c_void,
                self.d,
                &self.algo,
                pws as *mut c_void,
                ws_len,
                gpu.stream.cu_stream() as lt::cudaStream_t,
            )
        };
        check(status, "cublasLtMatmul (FP8)")
    }
}

/// Measures every preset projection over `token_counts` in FP8. Returns the samples and, for shapes cuBLASLt
/// would not run, one line each for `samples.skipped`.
pub fn run(
    gpu: &Gpu,
    kernels: &Kernels,
    r: Repeats,
    token_counts: &[u64],
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<GemmSample>, Vec<String>), DeviceError> {
    let mut lt_handle = Lt::new(gpu)?;
    let max_m = *token_counts.last().expect("token counts");
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (n, k) in crate::bench_gemm::projections() {
        let up = |bytes: Vec<u8>| {
            gpu.stream
                .clone_htod(&bytes)
                .map_err(cuda("copying FP8 data to the GPU"))
        };
        let w = up(random_e4m3((n * k) as usize, 0xf8 ^ n ^ (k << 20)))?;
        let x = up(random_e4m3((max_m * k) as usize, 0xf8f8 ^ k))?;
        let mut c = gpu
            .stream
            .alloc_zeros::<bf16>((max_m * n) as usize)
            .map_err(cuda("allocating FP8 GEMM output"))?;
        let mut unsupported = Vec::new();
        for &m in token_counts {
            let g = match Fp8Gemm::new(&lt_handle, m, n, k) {
                Ok(g) => g,
                Err(_) => {
                    unsupported.push(m);
                    continue;
                }
            };
            let lt_ref = &mut lt_handle;
            let timing = time_gpu(gpu, kernels, r, || g.launch(gpu, lt_ref, &w, &x, &mut c))?;
            progress(&format!(
                "fp8 gemm {m}×{n}×{k}: {:.1} µs (spread {:.0}%)",
                timing.median_us,
                timing.spread_pct()
            ));
            out.push(GemmSample {
                dtype: Dtype::Fp8,
                m,
                n,
                k,
                timing,
            });
        }
        if !unsupported.is_empty() {
            skipped.push(format!(
                "fp8 GEMM n={n} k={k}: cuBLASLt has no FP8 kernel for tokens {unsupported:?}"
            ));
        }
    }
    Ok((out, skipped))
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_e4m3_values_are_finite_and_non_zero() {
        let v = super::random_e4m3(4096, 3);
        for b in v {
            let exp = (b >> 3) & 0x0f;
            assert!((5..=7).contains(&exp), "{b:#x}");
            assert_ne!(b & 0x7f, 0x7f, "NaN");
        }
    }
}
