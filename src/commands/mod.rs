pub mod calibrate;
pub mod plan;
pub mod simulate;
pub mod trace;
pub mod validate;
