//! The trace data model: per-token routing ([`TokenTrace`]) and aggregated counts ([`CountsTrace`]), with
//! self-describing metadata ([`TraceMeta`]). Plain serde data; no I/O here.

use serde::{Deserialize, Serialize};

/// Current version of the trace data model and of the native file format.
pub const FORMAT_VERSION: u32 = 1;

/// Whether a trace lists experts per token or only counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceKind {
    /// Per (sequence, token, layer): the experts chosen (and optionally their gate weights).
    Tokens,
    /// Per (iteration, layer, source rank, expert): tokens routed.
    Counts,
}

/// Where a trace came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The format it was imported from (`jsonl-tokens`, `synthetic`, …).
    pub format: String,
    /// The input path(s) or generator description.
    pub source: String,
    /// The program that wrote it.
    pub tool: String,
    /// Anything a reader should know (tokens dropped, assumptions made).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Self-description of a trace: the model shape it was recorded on and how it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub version: u32,
    pub kind: TraceKind,
    /// Free-text model name (may be empty).
    #[serde(default)]
    pub model: String,
    /// MoE layers in the trace.
    pub layers: usize,
    /// The layer numbers as the source named them (e.g. 1..=26), one per layer.
    pub layer_ids: Vec<u32>,
    /// Routed experts per layer; expert ids are `0..experts`.
    pub experts: usize,
    /// Experts per token (the most any token-layer row lists).
    pub top_k: usize,
    /// Source ranks of a counts trace (1 for token traces).
    pub ranks: usize,
    /// Whether token rows carry gate weights.
    #[serde(default)]
    pub has_gates: bool,
    pub provenance: Provenance,
}

impl TraceMeta {
    /// Checks the shape against [`crate::limits`] and its own consistency (a header from a file is input).
    pub fn check(&self) -> Result<(), String> {
        crate::limits::check_shape(self.layers, self.experts, self.top_k)?;
        if self.layer_ids.len() != self.layers {
            return Err(format!(
                "{} layer ids for {} layers",
                self.layer_ids.len(),
                self.layers
            ));
        }
        if !(1..=crate::limits::MAX_RANKS).contains(&self.ranks) {
            return Err(format!(
                "{} ranks: expected 1..={}",
                self.ranks,
                crate::limits::MAX_RANKS
            ));
        }
        if self.kind == TraceKind::Counts
            && self.layers * self.ranks * self.experts > crate::limits::MAX_ITERATION_CELLS
        {
            return Err(format!(
                "{} layers × {} ranks × {} experts per iteration: expected at most {} cells",
                self.layers,
                self.ranks,
                self.experts,
                crate::limits::MAX_ITERATION_CELLS
            ));
        }
        Ok(())
    }
}

/// One sequence (prompt, sample) of a per-token trace.
///
/// Row `(layer, token)` lists `experts[offsets[r]..offsets[r+1]]` with `r = layer * tokens + token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub name: String,
    pub tokens: usize,
    pub offsets: Vec<u32>,
    pub experts: Vec<u32>,
    /// Gate weight of each entry of `experts`, when the trace has them.
    #[serde(default)]
    pub gates: Option<Vec<f32>>,
}

impl Sequence {
    /// An empty sequence with `layers × tokens` rows, to be filled with [`Sequence::push_row`] in row order.
    pub fn with_capacity(name: String, tokens: usize, layers: usize, k: usize) -> Self {
        let mut offsets = Vec::with_capacity(layers * tokens + 1);
        offsets.push(0);
        Sequence {
            name,
            tokens,
            offsets,
            experts: Vec::with_capacity(layers * tokens * k),
            gates: None,
        }
    }

    /// Appends the next row (layer-major order).
    pub fn push_row(&mut self, experts: &[u32], gates: Option<&[f32]>) {
        self.experts.extend_from_slice(experts);
        if let Some(g) = gates {
            self.gates.get_or_insert_with(Vec::new).extend_from_slice(g);
        }
        self.offsets.push(self.experts.len() as u32);
    }

    /// Number of layers (rows / tokens).
    pub fn layers(&self) -> usize {
        (self.offsets.len() - 1)
            .checked_div(self.tokens)
            .unwrap_or(0)
    }

    /// The experts token `token` uses in layer index `layer`.
    pub fn row(&self, layer: usize, token: usize) -> &[u32] {
        let r = layer * self.tokens + token;
        &self.experts[self.offsets[r] as usize..self.offsets[r + 1] as usize]
    }

    /// Gate weights of row (`layer`, `token`), if present.
    pub fn row_gates(&self, layer: usize, token: usize) -> Option<&[f32]> {
        let r = layer * self.tokens + token;
        self.gates
            .as_ref()
            .map(|g| &g[self.offsets[r] as usize..self.offsets[r + 1] as usize])
    }
}

/// A per-token trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenTrace {
    pub meta: TraceMeta,
    pub sequences: Vec<Sequence>,
}

impl TokenTrace {
    /// Tokens over all sequences.
    pub fn tokens(&self) -> usize {
        self.sequences.iter().map(|s| s.tokens).sum()
    }

    /// The request sequence of one layer: every token of every sequence, in order (what a cache sees).
    pub fn layer_requests(&self, layer: usize) -> crate::RequestSeq {
        let mut seq = crate::RequestSeq::new();
        seq.experts.reserve(self.tokens() * self.meta.top_k);
        seq.offsets.reserve(self.tokens());
        for s in &self.sequences {
            for t in 0..s.tokens {
                seq.push(s.row(layer, t));
            }
        }
        seq
    }

    /// Tokens per expert for each layer (`[layer][expert]`).
    pub fn expert_loads(&self) -> Vec<Vec<u64>> {
        let mut loads = vec![vec![0u64; self.meta.experts]; self.meta.layers];
        for s in &self.sequences {
            for (layer, l) in loads.iter_mut().enumerate() {
                let lo = s.offsets[layer * s.tokens] as usize;
                let hi = s.offsets[(layer + 1) * s.tokens] as usize;
                for &e in &s.experts[lo..hi] {
                    l[e as usize] += 1;
                }
            }
        }
        loads
    }

    /// Token-layer rows.
    pub fn rows(&self) -> usize {
        self.sequences.iter().map(|s| s.offsets.len() - 1).sum()
    }
}

/// An aggregated trace: `counts[iteration][layer][rank][expert]`, flattened row-major.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountsTrace {
    pub meta: TraceMeta,
    pub iterations: usize,
    pub counts: Vec<u64>,
}

impl CountsTrace {
    /// Cells per iteration.
    pub fn cells_per_iteration(&self) -> usize {
        self.meta.layers * self.meta.ranks * self.meta.experts
    }

    /// Index of a cell.
    pub fn index(&self, iteration: usize, layer: usize, rank: usize, expert: usize) -> usize {
        ((iteration * self.meta.layers + layer) * self.meta.ranks + rank) * self.meta.experts
            + expert
    }

    /// Tokens per expert for each layer, summed over iterations and ranks.
    pub fn expert_loads(&self) -> Vec<Vec<u64>> {
        let m = &self.meta;
        let mut loads = vec![vec![0u64; m.experts]; m.layers];
        for chunk in self.counts.chunks_exact(m.experts).enumerate() {
            let layer = (chunk.0 / m.ranks) % m.layers;
            for (l, &c) in loads[layer].iter_mut().zip(chunk.1) {
                *l += c;
            }
        }
        loads
    }
}

/// Either kind of trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trace {
    Tokens(TokenTrace),
    Counts(CountsTrace),
}

impl Trace {
    pub fn meta(&self) -> &TraceMeta {
        match self {
            Trace::Tokens(t) => &t.meta,
            Trace::Counts(c) => &c.meta,
        }
    }

    pub fn meta_mut(&mut self) -> &mut TraceMeta {
        match self {
            Trace::Tokens(t) => &mut t.meta,
            Trace::Counts(c) => &mut c.meta,
        }
    }

    /// Tokens per expert for each layer.
    pub fn expert_loads(&self) -> Vec<Vec<u64>> {
        match self {
            Trace::Tokens(t) => t.expert_loads(),
            Trace::Counts(c) => c.expert_loads(),
        }
    }

    /// Aggregates a token trace into counts (one iteration per sequence, one rank); counts stay as they are.
    pub fn to_counts(&self) -> CountsTrace {
        match self {
            Trace::Counts(c) => c.clone(),
            Trace::Tokens(t) => {
                let m = &t.meta;
                let mut meta = m.clone();
                meta.kind = TraceKind::Counts;
                meta.ranks = 1;
                meta.has_gates = false;
                let iters = t.sequences.len();
                let mut counts = vec![0u64; iters * m.layers * m.experts];
                for (i, s) in t.sequences.iter().enumerate() {
                    for layer in 0..m.layers {
                        for tok in 0..s.tokens {
                            for &e in s.row(layer, tok) {
                                counts[(i * m.layers + layer) * m.experts + e as usize] += 1;
                            }
                        }
                    }
                }
                CountsTrace {
                    meta,
                    iterations: iters,
                    counts,
                }
            }
        }
    }
}

/// Metadata with defaults for the given shape (layer ids 0..layers).
pub fn meta(
    kind: TraceKind,
    layers: usize,
    experts: usize,
    top_k: usize,
    ranks: usize,
    provenance: Provenance,
) -> TraceMeta {
    TraceMeta {
        version: FORMAT_VERSION,
        kind,
        model: String::new(),
        layers,
        layer_ids: (0..layers as u32).collect(),
        experts,
        top_k,
        ranks,
        has_gates: false,
        provenance,
    }
}
