//! Strategies: how each one lowers an iteration into operations.

pub mod ep;
pub mod fssdp;
pub mod layout;
pub mod offload;
pub mod shared;
