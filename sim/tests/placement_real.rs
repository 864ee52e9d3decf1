//! Placement on real routing: DeepSeek-V2-Lite's per-token trace (../shared/traces), batched into
//! iterations. moesim's plan, made from early iterations, must balance *later* iterations better than the
//! EPLB baseline made from the same history, never duplicate an expert on a GPU, and move fewer experts
//! per re-plan.

use moesim_sim::placement::eplb::eplb;
use moesim_sim::placement::forecast::{Forecast, forecast};
use moesim_sim::placement::search::{PlaceOptions, place_with_history};
use moesim_sim::placement::{LayerPlacement, placement_balancedness};
use std::path::PathBuf;

use crate::common;

const LAYERS: usize = 26;
const EXPERTS: usize = 64;

fn trace_dir() -> PathBuf {
    common::shared_traces("deepseek-v2-lite")
}

/// Expert loads per iteration and layer; an iteration is `prompts` consecutive prompts.
fn load_history(dir: &std::path::Path, prompts: usize) -> Vec<Vec<Vec<f64>>> {
    let mut per_prompt = Vec::new();
    for n in 1..=100 {
        let mut loads = vec![vec![0.0; EXPERTS]; LAYERS];
        let mut r = csv::Reader::from_path(dir.join(format!("prompt_{n}_data.csv"))).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let layer: usize = rec[0].parse().unwrap();
            let experts: Vec<usize> = serde_json::from_str(&rec[3]).unwrap();
            for e in experts {
                loads[layer - 1][e] += 1.0;
            }
        }
        per_prompt.push(loads);
    }
    per_prompt
        .chunks(prompts)
        .map(|c| {
            (0..LAYERS)
                .map(|l| {
                    (0..EXPERTS)
                        .map(|e| c.iter().map(|p| p[l][e]).sum())
                        .collect()
                })
                .collect()
        })
        .collect()
}

struct Eval {
    ours: f64,
    eplb: f64,
    ours_moves: f64,
    eplb_moves: f64,
}

/// Plans every `interval` iterations from the history before it; scores balancedness on the iterations
/// each plan serves.
fn replay(
    history: &[Vec<Vec<f64>>],
    gpus: usize,
    slots: usize,
    interval: usize,
    warmup: usize,
) -> Eval {
    let o = PlaceOptions::new(gpus, slots, 8);
    let (mut ours_b, mut eplb_b, mut n) = (0.0, 0.0, 0.0);
    let (mut ours_m, mut eplb_m, mut replans) = (0.0, 0.0, 0.0);
    let mut prev: Vec<Option<(LayerPlacement, LayerPlacement)>> = vec![None; LAYERS];
    let mut start = warmup;
    while start < history.len() {
        for (layer, prev_layer) in prev.iter_mut().enumerate() {
            let past: Vec<&[f64]> = history[..start]
                .iter()
                .map(|it| it[layer].as_slice())
                .collect();
            let (mean, _) = forecast(&past, Forecast::default());
            let recent = &past[past.len().saturating_sub(16)..];
            let ours = place_with_history(&mean, recent, &o, prev_layer.as_ref().map(|p| &p.0));
            let base = eplb(&mean, gpus, slots);
            assert!(!ours.has_duplicates());
            if let Some((po, pe)) = prev_layer.as_ref() {
                ours_m += ours.moves_from(po) as f64;
                eplb_m += base.moves_from(pe) as f64;
                replans += 1.0;
            }
            for it in &history[start..(start + interval).min(history.len())] {
                ours_b += placement_balancedness(&ours, &it[layer]);
                eplb_b += placement_balancedness(&base, &it[layer]);
                n += 1.0;
            }
            *prev_layer = Some((ours, base));
        }
        start += interval;
    }
    Eval {
        ours: ours_b / n,
        eplb: eplb_b / n,
        ours_moves: ours_m / replans,
        eplb_moves: eplb_m / replans,
    }
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn beats_eplb_on_later_iterations_of_deepseek_v2_lite_and_moves_less() {
    let dir = trace_dir();
    // Four prompts (about 260 tokens) per iteration; plan after 5 iterations, re-plan every 3.
    let history = load_history(&dir, 4);
    assert_eq!(history.len(), 25);
    for (gpus, slots) in [(8, 9), (8, 10), (16, 5)] {
        let e = replay(&history, gpus, slots, 3, 5);
        eprintln!(
            "{gpus} GPUs × {slots} slots: balancedness ours {:.3} vs EPLB {:.3}; moves per layer re-plan ours {:.1} vs EPLB {:.1}",
            e.ours, e.eplb, e.ours_moves, e.eplb_moves
        );
        assert!(e.ours > e.eplb, "{gpus}×{slots}: {} <= {}", e.ours, e.eplb);
        assert!(
            e.ours_moves < e.eplb_moves,
            "{gpus}×{slots}: {} >= {}",
            e.ours_moves,
            e.eplb_moves
        );
    }
}

/// Loads per iteration of a per-token trace, `per_iteration` sequences per iteration.
fn trace_history(t: &moesim_traces::TokenTrace, per_iteration: usize) -> Vec<Vec<Vec<f64>>> {
    let (layers, experts) = (t.meta.layers, t.meta.experts);
    t.sequences
        .chunks(per_iteration)
        .map(|chunk| {
            let mut loads = vec![vec![0.0; experts]; layers];
            for s in chunk {
                for (layer, l) in loads.iter_mut().enumerate() {
                    for tok in 0..s.tokens {
                        for &e in s.row(layer, tok) {
                            l[e as usize] += 1.0;
                        }
                    }
                }
            }
            loads
        })
        .collect()
}

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn beats_eplb_on_a_synthetic_workload_fitted_to_deepseek_v2_lite() {
    let dir = trace_dir();
    use moesim_traces::import::{Format, ImportOptions, import};
    let moesim_traces::Trace::Tokens(real) =
        import(Format::CsvTokens, &dir, &ImportOptions::default()).unwrap()
    else {
        panic!("a per-token trace")
    };
    let fit = moesim_traces::fit::fit_tokens(&real, &Default::default()).unwrap();
    // A longer run than the real trace: 200 sequences of the fitted length, 4 per iteration.
    let synthetic = fit.model.generate(200, fit.tokens_per_sequence).unwrap();
    let history = trace_history(&synthetic, 4);
    assert_eq!(history.len(), 50);
    for (gpus, slots) in [(8, 9), (16, 5)] {
        let e = replay(&history, gpus, slots, 3, 5);
        eprintln!(
            "fitted, {gpus} GPUs × {slots} slots: balancedness ours {:.3} vs EPLB {:.3}; moves ours {:.1} vs EPLB {:.1}",
            e.ours, e.eplb, e.ours_moves, e.eplb_moves
        );
        assert!(e.ours > e.eplb, "{gpus}×{slots}: {} <= {}", e.ours, e.eplb);
        assert!(e.ours_moves < e.eplb_moves);
    }
}
