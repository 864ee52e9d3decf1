//! Every view drawn at 80×24 and 160×48 from a small scenario: snapshots of the whole screen, plus
//! assertions on what each view must show.

mod common;

use common::*;
use moesim_tui::View;
use ratatui::crossterm::event::KeyCode;

fn app_in(view: View) -> (tempfile::TempDir, moesim_tui::App) {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let mut app = loaded(&path, &dir.path().join("out"));
    app.switch(view.index());
    app.wait();
    (dir, app)
}

fn snapshots(view: View) {
    let (_dir, app) = app_in(view);
    for (w, h) in [(80, 24), (160, 48)] {
        let name = format!("{}_{w}x{h}", view.title().to_lowercase());
        insta::assert_snapshot!(name, draw(&app, w, h).backend());
    }
}

#[test]
fn compare_lists_every_strategy_and_stars_the_chosen_one() {
    snapshots(View::Compare);
    let (_dir, app) = app_in(View::Compare);
    let text = screen_text(&app, 80, 24);
    let session = app.session.as_ref().unwrap();
    for r in &session.report.results {
        assert!(
            text.contains(&r.strategy),
            "{} missing:\n{text}",
            r.strategy
        );
        assert!(
            text.contains(&format!("{:.2}", r.step_time_ms.p50)),
            "{text}"
        );
    }
    let chosen = &session.report.results[session.chosen.unwrap()].strategy;
    let starred = screen(&app, 80, 24)
        .into_iter()
        .find(|l| l.contains('★'))
        .expect("a starred row");
    assert!(starred.contains(chosen.as_str()), "{starred}");
    assert!(text.contains("expert_compute"), "breakdown bars:\n{text}");
}

#[test]
fn ranks_shows_every_rank_of_the_selected_iteration() {
    snapshots(View::Ranks);
    let (_dir, app) = app_in(View::Ranks);
    let text = screen_text(&app, 160, 48);
    for r in 0..8 {
        assert!(text.contains(&format!("r{r} ")), "rank {r}:\n{text}");
    }
    assert!(text.contains("iteration 1/6"), "{text}");
    assert!(text.contains("critical path"), "{text}");
}

#[test]
fn timeline_draws_a_gantt_row_per_rank_and_stream() {
    snapshots(View::Timeline);
    let (_dir, app) = app_in(View::Timeline);
    let lines = screen(&app, 160, 48);
    let compute = lines
        .iter()
        .find(|l| l.contains("r0  compute"))
        .expect("rank 0 compute row");
    assert!(compute.contains('E'), "expert compute on rank 0: {compute}");
    assert!(lines.iter().any(|l| l.contains("r0  comm")), "comm row");
    assert!(
        lines.iter().any(|l| l.contains("E expert_compute")),
        "legend"
    );
}

#[test]
fn timeline_under_the_flow_backend_has_a_row_per_link() {
    let text = SMALL.replace("nodes = 1\n", "nodes = 1\nnetwork = \"flow\"\n");
    assert_ne!(text, SMALL);
    let (dir, path) = scenario_file("small-flow.toml", &text);
    let mut app = loaded(&path, &dir.path().join("out"));
    app.switch(View::Timeline.index());
    app.wait();
    // Scroll past the 8 ranks' stream rows to the links.
    let rows = 8 * 2;
    for _ in 0..rows {
        key(&mut app, KeyCode::Down);
    }
    app.wait();
    let lines = screen(&app, 160, 48);
    let link = lines
        .iter()
        .find(|l| l.contains("gpu0→sw0"))
        .unwrap_or_else(|| panic!("a row for gpu0's NVLink egress:\n{}", lines.join("\n")));
    assert!(link.contains('='), "busy while flows cross it: {link}");
}

#[test]
fn placement_maps_experts_to_gpus_and_highlights_replicas() {
    snapshots(View::Placement);
    let (_dir, mut app) = app_in(View::Placement);
    // Static EP: every expert on exactly one GPU.
    let map = |app: &moesim_tui::App| -> Vec<String> {
        screen(app, 80, 24)
            .into_iter()
            .filter(|l| l.starts_with("│g"))
            .collect()
    };
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("0 replicated"), "{text}");
    assert_eq!(map(&app).len(), 8, "{text}");
    assert!(map(&app).iter().all(|l| !l.contains('◆')), "{text}");
    let held: usize = map(&app).iter().map(|l| l.matches('■').count()).sum();
    assert_eq!(held, 64, "{text}");
    // The replicated strategy (9 slots for 8 experts per GPU) has copies on several GPUs.
    key(&mut app, KeyCode::Down);
    let text = screen_text(&app, 80, 24);
    assert!(map(&app).iter().any(|l| l.contains('◆')), "{text}");
    assert!(text.contains("MoE layer 1/2"), "{text}");
}

#[test]
fn trace_shows_skew_drift_and_a_hit_rate_curve() {
    snapshots(View::Trace);
    let (_dir, app) = app_in(View::Trace);
    let text = screen_text(&app, 80, 24);
    let w = app.session.as_ref().unwrap().workload.as_ref().unwrap();
    assert!(text.contains(&format!("{:.3}", w.gini)), "{text}");
    assert!(text.contains("drift"), "{text}");
    assert!(text.contains("static top-c"), "{text}");
}

#[test]
fn knobs_lists_the_selected_strategys_parameters() {
    snapshots(View::Knobs);
    let (_dir, mut app) = app_in(View::Knobs);
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("EP size"), "{text}");
    assert!(!text.contains("slots per GPU"), "ep8 has no slots: {text}");
    key(&mut app, KeyCode::Right);
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("slots per GPU"), "{text}");
    assert!(text.contains("re-plan interval"), "{text}");
}

#[test]
fn help_overlay_lists_the_keys() {
    let (_dir, mut app) = app_in(View::Compare);
    keys(&mut app, "?");
    insta::assert_snapshot!("help_80x24", draw(&app, 80, 24).backend());
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("save plan.json"), "{text}");
    keys(&mut app, "x");
    assert!(!screen_text(&app, 80, 24).contains("save plan.json"));
}

/// Tiny and odd terminal sizes draw without panicking, in every view and with the overlays.
#[test]
fn every_view_survives_tiny_terminals() {
    let (_dir, mut app) = app_in(View::Compare);
    for view in View::ALL {
        app.switch(view.index());
        app.wait();
        for help in [false, true] {
            app.help = help;
            for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 10), (81, 25), (200, 60)] {
                let text = screen_text(&app, w, h);
                assert_eq!(text.lines().count(), h as usize);
            }
        }
    }
    app.help = false;
    app.error = Some("a long error message that has to wrap inside a small box".into());
    for (w, h) in [(1, 1), (3, 3), (20, 5)] {
        assert_eq!(screen_text(&app, w, h).lines().count(), h as usize);
    }
    app.open_picker();
    for (w, h) in [(1, 1), (3, 3), (20, 5)] {
        assert_eq!(screen_text(&app, w, h).lines().count(), h as usize);
    }
}
