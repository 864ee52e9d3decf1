//! The real terminal: raw mode and the alternate screen on start, restored on exit, on a panic of the UI
//! thread (panic hook) and on Ctrl-C (a key event in raw mode, handled by the app as quit). Mouse capture
//! is on: tabs are clickable and the wheel scrolls.

use crate::app::App;
use crate::worker::Worker;
use ratatui::Terminal;
use ratatui::crossterm::event::{
    self, DisableMouseCapture, EnableMouseCapture, Event, KeyEventKind,
};
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::prelude::CrosstermBackend;
use std::io::stdout;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Runs the explorer on `scenario` (the picker over `scenarios/` when `None`), exporting into `out_dir`.
pub fn run(scenario: Option<&Path>, out_dir: PathBuf) -> std::io::Result<()> {
    let mut app = App::new(Worker::default(), out_dir, PathBuf::from("scenarios"));
    match scenario {
        Some(p) => app.open(p),
        None => app.open_picker(),
    }
    install_panic_hook();
    enable_raw_mode()?;
    let result = execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)
        .and_then(|()| Terminal::new(CrosstermBackend::new(stdout())))
        .and_then(|mut t| event_loop(&mut t, &mut app));
    restore();
    result
}

/// Draws, then waits up to 100 ms for a key, then takes any finished simulation: the screen keeps
/// updating while the worker runs.
fn event_loop<B: ratatui::backend::Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
) -> std::io::Result<()>
where
    std::io::Error: From<B::Error>,
{
    while !app.quit {
        terminal.draw(|f| f.render_widget(&*app, f.area()))?;
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => app.on_key(k),
                Event::Mouse(m) => app.on_mouse(m),
                _ => {}
            }
        }
        app.poll();
    }
    Ok(())
}

/// Leaves raw mode and the alternate screen; safe to call more than once.
pub fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        stdout(),
        DisableMouseCapture,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// A panic on the UI thread restores the terminal before the message prints. Panics on worker threads
/// are caught there and shown in the UI, so their default message (which would garble the screen) is
/// dropped.
fn install_panic_hook() {
    let ui = std::thread::current().id();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == ui {
            restore();
            previous(info);
        }
    }));
}
