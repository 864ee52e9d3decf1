//! The one error type of trace reading and writing: it names the file, the place in it and what was expected.

use std::path::{Path, PathBuf};

/// A trace could not be read, converted or written.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), location.as_ref().map(|l| format!(", {l}")).unwrap_or_default())]
pub struct TraceError {
    /// The file (or directory) concerned.
    pub file: PathBuf,
    /// Where in it: "line 12", "record 3, byte 4096", "field `experts`".
    pub location: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl TraceError {
    /// An error about the whole file.
    pub fn file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        TraceError {
            file: file.as_ref().to_path_buf(),
            location: None,
            message: message.into(),
        }
    }

    /// An error at a place in the file.
    pub fn at(
        file: impl AsRef<Path>,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        TraceError {
            file: file.as_ref().to_path_buf(),
            location: Some(location.into()),
            message: message.into(),
        }
    }

    /// An I/O error on `file`.
    pub fn io(file: impl AsRef<Path>, e: std::io::Error) -> Self {
        TraceError::file(file, format!("I/O error: {e}"))
    }
}

/// Result of trace operations.
pub type TraceResult<T> = Result<T, TraceError>;
