//! `moesim tui`: an interactive terminal explorer over moesim's simulation results.
//!
//! Structure: [`session`] loads and simulates a scenario; [`worker`] does that on a background thread;
//! [`app`] holds the state and turns key events into small state changes; [`ui`] and [`views`] draw the
//! state (`impl Widget for &App`); [`terminal`] owns the real terminal (raw mode, restore on exit, panic and
//! Ctrl-C); [`export`] writes plan.json and on-screen reports.

pub mod app;
pub mod export;
pub mod knob;
pub mod picker;
pub mod session;
pub mod terminal;
pub mod timeline_job;
pub mod ui;
pub mod views;
pub mod worker;
pub mod workload;

pub use app::{App, View};
pub use terminal::run;
