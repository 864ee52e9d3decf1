pub mod plan;
pub mod simulate;
