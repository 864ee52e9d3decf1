//! Placement benchmarks: `cargo bench -p moesim-sim --bench placement`.
//!
//! The issues' reference: a DeepSeek-V3-shaped problem (58 layers × 256 experts, 256 GPUs, 9 slots per GPU)
//! must be placed in under 2 seconds on the 2-core build machine (forecast objective), and in under 1 second
//! with the robust objective (issue 17), which is what `moesim place` runs by default.

use divan::Bencher;
use moesim_sim::placement::eplb::eplb;
use moesim_sim::placement::forecast::Forecast;
use moesim_sim::placement::plan_layers::{
    LoadHistory, ModelPlaceOptions, plan_layers, plan_layers_robust,
};
use moesim_sim::placement::robust::RobustOptions;
use moesim_sim::placement::search::PlaceOptions;
use moesim_traces::rng::rng_for;
use rand_distr::{Distribution, LogNormal};

fn main() {
    divan::main();
}

fn history(layers: usize, experts: usize, iterations: usize) -> LoadHistory {
    let mut rng = rng_for(11, &[]);
    let pop = LogNormal::new(0.0, 0.8).unwrap();
    let noise = LogNormal::new(0.0, 0.1).unwrap();
    let base: Vec<Vec<f64>> = (0..layers)
        .map(|_| {
            (0..experts)
                .map(|_| 1000.0 * pop.sample(&mut rng))
                .collect()
        })
        .collect();
    let iterations = (0..iterations)
        .map(|_| {
            base.iter()
                .map(|l| l.iter().map(|&x| x * noise.sample(&mut rng)).collect())
                .collect()
        })
        .collect();
    LoadHistory {
        layers,
        experts,
        iterations,
    }
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn deepseek_v3_shape_256_gpus_9_slots(bencher: Bencher) {
    let h = history(58, 256, 10);
    let o = ModelPlaceOptions {
        place: PlaceOptions::new(256, 9, 8),
        forecast: Forecast::default(),
        history_samples: 0,
    };
    bencher.bench(|| plan_layers(&h, &o, None));
}

/// `moesim place` as it runs by default: the robust objective on the history's iterations.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn robust_deepseek_v3_shape_256_gpus_9_slots(bencher: Bencher) {
    let h = history(58, 256, 10);
    let o = RobustOptions::new(PlaceOptions::new(256, 9, 8));
    bencher.bench(|| plan_layers_robust(&h, &o, None, false));
}

/// The same with planned token shares.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn robust_with_shares_deepseek_v3_shape(bencher: Bencher) {
    let h = history(58, 256, 10);
    let o = RobustOptions::new(PlaceOptions::new(256, 9, 8));
    bencher.bench(|| plan_layers_robust(&h, &o, None, true));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn eplb_baseline_deepseek_v3_shape(bencher: Bencher) {
    let h = history(58, 256, 1);
    bencher.bench(|| {
        h.iterations[0]
            .iter()
            .map(|l| eplb(l, 256, 9))
            .collect::<Vec<_>>()
    });
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn small_16_gpus_with_history_refinement(bencher: Bencher) {
    let h = history(26, 64, 20);
    let o = ModelPlaceOptions {
        place: PlaceOptions::new(16, 5, 8),
        forecast: Forecast::default(),
        history_samples: 16,
    };
    bencher.bench(|| plan_layers(&h, &o, None));
}
