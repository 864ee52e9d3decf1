//! Cost models for moesim.
//!
//! The simulator asks a [`CostModel`] how long device-level work takes (a GEMM, a grouped expert GEMM, a
//! memory-bound kernel, a copy, a collective). This crate owns every datasheet number ([`datasheet`]) and the
//! roofline model built from them ([`Roofline`]); GPU profiles ([`profile`]), measured by the micro-benchmarks
//! ([`bench_gemm`], [`bench_fp8`], [`bench_copy`], [`bench_launch`], [`bench_nccl`] through [`device`]) or generated from the
//! datasheet ([`profiles`]), are fitted ([`fit`]) into [`MeasuredCost`], which implements the same trait, so the
//! simulator never knows which one it runs on. [`validate`] runs a plan's expert work on a real GPU.
//!
//! ```
//! use moesim_calibrate::{CostModel, Roofline, datasheet};
//! let h100 = Roofline::from_datasheet(&datasheet::H100_SXM);
//! // 4096 tokens through a 4096×14336 projection in bf16.
//! let t = h100.gemm_s(4096, 14336, 4096, 2);
//! assert!(t > 0.0 && t < 1e-3);
//! ```

pub mod bench_copy;
pub mod bench_fp8;
pub mod bench_gemm;
pub mod bench_launch;
pub mod bench_nccl;
pub mod calibrate;
pub mod cost_model;
pub mod datasheet;
pub mod device;
pub mod fit;
pub mod measured;
pub mod profile;
pub mod profiles;
pub mod roofline;
pub mod timer;
pub mod validate;

pub use cost_model::{CollectiveOp, CopyKind, CostModel};
pub use datasheet::GpuDatasheet;
pub use measured::MeasuredCost;
pub use profile::Profile;
pub use roofline::Roofline;
