//! Aggregated importers: `csv-counts` (long CSV) and `load-matrix` (tokens per layer and expert).

use super::{ImportOptions, parse_count};
use crate::error::{TraceError, TraceResult};
use crate::trace::{CountsTrace, Provenance, TraceKind, meta};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn finish_counts(
    input: &Path,
    cells: BTreeMap<(u64, u32, u64, u64), u64>,
    opts: &ImportOptions,
    mut notes: Vec<String>,
) -> TraceResult<CountsTrace> {
    if cells.is_empty() {
        return Err(TraceError::file(input, "no counts found"));
    }
    let mut layer_ids: Vec<u32> = cells.keys().map(|k| k.1).collect();
    layer_ids.sort_unstable();
    layer_ids.dedup();
    let iterations = cells.keys().map(|k| k.0).max().unwrap_or(0) as usize + 1;
    let ranks = cells.keys().map(|k| k.2).max().unwrap_or(0) as usize + 1;
    let max_e = cells.keys().map(|k| k.3).max().unwrap_or(0) as usize;
    let experts = match opts.experts {
        Some(n) if max_e >= n => {
            return Err(TraceError::file(
                input,
                format!("expert id {max_e} out of range (expected 0..{n})"),
            ));
        }
        Some(n) => n,
        None => max_e + 1,
    };
    if iterations
        .saturating_mul(layer_ids.len())
        .saturating_mul(ranks)
        .saturating_mul(experts)
        > 1 << 31
    {
        return Err(TraceError::file(
            input,
            "counts matrix too large (iterations × layers × ranks × experts > 2^31)",
        ));
    }
    let top_k = opts.top_k.unwrap_or_else(|| {
        notes.push("top-k unknown (aggregated counts); assumed 1 — pass --top-k".into());
        1
    });
    let mut m = meta(
        TraceKind::Counts,
        layer_ids.len(),
        experts,
        top_k,
        ranks,
        Provenance {
            notes,
            ..Default::default()
        },
    );
    m.layer_ids = layer_ids.clone();
    let mut t = CountsTrace {
        meta: m,
        iterations,
        counts: Vec::new(),
    };
    t.counts = vec![0; iterations * t.cells_per_iteration()];
    for ((it, layer, rank, e), c) in cells {
        let li = layer_ids.binary_search(&layer).expect("collected");
        let idx = t.index(it as usize, li, rank as usize, e as usize);
        t.counts[idx] += c;
    }
    Ok(t)
}

/// `csv-counts`: header with `iteration`, `layer`, `expert`, `tokens` and optionally `rank`. Repeated cells
/// add up.
pub(crate) fn import_csv_counts(
    files: &[PathBuf],
    input: &Path,
    opts: &ImportOptions,
) -> TraceResult<CountsTrace> {
    let mut cells = BTreeMap::new();
    let mut notes = Vec::new();
    for f in files {
        let mut rd = csv::ReaderBuilder::new()
            .from_path(f)
            .map_err(|e| TraceError::file(f, format!("cannot open CSV: {e}")))?;
        let headers = rd
            .headers()
            .map_err(|e| TraceError::at(f, "line 1", format!("cannot read the header: {e}")))?
            .clone();
        let col = |n: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(n))
        };
        let need = |n: &str| {
            col(n).ok_or_else(|| {
                TraceError::at(
                    f,
                    "line 1",
                    format!(
                        "missing column `{n}` (expected header iteration,layer,rank,expert,tokens; rank optional; found {})",
                        headers.iter().collect::<Vec<_>>().join(",")
                    ),
                )
            })
        };
        let (ic, lc, ec, tc) = (
            need("iteration")?,
            need("layer")?,
            need("expert")?,
            need("tokens")?,
        );
        let rc = col("rank");
        if rc.is_none() && !notes.iter().any(|n: &String| n.contains("rank")) {
            notes.push("no rank column: one source rank".into());
        }
        for rec in rd.records() {
            let (rec, line) = super::csv_record(f, rec)?;
            let at = || format!("line {line}");
            let it = parse_count(f, at, "column `iteration`", &rec[ic])?;
            let layer = parse_count(f, at, "column `layer`", &rec[lc])?;
            let rank = match rc {
                Some(c) => parse_count(f, at, "column `rank`", &rec[c])?,
                None => 0,
            };
            let e = parse_count(f, at, "column `expert`", &rec[ec])?;
            let tokens = parse_count(f, at, "column `tokens`", &rec[tc])?;
            if let Some(n) = opts.experts
                && e as usize >= n
            {
                return Err(TraceError::at(
                    f,
                    at(),
                    format!("expert id {e} out of range (expected 0..{n})"),
                ));
            }
            if it > 1 << 24 || layer > u32::MAX as u64 || rank > 1 << 20 || e > 1 << 24 {
                return Err(TraceError::at(
                    f,
                    at(),
                    "iteration, rank or expert id implausibly large",
                ));
            }
            *cells.entry((it, layer as u32, rank, e)).or_insert(0) += tokens;
        }
    }
    finish_counts(input, cells, opts, notes)
}

/// `load-matrix`: CSV rows of tokens per expert (one row per layer; an optional header; an optional first
/// column `layer`), or JSON: `[[…], …]`, `{"layers": [[…], …]}` or `{"layers": [{"layer": n,
/// "tokens_per_expert": […]}, …]}`.
pub(crate) fn import_load_matrix(
    files: &[PathBuf],
    input: &Path,
    opts: &ImportOptions,
) -> TraceResult<CountsTrace> {
    let mut cells = BTreeMap::new();
    let mut model = None;
    for (it, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).map_err(|e| TraceError::io(f, e))?;
        let rows: Vec<(u32, Vec<u64>, String)> = if text.trim_start().starts_with(['[', '{']) {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                TraceError::at(
                    f,
                    format!("line {}", e.line()),
                    format!("invalid JSON: {e}"),
                )
            })?;
            if let Some(m) = v.get("model").and_then(|m| m.as_str()) {
                model = Some(m.to_string());
            }
            json_rows(f, &v)?
        } else {
            csv_rows(f)?
        };
        let width = rows.first().map_or(0, |r| r.1.len());
        for (layer, row, loc) in rows {
            if row.len() != width {
                return Err(TraceError::at(
                    f,
                    loc,
                    format!(
                        "{} experts in this row, expected {width} like the first row",
                        row.len()
                    ),
                ));
            }
            for (e, c) in row.into_iter().enumerate() {
                *cells.entry((it as u64, layer, 0u64, e as u64)).or_insert(0) += c;
            }
        }
    }
    let mut t = finish_counts(
        input,
        cells,
        opts,
        vec!["load matrix: one source rank".into()],
    )?;
    if let Some(m) = model {
        t.meta.model = m;
    }
    Ok(t)
}

fn json_count(f: &Path, loc: &str, x: &serde_json::Value) -> TraceResult<u64> {
    x.as_u64()
        .or_else(|| {
            x.as_f64()
                .filter(|v| *v >= 0.0 && v.fract() == 0.0 && *v < 9e15)
                .map(|v| v as u64)
        })
        .ok_or_else(|| {
            TraceError::at(
                f,
                loc,
                format!("expected a non-negative integer token count, found {x}"),
            )
        })
}

fn json_rows(f: &Path, v: &serde_json::Value) -> TraceResult<Vec<(u32, Vec<u64>, String)>> {
    let layers = match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => {
            o.get("layers").and_then(|l| l.as_array()).ok_or_else(|| {
                TraceError::at(
                    f,
                    "top level",
                    "expected an array of rows or an object with `layers`",
                )
            })?
        }
        _ => {
            return Err(TraceError::at(
                f,
                "top level",
                "expected an array of rows or an object with `layers`",
            ));
        }
    };
    let mut out = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let loc = format!("layers[{i}]");
        let (id, arr) = match l {
            serde_json::Value::Array(a) => (i as u32, a),
            serde_json::Value::Object(o) => {
                let id = match o.get("layer") {
                    Some(x) => json_count(f, &format!("{loc}.layer"), x)? as u32,
                    None => i as u32,
                };
                let arr = o
                    .get("tokens_per_expert")
                    .or_else(|| o.get("counts"))
                    .and_then(|a| a.as_array())
                    .ok_or_else(|| {
                        TraceError::at(f, &loc, "expected `tokens_per_expert`: [counts…]")
                    })?;
                (id, arr)
            }
            _ => {
                return Err(TraceError::at(
                    f,
                    &loc,
                    "expected an array of counts or an object",
                ));
            }
        };
        let row = arr
            .iter()
            .enumerate()
            .map(|(e, x)| json_count(f, &format!("{loc}[{e}]"), x))
            .collect::<TraceResult<Vec<_>>>()?;
        out.push((id, row, loc));
    }
    Ok(out)
}

fn csv_rows(f: &Path) -> TraceResult<Vec<(u32, Vec<u64>, String)>> {
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(f)
        .map_err(|e| TraceError::file(f, format!("cannot open CSV: {e}")))?;
    let mut out = Vec::new();
    let mut layer_col = false;
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.map_err(|e| {
            TraceError::at(f, format!("line {}", i + 1), format!("malformed CSV: {e}"))
        })?;
        let line = rec.position().map_or(i as u64 + 1, |p| p.line());
        let first = rec.get(0).unwrap_or("").trim();
        if i == 0 && first.parse::<f64>().is_err() {
            layer_col = first.eq_ignore_ascii_case("layer");
            continue; // header
        }
        let at = || format!("line {line}");
        let mut vals = rec.iter();
        let layer = if layer_col {
            parse_count(f, at, "column `layer`", vals.next().unwrap_or(""))? as u32
        } else {
            out.len() as u32
        };
        let row = vals
            .enumerate()
            .map(|(e, s)| parse_count(f, at, &format!("expert {e}"), s))
            .collect::<TraceResult<Vec<_>>>()?;
        out.push((layer, row, at()));
    }
    Ok(out)
}
