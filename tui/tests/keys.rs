//! Key events driven through the app's state machine: select, scrub, switch, edit a knob, re-simulate,
//! export, and the scenario picker and error paths.

mod common;

use common::*;
use moesim_tui::worker::Worker;
use moesim_tui::{App, View};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn small() -> (tempfile::TempDir, App) {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let app = loaded(&path, &dir.path().join("out"));
    (dir, app)
}

#[test]
fn number_keys_and_tab_switch_views() {
    let (_dir, mut app) = small();
    keys(&mut app, "3");
    assert_eq!(app.view, View::Timeline);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.view, View::Placement);
    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view, View::Ranks);
    keys(&mut app, "6");
    assert!(screen_text(&app, 80, 24).contains("knobs of"));
}

#[test]
fn arrows_select_a_strategy_and_the_breakdown_follows() {
    let (_dir, mut app) = small();
    let row = |app: &App, name: &str| {
        screen(app, 80, 24)
            .into_iter()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap()
    };
    assert!(row(&app, "ep8").contains('▶'));
    key(&mut app, KeyCode::Down);
    assert!(row(&app, "ep8-replicated").contains('▶'));
    assert!(!row(&app, "ep8").contains('▶'));
    assert!(screen_text(&app, 80, 24).contains("ep8-replicated: critical-path time"));
    // Selection stops at the last strategy.
    key(&mut app, KeyCode::Down);
    assert_eq!(app.strategy, 1);
}

#[test]
fn scrubbing_iterations_updates_the_ranks_view() {
    let (_dir, mut app) = small();
    keys(&mut app, "2");
    app.wait();
    let before = screen_text(&app, 80, 24);
    assert!(before.contains("iteration 1/6"), "{before}");
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    // The per-rank table waits for the iteration's timeline, computed in the background.
    assert!(app.current_timeline().is_none());
    app.wait();
    let after = screen_text(&app, 80, 24);
    assert!(after.contains("iteration 3/6"), "{after}");
    let r = app.selected().unwrap();
    assert!(
        after.contains(&format!("{:.2} ms", r.per_iteration[2].step_ms)),
        "{after}"
    );
    // The per-rank figures are those of iteration 3, not iteration 1.
    let t = app.current_timeline().unwrap().as_ref().unwrap();
    assert_eq!(t.iteration, 2);
    assert!(
        after.contains(&format!("{}", t.tokens_received[0])),
        "{after}"
    );
    for _ in 0..10 {
        key(&mut app, KeyCode::Right);
    }
    assert_eq!(app.iteration, 5, "scrubbing stops at the last iteration");
}

#[test]
fn timeline_zooms_and_pans() {
    let (_dir, mut app) = small();
    keys(&mut app, "3");
    app.wait();
    let whole = screen_text(&app, 160, 48);
    keys(&mut app, "++");
    assert_eq!(app.zoom, 4);
    let zoomed = screen_text(&app, 160, 48);
    assert!(zoomed.contains("zoom ×4"), "{zoomed}");
    assert_ne!(whole, zoomed);
    keys(&mut app, ">>>>>>>>>>>>>>>>");
    assert!(
        (app.pan - 0.75).abs() < 1e-9,
        "pan stops at the end: {}",
        app.pan
    );
    keys(&mut app, "---");
    assert_eq!(app.zoom, 1);
    assert_eq!(app.pan, 0.0);
    // Rows scroll, and stop at the last of the 16 (8 ranks × compute and comm).
    assert!(screen_text(&app, 80, 24).contains("rows 1–"));
    for _ in 0..40 {
        key(&mut app, KeyCode::Down);
    }
    assert_eq!(app.row_offset, 15);
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("rows 16–16/16"), "{text}");
    assert!(text.contains("r7  comm"), "{text}");
    assert!(!text.contains("r0  compute"), "{text}");
}

#[test]
fn editing_a_knob_resimulates_and_shows_the_difference() {
    let (_dir, mut app) = small();
    let before = app.session.as_ref().unwrap().report.clone();
    keys(&mut app, "6");
    key(&mut app, KeyCode::Right); // ep8-replicated
    // After EP size, TP, ETP and PP (replicated EP composes with them in training): slots per GPU.
    for _ in 0..4 {
        key(&mut app, KeyCode::Down);
    }
    assert_eq!(app.knobs()[app.knob].label, "slots per GPU");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Backspace);
    keys(&mut app, "16");
    assert!(
        screen_text(&app, 80, 24).contains("16▏"),
        "the edit shows while typing"
    );
    key(&mut app, KeyCode::Enter);
    assert!(app.busy());
    app.wait();
    let s = app.session.as_ref().unwrap();
    assert_eq!(s.request.overrides, vec!["strategy.1.slots_per_gpu=16"]);
    assert_eq!(
        s.scenario.strategies[1].replication.unwrap().slots_per_gpu,
        16
    );
    let now = s.report.results[1].clone();
    assert_ne!(now.tokens_per_s, before.results[1].tokens_per_s);
    // ep8 did not change.
    assert_eq!(
        s.report.results[0].tokens_per_s,
        before.results[0].tokens_per_s
    );
    let text = screen_text(&app, 80, 24);
    let row = text
        .lines()
        .find(|l| l.starts_with("│ep8-replicated"))
        .unwrap();
    assert!(
        row.contains(&format!("{:.0}", before.results[1].tokens_per_s)),
        "{row}"
    );
    assert!(row.contains(&format!("{:.0}", now.tokens_per_s)), "{row}");
    assert!(row.contains('%'), "a change in percent: {row}");
    assert!(text.contains("strategy.1.slots_per_gpu=16"), "{text}");
    // The Compare view shows the change too.
    keys(&mut app, "1");
    let row = screen(&app, 80, 24)
        .into_iter()
        .find(|l| l.contains("ep8-replicated"))
        .unwrap();
    let sign = if now.tokens_per_s > before.results[1].tokens_per_s {
        '+'
    } else {
        '-'
    };
    assert!(
        row.contains(&format!("{sign}")) && row.contains('%'),
        "{row}"
    );
}

#[test]
fn plus_steps_the_gpu_count_and_a_bad_value_is_an_error_on_screen() {
    let (_dir, mut app) = small();
    keys(&mut app, "6");
    let nodes = app
        .knobs()
        .iter()
        .position(|k| k.key == "cluster.nodes")
        .unwrap();
    for _ in 0..nodes {
        key(&mut app, KeyCode::Down);
    }
    keys(&mut app, "+");
    app.wait();
    let s = app.session.as_ref().unwrap();
    assert_eq!(s.scenario.cluster.gpus(), 16);
    assert!(app.previous.is_some());
    // A value the scenario rejects keeps the last good run and shows the error.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Backspace);
    keys(&mut app, "x");
    key(&mut app, KeyCode::Enter);
    app.wait();
    assert!(app.error.is_some());
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.gpus(), 16);
    assert!(screen_text(&app, 80, 24).contains("error"));
    key(&mut app, KeyCode::Esc);
    assert!(app.error.is_none());
}

#[test]
fn save_plan_and_write_report_export_files() {
    let (dir, mut app) = small();
    keys(&mut app, "s");
    let plan = dir.path().join("out/plan.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let s = app.session.as_ref().unwrap();
    assert_eq!(json["chosen"], s.report.results[s.chosen.unwrap()].strategy);
    assert!(app.status.contains("plan saved"), "{}", app.status);
    // A second `s` keeps the first plan and writes the next free name.
    keys(&mut app, "s");
    assert!(app.status.contains("plan-2.json"), "{}", app.status);
    assert!(dir.path().join("out/plan-2.json").is_file());
    assert_eq!(
        std::fs::read_to_string(&plan).unwrap(),
        std::fs::read_to_string(dir.path().join("out/plan-2.json")).unwrap()
    );
    keys(&mut app, "2");
    app.wait();
    keys(&mut app, "w");
    let report = std::fs::read_to_string(dir.path().join("out/small-ranks.md")).unwrap();
    assert!(report.contains("ranks in iteration 0"), "{report}");
    keys(&mut app, "W");
    assert!(
        app.status.contains("writing the capacity report"),
        "{}",
        app.status
    );
    app.wait_report();
    assert!(
        app.status.contains("capacity report written"),
        "{}",
        app.status
    );
    let index = std::fs::read_to_string(dir.path().join("out/report/index.md")).unwrap();
    assert!(index.contains("ep8-replicated"), "{index}");
    assert!(dir.path().join("out/report/index.html").is_file());
}

#[test]
fn help_toggles_and_q_and_ctrl_c_quit() {
    let (_dir, mut app) = small();
    keys(&mut app, "?");
    assert!(app.help);
    key(&mut app, KeyCode::Esc);
    assert!(!app.help);
    assert!(!app.quit);
    keys(&mut app, "q");
    assert!(app.quit);
    let (_dir, mut app) = small();
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn picker_lists_scenarios_and_opens_the_selected_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-broken.toml"), "[model\npreset = 1").unwrap();
    std::fs::write(dir.path().join("b-small.toml"), SMALL).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a scenario").unwrap();
    let mut app = App::new(
        Worker::default(),
        dir.path().join("out"),
        dir.path().to_path_buf(),
    );
    app.open_picker();
    let text = screen_text(&app, 80, 24);
    assert!(
        text.contains("a-broken.toml") && text.contains("b-small.toml"),
        "{text}"
    );
    assert!(!text.contains("notes.txt"));
    // The broken one: an error inside the picker, no crash.
    key(&mut app, KeyCode::Enter);
    app.wait();
    assert!(app.session.is_none());
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("error"), "{text}");
    assert!(text.contains("invalid scenario"), "{text}");
    keys(&mut app, "o");
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    app.wait();
    assert_eq!(app.session.as_ref().unwrap().scenario.name, "small");
    assert!(app.picker.is_none());
}

#[test]
fn a_missing_file_is_an_error_on_screen() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = App::new(
        Worker::default(),
        dir.path().join("out"),
        dir.path().to_path_buf(),
    );
    app.open(&dir.path().join("nope.toml"));
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("cannot read scenario"), "{text}");
}

#[test]
fn clicking_a_tab_switches_and_the_wheel_selects() {
    use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let (_dir, mut app) = small();
    let mouse = |kind, column, row| MouseEvent {
        kind,
        column,
        row,
        modifiers: KeyModifiers::NONE,
    };
    // Find the tab's column on screen, then click it.
    let tabs = screen(&app, 80, 24)[0].clone();
    let col = tabs.find("4 Placement").unwrap() as u16 + 2;
    app.on_mouse(mouse(MouseEventKind::Down(MouseButton::Left), col, 0));
    assert_eq!(app.view, View::Placement);
    app.on_mouse(mouse(MouseEventKind::ScrollDown, 10, 10));
    assert_eq!(app.strategy, 1);
    app.on_mouse(mouse(MouseEventKind::ScrollUp, 10, 10));
    assert_eq!(app.strategy, 0);
    // A click below the tab bar does not switch.
    app.on_mouse(mouse(MouseEventKind::Down(MouseButton::Left), 2, 5));
    assert_eq!(app.view, View::Placement);
}

/// `+` on the nodes knob skips node counts the scenario rejects (an EP size of 16 does not divide 24
/// GPUs) and re-simulates the next valid one; `-` with no valid value below says so.
#[test]
fn plus_steps_knobs_to_the_next_valid_value() {
    let text = SMALL
        .replace("nodes = 1", "nodes = 2")
        .replace(
            "name = \"ep8\"\nkind = \"ep\"\nep_size = 8",
            "name = \"ep16\"\nkind = \"ep\"\nep_size = 16",
        )
        .replace(
            "ep_size = 8\nslots_per_gpu = 9",
            "ep_size = 16\nslots_per_gpu = 4",
        );
    let (dir, path) = scenario_file("sixteen.toml", &text);
    let mut app = loaded(&path, &dir.path().join("out"));
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.gpus(), 16);
    keys(&mut app, "6");
    let nodes = app
        .knobs()
        .iter()
        .position(|k| k.key == "cluster.nodes")
        .unwrap();
    for _ in 0..nodes {
        key(&mut app, KeyCode::Down);
    }
    keys(&mut app, "+");
    app.wait();
    assert!(app.error.is_none(), "{:?}", app.error);
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.nodes, 4);
    keys(&mut app, "-");
    app.wait();
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.nodes, 2);
    keys(&mut app, "-");
    assert!(
        app.status.contains("no valid value below 2"),
        "{}",
        app.status
    );
    assert_eq!(app.session.as_ref().unwrap().scenario.cluster.nodes, 2);
}

#[test]
fn tp_and_pp_knobs_resimulate_and_a_refused_layout_is_an_error_on_screen() {
    let (_dir, mut app) = small();
    keys(&mut app, "6");
    key(&mut app, KeyCode::Down); // ep8: EP size, then TP
    assert_eq!(app.knobs()[app.knob].label, "TP (tensor parallel)");
    keys(&mut app, "+");
    app.wait();
    assert!(app.error.is_none(), "{:?}", app.error);
    let s = app.session.as_ref().unwrap();
    assert_eq!(s.request.overrides, vec!["strategy.0.tp=2"]);
    assert_eq!(s.scenario.strategies[0].parallel.tp, 2);
    assert!(app.previous.is_some());
    assert!(screen_text(&app, 80, 24).contains("strategy.0.tp=2"));
    // PP 3 does not divide the 8 GPUs: the scenario's error is shown and the last good run kept.
    key(&mut app, KeyCode::Down);
    assert_eq!(app.knobs()[app.knob].label, "ETP (expert tensor parallel)");
    key(&mut app, KeyCode::Down);
    assert_eq!(app.knobs()[app.knob].label, "PP (pipeline stages)");
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Backspace);
    keys(&mut app, "3");
    key(&mut app, KeyCode::Enter);
    app.wait();
    let err = app.error.clone().expect("refused");
    assert!(err.contains("pp"), "{err}");
    assert_eq!(
        app.session.as_ref().unwrap().scenario.strategies[0]
            .parallel
            .pp,
        1
    );
    assert!(screen_text(&app, 80, 24).contains("error"));
}

/// The picker opens on the quickstart (seconds), not on the first file by name (the 256-GPU benchmark).
#[test]
fn the_picker_defaults_to_the_quickstart() {
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let p = moesim_tui::picker::Picker::scan(&scenarios);
    assert!(p.files.len() >= 5);
    assert_eq!(p.files[p.selected].file_name().unwrap(), "quickstart.toml");
}
