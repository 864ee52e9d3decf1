//! `moesim place`'s load history reader: a long CSV `iteration,layer,expert,tokens`, one CSV row of
//! per-expert tokens per layer, or a load-matrix JSON (through the trace importer). Layers are the distinct
//! ids the file names; every size is bounded before anything is allocated. Errors name the file and line.

use moesim_sim::placement::plan_layers::LoadHistory;
use std::path::Path;

/// A reader's result: the error names the file and what was expected.
type Result<T> = std::result::Result<T, String>;

/// Largest expert id + 1 and loads (iterations × layers × experts) a history may hold.
pub const MAX_EXPERTS: usize = moesim_traces::limits::MAX_EXPERTS;
pub const MAX_CELLS: usize = 1 << 27;

/// The load history and the layer ids as the file names them (one per layer of the history).
pub fn read_loads(path: &Path) -> Result<(LoadHistory, Vec<usize>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read loads {}: {e}", path.display()))?;
    if text.trim_start().starts_with(['[', '{']) {
        return load_matrix_json(path);
    }
    let err = |line: usize, msg: String| format!("{}:{line}: {msg}", path.display());
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((first_no, first)) = lines.next() else {
        return Err(err(1, "empty file; expected a load history".into()));
    };
    let header: Vec<String> = first
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let number = |line: usize, field: &str, what: &str| -> Result<f64> {
        let v: f64 = field.trim().parse().map_err(|_| {
            err(
                line,
                format!("`{}` is not a number; expected {what}", field.trim()),
            )
        })?;
        if !v.is_finite() || v < 0.0 {
            return Err(err(
                line,
                format!("{v} is negative or not finite; expected {what} ≥ 0"),
            ));
        }
        Ok(v)
    };
    if header.iter().any(|h| h == "iteration") {
        let col = |name: &str| {
            header.iter().position(|h| h == name).ok_or_else(|| {
                err(
                    first_no,
                    format!("missing column `{name}`; expected iteration,layer,expert,tokens"),
                )
            })
        };
        let (ci, cl, ce, ct) = (
            col("iteration")?,
            col("layer")?,
            col("expert")?,
            col("tokens")?,
        );
        let mut rows = Vec::new();
        let mut f: Vec<&str> = Vec::with_capacity(header.len());
        for (no, line) in lines {
            f.clear();
            f.extend(line.split(','));
            if f.len() != header.len() {
                return Err(err(
                    no,
                    format!(
                        "{} fields; expected {} as in the header",
                        f.len(),
                        header.len()
                    ),
                ));
            }
            let idx = |c: usize, what: &str| -> Result<usize> {
                f[c].trim().parse().map_err(|_| {
                    err(
                        no,
                        format!(
                            "`{}` is not a non-negative integer; expected {what}",
                            f[c].trim()
                        ),
                    )
                })
            };
            rows.push((
                idx(ci, "an iteration")?,
                idx(cl, "a layer")?,
                idx(ce, "an expert id")?,
                number(no, f[ct], "a token count")?,
            ));
        }
        if rows.is_empty() {
            return Err(err(first_no, "no rows after the header".into()));
        }
        // Layers are the distinct ids in the file, in order (a file numbering them 1..=26 has 26 layers,
        // not 27 with an empty layer 0); experts are ids 0..=max, bounded before anything is allocated.
        let distinct = |id: fn(&(usize, usize, usize, f64)) -> usize| {
            let mut v: Vec<usize> = rows.iter().map(id).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        let (iters, ids) = (distinct(|r| r.0), distinct(|r| r.1));
        let max_e = rows.iter().map(|r| r.2).max().unwrap_or(0);
        if max_e >= MAX_EXPERTS {
            let no = rows.iter().position(|r| r.2 == max_e).unwrap_or(0);
            return Err(format!(
                "{}: expert id {max_e} (data row {}) is beyond the largest supported ({})",
                path.display(),
                no + 1,
                MAX_EXPERTS - 1
            ));
        }
        let experts = max_e + 1;
        let cells = iters
            .len()
            .saturating_mul(ids.len())
            .saturating_mul(experts);
        if cells > MAX_CELLS {
            return Err(format!(
                "{}: {} iterations × {} layers × {experts} experts is beyond the {MAX_CELLS} loads a history may hold",
                path.display(),
                iters.len(),
                ids.len()
            ));
        }
        // Both lists are sorted and hold every id of the rows.
        let rank = |sorted: &[usize], id: usize| sorted.binary_search(&id).expect("a listed id");
        let mut iterations = vec![vec![vec![0.0; experts]; ids.len()]; iters.len()];
        for (it, l, e, t) in rows {
            iterations[rank(&iters, it)][rank(&ids, l)][e] += t;
        }
        Ok((
            LoadHistory {
                layers: ids.len(),
                experts,
                iterations,
            },
            ids.into_iter().collect(),
        ))
    } else {
        // A matrix: one row per layer (an optional header row of names is skipped); one iteration.
        let mut matrix = Vec::new();
        let all = if header.iter().all(|h| h.parse::<f64>().is_ok()) {
            Some((first_no, first))
        } else {
            None
        };
        for (no, line) in all.into_iter().chain(lines) {
            let row: Vec<f64> = line
                .split(',')
                .map(|f| number(no, f, "a token count"))
                .collect::<Result<_>>()?;
            if let Some(prev) = matrix.first().map(|r: &Vec<f64>| r.len())
                && prev != row.len()
            {
                return Err(err(
                    no,
                    format!(
                        "{} experts in this row; expected {prev} as in the first",
                        row.len()
                    ),
                ));
            }
            matrix.push(row);
        }
        if matrix.is_empty() {
            return Err(err(
                first_no,
                "no rows; expected one row of per-expert tokens per layer".into(),
            ));
        }
        let matrix_len = matrix.len();
        Ok((
            LoadHistory {
                layers: matrix.len(),
                experts: matrix[0].len(),
                iterations: vec![matrix],
            },
            (0..matrix_len).collect(),
        ))
    }
}

/// A load-matrix JSON (per layer, tokens per expert; summed over source ranks), read by the same importer
/// as `moesim trace import --from load-matrix`.
fn load_matrix_json(path: &Path) -> Result<(LoadHistory, Vec<usize>)> {
    use moesim_traces::import::{Format, ImportOptions, import};
    let trace =
        import(Format::LoadMatrix, path, &ImportOptions::default()).map_err(|e| format!("{e}"))?;
    let moesim_traces::Trace::Counts(c) = trace else {
        return Err(format!(
            "{}: expected per-expert token counts",
            path.display()
        ));
    };
    let m = &c.meta;
    let iterations = (0..c.iterations)
        .map(|it| {
            (0..m.layers)
                .map(|l| {
                    (0..m.experts)
                        .map(|e| {
                            (0..m.ranks)
                                .map(|r| c.counts[c.index(it, l, r, e)] as f64)
                                .sum()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    Ok((
        LoadHistory {
            layers: m.layers,
            experts: m.experts,
            iterations,
        },
        m.layer_ids.iter().map(|&l| l as usize).collect(),
    ))
}
