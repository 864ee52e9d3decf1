//! Exporters: the trace data model → the interchange formats (the same ones the importers read), written
//! to a temporary name and renamed into place when complete.
//!
//! Token traces export to `jsonl-tokens`, `csv-tokens` and `npy` (a directory, one `[layers, tokens, k]`
//! int32 array per sequence; needs a fixed k), and — aggregated — to `csv-counts` and `load-matrix`.
//! Counts traces export to `csv-counts` and `load-matrix`.

use crate::error::{TraceError, TraceResult};
use crate::import::{Format, write_npy};
use crate::trace::{CountsTrace, TokenTrace, Trace};
use std::io::Write;
use std::path::Path;

/// Writes `trace` to `out` in `format`.
pub fn export(trace: &Trace, format: Format, out: &Path) -> TraceResult<()> {
    match (format, trace) {
        (Format::JsonlTokens, Trace::Tokens(t)) => atomic(out, |w| jsonl(t, w)),
        (Format::CsvTokens, Trace::Tokens(t)) => atomic(out, |w| csv_tokens(t, w)),
        (Format::Npy, Trace::Tokens(t)) => npy_dir(t, out),
        (Format::CsvCounts, tr) => {
            let c = tr.to_counts();
            atomic(out, |w| csv_counts(&c, w))
        }
        (Format::LoadMatrix, tr) => {
            let c = tr.to_counts();
            atomic(out, |w| load_matrix(&c, w))
        }
        (f, Trace::Counts(_)) => Err(TraceError::file(
            out,
            format!(
                "a counts trace cannot be exported as {} (per-token format); use csv-counts or load-matrix",
                f.name()
            ),
        )),
    }
}

/// Writes a file through a temporary name; on error the temporary file is removed.
pub fn atomic(
    out: &Path,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> TraceResult<()> {
    crate::atomic::write_with(out, body).map_err(|e| TraceError::io(out, e))
}

fn jsonl(t: &TokenTrace, w: &mut dyn Write) -> std::io::Result<()> {
    let m = &t.meta;
    for s in &t.sequences {
        let name = serde_json::to_string(&s.name).expect("string");
        for tok in 0..s.tokens {
            for l in 0..m.layers {
                let experts = serde_json::to_string(s.row(l, tok)).expect("ids");
                write!(
                    w,
                    "{{\"sequence\": {name}, \"token_idx\": {tok}, \"layer\": {}, \"experts\": {experts}",
                    m.layer_ids[l]
                )?;
                if let Some(g) = s.row_gates(l, tok) {
                    write!(
                        w,
                        ", \"gating_probs\": {}",
                        serde_json::to_string(g).expect("floats")
                    )?;
                }
                writeln!(w, "}}")?;
            }
        }
    }
    Ok(())
}

fn csv_tokens(t: &TokenTrace, w: &mut dyn Write) -> std::io::Result<()> {
    let m = &t.meta;
    let mut c = csv::Writer::from_writer(w);
    c.write_record(["sequence", "layer", "token_idx", "experts"])?;
    for s in &t.sequences {
        for l in 0..m.layers {
            for tok in 0..s.tokens {
                let ids: Vec<String> = s.row(l, tok).iter().map(|e| e.to_string()).collect();
                c.write_record([
                    s.name.as_str(),
                    &m.layer_ids[l].to_string(),
                    &tok.to_string(),
                    &format!("[{}]", ids.join(", ")),
                ])?;
            }
        }
    }
    c.flush()
}

fn csv_counts(c: &CountsTrace, w: &mut dyn Write) -> std::io::Result<()> {
    let m = &c.meta;
    writeln!(w, "iteration,layer,rank,expert,tokens")?;
    for it in 0..c.iterations {
        for l in 0..m.layers {
            for r in 0..m.ranks {
                for e in 0..m.experts {
                    let v = c.counts[c.index(it, l, r, e)];
                    if v > 0 {
                        writeln!(w, "{it},{},{r},{e},{v}", m.layer_ids[l])?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn load_matrix(c: &CountsTrace, w: &mut dyn Write) -> std::io::Result<()> {
    let loads = c.expert_loads();
    let layers: Vec<serde_json::Value> = loads
        .iter()
        .enumerate()
        .map(|(l, v)| serde_json::json!({"layer": c.meta.layer_ids[l], "tokens_per_expert": v}))
        .collect();
    let doc =
        serde_json::json!({"model": c.meta.model, "experts": c.meta.experts, "layers": layers});
    serde_json::to_writer_pretty(&mut *w, &doc)?;
    writeln!(w)
}

fn npy_dir(t: &TokenTrace, out: &Path) -> TraceResult<()> {
    let m = &t.meta;
    for s in &t.sequences {
        for l in 0..m.layers {
            for tok in 0..s.tokens {
                if s.row(l, tok).len() != m.top_k {
                    return Err(TraceError::file(
                        out,
                        format!(
                            "npy export needs exactly {} experts per row; sequence `{}` token {tok} has {}",
                            m.top_k,
                            s.name,
                            s.row(l, tok).len()
                        ),
                    ));
                }
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| TraceError::io(out, e))?;
    let width = t.sequences.len().to_string().len();
    for (i, s) in t.sequences.iter().enumerate() {
        let data: Vec<i32> = s.experts.iter().map(|&e| e as i32).collect();
        let path = out.join(format!("seq_{i:0width$}.npy"));
        atomic(&path, |w| {
            write_npy(w, &[m.layers, s.tokens, m.top_k], &data)
        })?;
    }
    Ok(())
}
