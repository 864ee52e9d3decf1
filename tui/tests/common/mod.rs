//! Shared test fixtures: a small scenario that simulates in well under a second in a debug build.

#![allow(dead_code)]

use moesim_tui::App;
use moesim_tui::worker::Worker;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::path::{Path, PathBuf};

pub const SMALL: &str = r#"
name = "small"
description = "two layers of OLMoE on one DGX H100"
seed = 7

[model]
preset = "olmoe-1b-7b"
layers = 2
seq_len = 256
micro_batch = 1

[cluster]
preset = "dgx-h100"
nodes = 1

[workload]
mode = "training"
iterations = 6
skew = { distribution = "zipf", s = 1.0 }

[[strategy]]
name = "ep8"
kind = "ep"
ep_size = 8

[[strategy]]
name = "ep8-replicated"
kind = "ep-replicated"
ep_size = 8
slots_per_gpu = 9
replan_interval = 2

[objective]
metric = "tokens-per-s"
"#;

/// Writes `text` as `name` into a fresh directory and returns (directory guard, file path).
pub fn scenario_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write scenario");
    (dir, path)
}

/// An app with `path` loaded (waits for the background simulation).
pub fn loaded(path: &Path, out: &Path) -> App {
    let mut app = App::new(
        Worker::default(),
        out.to_path_buf(),
        path.parent().unwrap().to_path_buf(),
    );
    app.open(path);
    app.wait();
    app
}

pub fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

pub fn keys(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

/// The app drawn at `w`×`h`.
pub fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| f.render_widget(app, f.area())).expect("draw");
    t
}

/// The screen as lines of text.
pub fn screen(app: &App, w: u16, h: u16) -> Vec<String> {
    let t = draw(app, w, h);
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect()
}

pub fn screen_text(app: &App, w: u16, h: u16) -> String {
    screen(app, w, h).join("\n")
}
