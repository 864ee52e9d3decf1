//! Per-token routing for offloading: which experts each token asks for in each MoE layer.
//!
//! Caches and prefetchers see individual tokens, not per-rank counts, so offloading consumes this form.
//! It comes from a real per-token trace (built by the caller, which does the I/O) or from the scenario's
//! synthetic popularity ([`TokenRouting::synthetic`]): each token draws `top_k` distinct experts, expert e
//! with probability `q_e` from the synthetic generator (successive weighted draws without replacement),
//! seeded per token so any prefix is reproducible.

use crate::scenario::Scenario;
use crate::scenario::file::Mode;
use moesim_traces::RequestSeq;
use moesim_traces::rng::rng_for;
use rand::RngExt;

/// Tokens per offloading step: decode `micro_batch`, prefill and training `micro_batch × seq_len`.
pub fn tokens_per_step(s: &Scenario) -> u64 {
    let m = &s.model;
    match s.workload.mode {
        Mode::Decode | Mode::Serving => m.micro_batch,
        Mode::Training | Mode::Prefill => m.micro_batch.saturating_mul(m.seq_len),
    }
}

/// Tokens an offloading run of `s` replays (`workload.iterations` steps, saturating): a per-token trace
/// longer than this is read no further.
pub fn tokens_used(s: &Scenario) -> u64 {
    tokens_per_step(s).saturating_mul(s.workload.iterations as u64)
}

/// Tokens in order; token t requests `experts_of(t, layer)` in each layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRouting {
    pub layers: usize,
    pub experts: usize,
    /// Where the tokens came from, for reports.
    pub source: String,
    flat: Vec<u32>,
    /// `offsets[t * layers + l] .. offsets[t * layers + l + 1]` indexes `flat`.
    offsets: Vec<usize>,
}

impl TokenRouting {
    pub fn new(layers: usize, experts: usize) -> Self {
        TokenRouting {
            layers,
            experts,
            source: String::new(),
            flat: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Appends one token: its experts in each layer, in layer order (`per_layer.len() == layers`).
    pub fn push_token<'x>(&mut self, per_layer: impl IntoIterator<Item = &'x [u32]>) {
        let mut n = 0;
        for experts in per_layer {
            self.flat.extend_from_slice(experts);
            self.offsets.push(self.flat.len());
            n += 1;
        }
        assert_eq!(n, self.layers, "a token needs experts for every layer");
    }

    /// Checks that this routing fits a model with `layers` MoE layers of `experts` experts.
    pub fn check(&self, layers: usize, experts: usize) -> Result<(), String> {
        if (self.layers, self.experts) != (layers, experts) {
            return Err(format!(
                "per-token routing has {} MoE layers × {} experts, the model {layers} × {experts}",
                self.layers, self.experts
            ));
        }
        if let Some(e) = self.flat.iter().find(|&&e| e as usize >= experts) {
            return Err(format!(
                "per-token routing names expert {e}, beyond the model's {experts}"
            ));
        }
        Ok(())
    }

    pub fn tokens(&self) -> usize {
        (self.offsets.len() - 1) / self.layers.max(1)
    }

    /// The experts token `t` requests in `layer`.
    pub fn experts_of(&self, t: usize, layer: usize) -> &[u32] {
        let i = t * self.layers + layer;
        &self.flat[self.offsets[i]..self.offsets[i + 1]]
    }

    /// One layer's requests with one step per token: what `moesim trace stats` replays.
    pub fn layer_requests(&self, layer: usize) -> RequestSeq {
        let mut seq = RequestSeq::new();
        for t in 0..self.tokens() {
            seq.push(self.experts_of(t, layer));
        }
        seq
    }

    /// The tokens of an imported per-token trace, sequence after sequence (the order `moesim trace stats`
    /// replays).
    pub fn from_trace(t: &moesim_traces::TokenTrace) -> Self {
        let layers = t.meta.layers;
        let mut out = TokenRouting::new(layers, t.meta.experts);
        out.source = format!("per-token trace {}", t.meta.provenance.source);
        for s in &t.sequences {
            for tok in 0..s.tokens {
                out.push_token((0..layers).map(|l| s.row(l, tok)));
            }
        }
        out
    }

    /// Per-token routing drawn from the scenario's synthetic popularity: enough tokens for
    /// `workload.iterations` steps (decode: `micro_batch` tokens per step; prefill: `micro_batch × seq_len`).
    pub fn synthetic(s: &Scenario) -> Self {
        let m = &s.model;
        let tokens = tokens_used(s) as usize;
        let generator = crate::runner::synthetic_routing(s);
        let layers = m.moe_layers();
        let probs: Vec<&[f64]> = (0..layers).map(|l| generator.pick_probability(l)).collect();
        let mut out = TokenRouting::new(layers, m.experts);
        out.source = format!(
            "synthetic per-token, {}",
            moesim_traces::RoutingSource::describe(&generator)
        );
        if let Some(t) = &s.workload.trace {
            // The caller passed no per-token routing: say so rather than let a trace name suggest otherwise.
            out.source
                .push_str(&format!(" (workload.trace {t} not replayed per token)"));
        }
        let mut chosen: Vec<Vec<u32>> = vec![Vec::with_capacity(m.top_k); layers];
        let mut weights = vec![0.0f64; m.experts];
        for t in 0..tokens {
            let mut rng = rng_for(s.seed, &[0x746f_6b65_6e73, t as u64]);
            for (l, c) in chosen.iter_mut().enumerate() {
                c.clear();
                weights.copy_from_slice(probs[l]);
                for _ in 0..m.top_k {
                    let total: f64 = weights.iter().sum();
                    if total <= 0.0 {
                        break;
                    }
                    let mut x = rng.random::<f64>() * total;
                    let mut pick = weights.len() - 1;
                    for (e, &w) in weights.iter().enumerate() {
                        if w > 0.0 && x < w {
                            pick = e;
                            break;
                        }
                        x -= w;
                    }
                    while weights[pick] <= 0.0 {
                        pick -= 1;
                    }
                    c.push(pick as u32);
                    weights[pick] = 0.0;
                }
            }
            out.push_token(chosen.iter().map(Vec::as_slice));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_become_request_sequences() {
        let mut r = TokenRouting::new(2, 4);
        r.push_token([&[0u32, 1][..], &[2, 3][..]]);
        r.push_token([&[1u32][..], &[0, 2][..]]);
        assert_eq!(r.tokens(), 2);
        assert_eq!(r.experts_of(1, 1), &[0, 2]);
        let seq = r.layer_requests(0);
        assert_eq!(seq.steps(), 2);
        assert_eq!(seq.step(0), &[0, 1]);
    }
}
