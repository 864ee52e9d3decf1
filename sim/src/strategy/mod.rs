//! Strategies: how each one lowers an iteration into operations.

pub mod blocks;
pub mod ep;
pub mod fssdp;
pub mod layout;
pub mod model;
pub mod offload;
pub mod output_head;
pub mod reach;
pub mod record;
pub mod shared;
pub mod stage_memory;
