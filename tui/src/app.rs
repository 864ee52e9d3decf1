//! The application state and the state machine that key events drive. Nothing here draws; the views read
//! this state (see [`crate::ui`]).

use crate::export;
use crate::knob::{Knob, knobs};
pub use crate::picker::Picker;
use crate::session::{Request, Session};
use crate::timeline_job::{TimelineInput, TimelineJobs, TimelineKey, TimelineResult};
use crate::worker::Worker;
use moesim_sim::result::{SimulationReport, StrategyResult};
use moesim_sim::serving::{ServingReport, ServingResult};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};

/// The views, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Compare,
    Ranks,
    Timeline,
    Placement,
    Trace,
    Knobs,
    Serving,
}

impl View {
    pub const ALL: [View; 7] = [
        View::Compare,
        View::Ranks,
        View::Timeline,
        View::Placement,
        View::Trace,
        View::Knobs,
        View::Serving,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Compare => "Compare",
            View::Ranks => "Ranks",
            View::Timeline => "Timeline",
            View::Placement => "Placement",
            View::Trace => "Trace",
            View::Knobs => "Knobs",
            View::Serving => "Serving",
        }
    }

    pub fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }

    /// Whether the view shows a serving scenario (the others show step-level training or decode runs).
    pub fn serves(self) -> bool {
        matches!(self, View::Serving | View::Knobs)
    }
}

/// The per-request figure whose distribution the Serving view draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingFigure {
    Ttft,
    Tpot,
    Latency,
}

impl ServingFigure {
    pub const ALL: [ServingFigure; 3] = [
        ServingFigure::Ttft,
        ServingFigure::Tpot,
        ServingFigure::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServingFigure::Ttft => "TTFT",
            ServingFigure::Tpot => "TPOT",
            ServingFigure::Latency => "latency",
        }
    }

    fn step(self, up: bool) -> ServingFigure {
        let n = Self::ALL.len();
        let i = Self::ALL.iter().position(|f| *f == self).unwrap_or(0);
        Self::ALL[if up { (i + 1) % n } else { (i + n - 1) % n }]
    }
}

/// The timeline of one (session, strategy, iteration), computed when a view needs it.
pub struct TimelineCache {
    pub key: TimelineKey,
    pub result: TimelineResult,
}

/// Everything the UI shows and remembers.
pub struct App {
    pub view: View,
    pub session: Option<Session>,
    /// The report before the latest re-simulation, to show what changed.
    pub previous: Option<SimulationReport>,
    /// A serving scenario's report before the latest re-simulation.
    pub previous_serving: Option<ServingReport>,
    /// The overrides that distinguish `session` from `previous`.
    pub last_change: Vec<String>,
    /// A load or re-simulation error, shown in the UI.
    pub error: Option<String>,
    /// One line of feedback (saved files, hints).
    pub status: String,
    pub help: bool,
    pub quit: bool,
    pub picker: Option<Picker>,
    /// The selected strategy (row of the Compare table).
    pub strategy: usize,
    pub iteration: usize,
    /// The selected deployment (row of the Serving table).
    pub deployment: usize,
    /// The per-request figure the Serving view's histogram shows.
    pub serving_figure: ServingFigure,
    /// MoE layer shown by the Placement view.
    pub layer: usize,
    /// First expert column shown by the Placement view.
    pub expert_offset: usize,
    /// Timeline zoom (1 = whole iteration) and left edge as a fraction of the step time.
    pub zoom: u32,
    pub pan: f64,
    /// First Gantt row shown.
    pub row_offset: usize,
    pub knob: usize,
    /// The text being typed into the selected knob.
    pub edit: Option<String>,
    pub timeline: Option<TimelineCache>,
    timeline_jobs: TimelineJobs,
    /// Where exports go.
    pub out_dir: PathBuf,
    /// Where the picker looks.
    pub scenario_dir: PathBuf,
    pub worker: Worker,
    answered: u64,
    /// The capacity report being written in the background: where it goes, or why it failed.
    report_job: Option<Receiver<Result<PathBuf, String>>>,
}

impl App {
    /// An app with no scenario yet, exporting to `out_dir`.
    pub fn new(worker: Worker, out_dir: PathBuf, scenario_dir: PathBuf) -> App {
        App {
            view: View::Compare,
            session: None,
            previous: None,
            previous_serving: None,
            last_change: Vec::new(),
            error: None,
            status: String::new(),
            help: false,
            quit: false,
            picker: None,
            strategy: 0,
            iteration: 0,
            deployment: 0,
            serving_figure: ServingFigure::Ttft,
            layer: 0,
            expert_offset: 0,
            zoom: 1,
            pan: 0.0,
            row_offset: 0,
            knob: 0,
            edit: None,
            timeline: None,
            timeline_jobs: TimelineJobs::default(),
            out_dir,
            scenario_dir,
            worker,
            answered: 0,
            report_job: None,
        }
    }

    /// Starts loading a scenario file; unreadable files become an on-screen error.
    pub fn open(&mut self, path: &Path) {
        match Request::from_file(path) {
            Ok(r) => {
                self.picker = None;
                self.session = None;
                self.previous = None;
                self.previous_serving = None;
                self.last_change.clear();
                self.error = None;
                self.status = format!("loading {}…", file_name(path));
                self.worker.start(r);
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Shows the scenario picker over `scenario_dir`.
    pub fn open_picker(&mut self) {
        self.picker = Some(Picker::scan(&self.scenario_dir));
    }

    /// Whether a load or re-simulation is running.
    pub fn busy(&self) -> bool {
        self.worker.busy(self.answered)
    }

    /// Takes a finished load or timeline, if any; returns whether the state changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        if let Some(o) = self.worker.poll() {
            self.answered = o.generation;
            self.accept(o.result);
            changed = true;
        }
        if let Some((key, result)) = self.timeline_jobs.poll() {
            self.timeline = Some(TimelineCache { key, result });
            changed = true;
        }
        if let Some(done) = self.report_job.as_ref().and_then(|rx| rx.try_recv().ok()) {
            self.report_done(done);
            changed = true;
        }
        changed
    }

    /// Blocks until the running load and the timeline it needs are done, and takes them (tests).
    pub fn wait(&mut self) {
        if self.busy() {
            let o = self.worker.wait();
            self.answered = o.generation;
            self.accept(o.result);
        }
        self.ensure_timeline();
        if let Some((key, result)) = self.timeline_jobs.wait() {
            self.timeline = Some(TimelineCache { key, result });
        }
    }

    fn accept(&mut self, result: Result<Session, String>) {
        match result {
            Ok(new) => {
                if let Some(old) = self.session.take() {
                    self.last_change = new
                        .request
                        .overrides
                        .iter()
                        .filter(|o| !old.request.overrides.contains(o))
                        .cloned()
                        .collect();
                    self.previous = Some(old.report);
                    self.previous_serving = old.serving;
                    self.status = "re-simulated".into();
                } else {
                    self.status = format!("loaded {}", file_name(&new.request.path));
                }
                self.error = None;
                // A serving scenario opens on the Serving view; a step-level one leaves it.
                if new.is_serving() && !self.view.serves() {
                    self.view = View::Serving;
                } else if !new.is_serving() && self.view == View::Serving {
                    self.view = View::Compare;
                }
                self.strategy = self
                    .strategy
                    .min(new.report.results.len().saturating_sub(1));
                self.session = Some(new);
                self.timeline = None;
                self.clamp();
                self.ensure_timeline();
            }
            Err(e) => {
                self.status = "simulation failed".into();
                self.error = Some(e);
            }
        }
    }

    /// The selected strategy's result.
    pub fn selected(&self) -> Option<&StrategyResult> {
        self.session.as_ref()?.report.results.get(self.strategy)
    }

    /// The knobs of the selected strategy (a serving scenario: the selected deployment's, when it is one of
    /// the `[[strategy]]` entries served co-located, and the serving knobs).
    pub fn knobs(&self) -> Vec<Knob> {
        self.session
            .as_ref()
            .map(|s| knobs(&s.scenario, self.knob_strategy()))
            .unwrap_or_default()
    }

    /// The strategy index the knobs edit (`usize::MAX`: none, a disaggregated deployment).
    fn knob_strategy(&self) -> usize {
        let Some(s) = &self.session else {
            return self.strategy;
        };
        let Some(cfg) = &s.scenario.serving else {
            return self.strategy;
        };
        // Co-located `[[strategy]]` deployments come first, in the scenario's order.
        if cfg.colocated && self.deployment < s.scenario.strategies.len() {
            self.deployment
        } else {
            usize::MAX
        }
    }

    /// A serving scenario's report.
    pub fn serving(&self) -> Option<&ServingReport> {
        self.session.as_ref()?.serving.as_ref()
    }

    /// The selected deployment's result.
    pub fn selected_deployment(&self) -> Option<&ServingResult> {
        self.serving()?.results.get(self.deployment)
    }

    /// Maps one key to a state change.
    pub fn on_key(&mut self, key: KeyEvent) {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        if self.edit.is_some() {
            self.on_edit_key(key.code);
            return;
        }
        if self.help {
            // Any key closes the help; `q` still quits.
            self.help = false;
            if key.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return;
        }
        if self.picker.is_some() {
            self.on_picker_key(key.code);
            return;
        }
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Esc => self.error = None,
            KeyCode::Tab => self.switch((self.view.index() + 1) % View::ALL.len()),
            KeyCode::BackTab => {
                self.switch((self.view.index() + View::ALL.len() - 1) % View::ALL.len())
            }
            KeyCode::Char(c @ '1'..='7') => self.switch(c as usize - '1' as usize),
            KeyCode::Char('o') => self.open_picker(),
            KeyCode::Char('s') => self.save_plan(),
            KeyCode::Char('w') => self.write_report(),
            KeyCode::Char('W') => self.write_capacity_report(),
            KeyCode::Char('r') => self.resimulate(Vec::new()),
            KeyCode::Up | KeyCode::Char('k') => self.up(),
            KeyCode::Down | KeyCode::Char('j') => self.down(),
            KeyCode::Left | KeyCode::Char('h') => self.left(),
            KeyCode::Right | KeyCode::Char('l') => self.right(),
            KeyCode::Char('+') | KeyCode::Char('=') => self.plus(true),
            KeyCode::Char('-') => self.plus(false),
            KeyCode::Char('<') | KeyCode::Char(',') => self.pan_by(-1),
            KeyCode::Char('>') | KeyCode::Char('.') => self.pan_by(1),
            KeyCode::Enter if self.view == View::Knobs => self.begin_edit(),
            _ => {}
        }
        self.clamp();
        self.ensure_timeline();
    }

    /// Mouse: a click on a tab shows that view; the wheel does what ↑/↓ do.
    pub fn on_mouse(&mut self, m: MouseEvent) {
        if self.help || self.edit.is_some() {
            return;
        }
        match m.kind {
            MouseEventKind::ScrollUp => self.on_key(KeyEvent::from(KeyCode::Up)),
            MouseEventKind::ScrollDown => self.on_key(KeyEvent::from(KeyCode::Down)),
            MouseEventKind::Down(MouseButton::Left) if m.row == 0 && self.picker.is_none() => {
                // Tabs are drawn as "1 Compare 2 Ranks …": each title and one space.
                let mut x = 0;
                for (i, v) in View::ALL.iter().enumerate() {
                    let w = format!("{} {}", i + 1, v.title()).chars().count() as u16;
                    if m.column < x + w {
                        self.switch(i);
                        self.ensure_timeline();
                        return;
                    }
                    x += w + 1;
                }
            }
            _ => {}
        }
    }

    fn on_picker_key(&mut self, code: KeyCode) {
        let Some(p) = self.picker.as_mut() else {
            return;
        };
        match code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Esc if self.session.is_some() => self.picker = None,
            KeyCode::Up | KeyCode::Char('k') => p.selected = p.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                p.selected = (p.selected + 1).min(p.files.len().saturating_sub(1))
            }
            KeyCode::Enter => {
                if let Some(f) = p.files.get(p.selected).cloned() {
                    self.open(&f);
                }
            }
            _ => {}
        }
    }

    fn on_edit_key(&mut self, code: KeyCode) {
        let Some(buf) = self.edit.as_mut() else {
            return;
        };
        match code {
            KeyCode::Esc => self.edit = None,
            KeyCode::Backspace => {
                buf.pop();
            }
            KeyCode::Char(c) if !c.is_control() => buf.push(c),
            KeyCode::Enter => {
                let value = self.edit.take().unwrap_or_default();
                if let Some(k) = self.knobs().get(self.knob) {
                    self.resimulate(vec![k.assignment(&value)]);
                }
            }
            _ => {}
        }
    }

    /// Shows view `i` (0-based).
    pub fn switch(&mut self, i: usize) {
        self.view = View::ALL[i.min(View::ALL.len() - 1)];
        self.row_offset = 0;
    }

    fn iterations(&self) -> usize {
        self.selected().map_or(0, |r| r.per_iteration.len())
    }

    fn layers(&self) -> usize {
        self.selected()
            .and_then(|r| r.replication.as_ref())
            .map_or(1, |r| r.placement_per_layer.len().max(1))
    }

    /// Keeps every index inside what the current data has.
    fn clamp(&mut self) {
        let strategies = self.session.as_ref().map_or(0, |s| s.report.results.len());
        self.strategy = self.strategy.min(strategies.saturating_sub(1));
        let deployments = self.serving().map_or(0, |r| r.results.len());
        self.deployment = self.deployment.min(deployments.saturating_sub(1));
        self.iteration = self.iteration.min(self.iterations().saturating_sub(1));
        self.layer = self.layer.min(self.layers() - 1);
        self.knob = self.knob.min(self.knobs().len().saturating_sub(1));
        self.pan = self.pan.clamp(0.0, 1.0 - 1.0 / self.zoom as f64);
        if let Some(Ok(t)) = self.current_timeline() {
            let mut rows: Vec<_> = t.ops.iter().map(|o| (o.rank, o.stream as u8)).collect();
            rows.sort_unstable();
            rows.dedup();
            self.row_offset = self.row_offset.min(rows.len().saturating_sub(1));
        }
    }

    pub fn up(&mut self) {
        match self.view {
            View::Knobs => self.knob = self.knob.saturating_sub(1),
            View::Timeline => self.row_offset = self.row_offset.saturating_sub(1),
            View::Serving => self.deployment = self.deployment.saturating_sub(1),
            _ => self.strategy = self.strategy.saturating_sub(1),
        }
    }

    pub fn down(&mut self) {
        match self.view {
            View::Knobs => self.knob += 1,
            View::Timeline => self.row_offset += 1,
            View::Serving => self.deployment += 1,
            _ => self.strategy += 1,
        }
    }

    /// Left/right scrub iterations; in Placement they pick the layer.
    pub fn left(&mut self) {
        match self.view {
            View::Placement => self.layer = self.layer.saturating_sub(1),
            View::Knobs if self.serving().is_some() => {
                self.deployment = self.deployment.saturating_sub(1)
            }
            View::Knobs => self.strategy = self.strategy.saturating_sub(1),
            View::Serving => self.serving_figure = self.serving_figure.step(false),
            _ => self.iteration = self.iteration.saturating_sub(1),
        }
    }

    pub fn right(&mut self) {
        match self.view {
            View::Placement => self.layer += 1,
            View::Knobs if self.serving().is_some() => self.deployment += 1,
            View::Knobs => self.strategy += 1,
            View::Serving => self.serving_figure = self.serving_figure.step(true),
            _ => self.iteration += 1,
        }
    }

    /// `+`/`-`: zoom the timeline, or step the selected knob and re-simulate.
    pub fn plus(&mut self, up: bool) {
        match self.view {
            View::Timeline => {
                self.zoom = if up {
                    (self.zoom * 2).min(64)
                } else {
                    (self.zoom / 2).max(1)
                }
            }
            View::Knobs => {
                let Some(mut k) = self.knobs().get(self.knob).cloned() else {
                    return;
                };
                // Step on to the next value the scenario accepts (4 nodes of 8 GPUs, say, when an EP
                // size of 32 must divide the GPU count), rather than re-simulating an invalid one.
                for _ in 0..64 {
                    let Some(v) = k.step(up).filter(|v| *v != k.value) else {
                        break;
                    };
                    if self.accepts(&k.assignment(&v)) {
                        self.resimulate(vec![k.assignment(&v)]);
                        return;
                    }
                    k.value = v;
                }
                self.status = format!(
                    "{}: no valid value {} {}",
                    k.label,
                    if up { "above" } else { "below" },
                    self.knobs()
                        .get(self.knob)
                        .map_or(String::new(), |k| k.value.clone())
                );
            }
            _ => {}
        }
    }

    /// Whether the current scenario resolves with `change` added to its overrides.
    fn accepts(&self, change: &str) -> bool {
        let Some(s) = &self.session else {
            return false;
        };
        let key = change.split('=').next().unwrap_or_default();
        let mut overrides: Vec<String> = s
            .request
            .overrides
            .iter()
            .filter(|o| o.split('=').next() != Some(key))
            .cloned()
            .collect();
        overrides.push(change.to_string());
        moesim_sim::scenario::parse_scenario(
            &s.request.path.display().to_string(),
            &s.request.text,
            &overrides,
        )
        .is_ok()
    }

    /// `<`/`>`: pan the timeline by a quarter of the window, or scroll the placement's experts.
    pub fn pan_by(&mut self, dir: i32) {
        match self.view {
            View::Timeline => self.pan += dir as f64 * 0.25 / self.zoom as f64,
            View::Placement => {
                self.expert_offset = if dir < 0 {
                    self.expert_offset.saturating_sub(16)
                } else {
                    self.expert_offset + 16
                };
                let experts = self
                    .session
                    .as_ref()
                    .map_or(0, |s| s.scenario.model.experts);
                self.expert_offset = self.expert_offset.min(experts.saturating_sub(1));
            }
            _ => {}
        }
    }

    fn begin_edit(&mut self) {
        if let Some(k) = self.knobs().get(self.knob) {
            self.edit = Some(k.value.clone());
        }
    }

    /// Re-simulates the current scenario with `changes` added to its overrides (replacing the same keys).
    pub fn resimulate(&mut self, changes: Vec<String>) {
        let Some(s) = &self.session else {
            return;
        };
        let mut request = s.request.clone();
        for c in &changes {
            let key = c.split('=').next().unwrap_or_default();
            request
                .overrides
                .retain(|o| o.split('=').next() != Some(key));
            request.overrides.push(c.clone());
        }
        self.status = format!("re-simulating {}…", changes.join(" "));
        self.worker.start(request);
    }

    /// The timeline the current selection needs.
    fn timeline_key(&self) -> TimelineKey {
        TimelineKey {
            session: self.answered,
            strategy: self.strategy,
            iteration: self.iteration,
        }
    }

    /// Starts computing the selected iteration's timeline (in the background) when the Ranks or Timeline
    /// view needs it and it is neither cached nor on its way.
    pub fn ensure_timeline(&mut self) {
        if !matches!(self.view, View::Ranks | View::Timeline) {
            return;
        }
        let key = self.timeline_key();
        if self.current_timeline().is_some() || self.timeline_jobs.pending() == Some(key) {
            return;
        }
        let Some(s) = &self.session else {
            return;
        };
        if s.is_serving() {
            // A serving scenario has no step-level iterations to draw.
            return;
        }
        let Some(st) = s.scenario.strategies.get(self.strategy) else {
            return;
        };
        let input = TimelineInput {
            scenario: s.scenario.clone(),
            strategy: st.clone(),
            routing: Arc::clone(&s.routing),
            cost: s.cost.clone(),
        };
        self.timeline_jobs.start(key, input);
    }

    /// The selected iteration's timeline, if computed (`None` while it is being computed).
    pub fn current_timeline(&self) -> Option<&TimelineResult> {
        let key = self.timeline_key();
        self.timeline
            .as_ref()
            .filter(|t| t.key == key)
            .map(|t| &t.result)
    }

    /// `s`: writes plan.json for the chosen strategy into `out_dir`.
    pub fn save_plan(&mut self) {
        let Some(s) = &self.session else {
            return;
        };
        if s.is_serving() {
            self.status = SERVING_EXPORT.into();
            return;
        }
        self.status = match export::save_plan(s, &self.out_dir) {
            Ok(p) => format!("plan saved to {}", p.display()),
            Err(e) => format!("cannot save the plan: {e}"),
        };
    }

    /// `W`: writes the full capacity report of the current scenario in the background.
    pub fn write_capacity_report(&mut self) {
        let Some(s) = &self.session else {
            return;
        };
        if s.is_serving() {
            self.status = SERVING_EXPORT.into();
            return;
        }
        if self.report_job.is_some() {
            self.status = "a report is already being written".into();
            return;
        }
        let (tx, rx) = channel();
        let (request, dir) = (s.request.clone(), self.out_dir.clone());
        std::thread::spawn(move || {
            let _ = tx.send(export::capacity_report(&request, &dir));
        });
        self.report_job = Some(rx);
        self.status = "writing the capacity report…".into();
    }

    /// Blocks until the capacity report is written (tests).
    pub fn wait_report(&mut self) {
        if let Some(done) = self.report_job.as_ref().and_then(|rx| rx.recv().ok()) {
            self.report_done(done);
        }
    }

    fn report_done(&mut self, done: Result<PathBuf, String>) {
        self.report_job = None;
        self.status = match done {
            Ok(p) => format!("capacity report written to {}", p.display()),
            Err(e) => format!("cannot write the capacity report: {e}"),
        };
    }

    /// `w`: writes what the current view shows (as text, at 160×48) into `out_dir`.
    pub fn write_report(&mut self) {
        let text = export::screen_text(self, 160, 48);
        self.status = match export::write_report(self, &text, &self.out_dir) {
            Ok(p) => format!("report written to {}", p.display()),
            Err(e) => format!("cannot write the report: {e}"),
        };
    }
}

/// What `s` and `W` say for a serving scenario: neither file exists for one.
const SERVING_EXPORT: &str = "a serving scenario: `moesim plan FILE` ranks its deployments by capacity (no plan.json or report here)";

/// The last component of `p`, for short status lines.
pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
