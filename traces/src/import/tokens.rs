//! Per-token importers (`jsonl-tokens`, `csv-tokens`) and the assembler that turns loose
//! (sequence, token, layer, experts) rows into [`Sequence`]s.

use super::ImportOptions;
use crate::error::{TraceError, TraceResult};
use crate::trace::{Provenance, Sequence, TokenTrace, TraceKind, meta};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// What to do with a token that has rows for some layers but not all (e.g. the last token of a generation
/// cut short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Incomplete {
    /// Leave such tokens out (and say how many in the provenance notes).
    #[default]
    Drop,
    /// Keep them, with no experts in the missing layers.
    Keep,
    /// Refuse the input.
    Error,
}

impl std::str::FromStr for Incomplete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "drop" => Ok(Incomplete::Drop),
            "keep" => Ok(Incomplete::Keep),
            "error" => Ok(Incomplete::Error),
            _ => Err(format!(
                "unknown value `{s}` (expected drop, keep or error)"
            )),
        }
    }
}

struct Row {
    file: u32,
    line: u64,
    seq: u32,
    token: u64,
    layer: u32,
    start: u32,
    len: u32,
}

/// Collects rows, then builds the trace.
pub(crate) struct Assembler<'a> {
    opts: &'a ImportOptions,
    files: Vec<PathBuf>,
    seq_names: Vec<String>,
    seq_index: HashMap<String, u32>,
    rows: Vec<Row>,
    experts: Vec<u32>,
    gates: Vec<f32>,
    any_gates: bool,
    top_k: Option<(usize, u32, u64)>,
    max_expert: Option<u32>,
}

impl<'a> Assembler<'a> {
    pub(crate) fn new(opts: &'a ImportOptions) -> Self {
        Assembler {
            opts,
            files: Vec::new(),
            seq_names: Vec::new(),
            seq_index: HashMap::new(),
            rows: Vec::new(),
            experts: Vec::new(),
            gates: Vec::new(),
            any_gates: false,
            top_k: opts.top_k.map(|k| (k, u32::MAX, 0)),
            max_expert: None,
        }
    }

    pub(crate) fn add_file(&mut self, f: &Path) -> u32 {
        self.files.push(f.to_path_buf());
        (self.files.len() - 1) as u32
    }

    pub(crate) fn sequence(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.seq_index.get(name) {
            return i;
        }
        let i = self.seq_names.len() as u32;
        self.seq_names.push(name.to_string());
        self.seq_index.insert(name.to_string(), i);
        i
    }

    fn where_(&self, file: u32, line: u64) -> (PathBuf, String) {
        (self.files[file as usize].clone(), format!("line {line}"))
    }

    /// Adds one row after validating its experts.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row(
        &mut self,
        file: u32,
        line: u64,
        seq: u32,
        token: u64,
        layer: u32,
        experts: &[u32],
        gates: Option<&[f32]>,
    ) -> TraceResult<()> {
        let err = |s: &Self, msg: String| {
            let (f, l) = s.where_(file, line);
            TraceError::at(f, l, msg)
        };
        for (i, &e) in experts.iter().enumerate() {
            if let Some(n) = self.opts.experts
                && e as usize >= n
            {
                return Err(err(
                    self,
                    format!("expert id {e} out of range (expected 0..{n})"),
                ));
            }
            if experts[..i].contains(&e) {
                return Err(err(
                    self,
                    format!("expert {e} listed twice (expected distinct experts)"),
                ));
            }
        }
        match self.top_k {
            None => self.top_k = Some((experts.len(), file, line)),
            Some((k, f0, l0)) => {
                let bad = if self.opts.variable_k {
                    experts.len() > k && self.opts.top_k.is_some()
                } else {
                    experts.len() != k
                };
                if bad {
                    let from = if f0 == u32::MAX {
                        "--top-k".to_string()
                    } else {
                        format!("{} line {l0}", self.files[f0 as usize].display())
                    };
                    return Err(err(
                        self,
                        format!(
                            "wrong top-k: {} experts listed, expected {k} (from {from}; pass --variable-k for per-token counts)",
                            experts.len()
                        ),
                    ));
                }
                if self.opts.variable_k && experts.len() > k {
                    self.top_k = Some((experts.len(), file, line));
                }
            }
        }
        if let Some(g) = gates {
            if g.len() != experts.len() {
                return Err(err(
                    self,
                    format!(
                        "{} gate weights for {} experts (expected one per expert)",
                        g.len(),
                        experts.len()
                    ),
                ));
            }
            self.any_gates = true;
        }
        if let Some(&m) = experts.iter().max() {
            self.max_expert = Some(self.max_expert.map_or(m, |x| x.max(m)));
        }
        let start = self.experts.len() as u32;
        self.experts.extend_from_slice(experts);
        match gates {
            Some(g) => self.gates.extend_from_slice(g),
            None => self
                .gates
                .extend(std::iter::repeat_n(f32::NAN, experts.len())),
        }
        self.rows.push(Row {
            file,
            line,
            seq,
            token,
            layer,
            start,
            len: experts.len() as u32,
        });
        Ok(())
    }

    pub(crate) fn finish(mut self, input: &Path) -> TraceResult<TokenTrace> {
        if self.rows.is_empty() {
            return Err(TraceError::file(input, "no routing rows found"));
        }
        let mut layer_ids: Vec<u32> = self.rows.iter().map(|r| r.layer).collect();
        layer_ids.sort_unstable();
        layer_ids.dedup();
        let layers = layer_ids.len();
        if layers > crate::limits::MAX_LAYERS {
            return Err(TraceError::file(
                input,
                format!(
                    "{layers} distinct layer ids: expected at most {}",
                    crate::limits::MAX_LAYERS
                ),
            ));
        }
        let experts = self
            .opts
            .experts
            .unwrap_or(self.max_expert.map_or(1, |m| m as usize + 1));
        let top_k = self.top_k.map_or(0, |t| t.0);
        let mut notes = Vec::new();
        // Sort rows by (sequence, token, layer); detect duplicates and incomplete tokens.
        self.rows
            .sort_by_key(|r| (r.seq, r.token, r.layer, r.file, r.line));
        let mut sequences = Vec::with_capacity(self.seq_names.len());
        let mut dropped = 0usize;
        let mut i = 0;
        let nrows = self.rows.len();
        for (si, name) in self.seq_names.iter().enumerate() {
            // rows of this sequence: [i, j)
            let mut j = i;
            while j < nrows && self.rows[j].seq == si as u32 {
                j += 1;
            }
            // tokens: groups by token
            let mut groups: Vec<(usize, usize)> = Vec::new();
            let mut a = i;
            while a < j {
                let mut b = a + 1;
                while b < j && self.rows[b].token == self.rows[a].token {
                    b += 1;
                }
                for w in a + 1..b {
                    if self.rows[w].layer == self.rows[w - 1].layer {
                        let r = &self.rows[w];
                        return Err(TraceError::at(
                            &self.files[r.file as usize],
                            format!("line {}", r.line),
                            format!(
                                "duplicate row for sequence `{name}`, token {}, layer {} (first at line {})",
                                r.token,
                                r.layer,
                                self.rows[w - 1].line
                            ),
                        ));
                    }
                }
                if b - a < layers {
                    match self.opts.incomplete {
                        Incomplete::Error => {
                            let r = &self.rows[a];
                            return Err(TraceError::at(
                                &self.files[r.file as usize],
                                format!("line {}", r.line),
                                format!(
                                    "sequence `{name}`, token {} has rows for {} of {layers} layers (pass --incomplete drop or keep)",
                                    r.token,
                                    b - a
                                ),
                            ));
                        }
                        Incomplete::Drop => {
                            dropped += 1;
                            a = b;
                            continue;
                        }
                        Incomplete::Keep => {}
                    }
                }
                groups.push((a, b));
                a = b;
            }
            let tokens = groups.len();
            let entries = (tokens as u64)
                .saturating_mul(layers as u64)
                .saturating_mul(top_k.max(1) as u64);
            if entries > crate::limits::MAX_SEQUENCE_ENTRIES {
                return Err(TraceError::file(
                    input,
                    format!(
                        "sequence `{name}`: {tokens} tokens × {layers} layers × top-{top_k} is beyond the {} \
                         expert entries one sequence may hold (--incomplete keep pads missing layers)",
                        crate::limits::MAX_SEQUENCE_ENTRIES
                    ),
                ));
            }
            let mut s = Sequence::with_capacity(name.clone(), tokens, layers, top_k);
            if self.any_gates {
                s.gates = Some(Vec::with_capacity(tokens * layers * top_k));
            }
            // layer-major rows
            let mut cursor: Vec<usize> = groups.iter().map(|g| g.0).collect();
            for &lid in &layer_ids {
                for (t, g) in groups.iter().enumerate() {
                    let c = cursor[t];
                    if c < g.1 && self.rows[c].layer == lid {
                        let r = &self.rows[c];
                        let (lo, hi) = (r.start as usize, (r.start + r.len) as usize);
                        let gates = self.any_gates.then(|| &self.gates[lo..hi]);
                        s.push_row(&self.experts[lo..hi], gates);
                        cursor[t] += 1;
                    } else {
                        s.push_row(&[], self.any_gates.then_some(&[][..]));
                    }
                }
            }
            sequences.push(s);
            i = j;
        }
        if dropped > 0 {
            notes.push(format!(
                "{dropped} tokens with rows for only some of the {layers} layers were dropped"
            ));
        }
        let mut m = meta(
            TraceKind::Tokens,
            layers,
            experts,
            top_k,
            1,
            Provenance {
                notes,
                ..Provenance::default()
            },
        );
        m.layer_ids = layer_ids;
        m.has_gates = self.any_gates;
        Ok(TokenTrace { meta: m, sequences })
    }
}

fn pick<'k>(
    given: &'k Option<String>,
    defaults: &'k [&'k str],
    present: impl Fn(&str) -> bool,
) -> Option<&'k str> {
    match given {
        // A key the user named must be there too (the row is then reported as missing it).
        Some(k) => present(k).then_some(k.as_str()),
        None => defaults.iter().copied().find(|k| present(k)),
    }
}

const LAYER_KEYS: &[&str] = &["layer", "Layer ID", "layer_id"];
const EXPERT_KEYS: &[&str] = &["experts", "Activated Expert IDs", "expert_ids"];
const TOKEN_KEYS: &[&str] = &["token_idx", "token_pos", "token"];

fn file_stem(f: &Path) -> String {
    f.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Default)]
struct Run {
    offset: u64,
    max: u64,
    seen: std::collections::HashSet<(u64, u64)>,
}

/// `jsonl-tokens`.
pub(crate) fn import_jsonl(
    files: &[PathBuf],
    input: &Path,
    opts: &ImportOptions,
) -> TraceResult<TokenTrace> {
    let mut asm = Assembler::new(opts);
    let mut experts: Vec<u32> = Vec::new();
    let mut gates: Vec<f32> = Vec::new();
    // A (token, layer) seen again under the same key continues the sequence after its highest position so
    // far: generation logs restart positions at every decode step.
    let mut runs: HashMap<String, Run> = HashMap::new();
    let scoped = files.len() > 1;
    for f in files {
        let fi = asm.add_file(f);
        let rd = std::io::BufReader::new(std::fs::File::open(f).map_err(|e| TraceError::io(f, e))?);
        for (n, line) in rd.lines().enumerate() {
            let line_no = n as u64 + 1;
            let line = line.map_err(|e| {
                TraceError::at(f, format!("line {line_no}"), format!("cannot read: {e}"))
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("line {line_no}");
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&line)
                .map_err(|e| {
                    TraceError::at(f, at(), format!("expected one JSON object per line: {e}"))
                })?;
            // sequence
            let seq_name = match &opts.sequence_keys {
                Some(keys) => {
                    let mut parts = Vec::new();
                    for k in keys {
                        let val = v.get(k).ok_or_else(|| {
                            TraceError::at(f, at(), format!("missing key `{k}` (sequence)"))
                        })?;
                        parts.push(value_text(val));
                    }
                    parts.join("/")
                }
                None => {
                    let parts: Vec<String> = ["dataset", "problem_id"]
                        .iter()
                        .filter_map(|k| v.get(*k).map(value_text))
                        .collect();
                    if !parts.is_empty() {
                        parts.join("/")
                    } else if let Some(s) = v.get("sequence") {
                        value_text(s)
                    } else {
                        file_stem(f)
                    }
                }
            };
            let lk = pick(&opts.layer_key, LAYER_KEYS, |k| v.contains_key(k)).ok_or_else(|| {
                TraceError::at(
                    f,
                    at(),
                    format!(
                        "missing key `{}`",
                        opts.layer_key.as_deref().unwrap_or("layer")
                    ),
                )
            })?;
            let layer = int_field(&v, lk, f, &at)?;
            let tk = pick(&opts.token_key, TOKEN_KEYS, |k| v.contains_key(k)).ok_or_else(|| {
                let key = opts
                    .token_key
                    .as_deref()
                    .unwrap_or("token_idx` (or `token_pos");
                TraceError::at(f, at(), format!("missing key `{key}`"))
            })?;
            let token = int_field(&v, tk, f, &at)?;
            // several files: sequences belong to their file
            let seq_name = if scoped {
                format!("{}:{seq_name}", file_stem(f))
            } else {
                seq_name
            };
            let run = runs.entry(seq_name.clone()).or_default();
            if !run.seen.insert((token, layer)) {
                run.offset += run.max + 1;
                run.max = 0;
                run.seen.clear();
                run.seen.insert((token, layer));
            }
            run.max = run.max.max(token);
            let token = run.offset + token;
            let seq = asm.sequence(&seq_name);
            let ek =
                pick(&opts.experts_key, EXPERT_KEYS, |k| v.contains_key(k)).ok_or_else(|| {
                    let key = opts.experts_key.as_deref().unwrap_or("experts");
                    TraceError::at(f, at(), format!("missing key `{key}`"))
                })?;
            let arr = v[ek].as_array().ok_or_else(|| {
                TraceError::at(f, at(), format!("`{ek}`: expected an array of expert ids"))
            })?;
            experts.clear();
            for x in arr {
                let id = x
                    .as_u64()
                    .filter(|&i| i <= u32::MAX as u64)
                    .ok_or_else(|| {
                        TraceError::at(
                            f,
                            at(),
                            format!("`{ek}`: expected non-negative integer expert ids, found {x}"),
                        )
                    })?;
                experts.push(id as u32);
            }
            let gk = opts.gates_key.as_deref().unwrap_or("gating_probs");
            let g = match v.get(gk) {
                Some(serde_json::Value::Array(a)) => {
                    gates.clear();
                    for x in a {
                        gates.push(x.as_f64().ok_or_else(|| {
                            TraceError::at(f, at(), format!("`{gk}`: expected numbers, found {x}"))
                        })? as f32);
                    }
                    Some(&gates[..])
                }
                Some(serde_json::Value::Null) | None => None,
                Some(x) => {
                    return Err(TraceError::at(
                        f,
                        at(),
                        format!("`{gk}`: expected an array, found {x}"),
                    ));
                }
            };
            asm.row(fi, line_no, seq, token, layer as u32, &experts, g)?;
        }
    }
    asm.finish(input)
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn int_field(
    v: &serde_json::Map<String, serde_json::Value>,
    k: &str,
    f: &Path,
    at: &dyn Fn() -> String,
) -> TraceResult<u64> {
    v[k].as_u64()
        .filter(|&x| x <= u32::MAX as u64)
        .ok_or_else(|| {
            TraceError::at(
                f,
                at(),
                format!("`{k}`: expected a non-negative integer, found {}", v[k]),
            )
        })
}

/// Parses an expert list such as `[8, 26, 56]`, `8 26 56` or `8;26;56`.
pub(crate) fn parse_expert_list(s: &str, out: &mut Vec<u32>) -> Result<(), String> {
    out.clear();
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    for part in t.split([',', ';', ' ', '\t']).filter(|p| !p.is_empty()) {
        let id: u32 = part.parse().map_err(|_| {
            format!("expected a list of non-negative integer expert ids, found `{part}` in `{s}`")
        })?;
        out.push(id);
    }
    Ok(())
}

/// `csv-tokens`.
pub(crate) fn import_csv(
    files: &[PathBuf],
    input: &Path,
    opts: &ImportOptions,
) -> TraceResult<TokenTrace> {
    let mut asm = Assembler::new(opts);
    let mut experts = Vec::new();
    for f in files {
        let fi = asm.add_file(f);
        let mut rd = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(f)
            .map_err(|e| TraceError::file(f, format!("cannot open CSV: {e}")))?;
        let headers = rd
            .headers()
            .map_err(|e| TraceError::at(f, "line 1", format!("cannot read the header: {e}")))?
            .clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
        };
        let find = |given: &Option<String>, defaults: &[&str], what: &str| -> TraceResult<usize> {
            let names: Vec<&str> = match given {
                Some(g) => vec![g.as_str()],
                None => defaults.to_vec(),
            };
            names.iter().find_map(|n| col(n)).ok_or_else(|| {
                TraceError::at(
                    f,
                    "line 1",
                    format!(
                        "missing {what} column (expected one of: {}; found: {})",
                        names.join(", "),
                        headers.iter().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        };
        let lc = find(&opts.layer_key, LAYER_KEYS, "layer")?;
        let ec = find(&opts.experts_key, EXPERT_KEYS, "expert list")?;
        let tc = match &opts.token_key {
            Some(_) => Some(find(&opts.token_key, &[], "token position")?),
            None => ["token_idx", "token_pos"].iter().find_map(|n| col(n)),
        };
        let sc: Vec<usize> = match &opts.sequence_keys {
            Some(keys) => keys
                .iter()
                .map(|k| find(&Some(k.clone()), &[], "sequence"))
                .collect::<TraceResult<_>>()?,
            None => col("sequence").into_iter().collect(),
        };
        let stem = file_stem(f);
        let mut next_token: HashMap<(u32, u32), u64> = HashMap::new();
        for rec in rd.records() {
            let (rec, line) = super::csv_record(f, rec)?;
            let at = || format!("line {line}");
            let seq_name = if sc.is_empty() {
                stem.clone()
            } else {
                sc.iter()
                    .map(|&c| rec[c].to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let seq = asm.sequence(&seq_name);
            let layer = super::parse_count(f, at, &format!("column `{}`", &headers[lc]), &rec[lc])?;
            if layer > u32::MAX as u64 {
                return Err(TraceError::at(f, at(), "layer number too large"));
            }
            let token = match tc {
                Some(c) => {
                    super::parse_count(f, at, &format!("column `{}`", &headers[c]), &rec[c])?
                }
                None => {
                    let n = next_token.entry((seq, layer as u32)).or_insert(0);
                    *n += 1;
                    *n - 1
                }
            };
            parse_expert_list(&rec[ec], &mut experts)
                .map_err(|m| TraceError::at(f, at(), format!("column `{}`: {m}", &headers[ec])))?;
            asm.row(fi, line, seq, token, layer as u32, &experts, None)?;
        }
    }
    asm.finish(input)
}
