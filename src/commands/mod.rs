pub mod place;
pub mod plan;
pub mod report;
pub mod simulate;
pub mod sweep;
pub mod timeline;
