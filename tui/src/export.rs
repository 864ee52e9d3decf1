//! Export from the TUI: the chosen strategy's plan.json (the same file `moesim plan` writes), a report of
//! what is on screen, and the full capacity report (`moesim report`'s HTML, Markdown and figures).

use crate::app::App;
use crate::session::{Request, Session};
use moesim_reports::collect::{CollectOptions, collect};
use moesim_reports::inputs::Inputs;
use moesim_reports::report::{ReportOptions, render_report};
use moesim_sim::plan::make_plan;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use std::path::{Path, PathBuf};

/// Writes the plan of the strategy the objective chooses to `dir/plan.json`, or, when that exists (from
/// `moesim plan` or an earlier `s`), to the first free `dir/plan-N.json`: saving never overwrites a plan.
pub fn save_plan(s: &Session, dir: &Path) -> Result<PathBuf, String> {
    let chosen = s.chosen.ok_or(
        "no strategy fits in memory while dropping at most the allowed fraction; there is no plan",
    )?;
    let plan = make_plan(&s.scenario, &s.report, chosen);
    let json = serde_json::to_string_pretty(&plan).map_err(|e| e.to_string())?;
    let path = std::iter::once(dir.join("plan.json"))
        .chain((2..).map(|n| dir.join(format!("plan-{n}.json"))))
        .find(|p| !p.exists())
        .expect("an unused name");
    write(&path, &json)?;
    Ok(path)
}

/// The app drawn into a `width`×`height` buffer, as plain text lines (trailing blanks trimmed).
pub fn screen_text(app: &App, width: u16, height: u16) -> String {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    app.render(area, &mut buf);
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes `dir/<scenario>-<view>.md`: the scenario, its overrides and the screen text.
pub fn write_report(app: &App, screen: &str, dir: &Path) -> Result<PathBuf, String> {
    let name = app
        .session
        .as_ref()
        .map_or("moesim".to_string(), |s| s.scenario.name.clone());
    let view = app.view.title().to_lowercase();
    let mut md = format!("# {name} — {}\n\n", app.view.title());
    if let Some(s) = &app.session {
        md.push_str(&format!(
            "Scenario file: `{}`\n\n",
            s.request.path.display()
        ));
        if !s.request.overrides.is_empty() {
            md.push_str(&format!(
                "Overrides: `--set {}`\n\n",
                s.request.overrides.join(" --set ")
            ));
        }
    }
    md.push_str("```text\n");
    md.push_str(screen);
    md.push_str("```\n");
    let path = dir.join(format!("{name}-{view}.md"));
    write(&path, &md)?;
    Ok(path)
}

/// Simulates and renders the capacity report of `request` (its overrides included) into `dir/report/`,
/// through the same input pipeline as `moesim report` (trace, cost profile); slow (it re-simulates and
/// draws figures), so the app runs it on a thread.
pub fn capacity_report(request: &Request, dir: &Path) -> Result<PathBuf, String> {
    let inputs = Inputs::resolve(
        &request.path,
        request.text.clone(),
        request.overrides.clone(),
        None,
    )
    .map_err(|e| e.to_string())?;
    let data = collect(
        &inputs,
        &CollectOptions::default(),
        env!("CARGO_PKG_VERSION"),
        None,
    )
    .map_err(|e| e.to_string())?;
    let files =
        render_report(&[data], &[], &ReportOptions::default()).map_err(|e| e.to_string())?;
    let root = dir.join("report");
    if let Some(d) = root.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // The report folder is replaced as a whole (never a mix of an old and a new report).
    moesim_traces::atomic::replace_dir(&root, "index.html", |tmp| {
        for f in &files {
            let path = tmp.join(&f.path);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&path, &f.bytes)?;
        }
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", root.display()))?;
    Ok(root.join("index.html"))
}

/// Writes through the one atomic write path (temporary file, fsync, rename).
fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    moesim_traces::atomic::write(path, text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
