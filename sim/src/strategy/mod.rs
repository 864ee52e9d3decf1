//! Strategies: how each one lowers an iteration into operations.

pub mod ep;
pub mod layout;
pub mod shared;
