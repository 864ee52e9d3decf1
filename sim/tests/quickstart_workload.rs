//! The quickstart's workload is fitted to OLMoE's real expert counts on C4 (shipped in
//! `scenarios/data/olmoe/`, Apache-2.0): its Zipf exponent is what `moesim trace fit` finds on those
//! counts, and the synthetic routing it produces has the counts' skew.

use moesim_sim::runner::synthetic_routing;
use moesim_traces::fit::{FitOptions, fit_counts};
use moesim_traces::import::{Format, ImportOptions, import};
use moesim_traces::stats::skew;
use moesim_traces::{RoutingSource, Skew, Trace};

use crate::common;

fn olmoe_counts() -> moesim_traces::CountsTrace {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/data/olmoe/olmoe_expert_counts_c4.json"
    );
    let opts = ImportOptions {
        top_k: Some(8),
        ..ImportOptions::default()
    };
    match import(Format::LoadMatrix, path.as_ref(), &opts).unwrap() {
        Trace::Counts(c) => c,
        Trace::Tokens(_) => panic!("counts expected"),
    }
}

/// Mean over layers of (max/mean, Gini) of expert loads.
fn mean_skew(loads: &[Vec<u64>]) -> (f64, f64) {
    let n = loads.len() as f64;
    let (mut mom, mut gini) = (0.0, 0.0);
    for l in loads {
        let (a, g, _, _) = skew(l);
        mom += a;
        gini += g;
    }
    (mom / n, gini / n)
}

#[test]
fn the_quickstart_zipf_exponent_is_the_fit_to_olmoe_counts() {
    let counts = olmoe_counts();
    assert_eq!((counts.meta.experts, counts.meta.layers), (64, 3));
    let fit = fit_counts(&counts, &FitOptions::default());
    let Skew::Zipf { s: fitted } = fit.model.skew else {
        panic!("a Zipf fit")
    };
    let q = common::scenario("quickstart.toml", &[]);
    let Skew::Zipf { s } = q.workload.skew else {
        panic!("the quickstart's skew is Zipf")
    };
    assert!(
        (s - fitted).abs() < 0.001,
        "quickstart s = {s}, fitted {fitted}"
    );
    // The real counts: mean per-layer Gini 0.212 (0.137, 0.212, 0.288), hottest expert 2.5–3.0× the mean.
    let (mom, gini) = mean_skew(&counts.expert_loads());
    assert!((gini - 0.2123).abs() < 5e-4, "{gini}");
    assert!((2.5..3.1).contains(&mom), "{mom}");
}

#[test]
fn the_quickstart_routing_has_the_skew_of_the_real_counts() {
    let q = common::scenario("quickstart.toml", &[]);
    let routing = synthetic_routing(&q);
    let shape = routing.shape();
    let mut loads = vec![vec![0u64; shape.experts]; shape.moe_layers];
    for it in 0..routing.iterations() {
        let r = routing.iteration(it);
        for mb in 0..shape.micro_batches {
            for (layer, l) in loads.iter_mut().enumerate() {
                for (k, &c) in r.layer_counts(mb, layer).iter().enumerate() {
                    l[k % shape.experts] += c as u64;
                }
            }
        }
    }
    let (mom, gini) = mean_skew(&loads);
    let real = mean_skew(&olmoe_counts().expert_loads());
    assert!(
        (gini - real.1).abs() < 0.01,
        "Gini {gini} vs real {}",
        real.1
    );
    // Zipf's head is a little steeper than the real counts' (3.3× against 2.5–3.0×), far from the
    // 8× (= 64 / 8: every token picks the hottest expert) of the former s = 0.9.
    assert!((3.0..3.6).contains(&mom), "max/mean {mom}");
    // A different expert is hottest in each layer.
    let hottest: std::collections::BTreeSet<usize> = loads
        .iter()
        .map(|l| (0..l.len()).max_by_key(|&e| l[e]).unwrap())
        .collect();
    assert!(hottest.len() > loads.len() / 2, "{hottest:?}");
}
