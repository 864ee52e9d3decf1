//! Writing results: whole files only, through the one write path ([`moesim_traces::atomic`]: unique
//! temporary name, fsync, rename; special files and symbolic links refused), progress on stderr, and
//! clean-up of temporary files when the process is interrupted.

use indicatif::{ProgressBar, ProgressStyle};
use miette::{IntoDiagnostic, WrapErr};
use std::path::Path;

/// Writes `contents` to `path` atomically: a reader never sees a partial file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> miette::Result<()> {
    moesim_traces::atomic::write(path, contents)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// Replaces the folder `dir` as a whole with the files `fill` writes into a fresh folder (see
/// [`moesim_traces::atomic::replace_dir`]); an existing `dir` must be empty or hold `marker`.
pub fn replace_dir(
    dir: &Path,
    marker: &str,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> miette::Result<()> {
    moesim_traces::atomic::replace_dir(dir, marker, fill)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write the folder {}", dir.display()))
}

/// Refuses an output that is one of the command's inputs.
pub fn refuse_same_file(input: &Path, output: &Path) -> miette::Result<()> {
    moesim_traces::atomic::refuse_same_file(input, output).into_diagnostic()
}

/// On SIGINT or SIGTERM, removes the temporary files and folders in progress and exits with 128 + the
/// signal (130, 143): destinations keep their old contents and nothing half-written is left behind.
pub fn clean_up_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Past a file-size limit (`ulimit -f`) a write then fails with EFBIG, an error that removes the
    // temporary file, instead of SIGXFSZ killing the process mid-file.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            moesim_traces::atomic::remove_pending();
            eprintln!("moesim: interrupted; no output was written");
            std::process::exit(128 + sig);
        }
    });
}

/// A progress bar over `total` simulated iterations on stderr (hidden when quiet or not a terminal).
pub fn progress(total: u64, quiet: bool) -> ProgressBar {
    progress_items(total, "iterations", quiet)
}

/// A progress bar over `total` things called `unit`.
pub fn progress_items(total: u64, unit: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{eta}})"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Writes `text` to stdout. A closed pipe (`moesim simulate --json | head -1`) ends the process quietly
/// with success, as ripgrep does: the reader has what it wanted.
pub fn print(text: &str) -> miette::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(e)
            .into_diagnostic()
            .wrap_err("cannot write to standard output"),
    }
}

/// Prints `value` as pretty JSON and a newline (every `--json` output).
pub fn print_json(value: &impl serde::Serialize) -> miette::Result<()> {
    print(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).expect("serialisable")
    ))
}

/// Makes a `println!` into a closed pipe end the process quietly too (it panics with "failed printing to
/// stdout: Broken pipe"), and one onto a full device an error (exit 1): every other panic keeps the default
/// report.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") {
            if msg.contains("Broken pipe") {
                std::process::exit(0);
            }
            // A full disk or a closed device: an error, not a crash.
            eprintln!("moesim: cannot write to standard output: {msg}");
            moesim_traces::atomic::remove_pending();
            std::process::exit(1);
        }
        default(info);
    }));
}
