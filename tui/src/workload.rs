//! The Trace view's figures: skew, drift, locality and cache hit-rate curves of the scenario's workload.
//!
//! A per-token trace gets the full `moesim trace stats` analysis (LRU and Belady curves). Synthetic and
//! counts workloads have no token order, so their curve is the hit rate of a static cache holding the
//! `c` most loaded experts of each layer — the best any policy can do without reordering.

use moesim_traces::stats::{StatsOptions, drift, rank_imbalance, skew, trace_stats};
use moesim_traces::{RoutingSource, Trace};

/// One hit-rate curve: (cache size in experts per layer, hit rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// What the Trace view shows.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSummary {
    pub source: String,
    pub experts: usize,
    pub layers: usize,
    pub load_max_over_mean: f64,
    pub gini: f64,
    pub cv: f64,
    /// Max/mean of per-rank loads with experts placed contiguously on the cluster's GPUs.
    pub rank_max_over_mean: f64,
    /// (lag label, mean total-variation distance).
    pub drift: Vec<(String, f64)>,
    pub locality: Option<f64>,
    /// Per layer: (max/mean, Gini).
    pub per_layer: Vec<(f64, f64)>,
    pub curves: Vec<Curve>,
}

/// The summary of `routing` (and of `trace` when it is a per-token trace), over `ranks` GPUs; `source`
/// names the workload.
pub fn summarize(
    routing: &dyn RoutingSource,
    trace: Option<&Trace>,
    ranks: usize,
    source: String,
) -> Result<WorkloadSummary, String> {
    if let Some(t @ Trace::Tokens(_)) = trace {
        return from_tokens(t, ranks, source);
    }
    Ok(WorkloadSummary {
        source,
        ..from_routing(routing, ranks)
    })
}

fn from_tokens(t: &Trace, ranks: usize, source: String) -> Result<WorkloadSummary, String> {
    let st = trace_stats(
        t,
        &StatsOptions {
            ep_ranks: ranks.max(1),
            ..StatsOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let o = &st.overall;
    let curve = |name: &str, rates: &std::collections::BTreeMap<String, f64>| Curve {
        name: name.into(),
        points: st
            .cache_sizes
            .iter()
            .filter_map(|c| rates.get(&c.to_string()).map(|&r| (*c as f64, r)))
            .collect(),
    };
    Ok(WorkloadSummary {
        source,
        experts: st.experts,
        layers: st.layers.len(),
        load_max_over_mean: o.load_max_over_mean,
        gini: o.gini,
        cv: o.cv,
        rank_max_over_mean: o.rank_max_over_mean,
        drift: by_lag(o.drift_tv.clone())
            .into_iter()
            .map(|(k, v)| (format!("{k} win"), v))
            .collect(),
        locality: o.locality,
        per_layer: st
            .layers
            .iter()
            .map(|l| (l.load_max_over_mean, l.gini))
            .collect(),
        curves: vec![
            curve("LRU", &o.lru_hit_rate),
            curve("Belady", &o.belady_hit_rate),
        ],
    })
}

/// Drift entries in numeric lag order (the map orders "16" before "4").
fn by_lag(m: std::collections::BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = m.into_iter().collect();
    v.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(usize::MAX));
    v
}

fn from_routing(routing: &dyn RoutingSource, ranks: usize) -> WorkloadSummary {
    let shape = routing.shape();
    let (layers, experts) = (shape.moe_layers, shape.experts);
    // loads[layer][expert] over the whole run; per_iteration[it][expert] over layers, for drift.
    let mut loads = vec![vec![0u64; experts]; layers];
    let mut per_iteration = Vec::with_capacity(routing.iterations());
    for it in 0..routing.iterations() {
        let r = routing.iteration(it);
        let mut this = vec![0u64; experts];
        for (layer, acc) in loads.iter_mut().enumerate() {
            for mb in 0..shape.micro_batches {
                for (e, l) in r.expert_loads(mb, layer).into_iter().enumerate() {
                    acc[e] += l;
                    this[e] += l;
                }
            }
        }
        per_iteration.push(this);
    }
    let per_layer: Vec<(f64, f64, f64, f64)> = loads
        .iter()
        .map(|l| {
            let (m, g, cv, _) = skew(l);
            (m, g, cv, rank_imbalance(l, ranks.max(1)))
        })
        .collect();
    let mean = |f: fn(&(f64, f64, f64, f64)) -> f64| {
        per_layer.iter().map(f).sum::<f64>() / per_layer.len().max(1) as f64
    };
    let lags: Vec<usize> = [1, 4, 16]
        .into_iter()
        .filter(|&l| l < per_iteration.len())
        .collect();
    let points = (1..=experts)
        .map(|c| {
            let hit = loads
                .iter()
                .map(|l| {
                    let mut sorted = l.clone();
                    sorted.sort_unstable_by(|a, b| b.cmp(a));
                    let total: u64 = sorted.iter().sum();
                    sorted[..c].iter().sum::<u64>() as f64 / total.max(1) as f64
                })
                .sum::<f64>()
                / layers.max(1) as f64;
            (c as f64, hit)
        })
        .collect();
    WorkloadSummary {
        source: routing.describe(),
        experts,
        layers,
        load_max_over_mean: mean(|p| p.0),
        gini: mean(|p| p.1),
        cv: mean(|p| p.2),
        rank_max_over_mean: mean(|p| p.3),
        drift: by_lag(drift(&per_iteration, &lags))
            .into_iter()
            .map(|(k, v)| (format!("{k} it"), v))
            .collect(),
        locality: None,
        per_layer: per_layer.iter().map(|p| (p.0, p.1)).collect(),
        curves: vec![Curve {
            name: "static top-c".into(),
            points,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_traces::{RoutingShape, Skew, SyntheticRouting, SyntheticSpec};

    fn routing(skew: Skew) -> SyntheticRouting {
        let shape = RoutingShape {
            moe_layers: 2,
            experts: 16,
            top_k: 2,
            ranks: 4,
            micro_batches: 1,
            tokens_per_rank: 512,
        };
        SyntheticRouting::new(
            shape,
            6,
            SyntheticSpec {
                skew,
                seed: 7,
                shuffle_per_layer: false,
            },
        )
    }

    #[test]
    fn skewed_routing_is_more_skewed_and_its_static_cache_hits_more() {
        let uniform = from_routing(&routing(Skew::Uniform), 4);
        let zipf = from_routing(&routing(Skew::Zipf { s: 1.2 }), 4);
        assert!(zipf.gini > uniform.gini + 0.1, "{zipf:?} vs {uniform:?}");
        assert!(zipf.load_max_over_mean > uniform.load_max_over_mean);
        let at4 = |w: &WorkloadSummary| w.curves[0].points[3].1;
        assert!(at4(&zipf) > at4(&uniform));
        // Caching every expert hits every time.
        assert!((uniform.curves[0].points.last().unwrap().1 - 1.0).abs() < 1e-9);
    }
}
