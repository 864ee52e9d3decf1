//! Cost models for moesim.
//!
//! The simulator asks a [`CostModel`] how long device-level work takes (a GEMM, a grouped expert GEMM, a
//! memory-bound kernel). This crate owns every datasheet number ([`datasheet`]) and the roofline model built
//! from them ([`Roofline`]); measured, fitted profiles (GPU micro-benchmarks through cudarc) implement the same
//! trait, so the simulator never knows which one it runs on.
//!
//! ```
//! use moesim_calibrate::{CostModel, Roofline, datasheet};
//! let h100 = Roofline::from_datasheet(&datasheet::H100_SXM);
//! // 4096 tokens through a 4096×14336 projection in bf16.
//! let t = h100.gemm_s(4096, 14336, 4096, 2);
//! assert!(t > 0.0 && t < 1e-3);
//! ```

pub mod cost_model;
pub mod datasheet;
pub mod roofline;

pub use cost_model::CostModel;
pub use datasheet::GpuDatasheet;
pub use roofline::Roofline;
