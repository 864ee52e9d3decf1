//! The time of one engine step, from the scenario's own strategy lowering.
//!
//! A step's batch (prefill chunks and decoding sequences) is described per rank by a [`StepShape`] and
//! lowered exactly as a `prefill` or `decode` step is: a per-step copy of the scenario carries the shape in
//! `workload.step` under `mode = "serving"`, [`crate::strategy::shared::dense_forward_tokens_s`] prices its
//! attention (prefill chunks against their keys, decodes reading their KV cache), and
//! [`crate::runner::simulate_strategy`] runs the strategy's graph (dispatch and combine all-to-alls,
//! grouped expert GEMMs on the routing the synthetic generator draws for that many tokens, overlap) on the
//! scenario's network backend. There is no second cost model.
//!
//! Routing: the synthetic generator's draw for the step's tokens (the scenario's skew), or, with a routing
//! trace (`ServingConfig::routing_trace`), the trace replayed onto the step's shape: rank r of a step takes
//! the trace's tokens `[r·t, (r+1)·t)` of its concatenated stream (wrapping), so every step of one shape
//! routes alike and the memo below stays exact.
//!
//! Lowering a step costs milliseconds, and an hour of traffic runs hundreds of thousands of steps, so
//! times are memoised by the shape with each figure rounded up to `shape_bits` significant bits (six:
//! less than 1/32 above the exact figure; zero: exact).
//!
//! Attention separates: it is dense work at the start of every layer on every rank, so when the ranks run
//! at one speed (no compute noise, no slow ranks) and each step is one chain per rank (no overlapped
//! parts), adding `a` seconds of attention to every layer delays every later operation of every rank by
//! `a` per layer, and the step by `layers × a` (collectives start at their last rank's arrival, which moves
//! by the same amount; nothing overlaps the dense work on its rank). Then the memo keys only the step's
//! tokens and prefill tokens, lowers them with the least attention, and adds `layers × Δa` with `a` from
//! [`serving_attention_s`] on the exact batch: the identity is tested against the full lowering. Otherwise
//! every figure is part of the key.

use crate::runner::{RunOptions, simulate_strategy, synthetic_routing};
use crate::scenario::{Scenario, Strategy};
use crate::strategy::shared::serving_attention_s;
use crate::topology::Topology;
use moesim_calibrate::CostModel;
use moesim_traces::{RoutingSource, TraceRouting};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One step's batch on one rank (the instance's batch split evenly over its ranks: DP-attention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepShape {
    /// Tokens the step processes: prefill chunk tokens plus one per decoding sequence.
    pub tokens: u64,
    /// Of those, prefill tokens.
    pub prefill_tokens: u64,
    /// Σ over prefill tokens of the keys each attends to (its context before the chunk plus its causal
    /// prefix in the chunk).
    pub prefill_key_pairs: u64,
    /// Σ over decoding sequences of the tokens of KV cache each reads (its context, itself included).
    pub decode_kv_tokens: u64,
}

/// A step's batch over the whole instance, as the scheduler builds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    pub prefill_tokens: u64,
    pub prefill_key_pairs: u64,
    pub decode_seqs: u64,
    pub decode_kv_tokens: u64,
}

impl Batch {
    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_seqs
    }

    /// Adds a prefill chunk of `n` tokens after `context` tokens already in the cache: token i of the
    /// chunk attends to context + i keys.
    pub fn add_prefill(&mut self, context: u64, n: u64) {
        self.prefill_tokens += n;
        self.prefill_key_pairs += n * context + n * (n + 1) / 2;
    }

    /// Adds a decoding sequence whose new token attends to `context` keys (itself included).
    pub fn add_decode(&mut self, context: u64) {
        self.decode_seqs += 1;
        self.decode_kv_tokens += context;
    }

    /// The shape on one of `ranks` ranks, each figure rounded up to `bits` significant bits.
    pub fn shape(&self, ranks: u64, bits: u32) -> StepShape {
        let q = |v: u64| quantise(v.div_ceil(ranks.max(1)), bits);
        StepShape {
            tokens: q(self.tokens()),
            prefill_tokens: q(self.prefill_tokens),
            prefill_key_pairs: q(self.prefill_key_pairs),
            decode_kv_tokens: q(self.decode_kv_tokens),
        }
    }
}

/// `v` rounded up to its `bits` most significant bits (0: unchanged). Monotone, so a figure never rounds
/// below a smaller one.
pub fn quantise(v: u64, bits: u32) -> u64 {
    let width = 64 - v.leading_zeros();
    if bits == 0 || width <= bits {
        return v;
    }
    let shift = width - bits;
    let mask = (1u64 << shift) - 1;
    match v.checked_add(mask) {
        Some(x) => (x >> shift) << shift,
        None => v,
    }
}

/// Seconds of one step of `shape`: the scenario's strategy lowered and run for that batch (no memo).
pub fn lower(
    s: &Scenario,
    strategy: &Strategy,
    topo: &Topology,
    cost: &dyn CostModel,
    shape: StepShape,
) -> f64 {
    let mut step = s.clone();
    step.workload.iterations = 1;
    step.workload.micro_batches = 1;
    step.workload.plan_until = None;
    step.workload.step = Some(StepShape {
        tokens: shape.tokens.max(1),
        ..shape
    });
    let mut st = strategy.clone();
    // A step may carry fewer tokens per rank than the strategy has overlapped parts.
    st.overlap_micro_batches = st
        .overlap_micro_batches
        .min(shape.tokens.clamp(1, 16) as usize);
    let synthetic = synthetic_routing(&step);
    let replayed;
    let routing: &dyn RoutingSource =
        match step.serving.as_ref().and_then(|c| c.routing_trace.clone()) {
            Some(trace) => {
                replayed = TraceRouting::shared(
                    trace,
                    Path::new("workload.trace"),
                    synthetic.shape(),
                    synthetic.iterations(),
                )
                .expect(
                    "a serving scenario's routing trace is checked against its model when read",
                );
                &replayed
            }
            None => &synthetic,
        };
    let r = simulate_strategy(
        &step,
        &st,
        topo,
        cost,
        routing,
        RunOptions {
            timing: false,
            progress: None,
        },
    );
    r.step_time_ms.mean * 1e-3
}

/// Whether a step's attention adds to its time `layers` times over (see the module doc): one speed on
/// every rank and one chain of work per rank.
pub fn separable(s: &Scenario, strategy: &Strategy) -> bool {
    strategy.overlap_micro_batches == 1
        && s.cluster.compute_noise_cv == 0.0
        && s.cluster.slow_ranks.is_empty()
}

/// Step times by shape (see [`StepCost`]).
pub type Memo = HashMap<StepShape, f64>;

/// Step times of one strategy, memoised by quantised shape.
pub struct StepCost<'a> {
    s: &'a Scenario,
    strategy: &'a Strategy,
    topo: &'a Topology,
    cost: &'a dyn CostModel,
    bits: u32,
    ranks: u64,
    /// Attention added to a lowering of the step's tokens (see the module doc).
    separable: bool,
    memo: HashMap<StepShape, f64>,
}

impl<'a> StepCost<'a> {
    pub fn new(
        s: &'a Scenario,
        strategy: &'a Strategy,
        topo: &'a Topology,
        cost: &'a dyn CostModel,
        bits: u32,
    ) -> Self {
        StepCost {
            s,
            strategy,
            topo,
            cost,
            bits,
            ranks: s.cluster.gpus() as u64,
            separable: separable(s, strategy),
            memo: HashMap::new(),
        }
    }

    /// Seconds of a step running `batch`.
    pub fn seconds(&mut self, batch: &Batch) -> f64 {
        let shape = batch.shape(self.ranks, self.bits);
        if !self.separable {
            return self.memoised(shape);
        }
        let base = StepShape {
            prefill_key_pairs: 0,
            decode_kv_tokens: 0,
            ..shape
        };
        let exact = batch.shape(self.ranks, 0);
        let attention = serving_attention_s(self.s, self.cost, &exact, 1)
            - serving_attention_s(self.s, self.cost, &base, 1);
        self.memoised(base) + self.s.model.layers as f64 * attention
    }

    fn memoised(&mut self, shape: StepShape) -> f64 {
        if let Some(&t) = self.memo.get(&shape) {
            return t;
        }
        let t = lower(self.s, self.strategy, self.topo, self.cost, shape);
        self.memo.insert(shape, t);
        t
    }

    /// Distinct shapes lowered so far.
    pub fn shapes(&self) -> usize {
        self.memo.len()
    }

    /// Starts from the step times of an earlier run of the same scenario, pool and strategy (the capacity
    /// search serves one deployment at many rates: the shapes repeat).
    pub fn with_memo(mut self, memo: Memo) -> Self {
        self.memo = memo;
        self
    }

    /// The step times lowered so far.
    pub fn into_memo(self) -> Memo {
        self.memo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A per-token trace of Mixtral's shape (32 layers, 8 experts, top-2) whose every token picks
    /// `pick(token)` in every layer.
    fn trace(tokens: usize, pick: impl Fn(usize) -> [u32; 2]) -> moesim_traces::Trace {
        let layers = 32;
        let mut seq = moesim_traces::Sequence::with_capacity("s".into(), tokens, layers, 2);
        for _ in 0..layers {
            for t in 0..tokens {
                seq.push_row(&pick(t), None);
            }
        }
        moesim_traces::Trace::Tokens(moesim_traces::TokenTrace {
            meta: moesim_traces::TraceMeta {
                version: 1,
                kind: moesim_traces::TraceKind::Tokens,
                model: "mixtral".into(),
                layers,
                layer_ids: (0..layers as u32).collect(),
                experts: 8,
                top_k: 2,
                ranks: 1,
                has_gates: false,
                provenance: Default::default(),
            },
            sequences: vec![seq],
        })
    }

    #[test]
    fn a_routing_trace_sets_each_steps_routing() {
        let path = format!(
            "{}/../scenarios/serving-mixtral.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let base = crate::scenario::parse_scenario(&path, &text, &[]).unwrap();
        let topo = Topology::build(&base.cluster);
        let cost = base.cluster.roofline();
        // A decode step of 64 sequences per GPU on the 8 GPUs.
        let shape = StepShape {
            tokens: 512,
            prefill_tokens: 0,
            prefill_key_pairs: 0,
            decode_kv_tokens: 512 * 1024,
        };
        let with = |t: Option<moesim_traces::Trace>| {
            let mut s = base.clone();
            s.serving.as_mut().unwrap().routing_trace = t.map(std::sync::Arc::new);
            lower(&s, &s.strategies[0], &topo, &cost, shape)
        };
        // Every token on experts 0 and 1 (one GPU of EP8) against tokens spread over all eight.
        let hot = with(Some(trace(4096, |_| [0, 1])));
        let spread = with(Some(trace(4096, |t| {
            let a = (2 * t % 8) as u32;
            [a, a + 1]
        })));
        assert!(hot > 1.2 * spread, "hot {hot} vs spread {spread}");
        // Replay is deterministic, and differs from the synthetic draw.
        assert_eq!(
            spread,
            with(Some(trace(4096, |t| {
                let a = (2 * t % 8) as u32;
                [a, a + 1]
            })))
        );
        assert_ne!(hot, with(None));
    }

    #[test]
    fn quantise_keeps_small_values_and_rounds_large_ones_up_within_its_resolution() {
        assert_eq!(quantise(63, 6), 63);
        assert_eq!(quantise(64, 6), 64);
        assert_eq!(quantise(65, 6), 66);
        assert_eq!(quantise(1025, 6), 1056);
        assert_eq!(quantise(1025, 0), 1025);
        assert_eq!(quantise(u64::MAX, 6), u64::MAX);
        for v in [1u64, 100, 1000, 12345, 999_999] {
            let q = quantise(v, 6);
            assert!(q >= v && (q - v) as f64 <= v as f64 / 32.0, "{v} → {q}");
        }
    }

    #[test]
    fn a_chunk_attends_to_its_context_and_causal_prefix() {
        let mut b = Batch::default();
        b.add_prefill(0, 4);
        assert_eq!(b.prefill_key_pairs, 1 + 2 + 3 + 4);
        b.add_prefill(10, 2);
        assert_eq!(b.prefill_key_pairs, 10 + 11 + 12);
        b.add_decode(7);
        assert_eq!((b.tokens(), b.decode_kv_tokens), (7, 7));
        let s = b.shape(2, 0);
        assert_eq!((s.tokens, s.prefill_tokens, s.decode_kv_tokens), (4, 3, 4));
    }
}
