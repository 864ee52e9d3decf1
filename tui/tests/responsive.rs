//! Re-simulation runs off the UI thread: with a slow scenario the app keeps taking keys and drawing
//! while the simulation runs, and the result appears when it is done.

mod common;

use common::*;
use moesim_tui::App;
use moesim_tui::session::{Progress, Request, Session, load};
use moesim_tui::worker::Worker;
use ratatui::crossterm::event::KeyCode;
use std::time::{Duration, Instant};

/// A scenario that takes at least 1.5 s to simulate.
fn slow(r: Request, p: &Progress) -> Result<Session, String> {
    std::thread::sleep(Duration::from_millis(1500));
    load(r, p)
}

#[test]
fn the_ui_answers_keys_and_draws_while_a_slow_simulation_runs() {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let mut app = App::new(
        Worker::with_loader(slow),
        dir.path().join("out"),
        dir.path().to_path_buf(),
    );
    app.open(&path);
    app.wait();
    let started = Instant::now();
    keys(&mut app, "6");
    // ep8's knobs end with the node count.
    let nodes = app
        .knobs()
        .iter()
        .position(|k| k.key == "cluster.nodes")
        .unwrap();
    for _ in 0..nodes {
        key(&mut app, KeyCode::Down);
    }
    keys(&mut app, "+");
    assert!(app.busy(), "the re-simulation runs in the background");
    // While it runs: keys change the state, and frames draw, each in far less than the simulation takes.
    let mut frames = 0;
    while app.busy() {
        let t = Instant::now();
        key(&mut app, KeyCode::Tab);
        let text = screen_text(&app, 80, 24);
        assert!(text.contains("simulating…"), "{text}");
        app.poll();
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "a frame took {:?}",
            t.elapsed()
        );
        frames += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(frames >= 10, "only {frames} frames while simulating");
    // Tab went round the views while waiting; the answer arrived and the previous run is kept for Δ.
    assert!(app.previous.is_some());
    let s = app.session.as_ref().unwrap();
    assert_eq!(s.request.overrides, vec!["cluster.nodes=2"]);
    assert_eq!(s.scenario.cluster.gpus(), 16);
    // Progress counted every iteration of both strategies.
    assert_eq!(app.worker.progress(), (12, 12));
}

#[test]
fn a_newer_request_supersedes_a_running_one() {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let mut app = App::new(
        Worker::with_loader(slow),
        dir.path().join("out"),
        dir.path().to_path_buf(),
    );
    app.open(&path);
    app.wait();
    app.resimulate(vec!["cluster.nodes=2".into()]);
    app.resimulate(vec!["cluster.nodes=3".into()]);
    app.wait();
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.nodes, 3);
    // The superseded answer is dropped when it arrives.
    std::thread::sleep(Duration::from_millis(200));
    app.poll();
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.nodes, 3);
}

fn panics(_: Request, _: &Progress) -> Result<Session, String> {
    panic!("boom in the simulator")
}

#[test]
fn a_panicking_simulation_is_an_error_on_screen_not_a_crash() {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let mut app = App::new(
        Worker::with_loader(panics),
        dir.path().join("out"),
        dir.path().to_path_buf(),
    );
    app.open(&path);
    app.wait();
    assert!(app.session.is_none());
    let text = screen_text(&app, 80, 24);
    assert!(
        text.contains("the simulation panicked: boom in the simulator"),
        "{text}"
    );
    keys(&mut app, "q");
    assert!(app.quit);
}
