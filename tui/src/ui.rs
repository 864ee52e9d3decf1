//! Drawing the app: tab bar, the current view, the status line, and the overlays (help, picker, errors).

use crate::app::{App, View};
use crate::views;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, Paragraph, Tabs, Widget, Wrap};

/// The keys, as the help overlay and docs/tui.md list them.
pub const HELP: [(&str, &str); 17] = [
    ("1-7, Tab", "switch view (Shift-Tab: back)"),
    (
        "↑ ↓ / j k",
        "select strategy or deployment; knob (Knobs); scroll rows",
    ),
    (
        "← → / h l",
        "scrub iterations; layer; strategy (Knobs); figure (Serving)",
    ),
    (
        "+ -",
        "zoom timeline; step the selected knob and re-simulate",
    ),
    ("< >", "pan timeline; scroll experts (Placement)"),
    (
        "Enter",
        "edit the selected knob (Knobs); type, Enter applies",
    ),
    ("Esc", "cancel edit; dismiss error"),
    ("r", "re-simulate"),
    ("s", "save plan.json of the chosen strategy"),
    ("w", "write a report of the current view"),
    ("W", "write the full capacity report (HTML, figures)"),
    ("o", "open the scenario picker"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
    ("★", "strategy chosen under the objective"),
    ("▶", "selected strategy"),
    ("Δ", "change from the previous run"),
];

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let [top, body, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_tabs(top, buf);
        self.render_status(bottom, buf);
        if let Some(p) = &self.picker {
            render_picker(p, self.error.as_deref(), body, buf);
        } else if let Some(s) = &self.session {
            match self.view {
                View::Serving => views::serving::render(self, s, body, buf),
                v if s.is_serving() && !v.serves() => views::serving::not_applicable(v, body, buf),
                View::Compare => views::compare::render(self, s, body, buf),
                View::Ranks => views::ranks::render(self, s, body, buf),
                View::Timeline => views::timeline::render(self, s, body, buf),
                View::Placement => views::placement::render(self, s, body, buf),
                View::Trace => views::trace::render(s, body, buf),
                View::Knobs => views::knobs::render(self, s, body, buf),
            }
            if let Some(e) = &self.error {
                render_error(e, body, buf);
            }
        } else if let Some(e) = &self.error {
            render_error(e, body, buf);
        } else {
            Paragraph::new("simulating…").render(body, buf);
        }
        if self.help {
            render_help(body, buf);
        }
    }
}

impl App {
    fn render_tabs(&self, area: Rect, buf: &mut Buffer) {
        let titles = View::ALL
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{} {}", i + 1, v.title()));
        Tabs::new(titles)
            .select(self.view.index())
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .padding("", "")
            .divider(" ")
            .render(area, buf);
    }

    fn render_status(&self, area: Rect, buf: &mut Buffer) {
        let mut spans = Vec::new();
        if let Some(s) = &self.session {
            spans.push(Span::from(s.scenario.name.clone()).bold());
            if let Some(d) = self.selected_deployment() {
                spans.push(Span::from(format!(" · {} ({})", d.strategy, d.kind)));
            } else if let Some(r) = self.selected() {
                spans.push(Span::from(format!(
                    " · {} · it {} of 0..{}",
                    r.strategy,
                    self.iteration,
                    r.per_iteration.len()
                )));
            }
        }
        if self.busy() {
            let text = match self.worker.progress() {
                (done, total) if total > 0 => format!(" · simulating… {done}/{total} iterations"),
                _ => " · simulating…".to_string(),
            };
            spans.push(Span::from(text).fg(Color::Yellow));
        }
        if !self.status.is_empty() {
            spans.push(Span::from(format!(" · {}", self.status)));
        }
        spans.push(Span::from("  ? help  q quit").dim());
        Paragraph::new(Line::from(spans)).render(area, buf);
    }
}

/// A centred rectangle `w`×`h` inside `area` (clipped to it).
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn render_help(area: Rect, buf: &mut Buffer) {
    let popup = centered(area, 76, HELP.len() as u16 + 2);
    Clear.render(popup, buf);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::from(format!("{k:>10}  ")).bold(),
                Span::from(*v),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(Block::bordered().title(" keys (any key closes) "))
        .render(popup, buf);
}

fn render_error(e: &str, area: Rect, buf: &mut Buffer) {
    let popup = centered(area, area.width.saturating_sub(4), 10);
    Clear.render(popup, buf);
    Paragraph::new(e)
        .wrap(Wrap { trim: false })
        .fg(Color::Red)
        .block(Block::bordered().title(" error (Esc dismisses, o opens another scenario) "))
        .render(popup, buf);
}

fn render_picker(p: &crate::app::Picker, error: Option<&str>, area: Rect, buf: &mut Buffer) {
    let [list, err] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(if error.is_some() { 8 } else { 0 }),
    ])
    .areas(area);
    let items: Vec<ListItem> = if p.files.is_empty() {
        vec![ListItem::new("no *.toml files in the scenarios directory")]
    } else {
        p.files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mark = if i == p.selected { "▶ " } else { "  " };
                let item = ListItem::new(format!("{mark}{}", crate::app::file_name(f)));
                if i == p.selected {
                    item.add_modifier(Modifier::REVERSED)
                } else {
                    item
                }
            })
            .collect()
    };
    List::new(items)
        .block(Block::bordered().title(" open a scenario (↑↓, Enter) "))
        .render(list, buf);
    if let Some(e) = error {
        Paragraph::new(e)
            .wrap(Wrap { trim: false })
            .fg(Color::Red)
            .block(Block::bordered().title(" error "))
            .render(err, buf);
    }
}
