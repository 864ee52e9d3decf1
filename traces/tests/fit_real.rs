//! `fit` then generation reproduces a real trace's skew, locality and drift within stated tolerances.

use crate::common;

use moesim_traces::Trace;
use moesim_traces::fit::{FitOptions, fit_tokens, measure};
use moesim_traces::import::{Format, ImportOptions, import};

/// Tolerances (absolute): Gini ±0.03, locality ±0.03, drift TV ±0.03.
const TOL: f64 = 0.03;

#[test]
#[cfg_attr(
    moesim_real_traces_missing,
    ignore = "needs the real router traces ($MOESIM_SHARED_TRACES, default ../shared/traces)"
)]
fn deepseek_fit_then_generate_matches_skew_locality_and_drift() {
    let dir = common::shared_traces("deepseek-v2-lite");
    let Trace::Tokens(t) = import(Format::CsvTokens, &dir, &ImportOptions::default()).unwrap()
    else {
        panic!("token trace expected")
    };
    let opts = FitOptions::default();
    let fit = fit_tokens(&t, &opts).unwrap();
    let target = measure(&t, opts.window);
    assert_eq!(fit.target, target);
    // generate independently of the fit's own check, with another seed
    let mut model = fit.model;
    model.seed = 12345;
    let generated = model
        .generate(t.sequences.len(), fit.tokens_per_sequence)
        .unwrap();
    let got = measure(&generated, opts.window);
    eprintln!(
        "DeepSeek-V2-Lite fit: {:?}\n target {target:?}\n generated {got:?}",
        fit.model
    );
    assert!(
        (got.gini - target.gini).abs() < TOL,
        "gini {} vs {}",
        got.gini,
        target.gini
    );
    assert!(
        (got.locality - target.locality).abs() < TOL,
        "locality {} vs {}",
        got.locality,
        target.locality
    );
    assert!(
        (got.drift_tv - target.drift_tv).abs() < TOL,
        "drift {} vs {}",
        got.drift_tv,
        target.drift_tv
    );
    assert_eq!(generated.meta.layers, 26);
    assert_eq!(generated.meta.top_k, 6);
}
