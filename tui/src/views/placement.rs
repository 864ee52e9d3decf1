//! Placement: the experts × GPUs map of one EP group (the same in every group), per MoE layer for
//! `ep-replicated`; experts with copies on several GPUs are highlighted.

use crate::app::App;
use crate::session::Session;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Widget};

/// Glyphs: an expert held by one GPU, a replicated expert's copy, no copy.
pub const SINGLE: char = '■';
pub const REPLICA: char = '◆';
pub const EMPTY: char = '·';

pub fn render(app: &App, s: &Session, area: Rect, buf: &mut Buffer) {
    let Some(r) = app.selected() else {
        return;
    };
    let (placement, layer_note) = match &r.replication {
        Some(rep) if !rep.placement_per_layer.is_empty() => (
            &rep.placement_per_layer[app.layer.min(rep.placement_per_layer.len() - 1)],
            format!(
                "MoE layer {}/{} (←/→)",
                app.layer + 1,
                rep.placement_per_layer.len()
            ),
        ),
        _ => (&r.placement, "every layer".to_string()),
    };
    let experts = s.scenario.model.experts;
    let mut copies = vec![0usize; experts];
    for gpu in placement {
        for &e in gpu {
            if e < experts {
                copies[e] += 1;
            }
        }
    }
    let replicated = copies.iter().filter(|&&c| c > 1).count();
    let block = Block::bordered().title(format!(
        " {} · {} · {} GPUs × {} experts · {} replicated ",
        r.strategy,
        layer_note,
        placement.len(),
        experts,
        replicated
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let [head, map, legend] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(inner);
    let label = 5u16;
    let cols = inner.width.saturating_sub(label) as usize;
    let first = app.expert_offset.min(experts.saturating_sub(1));
    let last = (first + cols).min(experts);
    // Expert numbers every ten columns.
    let mut axis = String::new();
    let mut e = first;
    while e < last {
        let tag = format!("{e:<10}");
        axis.push_str(&tag[..tag.len().min(last - e)]);
        e += 10;
    }
    buf.set_string(head.x + label, head.y, axis, Style::new());
    for (gpu, held) in placement.iter().enumerate().take(map.height as usize) {
        let y = map.y + gpu as u16;
        buf.set_string(map.x, y, format!("g{gpu:<3}"), Style::new());
        for (x, e) in (first..last).enumerate() {
            let here = held.contains(&e);
            let (ch, style) = match (here, copies[e] > 1) {
                (true, true) => (
                    REPLICA,
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
                (true, false) => (SINGLE, Style::new().fg(Color::Cyan)),
                (false, _) => (EMPTY, Style::new().fg(Color::DarkGray)),
            };
            buf[(map.x + label + x as u16, y)]
                .set_char(ch)
                .set_style(style);
        }
    }
    Line::from(format!(
        "{SINGLE} one copy  {REPLICA} replicated  experts {first}–{} of {experts} (</> scroll)",
        last.saturating_sub(1)
    ))
    .render(legend, buf);
}
