//! Importers: routing data as frameworks dump it → the trace data model.
//!
//! | `--from` | input | model |
//! | --- | --- | --- |
//! | `jsonl-tokens` | one JSON object per (sequence, token, layer) with an `experts` list | [`TokenTrace`] |
//! | `csv-tokens` | one CSV row per (token, layer) with a quoted expert list | [`TokenTrace`] |
//! | `csv-counts` | long CSV `iteration,layer,rank,expert,tokens` (rank optional) | [`CountsTrace`] |
//! | `load-matrix` | tokens per (layer, expert), CSV rows or JSON | [`CountsTrace`] |
//! | `npy` | NumPy arrays of expert ids `[tokens, k]` or `[layers, tokens, k]` | [`TokenTrace`] |
//!
//! A directory input holds one sequence per file, taken in natural name order (`p2` before `p10`).

mod counts;
mod npy;
mod tokens;

pub use npy::{NpyArray, read_npy, write_npy};
pub use tokens::Incomplete;

use crate::error::{TraceError, TraceResult};
use crate::trace::Trace;
#[cfg(doc)]
use crate::trace::{CountsTrace, TokenTrace};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    JsonlTokens,
    CsvTokens,
    CsvCounts,
    LoadMatrix,
    Npy,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::JsonlTokens,
        Format::CsvTokens,
        Format::CsvCounts,
        Format::LoadMatrix,
        Format::Npy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::JsonlTokens => "jsonl-tokens",
            Format::CsvTokens => "csv-tokens",
            Format::CsvCounts => "csv-counts",
            Format::LoadMatrix => "load-matrix",
            Format::Npy => "npy",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown trace format `{s}` (expected jsonl-tokens, csv-tokens, csv-counts, load-matrix or npy)")
            })
    }
}

/// Options of the importers (all optional; the defaults read the common dumps as they are).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Key(s)/column(s) naming the sequence; several are joined. Default: `dataset`+`problem_id` if present,
    /// else `sequence`, else one sequence per file.
    pub sequence_keys: Option<Vec<String>>,
    /// Key/column of the token position. Default: `token_idx` or `token_pos`; CSV: row order when absent.
    pub token_key: Option<String>,
    /// Key/column of the layer. Default: `layer`, `Layer ID` or `layer_id`.
    pub layer_key: Option<String>,
    /// Key/column of the expert list. Default: `experts`, `Activated Expert IDs` or `expert_ids`.
    pub experts_key: Option<String>,
    /// Key of the gate weights. Default: `gating_probs` (JSONL only; optional).
    pub gates_key: Option<String>,
    /// Routed experts per layer (default: largest id + 1). Ids at or beyond it are errors.
    pub experts: Option<usize>,
    /// Experts per token; rows listing another number are errors. Default: the first row's count.
    pub top_k: Option<usize>,
    /// Allow rows to list fewer experts than top-k (null experts, top-p routing).
    pub variable_k: bool,
    /// What to do with tokens that lack some layers.
    pub incomplete: Incomplete,
    /// Model name stored in the metadata.
    pub model: Option<String>,
}

/// Imports `input` (a file or a directory of one-sequence files).
pub fn import(format: Format, input: &Path, opts: &ImportOptions) -> TraceResult<Trace> {
    use crate::limits::{MAX_EXPERTS, MAX_TOP_K};
    if let Some(n) = opts.experts
        && !(1..=MAX_EXPERTS).contains(&n)
    {
        return Err(TraceError::file(
            input,
            format!("--experts {n}: expected 1..={MAX_EXPERTS}"),
        ));
    }
    if let Some(k) = opts.top_k
        && !(1..=MAX_TOP_K.min(opts.experts.unwrap_or(MAX_TOP_K))).contains(&k)
    {
        return Err(TraceError::file(
            input,
            format!(
                "--top-k {k}: expected 1..={}",
                MAX_TOP_K.min(opts.experts.unwrap_or(MAX_TOP_K))
            ),
        ));
    }
    let files = input_files(input)?;
    let mut trace = match format {
        Format::JsonlTokens => Trace::Tokens(tokens::import_jsonl(&files, input, opts)?),
        Format::CsvTokens => Trace::Tokens(tokens::import_csv(&files, input, opts)?),
        Format::Npy => Trace::Tokens(npy::import_npy(&files, input, opts)?),
        Format::CsvCounts => Trace::Counts(counts::import_csv_counts(&files, input, opts)?),
        Format::LoadMatrix => Trace::Counts(counts::import_load_matrix(&files, input, opts)?),
    };
    let m = trace.meta_mut();
    m.provenance.format = format.name().into();
    m.provenance.source = input.display().to_string();
    m.provenance.tool = format!("moesim-traces {}", env!("CARGO_PKG_VERSION"));
    if let Some(model) = &opts.model {
        m.model = model.clone();
    }
    m.check().map_err(|why| TraceError::file(input, why))?;
    Ok(trace)
}

/// A file, or the files of a directory in natural name order (hidden files skipped).
pub fn input_files(input: &Path) -> TraceResult<Vec<PathBuf>> {
    let md = std::fs::metadata(input).map_err(|e| TraceError::io(input, e))?;
    if !md.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(input).map_err(|e| TraceError::io(input, e))? {
        let p = e.map_err(|e| TraceError::io(input, e))?.path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_file() && !hidden {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(TraceError::file(input, "directory holds no trace files"));
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// A CSV record or an error naming the file and line, and the line number of the record.
pub(crate) fn csv_record(
    f: &Path,
    rec: Result<csv::StringRecord, csv::Error>,
) -> TraceResult<(csv::StringRecord, u64)> {
    let rec = rec.map_err(|e| {
        let line = e.position().map_or(0, |p| p.line());
        TraceError::at(
            f,
            format!("line {line}"),
            format!("malformed CSV row (ragged or bad quoting): {e}"),
        )
    })?;
    let line = rec.position().map_or(0, |p| p.line());
    Ok((rec, line))
}

/// Natural order: digit runs compare as numbers (`prompt_2` < `prompt_10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let da = trim_zeros(&a[..na]);
                let db = trim_zeros(&b[..nb]);
                let o = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

/// Parses a non-negative integer field, naming the place on failure.
pub(crate) fn parse_count(
    file: &Path,
    loc: impl Fn() -> String,
    what: &str,
    s: &str,
) -> TraceResult<u64> {
    let t = s.trim();
    t.parse::<u64>().map_err(|_| {
        TraceError::at(
            file,
            loc(),
            format!("{what}: expected a non-negative integer, found `{t}`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec!["p_10.csv", "p_2.csv", "p_1.csv", "a.csv", "p_02b.csv"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["a.csv", "p_1.csv", "p_2.csv", "p_02b.csv", "p_10.csv"]
        );
    }
}
