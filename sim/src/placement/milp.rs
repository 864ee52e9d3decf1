//! Exact placement of small instances with a mixed-integer program (good_lp over the pure-Rust microlp).
//!
//! With the copy counts fixed (as the heuristic chooses them), assign copies to GPUs: binary `x[e][g]`
//! (a copy of e on g), `Σ_g x[e][g] = copies[e]`, `Σ_e x[e][g] = slots` and per GPU `Σ_e w[e]·x[e][g] ≤ T`;
//! minimise T. One binary per (expert, GPU) rules out two copies of an expert on one GPU by construction.
//! The solver stops at a time limit; callers keep the heuristic plan when it finds nothing better.

use super::LayerPlacement;
use good_lp::{
    Expression, ProblemVariables, Solution, SolverModel, WithTimeLimit, constraint, microlp,
    variable,
};

/// Instances up to this many (expert, GPU) binaries are tried.
pub const MAX_BINARIES: usize = 256;

/// The min-max assignment of `copies[e]` copies of each expert (per-copy load `w[e]`) to `gpus` GPUs with
/// `slots` slots each, or `None` if the solver fails or runs out of time.
pub fn assign(
    w: &[f64],
    copies: &[usize],
    gpus: usize,
    slots: usize,
    time_limit_s: f64,
) -> Option<LayerPlacement> {
    let experts = w.len();
    if experts * gpus > MAX_BINARIES || copies.iter().sum::<usize>() != gpus * slots {
        return None;
    }
    let mut vars = ProblemVariables::new();
    let x: Vec<Vec<_>> = (0..experts)
        .map(|_| (0..gpus).map(|_| vars.add(variable().binary())).collect())
        .collect();
    let t = vars.add(variable().min(0.0));
    let mut model = vars
        .minimise(t)
        .using(microlp)
        .with_time_limit(time_limit_s);
    for (row, &n) in x.iter().zip(copies) {
        let placed: Expression = row.iter().copied().sum();
        model = model.with(constraint!(placed == n as f64));
    }
    for g in 0..gpus {
        let filled: Expression = x.iter().map(|row| row[g]).sum();
        model = model.with(constraint!(filled == slots as f64));
        let load: Expression = x.iter().zip(w).map(|(row, &we)| we * row[g]).sum();
        model = model.with(constraint!(load <= t));
    }
    let solution = model.solve().ok()?;
    let gpu_experts: Vec<Vec<usize>> = (0..gpus)
        .map(|g| {
            (0..experts)
                .filter(|&e| solution.value(x[e][g]) > 0.5)
                .collect()
        })
        .collect();
    let p = LayerPlacement { gpu_experts };
    (p.gpu_experts.iter().all(|s| s.len() == slots) && p.covers(experts) && !p.has_duplicates())
        .then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_optimum_of_a_small_instance() {
        // Six experts with one copy each on two GPUs of three slots: the best split is 9 / 9.
        let w = [5.0, 4.0, 3.0, 2.0, 2.0, 2.0];
        let p = assign(&w, &[1; 6], 2, 3, 5.0).expect("solved");
        let loads: Vec<f64> = p
            .gpu_experts
            .iter()
            .map(|s| s.iter().map(|&e| w[e]).sum())
            .collect();
        assert_eq!(loads.iter().copied().fold(0.0, f64::max), 9.0);
    }

    #[test]
    fn too_large_instances_are_left_to_the_heuristic() {
        assert!(assign(&[1.0; 64], &[1; 64], 8, 8, 1.0).is_none());
    }
}
