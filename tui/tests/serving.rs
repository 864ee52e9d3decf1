//! The Serving view on a serving scenario (scenarios/serving-mixtral.toml, shortened with a
//! `workload.serving.duration_s` override): one row per deployment with the report's figures, the
//! per-request histogram, the arrival-rate knob, and every other view saying it does not apply.

mod common;

use common::*;
use moesim_reports::inputs::Inputs;
use moesim_tui::session::Request;
use moesim_tui::views::serving::ms;
use moesim_tui::worker::Worker;
use moesim_tui::{App, View};
use ratatui::crossterm::event::KeyCode;
use std::path::PathBuf;

fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

/// `name` loaded with a short request stream (the override `moesim --set` would take).
fn serving(name: &str, duration_s: f64) -> (tempfile::TempDir, App, Request) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = scenario(name);
    let mut app = App::new(
        Worker::default(),
        dir.path().join("out"),
        path.parent().unwrap().to_path_buf(),
    );
    let mut request = Request::from_file(&path).unwrap();
    request
        .overrides
        .push(format!("workload.serving.duration_s={duration_s}"));
    app.worker.start(request.clone());
    app.wait();
    assert!(app.error.is_none(), "{:?}", app.error);
    (dir, app, request)
}

#[test]
fn serving_view_shows_every_deployment_with_the_reports_ttft() {
    let (_dir, app, request) = serving("serving-mixtral.toml", 5.0);
    // A serving scenario opens on the Serving view.
    assert_eq!(app.view, View::Serving);
    // The figures on screen are the serving simulation's, run here independently.
    let inputs =
        Inputs::resolve(&request.path, request.text.clone(), request.overrides, None).unwrap();
    let report = inputs.simulate_serving().unwrap();
    assert_eq!(report.results.len(), 2);
    assert_eq!(app.serving().unwrap(), &report);
    let wide = screen_text(&app, 160, 48);
    for r in &report.results {
        let row = screen(&app, 160, 48)
            .into_iter()
            .find(|l| l.contains(&format!(" {} ", r.strategy)))
            .unwrap_or_else(|| panic!("no row for {}:\n{wide}", r.strategy));
        let m = &r.metrics;
        for v in [m.ttft_ms.p50, m.ttft_ms.p90, m.ttft_ms.p99, m.tpot_ms.p90] {
            assert!(row.contains(&format!(" {} ", ms(v))), "{} in {row}", ms(v));
        }
        assert!(row.contains(&m.completed.to_string()), "{row}");
        assert!(m.completed > 0);
    }
    // At 80 columns the names, the TTFT p90 and the SLO target still show.
    let narrow = screen_text(&app, 80, 24);
    for r in &report.results {
        assert!(narrow.contains(&r.strategy), "{narrow}");
        assert!(narrow.contains(&ms(r.metrics.ttft_ms.p90)), "{narrow}");
    }
    assert!(narrow.contains("SLO TTFT ≤ 1000 ms"), "{narrow}");
    // The histogram of the selected deployment, its title marking the SLO's TTFT target.
    assert!(wide.contains("ep8: TTFT per request"), "{wide}");
    assert!(wide.contains("SLO TTFT ≤ 1000 ms for 90 %"), "{wide}");
}

#[test]
fn its_key_switches_to_the_serving_view_and_arrows_select() {
    let (_dir, mut app, _) = serving("serving-mixtral.toml", 3.0);
    keys(&mut app, "1");
    assert_eq!(app.view, View::Compare);
    let text = screen_text(&app, 80, 24);
    assert!(
        text.contains("Compare: does not apply to a serving scenario"),
        "{text}"
    );
    keys(&mut app, "7");
    assert_eq!(app.view, View::Serving);
    assert!(screen_text(&app, 80, 24).contains("7 Serving"));
    key(&mut app, KeyCode::Down);
    assert_eq!(app.deployment, 1);
    let text = screen_text(&app, 160, 48);
    assert!(text.contains("ep8-replicated: TTFT per request"), "{text}");
    let selected = screen(&app, 160, 48)
        .into_iter()
        .find(|l| l.contains('▶'))
        .unwrap();
    assert!(selected.contains("ep8-replicated"), "{selected}");
    // Selection stops at the last deployment; ←/→ switch the histogram's figure.
    key(&mut app, KeyCode::Down);
    assert_eq!(app.deployment, 1);
    key(&mut app, KeyCode::Right);
    let text = screen_text(&app, 160, 48);
    assert!(text.contains("TPOT per request"), "{text}");
    assert!(text.contains("SLO TPOT ≤ 50.0 ms"), "{text}");
    key(&mut app, KeyCode::Right);
    assert!(screen_text(&app, 160, 48).contains("latency per request"));
}

#[test]
fn the_arrival_rate_knob_resimulates_the_serving_scenario() {
    let (_dir, mut app, _) = serving("serving-mixtral.toml", 3.0);
    let before = app.serving().unwrap().results[0].metrics.requests;
    keys(&mut app, "6");
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("arrival rate (requests/s)"), "{text}");
    assert!(text.contains("knobs of ep8"), "{text}");
    assert_eq!(app.knobs()[0].key, "workload.serving.rate_per_s");
    // 10 → 11 requests/s.
    keys(&mut app, "+");
    app.wait();
    assert!(app.error.is_none(), "{:?}", app.error);
    let s = app.session.as_ref().unwrap();
    assert!(
        s.request
            .overrides
            .contains(&"workload.serving.rate_per_s=11".to_string()),
        "{:?}",
        s.request.overrides
    );
    assert!(app.serving().unwrap().results[0].metrics.requests > before);
    assert_eq!(app.view, View::Knobs);
    let text = screen_text(&app, 160, 48);
    assert!(text.contains("workload.serving.rate_per_s=11"), "{text}");
    assert!(text.contains("TTFT was"), "{text}");
}

/// Every view, at odd sizes and with the overlays, on a scenario with disaggregated deployments.
#[test]
fn a_serving_scenario_draws_in_every_view_without_panicking() {
    let (_dir, mut app, _) = serving("serving-mixtral-pd.toml", 2.0);
    let names: Vec<String> = app
        .serving()
        .unwrap()
        .results
        .iter()
        .map(|r| r.strategy.clone())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let text = screen_text(&app, 160, 48);
    for n in &names {
        assert!(text.contains(n.as_str()), "{n}:\n{text}");
    }
    for view in View::ALL {
        app.switch(view.index());
        app.wait();
        for k in [
            KeyCode::Down,
            KeyCode::Right,
            KeyCode::Char('+'),
            KeyCode::Char('<'),
        ] {
            if view != View::Knobs {
                key(&mut app, k);
            }
        }
        for help in [false, true] {
            app.help = help;
            for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 10), (80, 24), (200, 60)] {
                let text = screen_text(&app, w, h);
                assert_eq!(text.lines().count(), h as usize);
            }
        }
        app.help = false;
        if !view.serves() {
            assert!(
                screen_text(&app, 160, 48).contains("does not apply to a serving scenario"),
                "{view:?}"
            );
        }
    }
    // `s` and `W` say why there is no plan.json or report for a serving scenario.
    keys(&mut app, "s");
    assert!(app.status.contains("moesim plan"), "{}", app.status);
    app.status.clear();
    keys(&mut app, "W");
    assert!(app.status.contains("moesim plan"), "{}", app.status);
}

#[test]
fn a_training_scenario_keeps_its_views_and_the_serving_view_says_it_does_not_apply() {
    let (dir, path) = scenario_file("small.toml", SMALL);
    let mut app = loaded(&path, &dir.path().join("out"));
    assert_eq!(app.view, View::Compare);
    assert!(screen_text(&app, 80, 24).contains("ep8-replicated"));
    keys(&mut app, "7");
    assert_eq!(app.view, View::Serving);
    let text = screen_text(&app, 80, 24);
    assert!(text.contains("not a serving scenario"), "{text}");
    keys(&mut app, "1");
    let text = screen_text(&app, 80, 24);
    assert!(
        text.contains("ep8-replicated") && text.contains("p50 ms"),
        "{text}"
    );
    keys(&mut app, "6");
    let text = screen_text(&app, 80, 24);
    assert!(
        text.contains("knobs of ep8") && !text.contains("arrival rate"),
        "{text}"
    );
}
