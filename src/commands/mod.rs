pub mod place;
pub mod plan;
pub mod simulate;
