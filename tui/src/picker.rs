//! The scenario picker: the `*.toml` files of a directory, one selected.

use std::path::{Path, PathBuf};

/// The scenario picker shown when no file was given (or on `o`).
#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub files: Vec<PathBuf>,
    pub selected: usize,
}

impl Picker {
    /// The `*.toml` files of `dir`, sorted by name; the quickstart (seconds to simulate) is selected when
    /// present, else the first file.
    pub fn scan(dir: &Path) -> Picker {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let selected = files
            .iter()
            .position(|f| f.file_name().is_some_and(|n| n == "quickstart.toml"))
            .unwrap_or(0);
        Picker { files, selected }
    }
}
