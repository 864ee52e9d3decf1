//! Limits on trace shapes and synthetic parameters: past them per-expert tables would not fit in memory,
//! `u32` expert ids would overflow, or samplers would spin. Every reader, importer and generator checks
//! them before it allocates, so no allocation size comes from input unchecked.

use crate::Skew;

/// Largest routed experts per layer (expert ids are `u32`; per-expert tables are dense).
pub const MAX_EXPERTS: usize = 1 << 20;
/// Largest layer count.
pub const MAX_LAYERS: usize = 1 << 16;
/// Largest experts per token.
pub const MAX_TOP_K: usize = 1 << 12;
/// Largest (layer, expert) pairs: per-expert tables of every layer stay within a few GiB.
pub const MAX_LAYER_EXPERTS: usize = 1 << 26;
/// Largest source ranks of a counts trace.
pub const MAX_RANKS: usize = 1 << 16;
/// Largest cells (layers × ranks × experts) of one counts-trace iteration.
pub const MAX_ITERATION_CELLS: usize = 1 << 28;
/// Largest expert entries (layers × tokens × k) one sequence may hold in memory (1 GiB of ids).
pub const MAX_SEQUENCE_ENTRIES: u64 = 1 << 28;
/// Synthetic skew parameters beyond which popularity is a single expert anyway (and samplers degenerate).
pub const MAX_ZIPF_S: f64 = 16.0;
pub const MAX_LOGNORMAL_SIGMA: f64 = 16.0;
pub const DIRICHLET_ALPHA: (f64, f64) = (1e-3, 1e6);

/// Checks a trace or model shape: `1 ≤ layers ≤ MAX_LAYERS`, `1 ≤ experts ≤ MAX_EXPERTS`,
/// `top_k ≤ min(experts, MAX_TOP_K)`.
pub fn check_shape(layers: usize, experts: usize, top_k: usize) -> Result<(), String> {
    if !(1..=MAX_LAYERS).contains(&layers) {
        return Err(format!("{layers} layers: expected 1..={MAX_LAYERS}"));
    }
    if !(1..=MAX_EXPERTS).contains(&experts) {
        return Err(format!("{experts} experts: expected 1..={MAX_EXPERTS}"));
    }
    if layers * experts > MAX_LAYER_EXPERTS {
        return Err(format!(
            "{layers} layers × {experts} experts: expected at most {MAX_LAYER_EXPERTS} (layer, expert) pairs"
        ));
    }
    if top_k > experts.min(MAX_TOP_K) {
        return Err(format!(
            "top_k = {top_k} exceeds the {experts} experts (expected at most {})",
            experts.min(MAX_TOP_K)
        ));
    }
    Ok(())
}

/// Checks synthetic skew parameters: finite and within the ranges above.
pub fn check_skew(skew: &Skew) -> Result<(), String> {
    let (lo, hi) = DIRICHLET_ALPHA;
    match *skew {
        Skew::Uniform | Skew::Balanced => Ok(()),
        Skew::Zipf { s } if !(0.0..=MAX_ZIPF_S).contains(&s) => {
            Err(format!("zipf s = {s:?}: expected 0 ≤ s ≤ {MAX_ZIPF_S}"))
        }
        Skew::LogNormal { sigma } if !(0.0..=MAX_LOGNORMAL_SIGMA).contains(&sigma) => Err(format!(
            "lognormal sigma = {sigma:?}: expected 0 ≤ sigma ≤ {MAX_LOGNORMAL_SIGMA}"
        )),
        Skew::Dirichlet { alpha } if !(lo..=hi).contains(&alpha) => Err(format!(
            "dirichlet alpha = {alpha:?}: expected {lo} ≤ alpha ≤ {hi}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_skews_out_of_range_are_refused() {
        assert!(check_shape(1, 8, 2).is_ok());
        assert!(check_shape(1, 2, 4).is_err());
        assert!(check_shape(1, 1 << 32, 2).is_err());
        assert!(check_shape(0, 8, 2).is_err());
        assert!(check_shape(MAX_LAYERS, MAX_EXPERTS, 2).is_err());
        assert!(check_skew(&Skew::Zipf { s: 1e308 }).is_err());
        assert!(check_skew(&Skew::Zipf { s: f64::NAN }).is_err());
        assert!(
            check_skew(&Skew::LogNormal {
                sigma: f64::INFINITY
            })
            .is_err()
        );
        assert!(check_skew(&Skew::Dirichlet { alpha: 1e308 }).is_err());
        assert!(check_skew(&Skew::Zipf { s: 1.2 }).is_ok());
    }
}
