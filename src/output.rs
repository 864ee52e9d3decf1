//! Writing results: whole files only (written to a temporary name, then renamed), progress on stderr.

use indicatif::{ProgressBar, ProgressStyle};
use miette::{IntoDiagnostic, WrapErr};
use std::path::Path;

/// Writes `contents` to `path` atomically: a reader never sees a partial file.
pub fn write_atomic(path: &Path, contents: &[u8]) -> miette::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    std::fs::write(&tmp, contents)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))
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

/// Makes a `println!` into a closed pipe end the process quietly too (it panics with "failed printing to
/// stdout: Broken pipe"): every other panic keeps the default report.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
